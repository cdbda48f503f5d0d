"""The GPU benchmark's CPU dry run: the project's node, the bitsandbytes backend and the scoring path,
with a tiny model, on prompts made by the project's own pipelines."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_benchmark_dry_run_on_cpu(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import prepare_gpu_assets
    finally:
        sys.path.pop(0)
    prepare_gpu_assets.main(str(tmp_path / "assets"), num_negatives=3, reviewers=150)
    info = json.loads((tmp_path / "assets" / "info.json").read_text())
    assert info["options"] == 4 and info["train"] > 0
    out = tmp_path / "out"
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_benchmark.py"), "--assets", str(tmp_path / "assets"),
                    "--out", str(out), "--dry-run", "--stages", "bnb"], check=True, capture_output=True, timeout=900)
    result = json.loads((out / "gpu_benchmark.json").read_text())
    rows = result["rows"]
    assert not [r for r in rows if "error" in r]
    train = [r for r in rows if r["what"] == "train"]
    assert train[0]["setup"] == "project node, backend=qlora_bnb" and train[0]["real_tokens_per_second"] > 0
    assert any(r["what"] == "score" and r["prompts_per_second"] > 0 for r in rows)
    assert "| train | project node, backend=qlora_bnb |" in (out / "gpu_benchmark.md").read_text()
