"""One warning per kind per run: the command line collects the warnings a run raises and prints each kind once,
with how many times it came up (a per-pair warning would otherwise repeat for every pair).

A kind is the warning's category and the line of code that raised it; the first message stands for the kind. The
user's warning filters still apply (`-W ignore`, `PYTHONWARNINGS`): a filtered warning is not collected.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

__all__ = ["one_per_kind"]


@contextmanager
def one_per_kind(prefix: str, stream: TextIO | None = None) -> Iterator[list[warnings.WarningMessage]]:
    """Collect the warnings raised inside the block; at its end (also on an error) print one line per kind to
    `stream` (stderr): `PREFIX: warning: MESSAGE` plus `(N times in this run)` when it came up more than once.
    Yields the list of collected warnings."""
    with warnings.catch_warnings(record=True) as caught:  # the filters in force (the user's, Python's) still apply
        try:
            yield caught
        finally:
            _print(prefix, caught, stream or sys.stderr)


def _print(prefix: str, caught: list[warnings.WarningMessage], stream: TextIO) -> None:
    kinds: dict[tuple[type[Warning], str, int], list[warnings.WarningMessage]] = {}
    for w in caught:
        kinds.setdefault((w.category, w.filename, w.lineno), []).append(w)
    for (category, _, _), ws in kinds.items():
        message = " ".join(str(ws[0].message).split())
        count = f" ({len(ws)} times in this run; shown once)" if len(ws) > 1 else ""
        print(f"{prefix}: warning ({category.__name__}): {message}{count}", file=stream)
