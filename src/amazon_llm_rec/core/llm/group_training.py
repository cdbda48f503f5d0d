"""The ranking objective (`fine_tuning.objective: group_softmax`): LoRA trained by a softmax over candidate groups.

Each training group is one history prompt and G candidates, the true product first (`build_training_groups`). A
candidate's logit is the calibrated title score the evaluation ranks by (`scoring.calibrate`, pmi by default: the
summed log-probability of its answer tokens after the history, minus the base model's prior for the title), plus
the group's fixed `offset` (the fusion-without-LLM score) when `group_softmax.offset` is on. The loss is the
cross-entropy of the group's softmax at the true product, as RankLLaMA trains a re-ranker. The history prompt runs
once per group and its KV cache is shared by the G answers (`scoring.prompt_pass` / `answer_pass`: the very code
that scores at evaluation and in the service). Checkpoints every `save_steps` let an interrupted run resume.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import ConfigError
from .models import display_path, render_prompt, resolve_device
from .scoring import AnswerTokens, answer_pass, prompt_pass

logger = logging.getLogger(__name__)


def group_logits(model, tokenizer, tails: AnswerTokens, groups: pd.DataFrame, priors: np.ndarray, offsets: np.ndarray,
                 title_score: str):
    """Logits [groups, G] of a batch of groups: calibrated title scores (differentiable) plus the fixed offsets."""
    import torch  # noqa: PLC0415

    texts = [render_prompt(tokenizer, i, x) for i, x in zip(groups["instruction"], groups["input"], strict=True)]
    device = next(model.parameters()).device
    tokenizer.padding_side = "left"
    enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
    size = len(groups["candidate_titles"].iloc[0])
    conts = [tails(i, t) for i, titles in zip(groups["instruction"], groups["candidate_titles"], strict=True)
             for t in titles]
    cache, first = prompt_pass(model, enc)
    sums, counts = answer_pass(model, enc, cache, first, conts, size, tokenizer.pad_token_id)
    sums, counts = sums.view(-1, size), counts.view(-1, size)
    if title_score == "mean":
        score = sums / counts.clamp(min=1)
    elif title_score == "sum":
        score = sums
    elif title_score == "pmi":
        score = sums - torch.as_tensor(priors, dtype=sums.dtype, device=device)
    else:
        raise ConfigError(f"fine_tuning.group_softmax.title_score must be mean, sum or pmi, got {title_score!r}")
    return score + torch.as_tensor(offsets, dtype=sums.dtype, device=device)


def _resume(state_file: Path, model, optimizer, scheduler) -> tuple[int, list[dict[str, Any]]]:
    """Load a checkpoint's adapter, optimizer and schedule; return (step, loss history) or (0, []) without one."""
    import torch  # noqa: PLC0415
    from peft import set_peft_model_state_dict  # noqa: PLC0415

    if not state_file.is_file():
        return 0, []
    state = torch.load(state_file, weights_only=False)
    set_peft_model_state_dict(model, state["adapter"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    logger.info("Resuming group-softmax training at step %d (%s)", state["step"], display_path(str(state_file)))
    return int(state["step"]), list(state["history"])


def _group_terms(groups: pd.DataFrame, title_priors: pd.DataFrame, title_score: str,
                 offset: bool) -> tuple[np.ndarray, np.ndarray]:
    """The fixed terms of every group's logits: the candidates' title priors and offsets, each [groups, G]."""
    prior_of = dict(zip(title_priors["asin"], title_priors["prior"], strict=True))
    missing = {a for row in groups["candidate_asins"] for a in row} - set(prior_of)
    if title_score == "pmi" and missing:
        raise ConfigError(f"title_priors lacks {len(missing)} candidate products (e.g. {sorted(missing)[:3]}): "
                          "recompute it for these items")
    priors = np.array([[prior_of.get(a, 0.0) for a in row] for row in groups["candidate_asins"]])
    offsets = np.stack(groups["offset"].map(np.asarray).to_list()) if offset else np.zeros(priors.shape)
    return priors, offsets


def _summary(history: pd.DataFrame, **fields: Any) -> dict[str, Any]:
    return {**fields, "train_loss": float(history["loss"].mean()) if len(history) else None,
            "final_group_hr1": float(history["group_hr1"].iloc[-1]) if len(history) else None}


def train_group_softmax(base_path: str, groups: pd.DataFrame, title_priors: pd.DataFrame, ft: dict[str, Any],  # noqa: PLR0915
                        title_score: str):
    """Train a LoRA adapter on the training groups; return (TrainedAdapter, loss history)."""
    import torch  # noqa: PLC0415
    from peft import get_peft_model  # noqa: PLC0415
    from tqdm.auto import tqdm  # noqa: PLC0415
    from transformers import get_linear_schedule_with_warmup  # noqa: PLC0415

    from .training import TrainedAdapter, _load_for_backend, resolve_backend, run_key, world  # noqa: PLC0415

    if groups.empty:
        raise ConfigError("fine_tuning.objective: group_softmax has no training groups (build_training_groups)")
    spec = ft["group_softmax"]
    if ft["gradient_checkpointing"]:
        raise ConfigError("fine_tuning.objective: group_softmax shares each history's KV cache with its group, which "
                          "activation checkpointing turns off: set fine_tuning.gradient_checkpointing: false")
    if world()[1] > 1:
        raise ConfigError("fine_tuning.objective: group_softmax trains in one process (no data parallelism yet): run "
                          "it without torchrun / accelerate launch")
    backend = resolve_backend(ft)
    device = resolve_device(ft["device"])
    model, tokenizer, peft_config = _load_for_backend(backend, base_path, ft, device)
    if peft_config is not None:
        model = get_peft_model(model, peft_config)
    priors, offsets = _group_terms(groups, title_priors, title_score, bool(spec["offset"]))
    per_step = int(spec["windows_per_step"])
    steps_per_epoch = math.ceil(len(groups) / per_step)
    total = int(ft.get("max_steps") or math.ceil(float(ft["epochs"]) * steps_per_epoch))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=float(ft["learning_rate"]), weight_decay=float(ft["weight_decay"]))
    scheduler = get_linear_schedule_with_warmup(optimizer, int(float(ft["warmup_ratio"]) * total), total)
    # the checkpoint folder: the data (groups, their offsets and priors) and the settings that change what is learnt;
    # a run stopped by `max_minutes` continues from its checkpoint when run again (`resume`), with any budget
    learnt = {k: v for k, v in ft.items() if k not in {"logging_steps", "save_steps", "resume", "checkpoint_dir"}}
    learnt["group_softmax"] = {k: v for k, v in spec.items() if k != "max_minutes"}
    data = groups.assign(output=[" ".join(a) + repr(np.round(o, 6).tolist()) + repr(np.round(p, 6).tolist())
                                 for a, o, p in zip(groups["candidate_asins"], offsets, priors, strict=True)])
    key = run_key(base_path, data, {**learnt, "title_score": title_score})
    out_dir = Path(ft["checkpoint_dir"]) / f"group-{key}"
    out_dir.mkdir(parents=True, exist_ok=True)
    state_file = out_dir / "state.pt"
    step, rows = _resume(state_file, model, optimizer, scheduler) if ft["resume"] else (0, [])
    order = np.concatenate([np.random.default_rng(int(ft["seed"]) + e).permutation(len(groups))
                            for e in range(math.ceil(total / steps_per_epoch) + 1)])
    tails = AnswerTokens(tokenizer)
    budget = spec["max_minutes"]
    log_every, save_every = int(ft["logging_steps"]), int(ft["save_steps"])
    logger.info("Group-softmax training on %s: %d groups of %d, %d per step, %d steps, title score %s, offset %s",
                device, len(groups), priors.shape[1], per_step, total, title_score, bool(spec["offset"]))
    model.train()
    start, window_loss, window_hit = time.perf_counter(), [], []

    def save() -> None:
        from peft import get_peft_model_state_dict  # noqa: PLC0415

        torch.save({"adapter": get_peft_model_state_dict(model), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "step": step, "history": rows}, state_file)

    bar = tqdm(total=total, initial=step, desc="group softmax")
    stopped = None
    while step < total:
        idx = order[step * per_step:(step + 1) * per_step]
        logits = group_logits(model, tokenizer, tails, groups.iloc[idx], priors[idx], offsets[idx], title_score)
        loss = torch.nn.functional.cross_entropy(logits.float(), torch.zeros(len(idx), dtype=torch.long,
                                                                              device=logits.device))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, float(ft["max_grad_norm"]))
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        bar.update(1)
        window_loss.append(float(loss.detach()))
        window_hit.append(float((logits[:, 0] > logits[:, 1:].max(-1).values).float().mean()))  # ties: a miss
        if step % log_every == 0 or step == total:
            rows.append({"step": step, "epoch": step / steps_per_epoch, "split": "train",
                         "loss": float(np.mean(window_loss)), "group_hr1": float(np.mean(window_hit))})
            bar.set_postfix(loss=round(rows[-1]["loss"], 3), hr1=round(rows[-1]["group_hr1"], 3))
            window_loss, window_hit = [], []
        if step % save_every == 0:
            save()
        if budget is not None and time.perf_counter() - start > 60 * float(budget):
            stopped = f"time budget of {budget} min"
            logger.warning("Group-softmax training stopped after %d of %d steps: %s", step, total, stopped)
            break
    bar.close()
    save()
    seconds = time.perf_counter() - start
    history = pd.DataFrame(rows, columns=["step", "epoch", "split", "loss", "group_hr1"])
    summary = _summary(
        history, objective="group_softmax", backend=backend, target="title", device=device,
        base_model=display_path(base_path), title_score=title_score, groups=len(groups),
        group_size=int(priors.shape[1]), hard_fraction=float(spec["hard_fraction"]),
        offset=bool(spec["offset"]), windows_per_step=per_step,
        learning_rate=float(ft["learning_rate"]), steps=step, planned_steps=total,
        windows_seen=step * per_step, epochs=step / steps_per_epoch, train_seconds=round(seconds, 1),
        seconds_per_step=round(seconds / max(step, 1), 2), stopped_early=stopped,
        checkpoint_dir=display_path(str(out_dir)))
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    logger.info("Group-softmax training done: %s", summary)
    model.eval()
    return TrainedAdapter(model, tokenizer, summary), history
