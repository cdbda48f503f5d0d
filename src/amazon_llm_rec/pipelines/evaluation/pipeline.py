"""The evaluation pipeline."""

from kedro.pipeline import Node, Pipeline

from .nodes import (
    compute_metrics,
    error_analysis,
    export_merged_model,
    plot_metrics,
    plot_position_bias,
    render_report,
    score_baseline_methods,
    score_llms,
    write_report,
)


def create_pipeline(**kwargs) -> Pipeline:
    """Test prompts of every protocol -> predictions of every method -> metrics, report, plots, error analysis."""
    return Pipeline(
        [
            Node(
                score_llms,
                ["test_protocol_prompts", "base_model", "lora_adapter", "training_summary", "params:evaluation"],
                "llm_predictions",
                name="score_llms",
            ),
            Node(
                score_baseline_methods,
                ["test_protocol_prompts", "reviewer_sequences", "items", "params:evaluation"],
                "baseline_predictions",
                name="score_baselines",
            ),
            Node(
                compute_metrics,
                ["llm_predictions", "baseline_predictions", "test_protocol_prompts", "training_summary",
                 "params:evaluation"],
                "metrics",
                name="compute_metrics",
            ),
            Node(render_report, "metrics", "metrics_report", name="render_report"),
            Node(plot_metrics, "metrics", "metrics_plot", name="plot_metrics"),
            Node(plot_position_bias, "metrics", "position_bias_plot", name="plot_position_bias"),
            Node(error_analysis, ["llm_predictions", "test_prompts"], "error_analysis", name="error_analysis"),
            Node(write_report, ["metrics", "split_leakage", "error_analysis"], "report", name="write_report"),
            Node(
                export_merged_model,
                ["validation_prompts", "base_model", "lora_adapter", "training_summary", "params:evaluation"],
                ["merged_model", "merged_export_check"],
                name="export_merged_model",
            ),
        ]
    )
