"""Shared fixtures: small real-format raw files, a tiny random Llama, a temporary project copy."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
SHARED = (ROOT / ".." / "shared" / "data" / "amazon2018").resolve()


# `make test` sets this: what `make setup` installs (kedro-viz, PySpark, Java, bitsandbytes, hadolint) must be there,
# so a missing one fails the test instead of skipping it quietly.
STRICT = os.environ.get("AMAZON_LLM_REC_REQUIRE_SETUP") == "1"


def require(module: str, why: str):
    """Import `module`; skip without it, except under `make test`, where its absence is a failure."""
    if STRICT:
        import importlib

        try:
            return importlib.import_module(module)
        except ImportError as error:
            pytest.fail(f"{module} is missing but `make setup` installs it ({why}): {error}", pytrace=False)
    return pytest.importorskip(module, reason=why)


def require_tool(found: bool, what: str) -> None:
    """Skip when a tool `make setup` installs is absent; under `make test` fail instead."""
    if not found:
        (pytest.fail if STRICT else pytest.skip)(f"{what} (make setup installs it)")


def shared_file(name: str) -> Path:
    """Return a file of ../shared/data/amazon2018, skipping the test when it is absent."""
    path = SHARED / name
    if not path.is_file():
        pytest.skip(f"real data file {path} is absent (it lives outside the repository)")
    return path


@pytest.fixture(scope="session")
def synthetic_raw(tmp_path_factory) -> dict[str, str]:
    """A small synthetic category in the published file format."""
    from amazon_llm_rec.core.data import synthetic
    from amazon_llm_rec.core.data.raw_io import write_json_lines

    folder = tmp_path_factory.mktemp("raw")
    reviews, meta = synthetic.generate(num_reviewers=120, seed=3)
    write_json_lines(reviews, str(folder / "Demo_5.json.gz"))
    write_json_lines(meta, str(folder / "meta_Demo.json.gz"))
    return {"reviews": str(folder / "Demo_5.json.gz"), "meta": str(folder / "meta_Demo.json.gz"), "dir": str(folder)}


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> str:
    """A tiny randomly initialised Llama with the real SmolLM2 tokenizer, saved as a model folder."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from amazon_llm_rec.core.llm.models import builtin_gguf

    folder, filename = builtin_gguf("smollm2-135m-instruct")
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=filename)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    out = tmp_path_factory.mktemp("tiny_llama")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return str(out)


def copy_project(dest: Path) -> Path:
    """Copy the project's configuration into `dest`, a fresh project root with empty data folders."""
    shutil.copytree(ROOT / "conf", dest / "conf", ignore=shutil.ignore_patterns("local"))
    (dest / "conf" / "local").mkdir()
    shutil.copy(ROOT / "pyproject.toml", dest / "pyproject.toml")
    shutil.copy(ROOT / ".telemetry", dest / ".telemetry")
    shutil.copytree(ROOT / "src", dest / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for layer in ("01_raw", "02_intermediate", "03_primary", "04_feature", "05_model_input", "06_models",
                  "07_model_output", "08_reporting"):
        (dest / "data" / layer).mkdir(parents=True)
    if (ROOT / "notebooks").is_dir():
        shutil.copytree(ROOT / "notebooks", dest / "notebooks")
    return dest


def load_test_module():
    """benchmarks/load_test.py as a module (its server start, readiness wait and load run serve the tests too)."""
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import load_test
    finally:
        sys.path.pop(0)
    return load_test


def serving_settings(**overrides):
    """`ServingSettings` from the project's conf/base/parameters_serving.yml (the one place its defaults live)."""
    import yaml

    from amazon_llm_rec.serving.config import ServingSettings

    serving = yaml.safe_load((ROOT / "conf" / "base" / "parameters_serving.yml").read_text())["serving"]
    return ServingSettings.from_params({**serving, **overrides}, {}, environ={})


def kedro_session(project, env=None, extra=None):
    """A KedroSession on `project` with runtime parameters `extra`."""
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(project)
    return KedroSession.create(project_path=project, env=env, runtime_params=extra)


RUN_PARAMS = {
    "raw": {"synthetic": {"num_reviewers": 90}},
    "prompts": {"max_train_prompts": 24, "max_validation_prompts": 4, "max_test_prompts": 16},
    "fine_tuning": {"max_steps": 3, "batch_size": 4, "eval_steps": 2, "save_steps": 1, "bf16": False,
                    "logging_steps": 1},
    "evaluation": {"batch_size": 8, "exact_match_max_prompts": 4, "bf16": False, "export_merged": True,
                   "llm_protocols": None},  # every protocol, as conf/full (the default scores the first only)
}


@pytest.fixture(scope="session")
def ran_project(tmp_path_factory, tiny_llama):
    """A fresh project copy after `kedro run` (all four pipelines) with a tiny random Llama: shared by the
    end-to-end checks, the recommend pipeline and the service tests."""
    project = copy_project(tmp_path_factory.mktemp("project"))
    extra = {**RUN_PARAMS, "model": {"name": tiny_llama}}
    mp = pytest.MonkeyPatch()
    mp.chdir(project)
    try:
        with kedro_session(project, extra=extra) as session:
            session.run()
    finally:
        mp.undo()
    return project


def base_params(name: str, **overrides):
    """`params:<name>` as conf/base defines it (every default lives there once), with top-level `overrides`; nested
    dicts given in `overrides` are merged into conf's."""
    import copy  # noqa: PLC0415

    import yaml  # noqa: PLC0415

    conf = {}
    for path in sorted((Path(__file__).parents[1] / "conf/base").glob("parameters_*.yml")):
        conf.update(yaml.safe_load(path.read_text()) or {})
    params = copy.deepcopy(conf[name])
    for key, value in overrides.items():
        params[key] = {**params[key], **value} if isinstance(value, dict) and isinstance(params.get(key), dict) else value
    return params


def evidence_for(sequences, windows, items=None, **evaluation):
    """The evidence of `windows`' data cut, with conf/base's evaluation settings and `evaluation` overrides."""
    from amazon_llm_rec.core.rank.evidence import Evidence  # noqa: PLC0415

    return Evidence.for_windows(sequences, windows, items, base_params("evaluation", **evaluation))
