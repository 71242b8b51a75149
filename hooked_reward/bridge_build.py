"""Building the TransformerBridge of a reward model: TransformerLens's own steps, with a faster hook-point scan.

`TransformerBridge.__init__` scans the component tree twice for HookPoints (once to build the hook registry, once
more after alias registration). TransformerLens's scan calls `dir()` on each of the ~110 bridge modules per layer
(HookPoints included) and `getattr` on every public name it returns (hundreds of methods per module): half of the
bridge's construction time, and the reason loading costs ~28 ms per layer more than HF's. `scan_hook_points`
visits the same modules in the same order and evaluates the same attributes that can hold a HookPoint (instance
attributes, submodules, parameters, buffers, and class-level descriptors such as properties), skipping only
plain methods and class constants, which `getattr` returns as themselves. The registry it builds (keys, order,
names, shared HookPoints) is identical to TransformerLens's (tests/test_bridge_build.py checks it on every
supported architecture).

`build_bridge` follows `transformer_lens.model_bridge.sources.build_bridge_from_module` step for step (config
from the HF config, adapter, `post_adapter_hook`, device, `prepare_model`, driver) but constructs `cls`, so that a
subclass's scan is the one `__init__` runs.
"""

from __future__ import annotations

import hooked_reward._hf_logging  # noqa: F401  (before TransformerLens, which silences HF's logger)

# isort: split
import functools
import inspect
import types
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch import nn
from transformer_lens.factories.architecture_adapter_factory import ArchitectureAdapterFactory
from transformer_lens.hook_points import HookPoint
from transformer_lens.model_bridge import TransformerBridge
from transformer_lens.model_bridge.architecture_adapter import ArchitectureAdapter
from transformer_lens.model_bridge.sources._bridge_builder import build_bridge_config_from_hf
from transformer_lens.model_bridge.sources.transformers_driver import TransformersDriver

BridgeT = TypeVar("BridgeT", bound=TransformerBridge)

# Names TransformerLens's scan never reads (weight views that compute on access, and the wrapped HF modules).
SKIPPED_ATTRIBUTES = frozenset(
    [
        "original_component",
        "original_model",
        "OV",
        "QK",
        "W_V",
        "W_O",
        "W_Q",
        "W_K",
        "W_in",
        "W_gate",
        "W_out",
        "b_V",
        "b_O",
        "b_Q",
        "b_K",
        "b_in",
        "b_out",
    ]
)
SKIPPED_CHILDREN = frozenset(["original_component", "_original_component", "original_model"])
_PLAIN_CLASS_ATTRIBUTES = (
    types.FunctionType,
    staticmethod,
    classmethod,
    types.BuiltinFunctionType,
    types.WrapperDescriptorType,
    types.MethodDescriptorType,
    types.ClassMethodDescriptorType,
)


def _is_scanned(name: str) -> bool:
    return not name.startswith("_") and name not in SKIPPED_ATTRIBUTES and not name[0].isdigit()


@functools.cache
def _class_attributes_that_may_hold_hooks(cls: type) -> frozenset[str]:
    """Public class-level names whose `getattr` can give a HookPoint: HookPoints and non-method descriptors."""
    names = []
    for name in dir(cls):
        if not _is_scanned(name):
            continue
        attr = inspect.getattr_static(cls, name)
        if isinstance(attr, HookPoint) or (
            hasattr(type(attr), "__get__") and not isinstance(attr, _PLAIN_CLASS_ATTRIBUTES)
        ):
            names.append(name)
    return frozenset(names)


def _attribute_names(module: nn.Module) -> list[str]:
    """The names of `dir(module)` that TransformerLens's scan reads and that can hold a HookPoint, sorted as
    `dir()` sorts them."""
    if type(module).__dir__ is not nn.Module.__dir__:  # a custom __dir__: read it as TransformerLens does
        names = set(dir(module))
    else:
        # Classes are hashable; typeshed's Module.__hash__ signature fails the Hashable protocol check.
        names = set(_class_attributes_that_may_hold_hooks(type(module)))  # type: ignore[arg-type]
        for table in (module.__dict__, module._parameters, module._modules, module._buffers):
            names.update(table)
    return sorted(name for name in names if _is_scanned(name))


def scan_hook_points(registry: dict[str, HookPoint], root: nn.Module, prefix: str = "") -> None:
    """Add every HookPoint under `root` to `registry` as TransformerLens's `_scan_existing_hooks` does: a
    component's `get_hooks()` first, then its attributes in `dir()` order, then its children (not the wrapped HF
    modules). A HookPoint keeps the first name it is found under; later names become aliases."""
    visited: set[int] = set()
    named = {id(hook) for hook in registry.values() if hook.name is not None}

    def register(name: str, hook: HookPoint) -> None:
        if id(hook) not in named:
            hook.name = name
            named.add(id(hook))
        registry[name] = hook

    def scan(module: nn.Module, path: str) -> None:
        if id(module) in visited:
            return
        visited.add(id(module))
        get_hooks = getattr(module, "get_hooks", None)
        if callable(get_hooks):
            hooks = get_hooks()
            if isinstance(hooks, dict):
                for hook_name, hook in hooks.items():
                    register(f"{path}.{hook_name}" if path else hook_name, hook)
        for attr_name in _attribute_names(module):
            try:
                attr = getattr(module, attr_name)
            except (AttributeError, NameError, RuntimeError, TypeError):
                continue
            if isinstance(attr, HookPoint):
                register(f"{path}.{attr_name}" if path else attr_name, attr)
        for child_name, child in module.named_children():
            if child_name not in SKIPPED_CHILDREN:
                scan(child, f"{path}.{child_name}" if path else child_name)

    scan(root, prefix)


def build_bridge(
    cls: type[BridgeT],
    model: nn.Module,
    architecture: str,
    *,
    hf_config: Any,
    model_name: str,
    post_adapter_hook: Callable[[ArchitectureAdapter], None] | None = None,
) -> BridgeT:
    """A `cls` (a TransformerBridge subclass) around `model`, built as `build_bridge_from_module` builds a
    TransformerBridge (without a tokenizer: the caller sets its own). `model` is modified in place, not copied."""
    parameter = next(model.parameters(), None)
    dtype = parameter.dtype if parameter is not None else torch.float32
    config = build_bridge_config_from_hf(hf_config, architecture, model_name, dtype)
    adapter = ArchitectureAdapterFactory.select_architecture_adapter(config)
    if post_adapter_hook is not None:
        post_adapter_hook(adapter)
    adapter.cfg.device = str(parameter.device) if parameter is not None else "cpu"
    adapter.prepare_model(model)
    return cls(model, adapter, None, driver=TransformersDriver(model, adapter, None))
