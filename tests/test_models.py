"""Base-model resolution: the embedded SmolLM2 GGUF (real weights), local folders, hub ids offline."""

from __future__ import annotations

import json

import pytest

from amazon_llm_rec.core.errors import ConfigError
from amazon_llm_rec.core.llm.models import (
    load_model,
    load_tokenizer,
    materialize_base_model,
    option_token_ids,
)
from amazon_llm_rec.datasets import BaseModelDataset


@pytest.mark.slow
def test_embedded_smollm2_is_converted_once_then_reused(tmp_path):
    ds = BaseModelDataset(str(tmp_path / "base_model"))
    ds.save("smollm2-135m-instruct")
    path = ds.load()
    weights = tmp_path / "base_model" / "model.safetensors"
    assert weights.is_file() and json.loads((tmp_path / "base_model" / "source.json").read_text())["name"] == "smollm2-135m-instruct"
    stamp = weights.stat().st_mtime_ns
    ds.save("smollm2-135m-instruct")  # second run: reused, not converted again
    assert weights.stat().st_mtime_ns == stamp
    tok, model = load_tokenizer(path), load_model(path)
    assert model.config.model_type == "llama" and model.num_parameters() > 100_000_000
    assert tok.pad_token != tok.eos_token and tok.chat_template
    ids = option_token_ids(tok, "Pick one.", "Options:\nA) x\nB) y", "ABCD")
    assert len(set(ids)) == 4
    # A real pretrained model continues a familiar phrase sensibly.
    enc = tok("The capital of France is", return_tensors="pt")
    out = model.generate(**enc, max_new_tokens=3, do_sample=False, pad_token_id=tok.pad_token_id)
    assert "Paris" in tok.decode(out[0])


def test_local_folder_and_hub_id_resolution(tmp_path, tiny_llama):
    assert materialize_base_model(tiny_llama, str(tmp_path / "x"))["path"].endswith(tiny_llama.rsplit("/", 1)[-1])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no config.json"):
        materialize_base_model(str(tmp_path / "empty"), str(tmp_path / "x"))
    assert materialize_base_model("TinyLlama/TinyLlama-1.1B-Chat-v1.0", str(tmp_path / "x"))["path"].startswith("TinyLlama/")


def test_a_hub_id_offline_fails_with_a_message_on_local_weights(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError, match="local model folder"):
        load_tokenizer("some-org/model-that-is-not-cached")


def test_base_model_dataset_says_how_to_produce_it(tmp_path):
    from kedro.io import DatasetError

    with pytest.raises(DatasetError, match="kedro run --pipeline=fine_tuning"):
        BaseModelDataset(str(tmp_path / "nothing")).load()
