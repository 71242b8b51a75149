"""The version is written once (hooked_reward.__version__) and the installed metadata reads it from there."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest

import hooked_reward

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).resolve().parents[1]


def test_version_is_single_sourced() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in pyproject["project"], "a second, literal version in pyproject.toml's [project]"
    assert "version" in pyproject["project"]["dynamic"]
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "hooked_reward.__version__"}
    assert importlib.metadata.version("hooked_reward") == hooked_reward.__version__
