"""The layer contract of docs/architecture.md, checked on the real import graph (grimp, import-linter's engine).

    core (model, cache, positions, names, pairs, loading, heads, errors, ...)
      <- analysis, sae
        <- report
          <- study (runner, results store, provenance, distributed, units of each command)
            <- cli, __main__
    organisms: a leaf that nothing in the library imports except the CLI.

Every import counts, including those inside functions; imports under `if TYPE_CHECKING:` do not (they never
run). A new module falls into its layer by its path, so the contract holds for code not yet written.
"""

from __future__ import annotations

import grimp
import pytest

PACKAGE = "hooked_reward"
RANK = {"core": 0, "analysis": 1, "report": 2, "study": 3, "app": 4}
MAY_IMPORT_ORGANISMS = {"app"}
# Moving to study/ (issue 30): report.analyze's in-memory path still runs the analyze units itself.
KNOWN_UPWARD = {
    ("hooked_reward.report.analyze", "hooked_reward.study.runner"),
    ("hooked_reward.report.analyze", "hooked_reward.study.units"),
}


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
            elif RANK[dst] > RANK[src] and (importer, imported) not in KNOWN_UPWARD:
                upward.append(f"{importer} ({src}) imports {imported} ({dst}), a higher layer")
    assert not upward, "Imports against the layers of docs/architecture.md:\n" + "\n".join(upward)


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
    assert layer_of("hooked_reward.cli") == "app"
    assert layer_of("hooked_reward.organisms.train") == "organisms"
