"""Every candidate protocol of an environment, scored by the methods that need no LLM, in memory.

    python benchmarks/protocols_no_llm.py --env industrial [--baselines random popularity cooccurrence bm25 embedding]
        [--out benchmarks/reported/protocols_no_llm]

The project's own nodes, chained without writing to data/: data_processing, prompt_engineering (conf/base merged
with conf/<env>: the same windows, caps and candidates as `kedro run --env=<env>`), then the baselines and the
fusion without the LLM (fitted on the validation windows) on every test protocol, with `fusion_no_llm` compared
against every other method, paired. It reruns the cheap half of a quality run in minutes after a change to the
protocols, without training or scoring an LLM (those figures need the full run).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd
from in_memory import items_and_sequences

from amazon_llm_rec.pipelines.evaluation import nodes as ev
from amazon_llm_rec.pipelines.prompt_engineering import nodes as pe

ROOT = Path(__file__).resolve().parents[1]


def params(env: str) -> dict:
    """The parameters of `kedro run --env=<env>`: Kedro's config loader with the project's own settings."""
    from kedro.config import OmegaConfigLoader  # noqa: PLC0415

    from amazon_llm_rec.settings import CONFIG_LOADER_ARGS  # noqa: PLC0415

    loader = OmegaConfigLoader(conf_source=str(ROOT / "conf"), **{**CONFIG_LOADER_ARGS, "default_run_env": env})
    return loader["parameters"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="industrial")
    parser.add_argument("--data", default=str(ROOT / ".." / "shared" / "data" / "amazon2018"))
    parser.add_argument("--baselines", nargs="+", default=["random", "popularity", "cooccurrence", "bm25", "embedding"])
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "reported" / "protocols_no_llm"))
    args = parser.parse_args()
    start = time.perf_counter()
    p = params(args.env)
    raw, prompts = {**p["raw"], "data_dir": args.data}, p["prompts"]
    features = [f for f in p["evaluation"]["fusion"]["features"] if f != "llm"]
    evaluation = {**p["evaluation"], "baselines": args.baselines,
                  "fusion": {**p["evaluation"]["fusion"], "features": features, "recommended": "fusion_no_llm"}}
    items, sequences = items_and_sequences(raw, p["processing"])
    windows = pe.build_windows(sequences, prompts)
    _, validation, test = pe.split_prompts(pe.render_prompts(pe.sample_candidates(windows, sequences, prompts, items),
                                                             items, prompts))
    protocols = pe.build_test_protocols(test, windows, sequences, items, prompts)
    test_ev, val_ev = (ev.fit_evidence(p, sequences, items, evaluation) for p in (protocols, validation))
    base = ev.score_baseline_methods(protocols, sequences, test_ev, evaluation)
    model = ev.fit_fusion(ev.candidate_features(validation, sequences, val_ev, evaluation), pd.DataFrame(), evaluation)
    fused = ev.score_fusion(ev.candidate_features(protocols, sequences, test_ev, evaluation), pd.DataFrame(), protocols,
                            model)
    metrics = ev.compute_metrics(pd.DataFrame(), base, protocols, {}, evaluation, fused)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    run = {"env": args.env, "category": raw["category"], "date": time.strftime("%Y-%m-%d"),
           "seconds": round(time.perf_counter() - start, 1), "baselines": args.baselines,
           "fusion_no_llm": model.get("fusion_no_llm")}
    (out / f"metrics_{args.env}.json").write_text(json.dumps({**run, "metrics": metrics}, indent=2, default=str))
    lines = [f"# {args.env}: every protocol without the LLM ({run['date']}, {run['seconds']} s)", ""]
    for name, entry in metrics["protocols"].items():
        title = f"## {name}: {entry['test_prompts']} test windows, {entry['num_options']} candidates"
        if "qualifying_windows" in entry:
            title += f" (the retriever's top {entry['num_options']} holds the target in {entry['qualifying_windows']} " \
                     f"of {entry['eligible_windows']} test windows)"
        lines += [title, "", "| method | HR@1 [95% CI] | MRR | fusion_no_llm minus method, HR@1 [95% paired CI] |",
                  "|---|---|---|---|"]
        for method, m in entry["methods"].items():
            ci = m["ci95"]["accuracy"]
            d = entry["paired"].get(method, {}).get("hr1")
            diff = f"{d['diff']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}]" if d else ""
            lines.append(f"| {method} | {m['accuracy']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}] | {m['mrr']:.3f} | {diff} |")
        lines += [""]
    (out / f"protocols_{args.env}.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
