"""The learned fusion: per-candidate evidence (known answers, no leakage), its fit, the paired bootstrap,
pointwise prompts and their scoring."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from amazon_llm_rec.core.llm.scoring import predictions_frame
from amazon_llm_rec.core.metrics import paired_bootstrap
from amazon_llm_rec.core.rank import fusion
from amazon_llm_rec.pipelines.evaluation import nodes
from amazon_llm_rec.pipelines.prompt_engineering import nodes as pe
from amazon_llm_rec.pipelines.reporting import nodes as reporting
from tests.conftest import base_params, evidence_for

CHEAP = ["cooccurrence", "cooccurrence_all", "popularity", "bm25"]
PROMPTS = {"history_size": 2, "min_history": 2, "num_negatives": 3, "negatives": "uniform", "split": "leave_last_out",
           "seed": 0, "instruction": "Choose the next product.", "pointwise_instruction": "Name the next product.",
           "style": "pointwise"}


def _world(n_reviewers: int = 40, seed: int = 0):
    """Reviewers who buy within one of two product families, in order; titles name the family."""
    rng = np.random.default_rng(seed)
    fams = {f: [f"{f}{i}" for i in range(8)] for f in ("P", "Q")}
    seqs = []
    for r in range(n_reviewers):
        fam = fams["PQ"[r % 2]]
        n = int(rng.integers(5, 8))
        seqs.append((f"R{r}", [fam[j] for j in sorted(rng.choice(8, n, replace=False))]))
    sequences = pd.DataFrame(seqs, columns=["reviewer_id", "asins"])
    items = pd.DataFrame({"asin": fams["P"] + fams["Q"],
                          "title": [f"pipette tip {i}" for i in range(8)] + [f"welding rod {i}" for i in range(8)]})
    return sequences, items


def _prompts(sequences, items, split="validation", **extra):
    windows = pe.build_windows(sequences, {**PROMPTS, **extra})
    cands = pe.sample_candidates(windows, sequences, {**PROMPTS, **extra})
    rendered = pe.render_prompts(cands, items, {**PROMPTS, **extra})
    return rendered[rendered["split"] == split].reset_index(drop=True)


def test_features_known_answers():
    seqs = pd.DataFrame({"reviewer_id": ["U1", "U2", "U3", "T"],
                         "asins": [["H", "Y", "X"], ["H", "Y", "X"], ["X", "Z"], ["G", "H", "Q", "Y"]]})
    items = pd.DataFrame({"asin": list("HYXZGQW"), "title": ["h", "y", "x", "z", "g", "q", "w"]})
    test = pd.DataFrame({"reviewer_id": ["T"], "position": [3], "history_asins": [["H", "Q"]], "target_asin": ["Y"],
                         "candidate_asins": [["X", "Y", "Z", "W"]], "correct_letter": ["B"]})
    f = fusion.candidate_features(test, seqs, evidence_for(seqs, test, items),
                                  ["cooccurrence", "cooccurrence_all", "popularity"])
    # Y was bought with H by U1 and U2 (T's own Y is its target, cut); X with H by U1 and U2 too.
    np.testing.assert_allclose(f["cooccurrence"], np.log1p([[2, 2, 0, 0]]))
    np.testing.assert_allclose(f["cooccurrence_all"], np.log1p([[2, 2, 0, 0]]))  # G co-occurs with nothing else
    np.testing.assert_allclose(f["popularity"], np.log1p([[3, 2, 1, 0]]))
    long = fusion.features_frame(test, f, "main")
    assert long["label"].tolist() == [0, 1, 0, 0] and long["asin"].tolist() == ["X", "Y", "Z", "W"]


@pytest.mark.parametrize("split", ["validation", "test"])
def test_features_and_prompts_ignore_the_target_and_later_events(split):
    seqs, items = _world()
    prompts = _prompts(seqs, items, split)
    before = fusion.candidate_features(prompts, seqs, evidence_for(seqs, prompts, items), CHEAP)
    # Poison every event from each window's target on: other products, in another order.
    first = prompts.groupby("reviewer_id")["position"].min().to_dict()
    poisoned = seqs.copy()
    poisoned["asins"] = [list(a)[: first[r]] + ["Q7", "P7", "Q6"][: len(a) - first[r]] if r in first else list(a)
                         for r, a in zip(seqs["reviewer_id"], seqs["asins"], strict=True)]
    after = fusion.candidate_features(prompts, poisoned, evidence_for(poisoned, prompts, items), CHEAP)
    for name in CHEAP:
        np.testing.assert_allclose(before[name], after[name], err_msg=name)
    # the prompt text is made from the history only
    again = pe.render_prompts(prompts.drop(columns=["input", "output", "instruction"]), items, PROMPTS)
    assert (again["input"] == prompts["input"]).all() and "Options:" not in prompts["input"].iloc[0]


def test_pointwise_prompts_list_the_candidate_titles_and_keep_the_answer():
    seqs, items = _world()
    p = _prompts(seqs, items, "train")
    row = p.iloc[0]
    assert row["input"].startswith("Purchase history:\n1. ") and row["instruction"] == "Name the next product."
    truth = "ABCD".index(row["correct_letter"])
    assert row["output"] == f"{row['correct_letter']}) {row['candidate_titles'][truth]}"
    with pytest.raises(Exception, match="prompts.style"):
        pe.render_prompts(p.drop(columns=["input"]), items, {**PROMPTS, "style": "listwise"})


def test_pointwise_scores_do_not_depend_on_the_candidates_order(tiny_llama):
    from amazon_llm_rec.core.llm.models import load_model, load_tokenizer
    from amazon_llm_rec.core.llm.scoring import rotate_options, score_titles

    seqs, items = _world()
    prompts = _prompts(seqs, items, "test").head(5)
    tok, model = load_tokenizer(tiny_llama), load_model(tiny_llama)
    a = score_titles(model, tok, prompts, batch_size=2)
    b = np.roll(score_titles(model, tok, rotate_options(prompts, 1), batch_size=3), -1, axis=1)
    np.testing.assert_allclose(a, b, atol=1e-4)


def _separable(n: int, k: int, seed: int):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, k, 3))
    y = (x[..., 0] * 2.0 + rng.gumbel(size=(n, k))).argmax(axis=1)  # feature 0 matters, 1 and 2 do not
    return x, y


def test_conditional_logit_recovers_the_informative_feature_and_generalises():
    x, y = _separable(2000, 4, 0)
    model = fusion.fit_conditional_logit(x, y, ["a", "b", "c"], l2=1e-3)
    w = dict(zip(model["features"], model["weights"], strict=True))
    assert model["converged"] and w["a"] > 1.0 and abs(w["b"]) < 0.2 and abs(w["c"]) < 0.2
    x2, y2 = _separable(2000, 20, 1)  # other windows, more candidates
    hr = float(np.mean(fusion.apply_fusion(model, x2).argmax(axis=1) == y2))
    assert hr > 0.3  # chance is 0.05
    bad = x.copy()
    bad[0, 0, 1] = np.nan
    with pytest.raises(ValueError, match=r"\['b'\]"):
        fusion.fit_conditional_logit(bad, y, ["a", "b", "c"])


def test_fit_and_score_fusion_with_and_without_the_llm():
    seqs, items = _world(60)
    val, test = _prompts(seqs, items, "validation"), _prompts(seqs, items, "test")
    ev = base_params("evaluation", fusion={"features": ["llm", *CHEAP]}, seed=0)
    vf = nodes.candidate_features(val, seqs, nodes.fit_evidence(val, seqs, items, ev), ev)
    tf = nodes.candidate_features(test, seqs, nodes.fit_evidence(test, seqs, items, ev), ev)
    rng = np.random.default_rng(0)

    def llm(prompts):  # an "LLM" that knows the truth half the time
        truth = prompts["correct_letter"].map("ABCD".index).to_numpy()
        scores = rng.random((len(prompts), 4))
        scores[np.arange(len(prompts)), truth] += rng.random(len(prompts)) > 0.5
        return predictions_frame("fine_tuned", prompts, scores)

    model = nodes.fit_fusion(vf, llm(val), ev)
    assert set(model) == {"fusion", "fusion_no_llm"} and "llm" not in model["fusion_no_llm"]["features"]
    assert model["fusion"]["weights"][0] > 0.5  # the informative LLM score gets a large weight
    preds = nodes.score_fusion(tf, llm(test).assign(protocol="main"), test, model)
    assert set(preds["method"]) == {"fusion", "fusion_no_llm"}
    assert (preds.groupby("method").size() == len(test)).all()
    with pytest.raises(Exception, match="evaluation.fusion.features"):
        nodes.fit_fusion(vf, llm(val), {"fusion": {"features": ["llm", "telepathy"]}})


def test_paired_bootstrap():
    rng = np.random.default_rng(0)
    n = 1000
    reviewers = np.array([f"U{i}" for i in range(n)])
    a = (rng.random(n) < 0.5).astype(float)
    same = paired_bootstrap(a, a, reviewers, 500, 0)
    assert same["diff"] == 0 and same["lo"] == 0 and same["hi"] == 0 and same["reviewers"] == n
    b = a.copy()
    b[:100] = 0
    a2 = a.copy()
    a2[:100] = 1  # a2 is right on 100 more prompts than b, equal elsewhere
    d = paired_bootstrap(a2, b, reviewers, 500, 0)
    assert d["diff"] == pytest.approx((a2 - b).mean()) and 0 < d["lo"] < d["diff"] < d["hi"]
    # pairing: much narrower than the difference of two independent intervals would suggest
    assert d["hi"] - d["lo"] < 0.06
    # resampling reviewers keeps all of a reviewer's prompts together
    grouped = paired_bootstrap(a2, b, np.repeat(reviewers[:500], 2), 500, 0)
    assert grouped["reviewers"] == 500 and grouped["diff"] == pytest.approx(d["diff"])
    with pytest.raises(ValueError, match="same prompts"):
        paired_bootstrap(a, a[:10], reviewers, 10, 0)


def test_metrics_report_paired_differences_and_summary():
    rng = np.random.default_rng(0)
    n = 400
    prompts = pd.DataFrame({"reviewer_id": [f"U{i}" for i in range(n)], "target_asin": "t", "output": "x",
                            "candidate_asins": [list("tuvw")] * n,
                            "correct_letter": rng.choice(list("ABCD"), n)})
    truth = prompts["correct_letter"].map("ABCD".index).to_numpy()
    good = rng.random((n, 4))
    good[np.arange(n), truth] += 0.7
    frames = [predictions_frame("fusion", prompts, good), predictions_frame("random", prompts, rng.random((n, 4)))]
    llm = pd.concat([predictions_frame("fine_tuned", prompts, good + rng.random((n, 4))),
                     predictions_frame("zero_shot", prompts, rng.random((n, 4)))]).assign(scoring="title_likelihood")
    metrics = nodes.compute_metrics(llm, frames[1], prompts, {},
                                    base_params("evaluation", seed=0, bootstrap_samples=200,
                                                fusion={"recommended": "fusion"}), frames[0])
    paired = metrics["protocols"]["main"]["paired"]
    assert set(paired) == {"random", "fine_tuned", "zero_shot"} and paired["random"]["hr1"]["lo"] > 0
    catalogue = {"reviewers": n, "k": 10, "ranker": "fusion_no_llm",
                 "methods": {"fusion": {"recall@10": 0.3}, "fusion_no_llm": {"recall@10": 0.28}},
                 "fusion_vs_fusion_no_llm": {"recall@10": {"diff": 0.02, "lo": -0.01, "hi": 0.05, "reviewers": n}}}
    summary = reporting.comparison_summary(metrics, catalogue, {"category": "Demo"},
                                           base_params("evaluation", command="kedro run --env=x"))
    main = summary["protocols"]["main"]
    # fine-tuned (informative scores) against zero-shot (random ones), paired on the same prompts
    assert main["fine_tuned_vs_zero_shot"]["lo"] > 0 and set(main["fine_tuned_vs_zero_shot"]) == {"diff", "lo", "hi"}
    assert summary["catalogue"] == {"reviewers": n, "method": "fusion", "metric": "recall@10", "value": 0.3,
                                    "vs_fusion_no_llm": {"diff": 0.02, "lo": -0.01, "hi": 0.05}}
    assert "catalogue" not in reporting.comparison_summary(metrics, {}, {}, base_params("evaluation"))
    assert summary["dataset"] == "Demo" and main["method"] == "fusion" and main["reviewers"] == n
    assert main["beats_every_other_method"] and set(main["vs"]["random"]) == {"diff", "lo", "hi"}
    report = reporting.write_report(metrics, {}, pd.DataFrame(columns=["prediction", "truth", "truth_rank"]))
    assert "## The recommended method (`fusion`) against every other method, paired" in report
    assert "fusion beats every other method here" in report
