"""Peak memory and time of title-likelihood scoring with 20 candidates: the options in passes of
`evaluation.options_per_pass` (ours, default 5) against all options of a prompt in one pass (the earlier code),
side by side, each in a fresh process, on the same prompts; the scores must agree.

    python benchmarks/scoring_memory.py --prompts 32 --batch 16      # after `kedro run` (base model, test prompts)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest_benchmark import measure  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, time
import numpy as np, pandas as pd
from amazon_llm_rec.core.llm.models import load_model, load_tokenizer
from amazon_llm_rec.core.llm.scoring import score_titles
base, prompts_path, n, batch, per_pass, out = sys.argv[1:7]
prompts = pd.read_parquet(prompts_path)
prompts = prompts[prompts["candidate_asins"].map(len) == prompts["candidate_asins"].map(len).max()].head(int(n))
model, tok = load_model(base, "bfloat16", device="cpu"), load_tokenizer(base)
start = time.perf_counter()
scores = score_titles(model, tok, prompts.reset_index(drop=True), int(batch), target="title",
                      options_per_pass=None if per_pass == "all" else int(per_pass))
np.save(out, scores)
print(json.dumps({"seconds": time.perf_counter() - start, "options": scores.shape[1]}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--per-pass", type=int, default=5)
    ap.add_argument("--base", default=str(ROOT / "data" / "06_models" / "base_model"))
    ap.add_argument("--test-prompts", default=str(ROOT / "data" / "05_model_input" / "test_protocol_prompts.parquet"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "reported" / "scoring_memory"))
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    script = out / "child.py"
    script.write_text(CHILD)
    rows = {}
    for name, per_pass in (("all options in one pass (before)", "all"), (f"{args.per_pass} options a pass (ours)", str(args.per_pass))):
        npy = out / f"scores_{per_pass}.npy"
        m = measure([sys.executable, str(script), args.base, args.test_prompts, str(args.prompts), str(args.batch),
                     per_pass, str(npy)], ROOT, out / f"run_{per_pass}.log")
        rows[name] = {**m, **json.loads((out / f"run_{per_pass}.log").read_text().strip().splitlines()[-1])}
        print(f"{name}: {rows[name]}", flush=True)
    import numpy as np  # noqa: PLC0415

    before, ours = np.load(out / "scores_all.npy"), np.load(out / f"scores_{args.per_pass}.npy")
    diff = float(np.abs(before - ours).max())
    same_top = float((before.argmax(1) == ours.argmax(1)).mean())
    print(f"largest score difference: {diff:.2e} (bf16); same top option for {same_top:.0%} of the prompts")
    result = {"date": str(date.today()), "prompts": args.prompts, "batch": args.batch, "rows": rows, "max_abs_diff": diff,
              "same_top_option": same_top}
    (out / "results.json").write_text(json.dumps(result, indent=2))
    subprocess.run(["rm", "-f", *map(str, out.glob("*.npy")), str(script)], check=False)


if __name__ == "__main__":
    main()
