"""Nodes of the prompt_engineering pipeline: windows, candidate options, three-part prompts."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from ...core.errors import ConfigError, EmptyFilterError
from ...core.models import LETTERS

logger = logging.getLogger(__name__)


def build_windows(sequences: pd.DataFrame, prompts: dict[str, Any]) -> pd.DataFrame:
    """Cut each reviewer's sequence into (history, next product) windows and assign splits."""
    h, min_h = int(prompts["history_size"]), int(prompts.get("min_history", prompts["history_size"]))
    if not 1 <= min_h <= h:
        raise ConfigError(f"prompts.min_history must be in 1..history_size ({h}), got {min_h}")
    rows = []
    for rid, seq in zip(sequences["reviewer_id"], sequences["asins"], strict=True):
        asins = list(seq)
        n = len(asins)
        for pos in range(min_h, n):
            if pos == n - 1:
                split = "test"
            elif pos == n - 2:
                split = "validation"
            else:
                split = "train"
            rows.append((rid, pos, asins[max(0, pos - h) : pos], asins[pos], split))
    windows = pd.DataFrame(rows, columns=["reviewer_id", "position", "history_asins", "target_asin", "split"])
    if windows.empty:
        raise EmptyFilterError(f"no reviewer has more than prompts.min_history={min_h} products")
    strategy = prompts["split"]
    if strategy == "paper_random":
        rng = np.random.default_rng(int(prompts["seed"]))
        fractions = np.asarray(prompts["paper_fractions"], dtype=float)
        if fractions.shape != (3,) or not np.isclose(fractions.sum(), 1.0):
            raise ConfigError(f"prompts.paper_fractions must be three fractions summing to 1, got {prompts['paper_fractions']}")
        windows["split"] = rng.choice(["train", "validation", "test"], size=len(windows), p=fractions)
    elif strategy != "leave_last_out":
        raise ConfigError(f"prompts.split must be 'leave_last_out' or 'paper_random', got {strategy!r}")
    windows = _cap(windows, prompts)
    logger.info("Windows (%s): %s", strategy, windows["split"].value_counts().to_dict())
    return windows.reset_index(drop=True)


def _cap(windows: pd.DataFrame, prompts: dict[str, Any]) -> pd.DataFrame:
    parts = []
    for i, split in enumerate(["train", "validation", "test"]):
        part = windows[windows["split"] == split]
        cap = prompts.get(f"max_{split}_prompts")
        if cap is not None and len(part) > int(cap):
            part = part.sample(n=int(cap), random_state=int(prompts["seed"]) + i).sort_index()
        parts.append(part)
    return pd.concat(parts)


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
                      items: pd.DataFrame | None = None) -> pd.DataFrame:
    """Add the target plus `num_negatives` never-reviewed products, shuffled and lettered.

    Negatives (`prompts.negatives`): uniform (the paper), popularity (in proportion to how many
    reviewers reviewed them), or hard (same brand or category as the target where there are enough,
    topped up uniformly otherwise)."""
    k = int(prompts["num_negatives"])
    if not 1 <= k < len(LETTERS):
        raise ConfigError(f"prompts.num_negatives must be in 1..{len(LETTERS) - 1}, got {k}")
    strategy = prompts.get("negatives", "uniform")
    if strategy not in {"uniform", "popularity", "hard"}:
        raise ConfigError(f"prompts.negatives must be 'uniform', 'popularity' or 'hard', got {strategy!r}")
    universe = np.array(sorted({a for seq in sequences["asins"] for a in seq}))
    bought = {rid: set(seq) for rid, seq in zip(sequences["reviewer_id"], sequences["asins"], strict=True)}
    rng = np.random.default_rng(int(prompts["seed"]))
    weights = None
    if strategy == "popularity":
        counts = pd.Series([a for seq in sequences["asins"] for a in seq]).value_counts()
        weights = counts.reindex(universe).to_numpy(dtype=float)
        weights /= weights.sum()
    related = _related(items, universe) if strategy == "hard" else {}
    topped_up = 0
    candidates, letters = [], []
    for rid, target in zip(windows["reviewer_id"], windows["target_asin"], strict=True):
        seen = bought[rid]
        if len(universe) - len(seen) < k:
            raise EmptyFilterError(f"reviewer {rid} has fewer than num_negatives={k} unreviewed products to sample")
        negatives: list[str] = []
        if strategy == "hard":
            pool = [a for a in related.get(target, []) if a not in seen]
            if pool:
                negatives = [pool[i] for i in rng.permutation(len(pool))[:k]]
            topped_up += len(negatives) < k
        while len(negatives) < k:
            pick = str(universe[rng.choice(len(universe), p=weights) if weights is not None else rng.integers(len(universe))])
            if pick not in seen and pick not in negatives:
                negatives.append(pick)
        options = [target, *negatives]
        order = rng.permutation(len(options))
        options = [options[i] for i in order]
        candidates.append(options)
        letters.append(LETTERS[options.index(target)])
    if strategy == "hard":
        logger.info("Hard negatives: %d of %d candidate sets topped up uniformly", topped_up, len(windows))
    return windows.assign(candidate_asins=candidates, correct_letter=letters)


def render_prompts(candidates: pd.DataFrame, items: pd.DataFrame, prompts: dict[str, Any]) -> pd.DataFrame:
    """Write the paper's three-part prompt: instruction, input (history, then options), output."""
    title = dict(zip(items["asin"], items["title"], strict=True))
    instruction = prompts["instruction"].strip()
    inputs, outputs = [], []
    for hist, opts, letter in zip(
        candidates["history_asins"], candidates["candidate_asins"], candidates["correct_letter"], strict=True
    ):
        history = "\n".join(f"{i + 1}. {title[a]}" for i, a in enumerate(hist))
        options = "\n".join(f"{LETTERS[i]}) {title[a]}" for i, a in enumerate(opts))
        inputs.append(f"Purchase history:\n{history}\n\nOptions:\n{options}")
        outputs.append(f"{letter}) {title[opts[LETTERS.index(letter)]]}")
    out = candidates.assign(instruction=instruction, input=inputs, output=outputs)
    out["history_asins"] = out["history_asins"].apply(list)
    return out


def split_prompts(prompts_df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Return the train, validation and test prompt sets."""
    parts = tuple(prompts_df[prompts_df["split"] == s].reset_index(drop=True) for s in ("train", "validation", "test"))
    for name, part in zip(("train", "validation", "test"), parts, strict=True):
        if part.empty:
            raise EmptyFilterError(f"the {name} split is empty: too few reviewers or windows ({len(prompts_df)} prompts in all)")
    logger.info("Prompts: train %d, validation %d, test %d", *(len(p) for p in parts))
    return parts
