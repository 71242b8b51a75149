"""Analyses read heads only through `RewardHead`'s public protocol, never a concrete head, its internals or its kind.

An allow-list: in `analysis/`, `sae/`, `study/`, `report/`, the cache and the CLI, every attribute read off a head
(`model.head.X`, `head.X`) is one of `PROTOCOL`, and the only module of `hooked_reward.heads` imported is
`heads.base`, for the protocol's own types. Anywhere outside `heads/`, no module imports a concrete head module
(`hooked_reward.heads.armorm`, ...; the package `hooked_reward.heads` re-exports what loaders and organisms need)
and no code compares `readout_kind`: heads answer through their methods (`pair_split`, `readout_is_shared`,
`readout_needs_point`, `readout_column`, `term_names`...). The import directions (layers, no cycles in core,
organisms a leaf) are checked in tests/test_layers.py.
"""

from __future__ import annotations

import ast
from pathlib import Path

import hooked_reward
from hooked_reward.heads.base import RewardHead

PACKAGE = Path(hooked_reward.__file__).resolve().parent

#: `RewardHead`'s public protocol: what analyses, SAE code, studies and reports may read off a head.
PROTOCOL = {
    "n_outputs",
    "output_names",
    "hook_points",
    "readout",
    "readout_names",
    "readout_hooks",
    "readout_values",
    "values_at",
    "readout_kind",
    "readout_is_shared",
    "readout_needs_point",
    "readout_column",
    "pair_split",
    "pair_split_hooks",
    "term_names",
    "term_hooks",
    "terms",
    "term_directions",
    "linear_map",
}
#: Names analyses may import from `hooked_reward.heads.base`: the protocol's types.
BASE_NAMES = {"RewardHead", "Readout", "ReadoutKind", "PairSplit", "HeadTerms", "HeadInputs", "as_float"}
READERS = ("analysis", "sae", "study", "report", "cache.py", "cli.py")


def files(*subs: str) -> list[Path]:
    out: list[Path] = []
    for sub in subs:
        root = PACKAGE / sub
        out += sorted(root.rglob("*.py")) if root.is_dir() else [root] if root.exists() else []
    return out


def outside_heads() -> list[Path]:
    return [p for p in sorted(PACKAGE.rglob("*.py")) if "heads" not in p.relative_to(PACKAGE).parts[:1]]


def test_protocol_names_exist_on_reward_head() -> None:
    """The allow-list names only what `RewardHead` defines (a typo here would allow nothing)."""
    missing = sorted(name for name in PROTOCOL if not hasattr(RewardHead, name) and name != "output_names")
    assert not missing, f"not on RewardHead: {missing}"


def test_readers_touch_only_the_head_protocol() -> None:
    offences = []
    for path in files(*READERS):
        where = path.relative_to(PACKAGE)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute):
                owner = node.value
                on_head = (isinstance(owner, ast.Attribute) and owner.attr == "head") or (
                    isinstance(owner, ast.Name) and owner.id == "head"
                )
                if on_head and node.attr not in PROTOCOL:
                    offences.append(f"{where}:{node.lineno} reads head.{node.attr}, not in RewardHead's protocol")
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("hooked_reward.heads"):
                if node.module != "hooked_reward.heads.base":
                    offences.append(f"{where}:{node.lineno} imports {node.module}")
                else:
                    extra = {a.name for a in node.names} - BASE_NAMES
                    if extra:
                        offences.append(f"{where}:{node.lineno} imports {sorted(extra)} from heads.base")
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "isinstance" and len(node.args) == 2:
                names = {n.id for n in ast.walk(node.args[1]) if isinstance(n, ast.Name)}
                names |= {n.attr for n in ast.walk(node.args[1]) if isinstance(n, ast.Attribute)}
                if any(n.endswith("Head") for n in names):
                    offences.append(f"{where}:{node.lineno} asks which head it has ({sorted(names)})")
    assert not offences, "\n".join(offences)


def test_no_concrete_head_import_or_kind_comparison_outside_heads() -> None:
    offences = []
    for path in outside_heads():
        where = path.relative_to(PACKAGE)
        for node in ast.walk(ast.parse(path.read_text())):
            modules: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module:
                modules = [node.module]
            elif isinstance(node, ast.Import):
                modules = [a.name for a in node.names]
            for module in modules:
                parts = module.split(".")
                if parts[:2] == ["hooked_reward", "heads"] and len(parts) > 2 and parts[2] != "base":
                    offences.append(f"{where}:{node.lineno} imports the concrete head module {module}")
            if isinstance(node, ast.Compare):
                sides = [node.left, *node.comparators]
                if any(isinstance(s, ast.Attribute) and s.attr == "readout_kind" for s in sides):
                    offences.append(f"{where}:{node.lineno} compares readout_kind")
    assert not offences, "\n".join(offences)
