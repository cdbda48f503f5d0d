"""Prepare what the GPU benchmark needs, on this (CPU) machine: prompts made by the project's own
data_processing and prompt_engineering nodes, and the embedded SmolLM2 tokenizer.

    python benchmarks/prepare_gpu_assets.py .gpubench

The GPU machine has no network, no model weights and no Kedro; the benchmark builds its models from
configs (random weights) and reads these files.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from in_memory import items_and_sequences
from transformers import AutoTokenizer

from amazon_llm_rec.core.llm.models import builtin_gguf, prepare_tokenizer, render_prompt
from amazon_llm_rec.pipelines.prompt_engineering import nodes as pe


def main(out: str, num_negatives: int = 14, reviewers: int = 2500) -> None:
    """Write train/validation/test prompts (~256 tokens each) and a tokenizer under `out`."""
    dest = Path(out)
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        raw = {"data_dir": tmp, "category": "Synthetic_Bench", "reviews_file": "{category}_5.json.gz",
               "meta_file": "meta_{category}.json.gz", "on_bad_lines": "skip",
               "synthetic": {"category": "Synthetic_Bench", "num_reviewers": reviewers, "seed": 11}}
        proc = {"title_cleaning": "light", "max_title_words": 16, "fill_missing_titles": True, "min_products": 5}
        items, seq = items_and_sequences(raw, proc)
    params = {"history_size": 4, "min_history": 1, "num_negatives": num_negatives, "split": "leave_last_out",
              "seed": 3, "max_train_prompts": 4096, "max_validation_prompts": 16, "max_test_prompts": 1024,
              "instruction": "Given the customer's purchase history, choose the product they will buy next. "
                             "Answer with the option's letter and title."}
    prompts = pe.render_prompts(pe.sample_candidates(pe.build_windows(seq, params), seq, params), items, params)
    train, val, test = pe.split_prompts(prompts)
    for name, df in (("train", train), ("validation", val), ("test", test)):
        df.to_parquet(dest / f"{name}.parquet")
    folder, filename = builtin_gguf("smollm2-135m-instruct")
    tok = prepare_tokenizer(AutoTokenizer.from_pretrained(folder, gguf_file=filename))
    tok.save_pretrained(dest / "tokenizer")
    lengths = [len(tok(render_prompt(tok, i, x) + o, add_special_tokens=False)["input_ids"])
               for i, x, o in zip(test["instruction"], test["input"], test["output"], strict=True)]
    info = {"train": len(train), "validation": len(val), "test": len(test), "options": num_negatives + 1,
            "mean_tokens": sum(lengths) / len(lengths), "max_tokens": max(lengths)}
    (dest / "info.json").write_text(json.dumps(info, indent=2))
    print(json.dumps(info))  # noqa: T201


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".gpubench")
