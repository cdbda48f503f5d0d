"""HR@1 of stored LLM scores under each title score (mean, sum, pmi), paired bootstrap differences, and the
fusion with and without the LLM's score (fitted on the first half of the scored validation windows, compared on
the second half: both are validation windows, neither was used to train the LLM).

    python benchmarks/llm_ranker/analyse.py --dir benchmarks/reported/llm_ranker --data /work/ind
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
from kedro.config import OmegaConfigLoader

from amazon_llm_rec.core.llm import scoring
from amazon_llm_rec.core.metrics import paired_bootstrap
from amazon_llm_rec.core.rank import fusion
from amazon_llm_rec.core.rank.evidence import Evidence
from amazon_llm_rec.settings import CONFIG_LOADER_ARGS

SCORES = ("mean", "sum", "pmi")


def load(path: Path, priors: dict[str, float]) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """One scored file: its rows, and per title score the scores [N, K]."""
    frame = pd.read_parquet(path)
    sums = np.stack(frame["sums"].map(np.asarray).to_list())
    counts = np.stack(frame["counts"].map(np.asarray).to_list())
    prior = np.array([[priors[a] for a in row] for row in frame["candidate_asins"]])
    return frame, {s: scoring.calibrate(sums, counts, s, prior) for s in SCORES}


def hits(frame: pd.DataFrame, scores: np.ndarray) -> np.ndarray:
    """1.0 where the top-scored candidate is the truth (ties: the first, as argmax)."""
    truth = frame["correct_letter"].map(lambda c: ord(c) - 65).to_numpy()
    return (scores.argmax(1) == truth).astype(float)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--env", default="industrial")
    a = ap.parse_args()
    d = Path(a.dir)
    priors = dict(pd.read_parquet(d / "title_priors.parquet").set_index("asin")["prior"])
    out: dict = {}
    files = {p.stem: p for p in sorted(d.glob("*_uniform_4.parquet"))}
    loaded = {name: load(p, priors) for name, p in files.items()}
    for name, (frame, scores) in loaded.items():
        rid = frame["reviewer_id"].to_numpy()
        h = {s: hits(frame, v) for s, v in scores.items()}
        out[name] = {"windows": len(frame), "hr1": {s: round(float(v.mean()), 4) for s, v in h.items()},
                     "pmi_vs_mean": paired_bootstrap(h["pmi"], h["mean"], rid, 1000, 0),
                     "sum_vs_mean": paired_bootstrap(h["sum"], h["mean"], rid, 1000, 0)}
    # fine-tuned against zero-shot on the windows both scored, each under every score
    for split in ("validation", "test"):
        zs, ft = loaded.get(f"zero_shot_{split}_uniform_4"), loaded.get(f"fine_tuned_{split}_uniform_4")
        if zs and ft:
            n = min(len(zs[0]), len(ft[0]))
            rid = ft[0]["reviewer_id"].to_numpy()[:n]
            assert (zs[0]["reviewer_id"].to_numpy()[:n] == rid).all()
            out[f"fine_tuned_vs_zero_shot_{split}"] = {
                s: {"windows": n, **paired_bootstrap(hits(ft[0].iloc[:n], ft[1][s][:n]), hits(zs[0].iloc[:n], zs[1][s][:n]), rid, 1000, 0)}
                for s in SCORES}
    # the fusion with and without the LLM's score on validation windows: fit on the first half, compare on the rest
    params = OmegaConfigLoader("conf", **{**CONFIG_LOADER_ARGS, "default_run_env": a.env})["parameters"]
    names = [n for n in params["evaluation"]["fusion"]["features"] if n != "llm"]
    val = pd.read_parquet(Path(a.data) / "05_model_input/validation_prompts.parquet")
    seqs = pd.read_parquet(Path(a.data) / "04_feature/reviewer_sequences.parquet")
    items = pd.read_parquet(Path(a.data) / "03_primary/items.parquet")
    evidence = Evidence.for_windows(seqs, val, items, params["evaluation"])
    for model in ("zero_shot", "fine_tuned"):
        got = loaded.get(f"{model}_validation_uniform_4")
        if not got:
            continue
        frame, scores = got
        prompts = val.iloc[: len(frame)].reset_index(drop=True)
        assert (prompts["reviewer_id"].to_numpy() == frame["reviewer_id"].to_numpy()).all()
        feats = fusion.candidate_features(prompts, seqs, evidence, names)
        x0 = np.stack([feats[n] for n in names], axis=-1)
        y = prompts["correct_letter"].map(lambda c: ord(c) - 65).to_numpy()
        half = len(prompts) // 2
        res = {}
        for s in SCORES:
            x = np.concatenate([x0, scores[s][..., None]], axis=-1)
            with_llm = fusion.fit_conditional_logit(x[:half], y[:half], [*names, "llm"])
            without = fusion.fit_conditional_logit(x0[:half], y[:half], names)
            a_hit = (fusion.apply_fusion(with_llm, x[half:]).argmax(1) == y[half:]).astype(float)
            b_hit = (fusion.apply_fusion(without, x0[half:]).argmax(1) == y[half:]).astype(float)
            sd = float(np.std(scores[s][:half]))
            res[s] = {"fit_windows": half, "compared_windows": len(y) - half,
                      "llm_weight_per_sd": round(with_llm["weights"][-1], 3), "llm_score_sd": round(sd, 3),
                      "fusion_hr1": round(float(a_hit.mean()), 4), "fusion_no_llm_hr1": round(float(b_hit.mean()), 4),
                      "fusion_vs_fusion_no_llm": paired_bootstrap(a_hit, b_hit, prompts["reviewer_id"].to_numpy()[half:], 1000, 0),
                      "spearman_with": {n: round(float(pd.Series(scores[s].ravel()).corr(pd.Series(x0[..., i].ravel()),
                                                                                          method="spearman")), 3)
                                        for i, n in enumerate(names)}}
        out[f"fusion_{model}_validation"] = res
    (d / "analysis.json").write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
