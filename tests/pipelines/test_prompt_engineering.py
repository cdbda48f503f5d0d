"""prompt_engineering nodes: windows, leave-last-out, candidates, determinism, three-part prompts."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

from amazon_llm_rec.core.errors import ConfigError
from amazon_llm_rec.pipelines.prompt_engineering import nodes
from tests.conftest import base_params, evidence_for

PARAMS = {"history_size": 4, "min_history": 4, "num_negatives": 3, "split": "leave_last_out",
          "paper_fractions": [0.8, 0.1, 0.1], "seed": 7, "max_train_prompts": None,
          "max_validation_prompts": None, "max_test_prompts": None, "instruction": "Pick the next product."}


@pytest.fixture
def seq():
    rows = [(f"U{u}", [f"P{u}_{i}" for i in range(5 + u % 4)]) for u in range(40)]
    return pd.DataFrame({"reviewer_id": [r for r, _ in rows], "asins": [a for _, a in rows]})


@pytest.fixture
def items(seq):
    asins = sorted({a for s in seq["asins"] for a in s})
    return pd.DataFrame({"asin": asins, "title": [f"Title {a}" for a in asins]})


def _prompts(seq, items, **over):
    params = {**PARAMS, **over}
    windows = nodes.build_windows(seq, params)
    return nodes.render_prompts(nodes.sample_candidates(windows, seq, params), items, params)


def test_leave_last_out_splits(seq):
    w = nodes.build_windows(seq, PARAMS)
    for rid, asins in zip(seq["reviewer_id"], seq["asins"], strict=True):
        mine = w[w["reviewer_id"] == rid].set_index("split")
        assert mine.loc["test", "target_asin"] == asins[-1]
        assert list(mine.loc["test", "history_asins"]) == asins[-5:-1]
        if len(asins) >= 6:
            assert mine.loc["validation", "target_asin"] == asins[-2]


def test_no_test_target_is_ever_a_training_target_under_leave_last_out(seq):
    w = nodes.build_windows(seq, PARAMS)
    test = set(zip(w.loc[w.split == "test", "reviewer_id"], w.loc[w.split == "test", "target_asin"]))
    train = set(zip(w.loc[w.split != "test", "reviewer_id"], w.loc[w.split != "test", "target_asin"]))
    assert test and not test & train


def test_candidates_hold_the_target_and_never_bought_negatives(seq, items):
    p = _prompts(seq, items)
    bought = dict(zip(seq["reviewer_id"], seq["asins"], strict=True))
    for rid, target, cands, letter in zip(p["reviewer_id"], p["target_asin"], p["candidate_asins"], p["correct_letter"], strict=True):
        assert len(cands) == 4 and len(set(cands)) == 4
        assert cands["ABCD".index(letter)] == target
        assert not set(cands) - {target} & set(bought[rid])
    assert set(p["correct_letter"]) == set("ABCD")  # shuffled, not always first


def test_prompt_has_three_parts(seq, items):
    row = _prompts(seq, items).iloc[0]
    assert row["instruction"] == "Pick the next product."
    history, options = row["input"].split("\n\nOptions:\n")
    assert history.startswith("Purchase history:\n1. Title ") and history.count("\n") == 4
    assert [o[:2] for o in options.split("\n")] == ["A)", "B)", "C)", "D)"]
    assert row["output"] == next(o for o in options.split("\n") if o.startswith(row["correct_letter"] + ")"))


def _bytes(df):
    buf = io.BytesIO()
    df.to_parquet(buf)
    return buf.getvalue()


def test_same_seed_same_prompts_byte_for_byte(seq, items):
    assert _bytes(_prompts(seq, items)) == _bytes(_prompts(seq, items))
    assert _bytes(_prompts(seq, items)) != _bytes(_prompts(seq, items, seed=8))


def test_more_candidates_and_paper_random_split(seq, items):
    p = _prompts(seq, items, num_negatives=19, split="paper_random")
    assert p["candidate_asins"].str.len().eq(20).all() and "T) " in p["input"].iloc[0]
    share = p["split"].value_counts(normalize=True)
    assert 0.65 < share["train"] < 0.95
    tr, va, te = nodes.split_prompts(p)
    assert len(tr) + len(va) + len(te) == len(p)


def test_caps_and_bad_parameters(seq):
    w = nodes.build_windows(seq, {**PARAMS, "max_train_prompts": 5, "max_test_prompts": 7})
    assert (w.split == "train").sum() == 5 and (w.split == "test").sum() == 7
    with pytest.raises(ConfigError, match="prompts.split"):
        nodes.build_windows(seq, {**PARAMS, "split": "random"})
    with pytest.raises(ConfigError, match="min_history"):
        nodes.build_windows(seq, {**PARAMS, "min_history": 9})
    with pytest.raises(ConfigError, match="paper_fractions"):
        nodes.build_windows(seq, {**PARAMS, "split": "paper_random", "paper_fractions": [0.5, 0.1]})


def test_popularity_and_hard_negatives(seq, items):
    seq = seq.copy()
    seq.loc[len(seq)] = ["POP", ["P0_0"] + [f"P{u}_1" for u in range(1, 9)]]  # P0_0 and P*_1 more popular
    items = items.assign(brand=[a.split("_")[0] for a in items["asin"]], categories="")
    w = nodes.build_windows(seq, PARAMS)
    uni = nodes.sample_candidates(w, seq, {**PARAMS, "negatives": "uniform"}, items)
    pop = nodes.sample_candidates(w, seq, {**PARAMS, "negatives": "popularity"}, items)
    popular = {f"P{u}_1" for u in range(40)} | {"P0_0"}

    def share(df):
        negs = [a for cands, t in zip(df["candidate_asins"], df["target_asin"], strict=True) for a in cands if a != t]
        return np.mean([a in popular for a in negs])

    assert share(pop) > share(uni)
    # brand = the position suffix, shared across reviewers: a hard negative has the target's brand
    branded = items.assign(brand=[a.split("_")[1] for a in items["asin"]])
    hard = nodes.sample_candidates(w, seq, {**PARAMS, "negatives": "hard"}, branded)
    for rid, target, cands in zip(hard["reviewer_id"], hard["target_asin"], hard["candidate_asins"], strict=True):
        negs = [c for c in cands if c != target]
        assert all(c not in seq.set_index("reviewer_id").loc[rid, "asins"] for c in negs)
        assert all(c.split("_")[1] == target.split("_")[1] for c in negs)
    with pytest.raises(ConfigError, match="prompts.negatives"):
        nodes.sample_candidates(w, seq, {**PARAMS, "negatives": "nearest"}, items)
    # The uniform default is what it was before the strategies existed: same seed, same candidates.
    assert uni["candidate_asins"].tolist() == nodes.sample_candidates(w, seq, PARAMS)["candidate_asins"].tolist()


def _shared_items():
    # Reviewers walk a shared catalogue: after S{i} usually comes S{i+1}, so co-occurrence can retrieve it.
    rows = [(f"U{u}", [f"S{(u + i) % 30}" for i in range(6)]) for u in range(60)]
    return pd.DataFrame({"reviewer_id": [r for r, _ in rows], "asins": [a for _, a in rows]})


def test_retrieved_protocol_keeps_the_windows_whose_target_the_retriever_found():
    seq = _shared_items()  # a third of the reviewers end on a product nobody else bought: the retriever misses it
    seq["asins"] = [a[:-1] + [f"R{u}"] if u % 3 == 0 else a for u, a in enumerate(seq["asins"])]
    w = nodes.build_windows(seq, PARAMS)
    tests = w[w["split"] == "test"].reset_index(drop=True)
    got = nodes.sample_candidates(tests, seq, {**PARAMS, "negatives": "retrieved", "num_negatives": 9})
    fitted = nodes.baselines.fit_sequences(seq, tests)
    cooc, pop = nodes.baselines.cooccurrence(fitted, 0), nodes.baselines.popularity(fitted)
    seq_of = seq.set_index("reviewer_id")["asins"]
    kept, first = 0, {}
    for _, row in tests.iterrows():
        prefix = set(seq_of[row["reviewer_id"]][: row["position"]])
        top = nodes.baselines.cooccurrence_ranking(list(row["history_asins"]), cooc, pop, prefix, 10)
        mine = got[(got["reviewer_id"] == row["reviewer_id"]) & (got["position"] == row["position"])]
        assert len(mine) == (row["target_asin"] in top)  # kept exactly where the retriever's top 10 holds the target
        if len(mine):
            kept += 1
            cands = list(mine["candidate_asins"].iloc[0])
            assert sorted(cands) == sorted(top) and not set(cands) & prefix  # its candidates: that top 10, nothing else
            assert cands[nodes.LETTERS.index(mine["correct_letter"].iloc[0])] == row["target_asin"]
            first[row["reviewer_id"]] = top[0]
    assert 0 < kept == len(got) < len(tests) and set(got["eligible_windows"]) == {len(tests)}
    # nothing tells the answer any more: co-occurrence (the retriever's own order) is far above random here
    prompts = nodes.render_prompts(got, pd.DataFrame({"asin": sorted({a for q in seq["asins"] for a in q}), "title": "t"}),
                                   {**PARAMS, "negatives": "retrieved"})
    evaluation = base_params("evaluation", seed=0, baselines=["random", "cooccurrence"])
    scores = nodes.baselines.score_baselines(prompts, seq, evaluation, evidence_for(seq, tests))
    hit = {m: np.mean(v.argmax(1) == prompts["correct_letter"].map(nodes.LETTERS.index)) for m, v in scores.items()}
    assert hit["cooccurrence"] > 0.3 > 1 / 10 + 0.1
    # the evaluation's co-occurrence, on the counts of all test windows, ranks as the retriever did (ties aside)
    picked = [list(c)[i] for c, i in zip(prompts["candidate_asins"], scores["cooccurrence"].argmax(1), strict=True)]
    assert np.mean([p == first[r] for p, r in zip(picked, prompts["reviewer_id"], strict=True)]) > 0.9
    with pytest.raises(ConfigError, match="test protocol"):
        nodes.sample_candidates(w, seq, {**PARAMS, "negatives": "retrieved"})


@pytest.mark.parametrize("split", ["leave_last_out", "paper_random"])
def test_test_candidates_do_not_move_when_the_training_and_validation_caps_change(seq, items, split):
    def test_prompts(**caps):
        params = {**PARAMS, "split": split, "max_test_prompts": 12, **caps,
                  "test_protocols": [{"negatives": "uniform", "num_negatives": 9},
                                     {"negatives": "popularity", "num_negatives": 3}]}
        windows = nodes.build_windows(seq, params)
        _, _, test = nodes.split_prompts(nodes.render_prompts(nodes.sample_candidates(windows, seq, params), items,
                                                              params))
        out = nodes.build_test_protocols(test, windows, seq, items, params)
        return out[["protocol", "reviewer_id", "position", "correct_letter"]].assign(
            candidates=out["candidate_asins"].map(tuple))

    reference = test_prompts()
    for caps in ({"max_train_prompts": 5}, {"max_validation_prompts": 3}, {"max_train_prompts": 17,
                                                                          "max_validation_prompts": 20}):
        pd.testing.assert_frame_equal(test_prompts(**caps), reference)
    assert len(reference) >= 24 and len(reference) % 3 == 0 and reference["candidates"].nunique() > 20


def _timed_sequences() -> pd.DataFrame:
    """60 reviewers over 2015-2018 at their own pace: review times are real here, unlike ../shared Industrial's."""
    rng = np.random.default_rng(5)
    rows = []
    for u in range(60):
        n = int(rng.integers(5, 10))
        times = np.sort(rng.integers(1_420_070_400, 1_546_300_800, n))  # 2015-01-01 .. 2019-01-01
        rows.append((f"U{u}", [f"S{(u + 2 * i) % 40}" for i in range(n)], times.tolist()))
    return pd.DataFrame(rows, columns=["reviewer_id", "asins", "times"])


def test_global_time_split_cuts_every_reviewer_at_the_same_dates():
    seq = _timed_sequences()
    params = {**PARAMS, "split": "global_time", "min_history": 2,
              "global_time": {"validation": "2017-07-01", "test": "2018-01-01"}}
    w = nodes.build_windows(seq, params)
    val_cut, test_cut = pd.Timestamp("2017-07-01", tz="UTC").timestamp(), pd.Timestamp("2018-01-01", tz="UTC").timestamp()
    t = [seq.set_index("reviewer_id").loc[r, "times"][p] for r, p in zip(w["reviewer_id"], w["position"], strict=True)]
    w = w.assign(t=t)
    assert (w.loc[w["split"] == "train", "t"] < val_cut).all()
    assert w.loc[w["split"] == "validation", "t"].between(val_cut, test_cut - 1).all()
    assert (w.loc[w["split"] == "test", "t"] >= test_cut).all()
    times_of = seq.set_index("reviewer_id")["times"]
    for split, cut in (("validation", val_cut), ("test", test_cut)):  # one window a reviewer: their first event of
        part = w[w["split"] == split]                                  # the period, so no history reaches into it
        assert part["reviewer_id"].is_unique and len(part) > 5
        for rid, pos in zip(part["reviewer_id"], part["position"], strict=True):
            assert pos == sum(x < cut for x in times_of[rid])
    # a reviewer whose first test-period event has too short a history gets no test window at all
    short = [r for r, ts in times_of.items() if 0 < sum(x < test_cut for x in ts) < 2 and max(ts) >= test_cut]
    assert not set(short) & set(w.loc[w["split"] == "test", "reviewer_id"])
    assert w.loc[w["split"] == "train", "count_cutoff"].isna().all()
    assert set(w.loc[w["split"] == "test", "count_cutoff"]) == {test_cut}
    # every count for the test windows comes from events before the test cutoff, other reviewers' included
    test = w[w["split"] == "test"]
    fitted = nodes.baselines.fit_sequences(seq, test)
    before = [[a for a, x in zip(asins, times, strict=True) if x < test_cut] for asins, times in zip(seq["asins"], seq["times"], strict=True)]
    assert fitted == before and sum(map(len, fitted)) < sum(map(len, seq["asins"]))
    # fractions are quantiles of the review times
    q = nodes.build_windows(seq, {**params, "global_time": {"validation": 0.7, "test": 0.85}})
    all_times = np.concatenate(seq["times"].map(np.asarray).to_list())
    assert set(q.loc[q["split"] == "test", "count_cutoff"]) == {float(np.quantile(all_times, 0.85))}
    for bad, match in (({"validation": 0.9, "test": 0.8}, "must come before"), ({"validation": 1.5, "test": 0.9}, "fraction"),
                       ({"validation": "soon", "test": 0.9}, "neither a fraction nor a date"), ({"test": 0.9}, "needs")):
        with pytest.raises(ConfigError, match=match):
            nodes.build_windows(seq, {**params, "global_time": bad})
    with pytest.raises(ConfigError, match="times"):
        nodes.build_windows(seq.drop(columns="times"), params)


def test_global_time_counts_ignore_every_event_after_the_cutoff():
    # Poison the future: events after the test cutoff (other reviewers' and the test targets) that pair every
    # history product with one negative candidate. Under global_time no baseline or feature may move.
    from amazon_llm_rec.core.rank import fusion

    seq = _timed_sequences()
    params = {**PARAMS, "split": "global_time", "min_history": 2, "num_negatives": 9,
              "global_time": {"validation": "2017-07-01", "test": "2018-01-01"}}
    items = pd.DataFrame({"asin": [f"S{i}" for i in range(40)] + ["Z"], "title": [f"t{i}" for i in range(41)]})
    w = nodes.build_windows(seq, params)
    _, _, test = nodes.split_prompts(nodes.render_prompts(nodes.sample_candidates(w, seq, params), items, params))
    late = pd.Timestamp("2018-06-01", tz="UTC").timestamp()
    poison = pd.DataFrame({"reviewer_id": [f"X{i}" for i in range(30)],
                           "asins": [[f"S{j}" for j in range(40)] for _ in range(30)],
                           "times": [[late + j for j in range(40)] for _ in range(30)]})
    poisoned = pd.concat([seq, poison], ignore_index=True)
    evaluation = base_params("evaluation", seed=0, baselines=["popularity", "cooccurrence"])

    def scores(windows, sequences):
        return nodes.baselines.score_baselines(windows, sequences, evaluation, evidence_for(sequences, windows, items))

    for a, b in zip(scores(test, seq).values(), scores(test, poisoned).values(), strict=True):
        np.testing.assert_array_equal(a, b)
    names = ["cooccurrence", "cooccurrence_all", "popularity"]
    clean = fusion.candidate_features(test, seq, evidence_for(seq, test, items), names)
    dirty = fusion.candidate_features(test, poisoned, evidence_for(poisoned, test, items), names)
    for n in names:
        np.testing.assert_array_equal(clean[n], dirty[n])
    # the same poison moves the leave_last_out counts (other reviewers' futures count there): the test can fail
    loo = test.drop(columns="count_cutoff")
    assert not np.array_equal(scores(loo, seq)["popularity"], scores(loo, poisoned)["popularity"])


def test_test_protocols_share_the_test_windows(seq, items):
    params = {**PARAMS, "test_protocols": [{"negatives": "uniform", "num_negatives": 9},
                                           {"name": "pop", "negatives": "popularity", "num_negatives": 3}]}
    windows = nodes.build_windows(seq, params)
    cands = nodes.sample_candidates(windows, seq, params)
    _, _, test = nodes.split_prompts(nodes.render_prompts(cands, items, params))
    stacked = nodes.build_test_protocols(test, windows, seq, items, params)
    assert list(stacked["protocol"].unique()) == ["uniform_4", "uniform_10", "pop"]
    first = stacked[stacked["protocol"] == "uniform_4"].drop(columns="protocol").reset_index(drop=True)
    pd.testing.assert_frame_equal(first, test)  # the trained protocol's test prompts, unchanged
    for name, part in stacked.groupby("protocol"):
        assert part[["reviewer_id", "target_asin"]].values.tolist() == test[["reviewer_id", "target_asin"]].values.tolist()
        assert all(t in c for t, c in zip(part["target_asin"], part["candidate_asins"], strict=True))
        assert {len(c) for c in part["candidate_asins"]} == {10 if name == "uniform_10" else 4}
    with pytest.raises(ConfigError, match=r"test_protocols\[0\]"):
        nodes.build_test_protocols(test, windows, seq, items, {**PARAMS, "test_protocols": [{"negativs": "x"}]})
    capped = nodes.build_test_protocols(test, windows, seq, items, {**params, "test_protocols": [
        {**params["test_protocols"][0], "max_prompts": 2}]})
    small = capped[capped["protocol"] == "uniform_10"]
    assert small["reviewer_id"].tolist() == test["reviewer_id"].head(2).tolist()  # the first test windows
    full = stacked[stacked["protocol"] == "uniform_10"].head(2)
    assert small["candidate_asins"].apply(list).tolist() == full["candidate_asins"].apply(list).tolist()


def test_split_leakage_shows_the_random_split_leaks():
    leak = nodes.split_leakage(_shared_items(), {**PARAMS, "min_history": 1})
    llo, rnd = leak["leave_last_out"], leak["paper_random"]
    assert llo["test_target_in_same_reviewers_train_prompts"] == 0 and llo["test_prompt_before_a_train_prompt"] == 0
    assert rnd["test_target_in_same_reviewers_train_prompts"] > 0.3 and rnd["test_prompt_before_a_train_prompt"] > 0.3
    assert llo["test_reviewer_in_train"] == 1.0


def _windows_one_row_each(sequences: pd.DataFrame, prompts: dict) -> pd.DataFrame:
    """The reference: every window built as a row, split, then capped with pandas' `sample` (the earlier code)."""
    h, min_h = prompts["history_size"], prompts.get("min_history", prompts["history_size"])
    rows = [(rid, pos, list(seq)[max(0, pos - h):pos], seq[pos], "test" if pos == len(seq) - 1 else
             "validation" if pos == len(seq) - 2 else "train")
            for rid, seq in zip(sequences["reviewer_id"], sequences["asins"], strict=True) for pos in range(min_h, len(seq))]
    w = pd.DataFrame(rows, columns=["reviewer_id", "position", "history_asins", "target_asin", "split"])
    if prompts["split"] == "paper_random":
        w["split"] = np.random.default_rng(prompts["seed"]).choice(["train", "validation", "test"], size=len(w),
                                                                   p=prompts["paper_fractions"])
    parts = []
    for i, split in enumerate(["train", "validation", "test"]):
        part, cap = w[w["split"] == split], prompts.get(f"max_{split}_prompts")
        parts.append(part if cap is None or len(part) <= cap else part.sample(n=cap, random_state=prompts["seed"] + i).sort_index())
    return pd.concat(parts).reset_index(drop=True)


@pytest.mark.parametrize("extra", [{}, {"max_train_prompts": 40, "max_validation_prompts": 7, "max_test_prompts": 9},
                                   {"split": "paper_random", "max_train_prompts": 30, "max_test_prompts": None},
                                   {"min_history": 2, "max_train_prompts": 11}])
def test_windows_built_from_arrays_equal_one_row_a_window_then_sampled(extra):
    rng = np.random.default_rng(0)
    sequences = pd.DataFrame({"reviewer_id": [f"U{i:03d}" for i in range(120)],
                              "asins": [[f"P{j}" for j in rng.choice(90, size=rng.integers(5, 14), replace=False)]
                                        for _ in range(120)]})
    prompts = {"history_size": 4, "min_history": 4, "seed": 3, "split": "leave_last_out",
               "paper_fractions": [0.8, 0.1, 0.1], "max_train_prompts": None, "max_validation_prompts": None,
               "max_test_prompts": None, **extra}
    got = nodes.build_windows(sequences, prompts)
    want = _windows_one_row_each(sequences, prompts)
    pd.testing.assert_frame_equal(got.assign(history_asins=got["history_asins"].map(list)), want)


def test_every_protocol_counts_on_the_whole_test_set(items):
    # retrieved_20 keeps a subset of the test windows; its counts must still be cut for all of them (the
    # retriever's), not for the subset, or the reviewers left out would lend it their test targets
    from amazon_llm_rec.pipelines.evaluation import nodes as ev

    seq = _shared_items()
    # a third of the reviewers jump far along the chain at the end: the retriever misses those targets, which are
    # other reviewers' candidates, so counting them (or not) moves the candidates' popularity
    seq["asins"] = [a[:-1] + [f"S{(u + 17) % 30}"] if u % 3 == 0 else a for u, a in enumerate(seq["asins"])]
    catalogue = pd.DataFrame({"asin": sorted({a for q in seq["asins"] for a in q}), "title": "t"})
    params = {**PARAMS, "min_history": 2, "test_protocols": [{"negatives": "retrieved", "num_negatives": 9}]}
    windows = nodes.build_windows(seq, params)
    _, _, test = nodes.split_prompts(nodes.render_prompts(nodes.sample_candidates(windows, seq, params), catalogue,
                                                          params))
    stacked = nodes.build_test_protocols(test, windows, seq, catalogue, params)
    sub = stacked[stacked["protocol"] == "retrieved_10"].reset_index(drop=True)
    assert 0 < len(sub) < len(test)
    evaluation = base_params("evaluation", seed=0, baselines=["popularity"])
    got = ev.score_baseline_methods(stacked, seq, ev.fit_evidence(stacked, seq, catalogue, evaluation), evaluation)
    got = np.stack(got[got["protocol"] == "retrieved_10"]["scores"].to_list())
    whole = nodes.baselines.score_baselines(sub, seq, evaluation, evidence_for(seq, stacked, catalogue))["popularity"]
    alone = nodes.baselines.score_baselines(sub, seq, evaluation, evidence_for(seq, sub, catalogue))["popularity"]
    np.testing.assert_allclose(got, whole)
    assert not np.allclose(whole, alone)  # the two cuts differ here: the check above can fail


def test_global_time_negatives_and_targets_come_from_the_catalogue_before_the_cutoff():
    seq = _timed_sequences()
    late = pd.Timestamp("2018-03-01", tz="UTC").timestamp()
    new = pd.DataFrame({"reviewer_id": [f"N{i}" for i in range(20)],  # products first reviewed in the test period
                        "asins": [[f"S{i}", f"S{i + 1}", f"NEW{i % 5}", f"S{i + 2}"] for i in range(20)],
                        "times": [[late - 3e7, late - 2e7, late, late + 1e6] for _ in range(20)]})
    seq = pd.concat([seq, new], ignore_index=True)
    params = {**PARAMS, "split": "global_time", "min_history": 2, "num_negatives": 9,
              "global_time": {"validation": "2017-07-01", "test": "2018-01-01"}}
    w = nodes.build_windows(seq, params)
    cands = nodes.sample_candidates(w, seq, params)
    for split, cut in (("train", "2017-07-01"), ("validation", "2017-07-01"), ("test", "2018-01-01")):
        stamp = pd.Timestamp(cut, tz="UTC").timestamp()
        known = {a for asins, times in zip(seq["asins"], seq["times"], strict=True)
                 for a, x in zip(asins, times, strict=True) if x < stamp}
        part = cands[cands["split"] == split]
        assert len(part) and all(set(c) <= known for c in part["candidate_asins"])  # targets and negatives
    # the new products' first reviewers' test windows are left out, not scored with an unknowable target
    assert not cands.loc[cands["split"] == "test", "target_asin"].str.startswith("NEW").any()
    assert (w["reviewer_id"].str.startswith("N") & (w["split"] == "test")).sum() == 0
