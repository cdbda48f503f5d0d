"""LoRA fine-tuning through TRL's SFTTrainer with three backends: lora, qlora_bnb, unsloth.

The loss is on the answer only (prompt-completion data, TRL masks the prompt). Checkpoints go to a
folder keyed by the data and the settings, so an interrupted run resumes and an unrelated one does not.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import ConfigError
from .instrumentation import SeenExamples, Throughput, data_parallel_summary
from .models import display_path, load_model, load_tokenizer, messages, resolve_device, use_bf16

logger = logging.getLogger(__name__)
BACKENDS = ("lora", "qlora_bnb", "unsloth")


@dataclass
class TrainedAdapter:
    """A trained LoRA adapter with its tokenizer and a summary of the run."""

    model: Any
    tokenizer: Any
    summary: dict[str, Any] = field(default_factory=dict)


def unsloth_unavailable_reason() -> str | None:
    """Say why the Unsloth backend cannot run here, or None when it can."""
    import torch  # noqa: PLC0415

    if not torch.cuda.is_available():
        return "no CUDA GPU is visible (Unsloth trains on NVIDIA GPUs only)"
    if importlib.util.find_spec("unsloth") is None:
        return "the 'unsloth' package is not installed (pip install '.[gpu]')"
    return None


def resolve_backend(ft: dict[str, Any]) -> str:
    """Return the backend to use, failing at once (or falling back) when Unsloth cannot run."""
    backend = ft["backend"]
    if backend not in BACKENDS:
        raise ConfigError(f"fine_tuning.backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "unsloth":
        reason = unsloth_unavailable_reason()
        if reason:
            if ft["fallback"]:
                logger.warning("backend 'unsloth' unavailable: %s; falling back to 'qlora_bnb'", reason)
                return "qlora_bnb"
            raise ConfigError(
                f"fine_tuning.backend is 'unsloth' but {reason}. Use 'lora' or 'qlora_bnb', "
                "or set fine_tuning.fallback: true to fall back to 'qlora_bnb'."
            )
    return backend


def completion_text(prompts: pd.DataFrame, target: str = "letter_and_title") -> list[str]:
    """The answer trained on: the paper's 'C) title', or only the letter 'C)'."""
    if target == "letter_and_title":
        return prompts["output"].tolist()
    if target == "letter":
        return [f"{c})" for c in prompts["correct_letter"]]
    if target == "title":
        return [o.split(") ", 1)[1] for o in prompts["output"]]
    raise ConfigError(f"fine_tuning.target must be 'letter_and_title', 'letter' or 'title', got {target!r}")


def check_recipe(target: str, scoring: str, instruction: str | None) -> None:
    """Refuse settings that contradict each other: a model scored on what it was not taught to write, or an
    instruction that asks for another answer than the one trained on."""
    if target == "letter" and scoring == "title_likelihood":
        raise ConfigError("fine_tuning.target: letter with evaluation.scoring: title_likelihood scores titles the model "
                          "was never trained to write: use evaluation.scoring: letter_logits, or a target with the title")
    if instruction is None:
        return
    asks_letter = "letter" in instruction.lower()
    if target == "title" and asks_letter:
        raise ConfigError("prompts.instruction asks for the option's letter but fine_tuning.target is title: the model "
                          "would be told one answer and trained on another")
    if target in {"letter", "letter_and_title"} and not asks_letter:
        raise ConfigError(f"fine_tuning.target is {target} but prompts.instruction does not ask for the option's letter")


def to_sft_dataset(prompts: pd.DataFrame, target: str = "letter_and_title"):
    """Turn prompt rows into TRL's conversational prompt-completion format."""
    from datasets import Dataset  # noqa: PLC0415

    return Dataset.from_dict(
        {
            "prompt": [messages(i, x) for i, x in zip(prompts["instruction"], prompts["input"], strict=True)],
            "completion": [[{"role": "assistant", "content": o}] for o in completion_text(prompts, target)],
        }
    )


def _checkpointing(on: bool) -> dict[str, bool]:
    """The trainer's activation-checkpointing switch under its current name (transformers renamed it)."""
    import dataclasses  # noqa: PLC0415

    from trl import SFTConfig  # noqa: PLC0415

    names = {f.name for f in dataclasses.fields(SFTConfig)}
    return {"activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing": on}


def run_key(base_model: str, train: pd.DataFrame, ft: dict[str, Any]) -> str:
    """Hash the base model, training data and settings: the checkpoint folder's name."""
    h = hashlib.sha256(json.dumps(ft, sort_keys=True, default=str).encode())
    h.update(base_model.encode())
    h.update(pd.util.hash_pandas_object(train[["input", "output"]], index=False).values.tobytes())
    return h.hexdigest()[:16]


def _load_for_backend(backend: str, base_path: str, ft: dict[str, Any], device: str):
    """Return (model, tokenizer, peft_config or None) for a backend."""
    if backend == "unsloth":  # first: Unsloth must be imported before peft/transformers/trl
        from .unsloth_backend import load_unsloth  # noqa: PLC0415

        model, tokenizer = load_unsloth(base_path, ft, device if device.startswith("cuda:") else None)
        return model, tokenizer, None
    from peft import LoraConfig  # noqa: PLC0415

    lora = ft["lora"]
    tokenizer = load_tokenizer(base_path)
    dtype = "bfloat16" if use_bf16(ft["bf16"], device) else "float32"  # LoRA weights stay fp32
    if backend == "qlora_bnb":
        from peft import prepare_model_for_kbit_training  # noqa: PLC0415

        model = load_model(base_path, dtype, quantization=ft["quantization"], device=device)
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=ft["gradient_checkpointing"])
    else:
        model = load_model(base_path, dtype, device=device)
    config = LoraConfig(
        r=int(lora["r"]),
        lora_alpha=int(lora["alpha"]),
        lora_dropout=float(lora["dropout"]),
        target_modules=list(lora["target_modules"]),
        bias="none",
        task_type="CAUSAL_LM",
    )
    return model, tokenizer, config


class _LossRecorder:
    """Collects training and validation losses as the trainer logs them."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def callback(self):
        from transformers import TrainerCallback  # noqa: PLC0415

        recorder = self

        class Cb(TrainerCallback):
            def on_log(self, args, state, control, logs=None, **kwargs):
                logs = logs or {}
                for key, split in (("loss", "train"), ("eval_loss", "validation")):
                    if key in logs:
                        recorder.rows.append(
                            {"step": state.global_step, "epoch": float(logs.get("epoch", state.epoch or 0)),
                             "split": split, "loss": float(logs[key])}
                        )

        return Cb()


def answer_only_trainer_class():
    """Return an SFTTrainer whose loss runs the LM head on answer positions only.

    TRL's default loss computes log-probabilities over the whole vocabulary at every position,
    prompt included, then masks the prompt; with prompts of ~150 tokens and answers of ~15, that
    is most of a CPU step. This loss gives the same value (mean NLL of the answer tokens) from the
    final hidden states of the answer positions alone. Under data parallelism (DDP) it defers to TRL's loss.
    """
    import torch  # noqa: PLC0415
    from trl import SFTTrainer  # noqa: PLC0415

    class AnswerOnlySFTTrainer(SFTTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if isinstance(model, torch.nn.parallel.DistributedDataParallel):
                # data parallel: the forward must go through DDP (it prepares the gradient all-reduce), so the
                # loss is TRL's own (the same mean NLL of the answer tokens, from logits at every position)
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            labels = inputs["labels"][:, 1:]
            wrapped = model.get_base_model() if hasattr(model, "get_base_model") else model
            wrapped = getattr(wrapped, "module", wrapped)
            kwargs = {k: inputs[k] for k in ("attention_mask", "position_ids") if k in inputs}
            hidden = wrapped.model(input_ids=inputs["input_ids"], use_cache=False, **kwargs).last_hidden_state
            mask = labels != -100
            logits = wrapped.lm_head(hidden[:, :-1][mask]).float()
            target = labels[mask]
            total = torch.nn.functional.cross_entropy(logits, target, reduction="sum")
            count = num_items_in_batch if num_items_in_batch is not None else mask.sum()
            loss = total / torch.as_tensor(count, device=total.device).clamp(min=1)
            if self.model.training:
                with torch.no_grad():
                    acc = (logits.argmax(-1) == target).float().mean().item() if len(target) else 0.0
                self._metrics["train"]["mean_token_accuracy"].append(acc)
                if "attention_mask" in inputs and "position_ids" not in inputs:
                    real = int(inputs["attention_mask"].sum())
                else:  # padding-free batches hold real tokens only
                    real = int(inputs["input_ids"].numel())
                self._total_train_tokens += real
                self._metrics["train"]["num_tokens"] = [self._total_train_tokens]
            return (loss, {"loss": loss}) if return_outputs else loss

    return AnswerOnlySFTTrainer


def _epoch_means(history: pd.DataFrame) -> pd.DataFrame:
    """Mean training loss per (started) epoch, as rows of split 'train_epoch_mean'."""
    train = history[history["split"] == "train"]
    if train.empty:
        return pd.DataFrame(columns=history.columns)
    epoch = (train["epoch"] - 1e-9).clip(lower=0).astype(int) + 1
    means = train.groupby(epoch).agg(step=("step", "max"), loss=("loss", "mean")).reset_index(names="epoch")
    return means.assign(split="train_epoch_mean", epoch=means["epoch"].astype(float))[history.columns]


def world() -> tuple[int, int]:
    """(rank, world size) of this process: (0, 1) unless started by `torchrun` or `accelerate launch`."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def _peak_memory(device: str) -> dict[str, float]:
    if device != "cuda":
        return {}
    import torch  # noqa: PLC0415

    return {"peak_gpu_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)}


def train_adapter(base_path: str, train: pd.DataFrame, validation: pd.DataFrame, ft: dict[str, Any],
                  callbacks: list | None = None) -> tuple[TrainedAdapter, pd.DataFrame]:
    """Fine-tune LoRA on the training prompts; return the adapter and the loss history."""
    backend = resolve_backend(ft)
    device = resolve_device(ft["device"])
    if device == "cuda" and world()[1] > 1:  # data parallel on several GPUs: each process on its own
        device = f"cuda:{os.environ.get('LOCAL_RANK', '0')}"
    target = ft["target"]
    model, tokenizer, peft_config = _load_for_backend(backend, base_path, ft, device)
    from transformers.trainer_utils import get_last_checkpoint  # noqa: PLC0415
    from trl import SFTConfig, SFTTrainer  # noqa: PLC0415

    out_dir = Path(ft["checkpoint_dir"]) / run_key(base_path, train, ft)
    out_dir.mkdir(parents=True, exist_ok=True)
    use_cpu = device == "cpu"
    device = device.split(":")[0]  # cuda:<rank> -> cuda for what follows
    bf16 = use_bf16(ft["bf16"], device)  # autocast; auto: only where bf16 is not emulated
    eval_steps = ft.get("eval_steps")
    args = SFTConfig(
        output_dir=str(out_dir),
        num_train_epochs=float(ft["epochs"]),
        max_steps=int(ft.get("max_steps") or -1),
        per_device_train_batch_size=int(ft["batch_size"]),
        per_device_eval_batch_size=int(ft["eval_batch_size"]),
        gradient_accumulation_steps=int(ft["gradient_accumulation_steps"]),
        learning_rate=float(ft["learning_rate"]),
        weight_decay=float(ft["weight_decay"]),
        lr_scheduler_type=ft["lr_scheduler"],
        warmup_steps=float(ft["warmup_ratio"]),
        logging_steps=int(ft["logging_steps"]),
        eval_strategy="steps" if eval_steps else "epoch",
        eval_steps=int(eval_steps) if eval_steps else None,
        save_strategy="steps",
        save_steps=int(ft["save_steps"]),
        save_total_limit=ft["save_total_limit"],
        max_length=int(ft["max_seq_length"]),
        seed=int(ft["seed"]),
        data_seed=int(ft["seed"]),
        use_cpu=use_cpu,
        bf16=bf16,
        report_to="none",
        completion_only_loss=True,
        **_checkpointing(bool(ft["gradient_checkpointing"]) and backend != "unsloth"),
        train_sampling_strategy="group_by_length" if ft["group_by_length"] else "random",
        padding_free=bool(ft["padding_free"]),
        pad_to_multiple_of=ft.get("pad_to_multiple_of"),
        dataloader_num_workers=0,
        prediction_loss_only=True,
        disable_tqdm=False,
    )
    recorder = _LossRecorder()
    throughput = Throughput(int(ft["throughput_warmup_steps"]))
    trainer_class = answer_only_trainer_class() if ft["loss"] == "answer_positions" else SFTTrainer
    trainer = trainer_class(
        model=model,
        args=args,
        train_dataset=to_sft_dataset(train, target),
        eval_dataset=to_sft_dataset(validation, target),
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[recorder.callback(), throughput.callback(), *(callbacks or [])],
    )
    rank, world_size = world()
    seen = SeenExamples()
    if world_size > 1:
        seen.record_training_of(trainer)
        logger.info("Data parallel: rank %d of %d (%s)", rank, world_size, trainer.args.parallel_mode)
    throughput.trainer = trainer
    last = get_last_checkpoint(str(out_dir)) if ft["resume"] else None
    if last:
        logger.info("Resuming training from checkpoint %s", last)
    logger.info("Training backend=%s on %s: %d train / %d validation prompts", backend, device, len(train), len(validation))
    if device == "cuda":
        import torch  # noqa: PLC0415

        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=last)
    seconds = time.perf_counter() - start
    final_eval = trainer.evaluate()
    recorder.rows.append({"step": trainer.state.global_step, "epoch": float(trainer.state.epoch or 0),
                          "split": "validation", "loss": float(final_eval["eval_loss"])})
    parallel = data_parallel_summary(trainer, seen, out_dir / "data_parallel", rank, world_size)
    history = pd.DataFrame(recorder.rows, columns=["step", "epoch", "split", "loss"]).drop_duplicates()
    history = pd.concat([history, _epoch_means(history)], ignore_index=True)
    summary = {
        "backend": backend,
        "target": target,
        "device": device,
        "base_model": display_path(base_path),
        "train_prompts": len(train),
        "validation_prompts": len(validation),
        "batch_size": int(ft["batch_size"]),
        "gradient_accumulation_steps": int(ft["gradient_accumulation_steps"]),
        "learning_rate": float(ft["learning_rate"]),
        "steps": int(trainer.state.global_step),
        "epochs": float(trainer.state.epoch or 0),
        "train_seconds": round(seconds, 1),
        "train_loss": float(result.training_loss),
        "final_validation_loss": float(final_eval["eval_loss"]),
        "resumed_from": last,
        **throughput.summary(),
        **_peak_memory(device),
        **parallel,
        "checkpoint_dir": str(out_dir),
    }
    logger.info("Training done: %s", summary)
    return TrainedAdapter(trainer.model, tokenizer, summary), history
