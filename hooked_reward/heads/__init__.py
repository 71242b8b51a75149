"""Reward heads: what maps the final-normed residual at the reward position to rewards.

Each head is an `nn.Module` whose `HookPoint`s join the model's hook graph. `LinearRewardHead` covers
HF `score` Linears (with or without bias, any `num_labels`); other heads live beside it, one per module.
"""

from hooked_reward.heads import (  # noqa: F401  (importing them registers their checkpoint layouts)
    armorm,
    openrlhf,
    sequence_classification,
    value_head,
)
from hooked_reward.heads.base import RewardHead
from hooked_reward.heads.linear import LinearRewardHead

__all__ = ["RewardHead", "LinearRewardHead"]
