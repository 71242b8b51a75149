"""The HF `*ForSequenceClassification` layout: a decoder backbone plus a `score` Linear (TRL's `RewardTrainer`,
HF's `Trainer`, most published reward models).

TransformerLens 4 has an architecture adapter for the backbone's `*ForCausalLM` form; the bridge reuses it with its
unembedding pointed at `score`, so it wraps the checkpoint's own modules (no second copy of the weights). Recognised
by config.json `architectures` ending in `ForSequenceClassification` (or listing none); tried last, after the
layouts that claim more specific contents.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from hooked_reward.errors import UnsupportedArchitectureError
from hooked_reward.heads.base import RewardHead
from hooked_reward.heads.linear import LinearRewardHead
from hooked_reward.heads.normalization import normalization_from_config
from hooked_reward.hf_load import check_not_peft, load_hf_model
from hooked_reward.positions import PositionRule, SequenceClassifierRule
from hooked_reward.registry import CheckpointContents, LoadedCheckpoint, causal_lm_architecture, register_layout

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from hooked_reward.model import HookedRewardModel

LAYOUT = "hf_sequence_classification"


def _is_sequence_classifier(contents: CheckpointContents) -> bool:
    if contents.config is None or "reward_head" in contents.config:
        return False
    architectures = contents.architectures
    return not architectures or any(a.endswith("ForSequenceClassification") for a in architectures)


@register_layout(
    LAYOUT,
    "config.json architectures ends in ForSequenceClassification (HF, TRL RewardTrainer): the `score` Linear",
    _is_sequence_classifier,
    priority=90,
)
def load_sequence_classifier(path: Path, dtype: torch.dtype = torch.float32, **hf_kwargs: Any) -> LoadedCheckpoint:
    """`AutoModelForSequenceClassification` from `path` (nothing filled at random: `load_hf_model`)."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    hf_config = AutoConfig.from_pretrained(str(path), trust_remote_code=False)
    arch = causal_lm_architecture(hf_config)
    hf_model = load_hf_model(AutoModelForSequenceClassification, path, dtype=dtype, **hf_kwargs)
    return from_sequence_classifier(hf_model, None, arch)


def from_sequence_classifier(
    hf_model: nn.Module, tokenizer: PreTrainedTokenizerBase | None = None, arch: str | None = None
) -> LoadedCheckpoint:
    """Describe a loaded `*ForSequenceClassification` model (its `score` Linear is the head).

    A model built by OpenRLHF (`get_llm_for_sequence_regression`) is read the way OpenRLHF runs it: its head is
    the Linear at `value_head_prefix`, and with `normalize_reward` on, the rewards are `(r - mean) / std` with the
    config's `mean` and `std` (OpenRLHF's non-persistent buffers are not read: transformers 5 leaves them
    uninitialised), and its reward is read at each row's last attended token, as OpenRLHF reads it; any other
    model's at the token its own `forward` reads (`positions.SequenceClassifierRule`). An in-memory
    `peft.PeftModel` is refused with the `merge_and_unload()` fix.
    """
    check_not_peft(hf_model, "HookedRewardModel.from_hf_model")
    hf_config: Any = hf_model.config
    arch = arch or causal_lm_architecture(hf_config)
    openrlhf = any(hasattr(source, "value_head_prefix") for source in (hf_model, hf_config))
    prefix = getattr(hf_model, "value_head_prefix", None) or getattr(hf_config, "value_head_prefix", None) or "score"
    score = getattr(hf_model, prefix, None)
    if not isinstance(score, nn.Linear):
        raise UnsupportedArchitectureError(
            f"{type(hf_model).__name__} has no `{prefix}` Linear head; hooked_reward reads reward models "
            "shaped like HF's *ForSequenceClassification (or ArmoRM / value heads / OpenRLHF via their loaders)."
        )
    id2label = getattr(hf_config, "id2label", None) or {}
    names = None
    if score.out_features > 1 and id2label and not all(str(v).startswith("LABEL_") for v in id2label.values()):
        names = [str(id2label[i]) for i in range(score.out_features)]
    settings = hf_config.to_dict()
    enabled = getattr(hf_model, "normalize_reward", None)
    normalization = normalization_from_config(
        settings, f"{type(hf_model).__name__}.config", None if enabled is None else bool(enabled)
    )

    def make_head(bridge: HookedRewardModel) -> RewardHead:
        return LinearRewardHead(bridge.unembed, names, normalization)

    def position_rule(_bridge: HookedRewardModel) -> PositionRule:
        return SequenceClassifierRule(hf_model, prefix)

    rule = None if openrlhf else position_rule
    return LoadedCheckpoint(hf_model, hf_config, arch, prefix, make_head, tokenizer, rule)
