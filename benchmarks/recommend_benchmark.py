"""Batch recommendation throughput: reviewers per second of the two-stage recommender, per ranker, on the CPU.

Runs what `kedro run --pipeline=recommend` runs (the same `Recommender`, counts fitted on every sequence) on
the first M reviewers of a project's catalogue, for each ranker, next to the co-occurrence baseline's own
whole-catalogue ranking, in one run:

    python benchmarks/recommend_benchmark.py --env industrial --reviewers 64 --out benchmarks/reported/serving
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    """Time every ranker on the same reviewers and print reviewers/s side by side."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--project", default=str(ROOT))
    parser.add_argument("--env", default=None)
    parser.add_argument("--reviewers", type=int, default=64)
    parser.add_argument("--rankers", nargs="+", default=["retriever", "fusion_no_llm", "fusion"])
    parser.add_argument("--params", nargs="*", default=[], help="runtime parameters, e.g. recommend.llm_batch_size=1")
    parser.add_argument("--out", default=None)
    parser.add_argument("--name", default="recommend_benchmark.json", help="file name under --out")
    args = parser.parse_args()
    os.chdir(args.project)

    from amazon_llm_rec.core.rank import baselines
    from amazon_llm_rec.core.rank.evidence import Evidence
    from amazon_llm_rec.core.rank.recommender import build_recommender, llm_source
    from amazon_llm_rec.serving.__main__ import _params
    from amazon_llm_rec.serving.config import load_project

    data = load_project(args.project, args.env, _params(args.params))
    params = data.params
    fitted = [list(s) for s in data.sequences["asins"]]
    seqs = fitted[: args.reviewers]
    cache: dict = {}
    evidence = Evidence(fitted, data.items, params["evaluation"]["embedding_model"], params["evaluation"]["sasrec"])
    rows = []
    for ranker in args.rankers:
        start = time.perf_counter()
        rec = build_recommender(evidence, data.fusion_model, {**params["recommend"], "ranker": ranker},
                                params["evaluation"], llm_source(data.base_model, data.adapter, params["prompts"],
                                                           params["evaluation"], data.title_priors),
                                int(params["prompts"]["history_size"]), cache, data.retriever_mix)
        built = time.perf_counter() - start
        start = time.perf_counter()
        chunk = int(params["recommend"]["chunk_size"])
        for lo in range(0, len(seqs), chunk):
            rec.recommend(seqs[lo : lo + chunk])
        seconds = time.perf_counter() - start
        rows.append({"method": f"two-stage, ranker {ranker}", "reviewers": len(seqs), "seconds": round(seconds, 2),
                     "reviewers_per_s": round(len(seqs) / seconds, 2), "build_seconds": round(built, 1)})
        print(json.dumps(rows[-1]), flush=True)
    retriever = rec.retriever
    start = time.perf_counter()
    k = int(params["recommend"]["k"])
    for s in seqs:
        baselines.cooccurrence_ranking(s[-int(params["prompts"]["history_size"]):], retriever.cooc, retriever.pop, set(s), k)
    seconds = time.perf_counter() - start
    rows.append({"method": "baseline: co-occurrence whole-catalogue ranking", "reviewers": len(seqs),
                 "seconds": round(seconds, 3), "reviewers_per_s": round(len(seqs) / seconds, 1), "build_seconds": None})
    print(f"\n{'method':<50} {'reviewers':>9} {'seconds':>9} {'reviewers/s':>12}")
    for r in rows:
        print(f"{r['method']:<50} {r['reviewers']:>9} {r['seconds']:>9} {r['reviewers_per_s']:>12}")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / args.name).write_text(json.dumps({
            "date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
            "env": args.env, "params": args.params, "llm_batch_size": params["recommend"]["llm_batch_size"],
            "products": len(retriever.asins), "num_candidates": params["recommend"]["num_candidates"],
            "k": k, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
