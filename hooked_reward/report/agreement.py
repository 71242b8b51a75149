"""How the reports word agreement and read model cards: `verdict` (a plain word for a ρ and its interval) and
`card_label` (a model card's component name as a `Component`). The statistics are `analysis.agreement`'s."""

from __future__ import annotations

import math
from collections.abc import Sequence

from hooked_reward.names import Component

__all__ = ["card_label", "verdict"]


def verdict(rho: float, ci: Sequence[float]) -> str:
    """A plain word for a ρ and its interval: agree (interval above 0.5), disagree (interval reaches 0 or below),
    partly agree (in between), or 'cannot tell' (no interval)."""
    low, high = float(ci[0]), float(ci[1])
    if not (math.isfinite(rho) and math.isfinite(low) and math.isfinite(high)):
        return "cannot tell"
    if low > 0.5:
        return "agree"
    if low <= 0:
        return "disagree"
    return "partly agree"


def card_label(component: str) -> Component:
    """A model card's component name (`blocks.{l}.attn.head.{h}`, `blocks.{l}.attn`, `blocks.{l}.mlp`, the
    organisms' naming) as a `Component`: `L{l}H{h}`, `{l}_attn_out`, `{l}_mlp_out`."""
    parts = component.split(".")
    layer = int(parts[1])
    if "head" in parts:
        return Component("head", layer, int(parts[-1]))
    return Component("attn_out" if parts[2].startswith("attn") else "mlp_out", layer)
