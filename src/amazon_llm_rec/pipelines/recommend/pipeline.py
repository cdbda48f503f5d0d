"""The recommend pipeline."""

from kedro.pipeline import Node, Pipeline

from .nodes import join_recommendations, recommend_batch


def create_pipeline(**kwargs) -> Pipeline:
    """Sequences, catalogue, fitted fusion and adapter -> the top k products of every reviewer (Parquet), by shard."""
    return Pipeline(
        [
            Node(
                recommend_batch,
                ["reviewer_sequences", "items", "fusion_model", "retriever_mix", "base_model", "lora_adapter", "title_priors",
                 "params:recommend", "params:evaluation", "params:prompts", "title_embeddings"],
                "recommendation_shards",
                name="recommend_batch",
            ),
            Node(join_recommendations, ["recommendation_shards", "reviewer_sequences", "params:recommend"],
                 "recommendations", name="join_recommendations"),
        ]
    )
