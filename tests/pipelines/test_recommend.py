"""`kedro run --pipeline=recommend`: the top k of every (or every named) reviewer, on a project after `kedro run`."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest

from tests.conftest import kedro_session

pytestmark = pytest.mark.slow


@pytest.fixture
def project(ran_project, tmp_path, monkeypatch):
    """A copy of the ran project per test: a recommend run writes into it, and no other test sees that."""
    copy = tmp_path / "project"
    shutil.copytree(ran_project, copy, ignore=shutil.ignore_patterns("mlruns", "build"))
    monkeypatch.chdir(copy)
    return copy


def test_recommend_writes_the_top_k_of_the_named_reviewers(project):
    sequences = pd.read_parquet(project / "data" / "04_feature" / "reviewer_sequences.parquet")
    named = sequences["reviewer_id"].tolist()[:5]
    with kedro_session(project, extra={"recommend": {"reviewers": named, "k": 4, "num_candidates": 10,
                                                         "chunk_size": 2}}) as session:
        session.run(pipeline_name="recommend")
    out = pd.read_parquet(project / "data" / "07_model_output" / "recommendations.parquet")
    assert list(out.columns) == ["reviewer_id", "rank", "asin", "title", "score", "retriever_rank", "source"]
    assert out["reviewer_id"].drop_duplicates().tolist() == named
    assert (out.groupby("reviewer_id")["rank"].apply(list) == [[1, 2, 3, 4]] * 5).all()
    bought = dict(zip(sequences["reviewer_id"], sequences["asins"], strict=True))
    for rid, group in out.groupby("reviewer_id"):
        assert not set(group["asin"]) & set(bought[rid])  # nothing already bought
        assert group["score"].is_monotonic_decreasing and group["retriever_rank"].between(1, 10).all()
        assert group["title"].str.len().gt(0).all()


def test_recommend_names_unknown_reviewers(project):
    from amazon_llm_rec.core.errors import ConfigError

    with kedro_session(project, extra={"recommend": {"reviewers": ["NOBODY"]}}) as session, \
            pytest.raises(ConfigError, match=r"recommend.reviewers: 1 unknown reviewer id\(s\), e.g. \['NOBODY'\]"):
        session.run(pipeline_name="recommend")


def test_recommend_for_every_reviewer_without_the_llm(project):
    with kedro_session(project, extra={"recommend": {"ranker": "fusion_no_llm", "k": 3}}) as session:
        session.run(pipeline_name="recommend")
    out = pd.read_parquet(project / "data" / "07_model_output" / "recommendations.parquet")
    sequences = pd.read_parquet(project / "data" / "04_feature" / "reviewer_sequences.parquet")
    assert out["reviewer_id"].nunique() == len(sequences) and len(out) == 3 * len(sequences)


def test_two_recommend_shards_joined_equal_one_shard(project):
    from amazon_llm_rec.core.errors import ConfigError

    out = project / "data" / "07_model_output"
    base = {"ranker": "fusion_no_llm", "k": 3}
    with kedro_session(project, extra={"recommend": base}) as session:
        session.run(pipeline_name="recommend")
    one = pd.read_parquet(out / "recommendations.parquet")
    for index in (0, 1):
        with kedro_session(project, extra={"recommend": {**base, "shard": {"index": index, "count": 2}}}) as session:
            session.run(pipeline_name="recommend", node_names=["recommend_batch"])
    parts = {i: pd.read_parquet(out / "recommendation_shards" / f"shard-{i}-of-2.parquet") for i in (0, 1)}
    assert len(parts[0]) and len(parts[1]) and not set(parts[0]["reviewer_id"]) & set(parts[1]["reviewer_id"])
    with kedro_session(project, extra={"recommend": {**base, "shard": {"count": 2}}}) as session:
        session.run(pipeline_name="recommend", node_names=["join_recommendations"])
    two = pd.read_parquet(out / "recommendations.parquet")
    pd.testing.assert_frame_equal(two, one)
    (out / "recommendation_shards" / "shard-1-of-2.parquet").unlink()
    with kedro_session(project, extra={"recommend": {**base, "shard": {"count": 2}}}) as session, \
            pytest.raises(ConfigError, match=r"1 of 2 shard\(s\) not written yet \(shard-1-of-2\)"):
        session.run(pipeline_name="recommend", node_names=["join_recommendations"])
