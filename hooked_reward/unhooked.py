"""Hook points nobody hooks cost nothing: the bridge's per-call Python work, skipped where no hook can see it.

A bridge forward makes ~60 module calls per layer where HF makes ~12 (the hook points, the sub-bridges around
each HF module), and three of TransformerLens's per-call steps do work whose result is discarded unless a hook
or an offloaded weight is present:

* every component's `__call__` enters accelerate's `align_module_device` around its wrapped HF module, which
  materialises offloaded weights and is a no-op (a generator-based context manager, ~3 us) for a module without
  an accelerate offload hook (`_hf_hook`);
* a native-autograd norm (`NormalizationBridge._hf_autograd_forward_with_hooks`: Llama, Qwen, Gemma, ...)
  computes the mean square, `rsqrt`, `sqrt` and the normalized activation for `hook_scale` and
  `hook_normalized`, then returns HF's own norm of the input unless a hook changed one of them: two full
  `[batch, pos, d_model]` passes and ~10 small ops per norm, ~1/3 of a forward's fixed cost;
* every block inspects its HF layer's `forward` signature (`inspect.signature`) to filter its keyword arguments.

`install_unhooked_shortcuts(model)` gives each bridge component a subclass (the same object, only its class
changes, as `fused_attention` and `hook_checks` do) that skips the first when the wrapped module has no
accelerate hook, the second when neither norm hook point has a hook (forward or backward, nor a process-wide
module hook), and reads the signature once per HF class. Each shortcut returns exactly what TransformerLens's
path returns in that case (the same HF calls on the same tensors: bit-identical, `tests/test_unhooked.py`), and
is checked on every call, so a hook added later (`run_with_cache`, `hooks()`, a patch) takes TransformerLens's
path again.
"""

from __future__ import annotations

import hooked_reward._hf_logging  # noqa: F401  (before TransformerLens, which silences HF's logger)

# isort: split
import functools
import inspect
import types
from typing import Any

import torch
from torch import nn
from torch.nn.modules import module as torch_module
from transformer_lens.model_bridge.generalized_components.base import GeneralizedComponent
from transformer_lens.model_bridge.generalized_components.block import BlockBridge
from transformer_lens.model_bridge.generalized_components.normalization import NormalizationBridge


def has_hooks(module: nn.Module) -> bool:
    """Whether `module` has a forward, forward-pre, backward or backward-pre hook of its own."""
    return bool(
        module._forward_hooks or module._forward_pre_hooks or module._backward_hooks or module._backward_pre_hooks
    )


def global_module_hooks() -> bool:
    """True when a process-wide `nn.Module` hook is registered: it would fire at every hook point too."""
    return bool(
        torch_module._global_forward_hooks
        or torch_module._global_forward_pre_hooks
        or torch_module._global_backward_hooks
        or torch_module._global_backward_pre_hooks
    )


class DirectCall:
    """A component whose call skips accelerate's `align_module_device` when its wrapped module is not offloaded
    (no `_hf_hook`): then that context manager does nothing, and the call is `nn.Module.__call__`."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        original = self._modules.get("_original_component")  # type: ignore[attr-defined]
        if original is not None and "_hf_hook" in original.__dict__:
            return super().__call__(*args, **kwargs)  # type: ignore[misc]
        return nn.Module.__call__(self, *args, **kwargs)


class UnhookedNorm:
    """A native-autograd norm that returns HF's norm directly when `hook_scale` and `hook_normalized` have no
    hook (TransformerLens computes their values first and returns HF's norm unless a hook edited them)."""

    def _hf_autograd_forward_with_hooks(self, x: torch.Tensor) -> torch.Tensor:
        bridge: Any = self
        original = bridge.original_component
        if (
            original is None
            or isinstance(original, nn.Identity)
            or has_hooks(bridge.hook_scale)
            or has_hooks(bridge.hook_normalized)
            or global_module_hooks()
        ):
            return super()._hf_autograd_forward_with_hooks(x)  # type: ignore[misc]
        result = original(x)
        return result if result.dtype == x.dtype else result.to(x.dtype)


@functools.cache
def _forward_parameters(forward: types.FunctionType) -> tuple[tuple[str, ...], bool] | None:
    """`(parameter names, accepts **kwargs)` of an HF module's `forward` bound to an instance (the names
    `inspect.signature(module.forward)` gives), or None when it has no signature (TransformerLens then passes
    every keyword through)."""
    try:
        signature = inspect.signature(forward)
    except (ValueError, TypeError):
        return None
    parameters = list(signature.parameters.values())
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if parameters and parameters[0].kind in positional:
        parameters = parameters[1:]  # binding drops `self` (as inspect does for a bound method)
    variadic = any(p.kind == inspect.Parameter.VAR_KEYWORD for p in parameters)
    return tuple(p.name for p in parameters), variadic


class CachedSignatureBlock:
    """A block that filters its keyword arguments as TransformerLens does, from its HF layer's `forward`
    signature read once per HF class instead of on every call."""

    def _filter_kwargs_for_forward(self, kwargs: dict[str, Any], num_positional_args: int = 0) -> dict[str, Any]:
        original = self.original_component  # type: ignore[attr-defined]
        if original is None:
            return kwargs
        forward = original.forward
        if not isinstance(forward, types.MethodType) or not isinstance(forward.__func__, types.FunctionType):
            return super()._filter_kwargs_for_forward(kwargs, num_positional_args)  # type: ignore[misc]
        parameters = _forward_parameters(forward.__func__)
        if parameters is None:
            return kwargs
        names, variadic = parameters
        if variadic:
            return kwargs
        positional = set(names[:num_positional_args])
        return {k: v for k, v in kwargs.items() if k in names and k not in positional}


_UNHOOKED_CLASSES: dict[type, type] = {}


def unhooked_class(cls: type[GeneralizedComponent]) -> type:
    """`cls` with the shortcuts that apply to it (same name, for reprs and messages), made once per class."""
    if cls not in _UNHOOKED_CLASSES:
        bases: list[type] = [DirectCall]
        if issubclass(cls, NormalizationBridge):
            bases.append(UnhookedNorm)
        if issubclass(cls, BlockBridge):
            bases.append(CachedSignatureBlock)
        namespace = {"__module__": cls.__module__, "__qualname__": cls.__qualname__}
        _UNHOOKED_CLASSES[cls] = type(cls.__name__, (*bases, cls), namespace)
    return _UNHOOKED_CLASSES[cls]


def install_unhooked_shortcuts(model: nn.Module) -> int:
    """Give every TransformerLens component under `model` its `unhooked_class` (in place: weights, hooks and
    registry untouched). Returns how many components were changed."""
    count = 0
    for module in model.modules():
        if isinstance(module, GeneralizedComponent) and not isinstance(module, DirectCall):
            module.__class__ = unhooked_class(type(module))
            count += 1
    return count
