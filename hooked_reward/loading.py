"""From a checkpoint directory (or a loaded HF model) to the pieces a `HookedRewardModel` is built from.

A reward checkpoint is an HF `*ForSequenceClassification` model: a decoder backbone plus a `score` Linear.
TransformerLens 4 has an architecture adapter for the backbone's `*ForCausalLM` form; we reuse it and point its
unembedding at `score`, so the bridge wraps the checkpoint's own modules (no second copy of the weights).
Checkpoints whose head is not a `score` Linear (ArmoRM, TRL value heads) register a custom loader here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hooked_reward.errors import CheckpointError, UnsupportedArchitectureError
from hooked_reward.heads.base import RewardHead
from hooked_reward.heads.linear import LinearRewardHead
from hooked_reward.registry import (  # noqa: F401  (re-exported: loading.register_loader is public)
    CONTENT_LOADERS,
    CUSTOM_LOADERS,
    LoadedCheckpoint,
    causal_lm_architecture,
    register_content_loader,
    register_loader,
    supported_causal_architectures,
)

WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


GENERIC_TOKENIZER_CLASSES = ("TokenizersBackend", "PreTrainedTokenizerFast")


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
