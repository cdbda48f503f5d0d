"""CPU benchmark: training throughput of the project's fine-tuning node against the plain TRL recipe,
measured side by side in one run on the real SmolLM2-135M; optionally the whole default run.

    python benchmarks/cpu_benchmark.py            # throughput (a few minutes on 2 cores)
    python benchmarks/cpu_benchmark.py --e2e      # plus `kedro run` end to end in a fresh project copy

Ours: answer-only loss (LM head on answer positions), bf16 autocast, LoRA dropout 0.
Baseline: TRL's SFTTrainer as documented for CPU (SFTConfig(use_cpu=True, bf16=False)), its default
loss, LoRA dropout 0.05. Same prompts, same batches, same steps. Real (non-padding) tokens/s are
timed after warm-up steps.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _prompts(tmp: str):
    from in_memory import items_and_sequences

    from amazon_llm_rec.pipelines.prompt_engineering import nodes as pe

    params = yaml.safe_load((ROOT / "conf/base/parameters_data_processing.yml").read_text())
    prompts = yaml.safe_load((ROOT / "conf/base/parameters_prompt_engineering.yml").read_text())["prompts"]
    raw = {**params["raw"], "data_dir": tmp}
    items, seq = items_and_sequences(raw, params["processing"])
    windows = pe.build_windows(seq, prompts)
    return pe.split_prompts(pe.render_prompts(pe.sample_candidates(windows, seq, prompts), items, prompts))


def throughput(steps: int) -> list[dict]:
    """Train the real SmolLM2 for `steps` steps with our settings and with the plain TRL recipe."""
    from amazon_llm_rec.core.llm.models import materialize_base_model
    from amazon_llm_rec.pipelines.fine_tuning.nodes import fine_tune

    base = materialize_base_model("smollm2-135m-instruct", str(ROOT / "data/06_models/base_model"))["path"]
    ft = yaml.safe_load((ROOT / "conf/base/parameters_fine_tuning.yml").read_text())["fine_tuning"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        train, val, _ = _prompts(tmp)
        train = train.iloc[: ft["batch_size"] * steps]
        setups = {
            "ours: answer-only loss, bf16 autocast, dropout 0": {},
            "baseline: TRL SFTTrainer default loss, fp32, dropout 0.05": {
                "loss": "trl", "bf16": False, "lora": {**ft["lora"], "dropout": 0.05}},
        }
        for name, over in setups.items():
            params = {**ft, **over, "max_steps": steps, "eval_steps": None, "save_steps": 100_000, "resume": False,
                      "checkpoint_dir": f"{tmp}/ckpt", "throughput_warmup_steps": 2, "logging_steps": 1}
            _, _, s = fine_tune(base, train, val.iloc[:8], None, None, params, {})
            rows.append({"setup": name, "real_tokens_per_second": s["real_tokens_per_second"],
                         "samples_per_second": s["samples_per_second"], "seconds_per_step": s["seconds_per_step"],
                         "measured_steps": s["measured_steps"]})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def end_to_end() -> dict:
    """Run `kedro run` on the embedded default in a fresh copy of the project; return its wall time."""
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp) / "project"
        project.mkdir()
        for name in ("conf", "src", "notebooks"):
            shutil.copytree(ROOT / name, project / name, ignore=shutil.ignore_patterns("__pycache__", "local"))
        (project / "conf" / "local").mkdir()
        for name in ("pyproject.toml", ".telemetry"):
            shutil.copy(ROOT / name, project / name)
        start = time.perf_counter()
        kedro = Path(sys.executable).with_name("kedro")
        subprocess.run([str(kedro if kedro.exists() else shutil.which("kedro")), "run"], cwd=project, check=True,
                       env={**os.environ, "KEDRO_DISABLE_TELEMETRY": "true"}, stdout=subprocess.DEVNULL)
        seconds = time.perf_counter() - start
        metrics = json.loads((project / "data/08_reporting/metrics.json").read_text())
    return {"seconds": round(seconds, 1), "accuracy": {k: round(v["accuracy"], 3) for k, v in metrics["methods"].items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--e2e", action="store_true", help="also time `kedro run` end to end")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args()
    result = {"date": str(date.today()), "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
              "throughput": throughput(args.steps)}
    lines = [f"CPU benchmark, {result['date']}, {result['machine']}, SmolLM2-135M, batch 8", "",
             "| setup | real tokens/s | samples/s | s/step |", "|---|---|---|---|"]
    lines += [f"| {r['setup']} | {r['real_tokens_per_second']:,} | {r['samples_per_second']} | {r['seconds_per_step']} |"
              for r in result["throughput"]]
    ours, base = (r["real_tokens_per_second"] for r in result["throughput"])
    lines.append(f"\nOurs / baseline: {ours / base:.2f}x")
    if args.e2e:
        result["end_to_end"] = end_to_end()
        lines.append(f"\n`kedro run` end to end (embedded default, from raw files to report): {result['end_to_end']['seconds']} s; "
                     f"HR@1 {result['end_to_end']['accuracy']}")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    Path(args.out, "cpu_benchmark.json").write_text(json.dumps(result, indent=2))
    Path(args.out, "cpu_benchmark.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
