"""evaluation: baselines with known answers, metrics, scoring with a real (tiny) model, reports."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from amazon_llm_rec.core.llm.scoring import predictions_frame, score_options
from amazon_llm_rec.core.metrics import method_metrics, normalize_answer
from amazon_llm_rec.core.rank import baselines
from amazon_llm_rec.pipelines.evaluation import nodes
from amazon_llm_rec.pipelines.reporting import nodes as reporting
from tests.conftest import base_params, evidence_for


def _baselines(test, seqs, items=None, **evaluation):
    """Score the baselines as the pipeline does: conf/base's settings with `evaluation` overrides, on the evidence of
    the test windows' cut."""
    params = base_params("evaluation", **evaluation)
    return baselines.score_baselines(test, seqs, params, evidence_for(seqs, test, items, **evaluation))


@pytest.fixture
def hand_made():
    # X is bought by everyone (popular); after H, reviewers buy Y (co-occurrence).
    seqs = pd.DataFrame({
        "reviewer_id": ["U1", "U2", "U3", "U4", "T"],
        "asins": [["H", "Y", "X"], ["H", "Y", "X"], ["X", "Z"], ["X", "W"], ["H", "Q", "Y"]],
    })
    test = pd.DataFrame({
        "reviewer_id": ["T"], "position": [2], "history_asins": [["H", "Q"]], "target_asin": ["Y"],
        "candidate_asins": [["X", "Y", "Z", "W"]], "correct_letter": ["B"], "output": ["B) y"],
    })
    return seqs, test


def test_fit_excludes_test_targets(hand_made):
    seqs, test = hand_made
    fitted = baselines.fit_sequences(seqs, test)
    assert fitted[-1] == ["H", "Q"]


def test_popularity_and_cooccurrence_known_answers(hand_made):
    seqs, test = hand_made
    scores = _baselines(test, seqs, seed=0, cooccurrence_window=1, baselines=["random", "popularity", "cooccurrence"])
    assert set(scores) == {"random", "popularity", "cooccurrence"}
    assert scores["popularity"][0].argmax() == 0  # X: reviewed by 4
    assert scores["cooccurrence"][0].argmax() == 1  # Y: right after H twice (X only two steps after)
    assert scores["random"].shape == (1, 4)


@pytest.mark.parametrize("window", [0, 2])
def test_cooccurrence_restricted_to_histories_and_candidates_keeps_their_counts(window):
    rng = np.random.default_rng(3)
    fitted = [[f"P{i}" for i in rng.choice(60, size=rng.integers(2, 12), replace=False)] for _ in range(400)]
    rows, cols = {f"P{i}" for i in range(0, 60, 7)}, {f"P{i}" for i in range(0, 60, 5)}
    full = baselines.cooccurrence(fitted, window)
    part = baselines.cooccurrence(fitted, window, rows=rows, cols=cols)
    assert set(part) <= rows and all(set(c) <= cols for c in part.values())
    for a in rows:
        for b in cols:
            assert part[a][b] == full[a][b]


def test_metrics_known_values():
    prompts = pd.DataFrame({"reviewer_id": list("abcd"), "target_asin": list("wxyz"), "correct_letter": list("ABCD"),
                            "output": ["A) one", "B) two", "C) three", "D) four"]})
    scores = np.array([[3, 2, 1, 0], [3, 2, 1, 0], [0, 1, 2, 3], [0, 1, 2, 3]], dtype=float)
    preds = predictions_frame("m", prompts, scores, ["A) One!", "x", None, None])
    m = method_metrics(preds, 1000, 0)
    assert m["accuracy"] == 0.5  # a and d right
    assert m["mrr"] == pytest.approx((1 + 1 / 2 + 1 / 2 + 1) / 4)
    assert m["exact_match"] == 0.5 and m["exact_match_n"] == 2
    assert normalize_answer(" A) One! ") == "aone"


def test_random_baseline_is_near_chance_on_many_prompts():
    rng = np.random.default_rng(0)
    n = 2000
    seqs = pd.DataFrame({"reviewer_id": [f"U{i}" for i in range(n)], "asins": [["a", "b"]] * n})
    test = pd.DataFrame({"reviewer_id": seqs["reviewer_id"], "position": 1, "history_asins": [["a"]] * n,
                         "target_asin": "b", "candidate_asins": [list("bcde")] * n,
                         "correct_letter": rng.choice(list("ABCD"), n), "output": "x"})
    params = base_params("evaluation", seed=1, baselines=["random"])
    preds = nodes.score_baseline_methods(test, seqs, nodes.fit_evidence(test, seqs, None, params), params)
    acc = method_metrics(preds[preds.method == "random"], 1000, 0)["accuracy"]
    assert 0.22 < acc < 0.28


def _prompts(n=6):
    rows = []
    for i in range(n):
        c = "ABCD"[i % 4]
        rows.append({"reviewer_id": f"U{i}", "target_asin": "t", "instruction": "Pick the next product.",
                     "input": "Purchase history:\n1. Beaker\n\nOptions:\n" + "\n".join(f"{x}) Item {x}" for x in "ABCD"),
                     "output": f"{c}) Item {c}", "correct_letter": c, "candidate_asins": list("tuvw")})
    return pd.DataFrame(rows)


def test_title_scores_share_the_prompt_cache_and_match_separate_passes(tiny_llama):
    import torch

    from amazon_llm_rec.core.llm.models import load_model, load_tokenizer, messages, render_prompt
    from amazon_llm_rec.core.llm.scoring import score_titles

    tok, model = load_tokenizer(tiny_llama), load_model(tiny_llama)
    prompts = _prompts(3)
    prompts.loc[1, "input"] = prompts.loc[1, "input"].replace("Beaker", "A much longer beaker title here")
    fast = score_titles(model, tok, prompts, batch_size=2)
    for r, row in enumerate(prompts.itertuples()):
        p = tok(render_prompt(tok, row.instruction, row.input), add_special_tokens=False)["input_ids"]
        for k, letter in enumerate("ABCD"):
            # the answer's tokens as training builds them: the tail of the whole conversation (end tokens included)
            whole = tok(tok.apply_chat_template(messages(row.instruction, row.input, f"Item {letter}"), tokenize=False),
                        add_special_tokens=False)["input_ids"]
            assert whole[: len(p)] == p
            a = whole[len(p):]
            with torch.inference_mode():
                lp = torch.log_softmax(model(input_ids=torch.tensor([p + a])).logits[0].float(), -1)
            ref = lp[torch.arange(len(p) - 1, len(p) + len(a) - 1), torch.tensor(a)].mean().item()
            assert fast[r, k] == pytest.approx(ref, abs=1e-4)


def test_option_scores_are_letter_log_probs_and_batching_does_not_change_them(tiny_llama):
    from amazon_llm_rec.core.llm.models import load_model, load_tokenizer

    tok, model = load_tokenizer(tiny_llama), load_model(tiny_llama)
    a = score_options(model, tok, _prompts(), batch_size=1)
    b = score_options(model, tok, _prompts(), batch_size=4)
    assert a.shape == (6, 4) and np.all(a < 0) and np.all(np.isfinite(a))
    np.testing.assert_allclose(a, b, atol=1e-4)


@pytest.mark.parametrize("mode", ["title_likelihood", "letter_logits"])
def test_score_llms_reports_zero_shot_and_fine_tuned(tiny_llama, tmp_path, mode):
    from amazon_llm_rec.core.llm.training import train_adapter
    from amazon_llm_rec.datasets import LoRAAdapterDataset
    from tests.pipelines.test_fine_tuning import FT

    adapter, _ = train_adapter(tiny_llama, _prompts(8), _prompts(4), {**FT, "checkpoint_dir": str(tmp_path / "c"), "max_steps": 2})
    ds = LoRAAdapterDataset(str(tmp_path / "adapter"))
    ds.save(adapter)
    ev = base_params("evaluation", device="cpu", bf16=False, batch_size=4, max_new_tokens=4, exact_match_max_prompts=3,
                     seed=0, scoring=mode, baselines=["random", "popularity", "cooccurrence"])
    preds = nodes.join_llm_predictions(nodes.score_llms(_prompts(), tiny_llama, ds.load(), {"target": "title"}, None, ev),
                                       _prompts(), ev)
    assert (preds["expected_output"] == [f"Item {c}" for c in "ABCDAB"] * 2).all()
    assert list(preds["method"].unique()) == ["zero_shot", "fine_tuned"]
    assert preds["generated"].notna().sum() == 6  # 3 per model
    zs, ft = (np.stack(preds[preds.method == m]["scores"].to_list()) for m in ("zero_shot", "fine_tuned"))
    assert not np.allclose(zs, ft)  # the adapter changes the scores
    windows = _prompts().assign(position=1, history_asins=[["q"]] * 6)
    sequences = pd.DataFrame({"reviewer_id": [f"U{i}" for i in range(6)], "asins": [["q", "t"]] * 6})
    base = nodes.score_baseline_methods(windows, sequences, nodes.fit_evidence(windows, sequences, None, ev), ev)
    metrics = nodes.compute_metrics(preds, base, _prompts(), {"backend": "lora", "steps": 2, "epochs": 1.0}, ev)
    assert set(metrics["methods"]) == {"random", "popularity", "cooccurrence", "zero_shot", "fine_tuned"}
    assert metrics["test_prompts"] == 6 and metrics["num_options"] == 4
    report = reporting.render_report(metrics)
    assert "| fine_tuned |" in report and "| cooccurrence |" in report
    assert reporting.plot_metrics(metrics).axes[0].get_title() == "main: 6 test prompts, 4 candidates"
    assert metrics["methods"]["fine_tuned"]["prompt_passes"] == 6
    assert set(metrics["methods"]["fine_tuned"]["accuracy_by_position"]) == set("ABCD")
    errors = reporting.error_analysis(preds, _prompts())
    tuned = preds[preds.method == "fine_tuned"]
    assert len(errors) == int((tuned.predicted_letter != tuned.correct_letter).sum())
    if len(errors):
        assert errors["prediction"].iloc[0][1] == ")" and errors["truth"].iloc[0].startswith(tuple("ABCD"))


def test_two_shards_of_the_llm_scoring_joined_equal_one_shard(tiny_llama, tmp_path):
    from amazon_llm_rec.core.errors import ConfigError
    from amazon_llm_rec.core.llm.sharding import Shard
    from amazon_llm_rec.core.llm.training import train_adapter
    from amazon_llm_rec.datasets import LoRAAdapterDataset
    from tests.pipelines.test_fine_tuning import FT

    adapter, _ = train_adapter(tiny_llama, _prompts(8), _prompts(4), {**FT, "checkpoint_dir": str(tmp_path / "c"), "max_steps": 1})
    ds = LoRAAdapterDataset(str(tmp_path / "adapter"))
    ds.save(adapter)
    apart = [f"U{i % 3}" for i in range(8)]  # a reviewer's windows apart from each other, as paper_random makes them
    prompts = pd.concat([_prompts(8).assign(protocol="main", reviewer_id=apart), _prompts(8).assign(protocol="uniform_20")],
                        ignore_index=True)
    ev = base_params("evaluation", device="cpu", bf16=False, batch_size=1, max_new_tokens=3, exact_match_max_prompts=3,
                     seed=0, llm_protocols=None)

    def run(index, count):
        return nodes.score_llms(prompts, tiny_llama, ds.load(), {"target": "title"}, None, {**ev, "shard": {"index": index, "count": count}})

    one = nodes.join_llm_predictions(run(0, 1), prompts, ev)
    parts = {**run(0, 2), **run(1, 2)}
    assert set(parts) == {"shard-0-of-2", "shard-1-of-2"} and all(len(p) for p in parts.values())
    assert len(Shard(0, 2).take(prompts)) < len(prompts)
    two = nodes.join_llm_predictions(parts, prompts, {**ev, "shard": {"index": 0, "count": 2}})
    def same(frame):  # as stored: timings differ by run, a missing answer is None in Parquet either way
        frame = frame.drop(columns="score_seconds")
        return frame.assign(generated=frame["generated"].astype(object).where(frame["generated"].notna(), None))

    pd.testing.assert_frame_equal(same(two), same(one))
    assert two["generated"].notna().sum() == 6  # exact match on the same 3 prompts a model, as unsharded
    val = _prompts(8).assign(reviewer_id=apart)
    one_v = nodes.join_validation_llm_predictions(
        nodes.score_validation_llm(val, tiny_llama, ds.load(), {"target": "title"}, None, ev), val, ev)
    halves = [nodes.score_validation_llm(val, tiny_llama, ds.load(), {"target": "title"}, None, {**ev, "shard": {"index": i, "count": 2}})
              for i in (0, 1)]
    two_v = nodes.join_validation_llm_predictions({**halves[0], **halves[1]}, val, {**ev, "shard": {"count": 2}})
    pd.testing.assert_frame_equal(same(two_v), same(one_v))  # the fusion reads these by position
    with pytest.raises(ConfigError, match=r"llm_prediction_shards: 1 of 2 shard\(s\) not written yet \(shard-1-of-2\)"):
        nodes.join_llm_predictions({"shard-0-of-2": parts["shard-0-of-2"]}, prompts, {**ev, "shard": {"count": 2}})
    with pytest.raises(ConfigError, match="evaluation.shard: index must be in 0..count-1"):
        run(2, 2)


def test_merged_export_rechecks_validation_accuracy(tiny_llama, tmp_path):
    from amazon_llm_rec.core.llm.training import train_adapter
    from amazon_llm_rec.datasets import LoRAAdapterDataset, MergedModelDataset
    from tests.pipelines.test_fine_tuning import FT

    adapter, _ = train_adapter(tiny_llama, _prompts(8), _prompts(4), {**FT, "checkpoint_dir": str(tmp_path / "c"), "max_steps": 2})
    ads = LoRAAdapterDataset(str(tmp_path / "adapter"))
    ads.save(adapter)
    ev = base_params("evaluation", device="cpu", bf16=False, batch_size=4, scoring="title_likelihood")
    off, report = nodes.export_merged_model(_prompts(4), tiny_llama, ads.load(), {"target": "title"}, None, ev)
    assert report == {"exported": False} and off.model is None
    merged, report = nodes.export_merged_model(_prompts(4), tiny_llama, ads.load(), {"target": "title"}, None,
                                               {**ev, "export_merged": True})
    assert report["exported"] and report["validation_prompts"] == 4
    # in float32 on the CPU, merging changes no prediction: the same accuracy, not "within a tolerance"
    assert report["dtype"] == "float32" and report["accuracy_merged"] == report["accuracy_adapter"]
    assert report["dropped"] is False
    ds = MergedModelDataset(str(tmp_path / "merged"))
    ds.save(merged)
    assert (tmp_path / "merged" / "config.json").is_file() and not any("lora" in p.name for p in (tmp_path / "merged").iterdir())
    MergedModelDataset(str(tmp_path / "none")).save(off)
    assert not (tmp_path / "none").exists()


def _random_preds(n: int, k: int = 4, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    letters = [chr(65 + i) for i in range(k)]
    prompts = pd.DataFrame({"reviewer_id": [f"U{i}" for i in range(n)], "target_asin": "t",
                            "correct_letter": rng.choice(letters, n), "output": "x"})
    return predictions_frame("m", prompts, rng.random((n, k)))


def test_bootstrap_intervals_contain_the_estimate_and_shrink_with_more_reviewers():
    small, large = method_metrics(_random_preds(100), 1000, 0), method_metrics(_random_preds(3000), 1000, 0)
    for m in (small, large):
        lo, hi = m["ci95"]["accuracy"]
        assert lo <= m["accuracy"] <= hi
    width = {name: m["ci95"]["accuracy"][1] - m["ci95"]["accuracy"][0] for name, m in (("s", small), ("l", large))}
    assert width["l"] < width["s"] / 3
    assert small["reviewers"] == 100


def test_bootstrap_intervals_resample_reviewers_not_prompts():
    # 50 reviewers with 20 prompts each, a reviewer's prompts all right or all wrong (as a reviewer's several
    # paper_random prompts are alike): the interval is as wide as for 50 independent prompts, not 1,000
    clustered = _random_preds(1000)
    clustered["reviewer_id"] = [f"U{i // 20}" for i in range(1000)]
    right = np.random.default_rng(1).random(50) < 0.5
    clustered["predicted_letter"] = np.where(np.repeat(right, 20), clustered["correct_letter"], "Z")
    few, many = _random_preds(50), _random_preds(1000)
    width = {name: np.diff(method_metrics(p, 1000, 0)["ci95"]["accuracy"])[0]
             for name, p in (("clustered", clustered), ("few", few), ("many", many))}
    assert width["clustered"] > 2.5 * width["many"]
    assert 0.6 * width["few"] < width["clustered"] < 1.6 * width["few"]


def test_hr_and_ndcg_at_k_only_with_enough_candidates():
    assert "hr@5" not in method_metrics(_random_preds(50, k=4), bootstrap_samples=0, seed=0)
    m = method_metrics(_random_preds(400, k=20), bootstrap_samples=0, seed=0)
    assert m["accuracy"] <= m["hr@5"] <= m["hr@10"] <= 1 and 0.15 < m["hr@5"] < 0.35
    assert m["ndcg@5"] <= m["hr@5"] and "ci95" not in m


TITLES = {"H": "stainless steel claw hammer", "Q": "steel hammer handle grip", "X": "blue plastic bucket",
          "Y": "steel framing hammer", "Z": "garden hose nozzle", "W": "ceramic coffee mug"}


def test_bm25_and_embedding_rank_the_title_like_the_history_first(hand_made):
    seqs, test = hand_made
    items = pd.DataFrame({"asin": list(TITLES), "title": list(TITLES.values())})
    scores = _baselines(test, seqs, items, seed=0, baselines=["bm25", "embedding"])
    assert scores["bm25"][0].argmax() == 1  # Y: "steel ... hammer" shares the history's words
    assert scores["embedding"][0].argmax() == 1
    # a coffee-mug history puts the mug first, by meaning: no word is shared with "ceramic coffee mug"
    mug = test.assign(history_asins=[["M"]])
    with_mug = pd.concat([items, pd.DataFrame({"asin": ["M"], "title": ["espresso cup for the kitchen"]})])
    assert _baselines(mug, seqs, with_mug, seed=0, baselines=["embedding"])["embedding"][0].argmax() == 3
    with pytest.raises(ValueError, match="items dataset"):
        _baselines(test, seqs, seed=0, baselines=["bm25"])
    with pytest.raises(ValueError, match="unknown"):
        _baselines(test, seqs, seed=0, baselines=["itemknn"])


@pytest.mark.parametrize("loss", [{"loss": "bce"}, {"loss": "softmax"}, {"loss": "softmax", "softmax_negatives": 8}])
def test_sasrec_learns_a_sequential_pattern(loss):
    from amazon_llm_rec.core.rank.sasrec import SASRecConfig, fit_sasrec

    # 300 reviewers walk a ring of 40 products in order; after ..., P7, P8 comes P9.
    seqs = [[f"P{(s + i) % 40}" for i in range(8)] for s in range(300)]
    fitted = fit_sasrec(seqs, SASRecConfig.from_params(base_params("evaluation", sasrec={
        "epochs": 15, "dropout": 0.2, "max_len": 10, "patience": None, **loss})["sasrec"]))
    assert fitted.losses[-1] < fitted.losses[0] / 2
    prefixes = [[f"P{(s + i) % 40}" for i in range(5)] for s in range(40)]
    cands = [[f"P{(s + 5) % 40}", f"P{(s + 20) % 40}", f"P{(s + 30) % 40}", "unseen"] for s in range(40)]
    scores = fitted.score(prefixes, cands)
    assert (scores.argmax(axis=1) == 0).mean() > 0.9
    assert (scores[:, 3] == -1e9).all()  # a product never seen in training ranks last


def test_sasrec_stops_early_on_held_out_last_items_and_keeps_the_best_epoch():
    from amazon_llm_rec.core.rank.sasrec import SASRecConfig, fit_sasrec

    seqs = [[f"P{(s + i) % 40}" for i in range(8)] for s in range(300)]
    cfg = SASRecConfig.from_params(base_params("evaluation", sasrec={
        "epochs": 200, "dropout": 0.2, "max_len": 10, "patience": 2, "eval_every": 2, "max_minutes": None})["sasrec"])
    fitted = fit_sasrec(seqs, cfg)
    assert len(fitted.losses) < 200 and 0 < fitted.best_epoch <= len(fitted.losses)  # stopped well before 200
    assert len(fitted.losses) - fitted.best_epoch == 2 * 2  # two checks without a gain after the best
    again = fit_sasrec(seqs, cfg)
    assert again.best_epoch == fitted.best_epoch and again.losses == fitted.losses  # seeded: the same stop
    top = fitted.top_k([[f"P{(s + i) % 40}" for i in range(5)] for s in range(40)], 10)
    assert all(f"P{(s + 5) % 40}" in t for s, t in enumerate(top))  # the next product is in every top 10


def test_sasrec_stops_at_its_time_budget_and_says_so(caplog):
    from amazon_llm_rec.core.rank.sasrec import SASRecConfig, fit_sasrec

    seqs = [[f"P{(s + i) % 40}" for i in range(8)] for s in range(300)]
    with caplog.at_level("WARNING"):
        fitted = fit_sasrec(seqs, SASRecConfig.from_params(base_params("evaluation", sasrec={
            "epochs": 200, "max_len": 10, "max_minutes": 0.0})["sasrec"]))
    assert len(fitted.losses) == 1  # the epoch that crossed a zero budget, then it stops
    assert "stopped at its time budget (sasrec.max_minutes 0.0) after 1 of 200 epochs" in caplog.text


def test_sasrec_baseline_scores_every_candidate_of_the_test_prompts(hand_made):
    seqs, test = hand_made
    scores = _baselines(test, seqs, seed=0, baselines=["sasrec"], sasrec={"epochs": 2, "max_len": 5})
    assert scores["sasrec"].shape == (1, 4) and np.isfinite(scores["sasrec"]).all()


def test_rotated_options_map_back_and_keep_the_truth():
    from amazon_llm_rec.core.llm.scoring import option_lines, rotate_options

    prompts = _prompts(4)
    for shift in range(4):
        rot = rotate_options(prompts, shift)
        for orig, new, o_opts, n_opts in zip(prompts.itertuples(), rot.itertuples(), option_lines(prompts),
                                             option_lines(rot), strict=True):
            assert new.output.split(") ", 1)[1] == orig.output.split(") ", 1)[1]  # same title, new letter
            assert n_opts[ord(new.correct_letter) - 65].split(") ", 1)[1] == orig.output.split(") ", 1)[1]
            assert sorted(o.split(") ")[1] for o in n_opts) == sorted(o.split(") ")[1] for o in o_opts)
        # a scorer that reads titles: rolled back, its scores are the original ones
        def by_title(p):
            return np.array([[float(o.split(") ")[1][-1] == "B") for o in opts] for opts in option_lines(p)])
        np.testing.assert_array_equal(np.roll(by_title(rot), -shift, axis=1), by_title(prompts))


def test_permutation_average_removes_a_pure_position_bias(tiny_llama, monkeypatch):
    from amazon_llm_rec.core.llm.scoring import option_lines

    calls = []

    def biased(model, tokenizer, prompts, evaluation, target, desc, title_priors=None):  # always prefers A, a bit of title signal
        calls.append(len(prompts))
        return np.array([[(2.0 if i == 0 else 0.0) + 0.1 * o.endswith(" Item B") for i, o in enumerate(opts)]
                         for opts in option_lines(prompts)])

    monkeypatch.setattr(nodes, "_scores", biased)
    prompts = _prompts(8)
    plain = nodes._score_model("m", None, None, prompts, base_params("evaluation", batch_size=4), "title",
                              generate=False)
    assert set(plain["predicted_letter"]) == {"A"}
    avg = nodes._score_model("m", None, None, prompts, base_params("evaluation", batch_size=4, permutation_average=True), "title",
                             generate=False)
    assert set(avg["predicted_letter"]) == {"B"}  # position bias averaged away, the title signal remains
    assert avg["prompt_passes"].iloc[0] == 32 and calls == [8] + [8] * 4


def test_intervals_for_every_metric_and_precision_recall_f1_as_scikit_learn():
    from sklearn.metrics import precision_recall_fscore_support

    from amazon_llm_rec.core.metrics import _weighted_prf

    rng = np.random.default_rng(0)
    t, p = rng.integers(0, 4, 60), rng.integers(0, 4, 60)
    weight = rng.integers(0, 3, (6, 60)).astype(float)  # how often each prediction counts in 6 resamples
    weight[0] = 1.0
    ours = _weighted_prf(t, p, 4, weight)
    for i in range(6):
        np.testing.assert_allclose(ours[i], precision_recall_fscore_support(t, p, average="weighted", zero_division=0,
                                                                             sample_weight=weight[i])[:3])
    preds = _random_preds(300)
    preds["generated"] = ["x", "y"] * 75 + [None] * 150  # half of the generated ones match "x"
    m = method_metrics(preds, 1000, 0)
    for key in ("accuracy", "mrr", "precision_weighted", "recall_weighted", "f1_weighted", "exact_match"):
        lo, hi = m["ci95"][key]
        assert lo <= m[key] <= hi and hi - lo > 0.01


def test_every_method_scores_the_same_stored_candidates_per_protocol(hand_made, monkeypatch):
    seqs, test = hand_made
    fits, counts = [], []
    from amazon_llm_rec.core.rank import evidence as evidence_module
    from amazon_llm_rec.core.rank import sasrec

    real_fit = sasrec.fit_sasrec  # imported by the baselines when SASRec runs (torch stays out of the others)
    monkeypatch.setattr(sasrec, "fit_sasrec", lambda *a: fits.append(1) or real_fit(*a))
    real_count = evidence_module.baselines.cooccurrence
    monkeypatch.setattr(evidence_module.baselines, "cooccurrence", lambda *a, **k: counts.append(a[1:]) or real_count(*a, **k))
    items = pd.DataFrame({"asin": list(TITLES), "title": list(TITLES.values())})
    stored = pd.concat([test.assign(protocol="p4"),
                        test.assign(protocol="p3", candidate_asins=[["Y", "Z", "W"]], correct_letter=["A"])],
                       ignore_index=True)
    params = base_params("evaluation", seed=0, baselines=list(baselines.BASELINES), sasrec={"epochs": 1},
                         fusion={"features": ["cooccurrence", "popularity", "sasrec"]})
    evidence = nodes.fit_evidence(stored, seqs, items, params)
    preds = nodes.score_baseline_methods(stored, seqs, evidence, params)
    features = nodes.candidate_features(stored, seqs, evidence, params)
    # one SASRec for both protocols and for the fusion's feature: the same evidence, trained once
    assert len(fits) == 1 and np.isfinite(features["sasrec"]).all()
    # the baselines (co-occurrence anywhere, `evaluation.cooccurrence_window`) and the features read one count
    assert counts == [(params["cooccurrence_window"],)]
    for (proto, _method), part in preds.groupby(["protocol", "method"]):
        ref = stored[stored["protocol"] == proto]
        assert part["correct_letter"].tolist() == ref["correct_letter"].tolist()
        assert part["num_options"].iloc[0] == len(ref["candidate_asins"].iloc[0])
    metrics = nodes.compute_metrics(preds[preds.method == "random"].assign(method="fine_tuned", scoring="x"),
                                    preds[preds.method != "random"], stored, {},
                                    base_params("evaluation", seed=0, bootstrap_samples=50))
    assert list(metrics["protocols"]) == ["p4", "p3"] and metrics["protocols"]["p3"]["num_options"] == 3
    assert set(metrics["protocols"]["p3"]["methods"]) == set(baselines.BASELINES) - {"random"} | {"fine_tuned"}
    report = reporting.write_report(metrics, {s: {"train_prompts": 1, "test_prompts": 1, "test_reviewer_in_train": 1.0,
                                              "test_target_in_same_reviewers_train_prompts": 0.0,
                                              "test_prompt_before_a_train_prompt": 0.0}
                                          for s in ("leave_last_out", "paper_random")},
                                pd.DataFrame(columns=["prediction", "truth", "truth_rank"]))
    for heading in ("## p4:", "## p3:", "## Where the fine-tuned model wins", "## Position bias", "## Split leakage",
                    "## Error analysis", "| sasrec |", "- p3: fine-tuned HR@1"):
        assert heading in report


def test_the_report_says_exactly_what_the_counts_saw_for_each_split():
    from amazon_llm_rec.pipelines.evaluation.nodes import compute_metrics
    from amazon_llm_rec.pipelines.reporting.nodes import _count_sentence

    preds = _random_preds(40)
    prompts = pd.DataFrame({"reviewer_id": preds["reviewer_id"], "candidate_asins": [["a", "b", "c", "d"]] * 40,
                            "correct_letter": preds["correct_letter"]})
    sentences = {}
    for name, frame in (("loo", prompts), ("timed", prompts.assign(count_cutoff=1.5e9))):
        metrics = compute_metrics(pd.DataFrame(), preds, frame, {}, base_params("evaluation", bootstrap_samples=0))
        sentences[name] = _count_sentence(metrics)
    assert "before the test cutoff date" in sentences["timed"] and "other reviewers" not in sentences["timed"]
    assert "some of them after the window's date" in sentences["loo"]
