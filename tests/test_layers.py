"""The layer contract of docs/architecture.md, checked on the real import graph (grimp, import-linter's engine).

    core (model, cache, positions, names, pairs, loading, heads, errors, ...)
      <- analysis, sae
        <- report      (renders result objects: from analysis it imports result types only)
          <- study     (runner, results store, provenance, distributed, one module per command, registry)
            <- cli, __main__
    organisms: a leaf that nothing in the library imports except the CLI.

Every import counts, including those inside functions; imports under `if TYPE_CHECKING:` do not (they never
run). A new module falls into its layer by its path, so the contract holds for code not yet written.
"""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path

import grimp
import pytest

import hooked_reward

PACKAGE = "hooked_reward"
RANK = {"core": 0, "analysis": 1, "report": 2, "study": 3, "app": 4}
MAY_IMPORT_ORGANISMS = {"app"}


def layer_of(module: str) -> str:
    """The layer a module belongs to, from its dotted path."""
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else ""
    if top in ("cli", "__main__"):
        return "app"
    if top == "report":
        return "report"
    if top == "study":
        return "study"
    if top in ("analysis", "sae"):
        return "analysis"
    if top == "organisms":
        return "organisms"
    return "core"


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph(PACKAGE, include_external_packages=False, exclude_type_checking_imports=True)


def test_layers_point_one_way(graph: grimp.ImportGraph) -> None:
    upward = []
    for importer in sorted(graph.modules):
        src = layer_of(importer)
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            dst = layer_of(imported)
            if imported == PACKAGE or src == "organisms":
                continue  # the package root re-exports; organisms (a leaf) may use the whole library
            if dst == "organisms":
                if src not in MAY_IMPORT_ORGANISMS:
                    upward.append(f"{importer} ({src}) imports the organisms leaf {imported}")
            elif RANK[dst] > RANK[src]:
                upward.append(f"{importer} ({src}) imports {imported} ({dst}), a higher layer")
    assert not upward, "Imports against the layers of docs/architecture.md:\n" + "\n".join(upward)


def _report_imports() -> list[tuple[str, str, str]]:
    """Every `from hooked_reward.X import name` in report/ (type-checking and in-function imports included), as
    (file, module, name); `import hooked_reward.X` as (file, module, "")."""
    found = []
    for path in sorted((Path(hooked_reward.__file__).parent / "report").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(PACKAGE + "."):
                found += [(path.name, node.module, alias.name) for alias in node.names]
            elif isinstance(node, ast.Import):
                found += [(path.name, a.name, "") for a in node.names if a.name.startswith(PACKAGE + ".")]
    return found


def test_report_renders_only():
    """report/ draws result objects: from analysis/ and sae/ it may import result types (classes) only, never a
    function that computes, and nothing from the study layer (which calls report/, not the other way)."""
    wrong = []
    for file, module, name in _report_imports():
        layer = layer_of(module)
        if layer in ("study", "app"):
            wrong.append(f"report/{file} imports {module}.{name} from the {layer} layer")
        elif layer == "analysis":
            obj = getattr(importlib.import_module(module), name, None) if name else None
            if not inspect.isclass(obj):
                wrong.append(f"report/{file} imports {module}.{name or '*'}, not a result type")
    assert not wrong, "report/ computing instead of rendering:\n" + "\n".join(wrong)


def test_package_root_imports_only_core(graph: grimp.ImportGraph) -> None:
    """`import hooked_reward` must not pull in analysis, reports or organisms (they load lazily)."""
    eager = sorted(m for m in graph.find_modules_directly_imported_by(PACKAGE) if layer_of(m) != "core")
    assert not eager, f"hooked_reward/__init__.py imports {eager} eagerly"


def test_core_modules_have_no_import_cycles(graph: grimp.ImportGraph) -> None:
    """Within core, no two modules import each other (e.g. heads <-> loading), directly or through others."""
    core = sorted(m for m in graph.modules if layer_of(m) == "core" and m != PACKAGE)
    cycles = []
    for importer in core:
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            if imported == PACKAGE or layer_of(imported) != "core":
                continue
            back = graph.find_shortest_chain(importer=imported, imported=importer)
            if back is not None and not _same_package_init(importer, imported):
                cycles.append(f"{importer} -> {imported} -> ... -> {' -> '.join(back[1:])}")
    assert not cycles, "Import cycles in core:\n" + "\n".join(cycles)


def _same_package_init(a: str, b: str) -> bool:
    """A package's `__init__` re-exporting its own submodules is not a cycle between concepts."""
    return a.startswith(b + ".") or b.startswith(a + ".")


def test_layer_rule_sorts_known_modules() -> None:
    assert layer_of("hooked_reward.model") == "core"
    assert layer_of("hooked_reward.heads.armorm") == "core"
    assert layer_of("hooked_reward.analysis.lens") == "analysis"
    assert layer_of("hooked_reward.sae.splice") == "analysis"
    assert layer_of("hooked_reward.report.html") == "report"
    assert layer_of("hooked_reward.study.runner") == "study"
    assert layer_of("hooked_reward.study.analyze") == "study"
    assert layer_of("hooked_reward.cli") == "app"
    assert layer_of("hooked_reward.organisms.train") == "organisms"
