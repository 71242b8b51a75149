"""Attribution patching: a first-order estimate of every activation patch from one forward/backward pass.

For a patch that writes the source activation `a_s` over the target's `a_t` at one site, the reward changes by

    Δr ≈ ∂r/∂a |_(target run) · (a_s − a_t),

summed over the site's elements (d_model for the residual, d_head for a head's z, every position for an
"all positions" site). Denoising takes the gradient at the corrupted run with a_s = clean; noising at the
clean run with a_s = corrupted. One forward and one backward pass of the target run give every site at once.

`attribution_patch` returns one `AttributionPatchingResult` with a `site` axis named after the sites asked for:
`values [site, layer, pos]` is the estimated reward change of patching that site of that layer at that
position (`z`: all heads together; per head in `head_values [layer, head, pos]`). `result.sweep(name)` is a
`PatchingResult` with the same axes, labels and `values` meaning (reward change) as the exact sweep in
`hooked_reward.analysis.patching`, so `plot_comparison(exact, approx.sweep("resid_pre"))` puts both on one plot. The
estimate is exact wherever the reward is linear in the activation (e.g. `hook_reward_resid` under a linear
head, or `ln_final.hook_normalized`); elsewhere it is a first-order approximation, poorest where the final
norm's scale or attention patterns move a lot between the two runs.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import einops
import torch
from jaxtyping import Float
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from hooked_reward.analysis.patch_spec import PatchSpec, patch_spec
from hooked_reward.analysis.patching import (
    Alignment,
    Input,
    PatchingResult,
    as_row,
    has_position_axis,
    position_labels,
    reward_alignment,
)
from hooked_reward.errors import InputError
from hooked_reward.names import Component, act_name
from hooked_reward.outputs import select_output

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from transformer_lens.hook_points import HookPoint

    from hooked_reward.model import HookedRewardModel

__all__ = [
    "SITES",
    "AttributionPatchingResult",
    "attribution_patch",
    "attribution_values",
    "gradients_and_deltas",
    "plot_comparison",
]

SITES = ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out", "z")


def _hook_name(site: str, layer: int) -> str:
    return act_name(site, layer)


@contextmanager
def checkpointed_blocks(model: HookedRewardModel) -> Iterator[None]:
    """While active, each block of `model` runs under non-reentrant activation checkpointing
    (`torch.utils.checkpoint`): a forward with grad keeps only each block's inputs, and the backward recomputes
    one block's intermediates at a time. The graph is the first forward's and the recomputation runs the same ops
    on the same values, so gradients (also with respect to activations captured by hooks in that forward) are
    those of the plain backward. Keep the forward's hooks on until the backward is done: the recomputation must
    take the same paths (a pattern hook sends its layer to the explicit attention). Peak memory: the block inputs
    and one block's intermediates instead of every block's (a 512-token backward on Qwen3-0.6B held 2.2x a
    forward's peak before, docs/performance.md)."""
    blocks = list(model.blocks)
    try:
        for block in blocks:
            object.__setattr__(block, "forward", functools.partial(checkpoint, block.forward, use_reentrant=False))
        yield
    finally:
        for block in blocks:
            block.__dict__.pop("forward", None)


def gradients_and_deltas(
    model: HookedRewardModel,
    target: Tensor,
    source: Tensor,
    hooks: Sequence[str],
    align: Alignment,
    output: int | str | None = None,
) -> tuple[float, float, dict[str, Tensor], dict[str, Tensor]]:
    """`(r_target, r_source, grads, deltas)` for hooks of `[batch, pos, ...]` activations (batch dropped).

    `grads[h]` is ∂r_target/∂a_h at the target run (`[target_len, ...]`), computed under `checkpointed_blocks`
    (one block's intermediates in memory at a time); `deltas[h]` is
    `a_source − a_target` at aligned target positions, zero elsewhere (an unaligned position is never patched).
    """
    store: dict[str, Tensor] = {}

    def keeper(name: str):
        def keep(act: Tensor, hook: HookPoint) -> Tensor:
            store.setdefault(name, act)  # the first forward's value (the backward's recomputation fires it again)
            return act

        return keep

    names = list(dict.fromkeys(hooks))
    fwd_hooks = [(name, keeper(name)) for name in names]
    with torch.enable_grad(), checkpointed_blocks(model), model.hooks(fwd_hooks=fwd_hooks):
        rewards = model(target[None])
        r = select_output(rewards, output, names=model.output_names)[0]
        acts = [store[name] for name in names]
        grads = torch.autograd.grad(r, acts, allow_unused=True)
    with torch.no_grad():
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


def _before_blocks(model: HookedRewardModel) -> set[int]:
    """Ids of the hook points that fire before the residual enters block 0 (embeddings, rotary tables)."""
    after = {"blocks", "ln_final", "head", "unembed"}
    return {
        id(hook)
        for name, child in model.named_children()
        if name not in after
        for hook in child.modules()
        if hasattr(hook, "add_hook")
    }


def attribution_values(
    model: HookedRewardModel,
    target: Tensor,
    source: Tensor,
    hooks: Sequence[str],
    align: Alignment,
    output: int | str | None = None,
) -> tuple[float, float, dict[str, Tensor]]:
    """`(r_target, r_source, values)`: for each hook, `values[h] = (∂r_target/∂a_h · (a_source − a_target))` summed
    over the activation's last axis (`[target_len]`, `[target_len, head]` for `hook_z`, a scalar for the head's
    hooks): `gradients_and_deltas`'s gradient × delta, computed without holding every site's gradient.

    The source run is cached first; the target run's hooks turn each source activation into its delta as the
    target activation fires (the source copy is dropped then), and a tensor hook multiplies the delta with the
    gradient as the backward reaches it. The parameters do not require grad during the run (the residual entering
    block 0 is the graph's leaf, so no weight gradient is computed or kept for) and the blocks run checkpointed:
    peak memory is one copy of the sites (the deltas) plus one block's intermediates. A hook that fires before
    block 0 (embeddings) needs the parameters' graph: then the plain `gradients_and_deltas` is used."""
    names = list(dict.fromkeys(hooks))
    early = _before_blocks(model)
    if any(id(model.hook_dict[name]) in early for name in names if name in model.hook_dict):
        r_t, r_s, grads, deltas = gradients_and_deltas(model, target, source, names, align, output)
        return r_t, r_s, {name: (grads[name] * deltas[name]).sum(-1) for name in names}
    with torch.no_grad():
        r_source_all, cache = model.run_with_cache(source[None], names_filter=names)
    r_source = float(select_output(r_source_all, output, names=model.output_names)[0])
    sources = {name: cache[name] for name in names}
    del cache
    tgt_idx, src_idx = align.indices(None)
    values: dict[str, Tensor] = {}
    seen: set[str] = set()

    def keeper(name: str):
        def keep(act: Tensor, hook: HookPoint) -> Tensor:
            if name in seen:  # the backward's recomputation fires the hook again
                return act
            seen.add(name)
            a_t, a_s = act.detach()[0].float(), sources.pop(name)[0].float()
            if has_position_axis(name):
                delta = torch.zeros_like(a_t)
                delta[tgt_idx] = a_s[src_idx] - a_t[tgt_idx]
            else:
                delta = a_s - a_t
            values[name] = torch.zeros(delta.shape[:-1])  # unused by the reward: no gradient reaches it

            def product(grad: Tensor) -> None:
                values[name] = (grad[0].float() * delta).sum(-1)

            if act.requires_grad:
                act.register_hook(product)
            return act

        return keep

    frozen = [p for p in model.parameters() if p.requires_grad]
    fwd_hooks = [(act_name("resid_pre", 0), _leaf), *[(name, keeper(name)) for name in names]]
    try:
        for parameter in frozen:
            parameter.requires_grad_(False)
        with torch.enable_grad(), checkpointed_blocks(model), model.hooks(fwd_hooks=fwd_hooks):
            rewards = model(target[None])
            r = select_output(rewards, output, names=model.output_names)[0]
            r.backward()
    finally:
        for parameter in frozen:
            parameter.requires_grad_(True)
    return float(r.detach()), r_source, values


def _leaf(act: Tensor, hook: HookPoint) -> Tensor:
    """The residual entering block 0 as a leaf that requires grad: the start of the activations' graph (the
    parameters do not require grad in `attribution_values`). Fired again by the recomputation, identically."""
    return act.detach().requires_grad_(True)


@dataclass(repr=False)
class AttributionPatchingResult(PatchingResult):
    """First-order estimates of patching every site asked for, one forward/backward for all of them.

    `values [site, layer, pos]`: estimated reward change of patching site `site` (labels: the sites asked
    for, e.g. "resid_pre", "attn_out", "mlp_out", "z") of layer `layer` at position `pos` (NaN where a position
    has no aligned counterpart); for "z" all heads of the layer together. `head_values [layer, head, pos]`:
    "z" per head (None when "z" was not asked for). `rewards = r_target + values`. `per_position` chooses the
    shape of the exact-sweep views that `sweep()` returns.
    """

    head_values: Tensor | None = None
    per_position: bool = False

    def sweep(self, name: str) -> PatchingResult:
        """The estimate shaped as the exact sweep it approximates (same dims, labels, `values` meaning).

        * "resid_pre" | "resid_mid" | "resid_post": `[layer, pos]`, like `patch_resid` (always per position);
        * "block_outputs" (needs "attn_out" and/or "mlp_out"): `[component]` over "{l}_attn_out", "{l}_mlp_out" (or
          `[component, pos]` when `per_position`), like `patch_block_outputs`; "attn_out" / "mlp_out" alone:
          `[layer]` (or `[layer, pos]`);
        * "z": `[layer, head]` (or `[layer, head, pos]`), like `patch_heads(act="z")`.
        """
        sites = self.axis_labels("site")
        layers, pos = self.axis_labels("layer"), self.axis_labels("pos")

        def make(values: Tensor, dims: tuple[str, ...], labels: dict[str, list[Any]], site: str) -> PatchingResult:
            return PatchingResult(
                values=values,
                dims=dims,
                labels=labels,
                rewards=values + self.r_target,
                mode=self.mode,
                site=site,
                r_clean=self.r_clean,
                r_corrupt=self.r_corrupt,
                r_target=self.r_target,
                meta=dict(self.meta),
            )

        def grid(site: str) -> Tensor:
            return self.values[sites.index(site)]

        if name.startswith("resid") and name in sites:
            return make(grid(name), ("layer", "pos"), {"layer": layers, "pos": pos}, act_name(name, "*"))
        if name == "z" and self.head_values is not None:
            heads = self.axis_labels_of_heads()
            if self.per_position:
                labels = {"layer": layers, "head": heads, "pos": pos}
                return make(self.head_values, ("layer", "head", "pos"), labels, act_name("z", "*"))
            total = self.head_values.nansum(-1)
            return make(total, ("layer", "head"), {"layer": layers, "head": heads}, act_name("z", "*"))
        if name in ("attn_out", "mlp_out") and name in sites:
            if self.per_position:
                return make(grid(name), ("layer", "pos"), {"layer": layers, "pos": pos}, act_name(name, "*"))
            return make(grid(name).nansum(-1), ("layer",), {"layer": layers}, act_name(name, "*"))
        if name == "block_outputs" and ("attn_out" in sites or "mlp_out" in sites):
            kinds = [k for k in ("attn", "mlp") if f"{k}_out" in sites]
            rows = torch.stack([grid(f"{k}_out")[int(l)] for l in layers for k in kinds])  # noqa: E741
            components = [Component(f"{k}_out", int(l)) for l in layers for k in kinds]  # noqa: E741
            site_name = "hook_attn_out / hook_mlp_out"
            if self.per_position:
                return make(rows, ("component", "pos"), {"component": components, "pos": pos}, site_name)
            return make(rows.nansum(-1), ("component",), {"component": components}, site_name)
        known = [*sites, *(["block_outputs"] if {"attn_out", "mlp_out"} & set(sites) else [])]
        raise InputError(f"No site {name!r} in this result; it has {known}.")

    def axis_labels_of_heads(self) -> list[str]:
        """Head labels "0".."n_heads-1" of `head_values`."""
        return [str(h) for h in range(0 if self.head_values is None else self.head_values.shape[1])]


def attribution_patch(
    model: HookedRewardModel,
    clean: Input,
    corrupt: Input,
    *,
    sites: Sequence[str] = ("resid_pre", "attn_out", "mlp_out", "z"),
    per_position: bool = False,
    spec: PatchSpec | None = None,
    **options: Any,
) -> AttributionPatchingResult:
    """First-order estimates of the exact sweeps at every site in `sites`, one forward/backward for all.

    Returns one result with a `site` axis (see `AttributionPatchingResult`): `values [site, layer, pos]`, and
    `result.sweep(name)` shaped like the exact sweep (`patch_resid`, `patch_block_outputs`,
    `patch_heads(act="z")`; "block_outputs" combines "attn_out" and "mlp_out"). `values` is the estimated
    reward change. Positions without an aligned counterpart are NaN (see `align_pair` for `align` /
    `prompt_len`). The patching options (`mode`: denoise or noise, `align`, `prompt_len`, `output`) are
    `PatchSpec`'s, as `spec=` or keywords (one forward and backward: `max_rows` and `progress` do not apply).
    """
    spec = patch_spec(spec, options, fn="attribution_patch")
    spec.require_modes(("denoise", "noise"), "attribution patching")
    mode, align, prompt_len, output = spec.mode, spec.align, spec.prompt_len, spec.output
    bad = [s for s in sites if s not in SITES]
    if bad:
        raise InputError(f"Unknown site(s) {bad}; choose from {SITES}.")
    sites = list(dict.fromkeys(sites))
    if not sites:
        raise InputError(f"No site given; choose from {SITES}.")
    clean_row, corrupt_row = as_row(model, clean), as_row(model, corrupt)
    target, source = (corrupt_row, clean_row) if mode == "denoise" else (clean_row, corrupt_row)
    al = reward_alignment(model, target, source, align, prompt_len)
    n_layers = model.cfg.n_layers
    hooks = [_hook_name(s, l) for s in sites for l in range(n_layers)]  # noqa: E741
    r_target, r_source, products = attribution_values(model, target, source, hooks, al, output)
    r_clean, r_corrupt = (r_source, r_target) if mode == "denoise" else (r_target, r_source)
    n_pos = len(target)
    unaligned = torch.tensor([not al.has(p) for p in range(n_pos)])

    def per_pos(name: str) -> Float[Tensor, "pos ..."]:
        """Gradient × delta summed over the last (feature) axis: `[pos]` or `[pos, head]`."""
        return products[name]

    head_values = None
    rows = []
    for site in sites:
        grid = torch.stack([per_pos(_hook_name(site, l)) for l in range(n_layers)])  # noqa: E741
        if site == "z":  # [layer, pos, head]
            head_values = einops.rearrange(grid, "layer pos head -> layer head pos").clone()
            head_values[:, :, unaligned] = math.nan
            grid = grid.sum(-1)
        grid[:, unaligned] = math.nan
        rows.append(grid)
    values = torch.stack(rows)  # [site, layer, pos]
    return AttributionPatchingResult(
        values=values,
        dims=("site", "layer", "pos"),
        labels={"site": sites, "layer": [str(l) for l in range(n_layers)], "pos": position_labels(model, target)},  # noqa: E741
        rewards=values + r_target,
        mode=f"attribution-{mode}",
        site=", ".join(sites),
        r_clean=r_clean,
        r_corrupt=r_corrupt,
        r_target=r_target,
        meta={"target_len": n_pos},
        head_values=head_values,
        per_position=per_position,
    )


def plot_comparison(exact: PatchingResult, approx: PatchingResult, ax: Axes | None = None, what: str = "values") -> Any:
    """Scatter of attribution-patching estimates against exact patching over the same sites, with y = x.

    Both must have the same shape (e.g. `patch_resid(...)` and `attribution_patch(...).sweep("resid_pre")`).
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
