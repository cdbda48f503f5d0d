"""SASRec (Kang & McAuley, ICDM 2018): a self-attentive sequential recommender, as a baseline.

The architecture follows the paper and its reference code: learnt item and position embeddings, causal
self-attention blocks (LayerNorm, one attention layer, point-wise feed-forward, residuals). The loss is the paper's
binary cross-entropy of each position's next item against one sampled negative (`loss: bce`), or a softmax
cross-entropy over every item (`loss: softmax`; `softmax_negatives`: over the next item and that many shared uniform
negatives instead), which later work found converges faster and better for SASRec (Klenitskiy & Vasilev 2023).
Training may stop on held-out last items, measured as the evaluation measures: HR@1 among the true item and
`validation_candidates - 1` uniform never-bought items (the default protocol's 4 options).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)


@dataclass
class SASRecConfig:
    """The paper's settings for Amazon data: d=50, 2 blocks, 1 head, dropout 0.5, maxlen 50, lr 1e-3, batch 128."""

    hidden: int
    blocks: int
    heads: int
    dropout: float
    max_len: int
    learning_rate: float
    batch_size: int
    epochs: int
    seed: int
    # bce (the paper) | softmax; softmax_negatives: None for every item, or shared uniform negatives per batch
    loss: str
    softmax_negatives: int | None
    # Early stopping: hold out each sequence's last item (sequences of 3 or more), train on the rest, check HR@1
    # among it and validation_candidates - 1 uniform never-bought items on up to `validation_users` of them every
    # `eval_every` epochs, stop after `patience` checks without a gain and keep the best epoch's weights.
    # None: train all `epochs`.
    patience: int | None
    eval_every: int
    validation_users: int
    validation_candidates: int
    # A time budget: stop after the epoch that crosses it (None: no budget). The run says how many it trained.
    max_minutes: float | None

    @classmethod
    def from_params(cls, params: dict[str, Any] | None) -> SASRecConfig:
        """Build from `evaluation.sasrec` (conf/base holds every default), refusing unknown and missing keys."""
        from ..errors import ConfigError  # noqa: PLC0415

        params = params or {}
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(params) - set(known))
        missing = [k for k in known if k not in params]
        if unknown or missing:
            raise ConfigError(f"evaluation.sasrec: unknown {[f'evaluation.sasrec.{k}' for k in unknown]}, missing "
                              f"{[f'evaluation.sasrec.{k}' for k in missing]} (conf/base/parameters_evaluation.yml)")
        cfg = cls(**{k: params[k] for k in known})
        if cfg.loss not in {"bce", "softmax"}:
            raise ConfigError(f"evaluation.sasrec.loss must be bce or softmax, got {cfg.loss!r}")
        if cfg.softmax_negatives is not None and (not isinstance(cfg.softmax_negatives, int) or cfg.softmax_negatives < 1):
            raise ConfigError(f"evaluation.sasrec.softmax_negatives must be a positive integer or null, "
                              f"got {cfg.softmax_negatives!r}")
        if not isinstance(cfg.validation_candidates, int) or cfg.validation_candidates < 2:  # noqa: PLR2004
            raise ConfigError(f"evaluation.sasrec.validation_candidates must be an integer >= 2, "
                              f"got {cfg.validation_candidates!r}")
        return cfg


class _Block(nn.Module):
    def __init__(self, cfg: SASRecConfig) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.hidden, eps=1e-8)
        self.attn = nn.MultiheadAttention(cfg.hidden, cfg.heads, dropout=cfg.dropout, batch_first=True)
        self.norm2 = nn.LayerNorm(cfg.hidden, eps=1e-8)
        self.ffn = nn.Sequential(nn.Linear(cfg.hidden, cfg.hidden), nn.Dropout(cfg.dropout), nn.ReLU(),
                                 nn.Linear(cfg.hidden, cfg.hidden), nn.Dropout(cfg.dropout))

    def forward(self, x: torch.Tensor, causal: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        q = self.norm1(x)
        x = q + self.attn(q, x, x, attn_mask=causal, need_weights=False)[0]
        x = self.norm2(x)
        return (x + self.ffn(x)) * keep


class SASRec(nn.Module):
    """Item and position embeddings, causal self-attention blocks, a final LayerNorm."""

    def __init__(self, num_items: int, cfg: SASRecConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.items = nn.Embedding(num_items + 1, cfg.hidden, padding_idx=0)  # 0 is padding
        self.positions = nn.Embedding(cfg.max_len, cfg.hidden)
        self.dropout = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(_Block(cfg) for _ in range(cfg.blocks))
        self.norm = nn.LayerNorm(cfg.hidden, eps=1e-8)

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        """Hidden state of every position of left-padded item-index sequences [B, L], L <= max_len.

        Positions count back from the end (the last item is position max_len - 1), so a batch may be cut to
        its longest real sequence without changing what a position means."""
        length = seq.shape[1]
        x = self.items(seq) * self.cfg.hidden**0.5 + self.positions(
            torch.arange(self.cfg.max_len - length, self.cfg.max_len, device=seq.device))
        keep = (seq > 0).unsqueeze(-1).float()
        x = self.dropout(x) * keep
        causal = torch.triu(torch.ones(length, length, dtype=torch.bool, device=seq.device), diagonal=1)
        for block in self.blocks:
            x = block(x, causal, keep)
        return self.norm(x)


def _left_pad(seqs: list[list[int]], length: int) -> np.ndarray:
    out = np.zeros((len(seqs), length), dtype=np.int64)
    for i, seq in enumerate(seqs):
        tail = seq[-length:]
        if tail:
            out[i, length - len(tail) :] = tail
    return out


@dataclass
class FittedSASRec:
    """A trained SASRec and its item vocabulary."""

    model: SASRec
    index: dict[str, int]
    losses: list[float]
    seconds: float
    best_epoch: int = 0

    def score(self, prefixes: list[list[str]], candidates: list[list[str]]) -> np.ndarray:
        """Score each row's candidates after its prefix (dot product with the last hidden state)."""
        self.model.eval()
        seqs = _left_pad([[self.index[a] for a in p if a in self.index] for p in prefixes], self.model.cfg.max_len)
        cand = np.array([[self.index.get(a, 0) for a in row] for row in candidates], dtype=np.int64)
        out = []
        with torch.no_grad():
            for start in range(0, len(seqs), 512):
                batch = seqs[start : start + 512]
                width = max(1, int((batch > 0).sum(axis=1).max()))
                h = self.model(torch.from_numpy(batch[:, -width:]))[:, -1, :]
                e = self.model.items(torch.from_numpy(cand[start : start + 512]))
                out.append(torch.einsum("bd,bkd->bk", h, e).numpy())
        scores = np.concatenate(out) if out else np.zeros(cand.shape)
        return np.where(cand > 0, scores, -1e9)  # items never seen in training rank last

    def top_k(self, prefixes: list[list[str]], k: int, exclude: list[set[str]] | None = None) -> list[list[str]]:
        """The k best products of the whole vocabulary after each prefix, skipping each row's `exclude`."""
        self.model.eval()
        names = np.array(sorted(self.index, key=self.index.get))  # index 1.. in order
        seqs = _left_pad([[self.index[a] for a in p if a in self.index] for p in prefixes], self.model.cfg.max_len)
        out: list[list[str]] = []
        with torch.no_grad():
            table = self.model.items.weight[1:]
            for start in range(0, len(seqs), 512):
                batch = seqs[start : start + 512]
                width = max(1, int((batch > 0).sum(axis=1).max()))
                scores = (self.model(torch.from_numpy(batch[:, -width:]))[:, -1, :] @ table.T).numpy()
                for i, row in enumerate(scores):
                    skip = (exclude[start + i] if exclude else set())
                    order = np.argsort(-row, kind="stable")[: k + len(skip)]
                    out.append([a for a in names[order] if a not in skip][:k])
        return out


def _negatives(rng, rows: np.ndarray, shape: tuple, vocab_size: int, stride: int, bought_keys: np.ndarray) -> np.ndarray:
    """One random item per position, resampled (10 times at most) where the user bought it (as the reference code)."""
    neg = rng.integers(1, vocab_size + 1, size=shape)
    for _ in range(10):
        keys = rows[:, None] * stride + neg
        clash = bought_keys[np.minimum(np.searchsorted(bought_keys, keys), len(bought_keys) - 1)] == keys
        if not clash.any():
            break
        neg[clash] = rng.integers(1, vocab_size + 1, size=int(clash.sum()))
    return neg


def _bce_loss(model: SASRec, h: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, bce: nn.Module) -> torch.Tensor:
    """Binary cross-entropy of the next item against one negative, over real (non-padding) positions."""
    pos_logit = (h * model.items(pos)).sum(-1)
    neg_logit = (h * model.items(neg)).sum(-1)
    mask = (pos > 0).float()
    return ((bce(pos_logit, torch.ones_like(pos_logit)) + bce(neg_logit, torch.zeros_like(neg_logit))) * mask).sum() / mask.sum()


def _softmax_loss(model: SASRec, h: torch.Tensor, pos: torch.Tensor, negatives: int | None, vocab_size: int,
                  rng: np.random.Generator) -> torch.Tensor:
    """Cross-entropy of the next item over every item, or over it and `negatives` shared uniform items (a negative
    equal to the position's next item is masked), at real (non-padding) positions."""
    mask = pos > 0
    h, pos = h[mask], pos[mask]
    if negatives is None:
        logits = h @ model.items.weight[1:].T  # [N, V]: item i is column i - 1
        return nn.functional.cross_entropy(logits, pos - 1)
    neg = torch.from_numpy(rng.choice(np.arange(1, vocab_size + 1), size=min(negatives, vocab_size), replace=False))
    pos_logit = (h * model.items(pos)).sum(-1, keepdim=True)
    neg_logit = h @ model.items(neg).T
    neg_logit = neg_logit.masked_fill(neg.unsqueeze(0) == pos.unsqueeze(1), float("-inf"))
    logits = torch.cat([pos_logit, neg_logit], dim=1)
    return nn.functional.cross_entropy(logits, torch.zeros(len(pos), dtype=torch.long))


def _train_epoch(model: SASRec, optimizer: torch.optim.Optimizer, cfg: SASRecConfig, inputs: np.ndarray,
                 positives: np.ndarray, rng: np.random.Generator, vocab: tuple[int, int, np.ndarray],
                 bce: nn.Module) -> float:
    """One pass over the sequences in a random order; the mean loss. `vocab`: (size, stride, bought keys)."""
    model.train()
    size, stride, bought_keys = vocab
    order = rng.permutation(len(inputs))
    total, count = 0.0, 0
    for b in range(0, len(order), cfg.batch_size):
        rows = order[b : b + cfg.batch_size]
        width = max(1, int((inputs[rows] > 0).sum(axis=1).max()))  # cut the batch to its longest sequence
        h = model(torch.from_numpy(inputs[rows][:, -width:]))
        pos = positives[rows]
        if cfg.loss == "softmax":
            loss = _softmax_loss(model, h, torch.from_numpy(pos[:, -width:]), cfg.softmax_negatives, size, rng)
        else:
            neg = _negatives(rng, rows, pos.shape, size, stride, bought_keys)
            loss = _bce_loss(model, h, torch.from_numpy(pos[:, -width:]), torch.from_numpy(neg[:, -width:]), bce)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total, count = total + loss.item() * len(rows), count + len(rows)
    return total / count


def fit_sasrec(sequences: list[list[str]], cfg: SASRecConfig, progress: bool = True) -> FittedSASRec:
    """Train SASRec on item sequences: each position predicts the next item (`cfg.loss`)."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    vocab = sorted({a for s in sequences for a in s})
    index = {a: i + 1 for i, a in enumerate(vocab)}
    usable = [[index[a] for a in s] for s in sequences if len(s) >= 2]  # noqa: PLR2004
    if not usable:
        raise ValueError("SASRec needs at least one sequence of two or more items")
    logits_gib = cfg.batch_size * cfg.max_len * len(vocab) * 4 / 2**30
    if cfg.loss == "softmax" and cfg.softmax_negatives is None and logits_gib > 2:  # noqa: PLR2004
        from ..errors import ConfigError  # noqa: PLC0415

        raise ConfigError(f"evaluation.sasrec.softmax_negatives: a softmax over all {len(vocab):,} items needs "
                          f"{logits_gib:.1f} GiB of logits a batch; set it (e.g. 256 shared negatives) or lower "
                          "evaluation.sasrec.batch_size")
    held: list[tuple[list[int], int]] = []
    held_candidates = None
    if cfg.patience is not None:  # the last item of up to validation_users sequences (3 or more) is held out
        chosen = [i for i, s in enumerate(usable) if len(s) >= 3][: cfg.validation_users]  # noqa: PLR2004
        held = [(usable[i][:-1], usable[i][-1]) for i in chosen]
        for i in chosen:  # only these lose their last item; every other sequence trains whole
            usable[i] = usable[i][:-1]
        held_candidates = _held_out_candidates(held, len(vocab), cfg.validation_candidates, rng)
    # Inputs are s[:-1], positives s[1:], both cut to the last max_len positions (as the reference code).
    inputs = _left_pad([s[:-1] for s in usable], cfg.max_len)
    positives = _left_pad([s[1:] for s in usable], cfg.max_len)
    stride = len(vocab) + 1
    bought_keys = np.unique([u * stride + i for u, s in enumerate(usable) for i in s])
    model = SASRec(len(vocab), cfg)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate, betas=(0.9, 0.98))
    bce = nn.BCEWithLogitsLoss(reduction="none")
    losses: list[float] = []
    best: tuple[float, int, dict | None] = (-1.0, 0, None)
    start = time.perf_counter()
    for _epoch in tqdm(range(cfg.epochs), desc="training SASRec", unit="epoch", disable=not progress):
        losses.append(_train_epoch(model, optimizer, cfg, inputs, positives, rng, (len(vocab), stride, bought_keys), bce))
        if held and (_epoch + 1) % cfg.eval_every == 0:
            score = _held_out_hr1(model, held, held_candidates, cfg.max_len)
            if score > best[0]:
                best = (score, _epoch + 1, {k: v.clone() for k, v in model.state_dict().items()})
            elif (_epoch + 1 - best[1]) // cfg.eval_every >= cfg.patience:
                break
        if cfg.max_minutes is not None and time.perf_counter() - start > 60 * float(cfg.max_minutes):
            logger.warning("SASRec: stopped at its time budget (sasrec.max_minutes %s) after %d of %d epochs",
                           cfg.max_minutes, _epoch + 1, cfg.epochs)
            break
    seconds = time.perf_counter() - start
    if held and best[2] is not None:
        model.load_state_dict(best[2])
        logger.info("SASRec: stopped after %d epochs; best held-out HR@1 (%d candidates) %.4f at epoch %d", len(losses),
                    cfg.validation_candidates, best[0], best[1])
    logger.info("SASRec: %d sequences, %d items, %d epochs in %.1f s, final loss %.4f",
                len(usable), len(vocab), len(losses), seconds, losses[-1] if losses else float("nan"))
    return FittedSASRec(model, index, losses, seconds, best_epoch=best[1] if held else len(losses))


def _held_out_candidates(held: list[tuple[list[int], int]], vocab_size: int, k: int,
                         rng: np.random.Generator) -> np.ndarray:
    """[held, k] candidates a held-out item: it first, then k - 1 uniform items its user never bought (fixed for
    the whole training, so every check scores the same candidates)."""
    out = np.zeros((len(held), k), dtype=np.int64)
    for i, (prefix, target) in enumerate(held):
        bought, row = {*prefix, target}, [target]
        while len(row) < k:
            c = int(rng.integers(1, vocab_size + 1))
            if c not in bought and c not in row:
                row.append(c)
            if len(row) + len(bought) > vocab_size:  # a tiny vocabulary: fewer candidates cannot be helped
                row += [0] * (k - len(row))
        out[i] = row
    return out


def _held_out_hr1(model: SASRec, held: list[tuple[list[int], int]], candidates: np.ndarray, max_len: int) -> float:
    """HR@1 of each held-out last item among its candidates after its prefix (ties count against it)."""
    model.eval()
    seqs = _left_pad([p for p, _ in held], max_len)
    hits = 0
    with torch.no_grad():
        for start in range(0, len(seqs), 512):
            batch = seqs[start : start + 512]
            width = max(1, int((batch > 0).sum(axis=1).max()))
            h = model(torch.from_numpy(batch[:, -width:]))[:, -1, :]
            cand = torch.from_numpy(candidates[start : start + 512])
            scores = torch.einsum("bd,bkd->bk", h, model.items(cand)).masked_fill(cand == 0, float("-inf"))
            hits += int((scores[:, 1:] < scores[:, :1]).all(dim=1).sum())
    model.train()
    return hits / len(held)
