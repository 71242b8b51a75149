"""The final norm with its scale frozen: the one place residuals are read the way the head reads them.

`ln_final(h) = g ⊙ P h / σ(h) + β`, with `P` the centring of a LayerNorm (the identity for RMSNorm), `g` the
gain (Gemma's `1 + w`), `β` the bias (0 for RMSNorm). With `σ` frozen at its value in the run
(`ln_final.hook_scale`, read at the reward position), the head's input is affine in the residual:

    frozen_final_norm(model, h, σ) = P h / σ                  (the "normed" basis, before the gain)
    reward = frozen_final_norm(h) · (direction ⊙ g) + direction · β + offset

`fold_final_norm(model, readout)` gives that folded form of any head `Readout` (`W_R_eff`, `b_R_eff` for a
linear head), `reward_direction(model, output)` one affine output's row of it. Every analysis that reads a
residual through the final norm uses these functions; `frozen_final_scale(model, scale)` is the one way to hold
`ln_final.hook_scale` fixed in a run (dose-response, distortion, SAE ablations).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch
from jaxtyping import Float
from torch import Tensor, nn

from hooked_reward.errors import InputError
from hooked_reward.heads.base import Readout, as_float
from hooked_reward.names import FINAL_SCALE
from hooked_reward.outputs import output_index

if TYPE_CHECKING:
    from transformer_lens.hook_points import HookPoint

    from hooked_reward.model import HookedRewardModel


def norm_is_layernorm(module: nn.Module) -> bool:
    """Whether a bridged norm centres (LayerNorm) rather than only scaling (RMSNorm), from its class."""
    norm = getattr(module, "original_component", module)
    return not ("rms" in type(module).__name__.lower() or "rms" in type(norm).__name__.lower())


def norm_gain_bias(
    model: HookedRewardModel, module: nn.Module, *, rms: bool | None = None
) -> tuple[Float[Tensor, " d_model"], Float[Tensor, " d_model"]]:
    """Elementwise gain and bias of a bridged norm: the gain includes Gemma's `1 + w` offset (RMSNorm with
    `cfg.rmsnorm_uses_offset`), the bias is 0 when the norm has none. `rms` overrides the class-based test."""
    norm = getattr(module, "original_component", module)
    d_model = model.cfg.d_model
    weight = getattr(norm, "weight", None)
    gain = torch.ones(d_model, device=model.W_E.device) if weight is None else as_float(weight)
    rms = not norm_is_layernorm(module) if rms is None else rms
    if rms and getattr(model.cfg, "rmsnorm_uses_offset", False):
        gain = gain + 1.0
    bias = getattr(norm, "bias", None)
    bias = torch.zeros(d_model, device=gain.device) if bias is None else as_float(bias)
    return gain, bias


def frozen_norm(
    x: Float[Tensor, "... d_model"], scale: Float[Tensor, "... 1"], *, centres: bool
) -> Float[Tensor, "... d_model"]:
    """`P x / σ` for any norm with its scale `σ` frozen (broadcast against `x`): `P` centres over `d_model` for a
    LayerNorm (`centres=True`), is the identity for RMSNorm. Float32. The final norm's case is
    `frozen_final_norm`; a block's post-sublayer norm (Gemma's `ln1_post`) uses this with its own scale."""
    x = x.to(torch.float32)
    x = x - x.mean(-1, keepdim=True) if centres else x
    return x / scale.to(x.device, torch.float32)


def final_norm_centre(model: HookedRewardModel, x: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_model"]:
    """`P x`: `x` centred over `d_model` when the final norm is a LayerNorm, unchanged for RMSNorm (same dtype)."""
    return x - x.mean(-1, keepdim=True) if model.final_norm_is_layernorm else x


def frozen_final_norm(
    model: HookedRewardModel, resid: Float[Tensor, "... d_model"], scale: Float[Tensor, "... 1"]
) -> Float[Tensor, "... d_model"]:
    """`P resid / σ`: a residual read through the final norm with its scale `σ` frozen (broadcast against
    `resid`, e.g. `[batch, 1]` from `cache.final_scale_at_reward()`), before the gain. Float32."""
    return frozen_norm(resid, scale, centres=model.final_norm_is_layernorm)


def fold_final_norm(model: HookedRewardModel, readout: Readout) -> Readout:
    """The readout in the normed basis: direction `d ⊙ g`, offset `offset + d · β`, so that
    `frozen_final_norm(h, σ) · direction + offset` is the head's reading of `ln_final(h)` with `σ` frozen."""
    gain, beta = model.final_norm_gain_bias()
    direction = readout.direction.to(torch.float32)
    offset = direction @ beta.to(direction.device) + readout.offset.to(direction.device, torch.float32)
    return Readout(direction * gain.to(direction.device), offset, readout.names, readout.kind)


def reward_direction(
    model: HookedRewardModel, output: int | str | None = None, *, basis: str = "normed"
) -> Float[Tensor, " d_model"]:
    """One output's affine reward direction (float32): a row of `W_R_eff` (`basis="normed"`, read against
    `frozen_final_norm(h)`) or of `W_R` (`basis="final"`, against ln_final's output). `output` is an index or a
    name (ArmoRM: an objective); it may be None when the head has one row. `InputError` when the head is not
    one affine map, or has several rows and no `output`."""
    if basis not in ("normed", "final"):
        raise InputError(f"basis must be 'normed' or 'final', got {basis!r}.")
    try:
        w = as_float(model.W_R_eff if basis == "normed" else model.W_R)
    except AttributeError as err:
        raise InputError(f"This head has no single affine reward direction: {err}") from err
    if w.ndim == 1:
        output_index(output, model.head.readout_names()[:1])
        return w
    names = model.head.readout_names()[: w.shape[0]]
    index = output_index(output, names)
    if index is None:
        raise InputError(f"The model has {w.shape[0]} reward outputs {names}; pass output= to pick one.")
    return w[index]


@contextmanager
def frozen_final_scale(
    model: HookedRewardModel, scale: Float[Tensor, " batch"] | Float[Tensor, "batch pos 1"]
) -> Iterator[None]:
    """Replace `ln_final.hook_scale` by `scale` for the block: one value per row (`[batch]`, used at every
    position) or the clean run's whole scale tensor (`[batch, pos, 1]`).

    With the scale frozen the head is affine in the final residual, which is what the linear predictions of
    `concepts.dose_response` and `distortion`'s readout assume.
    """

    def freeze(t: Tensor, hook: HookPoint) -> Tensor:
        s = scale.to(t.device, t.dtype)
        if s.ndim == 1:
            s = s.reshape(-1, *([1] * (t.ndim - 1)))
        return s.expand_as(t).clone()

    with model.hooks(fwd_hooks=[(FINAL_SCALE, freeze)]), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        yield
