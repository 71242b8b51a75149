"""The common reward head: one `score` Linear (`num_labels` outputs, optional bias)."""

from __future__ import annotations

from typing import cast

import torch
from jaxtyping import Float
from torch import Tensor, nn

from hooked_reward.heads.base import HeadInputs, RewardHead


class LinearRewardHead(RewardHead):
    """rewards = reward_resid @ W_R.T + b_R, computed by the wrapped `score` module.

    `score` is the bridge's `unembed` component (the HF `score` Linear, hooked as `unembed.hook_in/out`),
    held without registering it a second time in the module tree.
    """

    _score: nn.Module  # set with object.__setattr__: the bridge owns it (its `unembed`)

    def __init__(self, score: nn.Module, output_names: list[str] | None = None) -> None:
        super().__init__()
        object.__setattr__(self, "_score", score)
        n_outputs = self._weight().shape[0]
        self.output_names = output_names or (["reward"] if n_outputs == 1 else [f"label_{i}" for i in range(n_outputs)])

    def _linear(self) -> nn.Linear:
        score = self._score
        return cast(nn.Linear, getattr(score, "original_component", None) or score)  # the HF `score` Linear

    def _weight(self) -> Tensor:
        return self._linear().weight

    def linear_map(self) -> tuple[Float[Tensor, "n_outputs d_model"], Float[Tensor, " n_outputs"]]:
        weight = self._weight()
        bias = getattr(self._linear(), "bias", None)
        if bias is None:
            bias = torch.zeros(weight.shape[0], dtype=weight.dtype, device=weight.device)
        return weight, bias

    def forward(self, reward_resid: Float[Tensor, "batch d_model"], inputs: HeadInputs) -> Tensor:  # noqa: ARG002 (the RewardHead interface's signature)
        return self.squeeze_single(self._score(reward_resid))
