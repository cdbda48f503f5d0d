"""The evaluation pipeline."""

from kedro.pipeline import Node, Pipeline

from .nodes import (
    candidate_features,
    compute_metrics,
    embed_titles,
    evaluate_catalogue,
    export_merged_model,
    fit_evidence,
    fit_fusion,
    fit_retriever_mix,
    join_llm_predictions,
    join_validation_llm_predictions,
    score_baseline_methods,
    score_fusion,
    score_llms,
    score_validation_llm,
)


def create_pipeline(**kwargs) -> Pipeline:
    """Test prompts of every protocol -> predictions of every method (baselines, LLMs, the fusion fitted on
    validation windows, the whole-catalogue recommender) -> metrics with paired differences. The reporting pipeline
    renders them."""
    return Pipeline(
        [
            Node(
                score_llms,
                ["test_protocol_prompts", "base_model", "lora_adapter", "training_summary", "title_priors",
                 "params:evaluation"],
                "llm_prediction_shards",
                name="score_llms",
            ),
            Node(join_llm_predictions, ["llm_prediction_shards", "test_protocol_prompts", "params:evaluation"],
                 "llm_predictions", name="join_llm_predictions"),
            Node(embed_titles, ["items", "params:evaluation", "params:recommend"], "title_embeddings",
                 name="embed_titles"),
            Node(fit_evidence, ["test_protocol_prompts", "reviewer_sequences", "items", "params:evaluation",
                                "title_embeddings"], "test_evidence", name="fit_test_evidence"),
            Node(fit_evidence, ["validation_prompts", "reviewer_sequences", "items", "params:evaluation",
                                "title_embeddings"], "validation_evidence", name="fit_validation_evidence"),
            Node(
                score_baseline_methods,
                ["test_protocol_prompts", "reviewer_sequences", "test_evidence", "params:evaluation"],
                "baseline_predictions",
                name="score_baselines",
            ),
            Node(
                score_validation_llm,
                ["validation_prompts", "base_model", "lora_adapter", "training_summary", "title_priors",
                 "params:evaluation"],
                "validation_llm_prediction_shards",
                name="score_validation_llm",
            ),
            Node(join_validation_llm_predictions,
                 ["validation_llm_prediction_shards", "validation_prompts", "params:evaluation"],
                 "validation_llm_predictions", name="join_validation_llm_predictions"),
            Node(candidate_features, ["validation_prompts", "reviewer_sequences", "validation_evidence",
                                      "params:evaluation"], "validation_features", name="validation_features"),
            Node(candidate_features, ["test_protocol_prompts", "reviewer_sequences", "test_evidence", "params:evaluation"],
                 "test_features", name="test_features"),
            Node(fit_fusion, ["validation_features", "validation_llm_predictions", "params:evaluation"], "fusion_model",
                 name="fit_fusion"),
            Node(score_fusion, ["test_features", "llm_predictions", "test_protocol_prompts", "fusion_model"],
                 "fusion_predictions", name="score_fusion"),
            Node(
                compute_metrics,
                ["llm_predictions", "baseline_predictions", "test_protocol_prompts", "training_summary",
                 "params:evaluation", "fusion_predictions"],
                "metrics",
                name="compute_metrics",
            ),
            Node(fit_retriever_mix, ["validation_prompts", "reviewer_sequences", "validation_evidence",
                                     "params:recommend", "params:prompts"], "retriever_mix", name="fit_retriever_mix"),
            Node(evaluate_catalogue,
                 ["test_prompts", "reviewer_sequences", "test_evidence", "fusion_model", "retriever_mix", "base_model",
                  "lora_adapter", "title_priors", "params:recommend", "params:evaluation", "params:prompts"],
                 ["catalogue_predictions", "catalogue_metrics"], name="evaluate_catalogue"),
            Node(
                export_merged_model,
                ["validation_prompts", "base_model", "lora_adapter", "training_summary", "title_priors",
                 "params:evaluation"],
                ["merged_model", "merged_export_check"],
                name="export_merged_model",
            ),
        ]
    )
