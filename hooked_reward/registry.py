"""The registry of checkpoint layouts (how a training tool saves a reward model), and which backbones TransformerLens 4
bridges.

Core, below both `heads` and `loading`. A layout is a recogniser plus a loader (`CheckpointLayout`), registered by the
module that knows the format (`register_layout`; `heads/sequence_classification.py`, `heads/armorm.py`,
`heads/value_head.py`, `heads/openrlhf.py`, `peft_adapter.py`), so the next layout is one module. `load_layout`
reads a directory once (`CheckpointContents`: config.json, tensor names, files), asks the recognisers in priority
order, and calls the first that claims it; a directory nobody claims raises `UnsupportedArchitectureError` listing
what was found (architectures, head-like tensors) and every layout with how it is recognised. Nothing here imports a
head or the loader, so they never import each other.
"""

from __future__ import annotations

import functools
import inspect
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from hooked_reward.errors import InputError, UnsupportedArchitectureError
from hooked_reward.hf_load import check_weight_files, read_config, read_json, tensor_files

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from hooked_reward.heads.base import RewardHead
    from hooked_reward.positions import PositionRule


@dataclass
class LoadedCheckpoint:
    """An HF module tree ready to bridge, and how to build its reward head once bridged.

    `module` has the HF layout the CausalLM adapter expects for the backbone (`model.layers...` for Llama,
    `transformer.h...` for GPT-2). `head_path` names the Linear the adapter's `unembed` is pointed at
    (`None` when the head has no single Linear). `make_head(bridge)` builds the `RewardHead`.
    `position_rule(bridge)` gives the checkpoint's own rule for where the reward is read
    (`hooked_reward.positions`); None reads each row's last attended token. `layout` names the checkpoint layout
    it was loaded as.
    """

    module: nn.Module
    hf_config: Any
    causal_lm_architecture: str
    head_path: str | None
    make_head: Callable[[Any], RewardHead]
    tokenizer: PreTrainedTokenizerBase | None = None
    position_rule: Callable[[Any], PositionRule | None] | None = None
    layout: str | None = None


ADAPTER_CONFIG = "adapter_config.json"


@dataclass
class CheckpointContents:
    """What a checkpoint directory holds, read once for every recogniser.

    `config` is config.json (checked by `hf_load.read_config`), or None for a directory without one that holds a
    PEFT adapter (`adapter_config.json`). `tensors` maps each tensor name in the weight files to its file (from
    the safetensors headers; read on first use).
    """

    path: Path
    config: dict | None

    @functools.cached_property
    def tensors(self) -> dict[str, Path]:
        return tensor_files(self.path)

    @property
    def architectures(self) -> list[str]:
        return list((self.config or {}).get("architectures") or [])

    def has_file(self, name: str) -> bool:
        return (self.path / name).exists()

    def head_like_tensors(self, limit: int = 12) -> list[str]:
        """Tensors outside the backbone: names whose top-level module is not the one holding most tensors
        (`score.weight`, `value_head.weight`, `v_head.summary.weight`, `lm_head.weight`, ...)."""
        tops = Counter(name.split(".")[0] for name in self.tensors)
        if not tops:
            return []
        backbone = tops.most_common(1)[0][0]
        return sorted(name for name in self.tensors if name.split(".")[0] != backbone)[:limit]


def read_contents(path: Path) -> CheckpointContents:
    """A checkpoint directory's contents: config.json read and checked (`read_config`) and its weight files'
    headers checked (`check_weight_files`); a directory with `adapter_config.json` (a PEFT adapter) may lack both."""
    if (path / ADAPTER_CONFIG).exists() and path.is_dir():
        config = read_json(path / "config.json") if (path / "config.json").exists() else None
        return CheckpointContents(path, config if isinstance(config, dict) else None)
    config = read_config(path)
    check_weight_files(path)
    return CheckpointContents(path, config)


@dataclass(frozen=True)
class CheckpointLayout:
    """One way a tool saves a reward model: `recognise(contents) -> bool` and `load(path, dtype=, **hf_kwargs,
    **options) -> LoadedCheckpoint`.

    `recognised_by` says in one line how it is recognised (error messages and docs/architectures.md list it);
    `priority` orders the recognisers (lower first; the generic `*ForSequenceClassification` layout is last);
    `options` names the loading options the loader takes besides dtype and HF's placement arguments
    (`normalize_reward`, `base_model`, `hub_kwargs`).
    """

    name: str
    recognised_by: str
    recognise: Callable[[CheckpointContents], bool]
    load: Callable[..., LoadedCheckpoint]
    priority: int = 50
    options: tuple[str, ...] = field(default=())


LAYOUTS: dict[str, CheckpointLayout] = {}


def register_layout(
    name: str,
    recognised_by: str,
    recognise: Callable[[CheckpointContents], bool],
    *,
    priority: int = 50,
    options: tuple[str, ...] = (),
) -> Callable[[Callable[..., LoadedCheckpoint]], Callable[..., LoadedCheckpoint]]:
    """Decorator: register the decorated loader as layout `name` (see `CheckpointLayout`)."""

    def wrap(fn: Callable[..., LoadedCheckpoint]) -> Callable[..., LoadedCheckpoint]:
        LAYOUTS[name] = CheckpointLayout(name, recognised_by, recognise, fn, priority, tuple(options))
        return fn

    return wrap


def register_loader(architecture: str) -> Callable:
    """Decorator: load checkpoints whose config.json `architectures` lists `architecture` with the decorated
    function (a layout named after the architecture)."""

    def recognise(contents: CheckpointContents) -> bool:
        return architecture in contents.architectures

    return register_layout(architecture, f"config.json architectures lists {architecture}", recognise)


def register_content_loader(detect: Callable[[Path, dict], bool]) -> Callable:
    """Decorator: load checkpoints for which `detect(path, config)` is true with the decorated function (a layout
    named after it)."""

    def wrap(fn: Callable[..., LoadedCheckpoint]) -> Callable[..., LoadedCheckpoint]:
        def recognise(contents: CheckpointContents) -> bool:
            return contents.config is not None and detect(contents.path, contents.config)

        doc = (inspect.getdoc(detect) or detect.__name__).splitlines()[0]
        return register_layout(fn.__name__, doc, recognise)(fn)

    return wrap


def layouts() -> list[CheckpointLayout]:
    """Every registered layout, in the order they are tried."""
    return sorted(LAYOUTS.values(), key=lambda layout: (layout.priority, layout.name))


def find_layout(contents: CheckpointContents) -> CheckpointLayout:
    """The first layout (by priority) that recognises `contents`, or `UnsupportedArchitectureError` listing what
    the directory holds and every layout with how it is recognised."""
    for layout in layouts():
        if layout.recognise(contents):
            return layout
    raise unrecognised_error(contents)


def unrecognised_error(contents: CheckpointContents) -> UnsupportedArchitectureError:
    config = contents.config or {}
    heads = contents.head_like_tensors()
    supported = "\n".join(f"  - {layout.name}: {layout.recognised_by}" for layout in layouts())
    return UnsupportedArchitectureError(
        f"{str(contents.path)!r} holds a {contents.architectures or 'no-architectures'} checkpoint "
        f"(model_type {config.get('model_type')!r}), not a reward model any registered layout recognises. "
        f"Tensors outside the backbone: {heads or 'none'}. Supported layouts:\n{supported}\n"
        "If the weights hold a reward head, save them in one of these layouts (e.g. as a "
        "`*ForSequenceClassification` with its `score` Linear), or register a layout "
        "(`hooked_reward.registry.register_layout`)."
    )


def load_layout(
    contents: CheckpointContents, options: dict[str, Any] | None = None, **hf_kwargs: Any
) -> LoadedCheckpoint:
    """Load `contents` with the layout that recognises it. `hf_kwargs` (dtype, device_map, ...) go to every loader;
    each entry of `options` whose value is not None must be one the layout takes (else `InputError`)."""
    layout = find_layout(contents)
    given = {k: v for k, v in (options or {}).items() if v is not None}
    passed = {k: v for k, v in given.items() if k in layout.options}
    refused = sorted(k for k in given if k not in layout.options and k != "hub_kwargs")
    if refused:
        raise InputError(
            f"{', '.join(f'{k}=' for k in refused)} does not apply to {str(contents.path)!r}, a {layout.name!r} "
            f"checkpoint ({layout.recognised_by}); it applies to "
            + ", ".join(sorted({lt.name for lt in LAYOUTS.values() if set(refused) & set(lt.options)}) or ["none"])
            + "."
        )
    loaded = layout.load(contents.path, **hf_kwargs, **passed)
    loaded.layout = loaded.layout or layout.name
    return loaded


def supported_causal_architectures() -> list[str]:
    """Every `*ForCausalLM`-style architecture TransformerLens 4 can bridge."""
    from transformer_lens.factories.architecture_adapter_factory import ArchitectureAdapterFactory

    ArchitectureAdapterFactory.discover_entry_points()
    return sorted(ArchitectureAdapterFactory._adapters)


def causal_lm_architecture(hf_config: Any) -> str:
    """The TransformerLens adapter name for a sequence-classification config's backbone.

    Found through transformers' own model_type -> CausalLM table; raises `UnsupportedArchitectureError`,
    listing what works, when TransformerLens 4 has no adapter for it.
    """
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    model_type = getattr(hf_config, "model_type", None)
    arch = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(model_type) if isinstance(model_type, str) else None
    supported = supported_causal_architectures()
    if arch is None or arch not in supported:
        seq_cls = [
            a.replace("ForCausalLM", "ForSequenceClassification").replace("LMHeadModel", "ForSequenceClassification")
            for a in supported
            if a.endswith(("ForCausalLM", "LMHeadModel"))
        ]
        raise UnsupportedArchitectureError(
            f"Architecture {model_type!r} ({getattr(hf_config, 'architectures', None)}) is not supported: "
            f"TransformerLens {_tl_version()} has no adapter for {arch or 'its causal-LM form'}. "
            f"Supported reward backbones include: {', '.join(sorted(set(seq_cls))[:60])} ... "
            "and ArmoRM's LlamaForRewardModelWithGating. Convert the checkpoint to one of these, "
            "or upgrade transformer-lens."
        )
    return arch


def _tl_version() -> str:
    import transformer_lens

    return getattr(transformer_lens, "__version__", "4.x")
