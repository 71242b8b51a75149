"""`benchmarks/run.py --quick` produces every figure (issue 16). Timing targets are not unit-tested: only that
each figure is present and finite, and the exactness checks that do not depend on the machine."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = pytest.mark.slow  # benchmarks: timed runs of real workloads

RUN_PY = Path(__file__).resolve().parent.parent / "benchmarks" / "run.py"

FIGURES = {
    "forward": [
        "ratio_vs_hf",
        "cache_all_ratio_vs_hf",
        "cache_resid_ratio_vs_hf",
        "cache_reward_pos_ratio_vs_hf",
        "tl_bridge_ratio_vs_hf_causal_lm",
        "max_abs_reward_diff_vs_hf",
        "seconds",
        "retained_memory",
    ],
    "memory": [
        "hf_forward_peak_bytes",
        "ours_forward_peak_bytes",
        "cache_full",
        "cache_resid",
        "cache_reward_pos",
        "reward_cache_excess_bytes_over_full_per_seq",
        "reward_cache_constant_bytes",
    ],
    "patching": [
        "sweep_ratio_vs_naive",
        "tl_ratio_vs_naive",
        "sweep_max_abs_diff_vs_naive",
        "tl_max_abs_diff_vs_naive",
        "seconds",
    ],
    "attribution_patching": ["forward_equivalents", "spearman_vs_exact"],
    "loading": [
        "time_ratio_vs_hf",
        "peak_rss_ratio_vs_hf",
        "hf",
        "ours",
        "hf_causal_lm",
        "tl_bridge_causal_lm",
        "tl_bridge_time_ratio_vs_hf_causal_lm",
        "bridge_seconds_over_hf",
        "bridge_ms_per_layer",
    ],
    "lengths": [
        "by_length",
        "longest",
        "max_forward_ratio_vs_hf",
        "max_sweep_chosen_over_plain",
        "max_sweep_abs_diff_fast_vs_plain",
    ],
    "fixed_cost": ["by_shape", "max_forward_ratio_vs_hf", "fixed_ms_per_forward", "fixed_ms_over_hf"],
    "real": ["by_config", "max_load_ratio_vs_hf", "max_atp_peak_rss_ratio_vs_hf_forward"],
    "imports": [
        "seconds",
        "hooked_reward_ratio_vs_transformer_lens",
        "model_ratio_vs_transformer_lens",
        "model_ratio_vs_transformer_lens_bridge",
    ],
    "machine": ["cpu", "cores", "torch_threads", "torch", "date", "device"],
}


def load_run(path: Path = RUN_PY) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"hooked_reward_benchmarks_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("bench") / "quick.json"
    returned = load_run().main(["--quick", "--repeats", "1", "--out", str(out)])
    written = json.loads(out.read_text())
    assert set(written) == set(returned)
    return written


@pytest.mark.parametrize("section", list(FIGURES))
def test_every_figure_is_reported(results: dict, section: str) -> None:
    for figure in FIGURES[section]:
        assert figure in results[section], f"{section}.{figure} missing"
        value = results[section][figure]
        if isinstance(value, (int, float)):
            assert math.isfinite(value), f"{section}.{figure} = {value}"


def test_targets_and_exact_figures(results: dict) -> None:
    run = load_run()
    assert set(results["targets"]) == set(run.TARGETS)
    assert results["forward"]["max_abs_reward_diff_vs_hf"] <= 1e-4
    assert results["patching"]["sweep_max_abs_diff_vs_naive"] <= 1e-4
    assert results["patching"]["tl_max_abs_diff_vs_naive"] <= 1e-4
    for name in ("full", "resid", "reward_pos"):
        cache = results["memory"][f"cache_{name}"]
        assert cache["tensor_bytes"] > 0 and cache["bytes_per_cached_token"] > 0
    assert results["memory"]["cache_full"]["tensor_bytes"] > results["memory"]["cache_reward_pos"]["tensor_bytes"]
    assert set(results["attribution_patching"]["spearman_vs_exact"]) == {"resid_pre", "block_outputs", "z", "all"}
    assert results["loading"]["hf"]["peak_rss_delta_bytes"] > 0
    lengths = results["lengths"]["by_length"]
    assert list(lengths) == [str(n) for n in run.SHAPES["quick"]["lengths"]]
    for row in lengths.values():
        for figure in ("ratio_vs_hf", "cache_resid_ratio_vs_hf", "cache_reward_pos_ratio_vs_hf"):
            assert math.isfinite(row[figure]) and row[figure] > 0
        assert set(row["seconds"]) >= {"hf", "ours", "pattern_hook_one_layer", "explicit_every_layer"}
        sweep = row["sweep"]
        assert sweep["max_abs_diff_fast_vs_plain"] <= 1e-4  # both paths of the sampled sweep agree
        assert sweep["rule_picks"] in ("fast", "plain") and sweep["sampled_patches"] > 0
    fixed = results["fixed_cost"]["by_shape"]
    assert list(fixed) == [f"{b}x{s}" for s, b in run.SHAPES["quick"]["fixed_cost"]]
    assert all(math.isfinite(row["ratio_vs_hf"]) and row["ratio_vs_hf"] > 0 for row in fixed.values())
    for row in results["real"]["by_config"].values():  # issue 33: load and AtP memory at a (tiny) real layout
        assert row["atp"]["finite"] and row["atp"]["peak_rss_mb"] > 0
        assert (
            len(row["load_cpu_s"]["hf"]) == len(row["load_cpu_s"]["ours"]) == run.SHAPES["quick"]["real_load_repeats"]
        )


def test_targets_are_judged(results: dict) -> None:
    """Every target carries its value and bound, and `met` says whether the value is within the bound."""
    for key, target in results["targets"].items():
        assert target["met"] == (target["value"] <= target["bound"]), key
    assert results["forward"]["retained_memory"]["in_effect"] in (True, False)


def test_load_scaling_reports_every_layer_count(tmp_path: Path) -> None:
    out = tmp_path / "scaling.json"
    result = load_run(RUN_PY.parent / "load_scaling.py").main(
        ["--quick", "--layers", "1,2", "--repeats", "1", "--out", str(out)]
    )
    written = json.loads(out.read_text())
    assert set(written["by_layers"]) == {"1", "2"} and set(result["by_layers"]) == {1, 2}
    for row in result["by_layers"].values():
        assert row["hf"]["seconds"] > 0 and row["ours"]["seconds"] > 0
        assert math.isfinite(row["tl_bridge_time_ratio_vs_hf_causal_lm"])


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the message given without CUDA")
def test_cuda_without_a_gpu_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        load_run().main(["--quick", "--device", "cuda"])
    assert "sees no CUDA device; use --device cpu" in capsys.readouterr().err


def test_only_runs_the_named_sections(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = load_run().main(["--quick", "--only", "memory", "--out", str(tmp_path / "m.json")])
    assert "memory" in result and not {"forward", "patching", "lengths", "loading", "imports"} & set(result)
    assert set(result["targets"]) == {"memory.reward_cache_excess_bytes_over_full_per_seq"}
    with pytest.raises(SystemExit):
        load_run().main(["--quick", "--only", "memroy"])
    assert "unknown section(s) ['memroy']" in capsys.readouterr().err
