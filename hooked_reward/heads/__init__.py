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
from hooked_reward.heads.armorm import (
    ARMORM_HOOKS,
    ArmoRMHead,
    ArmoRMOutputs,
    GatingNetwork,
    ScoreDifference,
    armorm_outputs,
    score_difference,
)
from hooked_reward.heads.base import HeadTerms, PairSplit, Readout, ReadoutKind, RewardHead
from hooked_reward.heads.linear import LinearRewardHead
from hooked_reward.heads.sequence_classification import from_sequence_classifier
from hooked_reward.heads.value_head import MLPValueHead, ValueHead, value_head_checkpoint

# Code outside heads/ imports heads from here, never from their modules (tests/test_head_readout_contract.py).
__all__ = [
    "RewardHead",
    "Readout",
    "ReadoutKind",
    "PairSplit",
    "HeadTerms",
    "LinearRewardHead",
    "ArmoRMHead",
    "ArmoRMOutputs",
    "GatingNetwork",
    "ScoreDifference",
    "ARMORM_HOOKS",
    "armorm_outputs",
    "score_difference",
    "ValueHead",
    "MLPValueHead",
    "value_head_checkpoint",
    "from_sequence_classifier",
]
