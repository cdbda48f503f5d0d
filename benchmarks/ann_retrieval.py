"""The retriever's title-embedding search at 4k, 100k and 1M products: the HNSW index against brute force.

Both are the project's `core.rank.ann.EmbeddingIndex` (brute force below `recommend.retrieval.ann.min_items`, FAISS
HNSW above), with conf/base's HNSW settings. Vectors: 384-d unit vectors, as all-MiniLM-L6-v2's. At 4,385 products
they are Industrial_and_Scientific's real title embeddings where `--data` has its items (else synthetic); the larger
catalogues are synthetic: 2,000 kinds of product with 20 sub-kinds each, plus noise, so that similarity is graded
as it is between titles (same sub-kind > same kind > other).
Queries: the mean embedding of 4 products, as a history's: 4 random products, and (synthetic) 4 of one cluster. One query a request, on this machine's
threads; the LLM is not involved.

    python benchmarks/ann_retrieval.py --out benchmarks/reported/ann

Prints per size and method: build seconds, the memory the search holds (brute force: the vectors; HNSW: the
serialized index, vectors and graph), this process's RSS after the build, p50 and p99 ms per request, and the index's
recall@50 against brute force.
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import time
from dataclasses import replace
from datetime import date
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]


def rss_gib() -> float:
    """This process's resident memory now."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def vectors(n: int, d: int, rng: np.random.Generator, data: Path | None) -> tuple[np.ndarray, np.ndarray | None, str]:
    """n unit vectors and their cluster (None for real ones): the real title embeddings of the data's catalogue when
    it has n products, else synthetic."""
    if data is not None and (data / "03_primary/items.parquet").is_file():
        import pandas as pd

        items = pd.read_parquet(data / "03_primary/items.parquet")
        if len(items) == n:
            from amazon_llm_rec.core.rank.evidence import Evidence

            conf = yaml.safe_load((ROOT / "conf/base/parameters_evaluation.yml").read_text())["evaluation"]
            return Evidence([], items, conf["embedding_model"]).matrix, None, "real title embeddings"
    out = np.empty((n, d), dtype=np.float32)
    centres = rng.normal(size=(2000, d)).astype(np.float32)  # product kinds, each with 20 sub-kinds
    subs = np.repeat(centres, 20, axis=0) + 0.7 * rng.normal(size=(len(centres) * 20, d)).astype(np.float32)
    sub = rng.integers(0, len(subs), n)
    cluster = sub // 20
    for lo in range(0, n, 100_000):
        hi = min(n, lo + 100_000)
        out[lo:hi] = subs[sub[lo:hi]] + 0.5 * rng.normal(size=(hi - lo, d))
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out, cluster, "synthetic, clustered"


def query_sets(x: np.ndarray, cluster: np.ndarray | None, count: int, rng: np.random.Generator) -> dict:
    """Mean unit vectors of 4 products: 4 random products; and, for clustered vectors, 4 of one cluster (a history
    of related products, as most histories are)."""
    def unit(v: np.ndarray) -> np.ndarray:
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    sets = {"4 random products": unit(x[rng.integers(0, len(x), size=(count, 4))].mean(axis=1))}
    if cluster is not None:
        members = [np.flatnonzero(cluster == c) for c in rng.integers(0, cluster.max() + 1, count)]
        sets["4 products of one cluster"] = unit(np.stack([x[rng.choice(m, 4)].mean(axis=0) for m in members]))
    return sets


def search_all(index, queries: np.ndarray, k: int) -> tuple[list[np.ndarray], list[float]]:
    """One request a query: each one's neighbours and milliseconds."""
    ids, times = [], []
    for q in queries:
        start = time.perf_counter()
        ids.append(index.search(q[None, :], k)[0])
        times.append((time.perf_counter() - start) * 1000)
    return ids, times


def main() -> None:
    from amazon_llm_rec.core.rank.ann import AnnConfig, EmbeddingIndex

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[4385, 100_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--k", type=int, default=50)
    parser.add_argument("--ef", type=int, nargs="*", default=[64, 256, 512], help="HNSW efSearch values also measured")
    parser.add_argument("--data", default=str(ROOT / "data"))
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    conf = yaml.safe_load((ROOT / "conf/base/parameters_recommend.yml").read_text())["recommend"]["retrieval"]["ann"]
    rng = np.random.default_rng(0)
    rows = []
    for n in args.sizes:
        x, cluster, kind = vectors(n, 384, rng, Path(args.data))
        sets = query_sets(x, cluster, args.queries, rng)
        truth: dict[str, list] = {}
        for method, min_items in (("brute force", n + 1), ("HNSW index", 1)):
            index = EmbeddingIndex(x, AnnConfig.from_params({**conf, "min_items": min_items}))
            held = index.matrix.nbytes if index.exact else len(__import__("faiss").serialize_index(index.index))
            for (query_kind, queries), ef in itertools.product(sets.items(), [None] if index.exact else
                                                               sorted({conf["ef_search"], *args.ef})):
                if ef is not None:  # the same built graph, searched with a longer or shorter candidate list
                    index.config = replace(index.config, ef_search=ef)
                ids, times = search_all(index, queries, args.k)
                truth.setdefault(query_kind, ids)
                row = {"products": n, "vectors": kind, "queries": query_kind, "method": method, "ef_search": ef,
                       "build_s": round(index.build_seconds, 2), "index_gib": round(held / 2**30, 3),
                       "process_rss_gib": round(rss_gib(), 2), "p50_ms": round(float(np.percentile(times, 50)), 3),
                       "p99_ms": round(float(np.percentile(times, 99)), 3), "requests": len(times)}
                if ef is not None:  # the share of brute force's top k found, and how close their similarities are
                    row[f"recall@{args.k}_vs_brute"] = round(float(np.mean(
                        [len(set(a) & set(b)) / args.k for a, b in zip(ids, truth[query_kind], strict=True)])), 4)
                    row["similarity_vs_brute"] = round(float(np.mean(
                        [(x[a[a >= 0]] @ q).mean() / (x[b] @ q).mean()
                         for a, b, q in zip(ids, truth[query_kind], queries, strict=True)])), 4)
                rows.append(row)
                print(json.dumps(row), flush=True)
            del index
    result = {"date": date.today().isoformat(), "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}",
              "hnsw": conf, "k": args.k, "rows": rows}
    print(f"\n| products | queries | method | ef_search | build s | index GiB (vectors + graph) | p50 ms | p99 ms | recall@{args.k} vs brute | mean similarity vs brute |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['products']:,} | {r['queries']} | {r['method']} | {r['ef_search'] or ''} | {r['build_s']} | {r['index_gib']} | {r['p50_ms']} | "
              f"{r['p99_ms']} | {r.get(f'recall@{args.k}_vs_brute', '')} | {r.get('similarity_vs_brute', '')} |")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "ann_retrieval.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
