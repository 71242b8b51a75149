"""The interface every reward head implements."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn
from transformer_lens.hook_points import HookPoint


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
    reward_pos: Int[Tensor, "batch"]


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
    # Heads may also define `attribution_direction(name, cache) -> [batch, d_model]`: a per-row direction that
    # `cache.reward_attrs(stack, output=name)` projects on (e.g. ArmoRM's score with the gate held fixed).

    @property
    def n_outputs(self) -> int:
        return len(self.output_names)

    def linear_map(self) -> tuple[Float[Tensor, "n_outputs d_model"], Float[Tensor, "n_outputs"]] | None:
        """`(W, b)` with rewards = reward_resid @ W.T + b, or None when the head is not affine."""
        return None

    def hook_points(self) -> dict[str, HookPoint]:
        """The head's hook points, by the name they get in the model's hook graph."""
        return {}

    def forward(self, reward_resid: Float[Tensor, "batch d_model"], inputs: HeadInputs) -> Tensor:
        raise NotImplementedError

    @staticmethod
    def squeeze_single(rewards: Float[Tensor, "batch n_outputs"]) -> Tensor:
        """`[batch]` for a single-output head, else unchanged."""
        return rewards[:, 0] if rewards.shape[-1] == 1 else rewards


def as_float(t: Tensor) -> Tensor:
    """Detached float32 copy of a weight, for analysis (weights may be bf16)."""
    return t.detach().to(torch.float32)
