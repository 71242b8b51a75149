"""Errors raised for bad input: each names the problem and the fix."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class HookedRewardError(ValueError):
    """Base class for hooked_reward's input errors (a ValueError, so callers may catch either)."""


class UnsupportedArchitectureError(HookedRewardError):
    """The checkpoint's architecture has no TransformerLens 4 adapter (or no reward head we know)."""


class CheckpointError(HookedRewardError):
    """A checkpoint directory is missing, incomplete or malformed."""


class InputError(HookedRewardError):
    """Text, tokens, masks or positions that cannot give a meaningful reward."""


class HookError(HookedRewardError):
    """A hook returned a value that cannot replace the activation it was given (shape, dtype or device)."""


class NonFiniteError(HookedRewardError):
    """NaN or infinite rewards (or activations), named by row; pass `nan_policy="omit"` to drop those rows."""


class NoVocabularyError(HookedRewardError):
    """A call that needs a vocabulary output (next-token logits: loss, generation, token probabilities); a reward
    model's output is one reward per text (or per objective), so it has none."""


class UnknownTokensWarning(UserWarning):
    """A text the tokenizer knows none of the words of (every token but the special ones is its unknown token), so
    its reward says nothing about its content; `.rows` lists those texts' rows in the batch."""

    def __init__(self, message: str, rows: list[int]) -> None:
        super().__init__(message)
        self.rows = rows


class ChatFormatWarning(UserWarning):
    """A conversational pair given to a model that reads its own text format (a bundled organism, or any `render`):
    a multi-turn conversation (or one with system messages) has no form in that format, so it is rendered through
    the tokenizer's chat template (or the plain join), which the model was not trained on."""


class RewardPositionWarning(UserWarning):
    """The checkpoint's pad id occurs at the end of a text (e.g. pad = eos, with an eos appended), so its reward is
    read before it, as the checkpoint's own code reads it (`model.reward_positions`), not at the last token."""


class HookNameError(KeyError):
    """A hook name that does not exist on the model."""

    def __str__(self) -> str:  # KeyError repr-quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


def unknown_hook_error(name: str, known: Iterable[str]) -> HookNameError:
    """Build a `HookNameError` for `name` that suggests the closest existing hook names."""
    known = list(known)
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return HookNameError(
        f"Hook point {name!r} does not exist on this model.{hint} "
        "List the valid names with `model.hook_dict.keys()` (or see the hook list in the README)."
    )


def missing_cache_key_error(name: object, cached: Iterable[str], model_hooks: Iterable[str]) -> HookNameError:
    """Build a `HookNameError` for a cache lookup of `name` that is not in the cache: either a hook point this run
    did not cache (the fix is in the `run_with_cache` call), or one that does not exist (closest cached names)."""
    cached = list(cached)
    if name in set(model_hooks):
        return HookNameError(
            f"Hook point {name!r} exists on this model but is not in this cache: the run did not cache it "
            "(names_filter, stop_at_layer / start_at_layer, or a hook that needs model.set_use_...(True)). Run "
            f"run_with_cache again with it included; this cache holds {len(cached)} names (`cache.keys()`)."
        )
    close = difflib.get_close_matches(str(name), cached, n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return HookNameError(
        f"{name!r} is not in this cache and is not a hook point of this model.{hint} List the cached names with "
        "`cache.keys()`."
    )
