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
import numbers
import warnings
import weakref
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn
from transformer_lens.hook_points import HookPoint
from transformer_lens.model_bridge import TransformerBridge
from transformer_lens.model_bridge.exceptions import StopAtLayerException
from transformer_lens.model_bridge.generalized_components import UnembeddingBridge
from transformer_lens.utilities.slice import Slice

from hooked_reward.bridge_build import build_bridge, scan_hook_points
from hooked_reward.cache import RewardActivationCache
from hooked_reward.errors import (
    CheckpointError,
    InputError,
    RewardPositionWarning,
    UnknownTokensWarning,
    unknown_hook_error,
)
from hooked_reward.final_norm import fold_final_norm, norm_gain_bias
from hooked_reward.finite import NanPolicy, apply_nan_policy, check_nan_policy, non_finite_rows
from hooked_reward.fused_attention import install_fused_attention, pattern_rows, set_fused_attention, split_pattern_rows
from hooked_reward.heads.base import HeadInputs, Readout, RewardHead, as_float
from hooked_reward.hook_checks import check_hook_outputs
from hooked_reward.loading import LoadedCheckpoint, from_sequence_classifier, load_checkpoint
from hooked_reward.pairs import ChatText
from hooked_reward.positions import (
    PositionRule,
    check_mask,
    gather_at_positions,
    interior_gaps,
    last_attended,
    pad_rows,
    position_choice,
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

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

TextOrTokens = str | Sequence[str] | Int[Tensor, "batch pos"] | Int[Tensor, "pos"]
#: What `prepare` takes: text(s), token ids, a `(tokens, attention_mask)` pair, or a mapping with `input_ids`.
ModelInputs = TextOrTokens | tuple[Tensor, Tensor] | Mapping[str, Tensor]
PositionsArg = None | str | int | Int[Tensor, " batch"]
NamesFilter = None | str | Sequence[str] | Callable[[str], bool]

REWARD_HOOKS = ("hook_reward_resid", "hook_reward")


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
    """A TransformerBridge whose output is a reward: `Float[Tensor, "batch"]` or `[batch, n_outputs]`.

    Build it with `from_pretrained(dir)` or `from_hf_model(model, tokenizer=tok)`. Everything TransformerLens
    users know works (`run_with_cache`, `run_with_hooks`, `hooks()`, `W_Q`, `blocks[l].attn`, the cache's
    `decompose_resid`...). Reward-specific: `W_R`, `b_R`, their final-norm-folded forms `W_R_eff`, `b_R_eff`,
    `reward_positions(mask, tokens)`, `hook_reward_resid`, `hook_reward`, and `cache.reward_attrs(stack)`.
    """

    head: RewardHead
    hook_reward_resid: HookPoint
    hook_reward: HookPoint
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
    ) -> HookedRewardModel:
        """Load a reward checkpoint — a local directory (config.json + safetensors) or a Hugging Face Hub id
        (`"org/name"`) — never running code from it.

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
        )
        if tokenizer is not None:
            loaded.tokenizer = tokenizer
        model = cls._from_loaded(loaded, model_name=str(path))
        if fold_ln or center_writing_weights:
            model.process_weights(fold_ln=fold_ln, center_writing_weights=center_writing_weights)
        return model

    @classmethod
    def from_hf_model(cls, hf_model: nn.Module, tokenizer: PreTrainedTokenizerBase | None = None) -> HookedRewardModel:
        """Wrap an already-loaded HF `*ForSequenceClassification` model (modified in place, not copied)."""
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
        from hooked_reward.heads.value_head import value_head_checkpoint

        loaded = value_head_checkpoint(causal_lm, head, tokenizer, activation)
        return cls._from_loaded(loaded, model_name=type(causal_lm).__name__)

    @classmethod
    def boot_transformers(  # type: ignore[override]
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
        for name, hook_point in self.head.hook_points().items():
            hook_point.name = name
            self._hook_registry[name] = hook_point

    def _set_reward_tokenizer(self, tokenizer: PreTrainedTokenizerBase) -> None:
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
        self._register_head_hooks()
        self._reward_hook_names = set(REWARD_HOOKS) | set(head.hook_points())
        check_hook_outputs(self, self.hook_dict)  # a hook's returned tensor must fit the activation it replaces
        supported = getattr(self._driver, "supported_hook_points", None)
        if supported is not None:
            self._driver.supported_hook_points = frozenset(supported) | frozenset(self._hook_registry)
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

    def process_weights(self, fold_ln: bool = True, center_writing_weights: bool = True, **kwargs: Any) -> None:
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
        """Tokenize texts into padded `(tokens, attention_mask)`, with the tokenizer's special tokens once.

        A text that already starts with the BOS token (e.g. a rendered chat template) does not get a second
        one. `max_length` keeps at most that many tokens per row by cutting the start of the text (the prompt
        side): the last token, which the reward is read from, and a leading BOS are always kept. Raises
        `InputError` for empty texts, a tokenizer without a pad token, a `max_length` below 1, or sequences
        longer than the model's context (pass `max_length` to truncate explicitly). Without `max_length`, the
        model's `max_length` attribute applies (None by default; the CLI's `--max-length` sets it), so every
        analysis that takes texts truncates them the same way.

        TransformerLens's keywords: `prepend_bos=None` (default) tokenizes each text as the checkpoint does (its
        BOS and EOS, as the reward model was trained; `cfg.default_prepend_bos`, which TransformerLens's adapters
        set per architecture, is not consulted); `False` tokenizes
        a fragment: no special tokens at either end (`add_special_tokens=False`; TransformerLens 4 gives the same
        ids on these checkpoints, since it also strips an appended EOS); `True` also puts a BOS first when the
        tokenizer adds none. `padding_side` ("left"/"right") overrides the tokenizer's.
        """
        if padding_side not in (None, "left", "right"):
            raise InputError(f"padding_side must be 'left', 'right' or None, got {padding_side!r}.")
        if max_length is None:
            max_length = self.max_length
        if max_length is not None and (isinstance(max_length, bool) or not isinstance(max_length, numbers.Integral)):
            raise InputError(f"max_length must be a positive int or None, got {max_length!r}.")
        max_length = None if max_length is None else int(max_length)
        if max_length is not None and max_length < 1:
            raise InputError(
                f"max_length={max_length} would leave no token to read a reward from; pass at least 1 "
                "(the reward token), or None to keep whole texts."
            )
        tok = self.tokenizer
        if tok is None:
            raise InputError(
                "This model has no tokenizer, so it cannot take text. Pass token ids (and an attention_mask), "
                "or load with `from_pretrained(dir, tokenizer=tok)`."
            )
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts:
            raise InputError("No texts given: pass at least one string.")
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                hint = (
                    " Token ids go in as an integer tensor: `model(torch.tensor(ids), attention_mask=mask)`."
                    if isinstance(text, (int, list, tuple))
                    else ""
                )
                raise InputError(f"Text {i} is a {type(text).__name__} ({text!r:.60}), not a str.{hint}")
            if not text.strip():
                raise InputError(f"Text {i} is empty: an empty text has no token to read a reward from.")
        ids: list[list[int]] = []
        bos_text, bos_id = getattr(tok, "bos_token", None), getattr(tok, "bos_token_id", None)
        for text in texts:
            has_bos = bool(bos_text) and text.startswith(bos_text)
            special = prepend_bos is not False and not (has_bos or isinstance(text, ChatText))
            row = tok(text, add_special_tokens=special)["input_ids"]
            if has_bos and bos_id is not None and len(row) > 1 and row[0] == bos_id == row[1]:
                row = row[1:]
            if prepend_bos and bos_id is not None and (not row or row[0] != bos_id):
                row = [bos_id, *row]
            if not row:
                raise InputError(f"Text {text!r} gives no tokens (prepend_bos={prepend_bos}).")
            if max_length is not None and len(row) > max_length:
                keep_bos = max_length > 1 and bos_id is not None and row[0] == bos_id
                row = row[:1] + row[len(row) - max_length + 1 :] if keep_bos else row[len(row) - max_length :]
            ids.append(row)
        lengths = {len(r) for r in ids}
        if len(lengths) > 1 and tok.pad_token_id is None:
            raise InputError(
                "The tokenizer has no pad token, so texts of different lengths cannot be batched. Set one, "
                "e.g. `model.tokenizer.pad_token = model.tokenizer.eos_token` (the reward position comes from "
                "the attention mask, so the pad id does not affect rewards)."
            )
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        tokens, mask = pad_rows(ids, pad, left=(padding_side or tok.padding_side) == "left")
        self._check_length(tokens)
        return tokens, mask

    def render_chat(self, prompt: str, response: str) -> str:
        """`prompt`/`response` as the text the RM was trained on: the tokenizer's chat template when it has
        one (its BOS is kept, and `tokenize` will not add another), else `prompt + "\\n" + response`."""
        tok = self.tokenizer
        if tok is not None and getattr(tok, "chat_template", None):
            messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
            return ChatText(tok.apply_chat_template(messages, tokenize=False))
        return f"{prompt}\n{response}"

    def _check_length(self, tokens: Tensor) -> None:
        n_ctx = getattr(self.cfg, "n_ctx", None)
        if n_ctx is not None and n_ctx > 0 and tokens.shape[-1] > n_ctx:
            raise InputError(
                f"Sequence of {tokens.shape[-1]} tokens is longer than the model's context of {n_ctx}. "
                f"Truncate it, e.g. `model.tokenize(texts, max_length={n_ctx})`."
            )

    def prepare(
        self,
        inputs: ModelInputs,
        *,
        attention_mask: Int[Tensor, "batch pos"] | Tensor | None = None,
        max_length: int | None = None,
    ) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch pos"]]:
        """Every input as `(tokens, attention_mask)`, both `[batch, pos]` int64 on the model's input device:
        the one place where text, token ids and masks enter the model, and where they are checked.

        `inputs` is one of:
        - a text or a list of texts: tokenized with `tokenize` (`max_length` cuts the prompt side, never the
          reward token); `attention_mask` must then be None;
        - token ids, `[batch, pos]` or `[pos]` (an integer tensor; not bool, not float), with an optional
          `attention_mask` of the same shape;
        - a `(tokens, attention_mask)` pair as `tokenize` returns it, or a mapping with `input_ids` (and
          `attention_mask`), e.g. an HF `BatchEncoding`.

        Rules (each broken one raises `InputError` naming the row and value): at least one row and one token;
        ids in `[0, d_vocab)`; at most `n_ctx` tokens; a mask holds only 0 and 1 (bool, int, or float 0./1.),
        and every row has an attended token. A mask may have gaps (interior zeros): masked tokens are invisible
        to the others and positions count from each row's first attended token, which is what HF computes for
        the row without its leading padding. Ids without a mask are all attended, except a run of the
        tokenizer's pad id at the start or end of a row (padding, as `to_tokens` makes it); a pad id between
        other tokens is refused (pass the mask), since it cannot be told apart from a real token.
        """
        if isinstance(inputs, Mapping):
            if "input_ids" not in inputs:
                raise InputError(
                    f"A mapping input needs 'input_ids' (and 'attention_mask'); got keys {sorted(inputs)}."
                )
            if attention_mask is not None and inputs.get("attention_mask") is not None:
                raise InputError("attention_mask is given twice: in the input mapping and as a keyword.")
            if inputs.get("attention_mask") is not None:
                attention_mask = inputs["attention_mask"]
            inputs = inputs["input_ids"]
        elif isinstance(inputs, tuple) and len(inputs) == 2 and isinstance(inputs[0], Tensor):
            if attention_mask is not None:
                raise InputError("attention_mask is given twice: in the (tokens, mask) pair and as a keyword.")
            inputs, attention_mask = inputs
        if isinstance(inputs, str) or (isinstance(inputs, Sequence) and not isinstance(inputs, Tensor)):
            if attention_mask is not None:
                raise InputError("attention_mask is given with text input; pass token ids with a mask, or text alone.")
            tokens, mask = self.tokenize(inputs, max_length=max_length)
            self._warn_unknown_only([inputs] if isinstance(inputs, str) else list(inputs), tokens, mask)
        elif isinstance(inputs, Tensor):
            if max_length is not None:
                raise InputError(
                    "max_length applies to text; token ids are used as given. Cut them yourself (keep the last "
                    "token: the reward is read there), or pass the texts."
                )
            tokens = self._check_token_ids(inputs)
            mask = self._mask_from_pad_tokens(tokens) if attention_mask is None else check_mask(attention_mask, tokens)
            self._check_length(tokens)
        else:
            raise InputError(
                f"Expected text, a list of texts, token ids or (tokens, attention_mask), got {type(inputs).__name__}."
            )
        last_attended(mask)  # every row must have an attended token
        device = self._input_device() or tokens.device
        return tokens.to(device), mask.to(device)

    def _warn_unknown_only(
        self, texts: list[str], tokens: Int[Tensor, "batch pos"], mask: Int[Tensor, "batch pos"]
    ) -> None:
        """`UnknownTokensWarning` for texts whose tokens, special tokens aside, are all the tokenizer's unknown
        token: the tokenizer knows none of their words (another language, a repr of a list), so their rewards say
        nothing about their content."""
        tok = self.tokenizer
        unk = getattr(tok, "unk_token_id", None)
        if unk is None:
            return
        special = torch.tensor(sorted(set(getattr(tok, "all_special_ids", ())) - {unk}), dtype=torch.long)
        content = mask.bool() & ~torch.isin(tokens, special)
        only_unk = content.any(-1) & (~content | (tokens == unk)).all(-1)
        if bool(only_unk.any()):
            rows = only_unk.nonzero().flatten().tolist()
            warnings.warn(
                UnknownTokensWarning(
                    f"Text(s) {rows[:10]} of {len(texts)} (first: {texts[rows[0]]!r:.80}) tokenize to nothing but the "
                    f"unknown token {tok.unk_token!r}: the tokenizer knows none of their words, so their rewards say "
                    "nothing about their content. Check the texts (another language or tokenizer? a repr of a list "
                    "or of messages?).",
                    rows,
                ),
                stacklevel=3,
            )

    def _check_token_ids(self, ids: Tensor) -> Int[Tensor, "batch pos"]:
        """Token ids as a `[batch, pos]` int64 tensor, or `InputError` saying what is wrong with them."""
        if ids.dtype == torch.bool:
            raise InputError(
                "Token ids are a bool tensor; ids must be integers. A bool tensor is usually a mask: pass it as "
                "attention_mask= beside the token ids."
            )
        if ids.is_floating_point() or ids.is_complex():
            raise InputError(f"Expected token ids (an integer tensor), got a {ids.dtype} tensor.")
        tokens = ids.unsqueeze(0) if ids.ndim == 1 else ids
        if tokens.ndim != 2:
            raise InputError(f"Token ids must be [batch, pos] (or [pos]), got shape {tuple(ids.shape)}.")
        if tokens.shape[0] == 0:
            raise InputError(f"The batch is empty (token ids of shape {tuple(ids.shape)}): pass at least one row.")
        if tokens.shape[-1] == 0:
            raise InputError("Token ids are empty: at least one token is needed to read a reward.")
        d_vocab = getattr(self.cfg, "d_vocab", -1)
        if d_vocab and d_vocab > 0:
            bad = (tokens >= d_vocab) | (tokens < 0)
            if bool(bad.any()):
                row, pos = (int(i) for i in bad.nonzero()[0])
                raise InputError(
                    f"Token ids must lie in [0, {d_vocab}); row {row} has {int(tokens[row, pos])} at position {pos}."
                )
        return tokens.long()

    def _mask_from_pad_tokens(self, tokens: Int[Tensor, "batch pos"]) -> Int[Tensor, "batch pos"]:
        """The mask of token ids given without one: all ones, except a run of the tokenizer's pad id at the start
        or end of a row (padding, e.g. from `to_tokens` on a batch), when that id is not also BOS/EOS/UNK.
        A pad id between other tokens is ambiguous (padding, or a real token?) and raises `InputError`."""
        tok = self.tokenizer
        pad = getattr(tok, "pad_token_id", None) if tok is not None else None
        if pad is None or pad in {getattr(tok, a, None) for a in ("bos_token_id", "eos_token_id", "unk_token_id")}:
            return torch.ones_like(tokens)
        mask = (tokens != pad).long()
        gaps = interior_gaps(mask)
        if bool(gaps.any()):
            row, pos = (int(i) for i in gaps.nonzero()[0])
            raise InputError(
                f"Row {row} of the token ids has the pad id {pad} at position {pos}, between other tokens, and no "
                "attention_mask was given: it cannot be told whether that token is padding. Pass the "
                "attention_mask (e.g. from `model.tokenize(texts)`)."
            )
        return mask

    def to_tokens(
        self,
        input: str | Sequence[str],
        prepend_bos: bool | None = None,
        padding_side: str | None = None,
        move_to_device: bool = True,
        truncate: bool = True,
    ) -> Int[Tensor, "batch pos"]:
        """Token ids as `tokenize` makes them, without the mask (TransformerLens 4's signature).

        `prepend_bos`, `padding_side` as in `tokenize` (None: the checkpoint's own special tokens, once; False: a
        fragment, no special tokens, as `to_single_token` uses). `move_to_device` puts the ids on the model's
        input device (else they stay on the CPU). `truncate=True` keeps at most `cfg.n_ctx` tokens per row by
        cutting the prompt side (TransformerLens cuts the end, which for a reward model would cut the token the
        reward is read from); `truncate=False` raises for longer texts. Prefer `tokenize`, which also returns the
        attention mask; ids passed without a mask read padding from the tokenizer's pad id where that is
        unambiguous.
        """
        n_ctx = getattr(self.cfg, "n_ctx", None)
        max_length = n_ctx if truncate and n_ctx is not None and n_ctx > 0 else None
        tokens = self.tokenize(input, max_length=max_length, prepend_bos=prepend_bos, padding_side=padding_side)[0]
        if move_to_device:
            tokens = tokens.to(self._input_device() or tokens.device)
        return tokens

    def _prepare_tl(
        self,
        input: ModelInputs,
        attention_mask: Tensor | None,
        prepend_bos: bool | None = None,
        padding_side: str | None = None,
    ) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch pos"]]:
        """`prepare`, with TransformerLens's tokenization keywords applied to text input (ignored for token ids,
        as in TransformerLens)."""
        is_text = isinstance(input, str) or (
            isinstance(input, Sequence) and not isinstance(input, tuple) and all(isinstance(t, str) for t in input)
        )
        if is_text and (prepend_bos is not None or padding_side is not None):
            if attention_mask is not None:
                raise InputError("attention_mask is given with text input; pass token ids with a mask, or text alone.")
            return self.prepare(self.tokenize(input, prepend_bos=prepend_bos, padding_side=padding_side))
        return self.prepare(input, attention_mask=attention_mask)

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
    def forward(
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
            tokens, residual, mask = None, *self._residual_input(input, attention_mask)
        else:
            residual = None
            tokens, mask = self._prepare_tl(input, attention_mask, prepend_bos, padding_side)
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
        rewards = self.hook_reward(rewards)
        if tokens is not None:
            kept = apply_nan_policy(self, rewards, tokens, mask, nan_policy)
            if kept is not None:
                rewards = rewards[kept]
        return None if return_type is None else rewards

    def _run_positions(self, mask: Tensor, tokens: Tensor | None) -> Tensor:
        """The reward positions of a run: the checkpoint's rule on its tokens, or, from a residual (no token ids),
        each row's last attended token."""
        return self.reward_positions(mask, tokens) if tokens is not None else last_attended(mask)

    def _layer_index(self, layer: int) -> int:
        return self.cfg.n_layers + layer if layer < 0 else layer

    def _residual_input(
        self, residual: Any, attention_mask: Tensor | None
    ) -> tuple[Float[Tensor, "batch pos d_model"], Int[Tensor, "batch pos"]]:
        """A `start_at_layer` input: a float residual `[batch, pos, d_model]` (or `[pos, d_model]`) and its mask."""
        d_model = self.cfg.d_model
        if not (isinstance(residual, Tensor) and residual.is_floating_point()):
            raise InputError(
                "start_at_layer takes the residual entering that block, a float tensor [batch, pos, d_model] (e.g. "
                f"cache['blocks.k.hook_resid_pre']), got {type(residual).__name__}"
                + (f" of dtype {residual.dtype}." if isinstance(residual, Tensor) else ".")
            )
        residual = residual[None] if residual.ndim == 2 else residual
        if residual.ndim != 3 or residual.shape[-1] != d_model:
            raise InputError(f"start_at_layer needs a residual [batch, pos, {d_model}], got {tuple(residual.shape)}.")
        shape_like = torch.empty(residual.shape[:2], dtype=torch.long)
        mask = torch.ones_like(shape_like) if attention_mask is None else check_mask(attention_mask, shape_like)
        device = self._input_device() or residual.device
        return residual.to(device), mask.to(device)

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

    def _cache_positions(self, positions: PositionsArg, mask: Tensor, tokens: Tensor | None) -> Tensor | None:
        """Per-row position to keep in the cache, or None to keep every position."""
        if positions is None:
            return None
        batch, seq = mask.shape
        if isinstance(positions, str):
            if position_choice(positions) == "all":
                return None
            return self._run_positions(mask, tokens)
        if isinstance(positions, (list, tuple)):
            positions = torch.as_tensor(positions)
        if isinstance(positions, bool) or not isinstance(positions, (numbers.Integral, Tensor)):
            raise InputError(
                f"positions must be None, 'reward', an int or a [batch] integer tensor; got {positions!r}."
            )
        if isinstance(positions, Tensor) and (
            positions.dtype == torch.bool or positions.is_floating_point() or positions.is_complex()
        ):
            raise InputError(
                f"positions must be integers, got a {positions.dtype} tensor {positions.tolist()}; "
                "a float or bool position is not converted for you."
            )
        pos = torch.as_tensor(positions, device=mask.device).long()
        if pos.ndim == 0:
            pos = pos.expand(batch)
        if pos.shape != (batch,):
            raise InputError(f"positions must have one entry per row ({batch}), got shape {tuple(pos.shape)}.")
        if bool(((pos >= seq) | (pos < -seq)).any()):
            raise InputError(
                f"positions {pos.tolist()} lie outside the sequence of length {seq}; valid positions are "
                f"{-seq}..{seq - 1} (or positions='reward')."
            )
        pos = pos % seq
        padded = mask.gather(1, pos[:, None].to(mask.device))[:, 0] == 0
        if bool(padded.any()):
            row = int(padded.nonzero()[0])
            attended = mask[row].nonzero().flatten()
            raise InputError(
                f"positions {pos.tolist()}: position {int(pos[row])} of row {row} is padding (the row's tokens are at "
                f"{int(attended[0])}..{int(attended[-1])}), so its activations belong to no token. Pick an attended "
                "position per row, or positions='reward' (each row's last token, whatever the padding)."
            )
        return pos

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
        if incl_bwd and stop_at_layer is not None:
            raise InputError("incl_bwd=True cannot be combined with stop_at_layer: no reward to differentiate.")
        if incl_bwd and not torch.is_grad_enabled():
            raise InputError(
                "incl_bwd=True needs autograd, but gradient tracking is off (torch.no_grad(), "
                "set_grad_enabled(False) or inference mode). Run the call under torch.enable_grad()."
            )
        if pos_slice is not None and positions is not None:
            raise InputError("Pass positions= (ours, reward-aware) or pos_slice= (TransformerLens's), not both.")
        tokens: Tensor | None = None
        if start_at_layer is not None:
            _, mask = self._residual_input(input, attention_mask)
            model_input: Any = input
        else:
            tokens, mask = self._prepare_tl(input, attention_mask, prepend_bos, padding_side)
            model_input = tokens
        keep_pos = self._cache_positions(positions, mask, tokens)
        if remove_batch_dim and mask.shape[0] != 1:
            raise InputError(
                f"remove_batch_dim=True needs a batch of one, got {mask.shape[0]} rows; index the cache per row."
            )
        slicer = None if pos_slice is None else Slice.unwrap(pos_slice)
        batch, seq = mask.shape
        store: dict[str, Tensor] = {}
        # The same tensor often fires at several hook points (resid_post l, resid_pre l+1, ln1.hook_in; rotary
        # cos/sin at every layer): gather it once. Sources are held by weak reference, so a freed source whose
        # memory is reused cannot be mistaken for a live one.
        gathered_from: dict[tuple, tuple[weakref.ref, int, Tensor]] = {}

        def reduce(name: str, source: Tensor, hook_point: HookPoint) -> Tensor:
            tensor = source.detach()
            if slicer is not None and name not in self._reward_hook_names and tensor.ndim >= 2:
                tensor = slicer.apply(tensor, dim=self._pos_slice_dim(name, hook_point))
            if keep_pos is not None and name not in self._reward_hook_names and tensor.ndim >= 2:
                pos_dim = self._pos_slice_dim(name, hook_point) % tensor.ndim
                if tensor.shape[0] in (1, batch) and pos_dim > 0 and tensor.shape[pos_dim] == seq:
                    # inference tensors have no version counter to tell an in-place edit: gather those each time
                    key = (tensor.data_ptr(), tuple(tensor.shape), tensor.stride(), tensor.dtype, pos_dim)
                    version = None if tensor.is_inference() else tensor._version
                    seen = gathered_from.get(key) if version is not None else None
                    if seen is not None and seen[0]() is not None and seen[1] == version:
                        return seen[2]
                    if tensor.shape[0] == 1 and bool((keep_pos == keep_pos[0]).all()):
                        gathered = gather_at_positions(tensor, keep_pos[:1], pos_dim)  # shared row (rotary)
                    else:
                        full = tensor.expand(batch, *tensor.shape[1:])  # broadcast the shared row per row
                        gathered = gather_at_positions(full, keep_pos, pos_dim)
                    gathered = gathered.to(device) if device is not None else gathered
                    if version is not None:
                        gathered_from[key] = (weakref.ref(source), version, gathered)
                    return gathered
            return tensor.to(device) if device is not None else tensor

        def make_hook(names: list[str], suffix: str) -> Callable:
            def hook(tensor: Any, hook: HookPoint) -> Any:
                value = tensor[0] if isinstance(tensor, tuple) else tensor
                if isinstance(value, Tensor):
                    kept = reduce(names[0], value, hook)
                    for name in names:
                        store[name + suffix] = kept
                return None if suffix else tensor

            return hook

        selected = [
            names
            for _, names in self._select_hooks(names_filter).values()
            if self._runs_in_range(names[0], stop_at_layer, start_at_layer)
        ]
        rows: list = []
        if keep_pos is not None and slicer is None and not incl_bwd:
            # a reward-position cache keeps one query row of each pattern: fused layers compute only that row
            selected, rows = split_pattern_rows(self, selected)

        def store_rows(names: list[str], tensor: Tensor) -> None:
            for name in names:
                store[name] = tensor.to(device) if device is not None else tensor

        fwd = [(names[0], make_hook(names, "")) for names in selected]
        bwd = [(names[0], make_hook(names, "_grad")) for names in selected] if incl_bwd else []
        bad: list[int] = []
        hooks = self.hooks(fwd_hooks=fwd, bwd_hooks=bwd, reset_hooks_end=reset_hooks_end, clear_contexts=clear_contexts)
        with hooks, pattern_rows(rows, keep_pos, store_rows):
            output = self.forward(
                model_input,
                attention_mask=mask,
                nan_policy="propagate",
                stop_at_layer=stop_at_layer,
                start_at_layer=start_at_layer,
            )
            if stop_at_layer is None and tokens is not None:
                bad = non_finite_rows(output) if nan_policy != "propagate" else []
            if incl_bwd:
                if output.ndim != 1:
                    raise InputError("incl_bwd needs a single-output head; select an output with run_with_hooks.")
                if not (bad and nan_policy == "raise"):
                    finite = torch.ones_like(output, dtype=torch.bool)
                    finite[bad] = False
                    output[finite].sum().backward()
        kept = apply_nan_policy(self, output, tokens, mask, nan_policy) if bad else None
        if kept is not None:  # nan_policy="omit": drop the rows from the rewards and from every cached tensor
            dropped: dict[int, Tensor] = {}  # aliases of one tensor stay one tensor
            for name, value in store.items():
                if value.ndim and value.shape[0] == batch:
                    store[name] = dropped.setdefault(id(value), value.index_select(0, kept.to(value.device)))
            output, mask, batch = output[kept], mask[kept], len(kept)
            tokens = None if tokens is None else tokens[kept.to(tokens.device)]
            keep_pos = None if keep_pos is None else keep_pos[kept]
        cache = RewardActivationCache(
            store,
            self,
            reward_pos=self._run_positions(mask, tokens),
            cached_pos=keep_pos,
            attention_mask=mask,
            pos_slice=slicer,
        )
        if remove_batch_dim:
            cache.remove_batch_dim(batch_size=batch)
        output = None if return_type is None and stop_at_layer is None else output
        return (output, cache) if return_cache_object else (output, cache.cache_dict)

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
