"""OpenRLHF reward models, loaded from the layout OpenRLHF saves (0.11: `get_llm_for_sequence_regression` with
`_get_reward_model`, saved by its strategy's `save_model`), without OpenRLHF.

What OpenRLHF saves: `save_pretrained` of its `RewardModel` class (config.json `architectures: ["RewardModel"]`,
`model_type` the base model's), i.e. the base model (`AutoModel`'s class, at its `base_model_prefix`: `model.` for
Llama / Qwen / Mistral / Gemma, `transformer.` for GPT-2) and one bias-free Linear `hidden_size -> 1` at
`value_head_prefix` (`score` by default since 0.4, `value_head` before; written into config.json by `train_rm`).
config.json also holds `normalize_reward` and, once the reward trainer has evaluated, the evaluation rewards'
`mean` and `std`.

What OpenRLHF computes: the Linear on the base model's last hidden state at each row's last attended token (from the
attention mask: the position rule is the library's default, `position_rule=None`), `r`,
and with `normalize_reward` on (in eval mode) `(r - mean) / std`. Here the base model is bridged as usual, the Linear
is the `unembed`, and the normalisation is a hookable part of the head (`heads.normalization`:
`hook_reward_raw` holds `r`, `hook_reward` the normalised reward; `W_R = W / std`, `b_R = -mean / std`). The
statistics are read from config.json, where OpenRLHF's trainer wrote them (its own class, under transformers 5,
leaves the non-persistent `mean`/`std` buffers uninitialised). `normalize_reward=` at load overrides the config's
flag, as OpenRLHF's `--reward.normalize_enable` does when it serves a reward model.

OpenRLHF critics (`CriticModel`: per-token values) are refused: they are not reward models.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from hooked_reward.errors import CheckpointError
from hooked_reward.heads.base import RewardHead
from hooked_reward.heads.linear import LinearRewardHead
from hooked_reward.heads.normalization import RewardNormalization, normalization_from_config
from hooked_reward.hf_load import check_finite_weights, execution_device, load_hf_model, read_json, read_tensors
from hooked_reward.registry import CheckpointContents, LoadedCheckpoint, causal_lm_architecture, register_layout

if TYPE_CHECKING:
    from hooked_reward.model import HookedRewardModel

LAYOUT = "openrlhf"
REWARD_ARCHITECTURE = "RewardModel"
CRITIC_ARCHITECTURE = "CriticModel"
#: `value_head_prefix` values OpenRLHF has used by default (0.4 onwards: "score"; before: "value_head").
DEFAULT_PREFIXES = ("score", "value_head")


class OpenRLHFRewardModule(nn.Module):
    """OpenRLHF's `RewardModel` module tree under its own names: the base model at `base_model_prefix` (what the
    bridge wraps) and the head Linear at `value_head_prefix`."""

    def __init__(self, backbone: nn.Module, config: Any, value_head_prefix: str, head: nn.Linear) -> None:
        super().__init__()
        self.config = config
        self.base_model_prefix = getattr(backbone, "base_model_prefix", "model") or "model"
        self.value_head_prefix = value_head_prefix
        setattr(self, self.base_model_prefix, backbone)
        setattr(self, value_head_prefix, head)

    def get_input_embeddings(self) -> nn.Module:
        """The base model's token embedding (what `hf_load.check_vocabulary` checks the tokenizer against)."""
        return getattr(self, self.base_model_prefix).get_input_embeddings()


def _is_openrlhf(contents: CheckpointContents) -> bool:
    config = contents.config
    if config is None:
        return False
    return (
        "value_head_prefix" in config
        or "normalize_reward" in config
        or any(a in (REWARD_ARCHITECTURE, CRITIC_ARCHITECTURE) for a in contents.architectures)
    )


def _value_head_prefix(contents: CheckpointContents) -> str:
    """config.json's `value_head_prefix`, else the one of OpenRLHF's default prefixes whose `.weight` is saved."""
    config = contents.config or {}
    where = f"{str(contents.path)!r}"
    if "value_head_prefix" in config:
        prefix = config["value_head_prefix"]
        if not isinstance(prefix, str) or f"{prefix}.weight" not in contents.tensors:
            raise CheckpointError(
                f"{where}: config.json value_head_prefix={prefix!r}, but the weights hold no {prefix}.weight "
                f"(tensors outside the backbone: {contents.head_like_tensors() or 'none'}). Fix value_head_prefix "
                "to the head's name, or save the complete model."
            )
        return prefix
    found = [p for p in DEFAULT_PREFIXES if f"{p}.weight" in contents.tensors]
    if len(found) != 1:
        raise CheckpointError(
            f"{where}: an OpenRLHF reward model without value_head_prefix in config.json, and "
            f"{'both' if found else 'neither'} of {[p + '.weight' for p in DEFAULT_PREFIXES]} in its weights "
            f"(tensors outside the backbone: {contents.head_like_tensors() or 'none'}). Add "
            '"value_head_prefix": "<name of the head Linear>" to config.json.'
        )
    return found[0]


@register_layout(
    LAYOUT,
    "config.json has value_head_prefix or normalize_reward, or architectures RewardModel (OpenRLHF): the "
    "`score`/`value_head` Linear, then (r - mean) / std when normalize_reward",
    _is_openrlhf,
    priority=30,
    options=("normalize_reward",),
)
def load_openrlhf(
    path: Path, dtype: torch.dtype = torch.float32, normalize_reward: bool | None = None, **hf_kwargs: Any
) -> LoadedCheckpoint:
    """An OpenRLHF reward model directory (see the module docstring); `normalize_reward` overrides config.json's."""
    from transformers import AutoConfig, AutoModel

    contents = CheckpointContents(path, read_json(path / "config.json"))
    if CRITIC_ARCHITECTURE in contents.architectures:
        raise CheckpointError(
            f"{str(path)!r} is an OpenRLHF critic (CriticModel: a value per token for PPO), not a reward model. "
            "Load the reward model OpenRLHF's train_rm saved (architectures RewardModel)."
        )
    prefix = _value_head_prefix(contents)
    names = [f"{prefix}.weight"] + ([f"{prefix}.bias"] if f"{prefix}.bias" in contents.tensors else [])
    tensors = read_tensors(path, names)
    hf_config = AutoConfig.from_pretrained(str(path), trust_remote_code=False)
    arch = causal_lm_architecture(hf_config)
    weight = tensors[f"{prefix}.weight"]
    if weight.ndim != 2 or weight.shape[1] != hf_config.hidden_size:
        raise CheckpointError(
            f"{str(path)!r}: {prefix}.weight has shape {tuple(weight.shape)}; expected (1, hidden_size="
            f"{hf_config.hidden_size}) for OpenRLHF's value head. config.json does not describe these weights."
        )
    normalization = normalization_from_config(contents.config or {}, f"{path / 'config.json'}", normalize_reward)
    backbone = load_hf_model(AutoModel, path, consumed=(f"{prefix}.",), config=hf_config, dtype=dtype, **hf_kwargs)
    head = nn.Linear(weight.shape[1], weight.shape[0], bias=f"{prefix}.bias" in tensors)
    with torch.no_grad():
        head.weight.copy_(weight)
        if head.bias is not None:
            head.bias.copy_(tensors[f"{prefix}.bias"])
    check_finite_weights(head, path)
    head.to(device=execution_device(backbone), dtype=dtype)
    module = OpenRLHFRewardModule(backbone, hf_config, prefix, head).eval()
    return _loaded(module, arch, prefix, normalization)


def _loaded(module: nn.Module, arch: str, prefix: str, normalization: RewardNormalization | None) -> LoadedCheckpoint:
    def make_head(bridge: HookedRewardModel) -> RewardHead:
        return LinearRewardHead(bridge.unembed, None, normalization)

    return LoadedCheckpoint(module, module.config, arch, prefix, make_head, layout=LAYOUT)
