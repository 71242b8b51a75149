"""benchmarks/scale.py: the configs are the published ones, the pairs are chat-shaped rows of the asked length."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # benchmarks: the scale benchmark runs

SCALE_PY = Path(__file__).resolve().parent.parent / "benchmarks" / "scale.py"


def _scale():
    spec = importlib.util.spec_from_file_location("scale", SCALE_PY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_configs_are_the_published_shapes():
    configs = _scale().CONFIGS
    qwen = configs["qwen3-0.6b"][1]
    assert (qwen["hidden_size"], qwen["num_hidden_layers"], qwen["num_attention_heads"]) == (1024, 28, 16)
    assert (qwen["num_key_value_heads"], qwen["head_dim"], qwen["intermediate_size"], qwen["vocab_size"]) == (
        8,
        128,
        3072,
        151936,
    )
    llama = configs["llama-3.2-1b"][1]
    assert (llama["hidden_size"], llama["num_hidden_layers"], llama["num_attention_heads"]) == (2048, 16, 32)
    assert (llama["num_key_value_heads"], llama["intermediate_size"], llama["vocab_size"]) == (8, 8192, 128256)
    assert llama["rope_scaling"]["rope_type"] == "llama3"


def test_chat_pair_shape():
    scale = _scale()
    config = scale.CONFIGS["llama-3.2-1b"][1]
    chosen, rejected = scale.chat_pair(config, 512)
    assert len(chosen) == len(rejected) == 512
    assert chosen[0] == rejected[0] == config["bos_token_id"] and chosen[-1] == config["eos_token_id"]
    shared = next(i for i, (a, b) in enumerate(zip(chosen, rejected, strict=True)) if a != b)
    assert 0.75 * 512 <= shared <= 0.85 * 512  # a shared prompt of ~80%, then different responses
