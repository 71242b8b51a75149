"""Path patching: the effect of one sender (a head or an MLP) on one receiver, through that path alone.

The standard algorithm (Wang et al. 2022, "Interpretability in the Wild"), for a (clean, corrupted) pair, in
the denoising direction (target run = corrupted, source = clean; `mode="noise"` swaps them):

1. Run the target with the sender's output (`hook_z` of its head, or `hook_mlp_out`) replaced by the source's,
   and every other head's `hook_z` and every MLP's `hook_mlp_out` frozen to their target-run values. The only
   change anywhere in the residual stream is then the sender's own output, added directly.
2. Record the receiver's input in that run: a head's query/key/value (`hook_q` / `hook_k` / `hook_v` of one
   head, computed from the residual it reads), or, for ``receiver="reward"``, the reward itself (the direct
   path through the residual and the final norm to `W_R`).
3. Rerun the target with only the receiver's input set to the recorded value; its reward is the path-patched
   reward.

Every sender is one row of a batched forward (`max_rows` rows per pass) in both steps.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from hooked_reward.analysis.patch_spec import PatchSpec, patch_spec
from hooked_reward.analysis.patching import (
    Input,
    PatchingResult,
    as_row,
    reward_alignment,
)
from hooked_reward.errors import InputError
from hooked_reward.names import Component, act_name
from hooked_reward.outputs import select_output
from hooked_reward.tl_compat import FwdHooks

if TYPE_CHECKING:
    from transformer_lens.hook_points import HookPoint

    from hooked_reward.model import HookedRewardModel

__all__ = ["Sender", "Receiver", "path_patch", "all_senders"]

Sender = tuple[str, int, int | None]  # ("head", layer, head) or ("mlp", layer, None)
Receiver = tuple[str, int, int]  # (act in "q" | "k" | "v", layer, head)


def all_senders(model: HookedRewardModel, before_layer: int | None = None, mlps: bool = True) -> list[Sender]:
    """Every head (and MLP) in layers below `before_layer` (all layers when None)."""
    n = model.cfg.n_layers if before_layer is None else before_layer
    out: list[Sender] = []
    for layer in range(n):
        out += [("head", layer, h) for h in range(model.cfg.n_heads)]
        if mlps:
            out.append(("mlp", layer, None))
    return out


def _label(s: Sender) -> Component:
    return Component("head", s[1], s[2]) if s[0] == "head" else Component("mlp_out", s[1])


def _parse_receivers(receiver: str | Receiver | Sequence[Receiver]) -> list[Receiver] | None:
    if receiver == "reward":
        return None
    given: list[object] = [receiver] if isinstance(receiver, tuple) else list(receiver)
    recs: list[Receiver] = []
    for r in given:
        if not (isinstance(r, tuple) and len(r) == 3 and r[0] in ("q", "k", "v")):
            raise InputError(f"A receiver is 'reward' or (act, layer, head) with act in q/k/v; got {r!r}.")
        recs.append((r[0], r[1], r[2]))
    return recs


def path_patch(
    model: HookedRewardModel,
    clean: Input,
    corrupt: Input,
    receiver: str | Receiver | Sequence[Receiver] = "reward",
    senders: Sequence[Sender] | None = None,
    *,
    spec: PatchSpec | None = None,
    **options: Any,
) -> PatchingResult:
    """Path-patched rewards for each sender → `receiver`: `values [n_senders]` (reward change vs the target run).

    `receiver` is ``"reward"`` (the direct path to the reward head) or `(act, layer, head)` with act in
    ``"q" | "k" | "v"`` (k/v heads count key-value heads under grouped-query attention), or a list of such
    (patched together, e.g. a head's q, k and v). `senders` defaults to every head and MLP (below the lowest
    receiver layer for head receivers). Sender activations at target positions without an aligned source
    counterpart stay at their target values (see `align_pair`). The patching options (`mode`: denoise or noise,
    `align`, `prompt_len`, `output`, `max_rows`, `progress`) are `PatchSpec`'s, as `spec=` or keywords.
    """
    spec = patch_spec(spec, options, fn="path_patch")
    spec.require_modes(("denoise", "noise"), "path patching")
    mode, align, prompt_len, output, max_rows, progress = (
        spec.mode,
        spec.align,
        spec.prompt_len,
        spec.output,
        spec.max_rows,
        spec.progress,
    )
    recs = _parse_receivers(receiver)
    if senders is None:
        senders = all_senders(model, None if recs is None else min(r[1] for r in recs))
    senders = list(senders)
    if not senders:
        raise InputError("No senders: a receiver in layer 0 has no upstream heads or MLPs.")
    clean_row, corrupt_row = as_row(model, clean), as_row(model, corrupt)
    target, source = (corrupt_row, clean_row) if mode == "denoise" else (clean_row, corrupt_row)
    al = reward_alignment(model, target, source, align, prompt_len)
    tgt_idx, src_idx = al.indices(None)
    n_layers = model.cfg.n_layers
    z_names = [act_name("z", layer) for layer in range(n_layers)]
    mlp_names = [act_name("mlp_out", layer) for layer in range(n_layers)]
    rec_names = [] if recs is None else [act_name(r[0], r[1]) for r in recs]
    names = z_names + mlp_names + rec_names
    r_target_t, base = model.run_with_cache(target[None], names_filter=names)
    r_source_t, src = model.run_with_cache(source[None], names_filter=z_names + mlp_names)
    r_target, r_source = (
        float(select_output(r_target_t, output, names=model.output_names)[0]),
        float(select_output(r_source_t, output, names=model.output_names)[0]),
    )
    r_clean, r_corrupt = (r_source, r_target) if mode == "denoise" else (r_target, r_source)

    def freezer(name: str, layer: int, kind: str, chunk: list[Sender]):
        def hook(act: Tensor, hook: HookPoint) -> Tensor:
            act = base[name].to(act.device, act.dtype).expand_as(act).clone()
            for row, (s_kind, s_layer, s_head) in enumerate(chunk):
                if s_kind != kind or s_layer != layer:
                    continue
                if kind == "head":
                    act[row, tgt_idx, s_head] = src[name][0, src_idx, s_head].to(act.dtype)
                else:
                    act[row, tgt_idx] = src[name][0, src_idx].to(act.dtype)
            return act

        return hook

    def recorder(name: str, store: dict[str, Tensor]):
        def hook(act: Tensor, hook: HookPoint) -> Tensor:
            store[name] = act.detach().clone()
            return act

        return hook

    def setter(head: int, recorded: Tensor):
        def hook(act: Tensor, hook: HookPoint) -> Tensor:
            act = act.clone()
            act[:, :, head] = recorded[:, :, head].to(act.dtype)
            return act

        return hook

    out: list[Tensor] = []
    starts = range(0, len(senders), max_rows)
    for start in tqdm(starts, desc="path patching", disable=not progress or len(starts) <= 1, leave=False):
        chunk = senders[start : start + max_rows]
        tokens = target[None].expand(len(chunk), -1)
        store: dict[str, Tensor] = {}
        hooks: FwdHooks = [(z_names[l], freezer(z_names[l], l, "head", chunk)) for l in range(n_layers)]  # noqa: E741
        hooks += [(mlp_names[l], freezer(mlp_names[l], l, "mlp", chunk)) for l in range(n_layers)]  # noqa: E741
        hooks += [(name, recorder(name, store)) for name in dict.fromkeys(rec_names)]
        with torch.no_grad():
            step2 = select_output(model.run_with_hooks(tokens, fwd_hooks=hooks), output, names=model.output_names)
            if recs is None:
                out.append(step2.float().cpu())
                continue
            step3_hooks: FwdHooks = [(name, setter(r[2], store[name])) for name, r in zip(rec_names, recs, strict=True)]
            out.append(
                select_output(model.run_with_hooks(tokens, fwd_hooks=step3_hooks), output, names=model.output_names)
                .float()
                .cpu()
            )
    rewards = torch.cat(out)
    rec_label = "reward" if recs is None else "+".join(f"{Component('head', r[1], r[2])}.{r[0]}" for r in recs)
    return PatchingResult(
        values=rewards - r_target,
        rewards=rewards,
        dims=("sender",),
        labels={"sender": [_label(s) for s in senders]},
        mode=f"path-{mode}",
        site=f"senders → {rec_label}",
        r_clean=r_clean,
        r_corrupt=r_corrupt,
        r_target=r_target,
        meta={"senders": senders, "receiver": receiver, "target_len": len(target)},
    )
