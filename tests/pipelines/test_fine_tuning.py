"""fine_tuning: backend dispatch and guards, LoRA and 4-bit QLoRA training, saving, resuming."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from amazon_llm_rec.core.errors import ConfigError
from amazon_llm_rec.core.llm.training import resolve_backend, train_adapter
from amazon_llm_rec.datasets import LoRAAdapterDataset
from amazon_llm_rec.pipelines.fine_tuning.nodes import fine_tune, plot_loss_curves, select_base_model
from tests.conftest import base_params, require

FT = base_params(
    "fine_tuning", backend="lora", fallback=False, device="cpu", bf16=False, epochs=1, max_steps=3, batch_size=4,
    eval_batch_size=4, learning_rate=1e-3, weight_decay=1e-3, warmup_ratio=0.0, max_seq_length=256, seed=1,
    logging_steps=1, eval_steps=2, save_steps=1, resume=True, target="letter_and_title",
    lora={"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]},
    quantization={"quant_type": "nf4", "double_quant": True, "compute_dtype": "float32"},
)


def _prompts(n: int) -> pd.DataFrame:
    letters = "ABCD"
    rows = []
    for i in range(n):
        c = letters[i % 4]
        rows.append({"instruction": "Pick the next product.", "input": f"Purchase history:\n1. Beaker {i}\n\nOptions:\n"
                     + "\n".join(f"{x}) Item {x}{i}" for x in letters), "output": f"{c}) Item {c}{i}", "correct_letter": c,
                     "candidate_asins": list("wxyz"), "reviewer_id": f"U{i}", "target_asin": "w"})
    return pd.DataFrame(rows)


def test_unsloth_without_gpu_fails_at_once_with_a_clear_message():
    with pytest.raises(ConfigError, match="unsloth.*(no CUDA GPU|not installed).*fallback"):
        resolve_backend({**FT, "backend": "unsloth"})


def test_unsloth_falls_back_to_bitsandbytes_when_asked():
    assert resolve_backend({**FT, "backend": "unsloth", "fallback": True}) == "qlora_bnb"


def test_select_base_model_returns_the_configured_name():
    assert select_base_model({"name": " smollm2-135m-instruct "}) == "smollm2-135m-instruct"


def test_unknown_backend_is_rejected():
    with pytest.raises(ConfigError, match="fine_tuning.backend"):
        resolve_backend({**FT, "backend": "deepspeed"})


def test_cpu_code_never_imports_unsloth():
    code = (
        "import sys, importlib, pkgutil, amazon_llm_rec\n"
        "for m in pkgutil.walk_packages(amazon_llm_rec.__path__, 'amazon_llm_rec.'):\n"
        "    if 'unsloth' not in m.name: importlib.import_module(m.name)\n"
        "from amazon_llm_rec.core.llm import training\n"
        "print('unsloth' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().endswith("False")


def test_lora_trains_saves_and_reloads(tiny_llama, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    ft = {**FT, "checkpoint_dir": str(tmp_path / "ckpt")}
    adapter, history, summary = fine_tune(tiny_llama, _prompts(12), _prompts(4), None, None, ft,
                                         base_params("evaluation"))
    assert summary["steps"] == 3 and summary["backend"] == "lora"
    assert set(history["split"]) == {"train", "validation", "train_epoch_mean"} and history["loss"].notna().all()
    ds = LoRAAdapterDataset(str(tmp_path / "adapter"), version=None)
    ds.save(adapter)
    path = Path(ds.load())
    assert (path / "adapter_model.safetensors").is_file() and (path / "tokenizer.json").is_file()
    assert json.loads((path / "training_summary.json").read_text())["steps"] == 3
    base = AutoModelForCausalLM.from_pretrained(tiny_llama)
    model = PeftModel.from_pretrained(base, str(path))
    trained = dict(adapter.model.named_parameters())
    name, value = next((n, p) for n, p in model.named_parameters() if "lora_B" in n)
    assert value.abs().sum() > 0 and value.shape == trained[name].shape
    assert plot_loss_curves(history).axes[0].get_xlabel() == "training step"


def test_training_resumes_after_an_interruption(tiny_llama, tmp_path):
    from transformers import TrainerCallback

    class Interrupt(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.global_step == 2:
                raise KeyboardInterrupt("simulated interruption after the checkpoint of step 2")

    ft = {**FT, "checkpoint_dir": str(tmp_path / "ckpt"), "eval_steps": None, "max_steps": 4}
    with pytest.raises(KeyboardInterrupt):
        train_adapter(tiny_llama, _prompts(16), _prompts(4), ft, callbacks=[Interrupt()])
    again, history = train_adapter(tiny_llama, _prompts(16), _prompts(4), ft)
    assert again.summary["resumed_from"].endswith("checkpoint-2") and again.summary["steps"] == 4
    assert history.loc[history.split == "train", "step"].min() == 3  # steps 1-2 were not trained again


def test_answer_only_loss_equals_trl_loss(tiny_llama, tmp_path):
    import torch
    from trl import SFTConfig, SFTTrainer

    from amazon_llm_rec.core.llm.training import (
        _load_for_backend,
        answer_only_trainer_class,
        to_sft_dataset,
    )

    model, tok, peft_config = _load_for_backend("lora", tiny_llama, FT, "cpu")
    args = SFTConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to="none", max_length=256,
                     per_device_train_batch_size=4)
    ours = answer_only_trainer_class()(model=model, args=args, train_dataset=to_sft_dataset(_prompts(4)),
                                       processing_class=tok, peft_config=peft_config)
    batch = next(iter(ours.get_train_dataloader()))
    trl = SFTTrainer(model=ours.model, args=args, train_dataset=to_sft_dataset(_prompts(4)), processing_class=tok)
    with torch.no_grad():
        a = ours.compute_loss(ours.model, dict(batch))
        b = trl.compute_loss(ours.model, dict(batch))
    assert torch.allclose(a, b, rtol=1e-4), (a, b)


def test_qlora_bitsandbytes_4bit_trains_on_cpu(tiny_llama, tmp_path):
    require("bitsandbytes", "4-bit QLoRA on the CPU")
    ft = {**FT, "backend": "qlora_bnb", "checkpoint_dir": str(tmp_path / "ckpt"), "max_steps": 2, "eval_steps": None}
    adapter, history = train_adapter(tiny_llama, _prompts(8), _prompts(4), ft)
    assert adapter.summary["backend"] == "qlora_bnb" and adapter.summary["steps"] == 2
    assert any("Linear4bit" in type(m).__name__ for m in adapter.model.modules())
    assert history["loss"].notna().all()
