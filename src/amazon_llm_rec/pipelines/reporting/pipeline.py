"""The reporting pipeline: what the evaluation measured, rendered for people and machines."""

from kedro.pipeline import Node, Pipeline

from .nodes import (
    comparison_summary,
    error_analysis,
    plot_metrics,
    plot_position_bias,
    render_report,
    write_report,
)


def create_pipeline(**kwargs) -> Pipeline:
    """Metrics, predictions and the fitted fusion -> report.md, summary.json, the plots and the error analysis."""
    return Pipeline(
        [
            Node(comparison_summary, ["metrics", "catalogue_metrics", "params:raw", "params:evaluation"],
                 "comparison_summary", name="comparison_summary"),
            Node(render_report, "metrics", "metrics_report", name="render_report"),
            Node(plot_metrics, "metrics", "metrics_plot", name="plot_metrics"),
            Node(plot_position_bias, "metrics", "position_bias_plot", name="plot_position_bias"),
            Node(error_analysis, ["llm_predictions", "test_prompts"], "error_analysis", name="error_analysis"),
            Node(write_report, ["metrics", "split_leakage", "error_analysis", "fusion_model", "catalogue_metrics"],
                 "report", name="write_report"),
        ]
    )
