"""The fine_tuning pipeline."""

from kedro.pipeline import Node, Pipeline

from .nodes import compute_title_priors, fine_tune, plot_loss_curves, select_base_model


def create_pipeline(**kwargs) -> Pipeline:
    """Base model + train/validation prompts -> LoRA adapter, loss history and loss plot."""
    return Pipeline(
        [
            Node(select_base_model, "params:model", "base_model", name="select_base_model"),
            Node(compute_title_priors, ["items", "base_model", "train_prompts", "params:evaluation"], "title_priors",
                 name="compute_title_priors"),
            Node(
                fine_tune,
                ["base_model", "train_prompts", "validation_prompts", "training_groups", "title_priors",
                 "params:fine_tuning", "params:evaluation"],
                ["lora_adapter", "loss_history", "training_summary"],
                name="fine_tune",
            ),
            Node(plot_loss_curves, "loss_history", "loss_curves_plot", name="plot_loss_curves"),
        ]
    )
