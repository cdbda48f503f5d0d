"""data_processing nodes on small real-format files, bad input, and the real ../shared samples."""

from __future__ import annotations

import gzip
import json
import shutil

import ibis
import pandas as pd
import pytest

from amazon_llm_rec.core.data.raw_io import write_json_lines
from amazon_llm_rec.core.errors import ConfigError, EmptyFilterError, RawDataError
from amazon_llm_rec.pipelines.data_processing import nodes
from tests.conftest import shared_file

RAW = {"on_bad_lines": "warn", "verified_default": True}
PROC = {"title_cleaning": "light", "max_title_words": 16, "fill_missing_titles": True, "min_products": 5}


def _review(rid, asin, t, verified=True, **extra):
    return {"reviewerID": rid, "asin": asin, "unixReviewTime": t, "verified": verified, "overall": 5.0, **extra}


def _write(tmp_path, reviews, meta, gz=True):
    ext = ".json.gz" if gz else ".json"
    r, m = tmp_path / f"Cat_5{ext}", tmp_path / f"meta_Cat{ext}"
    write_json_lines(reviews, str(r))
    write_json_lines(meta, str(m))
    return {"reviews": str(r), "meta": str(m)}


def _df(table) -> pd.DataFrame:
    """Execute an engine table as the catalog's dataset would save it, into pandas."""
    return table.to_pyarrow().to_pandas()


def _read(files, raw=RAW):
    """parse_reviews then read_reviews, as the pipeline runs them."""
    return nodes.read_reviews(nodes.parse_reviews(files, raw), raw)


def _reviews(files, raw=RAW):
    """_read, then the kept-pair counts the pipeline adds from the saved table."""
    table, counts = _read(files, raw)
    return table, {**counts, **nodes.count_reviews_kept(table, counts)}


def _run(files, proc=PROC, raw=RAW):
    reviews, c1 = _reviews(files, raw)
    meta, c2 = nodes.read_metadata(files, reviews, raw, proc)
    items, c3 = nodes.clean_items(meta, proc)
    inter, c4 = nodes.build_interactions(reviews, meta, proc)
    seq = _df(nodes.build_sequences(inter))
    return _df(reviews), _df(items), _df(inter), seq, nodes.summarize_counts(c1, c2, c3, c4)


@pytest.fixture
def small(tmp_path):
    reviews = [_review("U1", f"P{i}", 100 + i) for i in range(6)]
    reviews += [_review("U1", "P0", 500)]  # duplicate pair, later: dropped, the first kept
    reviews += [_review("U1", "P9", 50, verified=False)]  # unverified
    reviews += [_review("U2", f"P{i}", 100) for i in range(3)]  # short history, equal times
    reviews += [_review("U3", f"P{i}", 300 - i) for i in range(5)]  # reverse order
    meta = [{"asin": f"P{i}", "title": f"Lab Beaker &amp; Flask #{i} Qualität", "brand": "Labco",
             "category": ["Industrial", "Lab"]} for i in range(6)]
    meta.append({"asin": "P9", "title": "Unverified Only", "brand": "X"})
    return _write(tmp_path, reviews, meta)


def test_counts_and_outputs_on_a_hand_made_category(small):
    reviews, items, inter, seq, counts = _run(small)
    assert counts["reviews_unverified"] == 1
    assert counts["reviews_duplicate_pairs"] == 1
    assert counts["reviewers_short_history"] == 1
    assert counts["review_bad_lines"] == 0
    assert set(seq["reviewer_id"]) == {"U1", "U3"}
    u1 = seq.set_index("reviewer_id").loc["U1"]
    assert list(u1["asins"]) == [f"P{i}" for i in range(6)]  # duplicate kept at its first time
    assert list(seq.set_index("reviewer_id").loc["U3", "asins"]) == ["P4", "P3", "P2", "P1", "P0"]
    assert items.set_index("asin").loc["P0", "title"] == "Lab Beaker Flask 0"
    assert {"asin", "title", "brand", "categories"} <= set(items.columns)


def test_equal_times_are_ordered_by_asin():
    inter = pd.DataFrame({"reviewer_id": ["U"] * 3, "asin": ["B", "C", "A"], "unix_time": [5, 5, 5]})
    assert list(_df(nodes.build_sequences(ibis.memtable(inter)))["asins"].iloc[0]) == ["A", "B", "C"]


def test_plain_json_files_and_missing_optional_fields(tmp_path):
    reviews = [{"reviewerID": "U", "asin": f"P{i}", "unixReviewTime": i} for i in range(5)]  # no 'verified'
    meta = [{"asin": f"P{i}", "title": f"Beaker {i}"} for i in range(5)]  # no brand, no category
    _, items, inter, _, _ = _run(_write(tmp_path, reviews, meta, gz=False))
    assert len(inter) == 5 and (items["brand"] == "").all() and (items["categories"] == "").all()


def test_malformed_lines_are_counted_and_skipped_with_a_warning(tmp_path, caplog):
    reviews = [_review("U", f"P{i}", i) for i in range(5)]
    lines = [json.dumps(r) for r in reviews]
    lines.insert(2, '{"reviewerID": "U", "asin": ')
    files = _write(tmp_path, lines, [{"asin": f"P{i}", "title": f"Beaker {i}"} for i in range(5)])
    with caplog.at_level("WARNING"):
        _, c = _reviews(files, RAW)
    assert c["review_bad_lines"] == 1 and c["reviews_kept"] == 5
    assert "malformed" in caplog.text


def test_on_bad_lines_error_names_file_and_line(tmp_path):
    lines = [json.dumps(_review("U", f"P{i}", i)) for i in range(5)]
    lines.insert(3, "not json at all")
    files = _write(tmp_path, lines, [{"asin": "P0", "title": "Beaker"}])
    with pytest.raises(RawDataError, match=r"Cat_5\.json\.gz: malformed JSON at line 4"):
        _read(files, {**RAW, "on_bad_lines": "error"})


def test_invalid_utf8_lines_are_counted_and_skipped_like_malformed_json(tmp_path, caplog):
    """A line with invalid UTF-8 bytes (DuckDB: "Invalid unicode ... CSV Error on Line") is counted and skipped, in
    a file long enough that the reader's sniffing buffer does not reach it; `error` names its line."""
    lines = [json.dumps(_review(f"U{i // 6}", f"P{i % 6}", i)).encode() for i in range(4000)]
    lines[3001] = b'{"reviewerID": "UX", "asin": "P\xff\xfe", "unixReviewTime": 1}'
    lines.insert(10, b'{"reviewerID": "U", "asin": ')  # and one malformed JSON line
    path = tmp_path / "Cat_5.json.gz"
    with gzip.open(path, "wb") as fh:
        fh.write(b"\n".join(lines) + b"\n")
    write_json_lines([{"asin": f"P{i}", "title": f"Beaker {i}"} for i in range(6)], str(tmp_path / "meta_Cat.json.gz"))
    files = {"reviews": str(path), "meta": str(tmp_path / "meta_Cat.json.gz")}
    with caplog.at_level("WARNING"):
        reviews, c = _read(files, RAW)
    assert c["review_lines_read"] == 4001 and c["review_bad_lines"] == 2 and "UX" not in set(_df(reviews)["reviewer_id"])
    assert "skipped 2 malformed line(s)" in caplog.text
    with pytest.raises(RawDataError, match=r"Cat_5\.json\.gz: malformed JSON at line 11"):
        _read(files, {**RAW, "on_bad_lines": "error"})
    lines.pop(10)
    with gzip.open(path, "wb") as fh:
        fh.write(b"\n".join(lines) + b"\n")
    with pytest.raises(RawDataError, match=r"at line 3002: 'unreadable line \(invalid encoding\)'"):
        _read(files, {**RAW, "on_bad_lines": "error"})


def test_truncated_gzip_names_the_file(tmp_path, synthetic_raw):
    data = open(synthetic_raw["reviews"], "rb").read()
    broken = tmp_path / "Broken_5.json.gz"
    broken.write_bytes(data[: len(data) // 2])
    with pytest.raises(RawDataError, match="Broken_5.json.gz.*truncated"):
        _read({"reviews": str(broken), "meta": synthetic_raw["meta"]}, RAW)


def test_missing_file_names_the_path_and_how_to_get_it(tmp_path):
    raw = {"data_dir": str(tmp_path), "category": "Books", "reviews_file": "{category}_5.json.gz",
           "meta_file": "meta_{category}.json.gz", "synthetic": {"category": "Synthetic", "num_reviewers": 5, "seed": 1}}
    with pytest.raises(RawDataError, match=r"Books_5\.json\.gz.*nijianmo"):
        nodes.locate_raw_files(raw)


def test_synthetic_category_is_written_when_absent_and_is_deterministic(tmp_path):
    raw = {"data_dir": str(tmp_path / "a"), "category": "Synth", "reviews_file": "{category}_5.json.gz",
           "meta_file": "meta_{category}.json.gz", "synthetic": {"category": "Synth", "num_reviewers": 30, "seed": 5}}
    files = nodes.locate_raw_files(raw)
    again = nodes.locate_raw_files({**raw, "data_dir": str(tmp_path / "b")})
    for key in ("reviews", "meta"):
        assert gzip.open(files[key]).read() == gzip.open(again[key]).read()


def test_a_filter_that_leaves_nothing_names_the_filter(small):
    with pytest.raises(EmptyFilterError, match="min_products=50.*reviewers"):
        _run(small, {**PROC, "min_products": 50})


def test_python_literal_metadata_lines_are_read(tmp_path):
    reviews = [_review("U", f"P{i}", i) for i in range(5)]
    meta = [str({"asin": f"P{i}", "title": f"Beaker {i}", "brand": "Lab's"}) for i in range(5)]
    _, items, inter, _, _ = _run(_write(tmp_path, reviews, meta))
    assert len(inter) == 5 and (items["brand"] == "Lab's").all()


def test_titles_recovered_from_duplicate_rows_and_brand_category(tmp_path):
    reviews = [_review("U", f"P{i}", i) for i in range(5)]
    meta = [{"asin": "P0"}, {"asin": "P0", "title": "Beaker Set"},
            {"asin": "P1", "title": '<span class="a-size-medium"', "brand": "Conde", "category": ["Mags", "Fashion &amp; Style"]},
            {"asin": "P2", "title": "", "brand": ""}]
    meta += [{"asin": f"P{i}", "title": f"Flask {i}"} for i in (3, 4)]
    reviews_df, c1 = _read(_write(tmp_path, reviews, meta), RAW)
    meta, _ = nodes.read_metadata({"meta": str(tmp_path / "meta_Cat.json.gz")}, reviews_df, RAW, PROC)
    items, counts = nodes.clean_items(meta, PROC)
    titles = _df(items).set_index("asin")["title"]
    assert titles["P0"] == "Beaker Set" and titles["P1"] == "Conde Fashion Style"
    assert "P2" not in titles.index
    assert counts["titles_recovered_from_duplicate_rows"] == 1
    assert counts["items_dropped_without_usable_title"] == 1


def test_paper_cleaning_mode(small):
    _, items, _, _, _ = _run(small, {**PROC, "title_cleaning": "paper"})
    assert items.set_index("asin").loc["P0", "title"] == "Lab Beaker Flask"


def test_magazine_sample_goes_through_and_its_html_titles_are_cleaned_or_dropped():
    files = {"reviews": str(shared_file("Magazine_Subscriptions_5.json.gz")),
             "meta": str(shared_file("meta_Magazine_Subscriptions.json.gz"))}
    _, items, inter, seq, counts = _run(files)
    assert len(seq) > 0
    assert not items["title"].str.contains("<|>|span|class=", regex=True).any()
    assert counts["titles_filled_from_brand_and_category"] + counts["items_dropped_without_usable_title"] > 0


def test_real_industrial_files_run_through_data_processing_and_prompts():
    from amazon_llm_rec.pipelines.prompt_engineering import nodes as pe

    files = {"reviews": str(shared_file("Industrial_and_Scientific_5.json.gz")),
             "meta": str(shared_file("meta_Industrial_and_Scientific.json.gz"))}
    _, items, inter, seq, counts = _run(files)
    assert counts["review_lines_read"] == 59_384 and counts["review_bad_lines"] == 0
    assert len(seq) > 8000 and seq["length"].min() >= 5
    params = {"history_size": 4, "min_history": 4, "num_negatives": 3, "split": "leave_last_out", "seed": 1,
              "max_train_prompts": None, "max_validation_prompts": None, "max_test_prompts": None,
              "instruction": "Pick the next product."}
    windows = pe.build_windows(seq, params)
    assert (windows["split"] == "test").sum() == len(seq)
    prompts = pe.render_prompts(pe.sample_candidates(windows, seq, params), items, params)
    train, val, test = pe.split_prompts(prompts)
    assert len(test) == len(seq) and test["input"].str.contains("D) ", regex=False).all()


def test_gift_cards_sample_runs():
    files = {"reviews": str(shared_file("Gift_Cards_5.json.gz")), "meta": str(shared_file("meta_Gift_Cards.json.gz"))}
    *_, counts = _run(files)
    assert counts["review_lines_read"] == 2972


def test_read_is_not_confused_by_files_named_gz_that_are_plain(tmp_path, synthetic_raw):
    plain = tmp_path / "Plain_5.json.gz"
    with gzip.open(synthetic_raw["reviews"], "rb") as src, open(plain, "wb") as dst:
        shutil.copyfileobj(src, dst)
    df, counts = _read({"reviews": str(plain)}, RAW)
    assert counts["review_bad_lines"] == 2 and len(_df(df)) > 100


def test_a_list_of_categories_is_read_mixed_with_counts_added_up():
    shared_file("Gift_Cards_5.json.gz")
    shared_file("Magazine_Subscriptions_5.json.gz")
    base = {**RAW, "data_dir": str(shared_file("Gift_Cards_5.json.gz").parent), "reviews_file": "{category}_5.json.gz",
            "meta_file": "meta_{category}.json.gz"}
    single = {c: _reviews(nodes.locate_raw_files({**base, "category": c}), base)
              for c in ("Gift_Cards", "Magazine_Subscriptions")}
    single = {c: (_df(t), counts) for c, (t, counts) in single.items()}
    files = nodes.locate_raw_files({**base, "category": ["Gift_Cards", "Magazine_Subscriptions"]})
    assert len(files["reviews"]) == 2 and len(files["meta"]) == 2
    mixed_table, counts = _reviews(files, base)
    mixed = _df(mixed_table)
    assert counts["review_lines_read"] == sum(c["review_lines_read"] for _, c in single.values())
    assert counts["reviews_kept"] == len(mixed) <= sum(len(df) for df, _ in single.values())
    assert set(mixed["asin"]) == set(single["Gift_Cards"][0]["asin"]) | set(single["Magazine_Subscriptions"][0]["asin"])
    meta, mc = nodes.read_metadata(files, mixed_table, base, PROC)
    assert mc["meta_lines_read"] > 1547 and set(_df(meta)["asin"]) <= set(mixed["asin"])
    with pytest.raises(ConfigError, match="empty list"):
        nodes.locate_raw_files({**base, "category": []})
