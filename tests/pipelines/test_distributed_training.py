"""The fine_tuning node under `torchrun` in 2 CPU processes (gloo): data parallel, one adapter, which loads and scores."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.slow


def test_fine_tune_node_trains_data_parallel_in_two_cpu_processes(ran_project, tmp_path, tiny_llama):
    from peft import PeftModel

    from amazon_llm_rec.core.llm.models import load_model, load_tokenizer
    from amazon_llm_rec.core.llm.scoring import score_titles

    project = tmp_path / "project"
    shutil.copytree(ran_project, project)
    adapters = project / "data" / "06_models" / "lora_adapter"
    before = set(os.listdir(adapters))
    params = (f"model.name={tiny_llama},fine_tuning.max_steps=3,fine_tuning.batch_size=2,fine_tuning.eval_steps=3,"
              "fine_tuning.save_steps=3,fine_tuning.logging_steps=1,fine_tuning.bf16=false")
    cmd = [str(Path(sys.executable).with_name("torchrun")), "--standalone", "--nproc_per_node=2",
           "-m", "kedro", "run", "--pipeline=fine_tuning", "--nodes=fine_tune", "--params", params]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "KEDRO_DISABLE_TELEMETRY": "true"}
    done = subprocess.run(cmd, cwd=project, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    summary = json.loads((project / "data" / "07_model_output" / "training_summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 3
    # 3 steps of 2 examples on each process (the loader may fetch one batch ahead)
    assert all(6 <= n <= 8 for n in summary["examples_by_rank"]), summary["examples_by_rank"]
    assert summary["examples_on_several_ranks"] == 0  # the two processes saw different prompts
    record = Path(summary["checkpoint_dir"]) / "data_parallel"
    if not record.is_absolute():
        record = project / record
    ranks = [set(json.loads((record / f"rank-{r}.json").read_text())["examples"]) for r in (0, 1)]
    assert ranks[0] and ranks[1] and not ranks[0] & ranks[1]

    new = set(os.listdir(adapters)) - before
    assert len(new) == 1, f"one adapter version expected, got {sorted(new)}"  # rank 1 saved nothing
    adapter = next(p for p in (adapters / new.pop()).iterdir() if p.is_dir())
    model = PeftModel.from_pretrained(load_model(tiny_llama, "float32", device="cpu"), str(adapter))
    prompts = pd.read_parquet(project / "data" / "05_model_input" / "validation_prompts.parquet").head(2)
    scores = score_titles(model, load_tokenizer(str(adapter)), prompts, batch_size=2)
    assert scores.shape == (2, len(prompts["candidate_asins"].iloc[0])) and np.isfinite(scores).all()
