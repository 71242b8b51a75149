"""What TransformerLens 4 calls mean on a reward model: the checks behind `HookedRewardModel`'s TL signatures.

A reward model has no vocabulary output, so every call that needs next-token logits (a loss, generation, token
probabilities) raises one error, `NoVocabularyError`, wherever it is made: a `return_type`, a method
(`generate`, `loss_fn`, ...), or TransformerLens's own `utils.test_prompt`, which reads `model(tokens)` as
logits. Everything else keeps TransformerLens's meaning (see docs/migration.md).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Mapping
from types import CodeType, FrameType
from typing import Any

from hooked_reward.errors import InputError, NoVocabularyError

#: What TransformerLens's `run_with_hooks(fwd_hooks=...)` / `hooks(fwd_hooks=...)` take: `(hook name or name
#: filter, hook function)` pairs, as the list type its signature names (a list is invariant: build it as this type).
FwdHooks = list[tuple[str | Callable[..., Any], Callable[..., Any]]]

#: `return_type`s that read a reward: "reward", TransformerLens's "logits" (the same tensor), or None.
REWARD_RETURN_TYPES = ("reward", "logits", None)
#: `return_type`s that need a vocabulary output.
VOCABULARY_RETURN_TYPES = ("loss", "both", "predictions", "logits_and_cache")
#: forward keywords that only make sense for next-token prediction (targets, a KV cache for generation).
VOCABULARY_KWARGS = ("labels", "past_key_values", "use_cache", "use_past_kv_cache")


def no_vocabulary_error(what: str) -> NoVocabularyError:
    """The one error for calls that need next-token logits, naming the call."""
    return NoVocabularyError(
        f"{what} needs a vocabulary output (next-token logits), and a reward model has none: its output is one "
        "reward per text ([batch], or [batch, n_outputs]). Use the reward (return_type='reward', or 'logits', "
        "which returns the same tensor) or a margin r(chosen) - r(rejected) as the metric; docs/migration.md "
        "lists what does not port."
    )


def check_return_type(return_type: Any) -> None:
    """`NoVocabularyError` for loss/generation return types, `InputError` for unknown ones."""
    if return_type in VOCABULARY_RETURN_TYPES:
        raise no_vocabulary_error(f"return_type={return_type!r}")
    if return_type not in REWARD_RETURN_TYPES:
        raise InputError(
            f"return_type must be 'reward', 'logits' (the same rewards, so TransformerLens code runs) or None, "
            f"got {return_type!r}."
        )


def check_forward_kwargs(kwargs: Mapping[str, Any], method: str) -> None:
    """`NoVocabularyError` for next-token keywords (labels, a KV cache), `TypeError` for any other unknown one."""
    for key in VOCABULARY_KWARGS:
        if key in kwargs:
            raise no_vocabulary_error(f"{method}({key}=...)")
    if kwargs:
        raise TypeError(f"{method}() got unexpected arguments: {sorted(kwargs)}")


@functools.cache
def _vocabulary_functions() -> dict[CodeType, str]:
    from transformer_lens.utilities.exploratory_utils import test_prompt

    return {test_prompt.__code__: "transformer_lens.utilities.test_prompt"}


def vocabulary_caller(depth: int = 8) -> str | None:
    """The name of a TransformerLens function that reads the model's output as logits (`utils.test_prompt`) when
    it is among the `depth` innermost callers, else None."""
    functions = _vocabulary_functions()
    frame: FrameType | None = sys._getframe(1)
    for _ in range(depth):
        if frame is None:
            return None
        if frame.f_code in functions:
            return functions[frame.f_code]
        frame = frame.f_back
    return None


#: boot_transformers arguments that choose what HF builds; a reward checkpoint is loaded as saved.
UNSUPPORTED_BOOT_ARGS = (
    "hf_config_overrides",
    "model_class",
    "n_ctx",
    "code_revision",
    "checkpoint_index",
    "checkpoint_value",
    "n_devices",
)
#: boot_transformers arguments passed on to `from_pretrained` as they are.
PASSED_BOOT_ARGS = (
    "revision",
    "max_memory",
    "offload_folder",
    "cache_dir",
    "local_files_only",
    "token",
    "normalize_reward",
    "base_model",
)


def check_boot_args(trust_remote_code: bool, load_weights: bool, extra: Mapping[str, Any]) -> None:
    """`InputError` for `boot_transformers` arguments a reward checkpoint cannot honour, naming each."""
    if trust_remote_code:
        raise InputError(
            "trust_remote_code=True: hooked_reward never runs code shipped in a checkpoint. Load the checkpoint "
            "with HF yourself and wrap it with HookedRewardModel.from_hf_model(hf_model, tokenizer=tok)."
        )
    if not load_weights:
        raise InputError(
            "load_weights=False would give a reward head with random weights, which gives rewards like any "
            "other. Load the checkpoint's weights (HookedRewardModel.from_pretrained(path))."
        )
    unknown = sorted(k for k, v in extra.items() if v is not None)
    if unknown:
        raise InputError(
            f"boot_transformers({', '.join(f'{k}=...' for k in unknown)}) is not supported for reward models: a "
            "reward checkpoint is loaded as saved. Use HookedRewardModel.from_pretrained(path, dtype=..., "
            "device_map=..., fold_ln=...), or build the HF model yourself and pass hf_model=."
        )
