"""Where an LLM re-rank's time goes, and what makes it faster: the service's scorer (`LLMScorer`, the evaluation's
scoring function) on test reviewers' 50 retrieved candidates, one request at a time, variants side by side.

- `one pass`: every candidate title in one answer pass (today's default before this benchmark, options_per_pass None):
  the 50 titles are padded to the longest.
- `sorted passes of N`: the titles shortest first, N per pass (recommend.llm_options_per_pass): less padding, one
  more copy of the history's KV cache per pass.
- bf16 against fp32 on this CPU (bf16 is emulated without AVX-512 BF16 / AMX).
It also splits one request's time into tokenisation, the history pass, the answer passes and the KV-cache copies,
and checks that every variant gives each reviewer the same top 10 as `one pass`.

    python benchmarks/rerank_latency.py --data data --reviewers 50 --out benchmarks/reported/serving/rerank
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:  # noqa: PLR0915 - one measurement script
    """Measure every variant on the same requests; print the table, write JSON."""
    from amazon_llm_rec.core.llm import scoring
    from amazon_llm_rec.core.llm.models import history_input, load_model, load_tokenizer
    from amazon_llm_rec.core.rank import baselines
    from amazon_llm_rec.core.rank.evidence import Evidence
    from amazon_llm_rec.core.rank.recommender import LLMScorer
    from amazon_llm_rec.core.rank.retrieval import RetrievalConfig, Retriever

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(ROOT / "data"), help="a data/ folder after `kedro run`")
    parser.add_argument("--model", default=None, help="default: <data>/06_models/base_model")
    parser.add_argument("--reviewers", type=int, default=50)
    parser.add_argument("--candidates", type=int, default=50)
    parser.add_argument("--passes", type=int, nargs="+", default=[25, 10])
    parser.add_argument("--bf16-reviewers", type=int, default=10, help="bf16 is slow here: fewer requests")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    data = Path(args.data)
    items = pd.read_parquet(data / "03_primary/items.parquet")
    seqs = pd.read_parquet(data / "04_feature/reviewer_sequences.parquet")
    test = pd.read_parquet(data / "05_model_input/test_prompts.parquet").head(args.reviewers)
    prompts_conf = yaml.safe_load((ROOT / "conf/base/parameters_prompt_engineering.yml").read_text())["prompts"]
    instruction = " ".join(prompts_conf["pointwise_instruction"].split())
    retrieval = yaml.safe_load((ROOT / "conf/base/parameters_recommend.yml").read_text())["recommend"]["retrieval"]
    config = RetrievalConfig.from_params({**retrieval, "sources": ["cooccurrence", "popularity"], "quotas": None})
    retriever = Retriever(Evidence(baselines.fit_sequences(seqs, test), items), config)
    titles = retriever.titles
    hists = [list(h)[-prompts_conf["history_size"]:] for h in test["history_asins"]]
    cands = [r.asins for r in retriever.retrieve(hists, args.candidates, [set(h) for h in test["history_asins"]])]
    htitles = [[titles[a] for a in h] for h in hists]
    ctitles = [[titles[a] for a in c] for c in cands]
    model_path = args.model or str(data / "06_models/base_model")
    torch.set_num_threads(os.cpu_count() or 1)
    rows, tops = [], {}
    for dtype in ("float32", "bfloat16"):
        model = load_model(model_path, dtype)
        model.eval()
        n = args.reviewers if dtype == "float32" else min(args.bf16_reviewers, args.reviewers)
        variants = [("one pass", None)] + [(f"sorted passes of {p}", p) for p in args.passes]
        scorers = {name: LLMScorer(model, load_tokenizer(model_path), instruction, 1, "mean", None, per)
                   for name, per in variants}
        for sc in scorers.values():  # warm-up, and every product's answer tokens in the cache (as a running service)
            sc.score(htitles[:1], ctitles[:1])
            for row in ctitles:
                for t in row:
                    sc.tails(instruction, t)
        times: dict[str, list[float]] = {name: [] for name, _ in variants}
        for i in range(n):  # the variants in turn on each request, so drift on a shared machine hits all alike
            for name, _ in variants:
                start = time.perf_counter()
                s = scorers[name].score([htitles[i]], [ctitles[i]])[0]
                times[name].append(time.perf_counter() - start)
                tops[(dtype, name, i)] = [cands[i][j] for j in np.argsort(-s, kind="stable")[:10]]
        for name, _ in variants:
            same = sum(tops[(dtype, name, i)] == tops[("float32", "one pass", i)] for i in range(n))
            t = np.array(times[name])
            rows.append({"dtype": dtype, "variant": name, "requests": n, "p50_s": round(float(np.median(t)), 3),
                         "p95_s": round(float(np.percentile(t, 95)), 3), "mean_s": round(float(t.mean()), 3),
                         "same_top10_as_fp32_one_pass": f"{same}/{n}"})
            print(json.dumps(rows[-1]), flush=True)
    # one request split into its parts (fp32, one pass; the tokenizer's cache empty first)
    model = load_model(model_path, "float32")
    model.eval()
    tok = load_tokenizer(model_path)
    parts: dict[str, list[float]] = {"tokenise titles (uncached)": [], "history pass": [], "KV-cache copy": [],
                                     "answer pass (50 titles)": []}
    real, padded = [], []
    for i in range(min(10, args.reviewers)):
        tails = scoring.AnswerTokens(tok)
        start = time.perf_counter()
        toks = [tails(instruction, t) for t in ctitles[i]]
        parts["tokenise titles (uncached)"].append(time.perf_counter() - start)
        real.append(sum(len(t) for t in toks))
        padded.append(len(toks) * max(len(t) for t in toks))
        frame = pd.DataFrame({"instruction": [instruction], "input": [history_input(htitles[i])]})
        for _, enc in scoring._encoded_batches(model, tok, frame, 1, "parts"):  # noqa: SLF001
            start = time.perf_counter()
            cache, first = scoring.prompt_pass(model, enc)
            parts["history pass"].append(time.perf_counter() - start)
            start = time.perf_counter()
            copy.deepcopy(cache)
            parts["KV-cache copy"].append(time.perf_counter() - start)
            start = time.perf_counter()
            scoring.answer_pass(model, enc, cache, first, toks, len(toks), tok.pad_token_id)
            parts["answer pass (50 titles)"].append(time.perf_counter() - start)
    split = {k: round(float(np.median(v)), 4) for k, v in parts.items()}
    split["real answer tokens (median)"] = int(np.median(real))
    split["padded answer tokens, one pass (median)"] = int(np.median(padded))
    print(json.dumps(split))
    header = f"{'dtype':<9} {'variant':<22} {'requests':>8} {'p50 s':>7} {'p95 s':>7} {'same top 10':>12}"
    print("\n" + header)
    for r in rows:
        print(f"{r['dtype']:<9} {r['variant']:<22} {r['requests']:>8} {r['p50_s']:>7.3f} {r['p95_s']:>7.3f} "
              f"{r['same_top10_as_fp32_one_pass']:>12}")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "rerank_latency.json").write_text(json.dumps({
            "date": time.strftime("%Y-%m-%d"), "machine": f"{platform.processor() or platform.machine()}, "
            f"{os.cpu_count()} CPUs", "data": str(data), "model": model_path, "candidates": args.candidates,
            "rows": rows, "one_request_split": split}, indent=2))


if __name__ == "__main__":
    main()
