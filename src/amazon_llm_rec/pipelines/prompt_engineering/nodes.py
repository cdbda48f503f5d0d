"""Nodes of the prompt_engineering pipeline: windows, candidate options, three-part prompts."""

from __future__ import annotations

import logging
import time
import zlib
from collections import Counter
from itertools import chain
from typing import Any

import numpy as np
import pandas as pd

from ...core.errors import ConfigError, EmptyFilterError
from ...core.llm.models import LETTERS, history_input
from ...core.rank import baselines
from ...core.rank.evidence import Evidence

logger = logging.getLogger(__name__)


SPLITS = ("train", "validation", "test")


def build_windows(sequences: pd.DataFrame, prompts: dict[str, Any]) -> pd.DataFrame:
    """Cut each reviewer's sequence into (history, next product) windows, assign splits, keep the capped ones.

    Windows are numbered and split with numpy arrays (bytes a window) and only the sampled ones are built
    as rows, so memory follows the caps (`prompts.max_<split>_prompts`), not the number of reviews."""
    h, min_h = int(prompts["history_size"]), int(prompts.get("min_history", prompts["history_size"]))
    if not 1 <= min_h <= h:
        raise ConfigError(f"prompts.min_history must be in 1..history_size ({h}), got {min_h}")
    lengths = sequences["asins"].map(len).to_numpy(dtype=np.int64)
    per = np.maximum(lengths - min_h, 0)  # windows of each reviewer: positions min_h .. n-1
    total = int(per.sum())
    if total == 0:
        raise EmptyFilterError(f"no reviewer has more than prompts.min_history={min_h} products")
    owner = np.repeat(np.arange(len(lengths)), per)
    start = np.cumsum(per) - per
    position = np.arange(total) - np.repeat(start, per) + min_h
    strategy = prompts["split"]
    cutoffs: tuple[float, float] | None = None
    if strategy == "leave_last_out":
        last = lengths[owner] - 1
        split = np.where(position == last, 2, np.where(position == last - 1, 1, 0))
    elif strategy == "paper_random":
        rng = np.random.default_rng(int(prompts["seed"]))
        fractions = np.asarray(prompts["paper_fractions"], dtype=float)
        if fractions.shape != (3,) or not np.isclose(fractions.sum(), 1.0):
            raise ConfigError(f"prompts.paper_fractions must be three fractions summing to 1, got {prompts['paper_fractions']}")
        split = rng.choice(3, size=total, p=fractions)
    elif strategy == "global_time":
        split, cutoffs = _global_time_split(sequences, owner, position, prompts)
    else:
        raise ConfigError(f"prompts.split must be one of {list(SPLIT_STRATEGIES)}, got {strategy!r}")
    chosen = np.concatenate([_cap(np.flatnonzero(split == i), i, prompts) for i in range(3)])
    ids, seqs = sequences["reviewer_id"].to_numpy(), sequences["asins"].to_numpy()
    rows = []
    for w in chosen:
        r, pos = owner[w], int(position[w])
        asins = list(seqs[r])
        rows.append((ids[r], pos, asins[max(0, pos - h) : pos], asins[pos], SPLITS[split[w]]))
    windows = pd.DataFrame(rows, columns=["reviewer_id", "position", "history_asins", "target_asin", "split"])
    if cutoffs is not None:  # every count for a validation or test window is taken before its split's cutoff
        windows["count_cutoff"] = windows["split"].map({"validation": cutoffs[0], "test": cutoffs[1]}).astype(float)
        # negatives come from the catalogue as it stood at the start of the window's period (training: validation's)
        windows["catalogue_cutoff"] = windows["split"].map({"train": cutoffs[0], "validation": cutoffs[0],
                                                            "test": cutoffs[1]}).astype(float)
        logger.info("global_time cutoffs: validation from %s, test from %s (unix seconds %d, %d)",
                    *(time.strftime("%Y-%m-%d", time.gmtime(c)) for c in cutoffs), *cutoffs)
    logger.info("Windows (%s): %s of %d", strategy, windows["split"].value_counts().to_dict(), total)
    return windows


def _cap(members: np.ndarray, i: int, prompts: dict[str, Any]) -> np.ndarray:
    """The windows kept of one split: all, or `max_<split>_prompts` drawn as pandas' `sample` draws them."""
    cap = prompts.get(f"max_{SPLITS[i]}_prompts")
    if cap is None or len(members) <= int(cap):
        return members
    picked = np.random.RandomState(int(prompts["seed"]) + i).choice(len(members), size=int(cap), replace=False)
    return members[np.sort(picked)]


SPLIT_STRATEGIES = ("leave_last_out", "paper_random", "global_time")


def _cutoff(value: Any, times: np.ndarray, name: str) -> float:
    """A cutoff as unix seconds: a fraction in (0, 1) is that quantile of every review's time, a date is itself."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not 0 < float(value) < 1:
            raise ConfigError(f"prompts.global_time.{name}: a fraction must lie in (0, 1), got {value}")
        return float(np.quantile(times, float(value)))
    try:
        return float(pd.Timestamp(str(value), tz="UTC").timestamp())
    except ValueError as exc:
        raise ConfigError(f"prompts.global_time.{name}: neither a fraction nor a date: {value!r}") from exc


def _global_time_split(sequences: pd.DataFrame, owner: np.ndarray, position: np.ndarray,
                       prompts: dict[str, Any]) -> tuple[np.ndarray, tuple[float, float]]:
    """Split windows by two dates shared by every reviewer: train targets before the validation cutoff; each
    reviewer's first event in [validation, test) is their validation window, their first event from test on is their
    test window (where it has `min_history` products before it): no history reaches into its own period."""
    if "times" not in sequences:
        raise ConfigError("prompts.split: global_time needs review times (the `times` column of reviewer_sequences)")
    spec = prompts.get("global_time") or {}
    unknown = set(spec) - {"validation", "test"}
    if unknown or not {"validation", "test"} <= set(spec):
        raise ConfigError(f"prompts.global_time needs `validation` and `test` (fractions or dates), got {dict(spec)}")
    lengths = sequences["times"].map(len).to_numpy(dtype=np.int64)
    all_times = np.concatenate([np.asarray(t, dtype=float) for t in sequences["times"]])
    val_cut, test_cut = _cutoff(spec["validation"], all_times, "validation"), _cutoff(spec["test"], all_times, "test")
    if not val_cut < test_cut:
        raise ConfigError(f"prompts.global_time: the validation cutoff ({spec['validation']}) must come before the "
                          f"test cutoff ({spec['test']})")
    offsets = np.cumsum(lengths) - lengths
    t = all_times[offsets[owner] + position]  # each window's target time
    all_asins = np.concatenate([np.asarray(a, dtype=object) for a in sequences["asins"]])
    target = all_asins[offsets[owner] + position]
    # events before each cutoff, per reviewer (sequences are time-ordered): the index of the first event after it
    before_val = np.add.reduceat((all_times < val_cut).astype(np.int64), offsets)
    before_test = np.add.reduceat((all_times < test_cut).astype(np.int64), offsets)
    split = np.full(len(t), 3)  # 3: in no split (a period's later windows, or one whose history reaches into it)
    split[t < val_cut] = 0
    # a reviewer's validation (test) window is their first event of the period, so its history holds nothing of it
    # a target nobody reviewed before its period's cutoff would be the one candidate without counts: such windows
    # (new products) are left out, and the log says how many
    known_val = np.isin(target, all_asins[all_times < val_cut])
    known_test = np.isin(target, all_asins[all_times < test_cut])
    first_val = (position == before_val[owner]) & (t >= val_cut) & (t < test_cut)
    first_test = (position == before_test[owner]) & (t >= test_cut)
    split[first_val & known_val] = 1
    split[first_test & known_test] = 2
    logger.info("global_time: %d validation and %d test windows left out: their product was first reviewed in "
                "their own period", int((first_val & ~known_val).sum()), int((first_test & ~known_test).sum()))
    return split, (val_cut, test_cut)


def window_rng(seed: int, reviewer_id: str, position: int) -> np.random.Generator:
    """The random generator of one window: from (seed, reviewer, position) alone, so that a window's candidates do
    not depend on which other windows were drawn (the caps of the other splits)."""
    return np.random.default_rng([int(seed), zlib.crc32(str(reviewer_id).encode()), int(position)])


def _related(items: pd.DataFrame | None, universe: np.ndarray) -> dict[str, list[str]]:
    """Products sharing the brand or the most specific category of each product."""
    if items is None:
        raise ConfigError("prompts.negatives: hard needs the items dataset (brand, categories)")
    known = items[items["asin"].isin(set(universe))]
    leaf = known["categories"].fillna("").str.split(" > ").str[-1]
    groups: dict[tuple[str, str], list[str]] = {}
    for asin, brand, cat in zip(known["asin"], known["brand"].fillna(""), leaf, strict=True):
        for key in (("brand", brand), ("category", cat)):
            if key[1]:
                groups.setdefault(key, []).append(asin)
    related: dict[str, set[str]] = {}
    for members in groups.values():
        for a in members:
            related.setdefault(a, set()).update(members)
    return {a: sorted(r - {a}) for a, r in related.items()}


def sample_candidates(windows: pd.DataFrame, sequences: pd.DataFrame, prompts: dict[str, Any],
                      items: pd.DataFrame | None = None, fit_on: pd.DataFrame | None = None) -> pd.DataFrame:
    """Add the target plus `num_negatives` never-reviewed products, shuffled and lettered.

    Negatives (`prompts.negatives`): uniform (the paper), popularity (in proportion to how many
    reviewers reviewed them), hard (same brand or category as the target where there are enough,
    topped up uniformly otherwise), or retrieved (test protocols only: LlamaRec's protocol, see
    `retrieved_candidates`). Each window draws from its own generator (`window_rng`)."""
    k = int(prompts["num_negatives"])
    if not 1 <= k < len(LETTERS):
        raise ConfigError(f"prompts.num_negatives must be in 1..{len(LETTERS) - 1}, got {k}")
    strategy = prompts.get("negatives", "uniform")
    if strategy not in NEGATIVES:
        raise ConfigError(f"prompts.negatives must be one of {list(NEGATIVES)}, got {strategy!r}")
    if strategy == "retrieved":
        if set(windows["split"]) != {"test"}:
            raise ConfigError("prompts.negatives: retrieved keeps only the windows the retriever hits, so it is a test "
                              "protocol (prompts.test_protocols), not the trained one; train on uniform, popularity or hard")
        return retrieved_candidates(windows, sequences, k + 1, int(prompts["seed"]), fit_on)
    # global_time: negatives come from the catalogue as it stood at the window's cutoff (no product first seen later,
    # popularity counted before it); other splits: the whole catalogue
    cutoffs = windows["catalogue_cutoff"].to_numpy(dtype=float) if "catalogue_cutoff" in windows \
        else np.full(len(windows), np.nan)
    pools = {c: _negative_pool(sequences, strategy, c) for c in {None, *cutoffs[~np.isnan(cutoffs)].tolist()}}
    wanted = set(windows["reviewer_id"])  # only the windows' reviewers: memory follows the caps, not the data
    bought = {rid: set(seq) for rid, seq in zip(sequences["reviewer_id"], sequences["asins"], strict=True) if rid in wanted}
    seed = int(prompts["seed"])
    related = _related(items, pools[None][0]) if strategy == "hard" else {}
    topped_up = 0
    candidates, letters = [], []
    for rid, pos, target, cut in zip(windows["reviewer_id"], windows["position"], windows["target_asin"], cutoffs,
                                     strict=True):
        rng = window_rng(seed, rid, pos)
        universe, weights, allowed = pools[None if np.isnan(cut) else float(cut)]
        seen = bought[rid]
        if len(universe) - len(seen) < k:
            raise EmptyFilterError(f"reviewer {rid} has fewer than num_negatives={k} unreviewed products to sample")
        negatives: list[str] = []
        if strategy == "hard":
            pool = [a for a in related.get(target, []) if a not in seen and (allowed is None or a in allowed)]
            if pool:
                negatives = [pool[i] for i in rng.permutation(len(pool))[:k]]
            topped_up += len(negatives) < k
        while len(negatives) < k:
            at = int(np.searchsorted(weights, rng.random(), side="right")) if weights is not None \
                else int(rng.integers(len(universe)))
            pick = str(universe[min(at, len(universe) - 1)])
            if pick not in seen and pick not in negatives:
                negatives.append(pick)
        options = [target, *negatives]
        options = [options[i] for i in rng.permutation(len(options))]
        candidates.append(options)
        letters.append(LETTERS[options.index(target)])
    if strategy == "hard":
        logger.info("Hard negatives: %d of %d candidate sets topped up uniformly", topped_up, len(windows))
    return windows.assign(candidate_asins=candidates, correct_letter=letters)


NEGATIVES = ("uniform", "popularity", "hard", "retrieved")


def _negative_pool(sequences: pd.DataFrame, strategy: str, cutoff: float | None):
    """(products, cumulative popularity weights or None, allowed set or None) to draw negatives from: every product,
    or under global_time the products reviewed before `cutoff`, with popularity counted before it."""
    if cutoff is None:
        events = chain.from_iterable(sequences["asins"])
    else:
        events = (a for asins, times in zip(sequences["asins"], sequences["times"], strict=True)
                  for a, t in zip(asins, times, strict=True) if t < cutoff)
    counts = Counter(events)
    universe = np.array(sorted(counts))
    weights = None
    if strategy == "popularity":
        weights = np.cumsum(np.array([counts[a] for a in universe], dtype=float))
        weights /= weights[-1]
    return universe, weights, None if cutoff is None else set(universe.tolist())


def retrieved_candidates(windows: pd.DataFrame, sequences: pd.DataFrame, n: int, seed: int,
                         fit_on: pd.DataFrame | None = None) -> pd.DataFrame:
    """LlamaRec's protocol: the co-occurrence retriever's top `n` products for each window are its candidates, and
    only the windows whose true next product is among them are kept (the re-ranker is measured where it can win).

    The retriever counts what `fit_sequences` allows for the windows `fit_on` (default: these; the pipeline passes
    every test window, so the evaluation's co-occurrence baseline has the same counts) and excludes what the reviewer
    bought before the target, as the catalogue's retriever does (later purchases may be candidates).
    `eligible_windows` says from how many windows the kept ones came."""
    retriever = _retriever(windows if fit_on is None else fit_on, sequences)
    seq_of = dict(zip(sequences["reviewer_id"], sequences["asins"], strict=True))
    keep, candidates, letters = [], [], []
    for i, (rid, pos, target, hist) in enumerate(zip(windows["reviewer_id"], windows["position"], windows["target_asin"],
                                                     windows["history_asins"], strict=True)):
        top = baselines.cooccurrence_ranking(list(hist), *retriever, exclude=set(list(seq_of[rid])[:pos]), k=n)
        if target not in top:
            continue
        options = [top[j] for j in window_rng(seed, rid, pos).permutation(len(top))]  # shown in random order
        keep.append(i)
        candidates.append(options)
        letters.append(LETTERS[options.index(target)])
    if not keep:
        raise EmptyFilterError(f"retrieved_{n}: the retriever's top {n} holds the true next product in none of "
                               f"{len(windows)} windows")
    out = windows.iloc[keep].assign(candidate_asins=candidates, correct_letter=letters,
                                    eligible_windows=len(windows)).reset_index(drop=True)
    logger.info("retrieved_%d: the true next product is in the retriever's top %d for %d of %d windows (%.1f%%): "
                "those are this protocol's windows", n, n, len(out), len(windows), 100 * len(out) / len(windows))
    return out


def _retriever(windows: pd.DataFrame, sequences: pd.DataFrame):
    """Co-occurrence counts and popularity of the evidence `fit_sequences` allows for these windows."""
    evidence = Evidence.for_windows(sequences, windows, None, {})
    return evidence.cooc, evidence.pop


def protocol_name(prompts: dict[str, Any]) -> str:
    """Name a candidate protocol, e.g. `uniform_4` (negatives strategy, number of candidates)."""
    return prompts.get("name") or f"{prompts.get('negatives', 'uniform')}_{int(prompts['num_negatives']) + 1}"


def build_test_protocols(test_prompts: pd.DataFrame, windows: pd.DataFrame, sequences: pd.DataFrame,
                         items: pd.DataFrame, prompts: dict[str, Any]) -> pd.DataFrame:
    """Stack the test prompts of every protocol: the trained one first, then `prompts.test_protocols`.

    Each extra protocol re-samples the candidates of the same test windows with its own negatives
    strategy and number of candidates; every method is then scored on this one stored dataset."""
    frames = [test_prompts.assign(protocol=protocol_name(prompts))]
    tests = windows[windows["split"] == "test"].reset_index(drop=True)
    for i, extra in enumerate(prompts.get("test_protocols") or []):
        unknown = set(extra) - {"name", "negatives", "num_negatives", "max_prompts"}
        if unknown:
            raise ConfigError(f"prompts.test_protocols[{i}]: unknown keys {sorted(unknown)} "
                              "(allowed: name, negatives, num_negatives, max_prompts)")
        spec = {**prompts, **extra, "seed": int(prompts["seed"]) + 1000 * (i + 1)}
        # max_prompts: only the first N test windows (the same reviewers for every method of this protocol)
        subset = tests if extra.get("max_prompts") is None else tests.head(int(extra["max_prompts"]))
        try:
            candidates = sample_candidates(subset, sequences, spec, items, fit_on=tests)
        except EmptyFilterError as exc:  # an extra protocol without a single window: say so, score the others
            logger.warning("prompts.test_protocols[%d] skipped: %s", i, exc)
            continue
        frames.append(render_prompts(candidates, items, spec).assign(protocol=protocol_name(spec)))
    out = pd.concat(frames, ignore_index=True)
    names = out["protocol"].unique()
    if len(names) != len(frames):
        raise ConfigError(f"prompts.test_protocols: two protocols share a name ({list(out['protocol'])}); give each a `name`")
    logger.info("Test protocols: %s", out.groupby("protocol", sort=False).size().to_dict())
    return out


def split_leakage(sequences: pd.DataFrame, prompts: dict[str, Any]) -> dict[str, Any]:
    """Show side by side, for each split (global_time where the run uses it), how much of each test prompt the
    training prompts already reveal."""
    out = {}
    for split in SPLIT_STRATEGIES:
        if split == "global_time" and prompts["split"] != "global_time":
            continue  # its cutoffs mean something only where review times are real
        w = build_windows(sequences, {**prompts, "split": split})
        train, test = w[w["split"] == "train"], w[w["split"] == "test"]
        seen_items: dict[str, set[str]] = {}
        for rid, hist, target in zip(train["reviewer_id"], train["history_asins"], train["target_asin"], strict=True):
            seen_items.setdefault(rid, set()).update([*hist, target])
        train_targets = set(train["target_asin"])
        last_train = train.groupby("reviewer_id")["position"].max().to_dict()
        out[split] = {
            "train_prompts": len(train),
            "test_prompts": len(test),
            "test_reviewer_in_train": float(test["reviewer_id"].isin(seen_items).mean()),
            "test_target_in_same_reviewers_train_prompts": float(np.mean(
                [t in seen_items.get(r, ()) for r, t in zip(test["reviewer_id"], test["target_asin"], strict=True)])),
            "test_prompt_before_a_train_prompt": float(np.mean(
                [p < last_train.get(r, -1) for r, p in zip(test["reviewer_id"], test["position"], strict=True)])),
            "test_target_is_some_train_target": float(test["target_asin"].isin(train_targets).mean()),
        }
    return out


def render_prompts(candidates: pd.DataFrame, items: pd.DataFrame, prompts: dict[str, Any]) -> pd.DataFrame:
    """Write the three-part prompt: instruction, input (history, then options), output.

    `prompts.style`: `options` (the paper: the candidates are listed as lettered options) or `pointwise`
    (the history only; each candidate is then scored by the likelihood of its title after the prompt, so
    the prompt is shared by every candidate). `output` is always "<letter>) <title>" of the true candidate,
    and `candidate_titles` holds the candidates' titles in option order."""
    style = prompts.get("style", "options")
    if style not in STYLES:
        raise ConfigError(f"prompts.style must be one of {list(STYLES)}, got {style!r}")
    title = dict(zip(items["asin"], items["title"], strict=True))
    key = "pointwise_instruction" if style == "pointwise" else "instruction"
    if not prompts.get(key):
        raise ConfigError(f"prompts.{key} is missing: prompts.style {style!r} needs it")
    instruction = prompts[key].strip()
    inputs, outputs, titles = [], [], []
    for hist, opts, letter in zip(
        candidates["history_asins"], candidates["candidate_asins"], candidates["correct_letter"], strict=True
    ):
        history = history_input([title[a] for a in hist])
        if style == "pointwise":
            inputs.append(history)
        else:
            options = "\n".join(f"{LETTERS[i]}) {title[a]}" for i, a in enumerate(opts))
            inputs.append(f"{history}\n\nOptions:\n{options}")
        outputs.append(f"{letter}) {title[opts[LETTERS.index(letter)]]}")
        titles.append([title[a] for a in opts])
    out = candidates.assign(instruction=instruction, input=inputs, output=outputs, candidate_titles=titles,
                            style=style)
    out["history_asins"] = out["history_asins"].apply(list)
    return out


STYLES = ("options", "pointwise")


def split_prompts(prompts_df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Return the train, validation and test prompt sets."""
    parts = tuple(prompts_df[prompts_df["split"] == s].reset_index(drop=True) for s in ("train", "validation", "test"))
    for name, part in zip(("train", "validation", "test"), parts, strict=True):
        if part.empty:
            raise EmptyFilterError(f"the {name} split is empty: too few reviewers or windows ({len(prompts_df)} prompts in all)")
    logger.info("Prompts: train %d, validation %d, test %d", *(len(p) for p in parts))
    return parts


GROUP_COLUMNS = ["reviewer_id", "position", "history_asins", "target_asin", "candidate_asins", "candidate_titles",
                 "offset", "instruction", "input"]


def build_training_groups(train_prompts: pd.DataFrame, validation_prompts: pd.DataFrame, test_prompts: pd.DataFrame,
                          reviewer_sequences: pd.DataFrame, items: pd.DataFrame, prompts: dict[str, Any],
                          fine_tuning: dict[str, Any], evaluation: dict[str, Any]) -> pd.DataFrame:
    """The ranking objective's training groups (`fine_tuning.objective: group_softmax`; empty otherwise).

    One group a reviewer, at their last training window: the true product first, then `group_size - 1` products
    the reviewer had not bought before it, `hard_fraction` of them the co-occurrence retriever's top wrong products
    and the rest uniform from the catalogue the counts know (the catalogue's recommender faces the same: it cannot
    know what the reviewer buys later). `offset` is the fusion-without-LLM's score of each candidate (fitted on these groups), which the
    LLM's logit is added to, so that it learns the residual.

    Every count that picks or scores a group's negatives is cut by `baselines.fit_sequences` before the reviewer's
    earliest training, validation or test window (under global_time, also before the validation cutoff): no
    group sees its own target, its reviewer's later events, or any validation or test target."""

    spec = (fine_tuning.get("group_softmax") or {}) if fine_tuning.get("objective", "lm") == "group_softmax" else None
    if spec is None:
        return pd.DataFrame(columns=GROUP_COLUMNS)
    if set(train_prompts.get("style", pd.Series(["options"]))) != {"pointwise"}:
        raise ConfigError("fine_tuning.objective: group_softmax scores each candidate's title after the history: it "
                          "needs prompts.style: pointwise")
    size, hard = int(spec["group_size"]), float(spec["hard_fraction"])
    if size < 2 or not 0 <= hard <= 1:
        raise ConfigError(f"fine_tuning.group_softmax: group_size must be >= 2 and hard_fraction in [0, 1], got {spec}")
    # the last training window before the reviewer's earliest validation or test window (under paper_random a
    # training window may come after them)
    held_out = pd.concat([p[["reviewer_id", "position"]] for p in (validation_prompts, test_prompts)])
    first_held = held_out.groupby("reviewer_id")["position"].min()
    before = train_prompts["position"].to_numpy() < train_prompts["reviewer_id"].map(first_held).fillna(np.inf).to_numpy()
    groups = (train_prompts[before].sort_values(["reviewer_id", "position"]).groupby("reviewer_id", sort=False).tail(1)
              .reset_index(drop=True))
    cap = spec["max_groups"]
    if cap is not None and len(groups) > int(cap):
        groups = groups.sample(int(cap), random_state=int(prompts["seed"])).reset_index(drop=True)
    sequences = reviewer_sequences
    cut = groups["catalogue_cutoff"].dropna() if "catalogue_cutoff" in groups else pd.Series(dtype=float)
    if len(cut):  # global_time: nothing from the validation period on
        sequences = _events_before(reviewer_sequences, float(cut.iloc[0]))
    fit_on = pd.concat([p[["reviewer_id", "position"]] for p in (groups, validation_prompts, test_prompts)],
                       ignore_index=True)
    evidence = Evidence.for_windows(sequences, fit_on, items, evaluation)  # negatives and offsets read the same cut
    cooc, pop = evidence.cooc, evidence.pop
    universe = np.array(sorted(pop))
    known = set(universe.tolist())
    seq_of = dict(zip(sequences["reviewer_id"], sequences["asins"], strict=True))
    n_hard = round(hard * (size - 1))
    seed = int(prompts["seed"]) + 7
    candidates = []
    for rid, pos, target, hist in zip(groups["reviewer_id"], groups["position"], groups["target_asin"],
                                      groups["history_asins"], strict=True):
        seen = {*list(seq_of[rid])[:pos], target}
        chosen = baselines.cooccurrence_ranking(list(hist), cooc, pop, exclude=seen, k=n_hard) if n_hard else []
        rng = window_rng(seed, rid, pos)
        if len(known - seen - set(chosen)) < size - 1 - len(chosen):
            raise EmptyFilterError(f"fine_tuning.group_softmax.group_size={size}: reviewer {rid} has too few products "
                                   f"to draw negatives from ({len(universe)} in the counted catalogue)")
        while len(chosen) < size - 1:
            pick = str(universe[int(rng.integers(len(universe)))])
            if pick not in seen and pick not in chosen:
                chosen.append(pick)
        candidates.append([target, *chosen])
    title = dict(zip(items["asin"], items["title"], strict=True))
    groups = groups.assign(candidate_asins=candidates, candidate_titles=[[title[a] for a in c] for c in candidates],
                           correct_letter="A")
    offset = _group_offsets(groups, sequences, evidence, evaluation) if spec["offset"] \
        else np.zeros((len(groups), size))
    logger.info("Training groups: %d reviewers, %d candidates each (%d retrieved, %d uniform)", len(groups), size,
                n_hard, size - 1 - n_hard)
    return groups.assign(offset=[list(map(float, o)) for o in offset])[GROUP_COLUMNS]


def _group_offsets(groups: pd.DataFrame, sequences: pd.DataFrame, evidence: Evidence,
                   evaluation: dict[str, Any]) -> np.ndarray:
    """The fusion-without-LLM score of every group candidate [groups, G], fitted on the groups themselves."""
    from ...core.rank import fusion  # noqa: PLC0415

    names = [n for n in fusion.check_features(list(evaluation["fusion"]["features"])) if n != "llm"]
    values = fusion.candidate_features(groups, sequences, evidence, names)
    x = np.stack([values[n] for n in names], axis=-1)
    model = fusion.fit_conditional_logit(x, np.zeros(len(groups), dtype=int), names, float(evaluation["fusion"]["l2"]))
    logger.info("Training groups: offset fusion %s, %.3f of groups rank the truth first by it",
                {n: round(w, 3) for n, w in zip(names, model["weights"], strict=True)}, model["train_hr1"])
    return fusion.apply_fusion(model, x)


def _events_before(sequences: pd.DataFrame, cutoff: float) -> pd.DataFrame:
    """Each reviewer's events before `cutoff` (sequences are time-ordered)."""
    keep = [[t < cutoff for t in times] for times in sequences["times"]]
    return sequences.assign(
        asins=[[a for a, k in zip(asins, ks, strict=True) if k] for asins, ks in zip(sequences["asins"], keep, strict=True)],
        times=[[t for t in times if t < cutoff] for times in sequences["times"]])
