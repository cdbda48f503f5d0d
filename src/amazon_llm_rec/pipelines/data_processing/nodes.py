"""Nodes of the data_processing pipeline (paper section 4.2)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...core.data import engine, raw_io, synthetic, text_udfs
from ...core.data.raw_io import RawFile, write_json_lines
from ...core.errors import ConfigError, EmptyFilterError

if TYPE_CHECKING:
    import ibis.expr.types as ir

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


def _engine(raw: dict[str, Any]):
    return engine.connect(engine.EngineConfig.from_params(raw))


def parse_reviews(raw_files: dict[str, Any], raw: dict[str, Any]) -> ir.Table:
    """Every non-blank line of the review file(s) as typed fields on the data engine (lazy: one pass when saved).

    Columns: reviewer_id, asin, unix_time, verified (NULL where absent), `_bad` (not JSON) and `_file`."""
    import ibis  # noqa: PLC0415

    con = _engine(raw)
    tables = [raw_io.open_raw(con, path, raw_io.REVIEW_FIELDS).mutate(_file=ibis.literal(path))
              for path in _paths(raw_files["reviews"])]
    return tables[0] if len(tables) == 1 else ibis.union(*tables)


def read_reviews(parsed_reviews: ir.Table, raw: dict[str, Any]) -> tuple[ir.Table, dict[str, int]]:
    """Verified reviews (reviewer, product, first time), deduplicated on (reviewer, product), and per-file counts.

    Bad lines are counted (and located when `raw.on_bad_lines: error`) per file; several files (mixed
    categories) are added up. The returned table is lazy: the catalog's dataset writes it."""
    t = parsed_reviews.mutate(verified=parsed_reviews.verified.fill_null(bool(raw.get("verified_default", True))))
    is_complete = ~t._bad & t.reviewer_id.notnull() & t.asin.notnull() & t.unix_time.notnull()
    stats = t.group_by("_file").aggregate(
        **raw_io.line_stats(t),
        complete=is_complete.cast("int64").sum(),
        verified=(is_complete & t.verified).cast("int64").sum(),
    )
    rows = raw_io.fetch_rows(stats, "review file(s)")
    total: dict[str, int] = {}
    backend = parsed_reviews.get_backend()
    for row in sorted(rows, key=lambda r: r["_file"]):
        path = row["_file"]
        lines, bad = raw_io.report_bad_lines(backend, path, row["rows"], row["bad"], raw.get("on_bad_lines", "warn"))
        complete, verified = int(row["complete"] or 0), int(row["verified"] or 0)
        counts = {
            "review_lines_read": lines,
            "review_bad_lines": bad,
            "reviews_missing_required_fields": lines - bad - complete,
            "reviews_unverified": complete - verified,
            "reviews_verified": verified,
        }
        logger.info("Reviews from %s: %s", path, counts)
        if not verified:
            raise EmptyFilterError(f"{path}: no verified review with reviewerID, asin and unixReviewTime is left ({counts})")
        total = {k: total.get(k, 0) + v for k, v in counts.items()}
    kept = t.filter(is_complete & t.verified)
    dedup = kept.group_by(["reviewer_id", "asin"]).aggregate(unix_time=kept.unix_time.min())
    return dedup.order_by(["reviewer_id", "unix_time", "asin"]), total


def count_reviews_kept(reviews: ir.Table, review_counts: dict[str, int]) -> dict[str, int]:
    """Count the (reviewer, product) pairs kept and the duplicates dropped, from the saved verified reviews."""
    kept = int(reviews.count().to_pyarrow().as_py())
    return {"reviews_duplicate_pairs": int(review_counts["reviews_verified"]) - kept, "reviews_kept": kept}


def read_metadata(
    raw_files: dict[str, Any], reviews: ir.Table, raw: dict[str, Any], processing: dict[str, Any]
) -> tuple[ir.Table, dict[str, int]]:
    """The reviewed products' metadata rows, each title cleaned on the data engine (lazy: written once when saved).

    Columns: asin, title (raw), brand, categories (the raw list), clean (the cleaned title, "" when unusable) and
    `_order` (file, then line)."""
    import ibis  # noqa: PLC0415

    con = _engine(raw)
    tables, total = [], {}
    wanted = reviews.select("asin").distinct()
    for number, path in enumerate(_paths(raw_files["meta"])):
        table, counts = _read_metadata_file(con, path, wanted, raw)
        # file number above the line number's bits (Spark's row ids use 33 bits for the row, more for the partition)
        tables.append(table.mutate(_order=table._line + ibis.literal(number << 50, "int64")).drop("_line"))
        total = {k: total.get(k, 0) + v for k, v in counts.items()}
    rows = tables[0] if len(tables) == 1 else ibis.union(*tables)
    return rows.mutate(clean=_udfs(rows, processing).clean(rows.title)), total


def _udfs(table: ir.Table, processing: dict[str, Any]) -> text_udfs.TitleUdfs:
    return text_udfs.TitleUdfs(table.get_backend(), processing["title_cleaning"], int(processing["max_title_words"]))


def _read_metadata_file(con, path: str, wanted: ir.Table, raw: dict[str, Any]) -> tuple[ir.Table, dict[str, int]]:
    t = raw_io.open_raw(con, path, raw_io.META_FIELDS, line_numbers=True)
    stats = raw_io.fetch_rows(t.aggregate(**raw_io.line_stats(t)), path)[0]
    rows, bad = raw_io.report_bad_lines(con, path, stats["rows"], stats["bad"], raw.get("on_bad_lines", "warn"))
    m = t.filter(~t._bad).drop("_bad")
    m = m.mutate(brand=m.brand.fill_null("")).filter(m.asin.isin(wanted.asin))
    counts = {"meta_lines_read": rows, "meta_bad_lines": bad}
    logger.info("Metadata from %s: %s", path, counts)
    return m, counts


def _titled(raw_items: ir.Table, processing: dict[str, Any]) -> ir.Table:
    """One row a product with metadata: its first usable cleaned title (file order), else (`fill_missing_titles`)
    its first row's cleaned "<brand> <leaf category>", computed only for the products that need it."""
    t = raw_items
    usable = t.clean != ""
    per = t.group_by("asin").aggregate(
        first_usable=t.clean.argmin(t._order, where=usable),
        raw_title=t.title.argmin(t._order, where=t.title.notnull()),
        brand=t.brand.argmin(t._order),
        categories=t.categories.argmin(t._order),
        unusable_rows=(~usable).cast("int64").sum(),
    )
    if not processing["fill_missing_titles"]:
        return per.mutate(title=per.first_usable)
    return per.mutate(title=per.first_usable.coalesce(_udfs(t, processing).backup(per.brand, per.categories).nullif("")))


def clean_items(raw_items: ir.Table, processing: dict[str, Any]) -> tuple[ir.Table, dict[str, int]]:
    """One row a product: its first usable title; missing ones from duplicate rows, then brand and category (lazy)."""
    per = _titled(raw_items, processing)
    stats = per.aggregate(
        items_with_metadata=per.count(),
        titles_recovered_from_duplicate_rows=(per.first_usable.notnull() & (per.unusable_rows > 0)).cast("int64").sum(),
        titles_filled_from_brand_and_category=(per.first_usable.isnull() & per.title.notnull()).cast("int64").sum(),
        items_kept=per.title.notnull().cast("int64").sum(),
    ).to_pyarrow().to_pylist()[0]
    rows = int(raw_items.count().to_pyarrow().as_py())
    counts = {"meta_rows_for_reviewed_products": rows, **{k: int(v or 0) for k, v in stats.items()}}
    counts["items_dropped_without_usable_title"] = counts["items_with_metadata"] - counts["items_kept"]
    logger.info("Title cleaning (%s): %s", processing["title_cleaning"], counts)
    if not counts["items_kept"]:
        raise EmptyFilterError(f"title cleaning ({processing['title_cleaning']!r}) left no product with a usable title ({counts})")
    kept = per.filter(per.title.notnull())
    kept = kept.mutate(categories=_udfs(raw_items, processing).category_path(kept.categories))
    return kept.select("asin", "title", "brand", "categories", "raw_title").order_by("asin"), counts


def build_interactions(reviews: ir.Table, raw_items: ir.Table, processing: dict[str, Any]) -> tuple[ir.Table, dict[str, int]]:
    """Keep the reviews of products with a usable title (as `clean_items` keeps them) and the reviewers with at least
    `min_products` such products (on the engine)."""
    import ibis  # noqa: PLC0415

    min_products = int(processing["min_products"])
    titled = _titled(raw_items, processing)
    titled = titled.filter(titled.title.notnull())
    joined = reviews.filter(reviews.asin.isin(titled.asin))
    counted = joined.mutate(_n=joined.asin.count().over(group_by="reviewer_id"))
    kept = counted.filter(counted._n >= min_products).drop("_n")
    stats = ibis.memtable({"k": [0]}).select(
        reviews=reviews.count().as_scalar(),
        joined=joined.count().as_scalar(),
        reviewers_before=joined.reviewer_id.nunique().as_scalar(),
        interactions=kept.count().as_scalar(),
        reviewers=kept.reviewer_id.nunique().as_scalar(),
        items_in_interactions=kept.asin.nunique().as_scalar(),
    ).to_pyarrow().to_pylist()[0]
    counts = {
        "reviews_without_item_title": int(stats["reviews"] - stats["joined"]),
        "reviewers_before_min_products": int(stats["reviewers_before"]),
        "reviewers_short_history": int(stats["reviewers_before"] - stats["reviewers"]),
        "interactions": int(stats["interactions"]),
        "reviewers": int(stats["reviewers"]),
        "items_in_interactions": int(stats["items_in_interactions"]),
    }
    logger.info("Interactions (min_products=%d): %s", min_products, counts)
    if not counts["interactions"]:
        raise EmptyFilterError(
            f"filter min_products={min_products} left no reviewer: {counts['reviewers_before_min_products']} "
            f"reviewers had {stats['joined']} reviews with titled products before it ({counts})"
        )
    return kept.order_by(["reviewer_id", "unix_time", "asin"]), counts


def build_sequences(interactions: ir.Table) -> ir.Table:
    """Order each reviewer's products by review time, ties broken by ASIN (on the engine, one row a reviewer)."""
    import ibis  # noqa: PLC0415

    events = ibis.struct({"t": interactions.unix_time, "a": interactions.asin})
    per = interactions.group_by("reviewer_id").aggregate(ev=events.collect(), length=interactions.count())
    ordered = per.ev.sort()  # structs sort by time, then ASIN
    seq = per.select("reviewer_id", asins=ordered.map(lambda e: e.a), times=ordered.map(lambda e: e.t), length=per.length)
    return seq.order_by("reviewer_id")


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
    "count_reviews_kept",
    "locate_raw_files",
    "parse_reviews",
    "read_metadata",
    "read_reviews",
    "summarize_counts",
]
