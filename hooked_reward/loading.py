"""From a checkpoint directory (or a loaded HF model) to the pieces a `HookedRewardModel` is built from.

A reward checkpoint is an HF `*ForSequenceClassification` model: a decoder backbone plus a `score` Linear.
TransformerLens 4 has an architecture adapter for the backbone's `*ForCausalLM` form; we reuse it and point its
unembedding at `score`, so the bridge wraps the checkpoint's own modules (no second copy of the weights).
Checkpoints whose head is not a `score` Linear (ArmoRM, TRL value heads) register a custom loader here.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from hooked_reward.errors import UnsupportedArchitectureError
from hooked_reward.heads.base import RewardHead
from hooked_reward.heads.linear import LinearRewardHead
from hooked_reward.hf_load import (  # noqa: F401  (read_config, load_tokenizer: public here before)
    WEIGHT_FILES,
    check_weight_files,
    load_hf_model,
    load_tokenizer,
    read_config,
    resolve_dtype,
)
from hooked_reward.positions import PositionRule, SequenceClassifierRule
from hooked_reward.registry import (  # noqa: F401  (re-exported: loading.register_loader is public)
    CONTENT_LOADERS,
    CUSTOM_LOADERS,
    LoadedCheckpoint,
    causal_lm_architecture,
    register_content_loader,
    register_loader,
    supported_causal_architectures,
)

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from hooked_reward.model import HookedRewardModel


def load_checkpoint(
    path: str | Path,
    dtype: torch.dtype | str = torch.float32,
    device_map: Any = None,
    *,
    max_memory: dict | None = None,
    offload_folder: str | Path | None = None,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    local_files_only: bool = False,
    token: str | bool | None = None,
) -> LoadedCheckpoint:
    """Load a reward checkpoint — a local directory or a hub id (`hub.resolve_checkpoint`) — without running any
    code from it (`trust_remote_code=False`). The files are checked first (`read_config`, `check_weight_files`),
    and nothing is filled at random (`load_hf_model`)."""
    from hooked_reward.hub import resolve_checkpoint

    path = resolve_checkpoint(
        path, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only, token=token
    )
    config = read_config(path)
    check_weight_files(path)
    dtype = resolve_dtype(dtype, config)
    hf_kwargs: dict[str, Any] = {"dtype": dtype}
    if device_map is not None:
        hf_kwargs["device_map"] = device_map
    if max_memory is not None:
        hf_kwargs["max_memory"] = max_memory
    if offload_folder is not None:
        hf_kwargs["offload_folder"] = str(offload_folder)
    architectures = config.get("architectures") or []
    loaders = [CUSTOM_LOADERS[a] for a in architectures if a in CUSTOM_LOADERS]
    loaders += [loader for detect, loader in CONTENT_LOADERS if detect(path, config)]
    if loaders:
        loaded = loaders[0](path, **hf_kwargs)
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
    hf_model = load_hf_model(AutoModelForSequenceClassification, path, **hf_kwargs)
    return from_sequence_classifier(hf_model, load_tokenizer(path), arch)


def from_sequence_classifier(
    hf_model: nn.Module, tokenizer: PreTrainedTokenizerBase | None = None, arch: str | None = None
) -> LoadedCheckpoint:
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

    def make_head(bridge: HookedRewardModel) -> RewardHead:
        return LinearRewardHead(bridge.unembed, names)

    def position_rule(_bridge: HookedRewardModel) -> PositionRule:
        return SequenceClassifierRule(hf_model, "score")

    return LoadedCheckpoint(hf_model, hf_config, arch, "score", make_head, tokenizer, position_rule)
