"""GPU benchmark of the fine-tuning node: Unsloth backend vs bitsandbytes QLoRA backend vs a bare
Unsloth loop on the same token batches, at batch 8 and 32; then scoring throughput; then a
Mistral-7B-shaped model through the Unsloth backend. Models are built from configs (random
weights): no weights can be downloaded on the GPU machine and speed does not depend on them.

    python benchmarks/gpu_benchmark.py --assets .gpubench --out "$OUT"          # on an H100
    python benchmarks/gpu_benchmark.py --assets .gpubench --out /tmp/b --dry-run  # CPU check

Each backend runs in its own process, so Unsloth is imported first where it is used and nowhere
else. Throughput counts real (non-padding) tokens, timed after warm-up steps, GPU-synchronised.
Results go to <out>/gpu_benchmark.json and <out>/gpu_benchmark.md, written as each stage ends.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from datetime import date
from pathlib import Path

SHAPES = {
    "tinyllama": {"hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 22,
                  "num_attention_heads": 32, "num_key_value_heads": 4},
    "mistral7b": {"hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
                  "num_attention_heads": 32, "num_key_value_heads": 8},
    "tiny": {"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 2},
}
LORA = {"r": 16, "alpha": 16, "dropout": 0.0,
        "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]}


def build_model(shape: str, tokenizer_dir: str, dest: str, device: str) -> str:
    """Save a randomly initialised Llama-architecture model of a given shape with the tokenizer."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    if (Path(dest) / "config.json").is_file():
        return dest
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = LlamaConfig(vocab_size=len(tok), max_position_embeddings=2048, rms_norm_eps=1e-5,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id, tie_word_embeddings=False, **SHAPES[shape])
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(config).to(torch.bfloat16 if device == "cuda" else torch.float32)
    model.save_pretrained(dest)
    tok.save_pretrained(dest)
    del model
    return dest


def conf_params(name: str) -> dict:
    """`params:<name>` as conf/base defines it (every default lives there once)."""
    import yaml

    return yaml.safe_load((Path(__file__).parents[1] / f"conf/base/parameters_{name}.yml").read_text())[name]


def ft_params(backend: str, batch: int, steps: int, device: str) -> dict:
    """Fine-tuning parameters of the benchmark: conf/base's, with the benchmark's backend, batch, steps and device, and
    the answer its prompts ask for (the option's letter and title, as prepare_gpu_assets writes them)."""
    gpu = device == "cuda"
    base = conf_params("fine_tuning")
    return {
        **base, "target": "letter_and_title", "backend": backend, "device": device, "bf16": gpu, "load_in_4bit": True,
        "max_steps": steps, "batch_size": batch, "learning_rate": 1e-4, "weight_decay": 0.0, "warmup_ratio": 0.0,
        "max_seq_length": 512, "seed": 0, "logging_steps": 1, "eval_steps": None, "save_steps": 100_000,
        "resume": False, "checkpoint_dir": f"/tmp/bench_ckpt/{backend}_{batch}", "gradient_checkpointing": True,
        "throughput_warmup_steps": 5, "lora": LORA, "pad_to_multiple_of": 64 if gpu else None,
        "quantization": {**base["quantization"], "compute_dtype": "bfloat16" if gpu else "float32"},
    }


def token_batches(tokenizer, prompts, batch: int, n: int):
    """The training token batches: prompt+answer, answer-only labels, similar lengths together."""
    import torch

    from amazon_llm_rec.core.llm.models import messages, render_prompt

    rows = []
    for i, x, o in zip(prompts["instruction"], prompts["input"], prompts["output"], strict=True):
        p = tokenizer(render_prompt(tokenizer, i, x), add_special_tokens=False)["input_ids"]
        full = tokenizer(tokenizer.apply_chat_template(messages(i, x, o), tokenize=False),
                         add_special_tokens=False)["input_ids"]
        rows.append((full, len(p)))
    rows = rows[: batch * n]
    rows.sort(key=lambda r: len(r[0]))
    out = []
    for s in range(0, len(rows), batch):
        chunk = rows[s : s + batch]
        width = -(-max(len(f) for f, _ in chunk) // 64) * 64  # as the project pads on GPU
        ids = torch.full((len(chunk), width), tokenizer.pad_token_id)
        mask = torch.zeros_like(ids)
        labels = torch.full_like(ids, -100)
        for r, (f, plen) in enumerate(chunk):
            ids[r, : len(f)] = torch.tensor(f)
            mask[r, : len(f)] = 1
            labels[r, plen : len(f)] = torch.tensor(f[plen:])
        out.append({"input_ids": ids, "attention_mask": mask, "labels": labels})
    return out


def bare_loop(model, batches, device: str, warmup: int = 5) -> dict:
    """A plain training loop (AdamW, the model's own loss) over given token batches."""
    import torch

    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    model.train()
    times, tokens = [], []
    for i, cpu_batch in enumerate(batches):
        b = {k: v.to(device) for k, v in cpu_batch.items()}
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        with torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
            loss = model(**b).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t)
            tokens.append(int(b["attention_mask"].sum()))
    bs = batches[0]["input_ids"].shape[0]
    return {"real_tokens_per_second": round(sum(tokens) / sum(times), 1),
            "samples_per_second": round(bs * len(times) / sum(times), 2), "measured_steps": len(times)}


def peak_gib() -> float | None:
    import torch

    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if torch.cuda.is_available() else None


def stage(name: str, args) -> list[dict]:
    """Run one stage in this process; return result rows."""
    if name in ("unsloth", "mistral"):
        import unsloth  # noqa: F401 - first, before transformers/peft/trl
    import pandas as pd
    import torch

    from amazon_llm_rec.pipelines.fine_tuning.nodes import fine_tune

    device = "cuda" if torch.cuda.is_available() else "cpu"
    assets = Path(args.assets)
    train = pd.read_parquet(assets / "train.parquet")
    val = pd.read_parquet(assets / "validation.parquet")
    test = pd.read_parquet(assets / "test.parquet")
    model_dir = args.model_dir if name != "mistral" else args.mistral_dir
    rows = []
    backend = {"unsloth": "unsloth", "mistral": "unsloth", "bnb": "qlora_bnb", "lora": "lora"}[name]
    batches = (8,) if name == "mistral" else tuple(args.batches)
    for batch in batches:
        torch.cuda.empty_cache() if device == "cuda" else None
        steps = args.steps if name != "mistral" else max(6, args.steps // 2)
        try:
            adapter, _, summary = fine_tune(model_dir, train.iloc[: batch * steps], val, None, None,
                                          ft_params(backend, batch, steps, device),
                                          conf_params("evaluation"))
        except Exception as exc:  # noqa: BLE001 - one failing setup must not hide the others
            traceback.print_exc()
            rows.append({"what": "train", "setup": f"project node, backend={backend}, batch {batch}", "error": repr(exc)})
            continue
        rows.append({"what": "train", "setup": f"project node, backend={backend}", "model": name if name == "mistral" else args.shape,
                     "batch": batch, **{k: summary.get(k) for k in ("real_tokens_per_second", "samples_per_second",
                                                                     "peak_gpu_memory_gib", "measured_steps")}})
        print(json.dumps(rows[-1]), flush=True)  # noqa: T201
        if batch == batches[0] and name != "mistral":
            adapter_dir = f"/tmp/bench_adapter_{backend}"
            adapter.model.save_pretrained(adapter_dir)
            adapter.tokenizer.save_pretrained(adapter_dir)
        del adapter
        if device == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
    parts = []
    if name == "unsloth":
        parts = [("bare Unsloth loop", _bare_unsloth), ("Unsloth inference scoring", _unsloth_scoring)]
    if name in ("unsloth", "bnb", "lora"):
        parts.append(("evaluation node scoring", _node_scoring))
    for label, fn in parts:
        try:
            rows += fn(name, args, model_dir, backend, batches, train, test, device)
        except Exception as exc:  # noqa: BLE001 - one failing part must not hide the others
            traceback.print_exc()
            rows.append({"what": "other", "setup": f"{name}: {label}", "error": repr(exc)})
    return rows


def _bare_unsloth(name, args, model_dir, backend, batches, train, test, device) -> list[dict]:
    import torch
    from unsloth import FastLanguageModel

    from amazon_llm_rec.core.llm.unsloth_backend import load_unsloth

    rows: list[dict] = []
    for batch in batches:
        model, tok = load_unsloth(model_dir, ft_params("unsloth", batch, args.steps, device))
        FastLanguageModel.for_training(model)
        torch.cuda.reset_peak_memory_stats()
        res = bare_loop(model, token_batches(tok, train.iloc[: batch * args.steps], batch, args.steps), device)
        rows.append({"what": "train", "setup": "bare Unsloth loop (same token batches)", "model": args.shape,
                     "batch": batch, **res, "peak_gpu_memory_gib": peak_gib()})
        print(json.dumps(rows[-1]), flush=True)  # noqa: T201
        del model
        torch.cuda.empty_cache()
    return rows


def _unsloth_scoring(name, args, model_dir, backend, batches, train, test, device) -> list[dict]:
    import torch

    rows: list[dict] = []
    from amazon_llm_rec.core.llm.scoring import score_options
    from amazon_llm_rec.core.llm.unsloth_backend import for_inference, load_unsloth

    model, tok = load_unsloth(model_dir, ft_params("unsloth", 8, 1, device))
    for_inference(model)
    n = min(len(test), args.score_prompts)
    score_options(model, tok, test.iloc[:n], args.score_batch, pad_to_multiple_of=64)  # warm-up: every shape
    torch.cuda.synchronize()
    t = time.perf_counter()
    score_options(model, tok, test.iloc[:n], args.score_batch, pad_to_multiple_of=64)
    torch.cuda.synchronize()
    rows.append({"what": "score", "setup": "score_options, Unsloth 4-bit inference mode", "model": args.shape,
                 "batch": args.score_batch, "prompts_per_second": round(n / (time.perf_counter() - t), 1), "prompts": n})
    print(json.dumps(rows[-1]), flush=True)  # noqa: T201
    del model
    torch.cuda.empty_cache()
    return rows


def _node_scoring(name, args, model_dir, backend, batches, train, test, device) -> list[dict]:
    """Save -> reload -> score through the project's evaluation node."""
    from amazon_llm_rec.pipelines.evaluation.nodes import join_llm_predictions, score_llms

    rows: list[dict] = []
    quant = {"quant_type": "nf4", "compute_dtype": "bfloat16" if device == "cuda" else "float32"}
    for label, q in (("4-bit NF4 base + adapter", quant), ("bf16 base + adapter", None)):
        if name != "bnb" and q is None:
            continue
        ev = {**conf_params("evaluation"), "device": device, "bf16": device == "cuda", "quantization": q,
              "batch_size": args.score_batch, "pad_to_multiple_of": 64 if device == "cuda" else None,
              "scoring": "letter_logits", "exact_match_max_prompts": 0, "max_new_tokens": 8}
        n = min(len(test), args.score_prompts)
        shards = score_llms(test.iloc[:n], model_dir, f"/tmp/bench_adapter_{backend}", {"target": "letter_and_title"},
                                None, ev)
        preds = join_llm_predictions(shards, test.iloc[:n], ev)
        for method, part in preds.groupby("method"):
            secs = float(part["score_seconds"].iloc[0])
            rows.append({"what": "score", "setup": f"evaluation node ({method}), {label}, after {name} training",
                         "model": args.shape, "batch": args.score_batch, "prompts_per_second": round(n / secs, 1),
                         "prompts": n, "accuracy": round(float((part.predicted_letter == part.correct_letter).mean()), 3)})
            print(json.dumps(rows[-1]), flush=True)  # noqa: T201
    return rows


def table(rows: list[dict]) -> str:
    """Render the result rows as Markdown."""
    lines = ["| what | setup | model | batch | real tokens/s | samples/s | prompts/s | peak GiB |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['what']} | {r['setup']} | | | error: {r['error'][:120]} | | | |")
            continue
        cells = [r.get(k) for k in ("real_tokens_per_second", "samples_per_second", "prompts_per_second", "peak_gpu_memory_gib")]
        lines.append(f"| {r['what']} | {r['setup']} | {r['model']} | {r['batch']} | "
                     + " | ".join("" if c is None else f"{c:,}" for c in cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--assets", default=".gpubench")
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batches", type=int, nargs="+", default=[8, 32])
    ap.add_argument("--score-batch", type=int, default=64)
    ap.add_argument("--score-prompts", type=int, default=1024)
    ap.add_argument("--stages", nargs="+", help="default: unsloth bnb mistral (dry run: lora bnb)")
    ap.add_argument("--dry-run", action="store_true", help="CPU check: tiny model, lora and bnb stages")
    ap.add_argument("--stage", help=argparse.SUPPRESS)
    ap.add_argument("--model-dir", default="/tmp/bench_tinyllama", help=argparse.SUPPRESS)
    ap.add_argument("--mistral-dir", default="/tmp/bench_mistral7b", help=argparse.SUPPRESS)
    ap.add_argument("--shape", default="tinyllama", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.stage:  # child process
        rows = stage(args.stage, args)
        Path(args.out, f"stage_{args.stage}.json").write_text(json.dumps(rows))
        return
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.dry_run:
        args.shape, args.steps, args.batches = "tiny", 5, [4]
        args.stages = args.stages or ["lora", "bnb"]
        args.score_batch, args.score_prompts = 8, 16
        args.model_dir = str(Path(args.out) / "tiny_model")
    args.stages = args.stages or ["unsloth", "bnb", "mistral"]
    Path(args.out).mkdir(parents=True, exist_ok=True)
    card = torch.cuda.get_device_name(0) if device == "cuda" else platform.processor() or "cpu"
    result = {"date": str(date.today()), "device": card, "torch": torch.__version__, "steps": args.steps,
              "info": json.loads((Path(args.assets) / "info.json").read_text()), "rows": []}
    build_model(args.shape, str(Path(args.assets) / "tokenizer"), args.model_dir, device)
    for name in args.stages:
        if name == "mistral":
            build_model("mistral7b", str(Path(args.assets) / "tokenizer"), args.mistral_dir, device)
        start = time.perf_counter()
        cmd = [sys.executable, __file__, "--stage", name, *sys.argv[1:]]
        if args.dry_run:
            cmd += ["--shape", "tiny", "--model-dir", args.model_dir, "--steps", "5", "--batches", "4",
                    "--score-batch", "8", "--score-prompts", "16"]
        proc = subprocess.run(cmd, env={**os.environ, "PYTHONUNBUFFERED": "1"}, check=False)
        out = Path(args.out, f"stage_{name}.json")
        if proc.returncode == 0 and out.is_file():
            result["rows"] += json.loads(out.read_text())
        else:
            result["rows"].append({"what": name, "setup": f"stage {name}", "error": f"exit {proc.returncode}"})
        result[f"stage_{name}_seconds"] = round(time.perf_counter() - start, 1)
        Path(args.out, "gpu_benchmark.json").write_text(json.dumps(result, indent=2))
        md = f"Date {result['date']}, {card}, torch {torch.__version__}, {args.steps} steps per setup\n\n" + table(result["rows"])
        Path(args.out, "gpu_benchmark.md").write_text(md + "\n")
    print(Path(args.out, "gpu_benchmark.md").read_text())  # noqa: T201


if __name__ == "__main__":
    main()
