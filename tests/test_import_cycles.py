"""Imports point one way: heads and loading never import each other, heads never import the model, and nothing in
the library but the CLI imports the organisms (their factors and SAE recipes live in `organisms/`)."""

from __future__ import annotations

import ast
from pathlib import Path

import hooked_reward

PACKAGE = Path(hooked_reward.__file__).resolve().parent


def imported_modules(path: Path) -> set[str]:
    """Every `hooked_reward...` module a file imports (top level, inside functions, or under TYPE_CHECKING)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            out.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
    return {m for m in out if m.startswith("hooked_reward")}


def module_files(sub: str) -> list[Path]:
    root = PACKAGE / sub
    return sorted(root.rglob("*.py")) if root.is_dir() else [root.with_suffix(".py")]


def importers_of(target: str) -> list[str]:
    found = []
    for path in PACKAGE.rglob("*.py"):
        mods = imported_modules(path)
        if any(m == target or m.startswith(target + ".") for m in mods):
            found.append(str(path.relative_to(PACKAGE)))
    return sorted(found)


def test_heads_import_neither_loading_nor_the_model():
    for path in module_files("heads"):
        bad = {m for m in imported_modules(path) if m.startswith(("hooked_reward.loading", "hooked_reward.model"))}
        assert not bad, f"{path.name} imports {bad}"


def test_registry_imports_no_head_and_no_loader_at_run_time():
    tree = ast.parse((PACKAGE / "registry.py").read_text())
    runtime = [n for n in tree.body if isinstance(n, ast.ImportFrom) and n.module and "hooked_reward" in n.module]
    assert {n.module for n in runtime} <= {"hooked_reward.errors"}


def test_only_the_cli_imports_the_organisms():
    users = [f for f in importers_of("hooked_reward.organisms") if not f.startswith("organisms/")]
    assert users == ["cli.py"]


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
