"""The one place where hook points are added to (or removed from) a built model after TransformerLens's scan.

TransformerLens finds a bridge's hook points once, when it is built. Two things add more later: the reward head
(`hook_reward_resid`, `hook_reward` and the head's own, e.g. `hook_score`, `gating.hook_weights`; at load) and a
spliced SAE (`{hook_name}.hook_sae_*`, for the duration of `sae.splice_sae`). Both must land in the same two
places, or `hook_dict` / `run_with_hooks` / `run_with_cache` and the driver's list of hooks it may fire disagree:
the model's `_hook_registry` and its driver's `supported_hook_points`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from transformer_lens.hook_points import HookPoint

if TYPE_CHECKING:
    from hooked_reward.model import HookedRewardModel


def add_hook_points(model: HookedRewardModel, points: Mapping[str, HookPoint], *, rename: bool = False) -> None:
    """Make `points` (public name -> hook point) visible to `model.hook_dict` and to the driver.

    `rename=True` also sets each hook point's `.name` to its public name (the head's hook points live under
    `head.` but are known as `hook_score`...; an SAE's hook points already carry their full names)."""
    registry = getattr(model, "_hook_registry", None)
    if registry is None:
        raise TypeError(f"{type(model).__name__} has no hook registry; adding hook points needs a TransformerBridge.")
    for name, hook_point in points.items():
        if rename:
            hook_point.name = name
        registry[name] = hook_point
    _update_supported(model, added=points.keys())


def remove_hook_points(model: HookedRewardModel, names: Iterable[str]) -> None:
    """Undo `add_hook_points` for `names` (names not registered are skipped)."""
    names = list(names)
    for name in names:
        model._hook_registry.pop(name, None)
    _update_supported(model, removed=names)


def _update_supported(model: HookedRewardModel, added: Iterable[str] = (), removed: Iterable[str] = ()) -> None:
    """Keep the driver's `supported_hook_points` (when it has one) in step with the registry."""
    driver = getattr(model, "_driver", None)
    supported = getattr(driver, "supported_hook_points", None)
    if driver is not None and supported is not None:
        driver.supported_hook_points = (frozenset(supported) | frozenset(added)) - frozenset(removed)
