"""Attribution patching: a first-order estimate of every activation patch from one forward/backward pass.

For a patch that writes the source activation `a_s` over the target's `a_t` at one site, the reward changes by

    Δr ≈ ∂r/∂a |_(target run) · (a_s − a_t),

summed over the site's elements (d_model for the residual, d_head for a head's z, every position for an
"all positions" site). Denoising takes the gradient at the corrupted run with a_s = clean; noising at the
clean run with a_s = corrupted. One forward and one backward pass of the target run give every site at once.

Results are `PatchingResult`s with the same axes, labels and `values` meaning (reward change) as the exact
sweeps in `hooked_reward.analysis.patching`, so `plot_comparison(exact, approx)` puts both on one plot. The
estimate is exact wherever the reward is linear in the activation (e.g. `hook_reward_resid` under a linear
head, or `ln_final.hook_normalized`); elsewhere it is a first-order approximation, poorest where the final
norm's scale or attention patterns move a lot between the two runs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import einops
import torch
from jaxtyping import Float
from torch import Tensor

from hooked_reward.analysis.patching import (
    Alignment,
    Input,
    PatchingResult,
    align_pair,
    as_row,
    has_position_axis,
    position_labels,
)
from hooked_reward.errors import InputError
from hooked_reward.outputs import select_output

__all__ = ["SITES", "attribution_patch", "gradients_and_deltas", "plot_comparison"]

SITES = ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out", "z")


def _hook_name(site: str, layer: int) -> str:
    if site == "z":
        return f"blocks.{layer}.attn.hook_z"
    return f"blocks.{layer}.hook_{site}"


def gradients_and_deltas(
    model: Any,
    target: Tensor,
    source: Tensor,
    hooks: Sequence[str],
    align: Alignment,
    output: int | str | None = None,
) -> tuple[float, float, dict[str, Tensor], dict[str, Tensor]]:
    """`(r_target, r_source, grads, deltas)` for hooks of `[batch, pos, ...]` activations (batch dropped).

    `grads[h]` is ∂r_target/∂a_h at the target run (`[target_len, ...]`); `deltas[h]` is `a_source − a_target`
    at aligned target positions, zero elsewhere (an unaligned position is never patched).
    """
    store: dict[str, Tensor] = {}

    def keeper(name: str):
        def keep(act: Tensor, hook: Any) -> Tensor:
            store[name] = act
            return act

        return keep

    names = list(dict.fromkeys(hooks))
    with torch.enable_grad():
        rewards = model.run_with_hooks(target[None], fwd_hooks=[(name, keeper(name)) for name in names])
        r = select_output(rewards, output, names=model.output_names)[0]
        acts = [store[name] for name in names]
        grads = torch.autograd.grad(r, acts, allow_unused=True)
    r_source_all, cache = model.run_with_cache(source[None], names_filter=names)
    r_source = float(select_output(r_source_all, output, names=model.output_names)[0])
    tgt_idx, src_idx = align.indices(None)
    grad_out, delta_out = {}, {}
    for name, act, grad in zip(names, acts, grads, strict=True):
        a_t = act.detach()[0].float()
        a_s = cache[name][0].float()
        if has_position_axis(name):
            delta = torch.zeros_like(a_t)
            delta[tgt_idx] = a_s[src_idx] - a_t[tgt_idx]
        else:
            delta = a_s - a_t
        grad_out[name] = torch.zeros_like(a_t) if grad is None else grad[0].float()
        delta_out[name] = delta
    return float(r.detach()), r_source, grad_out, delta_out


def attribution_patch(
    model: Any,
    clean: Input,
    corrupt: Input,
    *,
    sites: Sequence[str] = ("resid_pre", "attn_out", "mlp_out", "z"),
    mode: str = "denoise",
    per_position: bool = False,
    align: str | None = None,
    prompt_len: int | None = None,
    output: int | str | None = None,
) -> dict[str, PatchingResult]:
    """First-order estimates of the exact sweeps, keyed by site, one forward/backward for all of them.

    * ``"resid_pre" | "resid_mid" | "resid_post"``: `[n_layers, pos]`, like `patch_resid` (always per
      position).
    * ``"attn_out"`` and ``"mlp_out"`` together give ``"block_outputs"``: `[2 * n_layers]` over ``attn{l}``,
      ``mlp{l}`` (or `[2 * n_layers, pos]` with `per_position`), like `patch_block_outputs`.
    * ``"z"``: `[n_layers, n_heads]` (or `[n_layers, n_heads, pos]`), like `patch_heads(act="z")`.

    `values` is the estimated reward change; `rewards` = r_target + values. Positions without an aligned
    counterpart are NaN in per-position grids (see `align_pair` for `align` / `prompt_len`).
    """
    if mode not in ("denoise", "noise"):
        raise InputError(f"attribution patching supports mode='denoise' or 'noise', got {mode!r}.")
    bad = [s for s in sites if s not in SITES]
    if bad:
        raise InputError(f"Unknown site(s) {bad}; choose from {SITES}.")
    clean_row, corrupt_row = as_row(model, clean), as_row(model, corrupt)
    target, source = (corrupt_row, clean_row) if mode == "denoise" else (clean_row, corrupt_row)
    al = align_pair(len(target), len(source), align, prompt_len)
    n_layers = model.cfg.n_layers
    hooks = [_hook_name(s, l) for s in sites for l in range(n_layers)]  # noqa: E741
    r_target, r_source, grads, deltas = gradients_and_deltas(model, target, source, hooks, al, output)
    r_clean, r_corrupt = (r_source, r_target) if mode == "denoise" else (r_target, r_source)
    n_pos = len(target)
    unaligned = torch.tensor([not al.has(p) for p in range(n_pos)])
    pos_labels = position_labels(model, target)
    layer_labels = [str(l) for l in range(n_layers)]  # noqa: E741

    def per_pos(name: str) -> Float[Tensor, "pos ..."]:
        """Gradient × delta summed over the last (feature) axis: `[pos]` or `[pos, head]`."""
        return (grads[name] * deltas[name]).sum(-1)

    def make(values: Tensor, axes: tuple[str, ...], labels: list[list[str]], site: str) -> PatchingResult:
        return PatchingResult(
            values=values,
            rewards=values + r_target,
            axes=axes,
            labels=labels,
            mode=f"attribution-{mode}",
            site=site,
            r_clean=r_clean,
            r_corrupt=r_corrupt,
            r_target=r_target,
            meta={"target_len": n_pos},
        )

    out: dict[str, PatchingResult] = {}
    for site in sites:
        if site.startswith("resid"):
            grid = torch.stack([per_pos(_hook_name(site, l)) for l in range(n_layers)])  # noqa: E741
            grid[:, unaligned] = math.nan
            out[site] = make(grid, ("layer", "pos"), [layer_labels, pos_labels], f"blocks.*.hook_{site}")
        elif site == "z":
            grid = torch.stack([per_pos(_hook_name(site, l)) for l in range(n_layers)])  # noqa: E741  [layer, pos, head]
            grid = einops.rearrange(grid, "layer pos head -> layer head pos")
            heads = [str(h) for h in range(grid.shape[1])]
            if per_position:
                grid[:, :, unaligned] = math.nan
                labels3 = [layer_labels, heads, pos_labels]
                out[site] = make(grid, ("layer", "head", "pos"), labels3, "blocks.*.attn.hook_z")
            else:
                out[site] = make(grid.sum(-1), ("layer", "head"), [layer_labels, heads], "blocks.*.attn.hook_z")
    if "attn_out" in sites or "mlp_out" in sites:
        kinds = [k for k in ("attn", "mlp") if f"{k}_out" in sites]
        rows = [per_pos(_hook_name(f"{k}_out", l)) for l in range(n_layers) for k in kinds]  # noqa: E741
        labels = [f"{k}{l}" for l in range(n_layers) for k in kinds]  # noqa: E741
        grid = torch.stack(rows)
        if per_position:
            grid[:, unaligned] = math.nan
            site_name = "hook_attn_out / hook_mlp_out"
            out["block_outputs"] = make(grid, ("component", "pos"), [labels, pos_labels], site_name)
        else:
            out["block_outputs"] = make(grid.sum(-1), ("component",), [labels], "hook_attn_out / hook_mlp_out")
    return out


def plot_comparison(exact: PatchingResult, approx: PatchingResult, ax: Any = None, what: str = "values") -> Any:
    """Scatter of attribution-patching estimates against exact patching over the same sites, with y = x.

    Both must have the same shape (e.g. `patch_resid(...)` and `attribution_patch(...)["resid_pre"]`).
    """
    import matplotlib.pyplot as plt

    if exact.values.shape != approx.values.shape:
        raise InputError(f"Shapes differ: exact {tuple(exact.values.shape)} vs approx {tuple(approx.values.shape)}.")
    x = (exact.fraction if what == "fraction" else exact.values).flatten()
    y = (approx.fraction if what == "fraction" else approx.values).flatten()
    ok = torch.isfinite(x) & torch.isfinite(y)
    if ax is None:
        _, ax = plt.subplots(figsize=(4, 4))
    ax.scatter(x[ok].numpy(), y[ok].numpy(), s=12)
    lim = float(torch.cat([x[ok], y[ok]]).abs().max()) if bool(ok.any()) else 1.0
    ax.plot([-lim, lim], [-lim, lim], color="grey", lw=0.8, ls="--")
    ax.set_xlabel(f"exact patching ({what})")
    ax.set_ylabel(f"attribution patching ({what})")
    ax.set_title(exact.site, fontsize=9)
    return ax
