"""The common reward head: one `score` Linear (`num_labels` outputs, optional bias), optionally normalised."""

from __future__ import annotations

from typing import cast

import torch
from jaxtyping import Float
from torch import Tensor, nn
from transformer_lens.hook_points import HookPoint

from hooked_reward.heads.base import HeadInputs, RewardHead
from hooked_reward.heads.normalization import RewardNormalization


class LinearRewardHead(RewardHead):
    """rewards = reward_resid @ W_R.T + b_R, computed by the wrapped `score` module.

    `score` is the bridge's `unembed` component (the HF `score` Linear, hooked as `unembed.hook_in/out`),
    held without registering it a second time in the module tree. With a `normalization` (OpenRLHF's
    `normalize_reward`), the Linear's output is the raw score, seen at `hook_reward_raw`, and the rewards are
    `(raw - mean) / std`; `W_R` and `b_R` are then the normalised map (`heads.normalization`).
    """

    _score: nn.Module  # set with object.__setattr__: the bridge owns it (its `unembed`)
    normalization: RewardNormalization | None

    def __init__(
        self,
        score: nn.Module,
        output_names: list[str] | None = None,
        normalization: RewardNormalization | None = None,
    ) -> None:
        super().__init__()
        object.__setattr__(self, "_score", score)
        n_outputs = self._weight().shape[0]
        self.output_names = output_names or (["reward"] if n_outputs == 1 else [f"label_{i}" for i in range(n_outputs)])
        self.normalization = normalization

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
        if self.normalization is not None:
            return self.normalization.affine(weight, bias)
        return weight, bias

    def hook_points(self) -> dict[str, HookPoint]:
        if self.normalization is None:
            return {}
        return {"hook_reward_raw": self.normalization.hook_reward_raw}

    def forward(self, reward_resid: Float[Tensor, "batch d_model"], inputs: HeadInputs) -> Tensor:  # noqa: ARG002 (the RewardHead interface's signature)
        rewards = self.squeeze_single(self._score(reward_resid))
        return rewards if self.normalization is None else self.normalization(rewards)
