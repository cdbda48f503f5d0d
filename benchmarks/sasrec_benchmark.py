"""SASRec before and after: the paper's BCE for all epochs against a softmax loss stopped on validation HR@1.

Both train on the same data cuts the evaluation uses and are scored as the evaluation scores them: HR@1 among the
default protocol's candidates (the true next product and `num_negatives` uniform never-bought ones), on every
validation window (the SASRec trained on the validation cut, the figure a setting is chosen by) and on every test
window (the SASRec trained on the test cut, the figure reported). Run after `kedro run --env=<env>
--pipeline=data_processing`:

    python benchmarks/sasrec_benchmark.py --env industrial --out benchmarks/reported/sasrec

Prints epochs, best epoch, seconds and HR@1 [95% CI] per variant and window set, and after minus before, paired.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from retrieval_recall import project_params  # noqa: E402

VARIANTS = {  # before: conf/base until 2026-12-01; after: the softmax loss stopped on validation HR@1 (conf/base since)
    "before (bce, all epochs)": {"loss": "bce", "softmax_negatives": None, "patience": None},
    "after (softmax, stopped on validation HR@1)": {"loss": "softmax", "softmax_negatives": None, "patience": 5},
    # a 4x batch with the learning rate scaled by sqrt(4): fewer, larger steps an epoch (kept only if validation says so)
    "after, batch 512, lr 2e-3": {"loss": "softmax", "softmax_negatives": None, "patience": 5, "batch_size": 512,
                                  "learning_rate": 2e-3},
}


def hits(fitted, windows: pd.DataFrame, prefixes: list[list[str]]) -> np.ndarray:
    """1 where the true product scores above every other candidate (ties count against it)."""
    scores = fitted.score(prefixes, [list(c) for c in windows["candidate_asins"]])
    truth = np.array([list(c).index(t) for c, t in zip(windows["candidate_asins"], windows["target_asin"], strict=True)])
    top = scores[np.arange(len(scores)), truth]
    others = np.where(np.arange(scores.shape[1])[None, :] == truth[:, None], -np.inf, scores)
    return (top > others.max(axis=1)).astype(float)


def main() -> None:
    from amazon_llm_rec.core.metrics import bootstrap_interval, paired_bootstrap
    from amazon_llm_rec.core.rank import baselines
    from amazon_llm_rec.core.rank.fusion import prefixes_of
    from amazon_llm_rec.core.rank.sasrec import SASRecConfig, fit_sasrec
    from amazon_llm_rec.pipelines.prompt_engineering.nodes import build_windows, sample_candidates

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="industrial")
    parser.add_argument("--data", default=str(ROOT / "data"))
    parser.add_argument("--out", default=None)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--max-minutes", type=float, default=None,
                        help="a time budget a fit for every variant (default: evaluation.sasrec.max_minutes of --env)")
    parser.add_argument("--skip-larger-batch", action="store_true",
                        help="run only before and after (the batch-512 variant doubles the time)")
    args = parser.parse_args()
    chosen = dict(list(VARIANTS.items())[:2] if args.skip_larger_batch else VARIANTS)
    params = project_params(args.env)
    seqs = pd.read_parquet(Path(args.data) / "04_feature/reviewer_sequences.parquet")
    prompts = {**params["prompts"], "max_train_prompts": 0, "max_validation_prompts": None, "max_test_prompts": None}
    windows = build_windows(seqs, prompts)
    sets = {split: sample_candidates(windows[windows["split"] == split].reset_index(drop=True), seqs, prompts)
            for split in ("validation", "test")}
    base = params["evaluation"]["sasrec"]
    if args.max_minutes is not None:
        base = {**base, "max_minutes": args.max_minutes}
    rows, per = [], {}
    for variant, overrides in chosen.items():
        cfg = SASRecConfig.from_params({**base, **overrides})
        for split, part in sets.items():
            start = time.perf_counter()
            fitted = fit_sasrec(baselines.fit_sequences(seqs, part), cfg, progress=False)
            h = hits(fitted, part, prefixes_of(part, seqs))
            per[(variant, split)] = h
            rows.append({"variant": variant, "windows": split, "n": len(part), "epochs": len(fitted.losses),
                         "best_epoch": fitted.best_epoch, "seconds": round(time.perf_counter() - start, 1),
                         "hr1": round(float(h.mean()), 4),
                         "hr1_ci95": [round(x, 4) for x in bootstrap_interval(h, args.samples, 0)]})
            print(json.dumps(rows[-1]), flush=True)
    before, after, larger = VARIANTS
    paired = {split: paired_bootstrap(per[(after, split)], per[(before, split)], sets[split]["reviewer_id"].to_numpy(),
                                      args.samples, 0) for split in sets}
    larger_minus_after = {split: paired_bootstrap(per[(larger, split)], per[(after, split)],
                                                  sets[split]["reviewer_id"].to_numpy(), args.samples, 0)
                          for split in sets if (larger, split) in per}
    result = {"date": date.today().isoformat(), "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}",
              "env": args.env, "reviewers": len(seqs), "sasrec": base, "variants": chosen, "rows": rows,
              "after_minus_before": paired, "larger_batch_minus_after": larger_minus_after}
    print("\n| variant | windows | epochs (best) | seconds | HR@1 [95% CI] |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['variant']} | {r['windows']} ({r['n']:,}) | {r['epochs']} ({r['best_epoch']}) | {r['seconds']} | "
              f"{r['hr1']:.3f} [{r['hr1_ci95'][0]:.3f}, {r['hr1_ci95'][1]:.3f}] |")
    for name, diffs in (("after minus before", paired), ("batch 512 minus after", larger_minus_after)):
        for split, d in diffs.items():
            print(f"{name}, {split}: {d['diff']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}]")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"sasrec_{args.env}.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
