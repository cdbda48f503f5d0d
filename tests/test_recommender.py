"""The whole-catalogue recommender: retrieval, re-ranking, configuration errors, list metrics."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from amazon_llm_rec.core.errors import ConfigError
from amazon_llm_rec.core.rank.catalogue import list_metrics
from amazon_llm_rec.core.rank.evidence import Evidence
from amazon_llm_rec.core.rank.recommender import RecommendConfig, Recommender
from amazon_llm_rec.core.rank.retrieval import Retriever
from tests.conftest import base_params

ITEMS = pd.DataFrame({"asin": list("ABCDEFGH"),
                      "title": ["red drill", "drill bits set", "safety glasses", "work gloves", "tape measure",
                                "level tool", "hammer", "screwdriver"]})
# A is bought with B (3 times) and C (once); H is the most popular product; G was never bought
FITTED = [["A", "B"], ["A", "B"], ["B", "A", "C"], ["H", "D"], ["H", "E"], ["H", "F"], ["H"], ["D", "E"]]


def _retriever(sources=("cooccurrence", "popularity")) -> Retriever:
    return Retriever(Evidence(FITTED, ITEMS, base_params("evaluation")["embedding_model"]), list(sources), 0)


def _config(**overrides) -> RecommendConfig:
    return RecommendConfig.from_params(base_params("recommend", **overrides), 4)


def test_retriever_takes_cooccurrence_first_fills_with_popularity_and_skips_bought():
    retriever = _retriever()
    [got] = retriever.retrieve([["A"]], 5, [{"A"}])
    assert got.asins[:2] == ["B", "C"] and got.sources[:2] == ["cooccurrence", "cooccurrence"]
    assert got.asins[2] == "H" and set(got.sources[2:]) == {"popularity"}  # the most popular fills
    assert "A" not in got.asins and len(got.asins) == 5 and len(set(got.asins)) == 5
    [whole] = retriever.retrieve([["A"]], 100, [{"A"}])
    assert sorted(whole.asins) == sorted(set("BCDEFGH"))  # never-bought G comes last, but comes
    assert whole.asins[-1] == "G"


def test_retriever_alternates_its_sources_with_real_title_embeddings():
    retriever = _retriever(["cooccurrence", "embedding", "popularity"])
    [got] = retriever.retrieve([["A"]], 4, [{"A"}])
    assert got.sources == ["cooccurrence", "embedding", "cooccurrence", "embedding"]
    assert got.asins[0] == "B" and got.asins[2] == "C"
    assert got.asins[1] not in {"B", "C"}  # each source adds new products only
    with pytest.raises(ConfigError, match="recommend.retrieval.sources: unknown"):
        _retriever(["graph"])


def _fusion(features, weights):
    return {"features": features, "weights": weights, "mean": [0.0] * len(features), "scale": [1.0] * len(features)}


def test_recommender_reranks_retrieved_candidates_with_the_fitted_fusion():
    retriever = _retriever()
    model = {"fusion_no_llm": _fusion(["popularity"], [1.0])}  # popularity only: H first
    rec = Recommender(retriever, _config(num_candidates=4, k=3, ranker="fusion_no_llm"), model)
    [top] = rec.recommend([["A"]])
    assert [r.asin for r in top][0] == "H" and len(top) == 3
    assert top[0].retriever_rank == 3 and top[0].source == "popularity"
    assert top[0].score == pytest.approx(np.log1p(4))
    [kept] = rec.recommend([["A"]], exclude_bought=False, k=8)
    assert "A" in [r.asin for r in kept]  # the history is not left out on request
    [given] = rec.recommend([["A"]], candidates=[["C", "B", "A", "C"]])
    assert [r.asin for r in given] == ["B", "C"] and given[0].retriever_rank is None  # deduplicated, A bought
    by_cooc = Recommender(retriever, _config(num_candidates=4, k=2, ranker="fusion_no_llm"),
                          {"fusion_no_llm": _fusion(["cooccurrence", "popularity"], [1.0, 0.0])})
    assert [r.asin for r in by_cooc.recommend([["A"]])[0]] == ["B", "C"]
    plain = Recommender(retriever, _config(num_candidates=4, k=4, ranker="retriever"))
    assert [r.asin for r in plain.recommend([["A"]])[0]] == ["B", "C", "H", "D"]


def test_recommender_configuration_errors_name_the_parameter():
    retriever = _retriever()
    with pytest.raises(ConfigError, match="recommend.ranker 'fusion' is not in the fitted fusion model"):
        Recommender(retriever, _config(ranker="fusion"), {"fusion_no_llm": _fusion(["popularity"], [1.0])})
    with pytest.raises(ConfigError, match="uses the LLM's score"):
        Recommender(retriever, _config(ranker="fusion"), {"fusion": _fusion(["llm"], [1.0])})
    with pytest.raises(ConfigError, match="recommend.num_candidates must be a positive integer"):
        _config(num_candidates=0)
    with pytest.raises(ConfigError, match="recommend.ranker must be one of"):
        _config(ranker="magic")
    with pytest.raises(ConfigError, match=r"recommend: unknown parameter\(s\) \['topk'\]"):
        _config(topk=3)
    with pytest.raises(ConfigError, match=r"recommend: missing parameter\(s\) \['k'\]"):
        RecommendConfig.from_params({k: v for k, v in base_params("recommend").items() if k != "k"}, 4)
    assert RecommendConfig.from_params(base_params("recommend"), history_size=6).history_size == 6
    assert _config(history_size=3).history_size == 3  # recommend.history_size wins over the prompts


def test_list_metrics_known_answers():
    got = list_metrics([["a", "b", "c"], ["x", "y"], ["t"]], ["b", "z", "t"], k=10)
    assert got["recall@10"].tolist() == [1.0, 0.0, 1.0]
    assert got["mrr@10"].tolist() == [0.5, 0.0, 1.0]
    assert got["ndcg@10"] == pytest.approx([1 / np.log2(3), 0.0, 1.0])
    assert list_metrics([["a", "b"]], ["b"], k=1)["recall@1"].tolist() == [0.0]  # beyond k
