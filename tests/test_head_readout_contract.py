"""Analyses read heads only through the head's methods (`readout`, ...), never its internals or its class.

The import directions (layers, no cycles in core, organisms a leaf) are checked in tests/test_layers.py."""

from __future__ import annotations

import ast
from pathlib import Path

import hooked_reward

PACKAGE = Path(hooked_reward.__file__).resolve().parent


def module_files(sub: str) -> list[Path]:
    root = PACKAGE / sub
    return sorted(root.rglob("*.py")) if root.is_dir() else [root.with_suffix(".py")]


HEAD_INTERNALS = {"regression_layer", "transform", "objective_names", "linearise_at", "score_directions", "_mlp"}


def test_analyses_read_heads_only_through_their_methods():
    """The lens, attribution, extensions, SAE code and the cache never ask which head they have (no isinstance on
    a head class) and never touch a head's internals: they use `readout`, `readout_names`, `readout_hooks`,
    `readout_values`, `values_at`, `readout_kind` and hook points."""
    files = [*module_files("analysis"), *module_files("sae"), PACKAGE / "cache.py"]
    for path in files:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in HEAD_INTERNALS:
                raise AssertionError(f"{path.relative_to(PACKAGE)}:{node.lineno} reads head internals .{node.attr}")
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "isinstance" and len(node.args) == 2:
                names = {n.id for n in ast.walk(node.args[1]) if isinstance(n, ast.Name)}
                names |= {n.attr for n in ast.walk(node.args[1]) if isinstance(n, ast.Attribute)}
                heads = {n for n in names if n.endswith("Head")}
                assert not heads, f"{path.relative_to(PACKAGE)}:{node.lineno} asks which head it has: {heads}"
