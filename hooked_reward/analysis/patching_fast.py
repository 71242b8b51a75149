"""The fast residual sweep: patch one position of the residual stream without recomputing what it cannot change.

A patch written into the residual stream entering block `l` at position `p` changes nothing before block `l`
and, under causal attention, nothing at positions before `p`. So each patched run here is

    target resid entering block l, positions p..T-1 (position p replaced by the source vector)
        ─▶ blocks l..L-1 on those T − p positions only, attending to the *unpatched* target run's keys and
           values at positions 0..p-1 (recorded once) ─▶ ln_final ─▶ reward position ─▶ head

which costs about (L − l)/L · (T − p)/T of a full forward: ≈ 1/4 of one forward per patch over a full
layer × position grid. The patched runs of one position share one growing batch: the run patched at block 0
enters first, the one patched at block 1 joins it at block 1, and so on (`max_rows` rows per batch at most).

Everything model-specific is taken from one real forward of the target run, so no architecture is special-cased:
the positional arguments each block receives (rotary cos/sin, position ids, the 4-D attention mask including
sliding windows and Gemma-2's alternating layer types) are recorded there and sliced to the suffix (query rows
p..T-1; the key axis stays whole), and the keys/values each attention layer sees are recorded by handing the
TransformerLens attention bridges a cache object (`past_key_values`, after RoPE and any q/k norms). The blocks
are the bridged blocks (`model.blocks[k]`), so hook points inside them fire, on the suffix only.

Where the shortcut cannot be shown to apply, `plan_fast_sweep` returns a reason and the caller runs the plain
sweep: non-causal attention (a recorded mask that lets a position see a later one), a block input or argument
with a position axis it does not know how to slice, attention modules without a layer index, `resid_mid`
(inside a block), or a self-check that fails. The self-check reruns the unpatched target through the fast
machinery twice (from block 0 at position 0, and from the middle block at the middle position) and requires the
model's own reward to 1e-4 relative; it costs about one forward.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hooked_reward.model import HookedRewardModel

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from hooked_reward.outputs import OutputArg, select_output

__all__ = ["FastSweep", "plan_fast_sweep", "fast_resid_rewards", "fast_sweep_pays", "FAST_SWEEP_MIN_WORK"]

FAST_HOOKS = ("resid_pre", "resid_post")

#: The fast sweep is used (by default) from `n_layers x seq_len x d_model` of this size on. Its per-block Python
#: overhead (one call per block per position, on a few rows) is paid back by the ~3/4 of the compute it skips once
#: the model is deep, long or wide enough. Measured crossover on CPU, one thread, `python benchmarks/sweep_speed.py
#: --crossover` (docs/performance.md): between 25,000 and 41,000 for d_model 64-512, 2-8 layers; 48,000 keeps the
#: fast sweep out of the band where it is not clearly faster.
FAST_SWEEP_MIN_WORK = 48_000
_SLICED_KWARGS = ("attention_mask", "position_embeddings", "position_ids", "cache_position")


class _PrefixKV:
    """A duck-typed HF cache handed to the attention bridges.

    Recording (`prefix_len is None`): stores each layer's keys/values `[1, kv_heads, T, d_head]` and returns them
    unchanged. Extending: returns the recorded keys/values of positions `< prefix_len`, broadcast over the batch,
    followed by the suffix's own.
    """

    def __init__(self) -> None:
        self.keys: dict[int, Tensor] = {}
        self.values: dict[int, Tensor] = {}
        self.prefix_len: int | None = None

    def update(self, key: Tensor, value: Tensor, layer_idx: int, *args: Any, **kwargs: Any) -> tuple[Tensor, Tensor]:
        p = self.prefix_len
        if p is None:
            self.keys[layer_idx], self.values[layer_idx] = key.detach(), value.detach()
            return key, value
        if p == 0:
            return key, value
        pk = self.keys[layer_idx][:, :, :p].expand(key.shape[0], -1, -1, -1)
        pv = self.values[layer_idx][:, :, :p].expand(value.shape[0], -1, -1, -1)
        return torch.cat([pk, key], dim=-2), torch.cat([pv, value], dim=-2)

    def get_seq_length(self, layer_idx: int = 0) -> int:  # noqa: ARG002 (HF Cache signature)
        return self.prefix_len or 0


@dataclass
class FastSweep:
    """What one forward of the target run recorded: every block's input and arguments, the final residual, the
    keys/values, and the reward. Built by `plan_fast_sweep`."""

    model: HookedRewardModel
    target: Int[Tensor, " pos"]
    resid_in: list[Float[Tensor, "pos d_model"]]  # entering block k (k = 0..L-1); index L: entering ln_final
    final: Float[Tensor, "pos d_model"]  # ln_final output
    block_args: list[tuple[tuple[Any, ...], dict[str, Any]]]
    kv: _PrefixKV
    rewards: Tensor  # the model's own rewards for the target row (`[1]` or `[1, n_outputs]`)
    attns: list[Any]  # each block's attention bridge, handed `kv` as `past_key_values`
    reward_pos: int  # where the model reads the target's reward (`model.reward_positions`)

    def _inject(self, _module: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        kwargs["past_key_values"] = self.kv
        return args, kwargs

    @property
    def n_layers(self) -> int:
        return len(self.block_args)

    @property
    def seq_len(self) -> int:
        return len(self.target)

    def _suffix_args(self, k: int, p: int) -> tuple[tuple[Any, ...], dict[str, Any]]:
        args, kwargs = self.block_args[k]
        out = dict(kwargs)
        if p == 0:
            return args[1:], out
        mask = out.get("attention_mask")
        if isinstance(mask, Tensor):
            out["attention_mask"] = mask[..., p:, :]
        pe = out.get("position_embeddings")
        if pe is not None:
            out["position_embeddings"] = tuple(t[:, p:] for t in pe)
        if isinstance(out.get("position_ids"), Tensor):
            out["position_ids"] = out["position_ids"][..., p:]
        if isinstance(out.get("cache_position"), Tensor):
            out["cache_position"] = out["cache_position"][p:]
        return args[1:], out

    def run_suffix(
        self, p: int, start: Sequence[int], rows: Float[Tensor, "rows d_model"], output: OutputArg = None
    ) -> Tensor:
        """Rewards of runs patched at position `p`: row i enters at block `start[i]` (`L`: straight into
        ln_final) with `rows[i]` written at position `p`; `start` must be non-decreasing."""
        model, L = self.model, self.n_layers
        starts = torch.as_tensor(list(start))
        h: Tensor | None = None
        self.kv.prefix_len = p
        handles = [a.register_forward_pre_hook(self._inject, with_kwargs=True) for a in self.attns]
        try:
            for k in range(int(starts[0]), L + 1):
                joining = (starts == k).nonzero().flatten()
                if len(joining):
                    new = self.resid_in[k][p:].unsqueeze(0).repeat(len(joining), 1, 1)
                    new[:, 0] = rows[joining].to(new.dtype)
                    h = new if h is None else torch.cat([h, new])
                if k == L:
                    break
                args, kwargs = self._suffix_args(k, p)
                out = model.blocks[k](h, *args, **kwargs)
                h = out[0] if isinstance(out, tuple) else out
        finally:
            self.kv.prefix_len = None
            for handle in handles:
                handle.remove()
        final = model.ln_final(h)
        n = final.shape[0]
        if p > 0:
            final = torch.cat([self.final[:p].unsqueeze(0).expand(n, -1, -1).to(final.dtype), final], dim=1)
        tokens = self.target[None].expand(n, -1)
        mask = torch.ones_like(tokens)
        reward_pos = torch.full((n,), self.reward_pos, dtype=torch.long, device=tokens.device)
        rewards = model.read_reward(final, tokens, mask, reward_pos)
        return select_output(rewards, output, names=model.output_names)


def fast_sweep_pays(seq_len: int, n_layers: int, d_model: int) -> bool:
    """Whether the fast sweep is faster than the plain batched sweep for a model of `n_layers` x `d_model` on a
    sequence of `seq_len` tokens: `n_layers * seq_len * d_model >= FAST_SWEEP_MIN_WORK`."""
    return n_layers * seq_len * d_model >= FAST_SWEEP_MIN_WORK


def _attn_modules(model: HookedRewardModel) -> list[Any] | None:
    mods = []
    for block in model.blocks:
        attn = getattr(block, "attn", None)
        if attn is None or getattr(attn, "_layer_idx", None) is None or not hasattr(attn, "_update_kv_cache"):
            return None
        mods.append(attn)
    return mods


def plan_fast_sweep(model: HookedRewardModel, target: Int[Tensor, " pos"]) -> tuple[FastSweep | None, str]:
    """Record one forward of `target` (`[pos]`, unpadded) for fast sweeps: `(FastSweep, "")`, or `(None, reason)`
    when the shortcut does not apply to this model (the caller then runs the plain sweep)."""
    blocks = getattr(model, "blocks", None)
    if blocks is None or not hasattr(model, "ln_final") or not hasattr(model, "head"):
        return None, "the model has no blocks / ln_final / head to run directly"
    attns = _attn_modules(model)
    if attns is None:
        return None, "an attention module is not a TransformerLens attention bridge with a layer index"
    if any(getattr(a, "is_causal", True) is False for a in attns):
        return None, "non-causal attention: earlier positions depend on the patched one"
    L, T = len(blocks), len(target)
    kv = _PrefixKV()
    resid_in: list[Tensor | None] = [None] * (L + 1)
    block_args: list[Any] = [None] * L
    final: list[Tensor] = []

    def capture_block(k: int) -> Any:
        def pre(_module: Any, args: tuple, kwargs: dict) -> None:
            resid_in[k] = (args[0] if args else kwargs["hidden_states"]).detach()[0]
            if args:
                block_args[k] = (args, dict(kwargs))
            else:
                kw = dict(kwargs)
                kw.pop("hidden_states")
                block_args[k] = ((None,), kw)

        return pre

    def inject(_module: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        kwargs["past_key_values"] = kv
        return args, kwargs

    def capture_final(_module: Any, args: tuple, out: Any) -> None:
        resid_in[L] = args[0].detach()[0]
        final.append((out[0] if isinstance(out, tuple) else out).detach()[0])

    handles = [b.register_forward_pre_hook(capture_block(k), with_kwargs=True) for k, b in enumerate(blocks)]
    handles += [a.register_forward_pre_hook(inject, with_kwargs=True) for a in attns]
    handles.append(model.ln_final.register_forward_hook(capture_final))
    try:
        with torch.no_grad():
            rewards = model(target[None])
    finally:
        for handle in handles:
            handle.remove()
    if any(r is None for r in resid_in) or len(final) != 1 or len(kv.keys) != L:
        return None, "the recorded forward did not pass through every block, attention layer and ln_final once"
    for k, (args, kwargs) in enumerate(block_args):
        if any(isinstance(a, Tensor) for a in args[1:]):
            return None, f"block {k} takes a positional tensor argument that cannot be sliced to a suffix"
        for name, value in kwargs.items():
            tensors = value if isinstance(value, tuple) else (value,)
            if name not in _SLICED_KWARGS and any(isinstance(t, Tensor) for t in tensors):
                return None, f"block {k} takes a tensor argument {name!r} that cannot be sliced to a suffix"
        mask = kwargs.get("attention_mask")
        if mask is not None and not isinstance(mask, Tensor):
            return None, f"block {k}'s attention mask is a {type(mask).__name__}, not a tensor"
        if isinstance(mask, Tensor):
            if mask.ndim != 4 or mask.shape[-2:] != (T, T):
                return None, f"block {k}'s attention mask has shape {tuple(mask.shape)}, not [batch, 1, T, T]"
            allowed = mask if mask.dtype == torch.bool else mask > torch.finfo(mask.dtype).min / 2
            if bool(torch.triu(allowed[0, 0].to(torch.bool), diagonal=1).any()):
                return None, "non-causal attention mask: a position attends to a later one"
    target = target.to(final[0].device)
    reward_pos = int(model.reward_positions(torch.ones_like(target)[None], target[None])[0])
    plan = FastSweep(model, target, resid_in, final[0], block_args, kv, rewards.detach(), attns, reward_pos)  # type: ignore[arg-type]
    return plan, ""


def self_check(plan: FastSweep, output: OutputArg) -> str:
    """Rerun the unpatched target through the fast machinery; '' when it reproduces the model's reward. `output`
    is an index or a name (`model.output_names`), picked by `select_output` as every analysis does."""
    L, T = plan.n_layers, plan.seq_len
    expect = select_output(plan.rewards, output, names=plan.model.output_names)[0]
    tol = 1e-4 if plan.final.dtype == torch.float32 else 2e-2
    checks = [(0, 0), (L // 2, T // 2)]
    with torch.no_grad():
        for start, p in checks:
            try:
                got = plan.run_suffix(p, [start], plan.resid_in[start][p : p + 1], output)[0]
            except Exception as err:  # noqa: BLE001 — any failure means: run the plain sweep
                return f"self-check raised {type(err).__name__}: {err}"
            if not math.isclose(float(got), float(expect), rel_tol=tol, abs_tol=tol):
                return (
                    f"self-check failed: the fast path gives {float(got):.6g} for the unpatched run from block "
                    f"{start}, position {p}, the model {float(expect):.6g}"
                )
    return ""


def fast_resid_rewards(
    plan: FastSweep,
    sites: Sequence[tuple[int, int, Tensor] | None],
    *,
    output: OutputArg = None,
    max_rows: int = 64,
    progress: bool = True,
    desc: str = "fast sweep",
) -> Float[Tensor, " n_sites"]:
    """Rewards of single-position residual patches: site i = `(start_block, position, vector [d_model])`, the
    vector written into the residual entering block `start_block` (`n_layers`: entering ln_final) at `position`;
    None gives NaN. Grouped by position (equal suffix lengths), ordered by block, `max_rows` rows per batch."""
    from tqdm.auto import tqdm

    out = torch.full((len(sites),), math.nan)
    by_pos: dict[int, list[int]] = {}
    for i, site in enumerate(sites):
        if site is not None:
            by_pos.setdefault(site[1], []).append(i)
    bar = tqdm(sorted(by_pos), desc=desc, disable=not progress, leave=False)
    with torch.no_grad():
        for p in bar:
            idx = sorted(by_pos[p], key=lambda i: sites[i][0])  # type: ignore[index]
            for c in range(0, len(idx), max_rows):
                chunk = idx[c : c + max_rows]
                starts = [sites[i][0] for i in chunk]  # type: ignore[index]
                rows = torch.stack([sites[i][2] for i in chunk])  # type: ignore[index]
                out[chunk] = plan.run_suffix(p, starts, rows, output).detach().float().cpu()
    return out


def warn_fallback(reason: str) -> None:
    warnings.warn(f"fast residual sweep not used ({reason}); running the plain sweep.", stacklevel=3)
