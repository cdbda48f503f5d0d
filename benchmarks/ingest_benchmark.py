"""Ingestion at scale: the data_processing pipeline (DuckDB through Ibis) against pandas, side by side.

Writes raw files in the published Amazon Review 2018 format (gzip JSON lines: reviews with every
field and a review text, metadata with description, also_buy, price; the usual mess: unverified
reviews and their verified twins, duplicate pairs, missing optional fields and 'verified', missing,
empty and HTML titles, HTML entities, reviewers with fewer than 5 products) of the sizes asked, then
runs, each in a fresh process whose peak resident memory (the whole process tree, sampled) is taken:

- ours:   `kedro run --pipeline=data_processing` on those files (a scratch copy of conf/, DuckDB, memory_limit
          from parameters_data_processing.yml), reviewer sequences written to Parquet;
- pandas: `pd.read_json(lines=True)` of both files plus the same filters (verified, complete, dedup,
          reviewed products' metadata, the project's own title cleaning, min 5 products, sequences), when
          its predicted peak (linear in the size, from the first size run) fits `--pandas-max-gb`;

then prompt_engineering on our outputs, and the count baselines (random, popularity, co-occurrence) on its
test prompts with counts fitted on every sequence (`--steps` picks).

The files hold no malformed JSON lines: pandas' read_json stops at the first one (ours counts and skips
them: tests/pipelines/test_data_processing.py).

    python benchmarks/ingest_benchmark.py --sizes 1M,5M,20M --workdir /tmp/ingest --out benchmarks/reported/ingest
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from datetime import date
from pathlib import Path

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
CATEGORY = "Scale_Bench"
WORDS = ("great quality works fine arrived quickly sturdy cheap broke after week would buy again exactly as "
         "described the size is smaller than expected good value for money my husband uses it every day "
         "packaging was damaged but product ok five stars recommended").split()


def _count(text: str) -> int:
    text = text.strip().upper()
    scale = {"K": 1_000, "M": 1_000_000}.get(text[-1], 1)
    return int(float(text[:-1] if scale > 1 else text) * scale)


def write_category(folder: Path, n_reviews: int, seed: int = 0) -> dict[str, float]:
    """Write `<CATEGORY>_5.json.gz` and `meta_<CATEGORY>.json.gz` with about `n_reviews` review lines."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    n_products = max(1_000, n_reviews // 13)  # ratios of ../shared Industrial_and_Scientific 5-core
    texts = [" ".join(rng.choice(WORDS, size=int(k))) for k in rng.gamma(2.0, 25.0, size=997).astype(int) + 1]
    pop = 1.0 / (rng.permutation(n_products) + 1) ** 0.9
    cdf = np.cumsum(pop / pop.sum())
    start = time.perf_counter()
    lines = 0
    with gzip.open(folder / f"{CATEGORY}_5.json.gz", "wb", compresslevel=1) as fh:
        reviewer, written = 0, 0
        while written < n_reviews:
            chunk = min(250_000, n_reviews - written)
            sizes = rng.integers(3, 14, size=chunk // 6 + 1)
            sizes = sizes[: np.searchsorted(np.cumsum(sizes), chunk) + 1]
            owner = np.repeat(np.arange(reviewer, reviewer + len(sizes)), sizes)[:chunk]
            reviewer += len(sizes)
            product = np.minimum(np.searchsorted(cdf, rng.random(chunk)), n_products - 1)
            t = 1_300_000_000 + owner % 5000 * 86_400 + np.arange(chunk) % 97 * 3_600
            verified = rng.random(chunk) > 0.1
            roll = rng.random(chunk)
            text_id = rng.integers(0, len(texts), size=chunk)
            stars = rng.integers(1, 6, size=chunk)
            out = []
            for o, p, tt, v, r, x, s in zip(owner.tolist(), product.tolist(), t.tolist(), verified.tolist(),
                                            roll.tolist(), text_id.tolist(), stars.tolist(), strict=True):
                ver = "" if r < 0.005 else f'"verified": {"true" if v else "false"}, '
                body = "" if r > 0.99 else f'"reviewText": "{texts[x]}", '
                line = (f'{{"overall": {s}.0, {ver}"reviewTime": "01 1, 2015", "reviewerID": "A{o:012d}", '
                        f'"asin": "B{p:09d}", "style": {{"Size:": " Large"}}, "reviewerName": "Reviewer {o}", '
                        f'{body}"summary": "Stars", "unixReviewTime": {tt}}}\n')
                out.append(line)
                if not v:  # the verified purchase of an unverified review
                    out.append(line.replace('"verified": false', '"verified": true').replace(f": {tt}}}", f": {tt + 60}}}"))
                if 0.97 < r <= 0.99:  # a duplicate (reviewer, product) pair, later
                    out.append(line.replace(f": {tt}}}", f": {tt + 86_400}}}"))
            fh.write("".join(out).encode())
            lines += len(out)
            written += chunk
    with gzip.open(folder / f"meta_{CATEGORY}.json.gz", "wb", compresslevel=1) as fh:
        out = []
        for p in range(n_products):
            roll = (p * 2654435761 % 1000) / 1000
            title = f"Brand{p % 997} Pro Tool &amp; Kit #{p % 50} Size {p % 7}"
            title_field = "" if roll < 0.01 else (f'"title": "{title}", ' if roll > 0.03 else '"title": "", ')
            if 0.03 < roll < 0.035:
                title_field = '"title": "<span class=\\"a-size-medium a-color-secondary\\"", '
            out.append(f'{{"category": ["Industrial &amp; Scientific", "Tools {p % 40}"], "description": '
                       f'["{texts[p % len(texts)]}"], {title_field}"brand": "Brand{p % 997}", '
                       f'"also_buy": ["B{(p * 7) % n_products:09d}", "B{(p * 11) % n_products:09d}"], '
                       f'"price": "${p % 90 + 9}.99", "asin": "B{p:09d}"}}\n')
            if len(out) == 100_000:
                fh.write("".join(out).encode())
                out = []
        fh.write("".join(out).encode())
    raw_mb = sum((folder / f).stat().st_size for f in (f"{CATEGORY}_5.json.gz", f"meta_{CATEGORY}.json.gz")) / 1e6
    return {"review_lines": lines, "products": n_products, "gzip_mb": round(raw_mb, 1),
            "write_s": round(time.perf_counter() - start, 1)}


PANDAS_SCRIPT = r"""
import sys, time, json
import pandas as pd
sys.path.insert(0, {src!r})
from amazon_llm_rec.pipelines.data_processing.nodes import clean_items
reviews_path, meta_path, out = sys.argv[1:4]
t0 = time.perf_counter()
r = pd.read_json(reviews_path, lines=True, compression="gzip")
r = r[r["reviewerID"].notna() & r["asin"].notna() & r["unixReviewTime"].notna()]
r = r[r["verified"].fillna(True).astype(bool)]
dedup = r.groupby(["reviewerID", "asin"], as_index=False)["unixReviewTime"].min()
del r
m = pd.read_json(meta_path, lines=True, compression="gzip")
m = m[m["asin"].isin(dedup["asin"].unique())]
meta = pd.DataFrame({{"asin": m["asin"], "title": m.get("title"), "brand": m.get("brand", "").fillna(""),
                     "categories": m["category"].map(lambda c: c if isinstance(c, list) else [])}})
items, _ = clean_items(meta, {{"title_cleaning": "light", "max_title_words": 16, "fill_missing_titles": True}})
joined = dedup[dedup["asin"].isin(items["asin"])]
kept = joined[joined.groupby("reviewerID")["asin"].transform("size") >= 5]
seq = kept.sort_values(["reviewerID", "unixReviewTime", "asin"]).groupby("reviewerID").agg(
    asins=("asin", list), times=("unixReviewTime", list))
seq.reset_index().to_parquet(out)
print(json.dumps({{"reviewers": len(seq), "seconds": time.perf_counter() - t0}}))
"""


def measure(cmd: list[str], cwd: Path, log: Path, env: dict | None = None) -> dict[str, float]:
    """Run `cmd`, sampling the resident memory of its whole process tree; return wall time and peak."""
    start = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        peak, stop = [0], threading.Event()

        def sample():
            parent = psutil.Process(proc.pid)
            while not stop.is_set():
                try:
                    rss = parent.memory_info().rss + sum(c.memory_info().rss for c in parent.children(recursive=True))
                    peak[0] = max(peak[0], rss)
                except psutil.Error:
                    pass
                time.sleep(0.1)

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        rc = proc.wait()
        stop.set()
        thread.join()
    if rc:
        raise SystemExit(f"{' '.join(cmd)} failed ({rc}); see {log}")
    return {"wall_s": round(time.perf_counter() - start, 1), "peak_gb": round(peak[0] / 1e9, 2)}


BASELINES_SCRIPT = r"""
import json, sys, time
import pandas as pd
import yaml
from amazon_llm_rec.pipelines.evaluation.nodes import fit_evidence, score_baseline_methods
data = sys.argv[1]
conf = yaml.safe_load(open(f"{data}/../conf/base/parameters_evaluation.yml"))["evaluation"]
evaluation = {**conf, "baselines": ["random", "popularity", "cooccurrence"], "cooccurrence_window": 0}
prompts = pd.read_parquet(f"{data}/05_model_input/test_protocol_prompts.parquet")
sequences = pd.read_parquet(f"{data}/04_feature/reviewer_sequences.parquet")
items = pd.read_parquet(f"{data}/03_primary/items.parquet")
start = time.perf_counter()
preds = score_baseline_methods(prompts, sequences, fit_evidence(prompts, sequences, items, evaluation), evaluation)
print(json.dumps({"prompts": len(prompts), "rows": len(preds), "seconds": time.perf_counter() - start}))
"""


def scratch_project(workdir: Path, label: str, fresh: bool = True) -> Path:
    """A copy of pyproject.toml, conf/ and src/ (as they are now) whose data/ folder is this size's own."""
    project = workdir / f"project_{label}"
    if project.exists() and not fresh:
        return project
    if project.exists():
        shutil.rmtree(project)
    project.mkdir(parents=True)
    shutil.copy(ROOT / "pyproject.toml", project)
    shutil.copytree(ROOT / "conf", project / "conf", ignore=shutil.ignore_patterns("local"))
    (project / "conf" / "local").mkdir()
    shutil.copytree(ROOT / "src", project / "src", ignore=shutil.ignore_patterns("__pycache__"))  # Kedro wants it inside
    return project


def main() -> None:  # noqa: PLR0915 - one side-by-side run, step by step
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1M,5M,20M", help="review counts, e.g. 200K,1M")
    ap.add_argument("--workdir", default="/tmp/ingest_benchmark", help="raw files and outputs (several GB)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "reported" / "ingest"))
    ap.add_argument("--pandas-max-gb", type=float, default=0.8 * psutil.virtual_memory().total / 1e9)
    ap.add_argument("--steps", default="ours,prompts,baselines,pandas",
                    help="which to run: ours (data_processing), prompts (prompt_engineering on our outputs), baselines "
                         "(random, popularity and co-occurrence on its test prompts, counts fitted on every sequence), "
                         "pandas; a size's project folder is kept, so later steps can run alone")
    args = ap.parse_args()
    workdir, out = Path(args.workdir), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    kedro = str(Path(sys.executable).with_name("kedro"))
    steps = set(args.steps.split(","))
    rows, pandas_gb_per_m = [], None
    for label in args.sizes.split(","):
        n = _count(label)
        folder = workdir / f"raw_{label}"
        if not (folder / f"meta_{CATEGORY}.json.gz").is_file():
            shutil.rmtree(folder, ignore_errors=True)
            gen = write_category(folder, n)
            (folder / "generated.json").write_text(json.dumps(gen))
        gen = json.loads((folder / "generated.json").read_text())
        print(f"[{label}] raw files: {gen}", flush=True)
        project = scratch_project(workdir, label, fresh="ours" in steps)
        row = {"size": label, "review_lines": gen["review_lines"], "products": gen["products"], "gzip_mb": gen["gzip_mb"]}
        if "ours" in steps:
            params = f"raw.data_dir={folder},raw.category={CATEGORY}"
            ours = measure([kedro, "run", "--pipeline=data_processing", "--params", params], project,
                           out / f"ours_{label}.log", env={"KEDRO_DISABLE_TELEMETRY": "true"})
            row.update(ours_s=ours["wall_s"], ours_gb=ours["peak_gb"])
            print(f"[{label}] ours: {ours}", flush=True)
        counts = json.loads((project / "data" / "08_reporting" / "data_processing_counts.json").read_text())
        row.update(reviewers=counts["reviewers"], interactions=counts["interactions"])
        if "prompts" in steps:
            pe = measure([kedro, "run", "--pipeline=prompt_engineering"], project, out / f"prompts_{label}.log",
                         env={"KEDRO_DISABLE_TELEMETRY": "true"})
            row.update(prompts_s=pe["wall_s"], prompts_gb=pe["peak_gb"])
            print(f"[{label}] prompt_engineering: {pe}", flush=True)
        if "baselines" in steps:
            script = workdir / "baselines_at_scale.py"
            script.write_text(BASELINES_SCRIPT)
            bl = measure([sys.executable, str(script), str(project / "data")], project, out / f"baselines_{label}.log")
            row.update(baselines_s=bl["wall_s"], baselines_gb=bl["peak_gb"])
            print(f"[{label}] baselines: {bl}", flush=True)
        if "pandas" not in steps:
            rows.append(row)
            _write_results(out, rows, steps)
            continue
        predicted = pandas_gb_per_m * n / 1e6 if pandas_gb_per_m else 0.0
        if predicted <= args.pandas_max_gb:
            script = workdir / "pandas_pipeline.py"
            script.write_text(PANDAS_SCRIPT.format(src=str(ROOT / "src")))
            pd_run = measure([sys.executable, str(script), str(folder / f"{CATEGORY}_5.json.gz"),
                              str(folder / f"meta_{CATEGORY}.json.gz"), str(workdir / "pandas_sequences.parquet")],
                             workdir, out / f"pandas_{label}.log")
            pandas_gb_per_m = pandas_gb_per_m or pd_run["peak_gb"] / (n / 1e6)
            row.update(pandas_s=pd_run["wall_s"], pandas_gb=pd_run["peak_gb"])
            if "ours_s" in row:
                row.update(speedup=round(pd_run["wall_s"] / row["ours_s"], 1),
                           memory_ratio=round(row["ours_gb"] / pd_run["peak_gb"], 3))
            print(f"[{label}] pandas: {pd_run}", flush=True)
        else:
            row.update(pandas_skipped=f"predicted {predicted:.0f} GB > {args.pandas_max_gb:.0f} GB")
            print(f"[{label}] pandas skipped: {row['pandas_skipped']}", flush=True)
        rows.append(row)
        _write_results(out, rows, steps)
    first, last = rows[0], rows[-1]
    if "ours_gb" in first and "ours_gb" in last:
        print(f"\npeak memory growth {first['size']} -> {last['size']}: {last['ours_gb'] / first['ours_gb'] - 1:+.0%}")
    for r in rows:
        print(r)


def _write_results(out: Path, rows: list[dict], steps: set[str]) -> None:
    name = "results.json" if "ours" in steps else f"results_{'_'.join(sorted(steps))}.json"
    machine = f"{platform.machine()}, {psutil.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB"
    (out / name).write_text(json.dumps({"date": str(date.today()), "machine": machine, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
