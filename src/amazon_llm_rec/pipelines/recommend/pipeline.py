"""The recommend pipeline."""

from kedro.pipeline import Node, Pipeline

from .nodes import recommend_batch


def create_pipeline(**kwargs) -> Pipeline:
    """Sequences, catalogue, fitted fusion and adapter -> the top k products of every reviewer (Parquet)."""
    return Pipeline(
        [
            Node(
                recommend_batch,
                ["reviewer_sequences", "items", "fusion_model", "base_model", "lora_adapter", "params:recommend",
                 "params:evaluation", "params:prompts"],
                "recommendations",
                name="recommend_batch",
            ),
        ]
    )
