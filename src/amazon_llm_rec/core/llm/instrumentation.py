"""Measurement around a training run, kept out of the training code: the throughput of each optimizer step
(benchmarks and the training summary report it) and, under data parallelism, which examples each rank trained on
(the data-parallel check of the tests and of `torchrun` runs)."""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

from .models import display_path


class Throughput:
    """Times each optimizer step (GPU-synchronised) and counts the real (non-padding) tokens."""

    def __init__(self, warmup_steps: int) -> None:
        self.warmup = warmup_steps
        self.trainer = None
        self.steps: list[tuple[float, int, int]] = []  # (seconds, real tokens, samples)
        self._t0 = 0.0
        self._tokens0 = 0

    @staticmethod
    def _sync() -> None:
        import torch  # noqa: PLC0415

        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def callback(self):
        from transformers import TrainerCallback  # noqa: PLC0415

        rec = self

        class Cb(TrainerCallback):
            def on_step_begin(self, args, state, control, **kwargs):
                rec._sync()
                rec._t0 = time.perf_counter()
                rec._tokens0 = getattr(rec.trainer, "_total_train_tokens", 0)

            def on_step_end(self, args, state, control, **kwargs):
                rec._sync()
                tokens = getattr(rec.trainer, "_total_train_tokens", 0) - rec._tokens0
                samples = args.per_device_train_batch_size * args.gradient_accumulation_steps
                rec.steps.append((time.perf_counter() - rec._t0, tokens, samples))

        return Cb()

    def summary(self) -> dict[str, float]:
        steady = self.steps[self.warmup :] or self.steps
        seconds = sum(s for s, _, _ in steady)
        if not seconds:
            return {}
        return {
            "measured_steps": len(steady),
            "real_tokens_per_second": round(sum(t for _, t, _ in steady) / seconds, 1),
            "samples_per_second": round(sum(n for _, _, n in steady) / seconds, 2),
            "seconds_per_step": round(seconds / len(steady), 4),
        }


class SeenExamples:
    """Records a digest of every training example this process's data loader gave it (data parallelism check)."""

    def __init__(self) -> None:
        self.digests: list[str] = []

    def wrap(self, collator):
        def collate(features):
            for f in features:
                ids = f.get("input_ids") if isinstance(f, dict) else None
                if ids is not None:
                    self.digests.append(hashlib.sha1(json.dumps(list(map(int, ids))).encode()).hexdigest()[:16])
            return collator(features)

        return collate

    def record_training_of(self, trainer) -> None:
        """Record what the trainer's training data loader gives this rank (not the evaluation's)."""
        train_loader = trainer.get_train_dataloader

        def recorded_train_loader():
            collator = trainer.data_collator
            trainer.data_collator = self.wrap(collator)
            try:
                return train_loader()
            finally:
                trainer.data_collator = collator

        trainer.get_train_dataloader = recorded_train_loader

    def write(self, folder: Path, rank: int, world_size: int) -> None:
        """Write this rank's record: `<folder>/rank-<rank>.json`."""
        folder.mkdir(parents=True, exist_ok=True)
        record = {"rank": rank, "world_size": world_size, "examples": self.digests}
        (folder / f"rank-{rank}.json").write_text(json.dumps(record))


def data_parallel_summary(trainer, seen: SeenExamples, folder: Path, rank: int, world_size: int) -> dict[str, Any]:
    """Each rank writes what it trained on; every rank then reads all (nothing without data parallelism)."""
    if world_size == 1:
        return {}
    seen.write(folder, rank, world_size)
    trainer.accelerator.wait_for_everyone()
    records = [json.loads((folder / f"rank-{r}.json").read_text()) for r in range(world_size)]
    ranks_of = Counter(d for r in records for d in set(r["examples"]))  # how many ranks saw each example
    return {"world_size": world_size, "examples_by_rank": [len(r["examples"]) for r in records],
            "examples_on_several_ranks": sum(n > 1 for n in ranks_of.values()),
            "data_parallel_record": display_path(str(folder))}
