"""Split reviewers across machines or GPUs: `shard: {index, count}` in the batch pipelines' parameters.

A reviewer belongs to shard `hash(reviewer_id) mod count` (a stable hash, the same on every machine),
so all of a reviewer's prompts go to one shard. Each shard writes its own partition
(`shard-<index>-of-<count>`); a join node concatenates them once all are there and checks that together
they hold exactly the reviewers one unsharded run would.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import pandas as pd

from ..errors import ConfigError


@dataclass(frozen=True)
class Shard:
    """This run's part of the reviewers: `index` of `count` (0 of 1: all of them)."""

    index: int = 0
    count: int = 1

    @classmethod
    def from_params(cls, params: dict[str, Any], where: str) -> Shard:
        """Read `<where>.shard`, naming the parameter at fault."""
        raw = params.get("shard") or {}
        if not isinstance(raw, dict) or set(raw) - {"index", "count"}:
            raise ConfigError(f"{where}.shard must be {{index: i, count: n}}, got {raw!r}")
        try:
            index, count = int(raw.get("index", 0)), int(raw.get("count", 1))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{where}.shard.index and .count must be integers, got {raw!r}") from exc
        if count < 1 or not 0 <= index < count:
            raise ConfigError(f"{where}.shard: index must be in 0..count-1 and count >= 1, got index {index}, count {count}")
        return cls(index, count)

    @property
    def name(self) -> str:
        """The partition this shard writes."""
        return f"shard-{self.index}-of-{self.count}"

    def mask(self, reviewer_ids: Iterable[str]) -> list[bool]:
        """Which of these reviewers are this shard's."""
        return [zlib.crc32(str(r).encode()) % self.count == self.index for r in reviewer_ids]

    def take(self, frame: pd.DataFrame, column: str = "reviewer_id") -> pd.DataFrame:
        """The rows of this shard's reviewers, in their order."""
        if self.count == 1:
            return frame
        return frame[self.mask(frame[column])].reset_index(drop=True)


def join_shards(partitions: dict[str, Callable[[], pd.DataFrame] | pd.DataFrame], shard: Shard,
                expected_reviewers: Iterable[str], dataset: str, column: str = "reviewer_id",
                groups: tuple[str, ...] = (), order: str | None = None) -> pd.DataFrame:
    """Concatenate the `count` partitions of this sharding in the order one unsharded run writes (by `groups`
    in order of appearance, then by the `order` column, which is dropped, or else the reviewers' order); fail
    naming what is missing or stale."""
    names = [Shard(i, shard.count).name for i in range(shard.count)]
    missing = [n for n in names if n not in partitions]
    if missing:
        raise ConfigError(
            f"{dataset}: {len(missing)} of {shard.count} shard(s) not written yet ({', '.join(missing)}): run the "
            f"scoring node with shard.index set to each of them (docs/scaling.md), then this join again")
    frames = []
    for n in names:
        part = partitions[n]
        frames.append(part() if callable(part) else part)
    filled = [f for f in frames if len(f)] or frames[:1]  # an empty shard adds no rows (nor its untyped columns)
    joined = pd.concat(filled, ignore_index=True)
    expected, got = set(map(str, expected_reviewers)), set(map(str, joined[column]))
    if got != expected:
        raise ConfigError(
            f"{dataset}: the {shard.count} shards hold {len(got)} reviewers, {len(got - expected)} of them not in this "
            f"run's data and {len(expected - got)} missing: a shard is stale (from an earlier run); rerun the scoring")
    rank = {r: i for i, r in enumerate(dict.fromkeys(map(str, expected_reviewers)))}
    keys = pd.DataFrame({f"_k{i}": pd.factorize(joined[g])[0] for i, g in enumerate(groups)})
    keys["_r"] = joined[order].to_numpy() if order else joined[column].astype(str).map(rank).to_numpy()
    positions = keys.sort_values(list(keys.columns), kind="stable").index
    out = joined.loc[positions].reset_index(drop=True)
    return out.drop(columns=order) if order else out
