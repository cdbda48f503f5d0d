"""The whole-catalogue recommender: retrieval, re-ranking, configuration errors, list metrics."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from amazon_llm_rec.core.errors import ConfigError
from amazon_llm_rec.core.rank.catalogue import list_metrics
from amazon_llm_rec.core.rank.evidence import Evidence
from amazon_llm_rec.core.rank.recommender import RecommendConfig, Recommender
from amazon_llm_rec.core.rank.retrieval import RetrievalConfig, Retriever, learn_quotas
from tests.conftest import base_params

ITEMS = pd.DataFrame({"asin": list("ABCDEFGH"),
                      "title": ["red drill", "drill bits set", "safety glasses", "work gloves", "tape measure",
                                "level tool", "hammer", "screwdriver"]})
# A is bought with B (3 times) and C (once); H is the most popular product; G was never bought
FITTED = [["A", "B"], ["A", "B"], ["B", "A", "C"], ["H", "D"], ["H", "E"], ["H", "F"], ["H"], ["D", "E"]]


def _retrieval(**overrides) -> RetrievalConfig:
    return RetrievalConfig.from_params({**base_params("recommend")["retrieval"], "quotas": None, **overrides})


def _retriever(sources=("cooccurrence", "popularity"), weights=None, fitted=FITTED) -> Retriever:
    return Retriever(Evidence(fitted, ITEMS, base_params("evaluation")["embedding_model"]),
                     _retrieval(sources=list(sources)), weights)


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


def test_rp3beta_and_ease_rank_the_whole_catalogue_and_discount_popular_products():
    retriever = Retriever(Evidence(FITTED, ITEMS), _retrieval(sources=["cooccurrence", "rp3beta", "ease", "popularity"],
                                                              ease={"l2": 0.5, "max_items": 100}))
    [after_a, after_d] = retriever.ranked_lists([["A"], ["D"]], 2, [{"A"}, {"D"}])
    # A was bought with B three times and with C once: every item model puts B first
    assert after_a["cooccurrence"] == after_a["rp3beta"] == after_a["ease"] == ["B", "C"]
    # D was bought once with H (bought by 4 reviewers) and once with E (2): raw counts tie and popularity breaks the tie
    # towards H; RP3beta's popularity discount (beta) and EASE's regression (a light l2) both prefer E
    assert after_d["cooccurrence"] == ["H", "E"] and after_d["rp3beta"] == ["E", "H"] and after_d["ease"] == ["E", "H"]
    # above max_items products EASE is left out of the retriever (its solve is dense), and refused if called
    small = _retrieval(sources=["ease", "popularity"], ease={"l2": 200.0, "max_items": 3})
    assert Retriever(Evidence(FITTED, ITEMS), small).sources == ["popularity"]
    from amazon_llm_rec.core.rank import graph

    with pytest.raises(ConfigError, match="recommend.retrieval.ease.max_items"):
        graph.ease(Evidence(FITTED, ITEMS).interactions, 200.0, 3)


def test_the_sources_take_turns_by_their_weights_and_the_weights_are_learned_on_windows():
    [got] = _retriever(["cooccurrence", "embedding", "popularity"], {"cooccurrence": 2.0, "embedding": 1.0}).retrieve(
        [["A"]], 3, [{"A"}])
    assert got.sources == ["cooccurrence", "cooccurrence", "embedding"] and got.asins[:2] == ["B", "C"]
    # windows whose next product only RP3beta ranks first (co-occurrence's popular tie-break misses it)
    retriever = _retriever(["cooccurrence", "rp3beta", "popularity"])
    mix = learn_quotas(retriever, [["D"], ["E"]], ["E", "D"], [{"D"}, {"E"}], n=1, step=0.5)
    assert mix["weights"] == {"cooccurrence": 0.0, "rp3beta": 1.0}
    assert (mix["validation_recall"], mix["equal_turns_recall"], mix["grid_points"]) == (1.0, 0.0, 4)
    found = retriever.retrieve([["D"], ["E"]], 1, [{"D"}, {"E"}], mix["weights"])
    assert [f.asins for f in found] == [["E"], ["D"]]
    serving = _retriever(["cooccurrence", "rp3beta", "popularity"], mix["weights"])
    assert serving.sources == ["rp3beta", "popularity"] and set(serving.graph) == {"rp3beta"}  # no turns: not a source
    assert serving.cooc["D"]["H"] == 1  # the counts stay readable (the catalogue baseline, the service's reasons)
    assert [f.asins for f in serving.retrieve([["D"], ["E"]], 1, [{"D"}, {"E"}])] == [["E"], ["D"]]
    with pytest.raises(ConfigError, match="quotas: learned needs the mix fitted on validation windows"):
        Retriever(Evidence(FITTED, ITEMS), _retrieval(quotas="learned"))
    with pytest.raises(ConfigError, match="recommend.retrieval.quotas"):
        _retrieval(quotas={"bm25": 1.0})
    with pytest.raises(ConfigError, match="was learned for sources"):
        _retriever(["cooccurrence", "popularity"], {"cooccurrence": 0.5, "ease": 0.5})
    with pytest.raises(ConfigError, match="recommend.retrieval.learn"):
        _retrieval(learn={"step": 0.3, "max_windows": 10})


def test_the_embedding_index_is_exact_below_its_threshold_and_close_to_exact_above():
    from amazon_llm_rec.core.rank.ann import AnnConfig, EmbeddingIndex

    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(3000, 32)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = vectors[:50] + 0.1 * rng.normal(size=(50, 32)).astype(np.float32)
    conf = base_params("recommend")["retrieval"]["ann"]
    exact = EmbeddingIndex(vectors, AnnConfig.from_params({**conf, "min_items": 10_000}))
    truth = np.argsort(-(queries @ vectors.T), axis=1, kind="stable")[:, :20]
    assert exact.exact and (exact.search(queries, 20) == truth).all()
    hnsw = EmbeddingIndex(vectors, AnnConfig.from_params({**conf, "min_items": 1_000}))
    got = hnsw.search(queries, 20)
    recall = np.mean([len(set(g) & set(t)) / 20 for g, t in zip(got, truth, strict=True)])
    assert not hnsw.exact and recall >= 0.95 and (got[:, 0] == truth[:, 0]).mean() >= 0.95
    with pytest.raises(ConfigError, match="recommend.retrieval.ann.m must be a positive integer"):
        AnnConfig.from_params({**conf, "m": 0})


def test_stored_title_embeddings_and_their_graph_are_read_back_and_used_as_encoding_would(tmp_path):
    """The `title_embeddings` dataset: the vectors every cut reads equal a fresh encoding, the HNSW graph is written
    once and searched the same after loading, and an Evidence given them encodes nothing."""
    from amazon_llm_rec.core.rank.ann import AnnConfig, TitleEmbeddings
    from amazon_llm_rec.datasets import TitleEmbeddingsDataset

    model = base_params("evaluation")["embedding_model"]
    ann = AnnConfig.from_params({**base_params("recommend")["retrieval"]["ann"], "min_items": 4})  # HNSW here
    stored = TitleEmbeddings.encode(ITEMS, model, ann)
    dataset = TitleEmbeddingsDataset(str(tmp_path / "title_embeddings"))
    dataset.save(stored)
    assert (tmp_path / "title_embeddings" / "hnsw.faiss").is_file()
    loaded = dataset.load()
    assert loaded.asins == list(ITEMS["asin"]) and loaded.model == model and not loaded.index.exact
    stored_graph = loaded.index.index
    fresh = Evidence(FITTED, ITEMS, model)
    np.testing.assert_allclose(loaded.matrix, fresh.matrix, atol=1e-5)
    reading = Evidence(FITTED, ITEMS, model, embeddings=loaded)
    assert reading.matrix is loaded.matrix and reading.embedding_index(ann) is loaded.index
    np.testing.assert_allclose(reading.vectors(["C", "A"]), fresh.vectors(["C", "A"]), atol=1e-5)
    assert not reading._known  # nothing was encoded again
    queries = loaded.matrix[:3]
    assert (loaded.index.search(queries, 4) == stored.index.search(queries, 4)).all()
    other = Evidence(FITTED, ITEMS, "another-model", embeddings=loaded)  # vectors of another encoder are not used
    assert other.embeddings is None
    retitled = ITEMS.assign(title=ITEMS["title"].where(ITEMS["asin"] != "A", "blue drill"))
    stale = Evidence(FITTED, retitled, model, embeddings=loaded)  # items cleaned again since: not the same titles
    assert stale.embeddings is None and not np.allclose(stale.vectors(["A"]), loaded.rows(["A"]), atol=1e-3)
    tuned = loaded.search(AnnConfig(**{**vars(ann), "ef_search": 64}))  # a query-time setting: the graph is kept
    assert tuned.index is stored_graph and tuned.config.ef_search == 64


def test_no_title_is_encoded_when_nothing_in_the_configuration_reads_embeddings(tmp_path):
    from amazon_llm_rec.datasets import TitleEmbeddingsDataset
    from amazon_llm_rec.pipelines.evaluation.nodes import embed_titles

    evaluation, recommend = base_params("evaluation"), base_params("recommend")
    assert embed_titles(ITEMS, evaluation, recommend).asins == list(ITEMS["asin"])  # the defaults read them
    evaluation = {**evaluation, "baselines": ["popularity"], "fusion": {**evaluation["fusion"], "features": ["popularity"]}}
    recommend = {**recommend, "retrieval": {**recommend["retrieval"], "sources": ["cooccurrence", "popularity"]}}
    unused = embed_titles(ITEMS, evaluation, recommend)
    assert unused.asins == [] and unused.matrix.size == 0
    dataset = TitleEmbeddingsDataset(str(tmp_path / "title_embeddings"))
    dataset.save(unused)
    evidence = Evidence(FITTED, ITEMS, evaluation["embedding_model"], embeddings=dataset.load())
    assert evidence.embeddings is None and evidence.vectors(["A"]).shape[0] == 1  # encoded on demand, as before


def test_sparse_cooccurrence_counts_equal_the_pairwise_loop():
    from collections import Counter

    from amazon_llm_rec.core.rank import baselines
    from amazon_llm_rec.core.rank.counts import SparseCounts, summed_counts

    rng = np.random.default_rng(1)
    fitted = [[f"P{j}" for j in rng.integers(0, 40, size=rng.integers(1, 12))] for _ in range(300)]  # repeats too
    everything = {a for seq in fitted for a in seq}
    sparse = baselines.cooccurrence(fitted, 0)
    loop = baselines.cooccurrence(fitted, 0, rows=everything)  # the pairwise loop, every row kept
    assert isinstance(sparse, SparseCounts) and not isinstance(loop, SparseCounts)
    assert {a: dict(row.items()) for a, row in sparse.items()} == {a: dict(c) for a, c in loop.items() if c}
    assert sparse.get("NOPE", {}).get("P1", 0) == 0 and sparse["P3"]["P4"] == loop["P3"]["P4"]
    assert sparse["P3"]["P3"] == loop["P3"]["P3"] == 0 and "P3" not in sparse["P3"]  # a Counter's answer
    history = ["P1", "P2", "P1", "NOPE"]
    expected: Counter = Counter()
    for h in history:
        expected.update(loop.get(h, {}))
    assert summed_counts(sparse, history) == summed_counts(loop, history) == +expected


def test_fit_retriever_mix_learns_on_the_first_validation_windows_with_their_evidence():
    from amazon_llm_rec.pipelines.evaluation import nodes

    seqs = pd.DataFrame({"reviewer_id": [f"U{i}" for i in range(len(FITTED))], "asins": FITTED})
    # options prompts repeat a window once per row; the mix counts each window once, the first max_windows of them
    windows = pd.DataFrame({"reviewer_id": ["U0", "U0", "U3", "U4"], "position": [1, 1, 1, 1],
                            "history_asins": [["A"], ["A"], ["H"], ["H"]], "target_asin": ["B", "B", "D", "E"]})
    recommend = base_params("recommend", num_candidates=1, retrieval={"learn": {"step": 0.5, "max_windows": 2}})
    evidence = Evidence.for_windows(seqs, windows, ITEMS, base_params("evaluation"))
    mix = nodes.fit_retriever_mix(windows, seqs, evidence, recommend, {"history_size": 4})
    assert mix["windows"] == 2 and mix["n"] == 1 and mix["step"] == 0.5
    assert set(mix["weights"]) == {"cooccurrence", "rp3beta", "ease", "embedding"}
    assert sum(mix["weights"].values()) == pytest.approx(1.0) and mix["validation_recall"] >= mix["equal_turns_recall"]
    # the windows' own cut: U0 -> B is found (A and B are still bought together by U1 and U2), U3 -> D is not (cut
    # before their windows, U3 and U4 no longer show H with D or E; H is left with F only)
    assert mix["validation_recall"] == 0.5


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
