"""One `Recommender` for the whole catalogue: retrieve N candidates, re-rank them, keep the top k.

The catalogue evaluation, the batch `recommend` pipeline and the HTTP service all call it. The re-ranker is
the fusion fitted by the evaluation (`fusion_model`): `fusion` (with the fine-tuned LLM's score of each
candidate's title after the history prompt), `fusion_no_llm`, or `retriever` (the retriever's own order).
`recommend.ranker` in conf/ picks it.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..errors import ConfigError
from . import fusion
from .retrieval import RetrievalConfig, Retriever

if TYPE_CHECKING:
    from .evidence import Evidence

logger = logging.getLogger(__name__)

RANKERS = ("fusion", "fusion_no_llm", "retriever")


@dataclass
class RecommendConfig:
    """The `recommend` parameters, checked once; every default lives in conf/base/parameters_recommend.yml."""

    num_candidates: int
    k: int
    exclude_bought: bool
    ranker: str
    history_size: int
    llm_batch_size: int
    llm_options_per_pass: int
    retrieval: RetrievalConfig

    @classmethod
    def from_params(cls, params: dict[str, Any], history_size: int) -> RecommendConfig:
        """Build from `params:recommend` (and `prompts.history_size` unless `recommend.history_size` is set), naming
        the parameter at fault."""
        params = dict(params)
        retrieval = dict(params.pop("retrieval", None) or {})
        known = {"num_candidates", "k", "exclude_bought", "ranker", "llm_batch_size", "llm_options_per_pass",
                 "history_size"}
        extra = sorted(set(params) - known - {"reviewers", "evaluation", "shard", "chunk_size"})
        if extra:
            raise ConfigError(f"recommend: unknown parameter(s) {extra}; known: {sorted(known | {'retrieval'})}")
        missing = sorted((known - {"history_size"}) - set(params))
        if missing:
            raise ConfigError(f"recommend: missing parameter(s) {missing} (conf/base/parameters_recommend.yml)")
        cfg = cls(**{k: params[k] for k in known - {"history_size"}}, history_size=params.get("history_size", history_size),
                  retrieval=RetrievalConfig.from_params(retrieval))
        for name in ("num_candidates", "k", "llm_batch_size", "llm_options_per_pass", "history_size"):
            value = getattr(cfg, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"recommend.{name} must be a positive integer, got {value!r}")
        if not isinstance(cfg.exclude_bought, bool):
            raise ConfigError(f"recommend.exclude_bought must be true or false, got {cfg.exclude_bought!r}")
        if cfg.ranker not in RANKERS:
            raise ConfigError(f"recommend.ranker must be one of {list(RANKERS)}, got {cfg.ranker!r}")
        return cfg


@dataclass
class Recommendation:
    """One recommended product."""

    asin: str
    title: str
    score: float
    retriever_rank: int | None
    source: str


class LLMScorer:
    """The fine-tuned LLM's score of candidate titles after a history-only (pointwise) prompt: the evaluation's
    `evaluation.title_score` (mean, sum, or pmi against the stored `title_priors`), by the same scoring code."""

    def __init__(self, model: Any, tokenizer: Any, instruction: str, batch_size: int, title_score: str,
                 priors: dict[str, float] | None, options_per_pass: int | None) -> None:
        self.model, self.tokenizer, self.instruction, self.batch_size = model, tokenizer, instruction, batch_size
        self.options_per_pass = options_per_pass
        from ..llm.scoring import AnswerTokens  # noqa: PLC0415

        self.tails = AnswerTokens(tokenizer)  # each product's answer tokens, tokenised once per process
        self.title_score, self.priors = title_score, priors or {}
        if title_score == "pmi" and not self.priors:
            raise ConfigError("evaluation.title_score is pmi but no title priors were given (the `title_priors` dataset)")

    @classmethod
    def load(cls, base_model: str, adapter: str | None, instruction: str, evaluation: dict[str, Any], batch_size: int,
             title_score: str, priors: dict[str, float] | None, options_per_pass: int | None) -> LLMScorer:
        """The base model with the LoRA adapter merged (one model in memory, no LoRA overhead), loaded by the one
        model loader with the evaluation's device, dtype and quantization."""
        from ..llm.models import load_scoring_model, load_tokenizer  # noqa: PLC0415

        model = load_scoring_model(base_model, adapter, evaluation, merge=True)
        return cls(model, load_tokenizer(adapter or base_model), instruction, batch_size, title_score, priors,
                   options_per_pass)

    def score(self, history_titles: list[list[str]], candidate_titles: list[list[str]],
              candidate_asins: list[list[str]] | None = None) -> list[np.ndarray]:
        """Each candidate's title score, per row (rows may differ in length); pmi needs `candidate_asins`."""
        from ..llm.models import history_input  # noqa: PLC0415
        from ..llm.scoring import score_titles  # noqa: PLC0415

        out: list[np.ndarray] = [np.zeros(0)] * len(history_titles)
        by_len: dict[int, list[int]] = {}
        for i, titles in enumerate(candidate_titles):
            by_len.setdefault(len(titles), []).append(i)
        for n, rows in by_len.items():
            if n == 0:
                continue
            prompts = pd.DataFrame({"instruction": self.instruction,
                                    "input": [history_input(history_titles[i]) for i in rows]})
            priors = None
            if self.title_score == "pmi":
                if candidate_asins is None:
                    raise ConfigError("evaluation.title_score: pmi needs the candidates' ASINs (their title priors)")
                try:
                    priors = np.array([[self.priors[a] for a in candidate_asins[i]] for i in rows], dtype=float)
                except KeyError as exc:
                    raise ConfigError(f"title_priors has no prior for product {exc.args[0]!r}") from exc
            scores = score_titles(self.model, self.tokenizer, prompts, self.batch_size, desc="LLM re-ranking",
                                  answers=[list(candidate_titles[i]) for i in rows], options_per_pass=self.options_per_pass,
                                  title_score=self.title_score, priors=priors, tails=self.tails)
            for j, i in enumerate(rows):
                out[i] = scores[j].astype(float)
        return out


class Recommender:
    """Retriever + per-candidate evidence + the fitted fusion (+ the LLM's score when the ranker uses it)."""

    def __init__(self, retriever: Retriever, config: RecommendConfig, fusion_model: dict[str, Any] | None = None,
                 llm: LLMScorer | None = None) -> None:
        self.retriever, self.config, self.llm = retriever, config, llm
        self.evidence = retriever.evidence
        self.model: dict[str, Any] | None = None
        if config.ranker != "retriever":
            if not fusion_model or config.ranker not in fusion_model:
                raise ConfigError(f"recommend.ranker {config.ranker!r} is not in the fitted fusion model "
                                  f"(has {sorted(fusion_model or {})}): run the evaluation pipeline first")
            self.model = fusion_model[config.ranker]
            if "llm" in self.model["features"] and llm is None:
                raise ConfigError(f"recommend.ranker {config.ranker!r} uses the LLM's score: load an LLMScorer")

    def features(self, histories: list[list[str]], prefixes: list[list[str]], candidates: list[list[str]],
                 names: list[str]) -> list[np.ndarray]:
        """Per row, its candidates' features [n, F] in the order of `names` (the fusion's evidence), from
        `features.compute`: the function the evaluation calls."""
        from .features import compute  # noqa: PLC0415

        titles = self.evidence.titles
        llm = None if self.llm is None else (lambda hists, cands: self.llm.score(
            [[titles.get(a, a) for a in h] for h in hists], [[titles.get(a, a) for a in row] for row in cands], cands))
        return compute(self.evidence, histories, prefixes, candidates, list(names), llm)

    def recommend(self, histories: list[list[str]], k: int | None = None, exclude_bought: bool | None = None,
                  prefixes: list[list[str]] | None = None, candidates: list[list[str]] | None = None,
                  exclude: list[set[str]] | None = None) -> list[list[Recommendation]]:
        """Top-k per customer. `histories`: each customer's products, oldest first (the last `history_size` are
        the prompt's history); `prefixes`: everything they bought (default: the history); `candidates`: re-rank
        these instead of retrieving; `exclude`: more products to leave out per customer."""
        cfg = self.config
        k = cfg.k if k is None else int(k)
        exclude_bought = cfg.exclude_bought if exclude_bought is None else exclude_bought
        prefixes = [list(h) for h in histories] if prefixes is None else [list(p) for p in prefixes]
        recent = [list(h)[-cfg.history_size:] for h in histories]
        skip = [(set(p) | set(h) if exclude_bought else set()) | (exclude[i] if exclude else set())
                for i, (p, h) in enumerate(zip(prefixes, histories, strict=True))]
        if candidates is None:
            found = self.retriever.retrieve(recent, cfg.num_candidates, skip)
            cands = [f.asins for f in found]
            srcs = [f.sources for f in found]
            ranks: list[list[int | None]] = [list(range(1, len(c) + 1)) for c in cands]
        else:
            cands = [[c for c in dict.fromkeys(row) if c not in s] for row, s in zip(candidates, skip, strict=True)]
            srcs = [["request"] * len(c) for c in cands]
            ranks = [[None] * len(c) for c in cands]
        if self.model is None:
            scores = [-np.arange(len(c), dtype=float) for c in cands]
        else:
            feats = self.features(recent, prefixes, cands, self.model["features"])
            scores = [fusion.apply_fusion(self.model, f) if len(f) else np.zeros(0) for f in feats]
        out = []
        for row, score, src, rank in zip(cands, scores, srcs, ranks, strict=True):
            order = np.argsort(-np.asarray(score), kind="stable")[:k]
            out.append([Recommendation(row[j], self.retriever.titles.get(row[j], ""), _finite(score[j]), rank[j],
                                       src[j]) for j in order])
        return out


def _finite(value: float) -> float:
    value = float(value)
    return value if math.isfinite(value) else -1e9


def llm_source(base_model: str, adapter: str | None, prompts: dict[str, Any], evaluation: dict[str, Any],
               title_priors: pd.DataFrame | None = None) -> dict[str, Any]:
    """What the LLM scorer loads: the base model, the adapter, the pointwise instruction (`params:prompts`) and how a
    title is scored (`evaluation.title_score`, with the stored `title_priors` for pmi)."""
    instruction = prompts.get("pointwise_instruction") or prompts["instruction"]
    priors = {} if title_priors is None or title_priors.empty else \
        dict(zip(title_priors["asin"], title_priors["prior"].astype(float), strict=True))
    return {"base_model": base_model, "adapter": adapter, "instruction": " ".join(str(instruction).split()),
            "title_score": evaluation["title_score"], "priors": priors}


def load_llm(llm_source: dict[str, Any] | None, evaluation: dict[str, Any], cfg: RecommendConfig,
             cache: dict[str, Any]) -> LLMScorer:
    """The LLM scorer of `llm_source`, loaded once per (base model, adapter) into `cache`."""
    if not llm_source:
        raise ConfigError(f"recommend.ranker {cfg.ranker!r} needs the base model and the LoRA adapter")
    key = ("llm", llm_source["base_model"], llm_source.get("adapter"))
    if key not in cache:
        cache[key] = LLMScorer.load(llm_source["base_model"], llm_source.get("adapter"), llm_source["instruction"],
                                    evaluation, cfg.llm_batch_size, llm_source["title_score"], llm_source.get("priors"),
                                    cfg.llm_options_per_pass)
    return cache[key]


def build_recommender(evidence: Evidence, fusion_model: dict[str, Any] | None, recommend: dict[str, Any],
                      evaluation: dict[str, Any], llm_source: dict[str, Any] | None, history_size: int,
                      cache: dict[str, Any] | None = None, retriever_mix: dict[str, Any] | None = None) -> Recommender:
    """Assemble a `Recommender` on one data cut's `Evidence` from the parameters.

    `llm_source`: {base_model, adapter, instruction, title_score, priors} when the ranker uses the LLM; `cache` keeps
    the LLM between calls; `retriever_mix`: the sources' turns learned on validation windows (`quotas: learned`)."""
    cache = {} if cache is None else cache
    cfg = RecommendConfig.from_params(recommend, history_size)
    model = (fusion_model or {}).get(cfg.ranker) if cfg.ranker != "retriever" else None
    learned = retriever_mix["weights"] if retriever_mix and cfg.retrieval.quotas == "learned" else None
    retriever = Retriever(evidence, cfg.retrieval, learned)
    llm = load_llm(llm_source, evaluation, cfg, cache) if model and "llm" in model["features"] else None
    return Recommender(retriever, cfg, fusion_model, llm)
