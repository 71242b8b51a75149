"""The version is written once (hooked_reward.__version__) and the installed metadata reads it from there."""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

import hooked_reward

ROOT = Path(__file__).resolve().parents[1]


def test_version_is_single_sourced() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^dynamic = \["version"\]', pyproject, re.M), "pyproject must take the version from the package"
    assert not re.search(r"^version = ", pyproject, re.M), "a second, literal version in pyproject.toml"
    assert importlib.metadata.version("hooked_reward") == hooked_reward.__version__
