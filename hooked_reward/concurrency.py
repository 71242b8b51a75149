"""One run at a time per model: a model used from several threads serialises its runs on a per-model lock.

Hooks in TransformerLens live on the model's `HookPoint` modules, not on a call: while one thread's
`run_with_hooks` or `run_with_cache` has its hooks registered, any other thread's forward on the same model runs
through them (it gets the other thread's activations, or its edits). So every entry point that registers hooks or
runs the model holds the model's re-entrant lock for its whole duration:

- `forward` (and so `model(...)`), `run_with_cache`, `run_with_hooks`;
- the `model.hooks(...)` context, from entering to leaving the `with` block (another thread's run waits until it
  ends: do not keep such a block open while waiting on another thread that uses the same model);
- `add_hook`, `reset_hooks`, `remove_all_hook_fns` (they change the hook state the runs read).

Runs on one model from several threads are therefore correct and sequential; for parallel speed give each
thread its own model (or use processes). Hooks added permanently (`add_hook`, `HookPoint.add_hook`) are the
model's state and apply to every thread's later runs, as they do in one thread.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any, TypeVar

__all__ = ["RUN_METHODS", "HOOK_STATE_METHODS", "run_lock", "serialise_runs"]

#: Methods that run the model (hold the lock for the whole run).
RUN_METHODS = ("forward", "run_with_cache", "run_with_hooks")
#: Methods that change which hooks a run goes through.
HOOK_STATE_METHODS = ("add_hook", "reset_hooks", "remove_all_hook_fns")

_ATTRIBUTE = "_hooked_reward_run_lock"
_CREATE = threading.Lock()


C = TypeVar("C", bound=type)


def run_lock(model: Any) -> threading.RLock:
    """The model's run lock (re-entrant: a run may call other entry points of the same model in its thread),
    created on first use."""
    lock = vars(model).get(_ATTRIBUTE)
    if lock is None:
        with _CREATE:
            lock = vars(model).get(_ATTRIBUTE)
            if lock is None:
                lock = threading.RLock()
                object.__setattr__(model, _ATTRIBUTE, lock)
    return lock


class _LockedContext:
    """A context manager entered with the model's lock held, released when it exits."""

    def __init__(self, lock: threading.RLock, inner: Any) -> None:
        self.lock, self.inner = lock, inner

    def __enter__(self) -> Any:
        self.lock.acquire()
        try:
            return self.inner.__enter__()
        except BaseException:
            self.lock.release()
            raise

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> bool | None:
        try:
            return self.inner.__exit__(kind, value, traceback)
        finally:
            self.lock.release()


def _locked(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        with run_lock(self):
            return method(self, *args, **kwargs)

    return wrapper


def serialise_runs(cls: C, methods: Iterable[str] = RUN_METHODS + HOOK_STATE_METHODS) -> C:
    """Wrap `methods` of `cls` (and its `hooks` context) so each holds the instance's run lock (module docstring).
    Applied once to `HookedRewardModel`; returns `cls`."""
    for name in methods:
        setattr(cls, name, _locked(getattr(cls, name)))
    # `hooks` is TransformerLens's context manager on the class given (HookedRewardModel); `type` cannot say so.
    hooks = cls.hooks  # type: ignore[attr-defined]

    @functools.wraps(hooks)
    def locked_hooks(self: Any, *args: Any, **kwargs: Any) -> _LockedContext:
        return _LockedContext(run_lock(self), hooks(self, *args, **kwargs))

    cls.hooks = locked_hooks  # type: ignore[attr-defined]  # (as above)
    return cls
