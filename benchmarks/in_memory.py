"""The data_processing nodes chained in memory, for benchmarks that must not write to the project's data/."""

from __future__ import annotations

from typing import Any

import pandas as pd

from amazon_llm_rec.pipelines.data_processing import nodes as dp


def items_and_sequences(raw: dict[str, Any], processing: dict[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Raw files -> clean items and time-ordered reviewer sequences, as the data_processing pipeline makes them."""
    files = dp.locate_raw_files(raw)
    reviews, _ = dp.read_reviews(dp.parse_reviews(files, raw), raw)  # engine tables, lazy
    meta, _ = dp.read_metadata(files, reviews, raw, processing)
    items, _ = dp.clean_items(meta, processing)
    interactions, _ = dp.build_interactions(reviews, meta, processing)
    return items.to_pyarrow().to_pandas(), dp.build_sequences(interactions).to_pyarrow().to_pandas()
