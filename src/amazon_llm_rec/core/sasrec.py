"""SASRec (Kang & McAuley, ICDM 2018): a self-attentive sequential recommender, as a baseline.

The architecture and training follow the paper and its reference code: learnt item and position
embeddings, causal self-attention blocks (LayerNorm, one attention layer, point-wise feed-forward,
residuals), and binary cross-entropy between each position's output and the next item against one
sampled negative. Defaults are the paper's settings for sparse Amazon data (`SASRecConfig`).
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

    hidden: int = 50
    blocks: int = 2
    heads: int = 1
    dropout: float = 0.5
    max_len: int = 50
    learning_rate: float = 1e-3
    batch_size: int = 128
    epochs: int = 200
    seed: int = 42

    @classmethod
    def from_params(cls, params: dict[str, Any] | None) -> SASRecConfig:
        """Build from a parameters dict, ignoring keys it does not know."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (params or {}).items() if k in known})


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


def fit_sasrec(sequences: list[list[str]], cfg: SASRecConfig, progress: bool = True) -> FittedSASRec:
    """Train SASRec on item sequences: each position predicts the next item against one sampled negative."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    vocab = sorted({a for s in sequences for a in s})
    index = {a: i + 1 for i, a in enumerate(vocab)}
    usable = [[index[a] for a in s] for s in sequences if len(s) >= 2]  # noqa: PLR2004
    if not usable:
        raise ValueError("SASRec needs at least one sequence of two or more items")
    # Inputs are s[:-1], positives s[1:], both cut to the last max_len positions (as the reference code).
    inputs = _left_pad([s[:-1] for s in usable], cfg.max_len)
    positives = _left_pad([s[1:] for s in usable], cfg.max_len)
    stride = len(vocab) + 1
    bought_keys = np.unique([u * stride + i for u, s in enumerate(usable) for i in s])
    model = SASRec(len(vocab), cfg)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate, betas=(0.9, 0.98))
    bce = nn.BCEWithLogitsLoss(reduction="none")
    losses: list[float] = []
    start = time.perf_counter()
    for _epoch in tqdm(range(cfg.epochs), desc="training SASRec", unit="epoch", disable=not progress):
        model.train()
        order = rng.permutation(len(usable))
        total, count = 0.0, 0
        for b in range(0, len(order), cfg.batch_size):
            rows = order[b : b + cfg.batch_size]
            pos = positives[rows]
            neg = rng.integers(1, len(vocab) + 1, size=pos.shape)
            for _ in range(10):  # resample negatives the user bought (as the reference code)
                keys = rows[:, None] * stride + neg
                clash = bought_keys[np.minimum(np.searchsorted(bought_keys, keys), len(bought_keys) - 1)] == keys
                if not clash.any():
                    break
                neg[clash] = rng.integers(1, len(vocab) + 1, size=int(clash.sum()))
            width = max(1, int((inputs[rows] > 0).sum(axis=1).max()))  # cut the batch to its longest sequence
            h = model(torch.from_numpy(inputs[rows][:, -width:]))
            pos_t, neg_t = torch.from_numpy(pos[:, -width:]), torch.from_numpy(neg[:, -width:])
            pos_logit = (h * model.items(pos_t)).sum(-1)
            neg_logit = (h * model.items(neg_t)).sum(-1)
            mask = (pos_t > 0).float()
            loss = ((bce(pos_logit, torch.ones_like(pos_logit)) + bce(neg_logit, torch.zeros_like(neg_logit))) * mask).sum() / mask.sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total, count = total + loss.item() * len(rows), count + len(rows)
        losses.append(total / count)
    seconds = time.perf_counter() - start
    logger.info("SASRec: %d sequences, %d items, %d epochs in %.1f s, final loss %.4f",
                len(usable), len(vocab), cfg.epochs, seconds, losses[-1] if losses else float("nan"))
    return FittedSASRec(model, index, losses, seconds)
