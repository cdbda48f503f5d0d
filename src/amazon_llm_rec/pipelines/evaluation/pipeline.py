"""The evaluation pipeline."""

from kedro.pipeline import Node, Pipeline

from .nodes import (
    compute_metrics,
    error_analysis,
    export_merged_model,
    plot_metrics,
    render_report,
    score_baseline_methods,
    score_llms,
)


def create_pipeline(**kwargs) -> Pipeline:
    """Test prompts -> predictions of every method -> metrics, report, plot, error analysis."""
    return Pipeline(
        [
            Node(
                score_llms,
                ["test_prompts", "base_model", "lora_adapter", "training_summary", "params:evaluation"],
                "llm_predictions",
                name="score_llms",
            ),
            Node(
                score_baseline_methods,
                ["test_prompts", "reviewer_sequences", "params:evaluation"],
                "baseline_predictions",
                name="score_baselines",
            ),
            Node(
                compute_metrics,
                ["llm_predictions", "baseline_predictions", "training_summary", "params:evaluation"],
                "metrics",
                name="compute_metrics",
            ),
            Node(render_report, "metrics", "metrics_report", name="render_report"),
            Node(plot_metrics, "metrics", "metrics_plot", name="plot_metrics"),
            Node(error_analysis, ["llm_predictions", "test_prompts"], "error_analysis", name="error_analysis"),
            Node(
                export_merged_model,
                ["validation_prompts", "base_model", "lora_adapter", "training_summary", "params:evaluation"],
                ["merged_model", "merged_export_check"],
                name="export_merged_model",
            ),
        ]
    )
