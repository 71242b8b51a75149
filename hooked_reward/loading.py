"""From a checkpoint directory (or a loaded HF model) to the pieces a `HookedRewardModel` is built from.

A reward checkpoint is an HF `*ForSequenceClassification` model: a decoder backbone plus a `score` Linear.
TransformerLens 4 has an architecture adapter for the backbone's `*ForCausalLM` form; we reuse it and point its
unembedding at `score`, so the bridge wraps the checkpoint's own modules (no second copy of the weights).
Checkpoints whose head is not a `score` Linear (ArmoRM, TRL value heads) register a custom loader here.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hooked_reward.errors import CheckpointError, UnsupportedArchitectureError
from hooked_reward.heads.base import RewardHead

WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


@dataclass
class LoadedCheckpoint:
    """An HF module tree ready to bridge, and how to build its reward head once bridged.

    `module` has the HF layout the CausalLM adapter expects for the backbone (`model.layers...` for Llama,
    `transformer.h...` for GPT-2). `head_path` names the Linear the adapter's `unembed` is pointed at
    (`None` when the head has no single Linear). `make_head(bridge)` builds the `RewardHead`.
    """

    module: nn.Module
    hf_config: Any
    causal_lm_architecture: str
    head_path: str | None
    make_head: Callable[[Any], RewardHead]
    tokenizer: Any = None


GENERIC_TOKENIZER_CLASSES = ("TokenizersBackend", "PreTrainedTokenizerFast")

# config.json "architectures" entry -> loader(path, dtype, device_map) -> LoadedCheckpoint
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


def read_config(path: Path) -> dict:
    """config.json of a checkpoint directory, with clear errors for a missing directory or file."""
    if not path.exists():
        raise CheckpointError(
            f"Checkpoint path {str(path)!r} does not exist. Pass a directory saved with "
            "`save_pretrained` (config.json + weights), or load the HF model yourself and use "
            "`HookedRewardModel.from_hf_model(model, tokenizer=tok)`."
        )
    if not path.is_dir():
        raise CheckpointError(f"Checkpoint path {str(path)!r} is a file; pass its directory.")
    config_file = path / "config.json"
    if not config_file.exists():
        raise CheckpointError(
            f"No config.json in {str(path)!r}: not an HF checkpoint directory. "
            "Save the model with `model.save_pretrained(dir)`."
        )
    if not any((path / f).exists() for f in WEIGHT_FILES):
        raise CheckpointError(
            f"No weights in {str(path)!r} (looked for {', '.join(WEIGHT_FILES)}). "
            "The directory has a config but no model weights; re-save with `save_pretrained`."
        )
    return json.loads(config_file.read_text())


def load_tokenizer(path: Path) -> Any:
    """The checkpoint's tokenizer, or None when the directory ships none (token-id input still works)."""
    from transformers import AutoTokenizer

    if not any((path / f).exists() for f in TOKENIZER_FILES):
        return None
    config_file = path / "tokenizer_config.json"
    declared = json.loads(config_file.read_text()).get("tokenizer_class") if config_file.exists() else None
    if declared in GENERIC_TOKENIZER_CLASSES and (path / "tokenizer.json").exists():
        # A generic fast tokenizer: AutoTokenizer (transformers 5) would substitute the class of the model type
        # (e.g. Qwen2Tokenizer) and rebuild its pre-tokenizer, changing the token ids.
        from transformers import PreTrainedTokenizerFast

        return PreTrainedTokenizerFast.from_pretrained(str(path))
    return AutoTokenizer.from_pretrained(str(path), trust_remote_code=False)


def load_checkpoint(path: str | Path, dtype: torch.dtype = torch.float32, device_map: Any = None) -> LoadedCheckpoint:
    """Load a reward checkpoint from disk without running any code from it (`trust_remote_code=False`)."""
    path = Path(path)
    config = read_config(path)
    architectures = config.get("architectures") or []
    loaders = [CUSTOM_LOADERS[a] for a in architectures if a in CUSTOM_LOADERS]
    loaders += [loader for detect, loader in CONTENT_LOADERS if detect(path, config)]
    if loaders:
        loaded = loaders[0](path, dtype=dtype, device_map=device_map)
        if loaded.tokenizer is None:
            loaded.tokenizer = load_tokenizer(path)
        return loaded
    if architectures and not any(a.endswith("ForSequenceClassification") for a in architectures):
        raise UnsupportedArchitectureError(
            f"{str(path)!r} holds a {architectures} checkpoint, not a reward model: expected a "
            "`*ForSequenceClassification` (score head) or a registered reward head "
            f"({', '.join(CUSTOM_LOADERS) or 'none registered'})."
        )
    from transformers import AutoConfig, AutoModelForSequenceClassification

    hf_config = AutoConfig.from_pretrained(str(path), trust_remote_code=False)
    arch = causal_lm_architecture(hf_config)
    kwargs: dict[str, Any] = {"dtype": dtype, "trust_remote_code": False}
    if device_map is not None:
        kwargs["device_map"] = device_map
    try:
        hf_model = AutoModelForSequenceClassification.from_pretrained(str(path), **kwargs)
    except OSError as err:
        raise CheckpointError(f"Could not read the weights in {str(path)!r}: {err}") from err
    return from_sequence_classifier(hf_model, load_tokenizer(path), arch)


def from_sequence_classifier(hf_model: nn.Module, tokenizer: Any = None, arch: str | None = None) -> LoadedCheckpoint:
    """Describe a loaded `*ForSequenceClassification` model (its `score` Linear is the head)."""
    from hooked_reward.heads.linear import LinearRewardHead

    hf_config = hf_model.config
    arch = arch or causal_lm_architecture(hf_config)
    score = getattr(hf_model, "score", None)
    if not isinstance(score, nn.Linear):
        raise UnsupportedArchitectureError(
            f"{type(hf_model).__name__} has no `score` Linear head; hooked_reward reads reward models "
            "shaped like HF's *ForSequenceClassification (or ArmoRM / value heads via their loaders)."
        )
    id2label = getattr(hf_config, "id2label", None) or {}
    names = None
    if score.out_features > 1 and id2label and not all(str(v).startswith("LABEL_") for v in id2label.values()):
        names = [str(id2label[i]) for i in range(score.out_features)]

    def make_head(bridge: Any) -> RewardHead:
        return LinearRewardHead(bridge.unembed, names)

    return LoadedCheckpoint(hf_model, hf_config, arch, "score", make_head, tokenizer)
