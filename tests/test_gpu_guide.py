"""docs/gpu-and-large-models.md: its formulas (benchmarks/gpu_guide.py) against the CPU scale benchmark's recorded
runs (benchmarks/recorded/scale.json: real configs, random weights), and its tables against the formulas."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parent.parent
RUNS = json.loads((ROOT / "benchmarks" / "recorded" / "scale.json").read_text())["runs"]
MB = 2**20


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[f"benchmarks_{name}"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


guide = _load("gpu_guide")


@pytest.mark.parametrize("run", RUNS, ids=lambda r: f"{r['config']}-{r['dtype']}")
def test_parameters_and_weight_memory_are_exact(run: dict) -> None:
    shape = guide.SHAPES[run["config"]]
    assert guide.params(shape) == run["params"]
    assert guide.weight_bytes(shape, run["dtype"]) / MB == run["weights_mb"]


def test_shapes_are_the_benchmarked_configs() -> None:
    for name, (_, config) in _load("scale").CONFIGS.items():
        s = guide.SHAPES[name]
        assert (s.d_model, s.n_layers, s.n_heads, s.n_kv_heads, s.head_dim, s.d_mlp, s.vocab) == (
            config["hidden_size"],
            config["num_hidden_layers"],
            config["num_attention_heads"],
            config["num_key_value_heads"],
            config["head_dim"],
            config["intermediate_size"],
            config["vocab_size"],
        )


@pytest.mark.parametrize("run", RUNS, ids=lambda r: f"{r['config']}-{r['dtype']}")
def test_forward_memory_within_tolerance(run: dict) -> None:
    ours, shape = run["ours"], guide.SHAPES[run["config"]]
    measured = (ours["rss_forward_mb"] - ours["rss_loaded_mb"]) * MB
    predicted = guide.forward_bytes(shape, 2, run["tokens"], run["dtype"])
    assert abs(measured / predicted - 1) <= guide.FORWARD_TOLERANCE
    if ours["rss_start_mb"] < ours["rss_loaded_mb"] - run["weights_mb"] / 2:  # a clean start (the VmHWM fix)
        loaded = (ours["rss_loaded_mb"] - ours["rss_start_mb"]) * MB
        assert 1.0 <= loaded / guide.weight_bytes(shape, run["dtype"]) <= 1.02


def test_causal_step_memory_within_tolerance() -> None:
    causal = [r for r in RUNS if r["top_k"] > 0]
    assert causal, "the recorded benchmark has a causal-step run"
    for run in causal:
        ours = run["ours"]
        measured = (ours["peak_rss_mb"] - ours["rss_loaded_mb"]) * MB
        predicted = guide.causal_bytes(guide.SHAPES[run["config"]], run["tokens"], run["dtype"])
        assert abs(measured / predicted - 1) <= guide.CAUSAL_TOLERANCE


def test_forward_equivalents_are_the_codes_own() -> None:
    from hooked_reward.analysis.ranked_patching import forward_equivalents
    from hooked_reward.study.analyze import causal_plan

    for run in RUNS:
        ours, shape = run["ours"], guide.SHAPES[run["config"]]
        plan = causal_plan(SimpleNamespace(cfg=SimpleNamespace(n_layers=shape.n_layers, n_heads=shape.n_heads)))
        assert guide.forward_equivalents_per_pair("analyze", shape) == plan["forward_equivalents_per_pair"]
        fe = forward_equivalents(shape.n_layers, shape.n_heads, run["top_k"], ("component", "head"))
        assert ours["forward_equivalents_exact_every_site"] == fe["exact_every_site"]
        assert guide.forward_equivalents_per_pair("faithfulness", shape) == 4 + fe["exact_every_site"]
        assert guide.forward_equivalents_per_pair("faithfulness", shape) == (
            8 + 2 * shape.n_layers + shape.n_layers * shape.n_heads
        )
        if run["top_k"]:  # the block passes counted in the recorded run equal the formula
            assert ours["forward_equivalents_measured"] == fe["ranked"] == ours["forward_equivalents_formula"]


def test_the_doc_shows_the_formulas_tables() -> None:
    doc = (ROOT / "docs" / "gpu-and-large-models.md").read_text()
    shown = re.search(r"<!-- tables: python benchmarks/gpu_guide.py -->\n(.*?)\n<!-- end tables -->", doc, re.S)
    assert shown is not None
    assert shown.group(1).strip() == guide.markdown().strip()
    assert "Nothing in this guide was run on a GPU" in doc
    assert "gpu-and-large-models.md" in (ROOT / "mkdocs.yml").read_text()
