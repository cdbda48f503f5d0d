"""The study's protocol (categories mixed, random 80/10/10 split, uniform negatives from the mixed catalogue)
against the honest one (one category, leave-last-out), side by side, with the cheap baselines.

    python benchmarks/paper_protocol.py [--data ../shared/data/amazon2018] [--out benchmarks/reported/paper_protocol]

Both protocols run the project's own data_processing and prompt_engineering nodes in memory (nothing is written
to data/), with conf/base's settings and conf/paper's `raw.category` list; then popularity, co-occurrence, BM25
and the fusion without the LLM (fitted on each protocol's own validation prompts) score the test prompts.
It shows why the study's 0.989 is not comparable with the single-category leave-last-out figures.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd
import yaml
from in_memory import items_and_sequences

from amazon_llm_rec.core.metrics import method_metrics
from amazon_llm_rec.pipelines.evaluation import nodes as ev
from amazon_llm_rec.pipelines.prompt_engineering import nodes as pe

ROOT = Path(__file__).resolve().parents[1]
BASELINES = ["random", "popularity", "cooccurrence", "bm25"]
FEATURES = ["cooccurrence", "cooccurrence_all", "popularity", "bm25"]


def _params(name: str) -> dict:
    return yaml.safe_load((ROOT / "conf" / "base" / f"parameters_{name}.yml").read_text())


def _prompts(raw: dict, prompts: dict) -> tuple[pd.DataFrame, ...]:
    items, sequences = items_and_sequences(raw, _params("data_processing")["processing"])
    windows = pe.build_windows(sequences, prompts)
    rendered = pe.render_prompts(pe.sample_candidates(windows, sequences, prompts, items), items, prompts)
    _, validation, test = pe.split_prompts(rendered)
    return sequences, items, validation, test


def run(raw: dict, prompts: dict, label: str) -> dict:
    start = time.perf_counter()
    sequences, items, validation, test = _prompts(raw, prompts)
    params = {"seed": 42, "baselines": BASELINES, "cooccurrence_window": 0, "bootstrap_samples": 1000,
              "fusion": {"features": FEATURES, "l2": 1e-3, "recommended": "fusion_no_llm"}}
    test_ev, val_ev = (ev.fit_evidence(p, sequences, items, params) for p in (test, validation))
    base = ev.score_baseline_methods(test, sequences, test_ev, params)
    model = ev.fit_fusion(ev.candidate_features(validation, sequences, val_ev, params), pd.DataFrame(), params)
    fused = ev.score_fusion(ev.candidate_features(test, sequences, test_ev, params), pd.DataFrame(), test, model)
    out = {"protocol": label, "reviewers": int(sequences.shape[0]), "products": int(items.shape[0]),
           "test_prompts": len(test), "seconds": round(time.perf_counter() - start, 1), "hr1": {}}
    for method, preds in pd.concat([base, fused], ignore_index=True).groupby("method", sort=False):
        m = method_metrics(preds, 1000, 0)
        out["hr1"][method] = [round(m["accuracy"], 3), *(round(v, 3) for v in m["ci95"]["accuracy"])]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT / ".." / "shared" / "data" / "amazon2018"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "reported" / "paper_protocol"))
    args = parser.parse_args()
    raw = {**_params("data_processing")["raw"], "data_dir": args.data}
    paper_categories = yaml.safe_load((ROOT / "conf" / "paper" / "parameters_data_processing.yml").read_text())["raw"]["category"]
    prompts = _params("prompt_engineering")["prompts"]
    caps = {"max_train_prompts": None, "max_validation_prompts": 2000, "max_test_prompts": 2000}
    rows = [
        run({**raw, "category": paper_categories}, {**prompts, **caps, "split": "paper_random"},
            f"study: {' + '.join(paper_categories)} mixed, random 80/10/10 split, 4 uniform candidates"),
        run({**raw, "category": "Industrial_and_Scientific"}, {**prompts, **caps, "split": "leave_last_out"},
            "honest: Industrial_and_Scientific, leave-last-out, 4 uniform candidates"),
    ]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "paper_protocol.json").write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "rows": rows}, indent=2))
    methods = list(rows[0]["hr1"])
    lines = ["| protocol | test prompts | " + " | ".join(methods) + " |", "|---|---|" + "---|" * len(methods)]
    for r in rows:
        lines.append(f"| {r['protocol']} | {r['test_prompts']} | "
                     + " | ".join(f"{v[0]:.3f} [{v[1]:.3f}, {v[2]:.3f}]" for v in (r["hr1"][m] for m in methods)) + " |")
    (out / "paper_protocol.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
