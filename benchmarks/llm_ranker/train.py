"""Train the group-softmax LoRA on stored Industrial prompts with the project's own nodes (CPU-sized run).

    python benchmarks/llm_ranker/train.py --data /work/ind --priors benchmarks/reported/llm_ranker/title_priors.parquet \
        --out benchmarks/reported/llm_ranker --adapter /work/ind/adapter_group --env industrial

Groups: `build_training_groups` (prompt_engineering); training: `train_group_softmax` (core.group_training), with
the parameters of conf/<env> and the overrides below. Writes the adapter, groups, loss history and summary.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import pandas as pd
from kedro.config import OmegaConfigLoader

from amazon_llm_rec.core.llm.group_training import train_group_softmax
from amazon_llm_rec.pipelines.prompt_engineering.nodes import build_training_groups
from amazon_llm_rec.settings import CONFIG_LOADER_ARGS

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--priors", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--adapter", required=True)
    ap.add_argument("--env", default="industrial")
    ap.add_argument("--base", default="data/06_models/base_model")
    ap.add_argument("--max-groups", type=int, default=None)
    ap.add_argument("--max-minutes", type=float, default=None)
    a = ap.parse_args()
    params = OmegaConfigLoader("conf", **{**CONFIG_LOADER_ARGS, "default_run_env": a.env})["parameters"]
    ft = {**params["fine_tuning"], "objective": "group_softmax"}
    ft["group_softmax"] = {**ft["group_softmax"], **({"max_groups": a.max_groups} if a.max_groups else {}),
                           **({"max_minutes": a.max_minutes} if a.max_minutes else {})}
    ft["checkpoint_dir"] = str(Path(a.data) / "checkpoints")
    d = Path(a.data)
    read = lambda p: pd.read_parquet(d / p)  # noqa: E731
    groups = build_training_groups(read("05_model_input/train_prompts.parquet"),
                                   read("05_model_input/validation_prompts.parquet"),
                                   read("05_model_input/test_prompts.parquet"),
                                   read("04_feature/reviewer_sequences.parquet"), read("03_primary/items.parquet"),
                                   params["prompts"], ft, params["evaluation"])
    out = Path(a.out)
    groups.to_parquet(d / "training_groups.parquet")
    adapter, history = train_group_softmax(a.base, groups, pd.read_parquet(a.priors), ft,
                                           params["evaluation"]["title_score"])
    adapter.model.save_pretrained(a.adapter)
    adapter.tokenizer.save_pretrained(a.adapter)
    history.to_csv(out / "group_softmax_loss.csv", index=False)
    (out / "group_softmax_training.json").write_text(json.dumps({**adapter.summary, "settings": ft}, indent=2,
                                                                default=str))


if __name__ == "__main__":
    main()
