"""Ingestion at scale: the data_processing pipeline (DuckDB through Ibis) against polars and pandas, side by side.

Writes raw files in the published Amazon Review 2018 format (gzip JSON lines: reviews with every
field and a review text, metadata with description, also_buy, price; the usual mess: unverified
reviews and their verified twins, duplicate pairs, missing optional fields and 'verified', missing,
empty and HTML titles, HTML entities, reviewers with fewer than 5 products) of the sizes asked, then
runs, each in a fresh process whose peak resident memory (the whole process tree, sampled) is taken:

- ours:   `kedro run --pipeline=data_processing` on those files (a scratch copy of conf/, DuckDB, memory_limit
          from parameters_data_processing.yml), reviewer sequences written to Parquet;
- polars: `pl.scan_ndjson` of both files (only the fields used), the same filters lazily (verified, complete,
          dedup, reviewed products' metadata, the project's Arrow title cleaning on polars' batches, first usable
          title else brand + category, min 5 products, sequences), `sink_parquet` (the streaming engine);
- pandas: `pd.read_json(lines=True)` of both files plus the same filters (the project's `clean_title` row by
          row), when its predicted peak (linear in the size, from the first size run) fits `--pandas-max-gb`.

Each side's whole process is timed (`*_s`: start-up and imports included) and so is its own work
(`*_pipeline_s`: Kedro's "Pipeline execution completed in" for ours, the scripts' time after their imports for the
others). The polars and pandas sides must keep the same reviewers as ours, or the benchmark stops.

then prompt_engineering on our outputs, and the count baselines (random, popularity, co-occurrence) on its
test prompts with counts fitted on every sequence (`--steps` picks).

The files hold no malformed JSON lines: pandas' read_json stops at the first one (ours counts and skips
them: tests/pipelines/test_data_processing.py).

    python benchmarks/ingest_benchmark.py --sizes 1M,3M,5M,20M --workdir /tmp/ingest --out benchmarks/reported/ingest
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import threading
import time
from datetime import date
from pathlib import Path

import numpy as np
import psutil
import yaml

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
from amazon_llm_rec.core.data.text import clean_title, leaf_category
reviews_path, meta_path, out, mode, max_words, min_products, verified_default = sys.argv[1:8]
max_words, min_products, verified_default = int(max_words), int(min_products), verified_default == "True"
t0 = time.perf_counter()
r = pd.read_json(reviews_path, lines=True, compression="gzip")
r = r[r["reviewerID"].notna() & r["asin"].notna() & r["unixReviewTime"].notna()]
r = r[r["verified"].fillna(verified_default).astype(bool)]
dedup = r.groupby(["reviewerID", "asin"], as_index=False)["unixReviewTime"].min()
del r
m = pd.read_json(meta_path, lines=True, compression="gzip")
m = m[m["asin"].isin(dedup["asin"].unique())]
m = pd.DataFrame({{"asin": m["asin"], "title": m.get("title"), "brand": m.get("brand", "").fillna(""),
                  "categories": m["category"].map(lambda c: c if isinstance(c, list) else [])}})
# the project's own title cleaning, row by row, then the first usable title of each product (else brand + category)
m["clean"] = [clean_title(t, mode, max_words) for t in m["title"]]
items = m.groupby("asin", sort=True).agg(brand=("brand", "first"), categories=("categories", "first"))
items["title"] = m[m["clean"].str.len() > 0].groupby("asin", sort=False)["clean"].first().reindex(items.index)
missing = items["title"].isna()
items.loc[missing, "title"] = [clean_title(f"{{b}} {{leaf_category(c)}}".strip(), mode, max_words) or None
                               for b, c in zip(items.loc[missing, "brand"], items.loc[missing, "categories"])]
items = items.dropna(subset=["title"]).reset_index()
joined = dedup[dedup["asin"].isin(items["asin"])]
kept = joined[joined.groupby("reviewerID")["asin"].transform("size") >= min_products]
seq = kept.sort_values(["reviewerID", "unixReviewTime", "asin"]).groupby("reviewerID").agg(
    asins=("asin", list), times=("unixReviewTime", list))
seq.reset_index().to_parquet(out)
print(json.dumps({{"reviewers": len(seq), "items": len(items), "seconds": time.perf_counter() - t0}}))
"""

POLARS_SCRIPT = r"""
import sys, time, json
import polars as pl
sys.path.insert(0, {src!r})
from amazon_llm_rec.core.data.text import clean_titles_arrow
from amazon_llm_rec.core.data.text_udfs import backup_titles_arrow
reviews_path, meta_path, out, mode, max_words, min_products, verified_default = sys.argv[1:8]
max_words, min_products, verified_default = int(max_words), int(min_products), verified_default == "True"
t0 = time.perf_counter()
# lazy scans of only the fields used, filters pushed into the scan, run by the streaming engine
reviews = (pl.scan_ndjson(reviews_path, schema={{"reviewerID": pl.String, "asin": pl.String,
                                                 "unixReviewTime": pl.Int64, "verified": pl.Boolean}})
           .filter(pl.col("reviewerID").is_not_null() & pl.col("asin").is_not_null()
                   & pl.col("unixReviewTime").is_not_null() & pl.col("verified").fill_null(verified_default))
           .group_by(["reviewerID", "asin"]).agg(pl.col("unixReviewTime").min()))
meta = (pl.scan_ndjson(meta_path, schema={{"asin": pl.String, "title": pl.String, "brand": pl.String,
                                           "category": pl.List(pl.String)}})
        .with_row_index("_order").join(reviews.select("asin").unique(), on="asin", how="semi")
        .with_columns(pl.col("brand").fill_null(""), pl.col("category").fill_null([]), pl.col("title").fill_null("")))
# the project's vectorised (Arrow) title cleaning, on polars' Arrow batches
clean = pl.col("title").map_batches(lambda s: pl.from_arrow(clean_titles_arrow(s.to_arrow(), mode, max_words)),
                                    return_dtype=pl.String)
backup = pl.struct("brand", "category").map_batches(
    lambda s: pl.from_arrow(backup_titles_arrow(s.struct.field("brand").to_arrow(), s.struct.field("category").to_arrow(),
                                                mode, max_words)), return_dtype=pl.String)
per = (meta.with_columns(clean=clean, backup=backup).sort("_order").group_by("asin")
       .agg(pl.col("clean").filter(pl.col("clean") != "").first().alias("usable"), pl.col("backup").first()))
items = per.with_columns(title=pl.coalesce("usable", pl.when(pl.col("backup") != "").then("backup"))).filter(
    pl.col("title").is_not_null()).select("asin")
joined = reviews.join(items, on="asin", how="semi")
kept = joined.filter(pl.len().over("reviewerID") >= min_products)
seq = (kept.sort(["reviewerID", "unixReviewTime", "asin"]).group_by("reviewerID", maintain_order=True)
       .agg(asins=pl.col("asin"), times=pl.col("unixReviewTime")))
seq.sink_parquet(out)
reviewers = pl.scan_parquet(out).select(pl.len()).collect().item()
print(json.dumps({{"reviewers": reviewers, "seconds": time.perf_counter() - t0}}))
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


def _pipeline_seconds(log: Path) -> float | None:
    """Kedro's own figure for the pipeline (after start-up): 'Pipeline execution completed successfully in X sec'."""
    found = re.search(r"successfully\s+in\s+([0-9.]+)\s+sec", log.read_text())
    return float(found.group(1)) if found else None


def _script_result(log: Path) -> dict:
    """The JSON line a pandas or polars script prints last: its reviewers and its own seconds (after imports)."""
    return json.loads(log.read_text().strip().splitlines()[-1])


def main() -> None:  # noqa: PLR0912, PLR0915 - one side-by-side run, step by step
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1M,5M,20M", help="review counts, e.g. 200K,1M")
    ap.add_argument("--workdir", default="/tmp/ingest_benchmark", help="raw files and outputs (several GB)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "reported" / "ingest"))
    ap.add_argument("--pandas-max-gb", type=float, default=0.8 * psutil.virtual_memory().total / 1e9)
    ap.add_argument("--steps", default="ours,polars,pandas,prompts,baselines",
                    help="which to run: ours (data_processing), polars, pandas, prompts (prompt_engineering on our "
                         "outputs), baselines (random, popularity and co-occurrence on its test prompts, counts fitted on "
                         "every sequence); a size's project folder is kept, so later steps can run alone")
    args = ap.parse_args()
    workdir, out = Path(args.workdir), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    kedro = str(Path(sys.executable).with_name("kedro"))
    steps = set(args.steps.split(","))
    conf = yaml.safe_load((ROOT / "conf/base/parameters_data_processing.yml").read_text())
    processing = conf["processing"]
    cleaning = [processing["title_cleaning"], str(processing["max_title_words"]), str(processing["min_products"]),
                str(bool(conf["raw"]["verified_default"]))]
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
        files = [str(folder / f"{CATEGORY}_5.json.gz"), str(folder / f"meta_{CATEGORY}.json.gz")]
        project = scratch_project(workdir, label, fresh="ours" in steps)
        row = {"size": label, "review_lines": gen["review_lines"], "products": gen["products"], "gzip_mb": gen["gzip_mb"]}
        if "ours" in steps:
            params = f"raw.data_dir={folder},raw.category={CATEGORY}"
            log = out / f"ours_{label}.log"
            ours = measure([kedro, "run", "--pipelines=data_processing", "--params", params], project, log,
                           env={"KEDRO_DISABLE_TELEMETRY": "true"})
            row.update(ours_s=ours["wall_s"], ours_pipeline_s=_pipeline_seconds(log), ours_gb=ours["peak_gb"])
            print(f"[{label}] ours: {ours}, pipeline {row['ours_pipeline_s']} s", flush=True)
        counts = json.loads((project / "data" / "08_reporting" / "data_processing_counts.json").read_text())
        row.update(reviewers=counts["reviewers"], interactions=counts["interactions"])
        for side, script_text in (("polars", POLARS_SCRIPT), ("pandas", PANDAS_SCRIPT)):
            if side not in steps:
                continue
            predicted = pandas_gb_per_m * n / 1e6 if (side == "pandas" and pandas_gb_per_m) else 0.0
            if predicted > args.pandas_max_gb:
                row.update(pandas_skipped=f"predicted {predicted:.0f} GB > {args.pandas_max_gb:.0f} GB")
                print(f"[{label}] pandas skipped: {row['pandas_skipped']}", flush=True)
                continue
            script = workdir / f"{side}_pipeline.py"
            script.write_text(script_text.format(src=str(ROOT / "src")))
            log = out / f"{side}_{label}.log"
            run = measure([sys.executable, str(script), *files, str(workdir / f"{side}_sequences.parquet"), *cleaning],
                          workdir, log)
            own = _script_result(log)
            if own["reviewers"] != row["reviewers"]:
                raise SystemExit(f"{side} kept {own['reviewers']} reviewers, ours {row['reviewers']}: not the same output")
            row.update({f"{side}_s": run["wall_s"], f"{side}_pipeline_s": round(own["seconds"], 1),
                        f"{side}_gb": run["peak_gb"]})
            if side == "pandas":
                pandas_gb_per_m = pandas_gb_per_m or run["peak_gb"] / (n / 1e6)
            if "ours_s" in row:
                row[f"speedup_vs_{side}"] = round(run["wall_s"] / row["ours_s"], 2)
                row[f"memory_ratio_vs_{side}"] = round(row["ours_gb"] / run["peak_gb"], 3)
            print(f"[{label}] {side}: {run}, own {own['seconds']:.1f} s", flush=True)
        if "prompts" in steps:
            pe = measure([kedro, "run", "--pipelines=prompt_engineering"], project, out / f"prompts_{label}.log",
                         env={"KEDRO_DISABLE_TELEMETRY": "true"})
            row.update(prompts_s=pe["wall_s"], prompts_gb=pe["peak_gb"])
            print(f"[{label}] prompt_engineering: {pe}", flush=True)
        if "baselines" in steps:
            script = workdir / "baselines_at_scale.py"
            script.write_text(BASELINES_SCRIPT)
            bl = measure([sys.executable, str(script), str(project / "data")], project, out / f"baselines_{label}.log")
            row.update(baselines_s=bl["wall_s"], baselines_gb=bl["peak_gb"])
            print(f"[{label}] baselines: {bl}", flush=True)
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
