"""The version is written once (hooked_reward.__version__) and the installed metadata reads it from there; the
dependency floors match what transformer-lens requires."""

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


def test_dependency_floors_cover_transformer_lens():
    """Our floors are at least transformer-lens's own, so pip never has to replace a user's torch or transformers
    to satisfy it; pandas and huggingface_hub are declared."""
    from packaging.requirements import Requirement
    from packaging.version import Version

    ours = {
        Requirement(r).name.lower().replace("_", "-"): Requirement(r)
        for r in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    }
    assert {"pandas", "huggingface-hub", "torch", "transformers"} <= set(ours)

    def floor(req: Requirement) -> Version | None:
        lows = [Version(s.version) for s in req.specifier if s.operator in (">=", "==")]
        return max(lows) if lows else None

    for text in importlib.metadata.requires("transformer-lens") or []:
        req = Requirement(text)
        name = req.name.lower().replace("_", "-")
        if (req.marker is not None and not req.marker.evaluate({"extra": ""})) or name not in ours:
            continue
        theirs, mine = floor(req), floor(ours[name])
        if theirs is not None:
            assert mine is not None and mine >= theirs, f"{name}: our floor {mine} is below transformer-lens's {theirs}"
