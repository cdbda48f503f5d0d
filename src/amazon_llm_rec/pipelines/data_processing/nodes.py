"""Nodes of the data_processing pipeline (paper section 4.2)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from ...core import synthetic
from ...core.errors import ConfigError, EmptyFilterError
from ...core.raw_io import RawFile, check_bad_lines, json_lines_table, write_json_lines
from ...core.text import clean_title, leaf_category

logger = logging.getLogger(__name__)


def _raw_paths(raw: dict[str, Any], category: str) -> tuple[RawFile, RawFile]:
    try:
        folder = Path(raw["data_dir"])
        reviews = folder / raw["reviews_file"].format(category=category)
        meta = folder / raw["meta_file"].format(category=category)
    except KeyError as exc:
        raise ConfigError(f"parameter raw.{exc.args[0]} is missing (conf/base/parameters_data_processing.yml)") from exc
    return RawFile(str(reviews)), RawFile(str(meta))


def locate_raw_files(raw: dict[str, Any]) -> dict[str, Any]:
    """Return the raw file paths, first writing the synthetic category when it is configured and absent.

    `raw.category` may be a list of categories (mixed, as in the study): each entry then holds a list of paths."""
    if "category" not in raw:
        raise ConfigError("parameter raw.category is missing (conf/base/parameters_data_processing.yml)")
    categories = raw["category"] if isinstance(raw["category"], list) else [raw["category"]]
    if not categories:
        raise ConfigError("raw.category is an empty list: name at least one Amazon 2018 category")
    found: dict[str, list[str]] = {"reviews": [], "meta": []}
    synth = raw.get("synthetic") or {}
    for category in categories:
        reviews, meta = _raw_paths(raw, category)
        if not (reviews.exists and meta.exists) and category == synth.get("category"):
            logger.info("Writing the SYNTHETIC demo category %r to %s", category, raw["data_dir"])
            review_lines, meta_records = synthetic.generate(synth["num_reviewers"], synth["seed"])
            write_json_lines(meta_records, meta.path)
            write_json_lines(review_lines, reviews.path)
        reviews.require()
        meta.require()
        logger.info("Raw reviews: %s; raw metadata: %s", reviews.path, meta.path)
        found["reviews"].append(reviews.path)
        found["meta"].append(meta.path)
    if not isinstance(raw["category"], list):
        return {"reviews": found["reviews"][0], "meta": found["meta"][0]}
    return found


def _paths(value: str | list[str]) -> list[str]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def read_reviews(raw_files: dict[str, Any], raw: dict[str, Any]) -> tuple[pd.DataFrame, dict[str, int]]:
    """Read verified reviews (reviewer, product, time) with DuckDB, deduplicated on (reviewer, product).

    Several files (mixed categories) are read one by one and their counts added up."""
    frames, total = [], {}
    for path in _paths(raw_files["reviews"]):
        df, counts = _read_reviews_file(path, raw)
        frames.append(df)
        total = {k: total.get(k, 0) + v for k, v in counts.items()}
    if len(frames) == 1:
        return frames[0], total
    both = pd.concat(frames, ignore_index=True)
    merged = both.groupby(["reviewer_id", "asin"], as_index=False)["unix_time"].min()
    total["reviews_duplicate_pairs"] += len(both) - len(merged)
    total["reviews_kept"] = len(merged)
    return merged.sort_values(["reviewer_id", "unix_time", "asin"]).reset_index(drop=True), total


def _read_reviews_file(path: str, raw: dict[str, Any]) -> tuple[pd.DataFrame, dict[str, int]]:
    """Read one review file's verified reviews with DuckDB, deduplicated on (reviewer, product)."""
    import ibis  # noqa: PLC0415

    with json_lines_table(path) as t:
        rows, bad = check_bad_lines(t, path, raw.get("on_bad_lines", "warn"))
        j = t.j
        r = t.filter(j.notnull()).select(
            reviewer_id=j["reviewerID"].str,
            asin=j["asin"].str,
            unix_time=j["unixReviewTime"].int,
            verified=j["verified"].bool.fill_null(bool(raw.get("verified_default", True))),
        )
        complete = r.filter(r.reviewer_id.notnull() & r.asin.notnull() & r.unix_time.notnull())
        verified = complete.filter(complete.verified)
        dedup = verified.group_by(["reviewer_id", "asin"]).aggregate(unix_time=verified.unix_time.min())
        stats = ibis.memtable({"k": [0]}).select(
            parsed=r.count().as_scalar(),
            complete=complete.count().as_scalar(),
            verified=verified.count().as_scalar(),
            kept=dedup.count().as_scalar(),
        ).to_pyarrow().to_pylist()[0]
        df = dedup.order_by(["reviewer_id", "unix_time", "asin"]).to_pandas()
    counts = {
        "review_lines_read": rows,
        "review_bad_lines": bad,
        "reviews_missing_required_fields": stats["parsed"] - stats["complete"],
        "reviews_unverified": stats["complete"] - stats["verified"],
        "reviews_duplicate_pairs": stats["verified"] - stats["kept"],
        "reviews_kept": stats["kept"],
    }
    logger.info("Reviews from %s: %s", path, counts)
    if df.empty:
        raise EmptyFilterError(f"{path}: no verified review with reviewerID, asin and unixReviewTime is left ({counts})")
    return df, counts


def read_metadata(raw_files: dict[str, Any], reviews: pd.DataFrame, raw: dict[str, Any]) -> tuple[pd.DataFrame, dict[str, int]]:
    """Read title, brand and categories of the reviewed products from the metadata file(s) with DuckDB."""
    frames, total = [], {}
    for path in _paths(raw_files["meta"]):
        df, counts = _read_metadata_file(path, reviews, raw)
        frames.append(df)
        total = {k: total.get(k, 0) + v for k, v in counts.items()}
    return (frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)), total


def _read_metadata_file(path: str, reviews: pd.DataFrame, raw: dict[str, Any]) -> tuple[pd.DataFrame, dict[str, int]]:
    import ibis  # noqa: PLC0415

    wanted = ibis.memtable(pd.DataFrame({"asin": reviews["asin"].unique()}))
    with json_lines_table(path) as t:
        rows, bad = check_bad_lines(t, path, raw.get("on_bad_lines", "warn"))
        j = t.j
        m = t.filter(j.notnull()).select(
            asin=j["asin"].str,
            title=j["title"].str,
            brand=j["brand"].str.fill_null(""),
            categories=j["category"].try_cast("array<string>"),
        )
        m = m.filter(m.asin.isin(wanted.asin))
        df = m.to_pandas()
    df["categories"] = df["categories"].apply(lambda c: [] if c is None else list(c))
    counts = {"meta_lines_read": rows, "meta_bad_lines": bad, "meta_rows_for_reviewed_products": len(df)}
    logger.info("Metadata from %s: %s", path, counts)
    return df, counts


def clean_items(meta: pd.DataFrame, processing: dict[str, Any]) -> tuple[pd.DataFrame, dict[str, int]]:
    """Clean titles; fill missing ones from duplicate metadata rows, then brand and category; drop the rest."""
    mode, max_words = processing["title_cleaning"], processing["max_title_words"]
    fill = processing.get("fill_missing_titles", True)
    meta = meta.assign(clean=[clean_title(t, mode, max_words) for t in meta["title"]])
    usable = meta[meta["clean"].str.len() > 0]
    first_usable = usable.groupby("asin", sort=False)["clean"].first()
    items = meta.groupby("asin", sort=True).agg(
        raw_title=("title", "first"), brand=("brand", "first"), categories=("categories", "first")
    )
    items["title"] = first_usable.reindex(items.index)
    some_unusable = meta.loc[meta["clean"].str.len() == 0, "asin"].unique()
    from_duplicates = int(items.loc[items.index.isin(some_unusable), "title"].notna().sum())
    missing = items["title"].isna()
    filled = 0
    if fill:
        backup = [
            clean_title(f"{b} {leaf_category(c)}".strip(), mode, max_words)
            for b, c in zip(items.loc[missing, "brand"], items.loc[missing, "categories"], strict=True)
        ]
        items.loc[missing, "title"] = [b or None for b in backup]
        filled = int(sum(bool(b) for b in backup))
    dropped = int(items["title"].isna().sum())
    items = items.dropna(subset=["title"]).reset_index()
    items["categories"] = items["categories"].apply(lambda c: " > ".join(leaf_category([x]) for x in c))
    counts = {
        "items_with_metadata": int(len(items) + dropped),
        "titles_recovered_from_duplicate_rows": from_duplicates,
        "titles_filled_from_brand_and_category": filled,
        "items_dropped_without_usable_title": dropped,
        "items_kept": len(items),
    }
    logger.info("Title cleaning (%s): %s", mode, counts)
    if items.empty:
        raise EmptyFilterError(f"title cleaning ({mode!r}) left no product with a usable title ({counts})")
    return items[["asin", "title", "brand", "categories", "raw_title"]], counts


def build_interactions(reviews: pd.DataFrame, items: pd.DataFrame, processing: dict[str, Any]) -> tuple[pd.DataFrame, dict[str, int]]:
    """Join reviews with clean items and keep reviewers with at least `min_products` products."""
    min_products = int(processing["min_products"])
    joined = reviews.merge(items[["asin"]], on="asin", how="inner")
    per_reviewer = joined.groupby("reviewer_id")["asin"].transform("size")
    kept = joined[per_reviewer >= min_products].reset_index(drop=True)
    counts = {
        "reviews_without_item_title": len(reviews) - len(joined),
        "reviewers_before_min_products": int(joined["reviewer_id"].nunique()),
        "reviewers_short_history": int(joined["reviewer_id"].nunique() - kept["reviewer_id"].nunique()),
        "interactions": len(kept),
        "reviewers": int(kept["reviewer_id"].nunique()),
        "items_in_interactions": int(kept["asin"].nunique()),
    }
    logger.info("Interactions (min_products=%d): %s", min_products, counts)
    if kept.empty:
        raise EmptyFilterError(
            f"filter min_products={min_products} left no reviewer: {counts['reviewers_before_min_products']} "
            f"reviewers had {len(joined)} reviews with titled products before it ({counts})"
        )
    return kept, counts


def build_sequences(interactions: pd.DataFrame) -> pd.DataFrame:
    """Order each reviewer's products by review time, ties broken by ASIN."""
    ordered = interactions.sort_values(["reviewer_id", "unix_time", "asin"], kind="stable")
    seq = ordered.groupby("reviewer_id", sort=True).agg(asins=("asin", list), times=("unix_time", list))
    seq["length"] = seq["asins"].str.len()
    return seq.reset_index()


def summarize_counts(*step_counts: dict[str, int]) -> dict[str, int]:
    """Merge the per-step counts into one report."""
    merged: dict[str, int] = {}
    for counts in step_counts:
        merged.update({k: int(v) for k, v in counts.items()})
    return merged


__all__ = [
    "build_interactions",
    "build_sequences",
    "clean_items",
    "locate_raw_files",
    "read_metadata",
    "read_reviews",
    "summarize_counts",
]
