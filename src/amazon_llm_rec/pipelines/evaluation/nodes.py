"""Nodes of the evaluation pipeline: LLM scoring, baselines, metrics, report, plot, error analysis."""

from __future__ import annotations

import logging
import time
from typing import Any

import pandas as pd

from ...core import baselines, scoring
from ...core.errors import ConfigError
from ...core.metrics import method_metrics
from ...core.models import load_model, load_tokenizer, resolve_device
from ...core.training import completion_text

logger = logging.getLogger(__name__)


def _score_model(name: str, model, tokenizer, prompts: pd.DataFrame, evaluation: dict[str, Any], target: str) -> pd.DataFrame:
    batch = int(evaluation["batch_size"])
    mode = evaluation.get("scoring", "title_likelihood")
    pad = evaluation.get("pad_to_multiple_of")
    start = time.perf_counter()
    if mode == "letter_logits":
        scores = scoring.score_options(model, tokenizer, prompts, batch, desc=f"scoring {name}", pad_to_multiple_of=pad)
    elif mode == "title_likelihood":
        answer = "letter_and_title" if target == "letter_and_title" else "title"
        scores = scoring.score_titles(model, tokenizer, prompts, batch, desc=f"scoring {name}", target=answer,
                                      pad_to_multiple_of=pad)
    else:
        raise ConfigError(f"evaluation.scoring must be 'title_likelihood' or 'letter_logits', got {mode!r}")
    seconds = time.perf_counter() - start
    answers = None
    cap = evaluation.get("exact_match_max_prompts")
    if cap != 0:
        subset = prompts if cap is None else prompts.iloc[: int(cap)]
        generated = scoring.generate_answers(model, tokenizer, subset, int(evaluation["max_new_tokens"]), batch,
                                             desc=f"generating {name}")
        answers = generated + [None] * (len(prompts) - len(subset))
    logger.info("%s: scored %d prompts (%s) in %.1f s (%.1f prompts/s)", name, len(prompts), mode, seconds, len(prompts) / seconds)
    expected = completion_text(prompts, target)
    return scoring.predictions_frame(name, prompts, scores, answers, {"score_seconds": seconds, "scoring": mode},
                                     expected=expected)


def score_llms(test_prompts: pd.DataFrame, base_model: str, lora_adapter: str, training_summary: dict[str, Any],
               evaluation: dict[str, Any]) -> pd.DataFrame:
    """Score the test prompts with the base model zero-shot, then with the fine-tuned adapter."""
    from peft import PeftModel  # noqa: PLC0415

    device = resolve_device(evaluation.get("device", "auto"))
    dtype = "bfloat16" if evaluation.get("bf16", True) else "float32"
    tokenizer = load_tokenizer(lora_adapter)
    model = load_model(base_model, dtype, quantization=evaluation.get("quantization"), device=device)
    target = training_summary.get("target", "letter_and_title")
    frames = [_score_model("zero_shot", model, tokenizer, test_prompts, evaluation, target)]
    tuned = PeftModel.from_pretrained(model, lora_adapter)
    frames.append(_score_model("fine_tuned", tuned, tokenizer, test_prompts, evaluation, target))
    return pd.concat(frames, ignore_index=True)


def export_merged_model(validation_prompts: pd.DataFrame, base_model: str, lora_adapter: str,
                        training_summary: dict[str, Any], evaluation: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """Optionally merge the adapter into a 16-bit model; re-check validation accuracy and say if it dropped."""
    from peft import PeftModel

    from ...core.training import TrainedAdapter

    if not evaluation.get("export_merged", False):
        return TrainedAdapter(None, None), {"exported": False}
    device = resolve_device(evaluation.get("device", "auto"))
    target = training_summary.get("target", "letter_and_title")
    tokenizer = load_tokenizer(lora_adapter)
    tuned = PeftModel.from_pretrained(load_model(base_model, "bfloat16", device=device), lora_adapter)

    def accuracy(model) -> float:
        preds = _score_model("check", model, tokenizer, validation_prompts, {**evaluation, "exact_match_max_prompts": 0}, target)
        return float((preds["predicted_letter"] == preds["correct_letter"]).mean())

    before = accuracy(tuned)
    merged = tuned.merge_and_unload()
    after = accuracy(merged)
    tolerance = float(evaluation.get("merge_tolerance", 0.01))
    report = {"exported": True, "dtype": "bfloat16", "validation_prompts": len(validation_prompts),
              "accuracy_adapter": before, "accuracy_merged": after, "dropped": after < before - tolerance}
    if report["dropped"]:
        logger.warning("Merged 16-bit model: validation accuracy dropped from %.3f to %.3f", before, after)
    else:
        logger.info("Merged 16-bit model: validation accuracy %.3f (adapter %.3f)", after, before)
    return TrainedAdapter(merged, tokenizer, report), report


def score_baseline_methods(test_prompts: pd.DataFrame, reviewer_sequences: pd.DataFrame, evaluation: dict[str, Any]) -> pd.DataFrame:
    """Score random, popularity and co-occurrence baselines on the same candidates."""
    scores = baselines.score_baselines(test_prompts, reviewer_sequences, evaluation)
    return pd.concat(
        [scoring.predictions_frame(name, test_prompts, s) for name, s in scores.items()], ignore_index=True
    )


def compute_metrics(llm_predictions: pd.DataFrame, baseline_predictions: pd.DataFrame,
                    training_summary: dict[str, Any], evaluation: dict[str, Any]) -> dict[str, Any]:
    """Compute every method's metrics on the same test prompts, with bootstrap intervals."""
    preds = pd.concat([baseline_predictions, llm_predictions], ignore_index=True)
    samples, seed = int(evaluation.get("bootstrap_samples", 1000)), int(evaluation.get("seed", 0))
    methods = {name: method_metrics(part, samples, seed) for name, part in preds.groupby("method", sort=False)}
    result = {
        "test_prompts": int(llm_predictions["reviewer_id"].size // llm_predictions["method"].nunique()),
        "num_options": int(preds["num_options"].iloc[0]),
        "scoring": str(llm_predictions["scoring"].iloc[0]),
        "methods": methods,
        "training": training_summary,
    }
    for name, m in methods.items():
        logger.info("%-12s accuracy %.3f  MRR %.3f  F1 %.3f", name, m["accuracy"], m["mrr"], m["f1_weighted"])
    return result


def render_report(metrics: dict[str, Any]) -> str:
    """Render the metrics as a Markdown table."""
    cols = ["accuracy", "precision_weighted", "recall_weighted", "f1_weighted", "mrr", "exact_match"]
    first = next(iter(metrics["methods"].values()))
    cols[5:5] = [c for c in ("hr@5", "ndcg@5", "hr@10", "ndcg@10") if c in first]
    lines = [
        f"# Evaluation on {metrics['test_prompts']} test prompts, {metrics['num_options']} options each",
        "",
        "| method | " + " | ".join(cols) + " |",
        "|---|" + "---|" * len(cols),
    ]
    for name, m in metrics["methods"].items():
        cells = [_cell(m, c) for c in cols]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    t = metrics.get("training", {})
    lines += ["", f"Fine-tuned: backend {t.get('backend')}, {t.get('train_prompts')} training prompts, "
              f"{t.get('steps')} steps ({t.get('epochs', 0):.2f} epochs) in {t.get('train_seconds')} s on {t.get('device')}.",
              f"LLM prediction: the option with the highest score ({metrics.get('scoring')}: "
              "title_likelihood = mean log-probability of the option's answer tokens; letter_logits = "
              "next-token probability of the option letter).",
              "Exact match: greedy generation equals the answer the model was trained to write (the paper's metric), "
              "on the first `exact_match_max_prompts` test prompts. Brackets: 95% bootstrap intervals over test prompts.", ""]
    return "\n".join(lines)


def _cell(m: dict[str, Any], col: str) -> str:
    if m.get(col) is None:
        return "n/a"
    ci = m.get("ci95", {}).get(col)
    return f"{m[col]:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else f"{m[col]:.3f}"


def plot_metrics(metrics: dict[str, Any]):
    """Bar chart of accuracy and MRR per method."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415

    names = list(metrics["methods"])
    acc = [metrics["methods"][n]["accuracy"] for n in names]
    mrr = [metrics["methods"][n]["mrr"] for n in names]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(8, 4))
    def err(key: str, values: list[float]) -> np.ndarray | None:
        cis = [metrics["methods"][n].get("ci95", {}).get(key) for n in names]
        if any(c is None for c in cis):
            return None
        return np.array([[v - c[0] for v, c in zip(values, cis, strict=True)], [c[1] - v for v, c in zip(values, cis, strict=True)]])

    ax.bar(x - 0.2, acc, 0.4, yerr=err("accuracy", acc), capsize=3, label="accuracy (HR@1), 95% CI")
    ax.bar(x + 0.2, mrr, 0.4, yerr=err("mrr", mrr), capsize=3, label="MRR")
    ax.axhline(1 / metrics["num_options"], color="grey", ls="--", lw=1, label="chance")
    ax.set_xticks(x, names, rotation=15)
    ax.set_ylim(0, 1)
    ax.set_title(f"{metrics['test_prompts']} test prompts, {metrics['num_options']} options")
    ax.legend()
    fig.tight_layout()
    return fig


def error_analysis(llm_predictions: pd.DataFrame, test_prompts: pd.DataFrame) -> pd.DataFrame:
    """List the fine-tuned model's wrong predictions with the prompt, the prediction and the truth."""
    tuned = llm_predictions[llm_predictions["method"] == "fine_tuned"].reset_index(drop=True)
    wrong = tuned["predicted_letter"] != tuned["correct_letter"]
    options = scoring.option_lines(test_prompts)
    pred_text = [next((o for o in opts if o.startswith(f"{p})")), p) for opts, p in zip(options, tuned["predicted_letter"], strict=True)]
    out = pd.DataFrame(
        {
            "reviewer_id": tuned["reviewer_id"],
            "prompt": test_prompts["input"],
            "prediction": pred_text,
            "truth": test_prompts["output"],
            "truth_rank": tuned["truth_rank"],
            "generated": tuned["generated"],
        }
    )
    return out[wrong.to_numpy()].reset_index(drop=True)
