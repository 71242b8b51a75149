"""Fused attention for layers whose pattern nobody reads.

TransformerLens's attention bridges compute every layer's pattern explicitly,

    scores = q k^T * scale ─▶ mask ─▶ hook_attn_scores ─▶ softmax ─▶ hook_pattern ─▶ pattern v,

so that `hook_attn_scores` and `hook_pattern` can fire: `batch x heads x seq²` floats per layer and a cost
quadratic in length, where HF calls `torch.nn.functional.scaled_dot_product_attention` (SDPA). Here a layer
takes the fused path when, at the moment it runs, neither of those two hook points has a hook (no
`run_with_hooks`/`add_hook` on it, no `run_with_cache` filter that includes it, no patch of it):

* q, k and v, the q/k norms, the rotary cos/sin and rotation, the output projection are computed exactly as
  TransformerLens's bridge computes them, through the same sub-bridges, so `hook_in`, `hook_q/k/v`,
  `hook_q_normed/k_normed`, `hook_cos/sin`, `hook_rot_q/k`, `hook_z`, `hook_out` (and the residual hooks around
  the layer) fire with the same values, and a hook on any of them changes the output as it does on the explicit
  path;
* the attention itself is HF's own `sdpa_attention_forward` on HF's own mask (the kernel HF's "sdpa"
  implementation uses: causal flag or mask, sliding window through the mask, GQA, scaling); a KV cache
  (`past_key_values`, as the fast patching sweep passes) extends k and v as on the explicit path.

A hook on `hook_attn_scores` or `hook_pattern` of a layer sends that layer, and only that layer, back to
TransformerLens's explicit path. A reward-position cache (`run_with_cache(positions="reward")`) keeps only one
query row of each pattern: it asks for those rows (`pattern_rows`) instead of hooking the pattern, and a fused
layer computes them alone. So do features SDPA does not have or that this module does not reproduce:
soft-capping (Gemma-2), attention sinks, split-qkv / attn-result modes, dropout in training mode,
TransformerLens's compatibility mode, and the rarer adapter options (`fused_attention_blocker` lists them).
`model.set_fused_attention(False)` turns it off for every layer.
"""

from __future__ import annotations

import hooked_reward._hf_logging  # noqa: F401  (before TransformerLens, which silences HF's logger)

# isort: split
import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens.model_bridge.generalized_components.joint_qkv_attention import JointQKVAttentionBridge
from transformer_lens.model_bridge.generalized_components.position_embeddings_attention import (
    PositionEmbeddingsAttentionBridge,
)
from transformer_lens.utilities.hf_utils import get_rotary_pct_from_config
from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from hooked_reward.unhooked import global_module_hooks, has_hooks

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

FUSED, EXPLICIT = "fused", "explicit"
PATTERN_HOOKS = ("hook_attn_scores", "hook_pattern")

# Config flags (TransformerLens's or the HF attention's) under which only the explicit path is reproduced.
_CONFIG_FLAGS = (
    "use_split_qkv_input",
    "use_attn_in",
    "use_attn_result",
    "gated_q_proj",
    "rotary_interleaved_cos_sin",
    "rotary_adjacent_pairs",
    "qk_norm_after_rope",
)
_HF_ATTRIBUTES = ("key_multiplier", "sinks", "attn_logit_softcapping")


def fused_attention_blocker(attn: FusedAttentionMixin, kwargs: dict[str, Any]) -> str | None:
    """Why this call of `attn` must take the explicit path, or None when it can run fused.

    Checked on every call (hooks come and go between forwards); each check is an attribute read."""
    if not attn._fused_attention_enabled:
        return "fused attention is turned off (model.set_fused_attention(False))"
    for name in PATTERN_HOOKS:
        if has_hooks(getattr(attn, name)):
            return f"{name} has a hook"
    if global_module_hooks():
        return "a global nn.Module hook is registered"
    if attn.compatibility_mode:
        return "TransformerLens compatibility mode (-inf masks, NaN scrubbing) is on"
    hf_attn = attn.original_component
    if attn.training and float(getattr(hf_attn, "attention_dropout", 0.0) or 0.0) > 0.0:
        return "attention dropout in training mode"
    if kwargs.get("output_attentions"):
        return "output_attentions asks for the pattern"
    for flag in _CONFIG_FLAGS:
        if getattr(attn.config, flag, False):
            return f"config.{flag} is set"
    for name in _HF_ATTRIBUTES:
        if getattr(hf_attn, name, None) is not None:
            return f"the HF attention has {name}"
    hf_config = getattr(hf_attn, "config", None)
    if getattr(hf_config, "clip_qkv", None) is not None:
        return "config.clip_qkv is set"
    rope = getattr(hf_config, "rope_parameters", None)
    if isinstance(rope, dict) and rope.get("llama_4_scaling_beta") is not None:
        return "llama-4 query scaling"
    return None


def hf_sdpa(
    hf_attn: torch.nn.Module,
    query: Float[Tensor, "batch head q_pos d_head"],
    key: Float[Tensor, "batch kv_head k_pos d_head"],
    value: Float[Tensor, "batch kv_head k_pos d_head"],
    attention_mask: Tensor | None,
    scaling: float,
) -> Float[Tensor, "batch q_pos head d_head"]:
    """HF's `sdpa_attention_forward` on HF's mask. Queries that are the last `q_pos` of `k_pos` positions (a KV
    cache of earlier positions) with no mask get the causal mask aligned to the end, as TransformerLens's
    explicit path builds it (SDPA's `is_causal` would align it to the start)."""
    q_len, k_len = query.shape[-2], key.shape[-2]
    if attention_mask is None and 1 < q_len != k_len and getattr(hf_attn, "is_causal", True):
        causal = torch.ones(q_len, k_len, dtype=torch.bool, device=query.device).tril(k_len - q_len)
        attention_mask = causal[None, None]  # [1, 1, q_pos, k_pos]; one query sees every key without a mask
    return sdpa_attention_forward(hf_attn, query, key, value, attention_mask, scaling=scaling)[0]


RowCallback = Callable[[Tensor], None]


if TYPE_CHECKING:  # the mixin is only ever combined with a TransformerLens attention bridge: type it as one
    from transformer_lens.model_bridge.generalized_components.attention import AttentionBridge as _AttentionHost
else:
    _AttentionHost = object


class FusedAttentionMixin(_AttentionHost):
    """Shared state of the fused attention bridges: whether fusing is on, which path the last call took, and the
    pattern rows a reward-position cache asks for (`pattern_rows`)."""

    _fused_attention_enabled: bool = True
    _last_attention_path: str | None = None
    _row_requests: dict[str, RowCallback] | None = None  # "hook_attn_scores"/"hook_pattern" -> callback
    _row_positions: Tensor | None = None  # [batch]: the query row each batch row keeps

    def _emit_rows(
        self,
        query: Float[Tensor, "batch head q_pos d_head"],
        key: Float[Tensor, "batch kv_head k_pos d_head"],
        attention_mask: Tensor | None,
        scaling: float,
    ) -> None:
        """Hand the requested rows of the scores and pattern (`[batch, head, 1, k_pos]`, the query row of
        `_row_positions`), computed as the explicit path computes them but for those rows only."""
        requests, positions = self._row_requests, self._row_positions
        if not requests or positions is None:
            return
        batch, n_heads, _, _ = query.shape
        rows = torch.arange(batch, device=query.device)
        pos = positions.to(query.device)
        key = repeat_kv(key, n_heads // key.shape[1])
        scores = torch.matmul(query[rows, :, pos].unsqueeze(2), key.transpose(-2, -1)) * scaling
        k_len = key.shape[-2]
        if attention_mask is None:  # causal: the row sees keys up to its own position
            mask = torch.arange(k_len, device=query.device)[None, :] <= pos[:, None]
            mask = mask[:, None, None, :]
        else:
            mask = attention_mask.expand(batch, -1, -1, -1)[rows, :, pos][:, :, None, :k_len]
        scores = self._apply_reconstruct_attention_mask(
            attn_scores=scores, attention_mask=mask, seq_len=k_len, q_seq_len=1
        )
        if "hook_attn_scores" in requests:
            requests["hook_attn_scores"](scores.detach())
        if "hook_pattern" in requests:
            pattern = self._masked_softmax(scores, dtype=torch.float32).to(query.dtype)
            requests["hook_pattern"](self._scrub_compatibility_pattern_nans(pattern).detach())

    @contextmanager
    def _rows_from_hooks(self) -> Iterator[None]:
        """On the explicit path, take the requested rows from the full scores and pattern as they fire."""
        requests, positions = self._row_requests, self._row_positions
        handles = []
        for which, callback in (requests or {}).items():

            def gather(_module: torch.nn.Module, _args: Any, out: Tensor, callback: RowCallback = callback) -> None:
                rows = torch.arange(out.shape[0], device=out.device)
                callback(out.detach()[rows, :, positions.to(out.device)].unsqueeze(2))  # type: ignore[union-attr]

            handles.append(getattr(self, which).register_forward_hook(gather))
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    @property
    def last_attention_path(self) -> str | None:
        """The path ("fused" or "explicit") this layer's last forward took (None before the first)."""
        return self._last_attention_path

    def _record_path(self, path: str) -> None:
        self._last_attention_path = path


class FusedPositionEmbeddingsAttention(FusedAttentionMixin, PositionEmbeddingsAttentionBridge):
    """TransformerLens's rotary attention bridge (Llama, Mistral, Qwen, Gemma, ...) with a fused path."""

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        blocker = fused_attention_blocker(self, kwargs)
        has_rope = kwargs.get("position_embeddings") is not None
        if blocker is None and not has_rope and getattr(self.config, "positional_embedding_type", None) == "rotary":
            blocker = "no position_embeddings on a rotary architecture"  # TransformerLens warns on this path
        if blocker is not None or self.original_component is None:
            self._record_path(EXPLICIT)
            with self._rows_from_hooks():
                return super().forward(*args, **kwargs)
        self._record_path(FUSED)
        if "hidden_states" in kwargs:
            hidden_states = kwargs.pop("hidden_states")
        else:
            hidden_states, args = args[0], args[1:]
        return self._fused_forward(hidden_states, kwargs.pop("position_embeddings", None), kwargs)

    def _fused_forward(
        self,
        hidden_states: Float[Tensor, "batch pos d_model"],
        position_embeddings: tuple[Tensor, Tensor] | None,
        kwargs: dict[str, Any],
    ) -> tuple[Float[Tensor, "batch pos d_model"], None]:
        """`PositionEmbeddingsAttentionBridge.forward`'s default path (same sub-bridges and hooks, in the same
        order), with SDPA in place of the explicit scores, softmax and pattern."""
        hf_attn: Any = self.original_component
        hidden_states = self.hook_in(hidden_states)
        input_shape = hidden_states.shape[:-1]
        head_dim = hf_attn.head_dim
        hidden_shape = (*input_shape, -1, head_dim)

        query = self.q(hidden_states)
        key = self.k(hidden_states)
        value = self.v(hidden_states)
        has_q_norm, has_k_norm = "q_norm" in self.submodules, "k_norm" in self.submodules
        if has_q_norm and self._qk_norm_phase == "pre_reshape":  # OLMo-2: RMS over all heads
            query = self._apply_pre_reshape_qk_norm(query, self.q_norm, self.hook_q_normed, head_dim)
            if has_k_norm:
                key = self._apply_pre_reshape_qk_norm(key, self.k_norm, self.hook_k_normed, head_dim)
        query = query.view(hidden_shape).transpose(1, 2)  # [batch, head, pos, d_head]
        key = key.view(hidden_shape).transpose(1, 2)
        value = value.view(hidden_shape).transpose(1, 2)
        if has_q_norm and self._qk_norm_phase == "post_reshape":  # Qwen3, Gemma-3: per head
            if self._qk_norm_per_head:
                query = self.hook_q_normed(self.q_norm(query.transpose(1, 2)).transpose(1, 2))
                if has_k_norm:
                    key = self.hook_k_normed(self.k_norm(key.transpose(1, 2)).transpose(1, 2))
            else:
                query = self.hook_q_normed(self.q_norm(query))
                if has_k_norm:
                    key = self.hook_k_normed(self.k_norm(key))

        if position_embeddings is not None:
            cos, sin = self._apply_position_embedding_hooks(position_embeddings)
            rotary_dim = cos.shape[-1]
            if rotary_dim * 2 == head_dim and get_rotary_pct_from_config(self.config) == 1.0:
                cos, sin = torch.cat([cos, cos], dim=-1), torch.cat([sin, sin], dim=-1)
                query, key = apply_rotary_pos_emb(query, key, cos, sin)
            elif rotary_dim < head_dim:  # partial rotary: rotate the first rotary_dim dims only
                q_rot, k_rot = apply_rotary_pos_emb(query[..., :rotary_dim], key[..., :rotary_dim], cos, sin)
                query = torch.cat([q_rot, query[..., rotary_dim:]], dim=-1)
                key = torch.cat([k_rot, key[..., rotary_dim:]], dim=-1)
            else:
                query, key = apply_rotary_pos_emb(query, key, cos, sin)
        if hasattr(self, "hook_rot_q"):
            query = self.hook_rot_q(query)
        if hasattr(self, "hook_rot_k"):
            key = self.hook_rot_k(key)

        key, value = self._update_kv_cache(key, value, **kwargs)  # a KV cache (e.g. the fast patching sweep)
        scaling = getattr(hf_attn, "scaling", head_dim**-0.5)
        self._emit_rows(query, key, kwargs.get("attention_mask"), scaling)
        attn_output = hf_sdpa(hf_attn, query, key, value, kwargs.get("attention_mask"), scaling)
        attn_output = attn_output.reshape(*input_shape, -1)  # [batch, pos, head * d_head]
        attn_output = self._pre_output_projection(attn_output)
        o_weight = getattr(getattr(getattr(self, "o", None), "original_component", None), "weight", None)
        if (
            isinstance(o_weight, Tensor)
            and o_weight.dtype.is_floating_point
            and attn_output.is_floating_point()
            and attn_output.dtype != o_weight.dtype
        ):
            attn_output = attn_output.to(dtype=o_weight.dtype)
        attn_output = self.hook_out(self.o(attn_output))  # self.o fires hook_z (o.hook_in)
        return attn_output, None


class FusedJointQKVAttention(FusedAttentionMixin, JointQKVAttentionBridge):
    """TransformerLens's joint-qkv attention bridge (GPT-2 style `c_attn`) with a fused path."""

    def _reconstruct_attention(self, q: Tensor, k: Tensor, v: Tensor, **kwargs: Any) -> tuple:
        blocker = fused_attention_blocker(self, kwargs)
        assert self.config is not None  # a bridge built from a model has its TransformerLens config
        num_heads = self.config.n_heads
        num_kv_heads = getattr(self.config, "n_key_value_heads", None) or num_heads
        if blocker is None and num_kv_heads != num_heads:
            blocker = "grouped key/value heads on a joint-qkv bridge"
        if blocker is None and getattr(self, "_reorder_and_upcast_attn", False):
            blocker = "reorder_and_upcast_attn (float32 scores)"
        if blocker is not None:
            self._record_path(EXPLICIT)
            with self._rows_from_hooks():
                return super()._reconstruct_attention(q, k, v, **kwargs)
        self._record_path(FUSED)
        self._pattern = None  # no pattern was computed by this call
        q, k, v, batch_size, seq_len, head_dim = self._reshape_qkv_to_heads(q, k, v, num_heads, num_kv_heads)
        k, v = self._update_kv_cache(k, v, **kwargs)
        scale = head_dim ** (-0.5)
        if getattr(self.config, "scale_attn_by_inverse_layer_idx", False) and self._layer_idx is not None:
            scale /= float(self._layer_idx + 1)
        self._emit_rows(q, k, kwargs.get("attention_mask"), scale)
        assert self.original_component is not None  # the HF attention module this bridge wraps
        attn_output = hf_sdpa(self.original_component, q, k, v, kwargs.get("attention_mask"), scale)
        attn_output = attn_output.reshape(batch_size, seq_len, num_heads * head_dim)
        return self._apply_output_projection(attn_output), None


_FUSED_CLASSES: dict[type, type] = {
    PositionEmbeddingsAttentionBridge: FusedPositionEmbeddingsAttention,
    JointQKVAttentionBridge: FusedJointQKVAttention,
}


def install_fused_attention(model: TransformerBridge) -> int:
    """Give each attention bridge of `model` whose class is exactly one TransformerLens bridge reproduced here
    its fused subclass (the same object, only its class changes: weights, hooks and registry are untouched).
    Other attention bridges (subclasses with their own forward) keep the explicit path. Returns how many
    layers can run fused."""
    count = 0
    for block in getattr(model, "blocks", []):
        attn = getattr(block, "attn", None)
        fused_class = _FUSED_CLASSES.get(type(attn))
        if fused_class is not None:
            attn.__class__ = fused_class
            count += 1
    return count


def set_fused_attention(model: TransformerBridge, enabled: bool) -> None:
    """Turn the fused path on or off for every attention layer of `model` (on by default)."""
    for block in getattr(model, "blocks", []):
        attn = getattr(block, "attn", None)
        if isinstance(attn, FusedAttentionMixin):
            attn._fused_attention_enabled = bool(enabled)


def split_pattern_rows(
    model: TransformerBridge, selected: list[list[str]]
) -> tuple[list[list[str]], list[tuple[FusedAttentionMixin, str, list[str]]]]:
    """Split the hook names a cache selected (each entry: the names of one hook point) into those hooked as
    usual and the scores/patterns of fused attention layers, whose reward rows `pattern_rows` computes."""
    owners: dict[int, tuple[FusedAttentionMixin, str]] = {}
    for block in getattr(model, "blocks", []):
        attn = getattr(block, "attn", None)
        if isinstance(attn, FusedAttentionMixin):
            for which in PATTERN_HOOKS:
                owners[id(getattr(attn, which))] = (attn, which)
    hooked, rows = [], []
    for names in selected:
        owner = owners.get(id(model.hook_dict[names[0]]))
        if owner is None:
            hooked.append(names)
        else:
            rows.append((owner[0], owner[1], names))
    return hooked, rows


@contextmanager
def pattern_rows(
    rows: list[tuple[FusedAttentionMixin, str, list[str]]],
    positions: Int[Tensor, " batch"] | None,
    store: Callable[[list[str], Tensor], None],
) -> Iterator[None]:
    """While active, each `(attention, "hook_attn_scores" | "hook_pattern", names)` hands `store(names, rows)`
    the query row `positions[b]` of each batch row, `[batch, head, 1, k_pos]`, without a hook on the pattern: a
    fused layer stays fused and computes those rows alone (O(seq) instead of O(seq²)); a layer on the explicit
    path gathers them from its full pattern."""
    for attn, which, names in rows:
        if attn._row_requests is None:
            attn._row_requests = {}
        attn._row_requests[which] = functools.partial(store, names)
        attn._row_positions = positions
    try:
        yield
    finally:
        for attn, _, _ in rows:
            attn._row_requests, attn._row_positions = None, None


def attention_paths(model: TransformerBridge) -> list[str | None]:
    """The path ("fused" or "explicit") each layer's attention took in the last forward (None: never ran, or
    an attention bridge this module does not fuse)."""
    return [getattr(getattr(block, "attn", None), "last_attention_path", None) for block in model.blocks]
