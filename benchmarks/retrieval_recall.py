"""Retrieval recall: the learned mix of cheap sources against today's retriever, on every leave-last-out window.

Ours: conf's `recommend.retrieval` (co-occurrence, RP3beta, EASE, title embeddings; turns learned on validation
windows by the evaluation's own `fit_retriever_mix` node; popularity fills). Baseline: the retriever as it was
(co-occurrence and embeddings in equal turns, popularity fills). Both on the same test windows, the test windows'
evidence (each reviewer cut before their test target), the reviewer's earlier purchases left out.

Run after `kedro run --env=<env> --pipeline=data_processing`:

    python benchmarks/retrieval_recall.py --env industrial --out benchmarks/reported/retrieval

Prints and writes recall@N of each retriever and of each source alone, the paired difference with its 95%
bootstrap interval (reviewers resampled), and Recall@10 / NDCG@10 of the retrievers' own order.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import replace
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def project_params(env: str) -> dict:
    """The parameters `kedro run --env=<env>` sees (conf/base, then the environment, merged key by key)."""
    from kedro.config import OmegaConfigLoader

    loader = OmegaConfigLoader(str(ROOT / "conf"), base_env="base", default_run_env=env,
                               merge_strategy={"parameters": "soft"})
    return loader["parameters"]


def print_table(rows: list[dict], paired: dict, n: int) -> None:
    """The Markdown table of every retriever, each against today's."""
    print(f"\n| retriever | recall@{n} [95% CI] | minus today's [95% CI] | Recall@10 | NDCG@10 |\n|---|---|---|---|---|")
    for r in rows:
        d = paired.get(r["retriever"])
        diff = f"{d['diff']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}]" if d else ""
        lo, hi = r[f"recall@{n}_ci95"]
        print(f"| {r['retriever']} | {r[f'recall@{n}']:.3f} [{lo:.3f}, {hi:.3f}] | {diff} | {r['recall@10']:.3f} | "
              f"{r['ndcg@10']:.3f} |")


def score_rows(ranked: dict, targets: list[str], n: int, samples: int) -> tuple[list[dict], dict]:
    """Per retriever: recall@n with its interval, Recall@10 and NDCG@10 of its order; and its per-window hits."""
    from amazon_llm_rec.core.metrics import bootstrap_interval
    from amazon_llm_rec.core.rank.catalogue import list_metrics

    rows, hits = [], {}
    for name, found in ranked.items():
        asins = [f.asins for f in found]
        hit = np.array([t in a for a, t in zip(asins, targets, strict=True)], dtype=float)
        hits[name] = hit
        top = list_metrics(asins, targets, 10)
        rows.append({"retriever": name, f"recall@{n}": round(float(hit.mean()), 4),
                     f"recall@{n}_ci95": [round(x, 4) for x in bootstrap_interval(hit, samples, 0)],
                     "recall@10": round(float(top["recall@10"].mean()), 4),
                     "ndcg@10": round(float(top["ndcg@10"].mean()), 4)})
    return rows, hits


def main() -> None:
    from amazon_llm_rec.core.metrics import paired_bootstrap
    from amazon_llm_rec.core.rank.evidence import Evidence
    from amazon_llm_rec.core.rank.fusion import prefixes_of
    from amazon_llm_rec.core.rank.recommender import RecommendConfig
    from amazon_llm_rec.core.rank.retrieval import Retriever, merge_turns
    from amazon_llm_rec.pipelines.evaluation.nodes import fit_retriever_mix
    from amazon_llm_rec.pipelines.prompt_engineering.nodes import build_windows

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="industrial")
    parser.add_argument("--data", default=str(ROOT / "data"), help="a data/ folder after data_processing")
    parser.add_argument("--out", default=None)
    parser.add_argument("--samples", type=int, default=1000, help="bootstrap resamples")
    args = parser.parse_args()
    start = time.perf_counter()
    params = project_params(args.env)
    data = Path(args.data)
    items = pd.read_parquet(data / "03_primary/items.parquet")
    seqs = pd.read_parquet(data / "04_feature/reviewer_sequences.parquet")
    prompts = {**params["prompts"], "max_train_prompts": 0, "max_validation_prompts": None, "max_test_prompts": None}
    windows = build_windows(seqs, prompts)
    val = windows[windows["split"] == "validation"].reset_index(drop=True)
    test = windows[windows["split"] == "test"].reset_index(drop=True)
    recommend, evaluation = params["recommend"], params["evaluation"]
    cfg = RecommendConfig.from_params(recommend, int(prompts["history_size"]))
    n, h = cfg.num_candidates, cfg.history_size
    print(f"{len(seqs)} reviewers, {len(items)} products; {len(val)} validation and {len(test)} test windows", flush=True)

    # the mix's evidence: every reviewer cut before their validation or test window, whichever comes first, so that no
    # count it learns from holds a test target
    learning = Evidence.for_windows(seqs, pd.concat([val, test], ignore_index=True), items, evaluation)
    mix = fit_retriever_mix(val, seqs, learning, recommend, params["prompts"])
    print(f"learned on {mix['windows']} validation windows: {mix['weights']} (validation recall@{n} "
          f"{mix['validation_recall']:.3f}, equal turns {mix['equal_turns_recall']:.3f})", flush=True)

    evidence = Evidence.for_windows(seqs, test, items, evaluation)
    histories = [list(x)[-h:] for x in test["history_asins"]]
    targets = test["target_asin"].tolist()
    bought = [set(p) for p in prefixes_of(test, seqs)]
    ours = Retriever(evidence, cfg.retrieval, mix["weights"])
    before = Retriever(evidence, replace(cfg.retrieval, sources=["cooccurrence", "embedding", "popularity"], quotas=None))
    every = Retriever(evidence, replace(cfg.retrieval, quotas=None))  # every source, for the equal-turns and alone rows
    lists = every.ranked_lists(histories, n, bought)
    ranked = {"ours (learned turns)": ours.retrieve(histories, n, bought),
              "today's retriever (co-occurrence + embedding, equal turns)": before.retrieve(histories, n, bought),
              "ours, equal turns": [merge_turns(row, n, dict.fromkeys(cfg.retrieval.main, 1.0)) for row in lists]}
    for source in cfg.retrieval.sources:
        ranked[f"{source} alone"] = [merge_turns({source: row[source]}, n, {source: 1.0}) for row in lists]
    reviewers = test["reviewer_id"].to_numpy()
    rows, hits = score_rows(ranked, targets, n, args.samples)
    base_name = "today's retriever (co-occurrence + embedding, equal turns)"
    paired = {name: paired_bootstrap(hits[name], hits[base_name], reviewers, args.samples, 0)
              for name in hits if name != base_name}
    result = {"date": date.today().isoformat(), "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}",
              "env": args.env, "reviewers": len(seqs), "products": len(items), "validation_windows": len(val),
              "test_windows": len(test), "n": n, "learned": mix, "sources": cfg.retrieval.sources,
              "rp3beta": cfg.retrieval.rp3beta, "ease": cfg.retrieval.ease, "rows": rows,
              "paired_vs_today": paired, "seconds": round(time.perf_counter() - start, 1)}
    print_table(rows, paired, n)
    print(f"\n{result['seconds']} s", flush=True)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"retrieval_recall_{args.env}.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
