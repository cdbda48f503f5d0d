"""Nodes of the reporting pipeline: metrics in; the Markdown report, summary, plots and error analysis out."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd

from ...core.llm import scoring
from ...core.rank import fusion

METRIC_COLUMNS = ["accuracy", "mrr", "hr@5", "ndcg@5", "hr@10", "ndcg@10", "precision_weighted", "recall_weighted",
                  "f1_weighted", "exact_match"]


def _table(entry: dict[str, Any]) -> list[str]:
    first = next(iter(entry["methods"].values()))
    cols = [c for c in METRIC_COLUMNS if c in first and any(m.get(c) is not None for m in entry["methods"].values())]
    lines = ["| method | reviewers | " + " | ".join("HR@1" if c == "accuracy" else c for c in cols) + " |",
             "|---|---|" + "---|" * len(cols)]
    for name, m in entry["methods"].items():
        lines.append(f"| {name} | {m['reviewers']} | " + " | ".join(_cell(m, c) for c in cols) + " |")
    return lines


def render_report(metrics: dict[str, Any]) -> str:
    """Render the metrics as Markdown: one table per protocol."""
    lines = [f"# Evaluation: {len(metrics.get('protocols', {}))} protocol(s)", ""]
    for name, entry in metrics.get("protocols", {"main": metrics}).items():
        lines += [f"## {name}: {entry['test_prompts']} test prompts, {entry['num_options']} candidates each", ""]
        lines += _table(entry) + [""]
    t = metrics.get("training", {})
    trained_on = f"{t['groups']} candidate groups (objective group_softmax)" if "groups" in t \
        else f"{t.get('train_prompts')} training prompts"
    lines += [f"Fine-tuned: {t.get('base_model', 'base model')}, backend {t.get('backend')}, {trained_on}, "
              f"{t.get('steps')} steps ({t.get('epochs', 0):.2f} epochs) in {t.get('train_seconds')} s on {t.get('device')}.",
              f"LLM prediction: the option with the highest score (scoring `{metrics.get('scoring')}`; "
              f"title_likelihood = the log-probability of the option's answer tokens, as `{metrics.get('title_score')}`: "
              "mean per token, sum, or pmi, the sum minus the title's after a prompt without history; letter_logits = "
              "next-token log-probability of the option letter)"
              + (", averaged over the cyclic permutations of the options." if metrics.get("permutation_average") else "."),
              "Exact match: greedy generation equals the answer the model was trained to write (the paper's metric), "
              "on the first `exact_match_max_prompts` test prompts of the first protocol. "
              "Brackets: 95% bootstrap intervals, resampling test reviewers.", ""]
    return "\n".join(lines)


def _accuracy_interval(m: dict[str, Any]) -> list[float]:
    """The HR@1 interval, or the point estimate twice when intervals are off."""
    return m.get("ci95", {}).get("accuracy", [m["accuracy"]] * 2)


def _verdict(metrics: dict[str, Any]) -> list[str]:
    """Plain sentences: per protocol, does the fine-tuned model beat every baseline and its zero-shot self?"""
    out = []
    for name, entry in metrics.get("protocols", {}).items():
        methods = entry["methods"]
        if "fine_tuned" not in methods:
            continue
        ft = methods["fine_tuned"]
        lo = _accuracy_interval(ft)[0]
        others = {m: v for m, v in methods.items() if m != "fine_tuned"}
        best = max(others, key=lambda m: others[m]["accuracy"])
        b = others[best]
        b_hi = _accuracy_interval(b)[1]
        if lo > b_hi:
            verdict = "**wins**: its interval lies above every other method's"
        elif ft["accuracy"] > b["accuracy"]:
            verdict = "is ahead but **not significantly** (intervals overlap)"
        else:
            verdict = "**loses**"
        beaten = [m for m, v in others.items() if lo > _accuracy_interval(v)[1]]
        out.append(f"- {name}: fine-tuned HR@1 {ft['accuracy']:.3f} vs best other method {best} {b['accuracy']:.3f}: "
                   f"it {verdict}. Beaten with non-overlapping intervals: {', '.join(beaten) or 'none'}.")
    return out


def _paired_section(metrics: dict[str, Any], fusion_model: dict[str, Any] | None) -> list[str]:
    """Per protocol: the recommended method minus every other method, paired intervals, one sentence."""
    method = metrics["recommended"]
    lines = [f"## The recommended method (`{method}`) against every other method, paired", "",
             "Differences of HR@1 and MRR on the same test prompts; 95% paired bootstrap intervals (each resample "
             "draws test reviewers and uses them for both methods). A method is beaten where the interval lies above 0.",
             ""]
    any_paired = False
    for name, entry in metrics.get("protocols", {}).items():
        paired = entry.get("paired") or {}
        if not paired:
            continue
        any_paired = True
        ours = entry["methods"][method]["accuracy"]
        lines += [f"### {name} ({entry['methods'][method]['reviewers']} reviewers): {method} HR@1 {ours:.3f}", "",
                  "| other method | its HR@1 | HR@1 difference [95% CI] | MRR difference [95% CI] | beaten |",
                  "|---|---|---|---|---|"]
        for other, d in sorted(paired.items(), key=lambda kv: -entry["methods"][kv[0]]["accuracy"]):
            h, m = d["hr1"], d["mrr"]
            lines.append(f"| {other} | {entry['methods'][other]['accuracy']:.3f} | {h['diff']:+.3f} [{h['lo']:+.3f}, "
                         f"{h['hi']:+.3f}] | {m['diff']:+.3f} [{m['lo']:+.3f}, {m['hi']:+.3f}] | "
                         f"{'yes' if h['lo'] > 0 else 'no'} |")
        lost = [o for o, d in paired.items() if d["hr1"]["hi"] < 0]
        tied = [o for o, d in paired.items() if d["hr1"]["lo"] <= 0 <= d["hr1"]["hi"]]
        if not lost and not tied:
            sentence = f"{method} beats every other method here (every HR@1 interval lies above 0)."
        else:
            sentence = (f"{method} does **not** beat every method here: "
                        + "; ".join(p for p in (f"significantly worse than {', '.join(lost)}" if lost else "",
                                                f"not significantly different from {', '.join(tied)}" if tied else "")
                                    if p) + ".")
        lines += ["", sentence, ""]
    if not any_paired:
        return []
    for variant, model in (fusion_model or {}).items():
        weights = ", ".join(f"{n} {w:+.3f}" for n, w in zip(model["features"], model["weights"], strict=True))
        lines.append(f"- `{variant}` weights per standard deviation of each feature (fitted on {model['windows']} "
                     f"validation windows of {model['candidates']} candidates, L2 {model['l2']}): {weights}.")
    descriptions = [f"`{n}`: {fusion.DESCRIPTIONS[n]}" for n in fusion.FEATURES
                    if any(n in m["features"] for m in (fusion_model or {}).values())]
    if descriptions:
        lines += ["- Features: " + "; ".join(descriptions) + ". " + _count_sentence(metrics), ""]
    return lines


def _count_sentence(metrics: dict[str, Any]) -> str:
    """What the counts behind the features saw, exactly, for the split this run used."""
    if metrics.get("split") == "global_time":
        return ("Counts (co-occurrence, popularity, SASRec) come from every reviewer's events before the test cutoff "
                "date (validation: before the validation cutoff): no count sees an event of the test period.")
    return ("Counts come from each test reviewer's sequence before their earliest test window, and from every other "
            "reviewer's whole sequence: a window never sees its own target or its reviewer's later events, but the "
            "counts include other reviewers' events, some of them after the window's date (standard for "
            f"{metrics.get('split') or 'this split'}; `prompts.split: global_time` removes them).")


def write_report(metrics: dict[str, Any], split_leakage: dict[str, Any], error_analysis: pd.DataFrame,
                 fusion_model: dict[str, Any] | None = None, catalogue_metrics: dict[str, Any] | None = None) -> str:
    """Write the whole evaluation report: tables per protocol, paired comparisons, plots, bias, leakage, errors."""
    lines = [render_report(metrics), "![HR@1 and MRR per protocol](metrics.png)", ""]
    lines += _paired_section(metrics, fusion_model)
    lines += catalogue_section(catalogue_metrics)
    lines += ["## Where the fine-tuned model wins and where it does not", ""]
    lines += _verdict(metrics) or ["- no fine-tuned model was scored."]
    qualifying = {n: e for n, e in metrics.get("protocols", {}).items() if "qualifying_windows" in e}
    if qualifying:
        lines += ["", "Retrieved candidates (LlamaRec's protocol): the co-occurrence retriever's top N products are the "
                  "candidates, and only the test windows whose true next product is among them are kept: "
                  + ", ".join(f"{n}: {e['qualifying_windows']} of {e['eligible_windows']} windows "
                              f"({100 * e['qualifying_windows'] / e['eligible_windows']:.1f}%)" for n, e in qualifying.items())
                  + ". Co-occurrence there is the retriever's own order: the method a re-ranker must beat."]
    lines += ["", "## Position bias (first protocol)", "", "![accuracy by position of the true option](position_bias.png)",
              "", "| method | " + " | ".join(next(iter(metrics["methods"].values()))["accuracy_by_position"]) + " |",
              "|---|" + "---|" * len(next(iter(metrics["methods"].values()))["accuracy_by_position"])]
    for name, m in metrics["methods"].items():
        lines.append(f"| {name} | " + " | ".join(f"{v:.2f}" for v in m["accuracy_by_position"].values()) + " |")
    passes = {n: m["prompt_passes"] for n, m in metrics["methods"].items() if "prompt_passes" in m}
    if passes:
        lines += ["", f"LLM forward passes over the prompts: {passes} "
                  + ("(cyclic-permutation averaging: one pass per option order)." if metrics.get("permutation_average")
                     else "(`evaluation.permutation_average: true` averages over the k cyclic orders at k times the passes).")]
    lines += ["", "## Split leakage", "",
              "How much of each test prompt the training prompts already reveal, for each split of the same sequences:", "",
              "| split | train prompts | test prompts | test reviewer also in training | test target in the same reviewer's "
              "training prompts | test prompt earlier than one of the reviewer's training prompts |", "|---|---|---|---|---|---|"]
    for split, v in split_leakage.items():
        lines.append(f"| {split} | {v['train_prompts']} | {v['test_prompts']} | {100 * v['test_reviewer_in_train']:.1f}% | "
                     f"{100 * v['test_target_in_same_reviewers_train_prompts']:.1f}% | "
                     f"{100 * v['test_prompt_before_a_train_prompt']:.1f}% |")
    lines += ["", "## Training", "", "![loss curves](loss_curves.png)", "",
              f"## Error analysis: {len(error_analysis)} wrong fine-tuned predictions (first protocol)", "",
              "All of them: `error_analysis.csv`. The first five:", ""]
    for _, row in error_analysis.head(5).iterrows():
        lines.append(f"- predicted `{row['prediction']}`, truth `{row['truth']}` (rank {row['truth_rank']})")
    return "\n".join(lines) + "\n"


def comparison_summary(metrics: dict[str, Any], catalogue_metrics: dict[str, Any], raw: dict[str, Any],
                       evaluation: dict[str, Any]) -> dict[str, Any]:
    """Machine-readable result: per protocol, the recommended method's HR@1 and its paired differences, fine-tuned
    against zero-shot, and the whole-catalogue ranker against the fusion without the LLM."""
    method = metrics["recommended"]
    protocols = {}
    for name, entry in metrics.get("protocols", {}).items():
        if method not in entry["methods"]:
            continue
        m = entry["methods"][method]
        protocols[name] = {
            "reviewers": m["reviewers"], "method": method, "hr1": m["accuracy"], "mrr": m["mrr"],
            **({"ndcg@10": m["ndcg@10"]} if "ndcg@10" in m else {}),
            "vs": {o: {k: round(v, 4) for k, v in d["hr1"].items() if k != "reviewers"}
                   for o, d in (entry.get("paired") or {}).items()},
            "beats_every_other_method": bool(entry.get("paired"))
            and all(d["hr1"]["lo"] > 0 for d in entry["paired"].values()),
        }
        if "fine_tuned_vs_zero_shot" in entry:
            protocols[name]["fine_tuned_vs_zero_shot"] = {k: round(v, 4) for k, v in
                                                          entry["fine_tuned_vs_zero_shot"]["hr1"].items() if k != "reviewers"}
    category = raw.get("category")
    return {"dataset": ", ".join(category) if isinstance(category, list) else category,
            "command": evaluation["command"], "date": time.strftime("%Y-%m-%d"),
            "protocols": protocols, **_catalogue_summary(catalogue_metrics)}


def _catalogue_summary(catalogue_metrics: dict[str, Any]) -> dict[str, Any]:
    """The whole-catalogue result: the LLM re-ranker's (`fusion`; else the configured ranker's) Recall@k and its
    paired difference to the same fusion without the LLM."""
    if not catalogue_metrics or not catalogue_metrics.get("methods"):
        return {}
    k, methods = catalogue_metrics["k"], catalogue_metrics["methods"]
    method = "fusion" if "fusion" in methods else catalogue_metrics["ranker"]
    metric = f"recall@{k}"
    out = {"reviewers": catalogue_metrics["reviewers"], "method": method, "metric": metric,
           "value": round(methods[method][metric], 4)}
    paired = catalogue_metrics.get("fusion_vs_fusion_no_llm")
    if paired:
        out["vs_fusion_no_llm"] = {key: round(v, 4) for key, v in paired[metric].items() if key != "reviewers"}
    return {"catalogue": out}


def _cell(m: dict[str, Any], col: str) -> str:
    if m.get(col) is None:
        return "n/a"
    ci = m.get("ci95", {}).get(col)
    return f"{m[col]:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else f"{m[col]:.3f}"


def plot_metrics(metrics: dict[str, Any]):
    """Bar chart of HR@1 and MRR per method, with 95% intervals: one panel per protocol."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    protocols = metrics.get("protocols", {"main": metrics})
    fig, axes = plt.subplots(len(protocols), 1, figsize=(9, 3.6 * len(protocols)), squeeze=False)
    for ax, (name, entry) in zip(axes[:, 0], protocols.items(), strict=True):
        names = list(entry["methods"])
        x = np.arange(len(names))
        for offset, key, label in ((-0.2, "accuracy", "HR@1 (accuracy)"), (0.2, "mrr", "MRR")):
            values = [entry["methods"][n][key] for n in names]
            cis = [entry["methods"][n].get("ci95", {}).get(key) for n in names]
            err = None if any(c is None for c in cis) else np.array(
                [[v - c[0] for v, c in zip(values, cis, strict=True)], [c[1] - v for v, c in zip(values, cis, strict=True)]])
            ax.bar(x + offset, values, 0.4, yerr=err, capsize=3, label=f"{label}, 95% CI")
        ax.axhline(1 / entry["num_options"], color="grey", ls="--", lw=1, label="chance")
        ax.set_xticks(x, names, rotation=15)
        ax.set_ylim(0, 1)
        ax.set_title(f"{name}: {entry['test_prompts']} test prompts, {entry['num_options']} candidates")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_position_bias(metrics: dict[str, Any]):
    """Accuracy by the position of the true option, per method, for the first protocol."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, ax = plt.subplots(figsize=(8, 4))
    for name, m in metrics["methods"].items():
        by_pos = m.get("accuracy_by_position", {})
        style = "-o" if name in {"zero_shot", "fine_tuned"} else ":."
        ax.plot(list(by_pos), list(by_pos.values()), style, label=name)
    ax.axhline(1 / metrics["num_options"], color="grey", ls="--", lw=1, label="chance")
    ax.set_xlabel("position (letter) of the true option")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.set_title(f"Position bias, {metrics['num_options']} options ({metrics['test_prompts']} test prompts)")
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    return fig


def error_analysis(llm_predictions: pd.DataFrame, test_prompts: pd.DataFrame) -> pd.DataFrame:
    """List the fine-tuned model's wrong predictions with the prompt, the prediction and the truth."""
    tuned = llm_predictions[llm_predictions["method"] == "fine_tuned"]
    if "protocol" in tuned:  # the first protocol is the trained one, whose prompts are test_prompts
        tuned = tuned[tuned["protocol"] == tuned["protocol"].iloc[0]]
    tuned = tuned.reset_index(drop=True)
    wrong = tuned["predicted_letter"] != tuned["correct_letter"]
    options = scoring.option_lines(test_prompts)
    pred_text = [next((o for o in opts if o.startswith(f"{p})")), p) for opts, p in zip(options, tuned["predicted_letter"], strict=True)]
    out = pd.DataFrame(
        {
            "reviewer_id": tuned["reviewer_id"],
            "prompt": test_prompts["input"],
            "prediction": pred_text,
            "truth": test_prompts["output"],
            "truth_rank": tuned["truth_rank"],
            "generated": tuned["generated"],
        }
    )
    return out[wrong.to_numpy()].reset_index(drop=True)


def catalogue_section(metrics: dict[str, Any] | None) -> list[str]:
    """Markdown lines for report.md: the whole-catalogue table and the paired differences."""
    if not metrics or not metrics.get("methods"):
        return []
    k, n, ranker = metrics["k"], metrics["num_candidates"], metrics["ranker"]
    cols = [f"recall@{k}", f"ndcg@{k}", f"mrr@{k}"]
    lo, hi = metrics[f"retriever_recall@{n}_ci95"]
    lines = ["## Whole catalogue: two-stage recommendation", "",
             f"{metrics['reviewers']} test reviewers, {metrics['catalogue_size']} products, the products each reviewer "
             f"bought before left out. The retriever ({' + '.join(metrics['retrieval_sources'])}) finds the true next "
             f"product among its {n} candidates for {100 * metrics[f'retriever_recall@{n}']:.1f}% "
             f"[{100 * lo:.1f}, {100 * hi:.1f}] of them; `{ranker}` re-ranks them. The baselines rank the whole "
             "catalogue themselves.", "",
             "| method | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for name, m in metrics["methods"].items():
        cells = [f"{m[c]:.3f} [{m['ci95'][c][0]:.3f}, {m['ci95'][c][1]:.3f}]" for c in cols]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if metrics.get("paired"):
        lines += ["", f"Paired differences, `{ranker}` minus each method (95% interval, reviewers resampled):", "",
                  "| method | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
        for name, d in metrics["paired"].items():
            lines.append(f"| {name} | " + " | ".join(f"{d[c]['diff']:+.3f} [{d[c]['lo']:+.3f}, {d[c]['hi']:+.3f}]"
                                                     for c in cols) + " |")
        beaten = [o for o, d in metrics["paired"].items() if d[cols[0]]["lo"] > 0]
        lost = [o for o, d in metrics["paired"].items() if d[cols[0]]["hi"] < 0]
        lines += ["", f"On Recall@{k}, `{ranker}` is ahead of {', '.join(beaten) or 'no method'} with an interval above 0"
                  + (f", and behind {', '.join(lost)} with an interval below 0." if lost else "; the rest are not told apart.")]
    lines += ["", "Seconds per method (retrieval included for the re-rankers): "
              + ", ".join(f"{m} {s:.1f}" for m, s in metrics["seconds"].items()), ""]
    return lines
