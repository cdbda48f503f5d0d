"""The data_processing pipeline."""

from kedro.pipeline import Node, Pipeline

from .nodes import (
    build_interactions,
    build_sequences,
    clean_items,
    count_reviews_kept,
    locate_raw_files,
    parse_reviews,
    read_metadata,
    read_reviews,
    summarize_counts,
)


def create_pipeline(**kwargs) -> Pipeline:
    """Raw JSON lines -> reviews -> items -> interactions -> reviewer sequences, on the data engine (raw.engine)."""
    return Pipeline(
        [
            Node(locate_raw_files, "params:raw", "raw_files", name="locate_raw_files"),
            Node(parse_reviews, ["raw_files", "params:raw"], "parsed_reviews", name="parse_reviews"),
            Node(read_reviews, ["parsed_reviews", "params:raw"], ["verified_reviews", "review_counts"], name="read_reviews"),
            Node(count_reviews_kept, ["verified_reviews", "review_counts"], "kept_counts", name="count_reviews_kept"),
            Node(
                read_metadata,
                ["raw_files", "verified_reviews", "params:raw", "params:processing"],
                ["raw_items", "meta_counts"],
                name="read_metadata",
            ),
            Node(clean_items, ["raw_items", "params:processing"], ["items", "item_counts"], name="clean_items"),
            Node(
                build_interactions,
                ["verified_reviews", "raw_items", "params:processing"],
                ["interactions", "interaction_counts"],
                name="build_interactions",
            ),
            Node(build_sequences, "interactions", "reviewer_sequences", name="build_sequences"),
            Node(
                summarize_counts,
                ["review_counts", "kept_counts", "meta_counts", "item_counts", "interaction_counts"],
                "data_processing_counts",
                name="summarize_counts",
            ),
        ]
    )
