"""hooked_reward: TransformerLens-style interpretability for reward models, with `W_R` as the axis.

Names load on first use (`hooked_reward._lazy`): `import hooked_reward` does not import TransformerLens,
plotting, statistics or SAE code; `hooked_reward.HookedRewardModel` imports the model and TransformerLens's bridge.
"""

from typing import TYPE_CHECKING

from hooked_reward._lazy import lazy_exports
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

if TYPE_CHECKING:
    from hooked_reward.cache import RewardActivationCache
    from hooked_reward.cpu_memory import release_freed_cpu_memory, retain_freed_cpu_memory
    from hooked_reward.finite import NonFiniteRewardWarning
    from hooked_reward.model import HookedRewardModel
    from hooked_reward.pairs import PreferencePair

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "hooked_reward.model": ["HookedRewardModel"],
        "hooked_reward.cache": ["RewardActivationCache"],
        "hooked_reward.pairs": ["PreferencePair"],
        "hooked_reward.cpu_memory": ["retain_freed_cpu_memory", "release_freed_cpu_memory"],
        "hooked_reward.finite": ["NonFiniteRewardWarning"],
    },
)

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
