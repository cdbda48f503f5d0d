"""The Unsloth backend: 4-bit loading, Unsloth's LoRA and gradient checkpointing (GPU only).

This module imports Unsloth, which fails without an NVIDIA GPU; nothing a CPU machine imports
may import it. `training.resolve_backend` checks for a GPU and the package before importing this.
"""

from __future__ import annotations

from typing import Any


def load_unsloth(base_path: str, ft: dict[str, Any], device: str | None = None):
    """Load `base_path` in 4 bits with Unsloth and add its LoRA adapters; return (model, tokenizer).

    `device` ('cuda:<local rank>') places the whole model on one GPU: each process of a data-parallel run
    (`accelerate launch`/`torchrun`, Unsloth's DDP guide) holds its own copy."""
    import torch  # noqa: PLC0415
    import unsloth  # noqa: F401, PLC0415 - before transformers/peft/trl where possible
    from unsloth import FastLanguageModel  # noqa: PLC0415

    from .models import prepare_tokenizer, use_bf16  # noqa: PLC0415

    lora = ft["lora"]
    model, tokenizer = FastLanguageModel.from_pretrained(
        model_name=base_path,
        max_seq_length=int(ft["max_seq_length"]),
        dtype=torch.bfloat16 if use_bf16(ft["bf16"], "cuda") else torch.float16,
        load_in_4bit=bool(ft["load_in_4bit"]),
        **({"device_map": {"": device}} if device else {}),
    )
    tokenizer = prepare_tokenizer(tokenizer)
    model = FastLanguageModel.get_peft_model(
        model,
        r=int(lora["r"]),
        lora_alpha=int(lora["alpha"]),
        lora_dropout=float(lora["dropout"]),
        target_modules=list(lora["target_modules"]),
        bias="none",
        use_gradient_checkpointing="unsloth" if ft["gradient_checkpointing"] else False,
        random_state=int(ft["seed"]),
    )
    return model, tokenizer


def for_inference(model):
    """Switch an Unsloth model to its fast inference mode."""
    from unsloth import FastLanguageModel  # noqa: PLC0415

    FastLanguageModel.for_inference(model)
    return model
