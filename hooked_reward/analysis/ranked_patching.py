"""Causal patching on a budget: attribution patching over every site, then exact patching of the top-k it ranks.

Exact denoising patching of every component (`2 · n_layers` sites) and every head (`n_layers · n_heads` sites)
costs one forward per site and pair: 476 forwards per pair for a 28-layer, 16-head model. Attribution patching
estimates every site of one granularity from one forward and one backward pass of the corrupted run (plus one
forward of the clean run); `ranked_patching` then patches exactly only the `top_k` sites with the largest
|estimate|. Both numbers are kept side by side for those sites (`estimate`, `exact`), so an estimate with the
wrong sign or size is visible, and `values` holds the exact effect where it was computed and NaN elsewhere.

Cost per pair (forward-equivalents, a backward counted as two forwards): 2 cached forwards and one backward for
the estimates, 2 cached forwards for the exact setup, and `top_k` patched forwards: `6 + top_k` per granularity.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float
from torch import Tensor

from hooked_reward.analysis.attribution_patching import attribution_patch
from hooked_reward.analysis.patch_spec import PatchSpec, patch_spec
from hooked_reward.analysis.patching import Input, Patch, _run_sites, _setup
from hooked_reward.analysis.results import LabeledTensor
from hooked_reward.errors import InputError
from hooked_reward.names import act_name, block_components

if TYPE_CHECKING:
    from hooked_reward.model import HookedRewardModel

__all__ = ["RankedPatchingResult", "ranked_patching", "forward_equivalents", "RANKED_DEFAULT"]

#: `ranked_patching`'s patching options unless given: pairs aligned at their reward tokens, no progress bar.
RANKED_DEFAULT = PatchSpec(align="reward", progress=False)


@dataclass
class RankedPatchingResult(LabeledTensor):
    """Exact patching effects at the sites attribution patching ranked highest, beside every site's estimate.

    `values [site]`: the exact denoising effect (reward change when the clean activation is patched into the
    corrupted run) at the `top_k` ranked sites, NaN at the others. `estimate [site]`: the attribution-patching
    estimate of the same effect at every site. `ranked`: the indices of the exactly patched sites, largest
    |estimate| first. Sites are components `{l}_attn_out`, `{l}_mlp_out` (`by="component"`) or heads `L{l}H{h}`
    (`by="head"`, `hook_z`).
    """

    estimate: Float[Tensor, " site"] = field(default_factory=lambda: torch.empty(0))
    ranked: list[int] = field(default_factory=list)
    by: str = "component"
    r_clean: float = math.nan
    r_corrupt: float = math.nan
    value_name: str = "exact patching effect"

    @property
    def exact(self) -> Float[Tensor, " site"]:
        """The exact effects (= `values`; NaN where not patched)."""
        return self.values

    def side_by_side(self) -> list[dict[str, Any]]:
        """One row per exactly patched site, in rank order: site, estimate, exact, and whether the signs agree."""
        sites = self.axis_labels("site")
        rows = []
        for i in self.ranked:
            est, ex = float(self.estimate[i]), float(self.values[i])
            rows.append({"site": str(sites[i]), "estimate": est, "exact": ex, "same_sign": (est > 0) == (ex > 0)})
        return rows

    def _json_extra(self) -> dict[str, Any]:
        return {"side_by_side": self.side_by_side()}


def _head_hook(layer: int) -> str:
    return act_name("z", layer)


def ranked_patching(
    model: HookedRewardModel,
    clean: Input,
    corrupt: Input,
    *,
    by: str = "component",
    top_k: int = 12,
    spec: PatchSpec | None = None,
    **options: Any,
) -> RankedPatchingResult:
    """Attribution-patching estimates at every site of `by` ("component" or "head"), then exact denoising
    patching of the `top_k` sites with the largest |estimate| (all of them when there are at most `top_k`).

    `clean`/`corrupt`: text or token rows (chosen, rejected); `align` and `prompt_len` as in `patching`
    (default: aligned at the reward token). Returns a `RankedPatchingResult`. The patching options (`align`,
    `prompt_len`, `output`, `max_rows`, `progress`; the mode is always denoising) are `PatchSpec`'s, as `spec=` or
    keywords; the defaults here are `RANKED_DEFAULT` (`align="reward"`, no progress bar).
    """
    spec = patch_spec(spec, options, default=RANKED_DEFAULT, fn="ranked_patching")
    spec.require_modes(("denoise",), "ranked patching")
    if by not in ("component", "head"):
        raise InputError(f"by must be 'component' or 'head', got {by!r}.")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise InputError(f"top_k must be a positive int, got {top_k!r}.")
    sites_asked = ("attn_out", "mlp_out") if by == "component" else ("z",)
    approx = attribution_patch(model, clean, corrupt, sites=sites_asked, spec=spec)
    if by == "component":
        sweep = approx.sweep("block_outputs")
        labels = list(sweep.axis_labels("component"))
        estimate = sweep.values.reshape(-1).float()
        comps = block_components(model, range(model.cfg.n_layers))
        patches = [[Patch(c.hook_name)] for c in comps]
    else:
        sweep = approx.sweep("z")
        n_layers, n_heads = sweep.values.shape
        labels = [f"L{l}H{h}" for l in range(n_layers) for h in range(n_heads)]  # noqa: E741
        estimate = sweep.values.reshape(-1).float()
        patches = [[Patch(_head_hook(l), None, h)] for l in range(n_layers) for h in range(n_heads)]  # noqa: E741
    magnitude = torch.nan_to_num(estimate.abs(), nan=-1.0)
    ranked = [int(i) for i in torch.argsort(magnitude, descending=True, stable=True)[: min(top_k, len(labels))]]
    needed = list(dict.fromkeys(patches[i][0].hook for i in ranked))
    setup = _setup(model, clean, corrupt, needed, spec)
    rewards = _run_sites(model, setup, [patches[i] for i in ranked], spec, f"exact top-{top_k}")
    exact = torch.full((len(labels),), math.nan)
    exact[ranked] = rewards - setup.r_target
    return RankedPatchingResult(
        values=exact,
        dims=("site",),
        labels={"site": labels},
        estimate=estimate,
        ranked=ranked,
        by=by,
        r_clean=setup.r_clean,
        r_corrupt=setup.r_corrupt,
        meta={"top_k": top_k, "n_sites": len(labels)},
    )


def forward_equivalents(n_layers: int, n_heads: int, top_k: int, granularities: tuple[str, ...]) -> dict[str, int]:
    """Forward-equivalents per pair of `ranked_patching` over `granularities` against exact patching of every
    site (each exact sweep: 2 cached forwards + one patched forward per site), a backward counted as 2 forwards."""
    n_sites = {"component": 2 * n_layers, "head": n_layers * n_heads}
    ranked = sum(6 + min(top_k, n_sites[g]) for g in granularities)
    full = sum(2 + n_sites[g] for g in granularities)
    return {"ranked": ranked, "exact_every_site": full}
