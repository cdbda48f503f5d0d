"""HR@1 against the number of training examples: score every saved checkpoint of one fine-tuning run.

    python benchmarks/training_curve.py PROJECT_DIR [--protocol NAME] [--steps 50,100,200] [--out DIR]

PROJECT_DIR is a project folder after `kedro run` with `fine_tuning.save_total_limit` large enough to
keep the checkpoints (e.g. `--params fine_tuning.save_steps=50,fine_tuning.save_total_limit=100`). Each
checkpoint-N holds the adapter after N steps, i.e. N x batch_size x accumulation training examples,
of one run whose learning rate decays over the whole run (not separate runs per size). The zero-shot
base model is the 0-example point. Every point is scored on the same stored test prompts of one
protocol (the trained one by default), with the evaluation node's scoring and 95% bootstrap intervals.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import time
from datetime import date
from pathlib import Path

import pandas as pd
import yaml


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("project", type=Path)
    parser.add_argument("--protocol", default=None, help="protocol name (default: the first, the trained one)")
    parser.add_argument("--steps", default=None, help="comma-separated checkpoint steps to score (default: all)")
    parser.add_argument("--out", type=Path, default=None, help="default: PROJECT/data/08_reporting")
    args = parser.parse_args()

    from peft import PeftModel

    from amazon_llm_rec.core.llm.models import load_model, load_tokenizer, use_bf16
    from amazon_llm_rec.core.metrics import method_metrics
    from amazon_llm_rec.pipelines.evaluation.nodes import _by_protocol, _score_model

    root = args.project.resolve()
    out = args.out or root / "data/08_reporting"
    summary = json.loads((root / "data/07_model_output/training_summary.json").read_text())
    ev = yaml.safe_load((root / "conf/base/parameters_evaluation.yml").read_text())["evaluation"]
    ev = {**ev, "exact_match_max_prompts": 0, "permutation_average": False}
    protocols = dict(_by_protocol(pd.read_parquet(root / "data/05_model_input/test_protocol_prompts.parquet")))
    name = args.protocol or next(iter(protocols))
    prompts = protocols[name]
    ckpt_dir = Path(summary["checkpoint_dir"])
    ckpt_dir = ckpt_dir if ckpt_dir.is_absolute() else root / ckpt_dir
    ckpts = sorted(ckpt_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    if args.steps:
        wanted = {int(x) for x in args.steps.split(",")}
        ckpts = [c for c in ckpts if int(c.name.split("-")[1]) in wanted]
    per_step = int(summary.get("batch_size", 8)) * int(summary.get("gradient_accumulation_steps", 1))
    base = str(root / "data/06_models/base_model")
    tokenizer = load_tokenizer(str(ckpts[-1]) if ckpts else base)
    model = load_model(base, "bfloat16" if use_bf16(ev.get("bf16", "auto"), "cpu") else "float32", device="cpu")
    rows = []

    def add(label: str, examples: int, m) -> None:
        start = time.perf_counter()
        preds = _score_model(label, m, tokenizer, prompts, ev, summary.get("target", "title"), generate=False)
        metrics = method_metrics(preds, int(ev.get("bootstrap_samples", 1000)), int(ev.get("seed", 0)))
        rows.append({"checkpoint": label, "training_examples": examples, "hr@1": round(metrics["accuracy"], 3),
                     "ci95": [round(x, 3) for x in metrics["ci95"]["accuracy"]], "mrr": round(metrics["mrr"], 3),
                     "score_seconds": round(time.perf_counter() - start, 1)})
        print(rows[-1], flush=True)

    add("zero_shot", 0, model)
    for ckpt in ckpts:
        steps = int(re.sub(r"\D", "", ckpt.name))
        tuned = PeftModel.from_pretrained(model, str(ckpt))
        add(ckpt.name, steps * per_step, tuned)
        model = tuned.unload()
    result = {"date": date.today().isoformat(), "machine": f"{platform.machine()}, CPU", "protocol": name,
              "test_prompts": len(prompts), "num_options": len(prompts["candidate_asins"].iloc[0]),
              "scoring": ev.get("scoring"), "training": {k: summary.get(k) for k in
                                                          ("base_model", "train_prompts", "steps", "train_seconds",
                                                           "learning_rate", "batch_size")},
              "points": rows}
    out.mkdir(parents=True, exist_ok=True)
    (out / "training_curve.json").write_text(json.dumps(result, indent=2))
    _plot(result, out / "training_curve.png")
    print(json.dumps(result, indent=2))


def _plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = result["points"]
    x = [p["training_examples"] for p in pts]
    y = [p["hr@1"] for p in pts]
    err = [[p["hr@1"] - p["ci95"][0] for p in pts], [p["ci95"][1] - p["hr@1"] for p in pts]]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.errorbar(x, y, yerr=err, fmt="-o", capsize=3, label="fine-tuned checkpoints (0 = zero-shot)")
    ax.axhline(1 / result["num_options"], color="grey", ls="--", lw=1, label="chance")
    ax.set_xlabel("training examples seen")
    ax.set_ylabel("HR@1 (95% CI)")
    ax.set_title(f"{result['protocol']}: {result['test_prompts']} test prompts")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
