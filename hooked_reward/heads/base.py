"""The interface every reward head implements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn
from transformer_lens.hook_points import HookPoint

from hooked_reward.errors import InputError

if TYPE_CHECKING:
    from hooked_reward.cache import RewardActivationCache


@dataclass
class HeadInputs:
    """What a head may read besides the reward-position residual.

    `final_resid` is the final-normed residual at every position (`[batch, pos, d_model]`), needed by heads
    that read a second position (ArmoRM's gate reads the prompt's end). `tokens` and `attention_mask` are the
    run's inputs.
    """

    final_resid: Float[Tensor, "batch pos d_model"]
    tokens: Int[Tensor, "batch pos"]
    attention_mask: Int[Tensor, "batch pos"]
    reward_pos: Int[Tensor, " batch"]


@dataclass
class Readout:
    """How a head is read off the final-normed residual `h` (ln_final's output): `h · direction + offset` per
    column.

    `direction` is `[batch | 1, n_cols, d_model]` (one per row, or shared) or `[batch, pos, n_cols, d_model]`
    (one per row and position); `offset` is the same without `d_model`. `names` label the columns. `kind`:
    "affine" (`W_R`, `b_R`: exact everywhere), "gate_fixed" (ArmoRM: objectives, and the score with the gate held
    at the run's weights) or "linearised" (an MLP head's gradient and offset at the run's own point).
    """

    direction: Tensor
    offset: Tensor
    names: list[str]
    kind: str

    def select(self, column: int | None) -> Readout:
        """This readout with only column `column` (all when None)."""
        if column is None:
            return self
        return Readout(
            self.direction[..., column : column + 1, :],
            self.offset[..., column : column + 1],
            [self.names[column]],
            self.kind,
        )

    def apply(self, h: Float[Tensor, "batch *mid d_model"]) -> Float[Tensor, "batch *mid n_cols"]:
        """`h · direction + offset` for `h` `[batch, *mid, d_model]` (a shared or per-row direction broadcasts
        over `mid`; a per-position direction `[batch, pos, n_cols, d]` needs `h` `[batch, point, pos, d]`)."""
        return self.project(h) + self.offset_like(h)

    def project(self, h: Float[Tensor, "batch *mid d_model"]) -> Float[Tensor, "batch *mid n_cols"]:
        """`h · direction` per column, without the offset (shapes as in `apply`)."""
        direction = self.direction.to(h.device, torch.float32)
        if direction.ndim == 3:
            return torch.einsum("b...d,bod->b...o", h, direction.expand(h.shape[0], *direction.shape[1:]))
        return torch.einsum("blpd,bpod->blpo", h, direction)

    def offset_like(self, h: Float[Tensor, "batch *mid d_model"]) -> Tensor:
        """`offset` shaped to add to `project(h)`."""
        offset = self.offset.to(h.device, torch.float32)
        if offset.ndim == 3:
            return offset[:, None]  # [b, 1, pos, o]
        return offset.reshape(offset.shape[0], *([1] * (h.ndim - 2)), offset.shape[-1])


class RewardHead(nn.Module):
    """Base class: `forward(reward_resid, inputs) -> rewards`.

    `reward_resid` is `[batch, d_model]` (the final-normed residual at each row's reward position);
    rewards are `[batch]` for one output or `[batch, n_outputs]`.
    Subclasses set `output_names` and, where the head is one affine map, return it from `linear_map()`.
    """

    output_names: list[str]
    #: False for heads that read ln_final's output beyond one Linear (gates, MLPs): TL's weight processing,
    #: which folds ln_final into the unembed, is then refused.
    supports_weight_processing: bool = True
    #: How `readout` reads the head: "affine", "gate_fixed" or "linearised" (see `Readout`).
    readout_kind: str = "affine"

    @property
    def n_outputs(self) -> int:
        return len(self.output_names)

    def linear_map(self) -> tuple[Float[Tensor, "n_outputs d_model"], Float[Tensor, "n_outputs"]] | None:
        """`(W, b)` with rewards = reward_resid @ W.T + b, or None when the head is not affine."""
        return None

    def hook_points(self) -> dict[str, HookPoint]:
        """The head's hook points, by the name they get in the model's hook graph."""
        return {}

    # -------------------------------------------------------------- how the head is read (analyses use only these)
    def readout_names(self) -> list[str]:
        """The columns analyses report for this head (default: `output_names`)."""
        return list(self.output_names)

    def readout_hooks(self) -> list[str]:
        """Hook points `readout(cache)` needs in the cache (beyond the residual and `ln_final.hook_scale`)."""
        return []

    def readout(self, cache: RewardActivationCache | None = None, *, normed: Tensor | None = None) -> Readout:  # noqa: ARG002 (the RewardHead interface's signature)
        """How this head is read off the final-normed residual, for the run in `cache`: an affine head's
        `(W_R, b_R)` (needs neither `cache` nor `normed`). Heads that are not one affine map override this
        (ArmoRM: the gate held at the cache's weights; MLP heads: linearised at `normed`, or the cache's
        `hook_reward_resid`)."""
        linear = self.linear_map()
        if linear is None:
            raise InputError(f"{type(self).__name__} is not one affine map and defines no readout().")
        weight, bias = linear
        return Readout(as_float(weight)[None], as_float(bias)[None], self.readout_names(), self.readout_kind)

    def readout_values(
        self,
        cache: RewardActivationCache,  # noqa: ARG002 (the RewardHead interface's signature)
        rewards: Float[Tensor, " batch *n_outputs"],
    ) -> Float[Tensor, "batch n_cols"]:
        """The model's own value of each readout column for the run in `cache` (default: the rewards)."""
        return rewards.to(torch.float32).reshape(rewards.shape[0], -1)

    def values_at(self, normed: Float[Tensor, "... d_model"], readout: Readout) -> Float[Tensor, "... n_cols"]:
        """The head's columns evaluated on final-normed residuals `normed` (ln_final's output), the readout's
        run-specific state (a gate's weights) held fixed: `readout.apply(normed)`, exact for affine and
        gate-fixed readouts. Heads that are linearised override this with their real map."""
        return readout.apply(normed)

    def forward(self, reward_resid: Float[Tensor, "batch d_model"], inputs: HeadInputs) -> Tensor:
        raise NotImplementedError

    @staticmethod
    def squeeze_single(rewards: Float[Tensor, "batch n_outputs"]) -> Tensor:
        """`[batch]` for a single-output head, else unchanged."""
        return rewards[:, 0] if rewards.shape[-1] == 1 else rewards


def as_float(t: Tensor) -> Tensor:
    """Detached float32 copy of a weight, for analysis (weights may be bf16)."""
    return t.detach().to(torch.float32)
