"""Argument types shared by the CLI's common flags and the commands' own (`argparse` `type=` callables: a bad
value is refused by the parser with a one-line message naming it)."""

from __future__ import annotations

import argparse
import math

__all__ = ["count", "min_effect", "positive_int"]


def positive_int(text: str) -> int:
    """An integer >= 1 (`--batch-size`, `--max-length`, `--n-pairs`)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def min_effect(text: str) -> float:
    """A finite size >= 0 in reward units (`--min-effect`)."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"expected a finite size >= 0 in reward units, got {text!r}")
    return value


def count(text: str) -> int:
    """0 (all) or a positive integer (`--max-pairs`)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected 0 (all) or a positive integer, got {text!r}")
    return value
