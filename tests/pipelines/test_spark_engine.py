"""raw.engine: pyspark runs the same data_processing expressions as DuckDB, with identical outputs (local Spark)."""

from __future__ import annotations

import gzip
import json
import shutil

import pandas as pd
import pytest

from amazon_llm_rec.core.data import engine
from amazon_llm_rec.core.errors import ConfigError, RawDataError
from amazon_llm_rec.datasets import EngineTableDataset
from amazon_llm_rec.pipelines.data_processing import nodes
from tests.conftest import STRICT, require, shared_file

require("pyspark", "PySpark is the optional extra '.[spark]'")
if shutil.which("java") is None:
    if STRICT:
        raise RuntimeError("Spark needs Java (OpenJDK 17), and `make test` requires it")
    pytest.skip("Spark needs Java (OpenJDK 17)", allow_module_level=True)

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # PySpark's notice about pandas 3

PROC = {"title_cleaning": "light", "max_title_words": 16, "fill_missing_titles": True, "min_products": 5}
SPARK = {"master": "local[2]", "config": {"spark.driver.memory": "1g", "spark.sql.shuffle.partitions": 4}}


def _raw(name: str, **extra) -> dict:
    return {"on_bad_lines": "warn", "verified_default": True, "engines": {"pyspark": SPARK}, "engine": name, **extra}


def _pipeline(files: dict, raw: dict, tmp_path) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """The data_processing nodes, each engine table saved and reloaded through the catalog's dataset."""
    folder = tmp_path / raw["engine"]

    def through(name, table, load_as="table"):
        ds = EngineTableDataset(str(folder / f"{name}.parquet"), load_as=load_as)
        ds.save(table)
        return ds.load()

    parsed = through("parsed_reviews", nodes.parse_reviews(files, raw))
    reviews, c1 = nodes.read_reviews(parsed, raw)
    reviews = through("verified_reviews", reviews)
    kept = nodes.count_reviews_kept(reviews, c1)
    meta, c2 = nodes.read_metadata(files, reviews, raw, PROC)
    meta = through("raw_items", meta)
    items, c3 = nodes.clean_items(meta, PROC)
    items = through("items", items, load_as="pandas")
    inter, c4 = nodes.build_interactions(reviews, meta, PROC)
    inter = through("interactions", inter)
    seq = through("reviewer_sequences", nodes.build_sequences(inter), load_as="pandas")
    return seq, items, nodes.summarize_counts(c1, kept, c2, c3, c4)


def _plain(seq: pd.DataFrame) -> pd.DataFrame:
    return seq.assign(asins=seq["asins"].map(list), times=seq["times"].map(list)).reset_index(drop=True)


def test_duckdb_and_pyspark_give_identical_outputs_on_real_data(tmp_path):
    files = {"reviews": str(shared_file("Industrial_and_Scientific_5.json.gz")),
             "meta": str(shared_file("meta_Industrial_and_Scientific.json.gz"))}
    seq_d, items_d, counts_d = _pipeline(files, _raw("duckdb"), tmp_path)
    seq_s, items_s, counts_s = _pipeline(files, _raw("pyspark"), tmp_path)
    assert (tmp_path / "pyspark" / "reviewer_sequences.parquet").is_dir()  # Spark wrote part files
    assert counts_s == counts_d and counts_d["review_lines_read"] == 59_384
    assert len(seq_d) > 8000
    pd.testing.assert_frame_equal(_plain(seq_s), _plain(seq_d))
    pd.testing.assert_frame_equal(items_s.reset_index(drop=True), items_d.reset_index(drop=True))


def test_pyspark_counts_and_skips_malformed_lines_like_duckdb(tmp_path):
    reviews = [{"reviewerID": f"U{i // 5}", "asin": f"P{i % 7}", "unixReviewTime": i, "verified": i % 9 > 0}
               for i in range(60)]
    lines = [json.dumps(r) for r in reviews]
    lines.insert(7, '{"reviewerID": "U", "asin": ')
    lines.insert(20, "")  # blank lines are not lines
    path, meta = tmp_path / "Cat_5.json.gz", tmp_path / "meta_Cat.json.gz"
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    meta.write_bytes(gzip.compress("\n".join(json.dumps({"asin": f"P{i}", "title": f"Beaker {i}"}) for i in range(7)).encode()))
    files = {"reviews": str(path), "meta": str(meta)}
    results = {name: _pipeline(files, _raw(name), tmp_path) for name in ("duckdb", "pyspark")}
    assert results["pyspark"][2] == results["duckdb"][2]
    assert results["pyspark"][2]["review_bad_lines"] == 1 and results["pyspark"][2]["review_lines_read"] == 61
    with pytest.raises(RawDataError, match=r"Cat_5\.json\.gz: malformed JSON at line 8"):
        nodes.read_reviews(nodes.parse_reviews(files, _raw("pyspark")), _raw("pyspark", on_bad_lines="error"))


def test_engine_parameters_are_checked():
    with pytest.raises(ConfigError, match="raw.engine must be one of duckdb, pyspark; got 'polars'"):
        engine.EngineConfig.from_params({"engine": "polars"})
    with pytest.raises(ConfigError, match=r"raw.engines.duckdb: unknown setting\(s\) \['memory'\]"):
        engine.EngineConfig.from_params({"engine": "duckdb", "engines": {"duckdb": {"memory": "1GB"}}})
