"""The study's 0.989 next to our LLM under its protocol, and what explains the gap.

    kedro run --env=paper --config benchmarks/paper_llm/paper_cpu.yml            # the study's protocol, CPU
    kedro run --env=paper --config benchmarks/paper_llm/leave_last_out_cpu.yml   # the same recipe, leave-last-out
    python benchmarks/paper_llm/analyse.py --run PAPER_RUN --loo LOO_RUN --sequences S --out benchmarks/reported/paper_llm

PAPER_RUN and LOO_RUN hold each run's `metrics.json`, `model_input/` (05_model_input) and `model_output/`
(07_model_output), as copied after the run. It writes `paper_llm.json` and `paper_llm.md`:
1. accuracy, weighted precision / recall / F1 and exact match of every method under both protocols, next to 0.989;
2. the random split: the share of test targets the same reviewer's training prompts already hold, and HR@1 on the
   test windows whose target was and was not held there (in the prompts this model trained on, and in all of the
   reviewer's training windows, as an uncapped run would train on);
3. the mixed catalogue: HR@1 where the three negatives come from the history's own category and where at least one
   comes from another category (a product's category is the review file it comes from).
Nothing is scored again: this reads the predictions each run stored.
"""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd

from amazon_llm_rec.core.metrics import method_metrics, paired_bootstrap
from amazon_llm_rec.pipelines.prompt_engineering import nodes as pe

STUDY = {"accuracy": 0.989, "source": "the study's reported accuracy (its precision, recall, F1 and exact match are as high)"}
COLUMNS = ["accuracy", "precision_weighted", "recall_weighted", "f1_weighted", "exact_match"]
SHOWN = ["zero_shot", "fine_tuned", "fusion", "fusion_no_llm", "cooccurrence", "bm25", "embedding", "popularity", "random"]


def _predictions(run: Path, protocol: str) -> pd.DataFrame:
    """Every method's stored predictions on the trained protocol (LLMs, baselines, fusions); the LLMs' under the
    scoring chosen on validation windows where `choose_scoring.py` chose another than the run's."""
    out = Path(run) / "model_output"
    frames = [pd.read_parquet(out / f) for f in ("llm_predictions.parquet", "baseline_predictions.parquet",
                                                 "fusion_predictions.parquet") if (out / f).exists()]
    preds = pd.concat(frames, ignore_index=True)
    preds = preds[preds["protocol"] == protocol] if "protocol" in preds else preds
    if (out / "llm_predictions_chosen.parquet").exists():
        chosen = pd.read_parquet(out / "llm_predictions_chosen.parquet")
        preds = pd.concat([preds[~preds["method"].isin(set(chosen["method"]))], chosen], ignore_index=True)
    return preds


def _category_of(data: Path, categories: list[str]) -> dict[str, str]:
    """Each product's category: the 5-core review file it appears in."""
    out: dict[str, str] = {}
    for cat in categories:
        with gzip.open(data / f"{cat}_5.json.gz", "rt") as f:
            for line in f:
                try:
                    out.setdefault(json.loads(line)["asin"], cat)
                except (ValueError, KeyError):
                    continue
    return out


def _hr1_by(preds: pd.DataFrame, test: pd.DataFrame, groups: np.ndarray, names: dict) -> dict:
    """HR@1 of each method within each group of test prompts (groups: one label a test prompt, in test order)."""
    out = {}
    for label, name in names.items():
        mask = groups == label
        row = {"prompts": int(mask.sum())}
        for method, group in preds.groupby("method", sort=False):
            g = group.reset_index(drop=True)  # a method scored on the first n test prompts only: those of the group
            n = len(g)
            if n <= len(test) and mask[:n].any():
                row[method] = round(float((g["predicted_letter"] == g["correct_letter"]).to_numpy()[mask[:n]].mean()), 3)
                if n < len(test):
                    row.setdefault("prompts_of_methods_on_fewer", {})[method] = int(mask[:n].sum())
        out[name] = row
    return out


def seen_targets(run: Path, sequences: pd.DataFrame, preds: pd.DataFrame, prompts_params: dict) -> dict:
    """How much the random split explains: test targets already in the same reviewer's training prompts."""
    test = pd.read_parquet(Path(run) / "model_input" / "test_prompts.parquet")
    train = pd.read_parquet(Path(run) / "model_input" / "train_prompts.parquet")
    # all training windows, uncapped: what the study's run (every prompt) trains on
    windows = pe.build_windows(sequences, {**prompts_params, "max_train_prompts": None, "max_validation_prompts": None,
                                           "max_test_prompts": None})
    all_train = windows[windows["split"] == "train"]

    def held(frame: pd.DataFrame) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        for rid, hist, target in zip(frame["reviewer_id"], frame["history_asins"], frame["target_asin"], strict=True):
            out.setdefault(rid, set()).update([*hist, target])
        return out

    out = {}
    for name, frame in (("in_the_trained_prompts", train), ("in_all_training_windows", all_train)):
        seen_items = held(frame)
        seen = np.array([t in seen_items.get(r, ()) for r, t in zip(test["reviewer_id"], test["target_asin"], strict=True)])
        out[name] = {"share_seen": round(float(seen.mean()), 3),
                     "hr1": _hr1_by(preds, test, seen.astype(int), {1: "target_seen", 0: "target_not_seen"})}
    return out


def mixed_negatives(run: Path, preds: pd.DataFrame, category: dict[str, str]) -> dict:
    """How much the mixed catalogue explains: negatives from the history's own category or from another one."""
    test = pd.read_parquet(Path(run) / "model_input" / "test_prompts.parquet")
    groups, hist_cats = [], []
    for hist, cands, target in zip(test["history_asins"], test["candidate_asins"], test["target_asin"], strict=True):
        cats = pd.Series([category.get(a, "?") for a in hist]).value_counts()
        home = cats.index[0]
        hist_cats.append(home)
        negatives = [c for c in cands if c != target]
        groups.append(int(all(category.get(c, "?") == home for c in negatives)))
    groups = np.array(groups)
    out = _hr1_by(preds, test, groups, {1: "all_negatives_from_the_history_category",
                                        0: "a_negative_from_another_category"})
    out["history_categories"] = pd.Series(hist_cats).value_counts().to_dict()
    target_cats = pd.Series([category.get(a, "?") for a in test["target_asin"]]).value_counts().to_dict()
    out["target_categories"] = target_cats
    return out


def _metrics_rows(metrics: dict, preds: pd.DataFrame) -> dict:
    entry = next(iter(metrics["protocols"].values()))
    for method in ("zero_shot", "fine_tuned"):  # recomputed: the scoring may have been chosen after the run
        part = preds[preds["method"] == method]
        if len(part):
            entry["methods"][method] = method_metrics(part.reset_index(drop=True), 1000, 0)
    rows = {}
    for method in SHOWN:
        m = entry["methods"].get(method)
        if m is None:
            continue
        rows[method] = {c: (None if m.get(c) is None else round(float(m[c]), 3)) for c in COLUMNS}
        rows[method]["ci95_accuracy"] = [round(v, 3) for v in m.get("ci95", {}).get("accuracy", [])]
        rows[method]["exact_match_n"] = m.get("exact_match_n")
        rows[method]["reviewers"] = m["reviewers"]
    return {"test_prompts": entry["test_prompts"], "methods": rows}


def _paired_ft(preds: pd.DataFrame) -> dict:
    """Fine-tuned minus zero-shot HR@1, paired over reviewers."""
    by = {m: g.reset_index(drop=True) for m, g in preds.groupby("method", sort=False)}
    if not {"fine_tuned", "zero_shot"} <= set(by):
        return {}
    ft, zs = by["fine_tuned"], by["zero_shot"]
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in paired_bootstrap(
        (ft["predicted_letter"] == ft["correct_letter"]).to_numpy(), (zs["predicted_letter"] == zs["correct_letter"]).to_numpy(),
        ft["reviewer_id"].to_numpy(), 1000, 0).items()}


def _markdown(result: dict) -> str:
    lines = ["# The study's protocol with the LLM, on 2 CPU cores", "",
             f"Study: accuracy {STUDY['accuracy']} ({STUDY['source']}). Ours: {result['model']}.", ""]
    for label, key in (("the study's protocol (3 categories mixed, random 80/10/10 split of windows)", "paper_random"),
                       ("the same recipe under leave-last-out (same 3 categories)", "leave_last_out")):
        if key not in result["runs"]:
            continue
        run = result["runs"][key]
        sc = run["scoring"]
        lines += [f"## {label}: {run['metrics']['test_prompts']} test prompts"
                  + (f" (the LLMs re-scored on the first {sc['test_prompts']} of them)" if "test_prompts" in sc else ""),
                  "",
                  f"LLM scoring: `{sc['chosen']}`" + (f", chosen on {sc['validation_prompts']} validation windows "
                                                    f"(fine-tuned HR@1 there: {sc['validation_hr1']})"
                                                    if "validation_hr1" in sc else "") + ". The fusion was fitted "
                  "on the run's own LLM score (letter logits) and is reported as run.", "",
                  "| method | HR@1 (accuracy) [95% CI] | precision | recall | F1 | exact match (n) |", "|---|---|---|---|---|---|"]
        for method, m in run["metrics"]["methods"].items():
            ci = m["ci95_accuracy"]
            em = "n/a" if m["exact_match"] is None else f"{m['exact_match']:.3f} ({m['exact_match_n']})"
            lines.append(f"| {method} | {m['accuracy']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}] | {m['precision_weighted']:.3f} | "
                         f"{m['recall_weighted']:.3f} | {m['f1_weighted']:.3f} | {em} |")
        if run.get("fine_tuned_vs_zero_shot"):
            d = run["fine_tuned_vs_zero_shot"]
            lines += ["", f"Fine-tuned minus zero-shot HR@1: {d['diff']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}] (paired)."]
        lines += [""]
        for part, title in (("seen_targets", "Test targets already in the same reviewer's training prompts"),
                            ("mixed_negatives", "Negatives from the history's own category or not")):
            block = run.get(part)
            if not block:
                continue
            lines += [f"### {title}", ""]
            groups = block.items() if part == "mixed_negatives" else [
                (f"{g} ({where}, {100 * v['share_seen']:.1f}% seen)", h) for where, v in block.items() for g, h in v["hr1"].items()]
            rows = [(g, h) for g, h in groups if isinstance(h, dict) and "prompts" in h]
            methods = [m for m in SHOWN if any(m in h for _, h in rows)]
            lines += ["| test windows | prompts | " + " | ".join(methods) + " |", "|---|---|" + "---|" * len(methods)]
            for g, h in rows:
                fewer = h.get("prompts_of_methods_on_fewer", {})
                lines.append(f"| {g} | {h['prompts']} | " + " | ".join(
                    (f"{h[m]:.3f}" + (f" (of {fewer[m]})" if m in fewer else "")) if m in h else "n/a" for m in methods) + " |")
            lines += [""]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="the paper_random run's copied outputs")
    parser.add_argument("--loo", type=Path, help="the leave-last-out run's copied outputs")
    parser.add_argument("--sequences", type=Path, required=True, help="reviewer_sequences.parquet of the runs")
    parser.add_argument("--data", type=Path, default=Path("../shared/data/amazon2018"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/reported/paper_llm"))
    args = parser.parse_args()
    import yaml  # noqa: PLC0415

    root = Path(__file__).resolve().parents[2]
    prompts = {**yaml.safe_load((root / "conf/base/parameters_prompt_engineering.yml").read_text())["prompts"],
               **yaml.safe_load((root / "conf/paper/parameters_prompt_engineering.yml").read_text())["prompts"]}
    categories = yaml.safe_load((root / "conf/paper/parameters_data_processing.yml").read_text())["raw"]["category"]
    sequences = pd.read_parquet(args.sequences)
    category = _category_of(args.data, categories)
    result = {"model": "SmolLM2-135M-Instruct, LoRA r 16 in fp32 on 2 CPU cores (not TinyLlama 4-bit QLoRA)",
              "categories": categories, "runs": {}}
    for key, run, split in (("paper_random", args.run, "paper_random"), ("leave_last_out", args.loo, "leave_last_out")):
        if run is None or not (run / "metrics.json").exists():
            continue
        metrics = json.loads((run / "metrics.json").read_text())
        protocol = next(iter(metrics["protocols"]))
        preds = _predictions(run, protocol)
        result["runs"][key] = {
            "metrics": _metrics_rows(metrics, preds),
            "scoring": json.loads((run / "scoring_choice.json").read_text()) if (run / "scoring_choice.json").exists()
            else {"chosen": metrics.get("scoring"), "note": "the run's own scoring, not chosen on validation"},
            "training": json.loads((run / "training_summary.json").read_text()) if (run / "training_summary.json").exists() else None,
            "fine_tuned_vs_zero_shot": _paired_ft(preds),
            "seen_targets": seen_targets(run, sequences, preds, {**prompts, "split": split}),
            "mixed_negatives": mixed_negatives(run, preds, category),
        }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "paper_llm.json").write_text(json.dumps(result, indent=2))
    (args.out / "paper_llm.md").write_text(_markdown(result))
    print(_markdown(result))


if __name__ == "__main__":
    main()
