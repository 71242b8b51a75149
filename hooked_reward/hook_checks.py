"""Hook outputs checked against the activation they replace.

A TransformerLens hook may return a tensor to replace the activation. One of the wrong shape, dtype or device
would otherwise fail deep inside the model with no hook name, or worse run on (a `[1]` reward broadcast over a
batch of two). `CheckedHookPoint.add_hook` wraps each user hook so that a returned tensor is compared with the
activation it replaces; hook points without user hooks are not touched, so the unhooked forward is unchanged.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from torch import Tensor, nn
from transformer_lens.hook_points import HookPoint, LensHandle

from hooked_reward.errors import HookError


def check_hook_output(name: str, activation: Tensor, returned: Any) -> None:
    """Raise `HookError` unless `returned` can replace `activation` (same shape, dtype and device)."""
    if returned is activation:
        return
    expected = f"{tuple(activation.shape)} {activation.dtype} on {activation.device}"
    if not isinstance(returned, Tensor):
        raise HookError(
            f"The hook on {name} returned a value of type {type(returned).__name__}; a hook returns None (to leave the "
            f"activation as it is) or a tensor like the activation it replaces: {expected}."
        )
    if returned.shape != activation.shape:
        raise HookError(
            f"The hook on {name} returned shape {tuple(returned.shape)}, but the activation it replaces is "
            f"{tuple(activation.shape)}. Return a tensor of the activation's shape (edit it, or index into "
            "it per row), or None."
        )
    if returned.dtype != activation.dtype:
        raise HookError(
            f"The hook on {name} returned dtype {returned.dtype}, but the activation it replaces is "
            f"{activation.dtype}. Return `value.to(activation.dtype)`."
        )
    if returned.device != activation.device:
        raise HookError(
            f"The hook on {name} returned a tensor on {returned.device}, but the activation it replaces is on "
            f"{activation.device}. Return `value.to(activation.device)`."
        )


def hook_label(hook: HookPoint) -> str:
    """The hook point's name with its aliases, e.g. `blocks.0.hook_in (blocks.0.hook_resid_pre)`."""
    name = getattr(hook, "name", None) or "?"
    aliases = [a for a in getattr(hook, "_alias_names", ()) if a != name]
    return f"{name} ({', '.join(aliases)})" if aliases else name


def checked_hook(hook: Callable[..., Any]) -> Callable[..., Any]:
    """`hook` (TransformerLens's `fn(activation, hook=hook_point)`), with its returned tensor checked."""

    @functools.wraps(hook)
    def run_checked(activation: Any, hook: HookPoint) -> Any:
        returned = user_hook(activation, hook=hook)
        if returned is not None and isinstance(activation, Tensor):
            check_hook_output(hook_label(hook), activation, returned)
        return returned

    user_hook = hook
    return run_checked


def check_hook_function(name: str, hook: Any) -> None:
    """Raise `HookError` unless `hook` can be called as TransformerLens calls hooks: `hook(activation, hook=point)`.
    Checked when the hook is added, so a wrong hook fails before the run, naming the hook point."""
    if not callable(hook):
        raise HookError(
            f"The hook for {name} is a {type(hook).__name__} ({hook!r:.60}), not a function; a hook is "
            "`def fn(activation, hook): ...` returning None or a tensor like the activation."
        )
    try:
        signature = inspect.signature(hook)
    except (TypeError, ValueError):  # builtins and C functions: nothing to check
        return
    try:
        signature.bind(None, hook=None)
    except TypeError as err:
        raise HookError(
            f"The hook {getattr(hook, '__name__', type(hook).__name__)}{signature} for {name} cannot be called as "
            f"TransformerLens calls hooks, `fn(activation, hook=hook_point)` ({err}). Give it the signature "
            "`def fn(activation, hook):`."
        ) from None


class CheckedHookPoint(HookPoint):
    """A TransformerLens `HookPoint` whose added hooks have their returned tensors checked (see module doc)."""

    def add_hook(self, hook: Callable[..., Any], *args: Any, **kwargs: Any) -> LensHandle:
        check_hook_function(hook_label(self), hook)
        handle = super().add_hook(checked_hook(hook), *args, **kwargs)
        if handle is not None:
            handle.user_hook = hook
        return handle


def check_hook_outputs(model: nn.Module, hook_dict: dict[str, HookPoint]) -> None:
    """Make every plain `HookPoint` of `model` a `CheckedHookPoint` (same object, same state), which knows the
    names it goes by in `hook_dict` (TransformerLens aliases), for its error messages."""
    names: dict[int, list[str]] = {}
    for name, hook_point in hook_dict.items():
        names.setdefault(id(hook_point), []).append(name)
    for sub in [*model.modules(), *hook_dict.values()]:
        if type(sub) is HookPoint:
            sub.__class__ = CheckedHookPoint
        if isinstance(sub, HookPoint):
            sub.__dict__["_alias_names"] = tuple(names.get(id(sub), ()))
