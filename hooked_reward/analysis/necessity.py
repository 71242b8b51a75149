"""Sufficiency and necessity of components and heads: what patching one in restores, and what taking it out removes.

Per (clean, corrupted) pair with reward gap `g = r(clean) − r(corrupted)`, for each component (attention layer,
MLP) or head `c`:

* **restores** (sufficiency, denoising): `(r(corrupted with c's clean activation) − r(corrupted)) / g`, the share
  of the gap that c alone brings back;
* **removes** (necessity, noising): `(r(clean) − r(clean with c's corrupted activation)) / g`, the share of the gap
  lost when c alone is taken out.

Both are exact patching runs (`patch_block_outputs` / `patch_heads` with `mode="denoise"` and `mode="noise"`, the
activation at all aligned positions). Over pairs each gets its mean and a BCa bootstrap interval
(`stats.bootstrap_mean_ci`), and the paired difference restores − removes its own interval. Where the two disagree
the component is flagged: **redundant** when it restores clearly more than it removes (the interval of the
difference lies above 0 and the difference is at least `min_share` of the gap: the mechanism has a backup that
carries the gap when c is out, so c is sufficient but not needed), **joint** when it removes clearly more than
it restores (likewise: c is needed but works together with others). A head named by sufficiency alone is only
half the story (issue 36: a head restoring 37% that removes 12% when ablated).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from jaxtyping import Float

from hooked_reward.analysis.patch_spec import PatchSpec, patch_spec
from hooked_reward.analysis.patching import Input, as_row, patch_block_outputs, patch_heads
from hooked_reward.analysis.results import LabeledTensor, require_pandas
from hooked_reward.analysis.stats import bootstrap_mean_ci
from hooked_reward.errors import InputError
from hooked_reward.names import Component, block_components, head_components

if TYPE_CHECKING:
    from hooked_reward.model import HookedRewardModel

__all__ = [
    "NecessityResult",
    "removes_pair",
    "restore_remove_pair",
    "summarise_restore_remove",
    "FLAGS",
    "NECESSITY_DEFAULT",
]

#: The patching options of `restore_remove_pair` / `removes_pair` unless given: reward-aligned, no progress bar.
NECESSITY_DEFAULT = PatchSpec(align="reward", progress=False)

#: What a component's restore/remove disagreement is called (empty: they agree).
FLAGS = ("redundant", "joint", "")


def _labels(model: HookedRewardModel, by: str) -> list[Component]:
    if by not in ("component", "head"):
        raise InputError(f"by must be 'component' or 'head', got {by!r}.")
    return block_components(model) if by == "component" else head_components(model)


def restore_remove_pair(
    model: HookedRewardModel,
    clean: Input,
    corrupt: Input,
    *,
    by: str = "component",
    spec: PatchSpec | None = None,
    **options: Any,
) -> dict[str, Any]:
    """One pair's restore and remove shares for every component (`by="component"`) or head (`by="head"`).

    Returns `restores [c]`, `removes [c]` (float32, shares of the pair's gap; NaN when the gap is 0) and `gap`
    (r(clean) − r(corrupted)), in the order of `names.block_components` / `head_components`. The patching options
    (`align`, `prompt_len`, `output`, `max_rows`; the modes are denoise and noise) are `PatchSpec`'s, as `spec=`
    or keywords; the defaults here are `NECESSITY_DEFAULT` (`align="reward"`, no progress bar)."""
    spec = patch_spec(spec, options, default=NECESSITY_DEFAULT, fn="restore_remove_pair")
    return _shares(model, clean, corrupt, ("denoise", "noise"), by, spec)


def removes_pair(
    model: HookedRewardModel,
    clean: Input,
    corrupt: Input,
    *,
    by: str = "component",
    spec: PatchSpec | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Only the remove shares (`removes [c]`, `gap`) of `restore_remove_pair`, for callers that already have the
    denoising effects (e.g. `faithfulness_pair`'s `patching`: restores = patching / reward_gap). Patching options
    as in `restore_remove_pair`."""
    spec = patch_spec(spec, options, default=NECESSITY_DEFAULT, fn="removes_pair")
    return _shares(model, clean, corrupt, ("noise",), by, spec)


def _shares(
    model: HookedRewardModel,
    clean: Input,
    corrupt: Input,
    modes: Sequence[str],
    by: str,
    spec: PatchSpec,
) -> dict[str, Any]:
    labels = _labels(model, by)
    c_row, x_row = as_row(model, clean), as_row(model, corrupt)
    shares = {}
    gap = math.nan
    for mode in modes:
        if by == "component":
            res = patch_block_outputs(model, c_row, x_row, spec=spec, mode=mode)
        else:
            res = patch_heads(model, c_row, x_row, act="z", spec=spec, mode=mode)
        gap = float(res.r_clean - res.r_corrupt)
        change = res.values.reshape(-1).double()
        share = change / gap if gap != 0 and math.isfinite(gap) else torch.full_like(change, math.nan)
        shares[mode] = (share if mode == "denoise" else -share).float().cpu()
    for share in shares.values():
        if share.shape[0] != len(labels):
            raise InputError(f"patching gave {share.shape[0]} effects for {len(labels)} {by}s.")
    out: dict[str, Any] = {"removes": shares["noise"], "gap": gap}
    if "denoise" in shares:
        out["restores"] = shares["denoise"]
    return out


@dataclass(repr=False)
class NecessityResult(LabeledTensor):
    """Restore and remove shares over pairs: `values [pair, measure, component]` with `measure` = ("restores",
    "removes"), and per component their means, intervals, the paired difference's interval and a flag.

    `summary` is one dict per component (in `labels["component"]` order): `restores`, `restores_ci`, `removes`,
    `removes_ci`, `difference_ci` (restores − removes), `flag` ("redundant", "joint" or "").
    """

    summary: list[dict[str, Any]] = field(default_factory=list)
    confidence: float = 0.95
    min_share: float = 0.1

    def ranked(self, k: int | None = None) -> list[dict[str, Any]]:
        """The summaries by decreasing max(restores, removes), each with its `component` label; the top `k`."""
        order = sorted(
            range(len(self.summary)),
            key=lambda i: -np.nan_to_num(max(self.summary[i]["restores"], self.summary[i]["removes"]), nan=-np.inf),
        )
        out = [{"component": self.labels["component"][i], **self.summary[i]} for i in order]
        return out if k is None else out[:k]

    def to_frame(self) -> Any:
        """One row per component: its restore and remove means, intervals, difference interval and flag."""
        pd = require_pandas()
        return pd.DataFrame(self.ranked())


def summarise_restore_remove(
    rows: Sequence[dict[str, Any]],
    labels: Sequence[Component | str],
    *,
    confidence: float = 0.95,
    n_boot: int = 1999,
    seed: int = 0,
    min_share: float = 0.1,
) -> NecessityResult:
    """Means and BCa intervals over pairs of each component's restore and remove shares (`rows` from
    `restore_remove_pair`), the interval of their paired difference, and the flag (module docstring). Pairs with
    a zero gap (NaN shares) are left out."""
    if not rows:
        raise InputError("No pairs to summarise: pass at least one restore_remove_pair row.")
    restores = np.stack([np.asarray(r["restores"], dtype=np.float64) for r in rows])
    removes = np.stack([np.asarray(r["removes"], dtype=np.float64) for r in rows])
    if restores.shape[1] != len(labels):
        raise InputError(f"rows hold {restores.shape[1]} components, labels {len(labels)}.")
    keep = np.isfinite(restores).all(1) & np.isfinite(removes).all(1)
    restores, removes = restores[keep], removes[keep]
    ci = {}
    for name, x in (("restores", restores), ("removes", removes), ("difference", restores - removes)):
        ci[name] = bootstrap_mean_ci(x, confidence=confidence, n_resamples=n_boot, seed=seed)
    summary = []
    for c in range(len(labels)):
        rest = float(restores[:, c].mean()) if len(restores) else math.nan
        rem = float(removes[:, c].mean()) if len(removes) else math.nan
        lo, hi = float(ci["difference"][0][c]), float(ci["difference"][1][c])
        flag = ""
        if lo > 0 and rest - rem >= min_share:
            flag = "redundant"
        elif hi < 0 and rem - rest >= min_share:
            flag = "joint"
        summary.append(
            {
                "restores": rest,
                "restores_ci": (float(ci["restores"][0][c]), float(ci["restores"][1][c])),
                "removes": rem,
                "removes_ci": (float(ci["removes"][0][c]), float(ci["removes"][1][c])),
                "difference_ci": (lo, hi),
                "flag": flag,
            }
        )
    values: Float[torch.Tensor, "pair measure component"] = torch.from_numpy(np.stack([restores, removes], axis=1))
    return NecessityResult(
        values=values.float(),
        dims=("pair", "measure", "component"),
        labels={"measure": ["restores", "removes"], "component": [str(c) for c in labels]},
        summary=summary,
        confidence=confidence,
        min_share=min_share,
    )
