"""A reward head's output normalisation, `(raw - mean) / std`, as a hookable step of the head.

OpenRLHF's reward models (`normalize_reward`) report `(r - mean) / std`, where `r` is the `score` / `value_head`
Linear's output at the reward position and `mean`, `std` are the statistics its reward trainer measured on the
evaluation set and wrote into `config.json`. The normalisation is part of what the model computes, so it is part
of the head here:

    reward_resid ─▶ score Linear ─▶ hook_reward_raw r ─▶ (r - mean) / std ─▶ hook_reward

and the head's affine map is the normalised one, `W_R = W / std`, `b_R = (b - mean) / std`: every analysis reading
`W_R` / `readout()` (attributions, the lens, `W_R_eff`) sums to the normalised reward. `hook_reward_raw` lets an
analysis read or patch the raw score.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import Any

from jaxtyping import Float
from torch import Tensor, nn
from transformer_lens.hook_points import HookPoint

from hooked_reward.errors import CheckpointError


class RewardNormalization(nn.Module):
    """`rewards = (hook_reward_raw(raw) - mean) / std` for raw rewards `[batch]` or `[batch, n_outputs]`.

    `mean` is finite and `std` finite and positive (checked here: anything else raises `CheckpointError` naming
    `source`, where the values came from). The arithmetic runs in the raw rewards' dtype, as OpenRLHF's does.
    """

    def __init__(self, mean: float, std: float, source: str = "the normalisation") -> None:
        super().__init__()
        self.mean, self.std = check_statistics(mean, std, source)
        self.source = source
        self.hook_reward_raw = HookPoint()

    def forward(self, raw: Float[Tensor, " batch *n_outputs"]) -> Float[Tensor, " batch *n_outputs"]:
        return (self.hook_reward_raw(raw) - self.mean) / self.std

    def affine(
        self, weight: Float[Tensor, "n_outputs d_model"], bias: Float[Tensor, " n_outputs"]
    ) -> tuple[Float[Tensor, "n_outputs d_model"], Float[Tensor, " n_outputs"]]:
        """The normalised head's affine map from the raw one: `(W / std, (b - mean) / std)`."""
        return weight / self.std, (bias - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean}, std={self.std}"


def check_statistics(mean: Any, std: Any, source: str) -> tuple[float, float]:
    """`(mean, std)` as floats, or `CheckpointError` for a mean that is not a finite number or a std that is not a
    finite positive number (a std of 0 would divide by zero, a negative one flip every comparison)."""
    try:
        mean_f, std_f = float(mean), float(std)
    except (TypeError, ValueError) as err:
        raise CheckpointError(
            f"{source}: reward normalisation needs numbers, got mean={mean!r}, std={std!r}. Fix the values (the "
            "evaluation set's reward mean and standard deviation), or turn the normalisation off."
        ) from err
    if not math.isfinite(mean_f):
        raise CheckpointError(
            f"{source}: reward normalisation mean={mean!r} is not finite. Fix it (the evaluation set's mean reward), "
            "or turn the normalisation off."
        )
    if not math.isfinite(std_f) or std_f <= 0:
        raise CheckpointError(
            f"{source}: reward normalisation std={std!r} must be a finite positive number (rewards are divided by "
            "it). Fix it (the evaluation set's reward standard deviation), or turn the normalisation off "
            "(normalize_reward=False gives the raw score)."
        )
    return mean_f, std_f


def normalization_from_config(
    config: Mapping[str, Any], source: str, normalize_reward: bool | None = None
) -> RewardNormalization | None:
    """OpenRLHF's normalisation from a config: applied when `normalize_reward` (else config's `normalize_reward`)
    is true, with config's `mean` and `std`; None when it is off.

    OpenRLHF reads `config.mean` and `config.std` together when `mean` is present; without them its buffers keep
    mean 0, std 1, so the reward is the raw score (a warning says so). `std` without `mean`, or `mean` without
    `std`, raises `CheckpointError`.
    """
    enabled = bool(config.get("normalize_reward", False)) if normalize_reward is None else bool(normalize_reward)
    if not enabled:
        return None
    has_mean, has_std = "mean" in config, "std" in config
    if has_mean != has_std:
        raise CheckpointError(
            f"{source}: normalize_reward is on but only {'mean' if has_mean else 'std'} is given; OpenRLHF writes "
            "both (the evaluation set's reward mean and std). Add the other, or load with normalize_reward=False."
        )
    if not has_mean:
        warnings.warn(
            f"{source}: normalize_reward is on but there is no mean/std, so (as in OpenRLHF) mean 0 and std 1 are "
            "used: the reward is the raw score.",
            stacklevel=3,
        )
        return RewardNormalization(0.0, 1.0, source)
    return RewardNormalization(config["mean"], config["std"], source)
