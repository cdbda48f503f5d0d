"""Score stored prompts with the base model (zero-shot) or a LoRA adapter: each candidate's summed answer
log-probability and token count, and each product's title prior, so that mean, sum and PMI come from one pass.

    python benchmarks/llm_ranker/score.py --data /work/ind --out benchmarks/reported/llm_ranker \
        --split validation --limit 1000 [--adapter PATH] [--protocol uniform_4]
    python benchmarks/llm_ranker/score.py --data /work/ind --out ... --priors

Uses the project's own functions (core.scoring.answer_likelihoods, title_priors), the evaluation's settings (fp32
where bf16 is emulated). Writes <out>/<name>.parquet, resumable per chunk.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from amazon_llm_rec.core.llm import scoring
from amazon_llm_rec.core.llm.models import load_model, load_tokenizer, resolve_device, use_bf16

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
log = logging.getLogger("score")


def main() -> None:  # noqa: PLR0915
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True, help="folder with 03_primary/ and 05_model_input/")
    ap.add_argument("--base", default="data/06_models/base_model")
    ap.add_argument("--adapter", default=None)
    ap.add_argument("--name", default=None)
    ap.add_argument("--out", required=True)
    ap.add_argument("--split", default="test", choices=["validation", "test"])
    ap.add_argument("--protocol", default="uniform_4")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--chunk", type=int, default=256)
    ap.add_argument("--priors", action="store_true", help="write the title priors of every product instead")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device("auto")
    model = load_model(a.base, "bfloat16" if use_bf16("auto", device) else "float32", device=device)
    tok = load_tokenizer(a.adapter or a.base)
    if a.adapter:
        from peft import PeftModel  # noqa: PLC0415

        model = PeftModel.from_pretrained(model, a.adapter)
    model.eval()
    data = Path(a.data)
    if a.priors:
        items = pd.read_parquet(data / "03_primary/items.parquet")
        instruction = pd.read_parquet(data / "05_model_input/validation_prompts.parquet")["instruction"].iloc[0]
        start = time.perf_counter()
        pri = scoring.title_priors(model, tok, instruction, items["title"].fillna("").tolist(), a.batch)
        pd.DataFrame({"asin": items["asin"], "prior": pri}).to_parquet(out / "title_priors.parquet")
        log.info("priors of %d products in %.0f s", len(items), time.perf_counter() - start)
        return
    if a.split == "validation":
        prompts = pd.read_parquet(data / "05_model_input/validation_prompts.parquet")
    else:
        prompts = pd.read_parquet(data / "05_model_input/test_protocol_prompts.parquet")
        prompts = prompts[prompts["protocol"] == a.protocol].reset_index(drop=True)
    if a.limit:
        prompts = prompts.iloc[: a.limit]
    name = a.name or f"{'fine_tuned' if a.adapter else 'zero_shot'}_{a.split}_{a.protocol}"
    parts = out / f".{name}"
    parts.mkdir(exist_ok=True)
    start = time.perf_counter()
    for lo in range(0, len(prompts), a.chunk):
        f = parts / f"{lo:06d}.parquet"
        if f.exists():
            continue
        chunk = prompts.iloc[lo: lo + a.chunk].reset_index(drop=True)
        sums, counts = scoring.answer_likelihoods(model, tok, chunk, a.batch, f"{name} {lo}", None,
                                                  scoring.option_texts(chunk, "title"), 5)
        chunk[["reviewer_id", "position", "target_asin", "correct_letter", "candidate_asins"]].assign(
            sums=list(sums), counts=list(counts)).to_parquet(f)
        done = lo + len(chunk)
        log.info("%s: %d / %d prompts, %.2f prompts/s", name, done, len(prompts), done / (time.perf_counter() - start))
    frame = pd.concat([pd.read_parquet(f) for f in sorted(parts.glob("*.parquet"))], ignore_index=True)
    frame["sums"] = frame["sums"].map(lambda v: np.asarray(v, float).tolist())
    frame.to_parquet(out / f"{name}.parquet")
    log.info("wrote %s (%d prompts)", out / f"{name}.parquet", len(frame))


if __name__ == "__main__":
    main()
