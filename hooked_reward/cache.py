"""RewardActivationCache: TransformerLens's ActivationCache plus views at each row's reward position.

TL's `decompose_resid`, `accumulated_resid`, `stack_head_results`, `apply_ln_to_stack` all work unchanged.
The reward views read every stack at each row's own reward position (rows of a padded batch differ), divide
by the final norm's scale frozen from this run (centring first for LayerNorm), and project on `W_R_eff`,
so that `sum(reward_attrs(decompose_resid())) + b_R_eff == reward` exactly.

The reward direction, one rule for every final-norm path (docs/migration.md): **a stack TransformerLens
normalises pairs with `model.W_R` (= `model.W_U[:, 0]`); a raw stack goes to `reward_attrs`.** TL's
`accumulated_resid(apply_ln=True)` applies the real `ln_final` (gain and bias); `apply_ln_to_stack` at the final
layer (and `decompose_resid` / `stack_head_results` with `apply_ln=True`, `logit_attrs`) here also applies the
final norm's gain, which TransformerLens leaves to `fold_ln`. So `stack @ W_R` is the reward contribution on an
unfolded and a folded load alike (on a folded load the gain is 1 and nothing changes), equal to TransformerLens's
folded numbers. Passing an already-normalised stack to `reward_attrs` raises.
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens.ActivationCache import ActivationCache
from transformer_lens.hook_points import HookPoint
from transformer_lens.utilities.slice import Slice

from hooked_reward.errors import HookNameError, InputError, missing_cache_key_error
from hooked_reward.final_norm import fold_final_norm, frozen_final_norm
from hooked_reward.names import FINAL_SCALE, Component, as_components
from hooked_reward.outputs import output_index
from hooked_reward.positions import gather_at_positions

if TYPE_CHECKING:
    from hooked_reward.model import HookedRewardModel


class RewardActivationCache(ActivationCache):
    """Activations of one run, with `reward_pos` (each row's reward position in the sequence).

    `cached_pos` is None when every position was cached, else the one position per row that was kept (at
    index 0 of every position axis), e.g. the reward position for `run_with_cache(..., positions="reward")`.
    """

    model: HookedRewardModel  # TransformerLens types it as its bridge protocol; ours is always the reward model

    def __init__(
        self,
        cache_dict: dict[str, Tensor],
        model: HookedRewardModel,
        reward_pos: Int[Tensor, " batch"],
        cached_pos: Int[Tensor, " batch"] | None = None,
        attention_mask: Int[Tensor, "batch pos"] | None = None,
        pos_slice: Slice | None = None,
    ) -> None:
        super().__init__(cache_dict, model, has_batch_dim=True)
        self.reward_pos = reward_pos
        self.cached_pos = cached_pos
        self.attention_mask = attention_mask
        self.pos_slice = pos_slice

    def __getitem__(self, key: Any) -> Tensor:
        """TransformerLens's lookup (a name, a shorthand such as "resid_pre", or `(name, layer[, type])`). A name not
        in the cache raises `HookNameError` (a `KeyError`, as in TransformerLens) saying whether the run did not
        cache it or it does not exist, with the closest cached names."""
        try:
            return super().__getitem__(key)
        except HookNameError:
            raise
        except KeyError as err:
            name = err.args[0] if err.args else key
            hooks = getattr(self.model, "hook_dict", {})
            raise missing_cache_key_error(name, self.cache_dict.keys(), hooks.keys()) from None

    def stack_head_results(self, *args: Any, **kwargs: Any) -> Any:
        """TransformerLens's per-head results. On models with post-sublayer norms (Gemma-2/3 `ln1_post`)
        they are read before that norm, so they do not sum to `hook_attn_out`: a warning says so, and
        `analysis.attribution.direct_reward_attribution(by="head")` gives exact per-head reward attributions."""
        if any(name == "ln1_post" for name, _ in self.model.blocks[0].named_children()):
            warnings.warn(
                "stack_head_results: this model normalises attention output after the heads (ln1_post), so "
                "head results are pre-norm and their reward_attrs are not exact. Use "
                "hooked_reward.analysis.attribution.direct_reward_attribution(model, texts, by='head').",
                stacklevel=2,
            )
        return super().stack_head_results(*args, **kwargs)

    def apply_ln_to_stack(
        self,
        residual_stack: Float[Tensor, "num_components *batch_and_pos_dims d_model"],
        layer: int | None = None,
        mlp_input: bool = False,
        pos_slice: Any = None,
        batch_slice: Any = None,
        has_batch_dim: bool = True,
        recompute_ln: bool = False,
    ) -> Float[Tensor, "num_components *batch_and_pos_dims_out d_model"]:
        """TransformerLens's `apply_ln_to_stack`; at the final layer (layer None, -1 or n_layers) the result also
        carries the final norm's gain, so it is in the basis `W_R` reads: `apply_ln_to_stack(stack) @ model.W_R`
        is each component's reward contribution, folded (`fold_ln=True`, gain 1) or not. Block norms (layer <
        n_layers) are unchanged."""
        normed = super().apply_ln_to_stack(
            residual_stack,
            layer=layer,
            mlp_input=mlp_input,
            pos_slice=pos_slice,
            batch_slice=batch_slice,
            has_batch_dim=has_batch_dim,
            recompute_ln=recompute_ln,
        )
        n_layers = self.model.cfg.n_layers
        final = layer is None or layer == -1 or layer == n_layers
        normalised = self.model.cfg.normalization_type in ("LN", "LNPre", "RMS", "RMSPre")
        if final and normalised and not recompute_ln:
            gain, _ = self.model.final_norm_gain_bias()
            normed = normed * gain.to(normed.device, normed.dtype)
        if normalised:
            normed.hooked_reward_normalised = True  # type: ignore[attr-defined]
        return normed

    @property
    def reward_index(self) -> Int[Tensor, " batch"]:
        """Where each row's reward position sits on the cached position axis."""
        if self.pos_slice is not None:
            raise InputError(
                "This cache was made with run_with_cache(pos_slice=...), so which position each cached row holds is "
                "TransformerLens's slice, not each row's reward position. Run run_with_cache(..., "
                "positions='reward') (one position per row, the reward's) or cache all positions."
            )
        if self.cached_pos is None:
            return self.reward_pos
        if torch.equal(self.cached_pos.cpu(), self.reward_pos.cpu()):
            return torch.zeros_like(self.reward_pos)
        raise InputError(
            "This cache kept a position other than the reward position, so reward views cannot be read "
            "from it. Run `run_with_cache(..., positions='reward')` or cache all positions."
        )

    def _cached_length(self, stack: Tensor) -> int:
        """Length of the cached position axis: 1 for a one-position cache, else the run's sequence length."""
        if self.cached_pos is not None:
            return 1
        if self.attention_mask is not None:
            return int(self.attention_mask.shape[-1])
        return int(stack.shape[-2])

    @staticmethod
    def _gather_rows(stack: Tensor, index: Tensor) -> Tensor:
        lead = stack.shape[:-3]
        flat = stack.reshape(-1, *stack.shape[-3:])
        index = index.to(stack.device)
        picked = torch.stack([gather_at_positions(s, index, pos_dim=1)[:, 0] for s in flat])
        return picked.reshape(*lead, *picked.shape[1:])

    def at_reward(self, stack: Float[Tensor, "... batch pos d"]) -> Float[Tensor, "... batch d"]:
        """Each row's reward-position vector from a stack with a position axis (second to last)."""
        if stack.ndim < 3:
            raise InputError(f"Expected a stack [..., batch, pos, d], got shape {tuple(stack.shape)}.")
        return self._gather_rows(stack, self.reward_index)

    def stack_at_reward(self, stack: Tensor, pos_slice: Any = None) -> Float[Tensor, "... batch d"]:
        """Each row's reward-position vector from a TransformerLens stack, with or without its position axis.

        Takes `[..., batch, pos, d]` (every cached position, or the one of a `positions="reward"` cache) or a
        position-sliced stack: `pos_slice` is the slice that made it (TL's, as given to `decompose_resid`), and
        it must keep each row's reward position (`InputError` naming the rows otherwise). A stack with no position
        axis, `[..., batch, d]`, given without `pos_slice`, is read as TL's `pos_slice=-1`, which is accepted
        where the last position is every row's reward position (unpadded or left-padded batches)."""
        batch = int(self.reward_pos.shape[0])
        index = self.reward_index
        length = self._cached_length(stack)
        shape = tuple(stack.shape)
        if pos_slice is not None:
            slicer = pos_slice if isinstance(pos_slice, Slice) else Slice(pos_slice)  # as decompose_resid reads it
            kept = slicer.apply(torch.arange(length), dim=0)
            if kept.ndim == 0:
                if stack.ndim < 2 or stack.shape[-2] != batch:
                    raise InputError(f"A stack sliced at one position is [..., batch={batch}, d]; got shape {shape}.")
                missing = (index.cpu() != kept).nonzero().flatten().tolist()
            else:
                if stack.ndim < 3 or stack.shape[-3] != batch or stack.shape[-2] != len(kept):
                    raise InputError(
                        f"pos_slice={pos_slice!r} keeps {len(kept)} positions, so the stack should be "
                        f"[..., batch={batch}, {len(kept)}, d]; got shape {shape}."
                    )
                match = kept[None, :] == index.cpu()[:, None]
                missing = (~match.any(-1)).nonzero().flatten().tolist()
            if missing:
                raise InputError(
                    f"pos_slice={pos_slice!r} does not keep the reward position of row(s) {missing} (reward "
                    f"positions {index.tolist()} on a cached axis of length {length}), so their reward "
                    "contributions are not in this stack. Slice at the reward position, or pass the full stack."
                )
            return stack if kept.ndim == 0 else self._gather_rows(stack, match.float().argmax(-1))
        if stack.ndim >= 3 and stack.shape[-3] == batch and stack.shape[-2] == length:
            return self._gather_rows(stack, index)
        if stack.ndim >= 2 and stack.shape[-2] == batch:
            if not bool((index.cpu() == length - 1).all()):
                raise InputError(
                    f"This stack {shape} has no position axis, so it was sliced (TransformerLens's pos_slice=-1 "
                    f"reads the last position), but the rows' reward positions are {index.tolist()} of {length}: "
                    "some rows are right-padded, and the last position is padding there. Pass the full stack (no "
                    "pos_slice), or the pos_slice you used (reward_attrs(stack, pos_slice=...))."
                )
            return stack
        raise InputError(
            f"reward_attrs reads stacks shaped [..., batch={batch}, pos={length}, d_model] or, sliced at the reward "
            f"position, [..., batch={batch}, d_model]; got shape {shape}."
        )

    def final_scale_at_reward(self) -> Float[Tensor, "batch 1"]:
        """The final norm's scale (`ln_final.hook_scale`) at each row's reward position, frozen from this run."""
        if FINAL_SCALE not in self.cache_dict:
            raise InputError(
                "The cache lacks 'ln_final.hook_scale', which the reward views need; include it in names_filter."
            )
        scale = self[FINAL_SCALE]
        if scale.ndim == 2:
            scale = scale[..., None]
        return self.at_reward(scale)

    def apply_final_ln_at_reward(
        self, stack: Float[Tensor, "... batch pos d_model"], pos_slice: Any = None
    ) -> Float[Tensor, "... batch d_model"]:
        """Read a residual stack at the reward position through the final norm, scale frozen (gain excluded:
        it is folded into `W_R_eff`, the one direction this basis pairs with). LayerNorm models are centred
        first, as their norm does. Stack shapes and `pos_slice` as in `stack_at_reward`."""
        return frozen_final_norm(self.model, self.stack_at_reward(stack, pos_slice), self.final_scale_at_reward())

    def reward_attrs(
        self,
        residual_stack: Float[Tensor, "... batch pos d_model"] | Float[Tensor, "... batch d_model"],
        output: int | str | None = None,
        pos_slice: Any = None,
    ) -> Tensor:
        """The reward-head analogue of `logit_attrs`: each component's direct contribution to the reward.

        `residual_stack` is `[components, batch, pos, d_model]` (from `decompose_resid`, `stack_head_results`,
        `accumulated_resid`, ...), or position-sliced `[components, batch, d_model]` (their `pos_slice=-1`, where
        that is every row's reward position; or pass the `pos_slice` used, see `stack_at_reward`). It is the raw
        stack: reward_attrs applies the final norm itself, and a stack already normalised by `apply_ln_to_stack`
        / `apply_ln=True` raises (project that one with `model.W_R`). Returns `[components, batch]` for a single
        output, `[components, batch, n_outputs]` otherwise (or that output alone with `output=k`). With the
        final norm's scale frozen from this run, contributions of a full decomposition plus `model.b_R_eff`
        sum to the reward.
        `output` (an index or a name) selects one column of the head's `readout(cache)` (ArmoRM: an objective, or
        "score" along a per-row direction with the gate held fixed; MLP heads: their linearisation at the run's
        `hook_reward_resid`), giving `[components, batch]`.
        """
        if getattr(residual_stack, "hooked_reward_normalised", False):
            raise InputError(
                "This stack is already normalised (apply_ln_to_stack, or apply_ln=True), and reward_attrs applies the "
                "final norm itself. Pass the raw stack (apply_ln=False), or project the normalised one on the "
                "reward direction: stack @ model.W_R (docs/migration.md, 'The reward direction')."
            )
        normed = self.apply_final_ln_at_reward(residual_stack, pos_slice)
        if output is None:
            w_eff = self.model.W_R_eff.to(normed.device)
            return normed @ w_eff.T if w_eff.ndim == 2 else normed @ w_eff
        readout = self.model.head.readout(self)
        column = output_index(output, readout.names)
        direction = fold_final_norm(self.model, readout.select(column)).direction[..., 0, :].to(normed.device)
        if direction.shape[0] == 1:  # one direction for every row (an affine head's W_R_eff row)
            return normed @ direction[0]
        return (normed * direction).sum(-1)

    def decompose_reward(self, output: int | str | None = None) -> tuple[Tensor, list[Component]]:
        """`(attributions, labels)`: per-component reward contributions of `decompose_resid` (embeddings,
        each attention layer and MLP), `[components, batch(, n_outputs)]`; they sum to reward − b_R_eff."""
        stack, labels = self.decompose_resid(return_labels=True)
        components = as_components(labels, self.model, pos_embed="pos_embed" in labels)
        return self.reward_attrs(stack, output=output), components


class CacheRecorder:
    """The store a `run_with_cache` fills, and the hooks that fill it.

    Each activation is detached, sliced (TransformerLens's `pos_slice`) or gathered at the kept position of each
    row (`keep_pos`, `[batch]`), and moved to `device`; the reward model's own hooks (`reward_hooks`, one row per
    text already) are stored whole. The same tensor often fires at several hook points (resid_post l, resid_pre
    l+1, ln1.hook_in; rotary cos/sin at every layer): it is gathered once. Sources are held by weak reference, so
    a freed source whose memory is reused cannot be mistaken for a live one.
    """

    def __init__(
        self,
        model: HookedRewardModel,
        mask: Int[Tensor, "batch pos"],
        keep_pos: Int[Tensor, " batch"] | None,
        slicer: Slice | None,
        device: str | torch.device | None,
    ) -> None:
        self.model = model
        self.batch, self.seq = mask.shape
        self.keep_pos = keep_pos
        self.slicer = slicer
        self.device = device
        self.reward_hooks: set[str] = model._reward_hook_names
        self.store: dict[str, Tensor] = {}
        self._gathered_from: dict[tuple, tuple[weakref.ref, int, Tensor]] = {}

    def _to_device(self, tensor: Tensor) -> Tensor:
        return tensor.to(self.device) if self.device is not None else tensor

    def reduce(self, name: str, source: Tensor, hook_point: HookPoint) -> Tensor:
        """What is kept of activation `source` at hook `name`: detached, sliced or gathered, on `device`."""
        tensor = source.detach()
        keep_pos, batch, seq = self.keep_pos, self.batch, self.seq
        if self.slicer is not None and name not in self.reward_hooks and tensor.ndim >= 2:
            tensor = self.slicer.apply(tensor, dim=self.model._pos_slice_dim(name, hook_point))
        if keep_pos is not None and name not in self.reward_hooks and tensor.ndim >= 2:
            pos_dim = self.model._pos_slice_dim(name, hook_point) % tensor.ndim
            if tensor.shape[0] in (1, batch) and pos_dim > 0 and tensor.shape[pos_dim] == seq:
                # inference tensors have no version counter to tell an in-place edit: gather those each time
                key = (tensor.data_ptr(), tuple(tensor.shape), tensor.stride(), tensor.dtype, pos_dim)
                version = None if tensor.is_inference() else tensor._version
                seen = self._gathered_from.get(key) if version is not None else None
                if seen is not None and seen[0]() is not None and seen[1] == version:
                    return seen[2]
                if tensor.shape[0] == 1 and bool((keep_pos == keep_pos[0]).all()):
                    gathered = gather_at_positions(tensor, keep_pos[:1], pos_dim)  # shared row (rotary)
                else:
                    full = tensor.expand(batch, *tensor.shape[1:])  # broadcast the shared row per row
                    gathered = gather_at_positions(full, keep_pos, pos_dim)
                gathered = self._to_device(gathered)
                if version is not None:
                    self._gathered_from[key] = (weakref.ref(source), version, gathered)
                return gathered
        return self._to_device(tensor)

    def hook(self, names: list[str], suffix: str = "") -> Callable[[Any, HookPoint], Any]:
        """A hook storing what it sees under every name in `names` (aliases of one hook point) + `suffix`
        ("_grad" for a backward hook, which returns None; a forward hook returns its input unchanged)."""

        def record(tensor: Any, hook: HookPoint) -> Any:
            value = tensor[0] if isinstance(tensor, tuple) else tensor
            if isinstance(value, Tensor):
                kept = self.reduce(names[0], value, hook)
                for name in names:
                    self.store[name + suffix] = kept
            return None if suffix else tensor

        return record

    def hooks(
        self, selected: list[list[str]], *, backward: bool = False
    ) -> tuple[list[tuple[str, Callable]], list[tuple[str, Callable]]]:
        """`(fwd_hooks, bwd_hooks)` recording each selected hook point (a list of its names, the first its own),
        for `model.hooks(...)`; backward hooks (`"<name>_grad"`) only with `backward`."""
        fwd = [(names[0], self.hook(names)) for names in selected]
        bwd = [(names[0], self.hook(names, "_grad")) for names in selected] if backward else []
        return fwd, bwd

    def store_rows(self, names: list[str], tensor: Tensor) -> None:
        """Store an already-reduced tensor (the pattern rows fused attention computes) under `names`."""
        for name in names:
            self.store[name] = self._to_device(tensor)

    def keep_rows(self, kept: Int[Tensor, " kept"]) -> None:
        """Keep only rows `kept` of every batch-first tensor (`nan_policy="omit"`); aliases stay one tensor."""
        dropped: dict[int, Tensor] = {}
        for name, value in self.store.items():
            if value.ndim and value.shape[0] == self.batch:
                self.store[name] = dropped.setdefault(id(value), value.index_select(0, kept.to(value.device)))
        self.batch = len(kept)
        self.keep_pos = None if self.keep_pos is None else self.keep_pos[kept]
