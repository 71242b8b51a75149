"""hooked_reward: TransformerLens-style interpretability for reward models, with `W_R` as the axis."""

from hooked_reward import _hf_logging  # noqa: F401  (first: keeps the user's transformers log level)
from hooked_reward.cache import RewardActivationCache
from hooked_reward.cpu_memory import release_freed_cpu_memory, retain_freed_cpu_memory
from hooked_reward.errors import (
    CheckpointError,
    HookedRewardError,
    HookError,
    HookNameError,
    InputError,
    NonFiniteError,
    NoVocabularyError,
    UnsupportedArchitectureError,
)
from hooked_reward.finite import NonFiniteRewardWarning
from hooked_reward.model import HookedRewardModel
from hooked_reward.pairs import PreferencePair

__all__ = [
    "HookedRewardModel",
    "RewardActivationCache",
    "PreferencePair",
    "retain_freed_cpu_memory",
    "release_freed_cpu_memory",
    "HookedRewardError",
    "CheckpointError",
    "InputError",
    "HookNameError",
    "HookError",
    "NonFiniteError",
    "NonFiniteRewardWarning",
    "NoVocabularyError",
    "UnsupportedArchitectureError",
]
__version__ = "0.1.0"
