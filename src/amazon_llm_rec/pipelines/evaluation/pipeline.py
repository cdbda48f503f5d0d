"""The evaluation pipeline."""

from kedro.pipeline import Node, Pipeline

from .nodes import (
    candidate_features,
    comparison_summary,
    compute_metrics,
    error_analysis,
    evaluate_catalogue,
    export_merged_model,
    fit_fusion,
    join_llm_predictions,
    join_validation_llm_predictions,
    plot_metrics,
    plot_position_bias,
    render_report,
    score_baseline_methods,
    score_fusion,
    score_llms,
    score_validation_llm,
    write_report,
)


def create_pipeline(**kwargs) -> Pipeline:
    """Test prompts of every protocol -> predictions of every method (baselines, LLMs, the fusion fitted on
    validation windows) -> metrics with paired differences, report, summary, plots, error analysis."""
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
            Node(
                score_baseline_methods,
                ["test_protocol_prompts", "reviewer_sequences", "items", "params:evaluation"],
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
            Node(candidate_features, ["validation_prompts", "reviewer_sequences", "items", "params:evaluation"],
                 "validation_features", name="validation_features"),
            Node(candidate_features, ["test_protocol_prompts", "reviewer_sequences", "items", "params:evaluation"],
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
            Node(comparison_summary, ["metrics", "catalogue_metrics", "params:raw", "params:evaluation"], "comparison_summary",
                 name="comparison_summary"),
            Node(render_report, "metrics", "metrics_report", name="render_report"),
            Node(plot_metrics, "metrics", "metrics_plot", name="plot_metrics"),
            Node(plot_position_bias, "metrics", "position_bias_plot", name="plot_position_bias"),
            Node(error_analysis, ["llm_predictions", "test_prompts"], "error_analysis", name="error_analysis"),
            Node(evaluate_catalogue,
                 ["test_prompts", "reviewer_sequences", "items", "fusion_model", "base_model", "lora_adapter",
                  "title_priors", "params:recommend", "params:evaluation", "params:prompts"],
                 ["catalogue_predictions", "catalogue_metrics"], name="evaluate_catalogue"),
            Node(write_report, ["metrics", "split_leakage", "error_analysis", "fusion_model", "catalogue_metrics"],
                 "report", name="write_report"),
            Node(
                export_merged_model,
                ["validation_prompts", "base_model", "lora_adapter", "training_summary", "title_priors",
                 "params:evaluation"],
                ["merged_model", "merged_export_check"],
                name="export_merged_model",
            ),
        ]
    )
