"""Lazy package exports (PEP 562): a package names what it exports and where it lives, and each submodule is
imported the first time one of its names is read. `import hooked_reward` then costs almost nothing; plotting
(matplotlib), statistics (scipy, sklearn), SAEs, analyses and the model itself (TransformerLens's bridge) load
when first used.

    __getattr__, __dir__ = lazy_exports(__name__, {"hooked_reward.model": ["HookedRewardModel"]})

Each package keeps the same names in an `if TYPE_CHECKING:` import block for type checkers and the docs, and
`tests/test_imports.py` checks that every exported name resolves.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Iterable, Mapping
from typing import Any


def lazy_exports(
    package: str, exports: Mapping[str, Iterable[str]]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Module-level `__getattr__` and `__dir__` for `package`: `exports` maps a module path to the names it
    provides; a subpackage or submodule (`hooked_reward.sae`) is also imported on first access. A name read once
    is cached in the package's namespace, so later reads are plain lookups."""
    where = {name: module for module, names in exports.items() for name in names}
    namespace = importlib.import_module(package).__dict__

    def __getattr__(name: str) -> Any:
        module = where.get(name)
        if module is None:
            if not name.startswith("_") and importlib.util.find_spec(f"{package}.{name}") is not None:
                return importlib.import_module(f"{package}.{name}")
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(where))

    return __getattr__, __dir__
