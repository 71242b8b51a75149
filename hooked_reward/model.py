"""HookedRewardModel: a reward checkpoint as one TransformerLens hook graph, with `W_R` in place of `W_U`.

The transformer itself is TransformerLens 4's `TransformerBridge` over the checkpoint's own HF modules (TL and
HF own attention, rotary, soft-capping and norms). What this module adds is what differs for reward models:

    tokens, attention_mask ─▶ bridge backbone (embed ─▶ blocks ─▶ ln_final)
        ─▶ gather at reward_pos (the checkpoint's own rule, `positions`) ─▶ hook_reward_resid [batch, d_model]
        ─▶ reward head (score Linear: W_R, b_R | ArmoRM | value heads) ─▶ hook_reward ─▶ rewards
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import hooked_reward._hf_logging  # noqa: F401  (before TransformerLens, which silences HF's logger)

# isort: split
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, overload

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn
from transformer_lens.hook_points import HookPoint
from transformer_lens.model_bridge import TransformerBridge
from transformer_lens.model_bridge.exceptions import StopAtLayerException
from transformer_lens.model_bridge.generalized_components import UnembeddingBridge
from transformer_lens.utilities.slice import Slice

from hooked_reward import inputs as _inputs
from hooked_reward.bridge_build import build_bridge, scan_hook_points
from hooked_reward.cache import CacheRecorder, RewardActivationCache
from hooked_reward.concurrency import serialise_runs
from hooked_reward.errors import CheckpointError, InputError, RewardPositionWarning, unknown_hook_error
from hooked_reward.final_norm import fold_final_norm, norm_gain_bias
from hooked_reward.finite import NanPolicy, apply_nan_policy, check_nan_policy, non_finite_rows
from hooked_reward.fused_attention import install_fused_attention, pattern_rows, set_fused_attention, split_pattern_rows
from hooked_reward.heads.base import HeadInputs, Readout, RewardHead, as_float
from hooked_reward.hf_load import check_vocabulary
from hooked_reward.hook_checks import check_hook_outputs
from hooked_reward.hook_registry import add_hook_points
from hooked_reward.inputs import ModelInputs, NamesFilter, PositionsArg, TextOrTokens
from hooked_reward.loading import LoadedCheckpoint, from_sequence_classifier, load_checkpoint
from hooked_reward.names import REWARD, REWARD_RESID
from hooked_reward.positions import (
    PositionRule,
    gather_at_positions,
    last_attended,
    position_ids_from_mask,
    reward_positions,
)
from hooked_reward.tl_compat import (
    PASSED_BOOT_ARGS,
    UNSUPPORTED_BOOT_ARGS,
    check_boot_args,
    check_forward_kwargs,
    check_return_type,
    no_vocabulary_error,
    vocabulary_caller,
)
from hooked_reward.unhooked import install_unhooked_shortcuts

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

REWARD_HOOKS = (REWARD_RESID, REWARD)


def unembed_at_head(head_path: str | None) -> Callable[[Any], None]:
    """An adapter hook that bridges the reward head (`head_path`, a Linear) as `unembed`, or, for heads without a
    single Linear, drops `unembed`: the head is attached after the bridge is built."""

    def point_unembed_at_head(adapter: Any) -> None:
        if head_path is None:
            adapter.component_mapping.pop("unembed", None)
        else:
            adapter.component_mapping["unembed"] = UnembeddingBridge(name=head_path, config=adapter.cfg)

    return point_unembed_at_head


class HookedRewardModel(TransformerBridge):
    """A TransformerBridge whose output is a reward: `Float[Tensor, " batch"]` or `[batch, n_outputs]`.

    Build it with `from_pretrained(dir)` or `from_hf_model(model, tokenizer=tok)`. Everything TransformerLens
    users know works (`run_with_cache`, `run_with_hooks`, `hooks()`, `W_Q`, `blocks[l].attn`, the cache's
    `decompose_resid`...). Reward-specific: `W_R`, `b_R`, their final-norm-folded forms `W_R_eff`, `b_R_eff`,
    `reward_positions(mask, tokens)`, `hook_reward_resid`, `hook_reward`, and `cache.reward_attrs(stack)`.
    """

    head: RewardHead
    hook_reward_resid: HookPoint
    hook_reward: HookPoint
    # The checkpoint's own tokenizer; BridgeCore annotates the attribute as None (its class default).
    _tokenizer: PreTrainedTokenizerBase | None  # type: ignore[assignment]
    max_length: int | None = None
    """Default truncation of text inputs in tokens (`tokenize`: the prompt side is cut); None keeps whole texts."""

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        dtype: torch.dtype | str = torch.float32,
        device_map: Any = None,
        max_memory: dict | None = None,
        offload_folder: str | Path | None = None,
        tokenizer: PreTrainedTokenizerBase | None = None,
        fold_ln: bool = False,
        center_writing_weights: bool = False,
        revision: str | None = None,
        cache_dir: str | Path | None = None,
        local_files_only: bool = False,
        token: str | bool | None = None,
        normalize_reward: bool | None = None,
        base_model: str | Path | None = None,
    ) -> HookedRewardModel:
        """Load a reward checkpoint — a local directory (config.json + safetensors) or a Hugging Face Hub id
        (`"org/name"`) — never running code from it.

        Every layout of docs/architectures.md loads (HF `*ForSequenceClassification`, ArmoRM, TRL value heads,
        OpenRLHF reward models, PEFT adapters merged into their base). `normalize_reward` overrides an OpenRLHF
        config's (True: rewards `(r - mean) / std`; False: the raw score `r`); `base_model` is a PEFT adapter's base
        (directory or hub id) when `adapter_config.json`'s does not exist here.

        Hub ids are resolved as `transformers` does (`revision`, `cache_dir`, `local_files_only`, `token`; the
        `HF_HOME` / `HF_HUB_OFFLINE` / `HF_TOKEN` environment), see `hooked_reward.hub`. `dtype` is a torch dtype,
        its name, or "auto" (the checkpoint's own). `device_map` ("auto", "cuda", a dict), `max_memory` and
        `offload_folder` are passed to HF (accelerate places or offloads the layers). `fold_ln` /
        `center_writing_weights` apply TransformerLens's weight processing (see `process_weights`); rewards are
        unchanged by it.

        Nothing is filled at random: a weight missing from the files, or of the wrong shape, raises
        `CheckpointError` naming it; unused weights in the files are listed in a warning; corrupt files, invalid
        JSON, an unknown `model_type` and non-finite weights raise `CheckpointError` naming the file or tensor.
        """
        loaded = load_checkpoint(
            path,
            dtype=dtype,
            device_map=device_map,
            max_memory=max_memory,
            offload_folder=offload_folder,
            revision=revision,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
            token=token,
            normalize_reward=normalize_reward,
            base_model=base_model,
        )
        if tokenizer is not None:
            loaded.tokenizer = tokenizer
        model = cls._from_loaded(loaded, model_name=str(path))
        if fold_ln or center_writing_weights:
            model.process_weights(fold_ln=fold_ln, center_writing_weights=center_writing_weights)
        return model

    @classmethod
    def from_hf_model(cls, hf_model: nn.Module, tokenizer: PreTrainedTokenizerBase | None = None) -> HookedRewardModel:
        """Wrap an already-loaded HF `*ForSequenceClassification` model (modified in place, not copied). A tokenizer
        with ids beyond the model's embedding is refused here (`hf_load.check_vocabulary`)."""
        check_vocabulary(hf_model, tokenizer, type(hf_model).__name__, fix="Pass the model's own tokenizer.")
        return cls._from_loaded(from_sequence_classifier(hf_model, tokenizer), model_name=type(hf_model).__name__)

    @classmethod
    def from_value_head(
        cls,
        causal_lm: nn.Module,
        head: nn.Module,
        *,
        tokenizer: PreTrainedTokenizerBase | None = None,
        activation: str | None = None,
    ) -> HookedRewardModel:
        """Wrap a loaded `*ForCausalLM` and its value head (modified in place, not copied): `head` is an
        `nn.Linear` (TRL's `v_head.summary`) or `nn.Sequential(Linear, act, Linear)` with `activation` naming
        its nonlinearity (relu, gelu, gelu_tanh, tanh, silu)."""
        from hooked_reward.heads import value_head_checkpoint

        loaded = value_head_checkpoint(causal_lm, head, tokenizer, activation)
        return cls._from_loaded(loaded, model_name=type(causal_lm).__name__)

    @classmethod
    def boot_transformers(
        cls,
        model_name: str | Path,
        hf_config_overrides: dict | None = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype = torch.float32,
        tokenizer: PreTrainedTokenizerBase | None = None,
        load_weights: bool = True,
        trust_remote_code: bool = False,
        model_class: Any = None,
        hf_model: nn.Module | None = None,
        device_map: Any = None,
        **kwargs: Any,
    ) -> HookedRewardModel:
        """TransformerLens 4's entry point, for a reward model: `from_pretrained(model_name, dtype=, device_map=,
        tokenizer=, revision=, max_memory=, offload_folder=, fold_ln=, center_writing_weights=)` (or
        `from_hf_model(hf_model)`), then moved to `device`. It never builds a language-model bridge: a checkpoint
        that holds no reward model raises `CheckpointError` / `UnsupportedArchitectureError`, and arguments that
        change what HF builds (`hf_config_overrides`, `model_class`, `load_weights=False`,
        `trust_remote_code=True`, `n_ctx`, checkpoint indices) raise `InputError`."""
        fold_ln = kwargs.pop("fold_ln", False)
        center_writing_weights = kwargs.pop("center_writing_weights", False)
        passed = {k: kwargs.pop(k) for k in PASSED_BOOT_ARGS if k in kwargs}
        extra = {k: kwargs.pop(k, None) for k in UNSUPPORTED_BOOT_ARGS if k in kwargs}
        extra.update(hf_config_overrides=hf_config_overrides, model_class=model_class)
        if kwargs:
            raise TypeError(f"boot_transformers() got unexpected arguments: {sorted(kwargs)}")
        check_boot_args(trust_remote_code, load_weights, extra)
        if device is not None and device_map is not None:
            raise InputError("Pass device or device_map, not both (as in TransformerLens).")
        if hf_model is not None:
            if passed:
                raise InputError(f"{sorted(passed)} apply to loading a checkpoint, not to hf_model=.")
            model = cls.from_hf_model(hf_model, tokenizer=tokenizer)
            if fold_ln or center_writing_weights:
                model.process_weights(fold_ln=fold_ln, center_writing_weights=center_writing_weights)
        else:
            model = cls.from_pretrained(
                model_name,
                dtype=dtype,
                device_map=device_map,
                tokenizer=tokenizer,
                fold_ln=fold_ln,
                center_writing_weights=center_writing_weights,
                **passed,
            )
        if device is not None:
            model.to(device)
        return model

    @classmethod
    def _from_loaded(cls, loaded: LoadedCheckpoint, model_name: str = "reward-model") -> HookedRewardModel:
        bridge = build_bridge(
            cls,
            loaded.module,
            loaded.causal_lm_architecture,
            hf_config=loaded.hf_config,
            model_name=model_name,
            post_adapter_hook=unembed_at_head(loaded.head_path),
        )
        bridge._set_reward_tokenizer(loaded.tokenizer)
        bridge.__dict__["_position_rule"] = None if loaded.position_rule is None else loaded.position_rule(bridge)
        bridge._attach_reward_head(loaded.make_head(bridge))
        install_fused_attention(bridge)
        install_unhooked_shortcuts(bridge)
        return bridge

    def set_fused_attention(self, enabled: bool = True) -> None:
        """Run attention through SDPA in layers whose `hook_attn_scores`/`hook_pattern` have no hook (on by
        default; `hooked_reward.fused_attention`), or, with False, TransformerLens's explicit pattern everywhere.
        Values at every other hook point are the same either way."""
        set_fused_attention(self, enabled)

    def _scan_existing_hooks(self, module: nn.Module, prefix: str = "") -> None:
        """TransformerLens's hook-point scan, done faster with the same result (`bridge_build.scan_hook_points`).

        A rescan after the head is attached (`clear_hook_registry()`, compatibility mode) would find the head's
        hook points under `head.` first; they keep their public names (`hook_score`, `gating.hook_weights`)."""
        scan_hook_points(self._hook_registry, module, prefix)
        if module is self and "head" in self._modules:
            self._register_head_hooks()

    def _register_head_hooks(self) -> None:
        """Register the head's hook points under their public names (`hook_score`, `gating.hook_weights`)."""
        add_hook_points(self, self.head.hook_points(), rename=True)

    def _set_reward_tokenizer(self, tokenizer: PreTrainedTokenizerBase | None) -> None:
        """Keep the checkpoint's tokenizer exactly as trained: TL's set-up would reload it with BOS forced on,
        which changes the tokens some reward models (e.g. Qwen's) were trained on."""
        self._tokenizer = tokenizer
        if tokenizer is not None:
            from transformer_lens.model_bridge.sources._bridge_builder import detect_tokenizer_bos_eos

            self.cfg.tokenizer_prepends_bos, self.cfg.tokenizer_appends_eos = detect_tokenizer_bos_eos(tokenizer)

    def _attach_reward_head(self, head: RewardHead) -> None:
        prefix = getattr(self.original_model, "base_model_prefix", "model")
        backbone = getattr(self.original_model, prefix, None)
        if backbone is None:
            raise InputError(f"{type(self.original_model).__name__} has no backbone at `.{prefix}`.")
        if head.n_outputs < 1:
            raise CheckpointError(
                f"The reward head {type(head).__name__} has no outputs (num_labels={head.n_outputs}), so it gives "
                "no reward. Save the checkpoint with num_labels >= 1 (1 for a scalar reward model)."
            )
        self.__dict__["_backbone"] = backbone  # not a submodule: its modules are already bridged
        self.head = head
        self.hook_reward_resid = HookPoint()
        self.hook_reward = HookPoint()
        add_hook_points(self, {name: getattr(self, name) for name in REWARD_HOOKS}, rename=True)
        self._register_head_hooks()
        self._reward_hook_names = set(REWARD_HOOKS) | set(head.hook_points())
        check_hook_outputs(self, self.hook_dict)  # a hook's returned tensor must fit the activation it replaces
        # Analysis runs in eval mode (no dropout). The bridge mirrors the HF model's mode; the parts added here
        # start in training mode, so set them, and the whole model if it came in training mode.
        for part in (self.head, self.hook_reward_resid, self.hook_reward):
            part.train(False)
        if self.training:
            self.train(False)

    # ------------------------------------------------------------------ reward head weights
    @property
    def n_outputs(self) -> int:
        """Number of reward outputs (1 for a scalar RM; objectives for multi-objective heads)."""
        return self.head.n_outputs

    @property
    def output_names(self) -> list[str]:
        return self.head.output_names

    def _head_linear_map(self) -> tuple[Tensor, Tensor]:
        linear = self.head.linear_map()
        if linear is None:
            raise AttributeError(
                f"{type(self.head).__name__} is not one affine map, so it has no W_R; its hook points "
                "(`model.head.hook_points()`) expose the head's intermediate values instead."
            )
        return linear

    def _squeeze_outputs(self, t: Tensor) -> Tensor:
        return t[0] if t.shape[0] == 1 else t

    @property
    def W_R(self) -> Float[Tensor, "... d_model"]:
        """The reward direction(s): `[d_model]` for one output, `[n_outputs, d_model]` otherwise.

        Reads `ln_final(h)`, not the raw residual: use `W_R_eff` for directions in the residual basis. It is
        `W_U[:, k]`, and the direction for every stack TransformerLens normalises (`apply_ln_to_stack`,
        `accumulated_resid(apply_ln=True)`), folded or not; raw stacks go to `cache.reward_attrs` (the rule in
        docs/migration.md).
        """
        return self._squeeze_outputs(self._head_linear_map()[0])

    @property
    def W_U(self) -> Float[Tensor, "d_model n_outputs"]:
        """TransformerLens's unembedding, `[d_model, n_outputs]`: `W_U[:, k]` is `W_R` (row k). For a head that
        normalises its output (OpenRLHF's `normalize_reward`) that is the normalised map, `W / std`, not the raw
        Linear's weight, so TransformerLens's analyses reading `W_U` / `b_U` give the model's reward."""
        if getattr(getattr(self, "head", None), "normalization", None) is None:
            return super().W_U
        return self._head_linear_map()[0].T

    @property
    def b_U(self) -> Float[Tensor, "n_outputs"]:
        """TransformerLens's unembedding bias, `[n_outputs]`: `b_R` (for a normalising head, `(b - mean) / std`)."""
        if getattr(getattr(self, "head", None), "normalization", None) is None:
            return super().b_U
        return self._head_linear_map()[1]

    @property
    def b_R(self) -> Float[Tensor, "..."]:
        """The head's bias: a scalar for one output, `[n_outputs]` otherwise (zeros when the head has none)."""
        return self._squeeze_outputs(self._head_linear_map()[1])

    @property
    def final_norm_is_layernorm(self) -> bool:
        """True for LayerNorm (centres, then scales) final norms; False for RMSNorm."""
        return self.cfg.normalization_type in ("LN", "LNPre")

    def final_norm_gain_bias(self) -> tuple[Float[Tensor, " d_model"], Float[Tensor, " d_model"]]:
        """Elementwise gain and bias of `ln_final` (gain includes Gemma's `1 + w` offset; bias 0 for RMSNorm)."""
        return norm_gain_bias(self, self.ln_final, rms=not self.final_norm_is_layernorm)

    @property
    def W_R_eff(self) -> Float[Tensor, "... d_model"]:
        """`W_R` with the final norm's gain folded in: reward = (normalised resid) · W_R_eff + b_R_eff.

        "Normalised" is the residual (centred for LayerNorm) divided by the final norm's scale
        (`ln_final.hook_scale`). This is the direction to compare residual-stream directions against; it pairs
        with `cache.apply_final_ln_at_reward`, not with TransformerLens's `apply_ln_to_stack` (which here applies
        the gain, so pairs with `W_R`). On a `fold_ln=True` load `W_R_eff == W_R`.
        """
        return self._squeeze_outputs(fold_final_norm(self, self._affine_readout()).direction[0])

    @property
    def b_R_eff(self) -> Float[Tensor, "..."]:
        """`b_R` plus the final norm's bias read through `W_R` (equal to `b_R` for RMSNorm models)."""
        return self._squeeze_outputs(fold_final_norm(self, self._affine_readout()).offset[0])

    def _affine_readout(self) -> Readout:
        """The head's affine map (`W_R`, `b_R`) as a `Readout`, for heads that have one (ArmoRM: the objectives)."""
        weight, bias = self._head_linear_map()
        names = self.head.readout_names()[: weight.shape[0]]
        return Readout(as_float(weight)[None], as_float(bias)[None], names, "affine")

    def process_weights(  # type: ignore[override]  # TL's flags pass through **kwargs; center_unembed is refused
        self, fold_ln: bool = True, center_writing_weights: bool = True, **kwargs: Any
    ) -> None:
        """TransformerLens's weight processing, with the unembed never centred.

        `center_unembed` would subtract the mean over outputs, which for a scalar head zeroes `W_R`: it is
        always off here. Rewards are unchanged (tested to 1e-4).
        """
        kwargs.pop("center_unembed", None)
        if not getattr(self.head, "supports_weight_processing", True):
            raise InputError(
                f"{type(self.head).__name__} reads ln_final's output beyond one Linear (a gate or an MLP), so "
                "TransformerLens's weight processing (which folds ln_final into the unembed) does not apply; "
                "load without fold_ln / center_writing_weights."
            )
        super().process_weights(
            fold_ln=fold_ln, center_writing_weights=center_writing_weights, center_unembed=False, **kwargs
        )

    # ------------------------------------------------------------------ inputs
    def tokenize(
        self,
        texts: str | Sequence[str],
        max_length: int | None = None,
        *,
        prepend_bos: bool | None = None,
        padding_side: str | None = None,
    ) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch pos"]]:
        return _inputs.tokenize(self, texts, max_length, prepend_bos=prepend_bos, padding_side=padding_side)

    tokenize.__doc__ = _inputs.tokenize.__doc__

    def render_chat(self, prompt: str, response: str) -> str:
        return _inputs.render_chat(self, prompt, response)

    render_chat.__doc__ = _inputs.render_chat.__doc__

    def prepare(
        self,
        inputs: ModelInputs,
        *,
        attention_mask: Int[Tensor, "batch pos"] | Tensor | None = None,
        max_length: int | None = None,
    ) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch pos"]]:
        return _inputs.prepare(self, inputs, attention_mask=attention_mask, max_length=max_length)

    prepare.__doc__ = _inputs.prepare.__doc__

    def to_tokens(
        self,
        input: str | Sequence[str],
        prepend_bos: bool | None = None,
        padding_side: str | None = None,
        move_to_device: bool = True,
        truncate: bool = True,
    ) -> Int[Tensor, "batch pos"]:
        return _inputs.to_tokens(self, input, prepend_bos, padding_side, move_to_device, truncate)

    to_tokens.__doc__ = _inputs.to_tokens.__doc__

    def tokens_to_residual_directions(self, tokens: Any) -> Float[Tensor, "... d_model"]:
        """TransformerLens's answer directions, for outputs: `W_U[:, k]` = `W_R` (row k) for output indices `k`.
        Vocabulary tokens (strings, token ids) raise `NoVocabularyError`."""
        ids = torch.as_tensor(tokens) if not isinstance(tokens, str) else None
        if ids is None or ids.is_floating_point() or bool(((ids < 0) | (ids >= self.n_outputs)).any()):
            raise no_vocabulary_error(
                f"tokens_to_residual_directions({tokens!r}) (directions of vocabulary tokens; this model's "
                f"{self.n_outputs} output direction(s) are model.W_R, = model.W_U[:, k] for output k)"
            )
        return super().tokens_to_residual_directions(tokens)

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        """Not available: a reward model has no vocabulary output (`NoVocabularyError`)."""
        raise no_vocabulary_error("generate")

    def generate_stream(self, *args: Any, **kwargs: Any) -> Any:
        """Not available: a reward model has no vocabulary output (`NoVocabularyError`)."""
        raise no_vocabulary_error("generate_stream")

    def hf_generate(self, *args: Any, **kwargs: Any) -> Any:
        """Not available: a reward model has no vocabulary output (`NoVocabularyError`)."""
        raise no_vocabulary_error("hf_generate")

    def loss_fn(self, *args: Any, **kwargs: Any) -> Any:
        """Not available: a reward model has no vocabulary output (`NoVocabularyError`)."""
        raise no_vocabulary_error("loss_fn")

    @property
    def position_rule(self) -> PositionRule | None:
        """The checkpoint's own rule for where its reward is read (`hooked_reward.positions`): HF's for a
        `*ForSequenceClassification`, ArmoRM's, TRL's for value heads; None reads the last attended token."""
        return self.__dict__.get("_position_rule")

    def reward_positions(
        self, attention_mask: Int[Tensor, "batch pos"], tokens: Int[Tensor, "batch pos"] | None = None
    ) -> Int[Tensor, " batch"]:
        """Each row's reward position, `[batch]`: where the checkpoint's own code reads it (`position_rule`), for
        each row as it would be alone, whatever the padding side. For an HF `*ForSequenceClassification` that is
        the last token that is not the config's pad id (the last token without a pad id), as transformers'
        forward of this class computes it; with pad = eos and an eos at the end of a text, the token before it
        (one `RewardPositionWarning` per model says so). `tokens` are needed when the rule reads token ids.
        """
        rule = self.position_rule
        positions = reward_positions(attention_mask, tokens, rule)
        if tokens is not None and rule is not None and not self.__dict__.get("_position_warned"):
            self._warn_position(attention_mask, tokens, positions, rule)
        return positions

    def _warn_position(self, mask: Tensor, tokens: Tensor, positions: Tensor, rule: PositionRule) -> None:
        """One `RewardPositionWarning` per model, the first time a row's reward is not read at its last attended
        token because the checkpoint's pad id occurs in the text (e.g. pad = eos, with an eos appended)."""
        moved = (positions.to(mask.device) != last_attended(mask)).nonzero().flatten()
        if not len(moved):
            return
        self.__dict__["_position_warned"] = True
        row = int(moved[0])
        pos, last, pad = int(positions[row]), int(last_attended(mask)[row]), rule.pad_token_id
        tok = self.tokenizer
        show = (lambda i: repr(tok.convert_ids_to_tokens(int(i)))) if tok is not None else (lambda i: f"id {int(i)}")
        warnings.warn(
            f"This checkpoint's pad id {pad} ({show(pad)}) also occurs inside the texts: {len(moved)} row(s) end "
            f"with it (row {row}: {show(tokens[row, last])} at position {last}). {rule.describe()}, so the reward "
            f"of row {row} is read at {show(tokens[row, pos])} (position {pos}), where the checkpoint was trained "
            "to give it, not at the last token. `model.reward_positions(mask, tokens)` gives every row's position.",
            RewardPositionWarning,
            stacklevel=3,
        )

    # ------------------------------------------------------------------ forward
    def forward(  # type: ignore[override]  # rewards, not logits: attention_mask second, no loss arguments
        self,
        input: TextOrTokens | Float[Tensor, "batch pos d_model"],
        attention_mask: Tensor | None = None,
        return_type: str | None = "reward",
        stop_at_layer: int | None = None,
        start_at_layer: int | None = None,
        nan_policy: NanPolicy = "raise",
        *,
        prepend_bos: bool | None = None,
        padding_side: str | None = None,
        loss_per_token: bool = False,
        **kwargs: Any,
    ) -> Any:
        """Rewards for texts or token ids: `[batch]` (one output) or `[batch, n_outputs]`.

        TransformerLens 4's signature, with its meaning where a reward model has one:
        - `return_type`: "reward" (or TransformerLens's "logits", the same tensor, so TL code runs unchanged),
          or None. "loss", "both", "predictions" (and `loss_per_token`, `labels`, a KV cache) raise
          `NoVocabularyError`: there is no vocabulary output.
        - `prepend_bos`, `padding_side`: how text input is tokenized (see `tokenize`); ignored for token ids.
        - `stop_at_layer=l` returns the residual entering block l (`[batch, pos, d_model]`; l = n_layers: the
          residual after the last block, before ln_final).
        - `start_at_layer=k` takes `input` as the residual entering block k (`[batch, pos, d_model]`, e.g.
          `cache["blocks.k.hook_resid_pre"]`) and runs the rest of the model; `attention_mask` gives its padding
          (default: every position attended), and the reward is read at each row's last attended token (no
          token ids to apply the checkpoint's pad-id rule to: mask out what follows `cache.reward_pos`). Hooks
          below block k see discarded values, as in TransformerLens. Heads that read token ids (ArmoRM's gate)
          cannot run from a residual.
        - `nan_policy`: a NaN or ±Inf reward raises `NonFiniteError` naming the rows and where the values first
          appear ("raise"), or its row is dropped with a warning ("omit"), or it is returned ("propagate"); see
          `hooked_reward.finite`.
        The reward is read where the checkpoint reads it (`reward_positions`), whatever the padding side.
        """
        caller = vocabulary_caller()
        if caller is not None:
            raise no_vocabulary_error(caller)
        kwargs.pop("output_attentions", None)
        kwargs.pop("return_cache_object", None)
        if "one_zero_attention_mask" in kwargs:  # TransformerLens's older name for the mask
            one_zero = kwargs.pop("one_zero_attention_mask")
            attention_mask = one_zero if attention_mask is None else attention_mask
        check_forward_kwargs(kwargs, "forward")
        check_return_type(return_type)
        if loss_per_token:
            raise no_vocabulary_error("loss_per_token=True")
        check_nan_policy(nan_policy)
        if start_at_layer is not None:
            tokens, residual, mask = None, *_inputs.residual_input(self, input, attention_mask)
        else:
            residual = None
            tokens, mask = _inputs.prepare_tl(self, input, attention_mask, prepend_bos, padding_side)
        reward_pos = self._run_positions(mask, tokens)
        if start_at_layer is not None:
            residual = self._setup_start_at_layer(residual, start_at_layer)
        try:
            if stop_at_layer is not None:
                if start_at_layer is not None and self._layer_index(stop_at_layer) <= self._layer_index(start_at_layer):
                    raise InputError(f"stop_at_layer={stop_at_layer} must come after start_at_layer={start_at_layer}.")
                return self._residual_before(stop_at_layer, tokens, mask, residual)
            final_resid = self._run_backbone(tokens, mask, residual)
        finally:
            if start_at_layer is not None:
                self._teardown_start_at_layer()
        rewards = self.read_reward(final_resid, tokens, mask, reward_pos)
        if tokens is not None:
            kept = apply_nan_policy(self, rewards, tokens, mask, nan_policy)
            if kept is not None:
                rewards = rewards[kept]
        return None if return_type is None else rewards

    def read_reward(
        self,
        final_resid: Float[Tensor, "batch pos d_model"],
        tokens: Int[Tensor, "batch pos"] | None,
        mask: Int[Tensor, "batch pos"],
        reward_pos: Int[Tensor, " batch"],
    ) -> Float[Tensor, " batch *outputs"]:
        """The model's tail, after `ln_final`: gather each row's `reward_pos`, `hook_reward_resid`, the head,
        `hook_reward`. Rewards `[batch]` (one output) or `[batch, n_outputs]`, no NaN policy applied.

        `forward` and the fast patching sweep (`analysis.patching_fast`) both end here, so the head and its hooks
        run the same way in either. `tokens` is None for a run from a residual (`start_at_layer`): a head that
        reads the token ids (ArmoRM's gate) then raises `InputError`."""
        reward_resid = gather_at_positions(final_resid, reward_pos)[:, 0]
        reward_resid = self.hook_reward_resid(reward_resid)
        try:
            rewards = self.head(reward_resid, HeadInputs(final_resid, tokens, mask, reward_pos))  # type: ignore[arg-type]
        except (TypeError, AttributeError) as err:
            if tokens is not None:
                raise
            raise InputError(
                f"{type(self.head).__name__} reads the token ids (not only the reward position), so it cannot run "
                "from a residual (start_at_layer); patch the residual with a hook instead."
            ) from err
        return self.hook_reward(rewards)

    def _run_positions(self, mask: Tensor, tokens: Tensor | None) -> Tensor:
        """The reward positions of a run: the checkpoint's rule on its tokens, or, from a residual (no token ids),
        each row's last attended token."""
        return self.reward_positions(mask, tokens) if tokens is not None else last_attended(mask)

    def _layer_index(self, layer: int) -> int:
        return self.cfg.n_layers + layer if layer < 0 else layer

    def _residual_before(
        self, layer: int, tokens: Tensor | None, mask: Tensor, residual: Tensor | None = None
    ) -> Float[Tensor, "batch pos d_model"]:
        """The residual entering block `layer` (negative counts from the end; `n_layers`: before ln_final)."""
        n_layers = self.cfg.n_layers
        layer = self._layer_index(layer)
        if not 0 <= layer <= n_layers:
            raise InputError(f"stop_at_layer must lie in {-n_layers}..{n_layers}, got {layer}.")
        hook_point = self.ln_final.hook_in if layer == n_layers else self.blocks[layer].hook_in

        def stop(tensor: Tensor, hook: HookPoint) -> Tensor:
            raise StopAtLayerException(tensor)

        handle = hook_point.add_hook(stop, level=getattr(self, "context_level", 0) + 1)
        try:
            self._run_backbone(tokens, mask, residual)
        except StopAtLayerException as stopped:
            return stopped.layer_output
        finally:
            self._remove_temporary_hook(hook_point, "fwd", handle)
        raise RuntimeError(f"stop_at_layer={layer}: the hook at {hook_point.name} did not fire.")

    def _run_backbone(
        self, tokens: Tensor | None, mask: Tensor, residual: Tensor | None = None
    ) -> Float[Tensor, "batch pos d_model"]:
        """The bridged HF backbone up to and including `ln_final`, from token ids or (start_at_layer, armed by
        `_setup_start_at_layer`) from a residual passed as `inputs_embeds`."""
        if hasattr(self, "pos_embed"):
            self.pos_embed._current_batch_size = mask.shape[0]
        padded = not bool(mask.all())
        inputs = {"input_ids": tokens} if residual is None else {"inputs_embeds": residual}
        out = self._backbone(
            **inputs,
            attention_mask=mask if padded else None,
            position_ids=position_ids_from_mask(mask) if padded else None,
            use_cache=False,
        )
        return out[0] if isinstance(out, tuple) else out.last_hidden_state

    # ------------------------------------------------------------------ hooks and caching
    def _resolve_hook_point(self, name: str, aliases: dict, hook_dict: dict) -> tuple[str, HookPoint]:
        canonical = aliases.get(name, name)
        if canonical not in hook_dict:
            raise unknown_hook_error(name, hook_dict.keys())
        return super()._resolve_hook_point(name, aliases, hook_dict)

    def _select_hooks(self, names_filter: NamesFilter) -> dict[int, tuple[HookPoint, list[str]]]:
        """Hook points matching `names_filter`, once each, with every name (alias) they are cached under."""
        hook_dict = self.hook_dict
        explicit = isinstance(names_filter, (str, Sequence))
        if names_filter is None:
            keep: Callable[[str], bool] = lambda _name: True  # noqa: E731
        elif isinstance(names_filter, (str, Sequence)):
            wanted = [names_filter] if isinstance(names_filter, str) else list(names_filter)
            for name in wanted:
                if name not in hook_dict:
                    raise unknown_hook_error(name, hook_dict.keys())
            wanted_ids = {id(hook_dict[n]) for n in wanted}
            keep = lambda name: id(hook_dict[name]) in wanted_ids  # noqa: E731
        elif callable(names_filter):
            keep = names_filter
        else:
            raise InputError("names_filter must be None, a hook name, a list of hook names or a callable.")
        selected: dict[int, tuple[HookPoint, list[str]]] = {}
        for name, hook_point in hook_dict.items():
            if not keep(name):
                continue
            gate = self._gated_hook_reason(hook_point.name or name)
            if gate is not None:  # e.g. attn.hook_result needs set_use_attn_result(True)
                if explicit:
                    raise InputError(f"Hook {name!r} only fires after `model.set_{gate}(True)`; call it first.")
                continue
            selected.setdefault(id(hook_point), (hook_point, []))[1].append(name)
        return selected

    @overload  # type: ignore[override]  # attention_mask, names_filter, positions come before TL's keywords
    def run_with_cache(
        self,
        input: TextOrTokens | Float[Tensor, "batch pos d_model"],
        attention_mask: Tensor | None = None,
        names_filter: NamesFilter = None,
        positions: PositionsArg = None,
        device: str | torch.device | None = None,
        incl_bwd: bool = False,
        remove_batch_dim: bool = False,
        nan_policy: NanPolicy = "raise",
        *,
        return_cache_object: Literal[True] = True,
        stop_at_layer: int | None = None,
        start_at_layer: int | None = None,
        pos_slice: Any = None,
        reset_hooks_end: bool = True,
        clear_contexts: bool = False,
        return_type: str | None = "reward",
        prepend_bos: bool | None = None,
        padding_side: str | None = None,
        **kwargs: Any,
    ) -> tuple[Any, RewardActivationCache]: ...

    @overload
    def run_with_cache(
        self,
        input: TextOrTokens | Float[Tensor, "batch pos d_model"],
        attention_mask: Tensor | None = None,
        names_filter: NamesFilter = None,
        positions: PositionsArg = None,
        device: str | torch.device | None = None,
        incl_bwd: bool = False,
        remove_batch_dim: bool = False,
        nan_policy: NanPolicy = "raise",
        *,
        return_cache_object: Literal[False],
        stop_at_layer: int | None = None,
        start_at_layer: int | None = None,
        pos_slice: Any = None,
        reset_hooks_end: bool = True,
        clear_contexts: bool = False,
        return_type: str | None = "reward",
        prepend_bos: bool | None = None,
        padding_side: str | None = None,
        **kwargs: Any,
    ) -> tuple[Any, dict[str, Tensor]]: ...

    def run_with_cache(
        self,
        input: TextOrTokens | Float[Tensor, "batch pos d_model"],
        attention_mask: Tensor | None = None,
        names_filter: NamesFilter = None,
        positions: PositionsArg = None,
        device: str | torch.device | None = None,
        incl_bwd: bool = False,
        remove_batch_dim: bool = False,
        nan_policy: NanPolicy = "raise",
        *,
        return_cache_object: bool = True,
        stop_at_layer: int | None = None,
        start_at_layer: int | None = None,
        pos_slice: Any = None,
        reset_hooks_end: bool = True,
        clear_contexts: bool = False,
        return_type: str | None = "reward",
        prepend_bos: bool | None = None,
        padding_side: str | None = None,
        **kwargs: Any,
    ) -> tuple[Any, RewardActivationCache | dict[str, Tensor]]:
        """Run and cache activations: `(rewards, RewardActivationCache)`.

        `names_filter` selects hooks (a name, a list, or a predicate; unknown names raise). `positions`:
        None caches every position; "reward" keeps only each row's reward position (memory ∝ batch,
        not batch × seq; attention patterns keep the reward query row); an int or a `[batch]` tensor keeps
        that position. The kept position sits at index 0 of the position axis. `incl_bwd` also caches
        gradients of the summed reward (single-output heads) under "<name>_grad"; it needs gradients on.
        Grad mode is the caller's, as in TransformerLens: under `torch.no_grad()` nothing is recorded, otherwise
        the returned rewards carry their graph (cached activations are detached). `nan_policy` as in `forward`;
        "omit" drops the rows from the cache too.

        TransformerLens 4's keywords, with its meaning: `return_cache_object=False` returns the dict;
        `stop_at_layer` returns the residual entering that block and caches only the blocks before it;
        `start_at_layer` runs from a residual (see `forward`) and caches only the blocks from it;
        `pos_slice` slices every cached activation's position axis (TL's `Slice`; the reward views then need
        `positions="reward"` instead); `reset_hooks_end=False` leaves the caching hooks attached;
        `clear_contexts`; `return_type` ("reward"/"logits", or None); `prepend_bos`, `padding_side` for text.
        """
        check_nan_policy(nan_policy)
        kwargs.pop("output_attentions", None)
        check_forward_kwargs(kwargs, "run_with_cache")
        check_return_type(return_type)
        self._check_cache_options(incl_bwd, stop_at_layer, pos_slice, positions)
        tokens, mask, model_input = self._run_input(input, attention_mask, start_at_layer, prepend_bos, padding_side)
        keep_pos = _inputs.cache_positions(self, positions, mask, tokens)
        if remove_batch_dim and mask.shape[0] != 1:
            raise InputError(
                f"remove_batch_dim=True needs a batch of one, got {mask.shape[0]} rows; index the cache per row."
            )
        slicer = None if pos_slice is None else Slice.unwrap(pos_slice)
        recorder = CacheRecorder(self, mask, keep_pos, slicer, device)
        selected = self._hooks_to_cache(names_filter, stop_at_layer, start_at_layer)
        rows: list = []
        if keep_pos is not None and slicer is None and not incl_bwd:
            # a reward-position cache keeps one query row of each pattern: fused layers compute only that row
            selected, rows = split_pattern_rows(self, selected)
        fwd, bwd = recorder.hooks(selected, backward=incl_bwd)
        hooks = self.hooks(fwd_hooks=fwd, bwd_hooks=bwd, reset_hooks_end=reset_hooks_end, clear_contexts=clear_contexts)
        with hooks, pattern_rows(rows, keep_pos, recorder.store_rows):
            output = self.forward(
                model_input,
                attention_mask=mask,
                nan_policy="propagate",
                stop_at_layer=stop_at_layer,
                start_at_layer=start_at_layer,
            )
            bad = (
                non_finite_rows(output)
                if stop_at_layer is None and tokens is not None and nan_policy != "propagate"
                else []
            )
            if incl_bwd:
                self._backward_for_cache(output, bad, nan_policy)
        kept = apply_nan_policy(self, output, tokens, mask, nan_policy) if bad and tokens is not None else None
        if kept is not None:  # nan_policy="omit": drop the rows from the rewards and from every cached tensor
            recorder.keep_rows(kept)
            output, mask = output[kept], mask[kept]
            tokens = None if tokens is None else tokens[kept.to(tokens.device)]
        cache = RewardActivationCache(
            recorder.store,
            self,
            reward_pos=self._run_positions(mask, tokens),
            cached_pos=recorder.keep_pos,
            attention_mask=mask,
            pos_slice=slicer,
        )
        if remove_batch_dim:
            cache.remove_batch_dim(batch_size=recorder.batch)
        output = None if return_type is None and stop_at_layer is None else output
        return (output, cache) if return_cache_object else (output, cache.cache_dict)

    def _run_input(
        self,
        input: Any,
        attention_mask: Tensor | None,
        start_at_layer: int | None,
        prepend_bos: bool | None,
        padding_side: str | None,
    ) -> tuple[Int[Tensor, "batch pos"] | None, Int[Tensor, "batch pos"], Any]:
        """`(tokens, mask, what forward is given)`: token ids and their mask (`inputs.prepare_tl`), or, for a run
        from a residual (`start_at_layer`), no tokens, the residual's mask and the residual itself."""
        if start_at_layer is not None:
            _, mask = _inputs.residual_input(self, input, attention_mask)
            return None, mask, input
        tokens, mask = _inputs.prepare_tl(self, input, attention_mask, prepend_bos, padding_side)
        return tokens, mask, tokens

    @staticmethod
    def _check_cache_options(
        incl_bwd: bool, stop_at_layer: int | None, pos_slice: Any, positions: PositionsArg
    ) -> None:
        """`run_with_cache`'s options that exclude each other, or need gradients on."""
        if incl_bwd and stop_at_layer is not None:
            raise InputError("incl_bwd=True cannot be combined with stop_at_layer: no reward to differentiate.")
        if incl_bwd and not torch.is_grad_enabled():
            raise InputError(
                "incl_bwd=True needs autograd, but gradient tracking is off (torch.no_grad(), "
                "set_grad_enabled(False) or inference mode). Run the call under torch.enable_grad()."
            )
        if pos_slice is not None and positions is not None:
            raise InputError("Pass positions= (ours, reward-aware) or pos_slice= (TransformerLens's), not both.")

    def _hooks_to_cache(
        self, names_filter: NamesFilter, stop_at_layer: int | None, start_at_layer: int | None
    ) -> list[list[str]]:
        """The hook points a `run_with_cache` records, each as the list of names (aliases) it is stored under."""
        return [
            names
            for _, names in self._select_hooks(names_filter).values()
            if self._runs_in_range(names[0], stop_at_layer, start_at_layer)
        ]

    @staticmethod
    def _backward_for_cache(output: Tensor, bad: list[int], nan_policy: NanPolicy) -> None:
        """`incl_bwd`: backpropagate the summed reward over its finite rows (single-output heads only), so the
        backward hooks record each activation's gradient."""
        if output.ndim != 1:
            raise InputError("incl_bwd needs a single-output head; select an output with run_with_hooks.")
        if not (bad and nan_policy == "raise"):
            finite = torch.ones_like(output, dtype=torch.bool)
            finite[bad] = False
            output[finite].sum().backward()

    def _runs_in_range(self, name: str, stop_at_layer: int | None, start_at_layer: int | None) -> bool:
        """Whether hook `name` fires on real values in a run stopped before block `stop_at_layer` or started at
        block `start_at_layer` (blocks outside the range and the embeddings before a start do not), as
        TransformerLens decides what to cache."""
        layer = None
        if name.startswith("blocks."):
            part = name.split(".")[1]
            layer = int(part) if part.isdigit() else None
        if stop_at_layer is not None and layer is not None and layer >= self._layer_index(stop_at_layer):
            return False
        if start_at_layer is not None:
            start = self._layer_index(start_at_layer)
            if self._is_embedding_stage_hook(name) or (layer is not None and layer < start):
                return False
        return True

    def __repr__(self) -> str:
        return (
            f"HookedRewardModel({self.cfg.architecture}, n_layers={self.cfg.n_layers}, d_model={self.cfg.d_model}, "
            f"head={type(self.head).__name__}, outputs={self.output_names})"
        )


# Runs on one model from several threads are serialised (hooks live on the model's HookPoints, so two concurrent
# runs would read each other's hooks): see hooked_reward.concurrency and docs/guarantees.md.
serialise_runs(HookedRewardModel)
