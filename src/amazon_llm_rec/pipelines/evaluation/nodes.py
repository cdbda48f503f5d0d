"""Nodes of the evaluation pipeline: LLM scoring, baselines, metrics, report, plot, error analysis."""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import pandas as pd

from ...core import baselines, catalogue, fusion, recommender, scoring
from ...core.errors import ConfigError
from ...core.metrics import method_metrics, paired_bootstrap
from ...core.models import load_model, load_tokenizer, resolve_device, use_bf16
from ...core.sharding import Shard, join_shards
from ...core.training import completion_text

logger = logging.getLogger(__name__)


def prior_matrix(title_priors: pd.DataFrame | None, candidates: list[list[str]]) -> np.ndarray | None:
    """The title priors [N, K] of each prompt's candidates (None without priors); a product without one is an error."""
    if title_priors is None or title_priors.empty:
        return None
    prior = dict(zip(title_priors["asin"], title_priors["prior"], strict=True))
    missing = {a for row in candidates for a in row} - set(prior)
    if missing:
        raise ConfigError(f"title_priors has no prior for {len(missing)} candidate products (e.g. {sorted(missing)[:3]}): "
                          "re-run the fine_tuning pipeline's compute_title_priors for these items")
    return np.array([[prior[a] for a in row] for row in candidates], dtype=float)


def _scores(model, tokenizer, prompts: pd.DataFrame, evaluation: dict[str, Any], target: str, desc: str,
            title_priors: pd.DataFrame | None = None) -> np.ndarray:
    batch = int(evaluation["batch_size"])
    mode = evaluation.get("scoring", "title_likelihood")
    pad = evaluation.get("pad_to_multiple_of")
    if mode == "letter_logits":
        if _pointwise(prompts):
            raise ConfigError("evaluation.scoring: letter_logits needs option prompts (prompts.style: options); "
                              "pointwise prompts are scored by title_likelihood")
        return scoring.score_options(model, tokenizer, prompts, batch, desc=desc, pad_to_multiple_of=pad)
    if mode == "title_likelihood":
        answer = "letter_and_title" if target == "letter_and_title" else "title"
        how = evaluation.get("title_score", "mean")
        if how == "pmi" and answer != "title":
            raise ConfigError("evaluation.title_score: pmi needs answers that are titles (fine_tuning.target: title)")
        priors = prior_matrix(title_priors, prompts["candidate_asins"].tolist()) if how == "pmi" else None
        return scoring.score_titles(model, tokenizer, prompts, batch, desc=desc, target=answer, pad_to_multiple_of=pad,
                                    options_per_pass=evaluation.get("options_per_pass", 5), title_score=how,
                                    priors=priors)
    raise ConfigError(f"evaluation.scoring must be 'title_likelihood' or 'letter_logits', got {mode!r}")


def _pointwise(prompts: pd.DataFrame) -> bool:
    """Pointwise prompts show no options: nothing to permute, no letters to read."""
    return "style" in prompts and bool((prompts["style"] == "pointwise").all())


def _score_model(name: str, model, tokenizer, prompts: pd.DataFrame, evaluation: dict[str, Any], target: str,
                 generate: bool = True, positions: np.ndarray | None = None,
                 title_priors: pd.DataFrame | None = None) -> pd.DataFrame:
    """Score the prompts; generate answers (exact match) for those at `positions` below the cap (default: the
    first rows), so that a shard generates for the prompts one unsharded run would."""
    if prompts.empty:  # a shard without reviewers of this protocol
        return pd.DataFrame(columns=["method", "reviewer_id", "target_asin", "correct_letter", "predicted_letter",
                                     "truth_rank", "scores", "num_options", "generated", "expected_output"])
    mode = evaluation.get("scoring", "title_likelihood")
    k = len(prompts["candidate_asins"].iloc[0])
    orders = k if evaluation.get("permutation_average", False) and not _pointwise(prompts) else 1
    start = time.perf_counter()
    scores = np.zeros((len(prompts), k))
    for shift in range(orders):  # cyclic permutations: every option is shown once at every position
        shown = scoring.rotate_options(prompts, shift) if shift else prompts
        desc = f"scoring {name}" + (f" (order {shift + 1}/{orders})" if orders > 1 else "")
        scores += np.roll(_scores(model, tokenizer, shown, evaluation, target, desc, title_priors), -shift,
                          axis=1) / orders
    seconds = time.perf_counter() - start
    answers = None
    cap = evaluation.get("exact_match_max_prompts")
    if generate and cap != 0:
        at = np.arange(len(prompts)) if positions is None else np.asarray(positions)
        chosen = np.ones(len(prompts), bool) if cap is None else at < int(cap)
        generated = iter(scoring.generate_answers(model, tokenizer, prompts[chosen].reset_index(drop=True),
                                                  int(evaluation["max_new_tokens"]), int(evaluation["batch_size"]),
                                                  desc=f"generating {name}"))
        answers = [next(generated) if c else None for c in chosen]
    logger.info("%s: scored %d prompts (%s, %d order(s)) in %.1f s (%.1f prompts/s)", name, len(prompts), mode,
                orders, seconds, len(prompts) / seconds)
    expected = completion_text(prompts, target)
    extra = {"score_seconds": seconds, "scoring": mode, "orders": orders, "prompt_passes": orders * len(prompts),
             "title_score": evaluation.get("title_score", "mean") if mode == "title_likelihood" else None}
    return scoring.predictions_frame(name, prompts, scores, answers, extra, expected=expected)


def _by_protocol(prompts: pd.DataFrame):
    """Yield (protocol, its prompts) in stored order; prompts without the column are one protocol, `main`."""
    if "protocol" not in prompts:
        yield "main", prompts.reset_index(drop=True)
        return
    for name in prompts["protocol"].unique():
        yield name, prompts[prompts["protocol"] == name].reset_index(drop=True)


def score_llms(test_protocol_prompts: pd.DataFrame, base_model: str, lora_adapter: str,
               training_summary: dict[str, Any], title_priors: pd.DataFrame,
               evaluation: dict[str, Any]) -> dict[str, pd.DataFrame]:
    """Score this shard's (`evaluation.shard`) test prompts of every protocol, zero-shot then fine-tuned.

    Exact match (generation) runs on the first protocol only: the one the model was trained on."""
    from peft import PeftModel  # noqa: PLC0415

    shard = Shard.from_params(evaluation, "evaluation")
    whole = test_protocol_prompts
    position = whole.groupby("protocol").cumcount() if "protocol" in whole else pd.Series(np.arange(len(whole)))
    test_protocol_prompts = shard.take(whole.assign(_position=position.to_numpy()))
    logger.info("Scoring %s: %d of %d test prompts", shard.name, len(test_protocol_prompts), len(whole))

    device = resolve_device(evaluation.get("device", "auto"))
    dtype = "bfloat16" if use_bf16(evaluation.get("bf16", "auto"), device) else "float32"
    tokenizer = load_tokenizer(lora_adapter)
    model = load_model(base_model, dtype, quantization=evaluation.get("quantization"), device=device)
    target = training_summary.get("target", "letter_and_title")
    _check_trained_score(training_summary, evaluation)
    protocols = list(_by_protocol(test_protocol_prompts))
    allowed = evaluation.get("llm_protocols")
    frames = []
    for method in ("zero_shot", "fine_tuned"):
        if method == "fine_tuned":
            model = PeftModel.from_pretrained(model, lora_adapter)
        for i, (name, prompts) in enumerate(protocols):
            if allowed is not None and i > 0 and name not in allowed:
                continue
            frames.append(_score_model(method, model, tokenizer, prompts.drop(columns="_position"), evaluation, target,
                                       generate=i == 0, positions=prompts["_position"].to_numpy(),
                                       title_priors=title_priors)
                          .assign(protocol=name, prompt_row=prompts["_position"].to_numpy()))
    return {shard.name: pd.concat(frames, ignore_index=True)}


def join_llm_predictions(llm_prediction_shards: dict[str, Any], test_protocol_prompts: pd.DataFrame,
                         evaluation: dict[str, Any]) -> pd.DataFrame:
    """Join the shards' LLM predictions, in the order one unsharded run writes, once every shard is there."""
    return _join_llm_shards(llm_prediction_shards, test_protocol_prompts, Shard.from_params(evaluation, "evaluation"),
                            "llm_prediction_shards")


def _join_llm_shards(partitions: dict[str, Any], prompts: pd.DataFrame, shard: Shard, dataset: str) -> pd.DataFrame:
    """Join LLM prediction shards in the prompts' own order (each row carries its `prompt_row`): the fusion reads
    them by position."""
    parts = {name: part() if callable(part) else part for name, part in partitions.items()}
    groups = ("method", "protocol") if "protocol" in prompts else ("method",)
    joined = join_shards(parts, shard, prompts["reviewer_id"], dataset, groups=groups, order="prompt_row")
    run_level = [c for c in ("score_seconds", "prompt_passes") if c in joined]
    if shard.count == 1 or not run_level:
        return joined
    # per (method[, protocol]) these are one figure a shard: the whole run's is their sum
    ours = [p for n, p in parts.items() if n.endswith(f"-of-{shard.count}") and len(p)]
    totals = pd.concat([p.groupby(list(groups))[run_level].first() for p in ours]).groupby(level=list(groups)).sum()
    return joined.drop(columns=run_level).merge(totals.reset_index(), on=list(groups), how="left")[joined.columns]


def _check_trained_score(training_summary: dict[str, Any], evaluation: dict[str, Any]) -> None:
    """A ranking-trained adapter is scored the way it was trained (its title score), or not at all."""
    trained = training_summary.get("title_score")
    if trained and trained != evaluation.get("title_score", "mean"):
        raise ConfigError(f"the adapter was trained on title score {trained!r} but evaluation.title_score is "
                          f"{evaluation.get('title_score', 'mean')!r}: score it as it was trained")


def score_validation_llm(validation_prompts: pd.DataFrame, base_model: str, lora_adapter: str,
                         training_summary: dict[str, Any], title_priors: pd.DataFrame,
                         evaluation: dict[str, Any]) -> dict[str, pd.DataFrame]:
    """Score this shard's (`evaluation.shard`) validation prompts with the fine-tuned adapter: the LLM feature
    the fusion is fitted on."""
    from peft import PeftModel  # noqa: PLC0415

    shard = Shard.from_params(evaluation, "evaluation")
    if "llm" not in _fusion_params(evaluation)["features"]:
        return {shard.name: pd.DataFrame(columns=["method", "reviewer_id", "scores"])}
    device = resolve_device(evaluation.get("device", "auto"))
    dtype = "bfloat16" if use_bf16(evaluation.get("bf16", "auto"), device) else "float32"
    model = PeftModel.from_pretrained(
        load_model(base_model, dtype, quantization=evaluation.get("quantization"), device=device), lora_adapter)
    target = training_summary.get("target", "letter_and_title")
    _check_trained_score(training_summary, evaluation)
    prompts = shard.take(validation_prompts.assign(_position=np.arange(len(validation_prompts))))
    logger.info("Scoring %s: %d of %d validation prompts", shard.name, len(prompts), len(validation_prompts))
    scored = _score_model("fine_tuned", model, load_tokenizer(lora_adapter), prompts.drop(columns="_position"),
                          evaluation, target, generate=False, title_priors=title_priors)
    return {shard.name: scored.assign(prompt_row=prompts["_position"].to_numpy())}


def join_validation_llm_predictions(validation_llm_prediction_shards: dict[str, Any], validation_prompts: pd.DataFrame,
                                    evaluation: dict[str, Any]) -> pd.DataFrame:
    """Join the shards' validation scores, in the order one unsharded run writes, once every shard is there."""
    shard = Shard.from_params(evaluation, "evaluation")
    if "llm" not in _fusion_params(evaluation)["features"]:
        return pd.DataFrame(columns=["method", "reviewer_id", "scores"])
    return _join_llm_shards(validation_llm_prediction_shards, validation_prompts, shard,
                            "validation_llm_prediction_shards")


def _fusion_params(evaluation: dict[str, Any]) -> dict[str, Any]:
    params = {"features": ["llm", "cooccurrence", "cooccurrence_all", "popularity", "bm25", "embedding"],
              "l2": 1e-3, "recommended": "fusion", **(evaluation.get("fusion") or {})}
    params["features"] = fusion.check_features(list(params["features"]))
    return params


def candidate_features(prompts: pd.DataFrame, reviewer_sequences: pd.DataFrame, items: pd.DataFrame,
                       evaluation: dict[str, Any]) -> pd.DataFrame:
    """Compute the fusion's evidence for every candidate of every protocol (long form: prompt, candidate), all on the
    counts cut for the whole prompt set."""
    names = [n for n in _fusion_params(evaluation)["features"] if n != "llm"]
    frames, cache = [], {}
    for protocol, part in _by_protocol(prompts):
        start = time.perf_counter()
        values = fusion.candidate_features(part, reviewer_sequences, items, names, evaluation, cache, fit_on=prompts)
        frames.append(fusion.features_frame(part, values, protocol))
        logger.info("Fusion features %s for %d prompts of %s in %.1f s", names, len(part), protocol,
                    time.perf_counter() - start)
    return pd.concat(frames, ignore_index=True)


def _with_llm(features: pd.DataFrame, llm: pd.DataFrame) -> pd.DataFrame:
    """Add the fine-tuned LLM's per-candidate score as the `llm` column (rows in the same prompt order)."""
    tuned = llm[llm["method"] == "fine_tuned"]
    parts = []
    for protocol, part in features.groupby("protocol", sort=False):
        scores = tuned[tuned["protocol"] == protocol] if "protocol" in tuned else tuned
        if scores.empty:
            continue
        matrix = np.stack(scores["scores"].to_list())
        ordered = part.sort_values(["row", "option"])
        parts.append(ordered.assign(llm=matrix[ordered["row"].to_numpy(), ordered["option"].to_numpy()]))
    return pd.concat(parts, ignore_index=True) if parts else features.iloc[:0].assign(llm=[])


def fit_fusion(validation_features: pd.DataFrame, validation_llm_predictions: pd.DataFrame,
               evaluation: dict[str, Any]) -> dict[str, Any]:
    """Fit the fusion on validation windows only: with the LLM's score (`fusion`) and without (`fusion_no_llm`)."""
    params = _fusion_params(evaluation)
    names = params["features"]
    frame = _with_llm(validation_features, validation_llm_predictions.assign(protocol="main")) if "llm" in names \
        else validation_features
    if frame.empty:
        raise ConfigError("evaluation.fusion: the fine-tuned LLM scored no validation prompt")
    x, y = fusion.to_tensor(frame, names)
    out = {}
    for variant, used in (("fusion", names), ("fusion_no_llm", [n for n in names if n != "llm"])):
        if not used or (variant == "fusion" and "llm" not in names):
            continue
        cols = [names.index(n) for n in used]
        out[variant] = fusion.fit_conditional_logit(x[..., cols], y, used, float(params["l2"]))
        logger.info("Fitted %s on %d validation windows: %s", variant, len(y),
                    {n: round(w, 3) for n, w in zip(used, out[variant]["weights"], strict=True)})
    return out


def score_fusion(test_features: pd.DataFrame, llm_predictions: pd.DataFrame, test_protocol_prompts: pd.DataFrame,
                 fusion_model: dict[str, Any]) -> pd.DataFrame:
    """Score every protocol's stored candidates with the fitted fusions (protocols the LLM scored, for `fusion`)."""
    frames = []
    with_llm = _with_llm(test_features, llm_predictions) if "fusion" in fusion_model else None
    for protocol, prompts in _by_protocol(test_protocol_prompts):
        for variant, model in fusion_model.items():
            source = with_llm if "llm" in model["features"] else test_features
            part = source[source["protocol"] == protocol]
            if part.empty:
                continue
            x, _ = fusion.to_tensor(part, model["features"])
            frames.append(scoring.predictions_frame(variant, prompts, fusion.apply_fusion(model, x))
                          .assign(protocol=protocol))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["method", "protocol"])


def evaluate_catalogue(test_prompts: pd.DataFrame, reviewer_sequences: pd.DataFrame, items: pd.DataFrame,
                       fusion_model: dict[str, Any], base_model: str, lora_adapter: str, title_priors: pd.DataFrame,
                       recommend: dict[str, Any], evaluation: dict[str, Any],
                       prompts: dict[str, Any]) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Rank the whole catalogue for the test reviewers: the two-stage recommender against full-catalogue baselines."""
    params = (recommend or {}).get("evaluation") or {}
    cap = params.get("max_reviewers")
    windows = test_prompts if cap is None else test_prompts.iloc[: int(cap)]
    if not len(windows):
        return pd.DataFrame(columns=["method", "reviewer_id"]), {}
    return catalogue.evaluate_catalogue(
        windows.reset_index(drop=True), reviewer_sequences, items, fusion_model, recommend, evaluation,
        recommender.llm_source(base_model, lora_adapter, prompts, evaluation, title_priors), int(prompts["history_size"]),
        int(params.get("k", 10)),
        int(evaluation.get("bootstrap_samples", 1000)), int(evaluation.get("seed", 0)), fit_on=test_prompts)


def export_merged_model(validation_prompts: pd.DataFrame, base_model: str, lora_adapter: str,
                        training_summary: dict[str, Any], title_priors: pd.DataFrame,
                        evaluation: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """Optionally merge the adapter into a 16-bit model; re-check validation accuracy and say if it dropped."""
    from peft import PeftModel

    from ...core.training import TrainedAdapter

    if not evaluation.get("export_merged", False):
        return TrainedAdapter(None, None), {"exported": False}
    device = resolve_device(evaluation.get("device", "auto"))
    target = training_summary.get("target", "letter_and_title")
    tokenizer = load_tokenizer(lora_adapter)
    dtype = "bfloat16" if use_bf16(evaluation.get("bf16", "auto"), device) else "float32"
    tuned = PeftModel.from_pretrained(load_model(base_model, dtype, device=device), lora_adapter)

    def accuracy(model) -> float:
        preds = _score_model("check", model, tokenizer, validation_prompts, {**evaluation, "permutation_average": False},
                             target, generate=False, title_priors=title_priors)
        return float((preds["predicted_letter"] == preds["correct_letter"]).mean())

    before = accuracy(tuned)
    merged = tuned.merge_and_unload()
    after = accuracy(merged)
    tolerance = float(evaluation.get("merge_tolerance", 0.01))
    report = {"exported": True, "dtype": dtype, "validation_prompts": len(validation_prompts),
              "accuracy_adapter": before, "accuracy_merged": after, "dropped": after < before - tolerance}
    if report["dropped"]:
        logger.warning("Merged 16-bit model: validation accuracy dropped from %.3f to %.3f", before, after)
    else:
        logger.info("Merged 16-bit model: validation accuracy %.3f (adapter %.3f)", after, before)
    return TrainedAdapter(merged, tokenizer, report), report


def score_baseline_methods(test_protocol_prompts: pd.DataFrame, reviewer_sequences: pd.DataFrame,
                           items: pd.DataFrame, evaluation: dict[str, Any]) -> pd.DataFrame:
    """Score the baselines (`evaluation.baselines`) on every protocol's stored candidates, all on the counts cut for
    the whole set of test windows (a protocol on a subset of them, e.g. retrieved_20, sees the same counts)."""
    frames, cache = [], {}
    for name, prompts in _by_protocol(test_protocol_prompts):
        scores = baselines.score_baselines(prompts, reviewer_sequences, evaluation, items, cache,
                                           fit_on=test_protocol_prompts)
        frames += [scoring.predictions_frame(m, prompts, s).assign(protocol=name) for m, s in scores.items()]
    return pd.concat(frames, ignore_index=True)


def compute_metrics(llm_predictions: pd.DataFrame, baseline_predictions: pd.DataFrame,
                    test_protocol_prompts: pd.DataFrame, training_summary: dict[str, Any],
                    evaluation: dict[str, Any], fusion_predictions: pd.DataFrame | None = None) -> dict[str, Any]:
    """Compute every method's metrics per protocol on the same test prompts, with bootstrap intervals.

    `methods` (top level) holds the first protocol's, the one the model was trained on. `paired` holds,
    per protocol, the recommended method's HR@1 and MRR minus every other method's, with paired intervals."""
    frames = [baseline_predictions, llm_predictions]
    if fusion_predictions is not None and len(fusion_predictions):
        frames.append(fusion_predictions)
    preds = pd.concat(frames, ignore_index=True)
    if "protocol" not in preds:
        preds["protocol"] = "main"
    samples, seed = int(evaluation.get("bootstrap_samples", 1000)), int(evaluation.get("seed", 0))
    protocols: dict[str, Any] = {}
    for name, prompts in _by_protocol(test_protocol_prompts):
        part = preds[preds["protocol"] == name]
        methods = {m: method_metrics(g, samples, seed) for m, g in part.groupby("method", sort=False)}
        for m, g in part.groupby("method", sort=False):
            if "prompt_passes" in g and g["prompt_passes"].notna().any():
                methods[m]["prompt_passes"] = int(g["prompt_passes"].iloc[0])
                methods[m]["score_seconds"] = round(float(g["score_seconds"].iloc[0]), 1)
        entry = {"test_prompts": len(prompts), "num_options": len(prompts["candidate_asins"].iloc[0]),
                 "methods": methods}
        if "eligible_windows" in prompts and prompts["eligible_windows"].notna().any():  # retrieved_N: LlamaRec's
            entry["eligible_windows"] = int(prompts["eligible_windows"].dropna().iloc[0])  # protocol keeps the hits
            entry["qualifying_windows"] = len(prompts)
        entry["paired"] = _paired(part, _recommended(evaluation), samples, seed)
        tuned = _paired(part[part["method"].isin(["fine_tuned", "zero_shot"])], "fine_tuned", samples, seed)
        if "zero_shot" in tuned:  # what fine-tuning taught: the same LLM before and after, on the same prompts
            entry["fine_tuned_vs_zero_shot"] = tuned["zero_shot"]
        protocols[name] = entry
        for m, v in methods.items():
            logger.info("%-14s %-12s HR@1 %.3f  MRR %.3f  F1 %.3f", name, m, v["accuracy"], v["mrr"], v["f1_weighted"])
    first = next(iter(protocols.values()))
    return {
        "test_prompts": first["test_prompts"],
        "num_options": first["num_options"],
        "scoring": str(llm_predictions["scoring"].iloc[0]) if len(llm_predictions) else None,
        "title_score": str(llm_predictions["title_score"].iloc[0])
        if len(llm_predictions) and "title_score" in llm_predictions else None,
        "permutation_average": bool(evaluation.get("permutation_average", False)),
        "methods": first["methods"],
        "recommended": _recommended(evaluation),
        "split": "global_time" if "count_cutoff" in test_protocol_prompts else "leave_last_out or paper_random",
        "protocols": protocols,
        "training": training_summary,
    }


def _recommended(evaluation: dict[str, Any]) -> str:
    return str((evaluation.get("fusion") or {}).get("recommended", "fusion"))


def _paired(preds: pd.DataFrame, method: str, samples: int, seed: int) -> dict[str, Any]:
    """The recommended method minus every other method on the same prompts: HR@1 and MRR, paired intervals."""
    if method not in set(preds["method"]) or not samples:
        return {}
    ours = preds[preds["method"] == method].reset_index(drop=True)
    out = {}
    for other, group in preds.groupby("method", sort=False):
        if other == method:
            continue
        g = group.reset_index(drop=True)
        if len(g) != len(ours) or (g["reviewer_id"].to_numpy() != ours["reviewer_id"].to_numpy()).any():
            raise ValueError(f"{method} and {other} were not scored on the same prompts")
        out[other] = {
            metric: paired_bootstrap(values(ours), values(g), ours["reviewer_id"].to_numpy(), samples, seed)
            for metric, values in (("hr1", lambda d: (d["predicted_letter"] == d["correct_letter"]).to_numpy()),
                                   ("mrr", lambda d: 1.0 / d["truth_rank"].to_numpy()))
        }
    return out


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
    method = metrics.get("recommended", "fusion")
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
    lines += catalogue.catalogue_section(catalogue_metrics)
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
    method = metrics.get("recommended", "fusion")
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
            "command": evaluation.get("command", "kedro run"), "date": time.strftime("%Y-%m-%d"),
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
