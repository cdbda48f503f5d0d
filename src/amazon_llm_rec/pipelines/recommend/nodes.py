"""Nodes of the recommend pipeline: the two-stage recommender over every reviewer, in chunks."""

from __future__ import annotations

import logging
import time
from typing import Any

import pandas as pd

from ...core.errors import ConfigError
from ...core.llm.sharding import Shard, join_shards
from ...core.rank.evidence import Evidence
from ...core.rank.recommender import build_recommender, llm_source

logger = logging.getLogger(__name__)

COLUMNS = ["reviewer_id", "rank", "asin", "title", "score", "retriever_rank", "source"]


def select_reviewers(reviewer_sequences: pd.DataFrame, recommend: dict[str, Any]) -> pd.DataFrame:
    """The reviewers to recommend for: every one, or those named in `recommend.reviewers` (unknown ids fail)."""
    wanted = recommend.get("reviewers")
    if wanted is None:
        return reviewer_sequences
    if isinstance(wanted, str) or not isinstance(wanted, list | tuple):
        raise ConfigError(f"recommend.reviewers must be null or a list of reviewer ids, got {wanted!r}")
    known = set(reviewer_sequences["reviewer_id"])
    unknown = [r for r in wanted if r not in known]
    if unknown:
        raise ConfigError(f"recommend.reviewers: {len(unknown)} unknown reviewer id(s), e.g. {unknown[:3]}")
    return reviewer_sequences.set_index("reviewer_id").loc[list(dict.fromkeys(wanted))].reset_index()


def recommend_batch(reviewer_sequences: pd.DataFrame, items: pd.DataFrame, fusion_model: dict[str, Any],
                    retriever_mix: dict[str, Any], base_model: str, lora_adapter: str, title_priors: pd.DataFrame, recommend: dict[str, Any],
                    evaluation: dict[str, Any], prompts: dict[str, Any], title_embeddings: Any = None) -> dict[str, pd.DataFrame]:
    """Top-k per selected reviewer of this shard (`recommend.shard`), counts fitted on every sequence."""
    from tqdm.auto import tqdm  # noqa: PLC0415

    shard = Shard.from_params(recommend, "recommend")
    chosen = shard.take(select_reviewers(reviewer_sequences, recommend))
    evidence = Evidence([list(s) for s in reviewer_sequences["asins"]], items, evaluation["embedding_model"],
                        evaluation["sasrec"], title_embeddings)
    rec = build_recommender(evidence, fusion_model, recommend, evaluation,
                            llm_source(base_model, lora_adapter, prompts, evaluation, title_priors),
                            int(prompts["history_size"]), retriever_mix=retriever_mix)
    chunk = int(recommend["chunk_size"])
    if chunk < 1:
        raise ConfigError(f"recommend.chunk_size must be a positive integer, got {chunk}")
    rows: list[tuple] = []
    start = time.perf_counter()
    ids, seqs = chosen["reviewer_id"].tolist(), [list(s) for s in chosen["asins"]]
    with tqdm(total=len(ids), desc=f"recommending ({rec.config.ranker})", unit="reviewer") as bar:
        for lo in range(0, len(ids), chunk):
            out = rec.recommend(seqs[lo : lo + chunk])
            for rid, recs in zip(ids[lo : lo + chunk], out, strict=True):
                rows += [(rid, i + 1, r.asin, r.title, r.score, r.retriever_rank, r.source) for i, r in enumerate(recs)]
            bar.update(len(out))
    seconds = time.perf_counter() - start
    logger.info("Recommended top %d for %d reviewers (%s) with %s in %.1f s (%.2f reviewers/s)", rec.config.k,
                len(ids), shard.name, rec.config.ranker, seconds, len(ids) / max(seconds, 1e-9))
    frame = pd.DataFrame(rows, columns=COLUMNS)
    frame["retriever_rank"] = frame["retriever_rank"].astype("Int64")
    return {shard.name: frame}


def join_recommendations(recommendation_shards: dict[str, Any], reviewer_sequences: pd.DataFrame,
                         recommend: dict[str, Any]) -> pd.DataFrame:
    """Join the shards' recommendations into one table, once every shard of `recommend.shard.count` is written."""
    shard = Shard.from_params(recommend, "recommend")
    expected = select_reviewers(reviewer_sequences, recommend)["reviewer_id"]
    return join_shards(recommendation_shards, shard, expected, "recommendation_shards")
