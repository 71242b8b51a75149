"""The registry of reward-head loaders, and which backbones TransformerLens 4 bridges.

Core, below both `heads` and `loading`: a head module registers its loader here (`register_loader` by config.json
`architectures`, `register_content_loader` by the checkpoint's contents), and `loading.load_checkpoint` reads the
registry. Nothing here imports a head or the loader, so the two never import each other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from hooked_reward.errors import UnsupportedArchitectureError

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
    (`hooked_reward.positions`); None reads each row's last attended token.
    """

    module: nn.Module
    hf_config: Any
    causal_lm_architecture: str
    head_path: str | None
    make_head: Callable[[Any], RewardHead]
    tokenizer: PreTrainedTokenizerBase | None = None
    position_rule: Callable[[Any], PositionRule | None] | None = None


# config.json "architectures" entry -> loader(path, dtype=, **hf_kwargs) -> LoadedCheckpoint (hf_kwargs: device_map,
# max_memory, offload_folder, passed on to HF's from_pretrained)
CUSTOM_LOADERS: dict[str, Callable[..., LoadedCheckpoint]] = {}


def register_loader(architecture: str) -> Callable:
    """Decorator: load checkpoints whose config lists `architecture` with the decorated function."""

    def wrap(fn: Callable[..., LoadedCheckpoint]) -> Callable[..., LoadedCheckpoint]:
        CUSTOM_LOADERS[architecture] = fn
        return fn

    return wrap


# (detect(path, config_dict) -> bool, loader): checkpoints known by their contents rather than by their
# "architectures" entry, e.g. TRL value-head checkpoints, whose config is the backbone's `*ForCausalLM` one.
CONTENT_LOADERS: list[tuple[Callable[[Path, dict], bool], Callable[..., LoadedCheckpoint]]] = []


def register_content_loader(detect: Callable[[Path, dict], bool]) -> Callable:
    """Decorator: load checkpoints for which `detect(path, config)` is true with the decorated function."""

    def wrap(fn: Callable[..., LoadedCheckpoint]) -> Callable[..., LoadedCheckpoint]:
        CONTENT_LOADERS.append((detect, fn))
        return fn

    return wrap


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
    arch = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(model_type)
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
