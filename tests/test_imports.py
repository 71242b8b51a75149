"""Issue 26: `import hooked_reward` is cheap; plotting, statistics, SAE and analysis code load only when used."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # each test starts a fresh interpreter (imports torch and transformers)

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("matplotlib", "scipy.stats", "sklearn", "hooked_reward.sae", "hooked_reward.analysis", "hooked_reward.report")
LAZY_PACKAGES = (
    "hooked_reward",
    "hooked_reward.sae",
    "hooked_reward.report",
    "hooked_reward.analysis.extensions",
    "hooked_reward.analysis.probes",
)


def modules_after(code: str) -> set[str]:
    """The names in `sys.modules` after running `code` in a fresh interpreter that imports this checkout."""
    script = f"import sys, json\n{code}\nprint(json.dumps(sorted(sys.modules)))"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_import_loads_no_heavy_dependency() -> None:
    loaded = modules_after("import hooked_reward")
    for name in (*HEAVY, "scipy", "torch", "transformer_lens", "hooked_reward.model"):
        assert name not in loaded, f"`import hooked_reward` imported {name}"


def test_model_loads_no_plotting_statistics_or_sae() -> None:
    """The model needs TransformerLens's bridge (which itself imports scipy through transformers' losses), but
    nothing of ours beyond the core."""
    loaded = modules_after("from hooked_reward import HookedRewardModel")
    assert "hooked_reward.model" in loaded and "transformer_lens.model_bridge" in loaded
    for name in HEAVY:
        assert name not in loaded, f"`from hooked_reward import HookedRewardModel` imported {name}"


def test_a_patching_analysis_loads_no_plotting_or_sklearn() -> None:
    loaded = modules_after("import hooked_reward.analysis.patching, hooked_reward.analysis.lens")
    for name in ("matplotlib", "sklearn", "hooked_reward.sae"):
        assert name not in loaded, name


@pytest.mark.parametrize("package", LAZY_PACKAGES)
def test_every_export_resolves(package: str) -> None:
    module = importlib.import_module(package)
    assert module.__all__, package
    for name in module.__all__:
        assert getattr(module, name) is not None, f"{package}.{name}"
        assert name in dir(module)
    with pytest.raises(AttributeError, match="no attribute 'not_a_name'"):
        module.not_a_name  # noqa: B018


def test_subpackages_load_on_attribute_access() -> None:
    loaded = modules_after("import hooked_reward as hr\nassert hr.sae.load_sae and hr.organisms.list_organisms")
    assert "hooked_reward.sae" in loaded and "hooked_reward.organisms" in loaded


@pytest.mark.parametrize("entry", ["from hooked_reward import HookedRewardModel", "import hooked_reward.bridge_build"])
def test_transformers_log_level_is_the_users(entry: str) -> None:
    """Importing TransformerLens's bridge sets HF's logger to ERROR; the package restores the user's level."""
    code = (
        "import logging, transformers\n"
        "logging.getLogger('transformers').setLevel(logging.INFO)\n"
        f"{entry}\n"
        "import transformer_lens.model_bridge\n"
        "assert logging.getLogger('transformers').level == logging.INFO, logging.getLogger('transformers').level"
    )
    assert "transformer_lens.model_bridge" in modules_after(code)
