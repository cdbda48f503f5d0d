"""Keep the outputs of a quality run (`kedro run --env=industrial`) under benchmarks/reported/quality/.

    python benchmarks/keep_quality_run.py [--project .] [--out benchmarks/reported/quality] [--log run.log ...]

Copies the report, metrics, summary.json, the fitted fusion weights, the training summary and the plots, and
the run logs given with --log, so that the README's figures can be checked against the files they came from.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

FILES = ("data/08_reporting/report.md", "data/08_reporting/metrics.json", "data/08_reporting/summary.json",
         "data/08_reporting/metrics.png", "data/08_reporting/position_bias.png", "data/08_reporting/loss_curves.png",
         "data/08_reporting/split_leakage.json", "data/08_reporting/data_processing_counts.json",
         "data/06_models/fusion_model.json", "data/07_model_output/training_summary.json")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", default=".")
    parser.add_argument("--out", default="benchmarks/reported/quality")
    parser.add_argument("--log", action="append", default=[], help="a run log to keep (repeatable)")
    args = parser.parse_args()
    project, out = Path(args.project), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    missing = [f for f in FILES if not (project / f).is_file()]
    if missing:
        raise SystemExit(f"missing outputs (run `kedro run --env=industrial` first): {missing}")
    for f in FILES:
        shutil.copy(project / f, out / Path(f).name)
    for log in args.log:
        shutil.copy(log, out / Path(log).name)
    summary = json.loads((out / "summary.json").read_text())
    for name, p in summary["protocols"].items():
        worst = min(p["vs"].items(), key=lambda kv: kv[1]["lo"])
        print(f"{name}: {p['method']} HR@1 {p['hr1']:.3f} on {p['reviewers']} reviewers; smallest lower bound vs "
              f"{worst[0]}: {worst[1]['diff']:+.3f} [{worst[1]['lo']:+.3f}, {worst[1]['hi']:+.3f}]")
    print(f"kept in {out}")


if __name__ == "__main__":
    main()
