"""Choose the LLM's scoring (letter logits or title likelihood) on validation windows, then score the test with it.

    python benchmarks/paper_llm/choose_scoring.py --run RUN --base-model BASE [--batch 32]

RUN holds a run's copied outputs (`model_input/`, `model_output/`, `lora_adapter/`, `training_summary.json`) from
`kedro run --env=paper --config benchmarks/paper_llm/paper_cpu.yml`, which scores by `letter_logits` (conf/paper).
The fine-tuned model's validation HR@1 under that scoring is read from the run; under `title_likelihood` (the
log-probability of each option's whole answer, "C) title", as it was trained) it is scored here. The better one on
validation is chosen. If it is title likelihood, the zero-shot and fine-tuned models score the trained protocol's
test prompts with it (`model_output/llm_predictions_chosen.parquet`, the generated answers carried over). Writes
`scoring_choice.json`. Nothing here looks at a test figure before the choice.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from amazon_llm_rec.core.llm.models import load_model, load_tokenizer, use_bf16
from amazon_llm_rec.pipelines.evaluation import nodes as ev


def _hr1(preds: pd.DataFrame) -> float:
    return float((preds["predicted_letter"] == preds["correct_letter"]).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--base-model", required=True)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--max-test", type=int, help="score only the first N test prompts (the CPU budget)")
    parser.add_argument("--validation-hr1", type=float,
                        help="title likelihood's validation HR@1 from an earlier call (its log), to skip that scoring")
    args = parser.parse_args()
    from peft import PeftModel  # noqa: PLC0415

    run = args.run
    adapter = str(next((run / "lora_adapter").glob("*/lora_adapter")))
    target = json.loads((run / "training_summary.json").read_text())["target"]
    validation = pd.read_parquet(run / "model_input" / "validation_prompts.parquet")
    letters = pd.read_parquet(run / "model_output" / "validation_llm_predictions.parquet")
    evaluation = {"batch_size": args.batch, "scoring": "title_likelihood", "options_per_pass": 5,
                  "exact_match_max_prompts": 0}
    dtype = "bfloat16" if use_bf16("auto", "cpu") else "float32"
    model = PeftModel.from_pretrained(load_model(args.base_model, dtype, device="cpu"), adapter)
    tokenizer = load_tokenizer(adapter)
    title_hr1 = args.validation_hr1 if args.validation_hr1 is not None else _hr1(
        ev._score_model("fine_tuned", model, tokenizer, validation, evaluation, target, generate=False))
    choice = {"validation_prompts": len(validation), "target": target,
              "validation_hr1": {"letter_logits": _hr1(letters), "title_likelihood": title_hr1}}
    choice["chosen"] = max(choice["validation_hr1"], key=choice["validation_hr1"].get)
    print(json.dumps(choice, indent=2))
    if choice["chosen"] == "title_likelihood":
        stored = pd.read_parquet(run / "model_output" / "llm_predictions.parquet")
        protocol = stored["protocol"].iloc[0]
        test = pd.read_parquet(run / "model_input" / "test_prompts.parquet")
        if args.max_test is not None:
            test = test.head(args.max_test)
            choice["test_prompts"] = len(test)
        frames = []
        for method in ("zero_shot", "fine_tuned"):
            if method == "zero_shot":
                with model.disable_adapter():
                    preds = ev._score_model(method, model, tokenizer, test, evaluation, target, generate=False)
            else:
                preds = ev._score_model(method, model, tokenizer, test, evaluation, target, generate=False)
            old = stored[(stored["method"] == method) & (stored["protocol"] == protocol)].head(len(test))
            preds["generated"] = old["generated"].to_numpy()  # exact match does not depend on the scoring
            frames.append(preds.assign(protocol=protocol))
            choice.setdefault("test_hr1", {})[method] = _hr1(preds)
        pd.concat(frames, ignore_index=True).to_parquet(run / "model_output" / "llm_predictions_chosen.parquet")
    (run / "scoring_choice.json").write_text(json.dumps(choice, indent=2))
    print(json.dumps(choice, indent=2))


if __name__ == "__main__":
    main()
