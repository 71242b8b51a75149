"""Grouping unlabelled pairs by the mechanism that carries them: each pair's dominant component.

A preference file without labels is one mixed group, and a second mechanism in the data never shows in means over
all pairs (issue 36). Each pair has an attribution profile over components or heads (`ΔDRA_c`, the component's
direct contribution to r(chosen) − r(rejected); exact: the profile sums to the margin). The pair's **dominant
component** is the one contributing most in the direction of its margin, `argmax_c sign(margin) · ΔDRA_c`, and its
**share** that contribution over the sum of the positive ones. Pairs are grouped by their dominant component;
components dominating fewer than `min_size` pairs pool into "other". `spread` summarises how concentrated the
dominance is (one group holding most pairs, or many).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from jaxtyping import Float

from hooked_reward.errors import InputError

__all__ = ["PairGroups", "group_by_dominant", "largest_margins", "OTHER"]

#: The group of pairs whose dominant component dominates too few pairs to be a group of its own.
OTHER = "other"


@dataclass
class PairGroups:
    """`group_of[i]`: pair i's group (its dominant component's label, or `OTHER`); `dominant[i]`: its dominant
    component whatever the group; `share[i]`: that component's share of the pair's positive contributions;
    `groups`: `{group: [pair indices]}`, largest first."""

    group_of: list[str]
    dominant: list[str]
    share: Float[np.ndarray, " pair"]
    groups: dict[str, list[int]]

    @property
    def spread(self) -> dict[str, float]:
        """How the pairs spread over groups: `n_groups`, `largest` (the largest group's share of the pairs) and
        `median_share` (the median dominant component's share: near 1 when single components carry pairs)."""
        n = len(self.group_of)
        return {
            "n_groups": float(len(self.groups)),
            "largest": max((len(v) for v in self.groups.values()), default=0) / n if n else float("nan"),
            "median_share": float(np.median(self.share)) if n else float("nan"),
        }


def group_by_dominant(
    profiles: Float[np.ndarray, "pair component"],
    margins: Float[np.ndarray, " pair"],
    labels: Sequence[str],
    *,
    min_size: int = 3,
) -> PairGroups:
    """Group pairs by their dominant component (module docstring). `profiles [pair, component]` (ΔDRA per pair),
    `margins [pair]` (r(chosen) − r(rejected)), `labels` the components' names."""
    x = np.asarray(profiles, dtype=np.float64)
    m = np.asarray(margins, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != len(labels) or m.shape != (x.shape[0],):
        raise InputError(
            f"profiles must be [pair, component] with one margin per pair and one label per component; got "
            f"{x.shape}, {m.shape} margins and {len(labels)} labels."
        )
    if not (np.isfinite(x).all() and np.isfinite(m).all()):
        raise InputError("profiles and margins must be finite to find each pair's dominant component.")
    toward = x * np.where(m < 0, -1.0, 1.0)[:, None]
    best = toward.argmax(1)
    positive = np.clip(toward, 0, None).sum(1)
    share = np.where(positive > 0, toward[np.arange(len(best)), best] / np.where(positive > 0, positive, 1), 0.0)
    dominant = [str(labels[i]) for i in best]
    counts = Counter(dominant)
    group_of = [d if counts[d] >= min_size else OTHER for d in dominant]
    groups: dict[str, list[int]] = {}
    for i, g in enumerate(group_of):
        groups.setdefault(g, []).append(i)
    order = sorted(groups, key=lambda g: (g == OTHER, -len(groups[g]), g))
    return PairGroups(group_of, dominant, share, {g: groups[g] for g in order})


def largest_margins(margins: Float[np.ndarray, " pair"], k: int) -> list[int]:
    """Indices of the `k` pairs with the largest |margin| (the clearest preferences), largest first; NaN last."""
    m = np.abs(np.asarray(margins, dtype=np.float64))
    order = np.argsort(-np.nan_to_num(m, nan=-np.inf), kind="stable")
    return [int(i) for i in order[: max(0, k)]]
