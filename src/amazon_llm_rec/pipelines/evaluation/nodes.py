"""Nodes of the evaluation pipeline: LLM scoring, baselines, metrics, report, plot, error analysis."""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from ...core.errors import ConfigError
from ...core.llm import scoring
from ...core.llm.models import apply_adapter, load_scoring_model, load_tokenizer
from ...core.llm.sharding import Shard, join_shards
from ...core.llm.training import check_recipe, completion_text
from ...core.metrics import method_metrics, paired_bootstrap
from ...core.rank import baselines, catalogue, fusion, recommender
from ...core.rank.evidence import Evidence
from ...core.rank.fusion import prefixes_of
from ...core.rank.retrieval import Retriever

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
    mode = evaluation["scoring"]
    pad = evaluation["pad_to_multiple_of"]
    check_recipe(target, mode, None)
    if mode == "letter_logits":
        if _pointwise(prompts):
            raise ConfigError("evaluation.scoring: letter_logits needs option prompts (prompts.style: options); "
                              "pointwise prompts are scored by title_likelihood")
        return scoring.score_options(model, tokenizer, prompts, batch, desc=desc, pad_to_multiple_of=pad)
    if mode == "title_likelihood":
        answer = "letter_and_title" if target == "letter_and_title" else "title"
        how = evaluation["title_score"]
        if how == "pmi" and answer != "title":
            raise ConfigError("evaluation.title_score: pmi needs answers that are titles (fine_tuning.target: title)")
        priors = prior_matrix(title_priors, prompts["candidate_asins"].tolist()) if how == "pmi" else None
        return scoring.score_titles(model, tokenizer, prompts, batch, desc=desc, target=answer, pad_to_multiple_of=pad,
                                    options_per_pass=evaluation["options_per_pass"], title_score=how,
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
    mode = evaluation["scoring"]
    k = len(prompts["candidate_asins"].iloc[0])
    orders = k if evaluation["permutation_average"] and not _pointwise(prompts) else 1
    start = time.perf_counter()
    scores = np.zeros((len(prompts), k))
    for shift in range(orders):  # cyclic permutations: every option is shown once at every position
        shown = scoring.rotate_options(prompts, shift) if shift else prompts
        desc = f"scoring {name}" + (f" (order {shift + 1}/{orders})" if orders > 1 else "")
        scores += np.roll(_scores(model, tokenizer, shown, evaluation, target, desc, title_priors), -shift,
                          axis=1) / orders
    seconds = time.perf_counter() - start
    answers = None
    cap = evaluation["exact_match_max_prompts"]
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
             "title_score": evaluation["title_score"] if mode == "title_likelihood" else None}
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
    shard = Shard.from_params(evaluation, "evaluation")
    whole = test_protocol_prompts
    position = whole.groupby("protocol").cumcount() if "protocol" in whole else pd.Series(np.arange(len(whole)))
    test_protocol_prompts = shard.take(whole.assign(_position=position.to_numpy()))
    logger.info("Scoring %s: %d of %d test prompts", shard.name, len(test_protocol_prompts), len(whole))

    tokenizer = load_tokenizer(lora_adapter)
    model = load_scoring_model(base_model, None, evaluation)
    target = training_summary["target"]
    _check_trained_score(training_summary, evaluation)
    protocols = list(_by_protocol(test_protocol_prompts))
    allowed = evaluation["llm_protocols"]
    frames = []
    for method in ("zero_shot", "fine_tuned"):
        if method == "fine_tuned":
            model = apply_adapter(model, lora_adapter)
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
    if trained and trained != evaluation["title_score"]:
        raise ConfigError(f"the adapter was trained on title score {trained!r} but evaluation.title_score is "
                          f"{evaluation['title_score']!r}: score it as it was trained")


def score_validation_llm(validation_prompts: pd.DataFrame, base_model: str, lora_adapter: str,
                         training_summary: dict[str, Any], title_priors: pd.DataFrame,
                         evaluation: dict[str, Any]) -> dict[str, pd.DataFrame]:
    """Score this shard's (`evaluation.shard`) validation prompts with the fine-tuned adapter: the LLM feature
    the fusion is fitted on."""
    shard = Shard.from_params(evaluation, "evaluation")
    if "llm" not in _fusion_params(evaluation)["features"]:
        return {shard.name: pd.DataFrame(columns=["method", "reviewer_id", "scores"])}
    model = load_scoring_model(base_model, lora_adapter, evaluation)
    target = training_summary["target"]
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
    """`evaluation.fusion` (conf/base holds its defaults), with its feature names checked."""
    params = dict(evaluation["fusion"])
    unknown = sorted(set(params) - {"features", "l2", "recommended"})
    if unknown:
        raise ConfigError(f"evaluation.fusion: unknown {[f'evaluation.fusion.{k}' for k in unknown]}")
    params["features"] = fusion.check_features(list(params["features"]))
    return params


def embed_titles(items: pd.DataFrame, evaluation: dict[str, Any], recommend: dict[str, Any]) -> Any:
    """Encode every product's title once (`evaluation.embedding_model`) and build its nearest-neighbour search
    (`recommend.retrieval.ann`): the `title_embeddings` that every data cut, the batch and the service read."""
    from ...core.rank.ann import AnnConfig, TitleEmbeddings  # noqa: PLC0415

    users = {"evaluation.baselines": evaluation["baselines"], "evaluation.fusion.features": evaluation["fusion"]["features"],
             "recommend.retrieval.sources": recommend["retrieval"]["sources"]}
    if not any("embedding" in names for names in users.values()):
        logger.info("No title embeddings encoded: 'embedding' is in none of %s", ", ".join(users))
        return TitleEmbeddings.unused(evaluation["embedding_model"])
    return TitleEmbeddings.encode(items, evaluation["embedding_model"],
                                  AnnConfig.from_params(recommend["retrieval"]["ann"]))


def fit_evidence(prompts: pd.DataFrame, reviewer_sequences: pd.DataFrame, items: pd.DataFrame,
                 evaluation: dict[str, Any], title_embeddings: Any = None) -> Evidence:
    """The evidence of this prompt set's data cut (every protocol of it shares the cut): counted and trained once,
    read by the baselines, the fusion's features and the catalogue evaluation."""
    return Evidence.for_windows(reviewer_sequences, prompts, items, evaluation, title_embeddings)


def candidate_features(prompts: pd.DataFrame, reviewer_sequences: pd.DataFrame, evidence: Evidence,
                       evaluation: dict[str, Any]) -> pd.DataFrame:
    """Compute the fusion's evidence for every candidate of every protocol (long form: prompt, candidate), all from
    the evidence of the whole prompt set's cut."""
    names = [n for n in _fusion_params(evaluation)["features"] if n != "llm"]
    frames = []
    for protocol, part in _by_protocol(prompts):
        start = time.perf_counter()
        values = fusion.candidate_features(part, reviewer_sequences, evidence, names)
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


def fit_retriever_mix(validation_prompts: pd.DataFrame, reviewer_sequences: pd.DataFrame,
                      validation_evidence: Evidence, recommend: dict[str, Any], prompts: dict[str, Any]) -> dict[str, Any]:
    """Learn the retriever's turns per source on the validation windows (recall@N of the true product, each
    reviewer's earlier purchases left out), on the validation windows' evidence, as the fusion is fitted: never on
    test windows (under leave_last_out that evidence keeps other reviewers' whole sequences, see docs/parameters.md)."""
    from ...core.rank.retrieval import learn_quotas  # noqa: PLC0415

    cfg = recommender.RecommendConfig.from_params(recommend, int(prompts["history_size"]))
    windows = validation_prompts.drop_duplicates(["reviewer_id", "position"]).reset_index(drop=True)
    cap = cfg.retrieval.learn_max_windows
    windows = windows if cap is None else windows.iloc[: int(cap)]
    retriever = Retriever(validation_evidence, replace(cfg.retrieval, quotas=None))
    histories = [list(h)[-cfg.history_size:] for h in windows["history_asins"]]
    bought = [set(p) if cfg.exclude_bought else set() for p in prefixes_of(windows, reviewer_sequences)]
    return learn_quotas(retriever, histories, windows["target_asin"].tolist(), bought, cfg.num_candidates,
                        cfg.retrieval.learn_step)


def evaluate_catalogue(test_prompts: pd.DataFrame, reviewer_sequences: pd.DataFrame, test_evidence: Evidence,
                       fusion_model: dict[str, Any], retriever_mix: dict[str, Any], base_model: str,
                       lora_adapter: str, title_priors: pd.DataFrame, recommend: dict[str, Any],
                       evaluation: dict[str, Any], prompts: dict[str, Any]) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Rank the whole catalogue for the test reviewers: the two-stage recommender against full-catalogue baselines,
    on the test windows' evidence (the counts and SASRec the protocols' baselines used)."""
    params = recommend["evaluation"]
    cap = params["max_reviewers"]
    windows = test_prompts if cap is None else test_prompts.iloc[: int(cap)]
    if not len(windows):
        return pd.DataFrame(columns=["method", "reviewer_id"]), {}
    return catalogue.evaluate_catalogue(
        windows.reset_index(drop=True), reviewer_sequences, test_evidence, fusion_model, recommend, evaluation,
        recommender.llm_source(base_model, lora_adapter, prompts, evaluation, title_priors), int(prompts["history_size"]),
        int(params["k"]), int(evaluation["bootstrap_samples"]), int(evaluation["seed"]), retriever_mix)


def export_merged_model(validation_prompts: pd.DataFrame, base_model: str, lora_adapter: str,
                        training_summary: dict[str, Any], title_priors: pd.DataFrame,
                        evaluation: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """Optionally merge the adapter into a 16-bit model; re-check validation accuracy and say if it dropped."""
    from ...core.llm.training import TrainedAdapter

    if not evaluation["export_merged"]:
        return TrainedAdapter(None, None), {"exported": False}
    target = training_summary["target"]
    tokenizer = load_tokenizer(lora_adapter)
    tuned = load_scoring_model(base_model, lora_adapter, evaluation, quantize=False)  # the export is 16-bit
    dtype = str(next(tuned.parameters()).dtype).removeprefix("torch.")

    def accuracy(model) -> float:
        preds = _score_model("check", model, tokenizer, validation_prompts, {**evaluation, "permutation_average": False},
                             target, generate=False, title_priors=title_priors)
        return float((preds["predicted_letter"] == preds["correct_letter"]).mean())

    before = accuracy(tuned)
    merged = tuned.merge_and_unload()
    after = accuracy(merged)
    tolerance = float(evaluation["merge_tolerance"])
    report = {"exported": True, "dtype": dtype, "validation_prompts": len(validation_prompts),
              "accuracy_adapter": before, "accuracy_merged": after, "dropped": after < before - tolerance}
    if report["dropped"]:
        logger.warning("Merged 16-bit model: validation accuracy dropped from %.3f to %.3f", before, after)
    else:
        logger.info("Merged 16-bit model: validation accuracy %.3f (adapter %.3f)", after, before)
    return TrainedAdapter(merged, tokenizer, report), report


def score_baseline_methods(test_protocol_prompts: pd.DataFrame, reviewer_sequences: pd.DataFrame,
                           test_evidence: Evidence, evaluation: dict[str, Any]) -> pd.DataFrame:
    """Score the baselines (`evaluation.baselines`) on every protocol's stored candidates, all from the evidence of
    the whole set of test windows (a protocol on a subset of them, e.g. retrieved_20, sees the same counts)."""
    frames = []
    for name, prompts in _by_protocol(test_protocol_prompts):
        scores = baselines.score_baselines(prompts, reviewer_sequences, evaluation, test_evidence)
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
    samples, seed = int(evaluation["bootstrap_samples"]), int(evaluation["seed"])
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
        "permutation_average": bool(evaluation["permutation_average"]),
        "methods": first["methods"],
        "recommended": _recommended(evaluation),
        "split": "global_time" if "count_cutoff" in test_protocol_prompts else "leave_last_out or paper_random",
        "protocols": protocols,
        "training": training_summary,
    }


def _recommended(evaluation: dict[str, Any]) -> str:
    return str(evaluation["fusion"]["recommended"])


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
