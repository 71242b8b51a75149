"""Value heads users bring: TRL's `v_head.summary` Linear and two-layer MLP heads, next to a CausalLM backbone.

Checkpoint layout (a `save_pretrained` directory of the backbone's `*ForCausalLM`, plus the head's tensors):

* **TRL** (`AutoModelForCausalLMWithValueHead.save_pretrained`): config.json is the CausalLM's, the safetensors
  add `v_head.summary.weight [1, d_model]` and `v_head.summary.bias [1]`. Recognised from the tensors alone.
  TRL's `summary_dropout_prob` dropout is the identity in eval and is ignored. Head: `ValueHead`, a Linear
  (`W_R = v_head.summary.weight`, `b_R = v_head.summary.bias`), hooks `hook_head_pre`, `unembed.hook_in/out`.
* **MLP** (`Linear -> nonlinearity -> Linear` to a scalar, stored as an `nn.Sequential`): the tensors
  `<prefix>.0.weight/bias` and `<prefix>.2.weight/bias`, and config.json must say which nonlinearity:
  `"reward_head": {"type": "mlp", "prefix": "v_head", "activation": "relu"}` (relu, gelu, gelu_tanh, tanh,
  silu). Head: `MLPValueHead`, hooks `hook_head_pre`, `hook_head_hidden_pre` (pre-activation),
  `hook_head_hidden` (post-activation). It is not affine, so it has no `W_R`; `head.linearise_at(resid)` gives
  each row's gradient direction and offset, and `cache.reward_attrs(stack, output="reward")` attributes along
  that direction (`head.readout(cache)`; exact for ReLU, whose map is affine around each input; a first-order
  approximation otherwise).
* A linear head may also be declared: `"reward_head": {"type": "linear", "prefix": "v_head.summary"}`.

The reward is read where TRL reads a score off per-token values (`get_reward`): the token before the first pad id
(the last token when the row holds none; `positions.BeforeFirstPadRule`). In memory,
`HookedRewardModel.from_value_head(causal_lm, head)` wraps an already-loaded CausalLM and a Linear / Sequential head.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn
from transformer_lens.hook_points import HookPoint

from hooked_reward.errors import CheckpointError, InputError
from hooked_reward.heads.base import HeadInputs, Readout, RewardHead, as_float
from hooked_reward.heads.linear import LinearRewardHead
from hooked_reward.hf_load import (
    check_finite_weights,
    check_not_peft,
    execution_device,
    load_hf_model,
    read_tensors,
    tensor_files,
)
from hooked_reward.positions import BeforeFirstPadRule, PositionRule
from hooked_reward.registry import CheckpointContents, LoadedCheckpoint, causal_lm_architecture, register_layout

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from hooked_reward.cache import RewardActivationCache
    from hooked_reward.model import HookedRewardModel

TRL_PREFIX = "v_head.summary"
ACTIVATIONS: dict[str, Any] = {
    "relu": F.relu,
    "gelu": F.gelu,
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "tanh": torch.tanh,
    "silu": F.silu,
}


class ValueHead(LinearRewardHead):
    """TRL's value head: `summary(reward_resid)` (dropout is the identity in eval), with `hook_head_pre`."""

    def __init__(self, summary: nn.Module, output_names: list[str] | None = None) -> None:
        super().__init__(summary, output_names or ["value"])
        self.hook_head_pre = HookPoint()

    def forward(self, reward_resid: Float[Tensor, "batch d_model"], inputs: HeadInputs) -> Tensor:
        return super().forward(self.hook_head_pre(reward_resid), inputs)

    def hook_points(self) -> dict[str, HookPoint]:
        return {"hook_head_pre": self.hook_head_pre}


@dataclass
class Linearisation:
    """reward ≈ reward_resid · direction + offset around each row's input (exact there)."""

    direction: Float[Tensor, "batch d_model"]
    offset: Float[Tensor, " batch"]


class MLPValueHead(RewardHead):
    """reward = second(act(first(reward_resid))): `first` Linear d_model -> hidden, `second` Linear hidden -> 1.

    Hooks: `hook_head_pre` [batch, d_model], `hook_head_hidden_pre` [batch, hidden] (before the nonlinearity),
    `hook_head_hidden` [batch, hidden] (after). `linear_map()` is None: use `linearise_at`.
    """

    supports_weight_processing = False  # no single Linear to fold ln_final into
    _mlp: nn.Sequential  # set with object.__setattr__: the bridge's original_model owns it

    def __init__(self, mlp: nn.Sequential, activation: str, output_names: list[str] | None = None) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise CheckpointError(f"Unknown MLP head activation {activation!r}; use one of {sorted(ACTIVATIONS)}.")
        object.__setattr__(self, "_mlp", mlp)  # owned by the bridge's original_model
        self.activation = activation
        if self.second.out_features != 1:
            raise CheckpointError(f"The MLP head's last Linear has {self.second.out_features} outputs; expected 1.")
        self.output_names = output_names or ["reward"]
        self.hook_head_pre = HookPoint()
        self.hook_head_hidden_pre = HookPoint()
        self.hook_head_hidden = HookPoint()

    @property
    def first(self) -> nn.Linear:
        return cast(nn.Linear, self._mlp[0])  # checked where the Sequential is built (Linear, act, Linear)

    @property
    def second(self) -> nn.Linear:
        return cast(nn.Linear, self._mlp[2])

    def forward(self, reward_resid: Float[Tensor, "batch d_model"], inputs: HeadInputs) -> Float[Tensor, " batch"]:  # noqa: ARG002 (the RewardHead interface's signature)
        x = self.hook_head_pre(reward_resid.to(self.first.weight.dtype))
        pre = self.hook_head_hidden_pre(self.first(x))
        hidden = self.hook_head_hidden(ACTIVATIONS[self.activation](pre))
        return self.squeeze_single(self.second(hidden))

    def hook_points(self) -> dict[str, HookPoint]:
        return {
            "hook_head_pre": self.hook_head_pre,
            "hook_head_hidden_pre": self.hook_head_hidden_pre,
            "hook_head_hidden": self.hook_head_hidden,
        }

    def linearise_at(self, reward_resid: Float[Tensor, "batch d_model"]) -> Linearisation:
        """Each row's gradient of the reward w.r.t. `reward_resid` (ln_final's output), and the offset that makes
        `reward_resid · direction + offset` equal the reward at that input."""
        x = as_float(reward_resid).requires_grad_(True)
        w1, b1 = as_float(self.first.weight), as_float(self.first.bias)
        w2, b2 = as_float(self.second.weight), as_float(self.second.bias)
        with torch.enable_grad():
            out = (ACTIVATIONS[self.activation](x @ w1.T + b1) @ w2.T + b2)[:, 0]
            (direction,) = torch.autograd.grad(out.sum(), x)
        return Linearisation(direction, out.detach() - (x.detach() * direction).sum(-1))

    readout_kind = "linearised"

    def readout_hooks(self) -> list[str]:
        return ["hook_reward_resid"]

    def readout(self, cache: RewardActivationCache | None = None, *, normed: Tensor | None = None) -> Readout:
        """The head linearised at the run's own point: `normed` (ln_final's output, `[batch, d_model]` or
        `[batch, pos, d_model]`), else the cache's `hook_reward_resid`; direction and offset per row (and
        position). Exact at that point, and everywhere for ReLU around it."""
        if normed is None:
            if cache is None or "hook_reward_resid" not in cache.cache_dict:
                raise InputError(
                    "A linearised head's readout needs 'hook_reward_resid' in the cache (the point it is "
                    "linearised at); include it in names_filter."
                )
            normed = cache["hook_reward_resid"]
        lin = self.linearise_at(normed.reshape(-1, normed.shape[-1]))
        lead = normed.shape[:-1]
        return Readout(
            lin.direction.reshape(*lead, 1, normed.shape[-1]),
            lin.offset.reshape(*lead, 1),
            self.readout_names(),
            "linearised",
        )

    def values_at(self, normed: Float[Tensor, "... d_model"], readout: Readout) -> Float[Tensor, "... 1"]:  # noqa: ARG002 (the RewardHead interface's signature)
        """The real MLP on final-normed residuals (not its linearisation), without firing the head's hooks."""
        x = normed.to(self.first.weight.dtype)
        with torch.no_grad():
            out = self.second(ACTIVATIONS[self.activation](self.first(x)))
        return out.to(torch.float32)


# ---------------------------------------------------------------------------------------------- loading
def _head_spec(path: Path, config: dict) -> dict | None:
    """The head declared in config.json's `reward_head`, or TRL's `v_head.summary` found in the tensors."""
    spec = config.get("reward_head")
    if spec is not None:
        if not isinstance(spec, dict) or spec.get("type") not in ("linear", "mlp"):
            raise CheckpointError(
                f"{str(path)!r}: config.json reward_head must be {{'type': 'linear' | 'mlp', 'prefix': ...}}; "
                f"got {spec!r}."
            )
        return spec
    names = set(tensor_files(path))
    if f"{TRL_PREFIX}.weight" in names:
        return {"type": "linear", "prefix": TRL_PREFIX}
    if "v_head.0.weight" in names and "v_head.2.weight" in names:
        raise CheckpointError(
            f"{str(path)!r} has an MLP value head (v_head.0 / v_head.2) but config.json does not say its "
            'nonlinearity: add "reward_head": {"type": "mlp", "prefix": "v_head", "activation": "relu"} '
            f"(one of {sorted(ACTIVATIONS)})."
        )
    return None


def _is_value_head_checkpoint(contents: CheckpointContents) -> bool:
    config = contents.config
    if config is None:
        return False
    if any(a.endswith("ForSequenceClassification") for a in contents.architectures) and "reward_head" not in config:
        return False
    return _head_spec(contents.path, config) is not None


def _linear_from(tensors: dict[str, Tensor], prefix: str, path: Path) -> nn.Linear:
    weight = tensors.get(f"{prefix}.weight")
    if weight is None:
        raise CheckpointError(f"{str(path)!r}: tensor {prefix + '.weight'!r} is missing from the checkpoint.")
    bias = tensors.get(f"{prefix}.bias")
    linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        linear.weight.copy_(weight)
        if bias is not None:
            linear.bias.copy_(bias)
    return linear


def _attach(module: nn.Module, dotted: str, child: nn.Module) -> None:
    parent = module
    *parents, last = dotted.split(".")
    for name in parents:
        if not hasattr(parent, name):
            parent.add_module(name, nn.Module())
        parent = getattr(parent, name)
    parent.add_module(last, child)


@register_layout(
    "trl_value_head",
    "tensors v_head.summary.* (TRL AutoModelForCausalLMWithValueHead), or config.json reward_head declares the head",
    _is_value_head_checkpoint,
    priority=40,
)
def load_value_head_checkpoint(path: Path, dtype: torch.dtype = torch.float32, **hf_kwargs: Any) -> LoadedCheckpoint:
    """A CausalLM backbone with a TRL / declared linear or MLP value head (see the module docstring)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = json.loads((path / "config.json").read_text())
    spec = _head_spec(path, config)
    assert spec is not None
    prefix = spec.get("prefix", TRL_PREFIX if spec["type"] == "linear" else "v_head")
    names = set(tensor_files(path))
    wanted = [n for n in names if n.startswith(prefix + ".")]
    if not wanted:
        raise CheckpointError(f"{str(path)!r}: no tensors under {prefix!r} for the declared value head.")
    tensors = read_tensors(path, wanted)
    hf_config = AutoConfig.from_pretrained(str(path), trust_remote_code=False)
    arch = causal_lm_architecture(hf_config)
    # The reward never reads the LM head, so a checkpoint saved without it is complete.
    causal_lm = load_hf_model(
        AutoModelForCausalLM,
        path,
        consumed=(prefix + ".",),
        unused=("lm_head.",),
        config=hf_config,
        dtype=dtype,
        **hf_kwargs,
    )
    if spec["type"] == "linear":
        head_module: nn.Module = _linear_from(tensors, prefix, path)
    else:
        activation = spec.get("activation")
        if activation is None:
            raise CheckpointError(f"{str(path)!r}: config.json reward_head lacks 'activation' for its MLP head.")
        head_module = nn.Sequential(
            _linear_from(tensors, f"{prefix}.0", path), nn.Identity(), _linear_from(tensors, f"{prefix}.2", path)
        )
    check_finite_weights(head_module, path)
    head_module.to(device=execution_device(causal_lm), dtype=dtype)
    return _loaded(causal_lm, head_module, arch, prefix, spec.get("activation"), spec.get("output_names"))


def _loaded(
    causal_lm: nn.Module,
    head_module: nn.Module,
    arch: str,
    prefix: str,
    activation: str | None,
    output_names: list[str] | None = None,
    tokenizer: PreTrainedTokenizerBase | None = None,
) -> LoadedCheckpoint:
    _attach(causal_lm, prefix, head_module)
    if isinstance(head_module, nn.Linear):

        def make_head(bridge: HookedRewardModel) -> RewardHead:
            return ValueHead(bridge.unembed, output_names)

        return LoadedCheckpoint(causal_lm, causal_lm.config, arch, prefix, make_head, tokenizer, trl_position_rule)

    def make_mlp(_bridge: HookedRewardModel) -> RewardHead:
        return MLPValueHead(cast(nn.Sequential, head_module), activation or "relu", output_names)

    return LoadedCheckpoint(causal_lm, causal_lm.config, arch, None, make_mlp, tokenizer, trl_position_rule)


def trl_position_rule(bridge: HookedRewardModel) -> PositionRule:
    """TRL's rule for reading a score off per-token values (`trl`'s `get_reward`): the token before the first pad
    id, with the pad id of the model's tokenizer (what TRL passes), else of its config."""

    def pad_id() -> int | None:
        pad = getattr(bridge.tokenizer, "pad_token_id", None)
        return pad if pad is not None else getattr(bridge.original_model.config, "pad_token_id", None)

    return BeforeFirstPadRule(pad_id, "TRL's get_reward")


def value_head_checkpoint(
    causal_lm: nn.Module,
    head: nn.Module,
    tokenizer: PreTrainedTokenizerBase | None = None,
    activation: str | None = None,
) -> LoadedCheckpoint:
    """What `HookedRewardModel.from_value_head` builds from: a loaded `*ForCausalLM` and its value head (modified
    in place, not copied).

    `head` is an `nn.Linear` (TRL's `v_head.summary`) or an `nn.Sequential(Linear, act, Linear)`; for the MLP,
    `activation` names its nonlinearity (relu, gelu, gelu_tanh, tanh, silu). An in-memory `peft.PeftModel` is
    refused with the `merge_and_unload()` fix.
    """
    check_not_peft(causal_lm, "HookedRewardModel.from_value_head")
    if isinstance(head, nn.Sequential):
        if activation is None:
            raise InputError("Pass activation= (relu, gelu, gelu_tanh, tanh, silu) for an MLP value head.")
        if len(head) != 3 or not isinstance(head[0], nn.Linear) or not isinstance(head[2], nn.Linear):
            raise InputError("An MLP value head must be nn.Sequential(Linear, nonlinearity, Linear).")
        prefix = "v_head"
    elif isinstance(head, nn.Linear):
        prefix = TRL_PREFIX
    else:
        raise InputError(f"Expected an nn.Linear or nn.Sequential value head, got {type(head).__name__}.")
    return _loaded(causal_lm, head, causal_lm_architecture(causal_lm.config), prefix, activation, None, tokenizer)
