"""The prompt_engineering pipeline."""

from kedro.pipeline import Node, Pipeline

from .nodes import (
    build_test_protocols,
    build_training_groups,
    build_windows,
    render_prompts,
    sample_candidates,
    split_leakage,
    split_prompts,
)


def create_pipeline(**kwargs) -> Pipeline:
    """Reviewer sequences -> windows -> candidate options -> train / validation / test prompts per protocol."""
    return Pipeline(
        [
            Node(build_windows, ["reviewer_sequences", "params:prompts"], "windows", name="build_windows"),
            Node(
                sample_candidates,
                ["windows", "reviewer_sequences", "params:prompts", "items"],
                "candidate_sets",
                name="sample_candidates",
            ),
            Node(render_prompts, ["candidate_sets", "items", "params:prompts"], "prompts", name="render_prompts"),
            Node(
                split_prompts,
                "prompts",
                ["train_prompts", "validation_prompts", "test_prompts"],
                name="split_prompts",
            ),
            Node(
                build_test_protocols,
                ["test_prompts", "windows", "reviewer_sequences", "items", "params:prompts"],
                "test_protocol_prompts",
                name="build_test_protocols",
            ),
            Node(
                build_training_groups,
                ["train_prompts", "validation_prompts", "test_prompts", "reviewer_sequences", "items", "params:prompts",
                 "params:fine_tuning", "params:evaluation"],
                "training_groups",
                name="build_training_groups",
            ),
            Node(split_leakage, ["reviewer_sequences", "params:prompts"], "split_leakage", name="split_leakage"),
        ]
    )
