"""Circuits of a reward: edge attribution (EAP, EAP-IG), exact edge patching and faithfulness curves.

**The graph** (`circuit_graph`). Nodes are the input embedding ("embed", the residual entering block 0), every
attention head (`L{l}H{h}`, its output `z_h W_O[h]`: TransformerLens's `attn.hook_result`), every MLP (`L{l}MLP`,
`hook_mlp_out`) and the reward readout ("reward", the residual `ln_final` reads). An edge is one sender's output
into one receiver's input through the residual stream. Attention receivers are split into their query, key and
value inputs, read at TransformerLens's split-input hook points `blocks.{l}.hook_q_input` / `hook_k_input` /
`hook_v_input` (`[batch, pos, head, d_model]`: one copy of the residual per head, normed per head after the hook);
MLP receivers at `blocks.{l}.hook_mlp_in`, the reward at `blocks.{L-1}.hook_resid_post`. Labels read
`L0H2->L1H0.q`, `embed->L0MLP`, `L1MLP->reward` (`names.Edge`). Under grouped-query attention a key/value
receiver is a key-value head (`L1H0.k` is key-value head 0, read by every query head of its group).

**Edge patching** (`patch_edges`) runs the chosen text with exactly the given edges' sender contributions
replaced by the rejected run's: the receiver of a patched edge reads `input + (a_s(rejected) − a_s(this run))`,
where `a_s(this run)` is the sender's output in the patched run itself (so effects of other patched edges
propagate, as in Hanna et al.'s EAP-IG evaluation). Patching every edge gives the rejected run exactly, patching
none the chosen run, and patching every edge out of one sender equals patching that sender's node output. Only
positions aligned between the two texts are patched. Every entry point takes the patching options of
`analysis.patch_spec.PatchSpec` (`align`, `prompt_len`, `output`, `max_rows`, `progress`), as `spec=` or keywords;
the mode is always "noise" (the chosen run, the rejected run's edges written in).

**The margin** is `r(chosen) − r(rejected)` of the model's own output (`output` picks one of several), through
the whole model: a multi-objective head (ArmoRM's gate and transform) is run, not linearised, so the margin of a
patched run is the reward the model gives it.

**Scores** (`edge_attribution`): the first-order estimate of each edge's patch on the margin,

    Δm(s → r) ≈ Σ_pos (a_s(rejected) − a_s(chosen)) · ∂r(chosen)/∂(input of r),

(EAP, Syed et al. 2023: one forward and one backward pass of the chosen text, one forward of the rejected one).
EAP-IG (Hanna et al. 2024) averages the gradient over `steps` points on the straight line between the two runs'
embeddings, `e_α = e_rejected + α (e_chosen − e_rejected)`, `α = k/steps` for k = 1..steps (so `steps=1` is EAP);
it costs `steps` forward and backward passes (batched as one) plus the two plain forwards. A negative score is an
edge whose patch lowers the margin: an edge that carries the preference.

**Faithfulness** (`circuit_faithfulness`, `faithfulness_curve`): a circuit is a set of edges; every edge outside it
is patched. Its faithfulness is the fraction of the margin it keeps, `mean(r_circuit − r_rejected) / mean(r_chosen
− r_rejected)` over pairs, with a BCa bootstrap interval over pairs (`analysis.stats.bootstrap_ci`). The curve
runs the top-k circuits of a score for several k and summarises them as the Mechanistic Interpretability
Benchmark does: the circuit performance ratio (CPR, area under faithfulness against the fraction of edges kept:
higher is better) and the circuit-model difference (CMD, area under |1 − faithfulness|: lower is better),
trapezoid rule over the sizes given.

Cost per pair, in forward-equivalents (a backward pass counted as two; each batched row counted): `forward_equivalents`.
EAP 5 (the two runs' node outputs, then one forward and backward of the chosen text); EAP-IG 2 + 3·steps; exact
patching 2 + one row per edge set; plus one forward per call for the graph check.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import einops
import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from hooked_reward.analysis.patch_spec import PatchSpec, patch_spec
from hooked_reward.analysis.patching import Alignment, Input, align_pair, as_row
from hooked_reward.analysis.results import LabeledTensor, require_pyplot
from hooked_reward.analysis.stats import (
    bootstrap_ci,
    percentile_interval,
    spearman,
    spearman_along,
)
from hooked_reward.concurrency import run_lock
from hooked_reward.errors import InputError, UnsupportedArchitectureError
from hooked_reward.names import Component, Edge, act_name, final_resid_hook, node_label
from hooked_reward.outputs import select_output
from hooked_reward.pairs import PreferencePair, as_pairs

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from transformer_lens.hook_points import HookPoint

    from hooked_reward.cache import RewardActivationCache
    from hooked_reward.model import HookedRewardModel

__all__ = [
    "CircuitGraph",
    "EdgeAttribution",
    "CircuitFaithfulness",
    "FaithfulnessCurve",
    "EdgeAgreement",
    "circuit_graph",
    "edge_attribution",
    "exact_edge_effects",
    "patch_edges",
    "circuit_faithfulness",
    "faithfulness_curve",
    "edge_agreement",
    "forward_equivalents",
    "METHODS",
]

METHODS = ("eap", "eap-ig")
PairLike = PreferencePair | Mapping | Sequence[str] | tuple[Input, Input]
Render = Callable[[str, str], str]
#: TransformerLens hook flags the graph needs on while it runs (restored afterwards).
_FLAGS = ("use_attn_result", "use_split_qkv_input", "use_hook_mlp_in")


# ---------------------------------------------------------------------------------------------------- the graph
@dataclass(frozen=True)
class _Receiver:
    """One receiver input: its hook (`[batch, pos, slot, d_model]` or `[batch, pos, d_model]`), the slot (head)
    it is in that hook, and how many senders (in forward order) lie upstream of it."""

    hook: str
    slot: int
    n_up: int
    component: Component | None
    input: str | None


@dataclass(frozen=True)
class CircuitGraph:
    """The edge graph of one model (see the module docstring).

    `senders`: embed, then per layer its heads and its MLP (forward order; sender `i` writes before sender `i+1`).
    `receivers`: per layer each head's q, k, v inputs (k/v per key-value head) and the MLP's input, then the
    reward. `edges[e]` joins `senders[edge_sender[e]]` to `receivers[edge_receiver[e]]`; edges are ordered by
    receiver (forward order), then sender.
    """

    senders: tuple[Component, ...]
    receivers: tuple[_Receiver, ...]
    edges: tuple[Edge, ...]
    edge_sender: tuple[int, ...]
    edge_receiver: tuple[int, ...]
    sender_hooks: tuple[str, ...]
    receiver_hooks: tuple[str, ...]
    slots: dict[str, int] = field(default_factory=dict)

    @property
    def n_edges(self) -> int:
        return len(self.edges)

    def index(self, edges: Iterable[str]) -> list[int]:
        """Positions of `edges` (labels or `Edge`s) in `self.edges`; `InputError` naming unknown ones."""
        lookup = {str(e): i for i, e in enumerate(self.edges)}
        edges = [edges] if isinstance(edges, str) else list(edges)
        bad = [str(e) for e in edges if str(e) not in lookup]
        if bad:
            shown = ", ".join(str(e) for e in self.edges[:6])
            raise InputError(
                f"Unknown edge(s) {bad[:5]}; this model's {self.n_edges} edges read like {shown}, ... "
                "(`circuit_graph(model).edges` lists them)."
            )
        return sorted({lookup[str(e)] for e in edges})

    def index_ordered(self, edges: Iterable[str]) -> list[int]:
        """Positions of `edges` in `self.edges`, in the order given (`InputError` for unknown or repeated ones)."""
        edges = [edges] if isinstance(edges, str) else list(edges)
        idx = [self.index([e])[0] for e in edges]
        if len(set(idx)) != len(idx):
            raise InputError(f"An edge is listed twice in {[str(e) for e in edges][:8]}...")
        return idx

    def masks(self, edge_sets: Sequence[Sequence[int]]) -> dict[str, Tensor]:
        """Per receiver hook, which senders each row patches: `[rows, slots, n_up]` (1.0 = patched); hooks with
        no patched edge in any row are left out."""
        out: dict[str, Tensor] = {}
        for row, edges in enumerate(edge_sets):
            for e in edges:
                rec = self.receivers[self.edge_receiver[e]]
                if rec.hook not in out:
                    out[rec.hook] = torch.zeros(len(edge_sets), self.slots[rec.hook], rec.n_up)
                out[rec.hook][row, rec.slot, self.edge_sender[e]] = 1.0
        return out


def circuit_graph(model: HookedRewardModel) -> CircuitGraph:
    """The model's edge graph: embed, heads, MLPs and the reward as nodes; q/k/v-split head receivers."""
    cfg = model.cfg
    n_layers, n_heads = cfg.n_layers, cfg.n_heads
    n_kv = int(getattr(cfg, "n_key_value_heads", None) or n_heads)
    senders: list[Component] = [Component("embed")]
    sender_hooks = [act_name("resid_pre", 0)]
    receivers: list[_Receiver] = []
    slots: dict[str, int] = {}
    for layer in range(n_layers):
        n_up = len(senders)
        for inp, n in (("q", n_heads), ("k", n_kv), ("v", n_kv)):
            hook = act_name(f"{inp}_input", layer)
            slots[hook] = n
            receivers += [_Receiver(hook, h, n_up, Component("head", layer, h), inp) for h in range(n)]
        senders += [Component("head", layer, h) for h in range(n_heads)]
        sender_hooks.append(act_name("result", layer))
        hook = act_name("mlp_in", layer)
        slots[hook] = 1
        receivers.append(_Receiver(hook, 0, len(senders), Component("mlp_out", layer), None))
        senders.append(Component("mlp_out", layer))
        sender_hooks.append(act_name("mlp_out", layer))
    final = final_resid_hook(model)
    slots[final] = 1
    receivers.append(_Receiver(final, 0, len(senders), None, None))
    edges, edge_sender, edge_receiver = [], [], []
    for r, rec in enumerate(receivers):
        for s in range(rec.n_up):
            edges.append(Edge(senders[s], rec.component, rec.input))
            edge_sender.append(s)
            edge_receiver.append(r)
    return CircuitGraph(
        senders=tuple(senders),
        receivers=tuple(receivers),
        edges=tuple(edges),
        edge_sender=tuple(edge_sender),
        edge_receiver=tuple(edge_receiver),
        sender_hooks=tuple(sender_hooks),
        receiver_hooks=tuple(dict.fromkeys(rec.hook for rec in receivers)),
        slots=slots,
    )


@contextmanager
def _graph_hooks(model: HookedRewardModel) -> Iterator[None]:
    """TransformerLens's per-head result and split q/k/v/MLP-input hook points, on for the duration (the
    model's own settings restored afterwards). These send attention to TransformerLens's explicit path. The model's
    run lock (`concurrency.run_lock`) is held throughout, so another thread's run never sees these settings."""
    with run_lock(model):
        saved = {flag: bool(getattr(model.cfg, flag, False)) for flag in (*_FLAGS, "use_attn_in")}
        try:
            if saved["use_attn_in"]:
                model.set_use_attn_in(False)
            for flag in _FLAGS:
                getattr(model, f"set_{flag}")(True)
        except (ValueError, NotImplementedError, AttributeError) as err:
            _restore_flags(model, saved)
            raise UnsupportedArchitectureError(
                f"Circuits need TransformerLens's per-head result and split q/k/v input hook points, which this "
                f"architecture's bridge does not offer ({err})."
            ) from err
        try:
            yield
        finally:
            _restore_flags(model, saved)


def _restore_flags(model: HookedRewardModel, saved: dict[str, bool]) -> None:
    for flag in (*_FLAGS, "use_attn_in"):
        if bool(getattr(model.cfg, flag, False)) != saved[flag]:
            getattr(model, f"set_{flag}")(saved[flag])


# ---------------------------------------------------------------------------------------------------- one pair
@dataclass
class _PairRun:
    """One pair's two runs: the chosen row (the target), the rejected row (the source), their alignment, their
    rewards, and each sender's output difference `diffs [sender, target_pos, d_model]` (rejected − chosen at
    aligned positions, 0 elsewhere)."""

    chosen: Int[Tensor, " pos"]
    rejected: Int[Tensor, " pos_r"]
    align: Alignment
    r_chosen: float
    r_rejected: float
    source: list[Tensor]
    pos_mask: Float[Tensor, " pos"]
    diffs: Float[Tensor, "sender pos d_model"]

    @property
    def margin(self) -> float:
        return self.r_chosen - self.r_rejected


def _sender_outputs(graph: CircuitGraph, cache: RewardActivationCache | Mapping[str, Tensor]) -> list[Tensor]:
    """Each sender's output `[batch, pos, d_model]` from the sender hooks, in sender order."""
    out = []
    for hook in graph.sender_hooks:
        act = cache[hook]
        out += list(act.unbind(2)) if act.ndim == 4 else [act]
    return out


def _pair_rows(model: HookedRewardModel, pair: PairLike, render: Render | None) -> tuple[Tensor, Tensor]:
    """`(chosen, rejected)` unpadded token rows of one pair: a `PreferencePair` (or anything `as_pairs` reads),
    rendered with `render` (None: the model's chat template), or a `(chosen, rejected)` tuple of inputs."""
    if isinstance(pair, tuple) and len(pair) == 2 and not all(isinstance(x, str) for x in pair):
        return as_row(model, pair[0]), as_row(model, pair[1])
    chosen, rejected = as_pairs([cast(PreferencePair | Mapping | Sequence[str], pair)])[0].render(model, render=render)
    return as_row(model, chosen), as_row(model, rejected)


def _setup_pair(
    model: HookedRewardModel,
    graph: CircuitGraph,
    pair: PairLike,
    render: Render | None,
    align: str | None,
    prompt_len: int | None,
    output: int | str | None,
) -> _PairRun:
    chosen, rejected = _pair_rows(model, pair, render)
    al = align_pair(len(chosen), len(rejected), align, prompt_len)
    names = list(graph.sender_hooks)
    with torch.no_grad():
        r_c, cache_c = model.run_with_cache(chosen[None], names_filter=names)
        r_r, cache_r = model.run_with_cache(rejected[None], names_filter=names)
    target = [a[0].float() for a in _sender_outputs(graph, cache_c)]
    src = [a[0].float() for a in _sender_outputs(graph, cache_r)]
    tgt_idx, src_idx = al.indices(None)
    pos_mask = torch.zeros(len(chosen))
    pos_mask[tgt_idx] = 1.0
    source = []
    for t, s in zip(target, src, strict=True):
        aligned = t.clone()
        aligned[tgt_idx] = s[src_idx.to(s.device)]
        source.append(aligned)
    diffs = torch.stack(source) - torch.stack(target)
    return _PairRun(
        chosen=chosen,
        rejected=rejected,
        align=al,
        r_chosen=float(select_output(r_c, output, names=model.output_names)[0]),
        r_rejected=float(select_output(r_r, output, names=model.output_names)[0]),
        source=source,
        pos_mask=pos_mask,
        diffs=diffs,
    )


def _check_graph(model: HookedRewardModel, graph: CircuitGraph, row: Tensor) -> None:
    """Refuse architectures whose residual stream is not the sum the graph assumes: each head/MLP input hook must
    hold the residual entering it (pre-norm, not a parallel block), and each block must add exactly its heads'
    results (plus a constant bias) and its MLP's output (no post-sublayer norms)."""
    n_layers = model.cfg.n_layers
    names = [*graph.sender_hooks, *graph.receiver_hooks]
    names += [act_name(k, layer) for layer in range(n_layers) for k in ("resid_pre", "attn_out", "resid_mid")]
    with torch.no_grad():
        _, cache = model.run_with_cache(row[None], names_filter=list(dict.fromkeys(names)))
    problems = []

    def close(a: Tensor, b: Tensor) -> bool:
        return bool(torch.allclose(a.float(), b.float(), rtol=1e-3, atol=1e-4 * (1 + float(b.float().abs().max()))))

    for layer in range(n_layers):
        pre = cache[act_name("resid_pre", layer)]
        for inp in ("q", "k", "v"):
            forked = cache[act_name(f"{inp}_input", layer)]
            if not close(forked, pre[:, :, None].expand_as(forked)):
                problems.append(f"block {layer}: {inp} input is not the residual entering the block")
        mid = cache[act_name("resid_mid", layer)]
        if not close(cache[act_name("mlp_in", layer)], mid):
            problems.append(f"block {layer}: MLP input is not resid_mid (a parallel block?)")
        if not close(pre + cache[act_name("attn_out", layer)], mid):
            problems.append(f"block {layer}: resid_mid is not resid_pre + attn_out (a post-attention norm?)")
        nxt = cache[act_name("resid_pre", layer + 1)] if layer + 1 < n_layers else cache[final_resid_hook(model)]
        if not close(mid + cache[act_name("mlp_out", layer)], nxt):
            problems.append(f"block {layer}: output is not resid_mid + mlp_out (a post-MLP norm?)")
        bias = cache[act_name("attn_out", layer)] - cache[act_name("result", layer)].sum(2)
        if not close(bias, bias[:, :1].expand_as(bias)):
            problems.append(f"block {layer}: attention output is not the sum of its heads' results plus a bias")
    if problems:
        raise UnsupportedArchitectureError(
            "This model's residual stream is not a sum of head and MLP outputs as the circuit graph needs: "
            + "; ".join(problems[:4])
            + ". Edge attribution and edge patching support sequential pre-norm blocks (Llama, Mistral, Qwen, "
            "GPT-2 style)."
        )


# ---------------------------------------------------------------------------------------------------- patching
def _patched_rewards(
    model: HookedRewardModel,
    graph: CircuitGraph,
    run: _PairRun,
    edge_sets: Sequence[Sequence[int]],
    output: int | str | None,
    max_rows: int,
) -> Float[Tensor, " n_sets"]:
    """The chosen run's reward with each set of edges patched from the rejected run (one row per set)."""
    if max_rows < 1:
        raise InputError(f"max_rows must be >= 1, got {max_rows}.")
    out: list[Tensor] = []
    for start in range(0, len(edge_sets), max_rows):
        chunk = edge_sets[start : start + max_rows]
        masks = graph.masks(chunk)
        if not masks:
            out.append(torch.full((len(chunk),), run.r_chosen))
            continue
        tokens = run.chosen[None].expand(len(chunk), len(run.chosen))
        with torch.no_grad():
            rewards = model.run_with_hooks(tokens, fwd_hooks=_edge_patch_hooks(graph, run, masks))
        out.append(select_output(rewards, output, names=model.output_names).detach().float().cpu())
    return torch.cat(out) if out else torch.zeros(0)


def _edge_patch_hooks(
    graph: CircuitGraph, run: _PairRun, masks: Mapping[str, Tensor]
) -> list[tuple[str | Callable, Callable]]:
    """Forward hooks for one batch of edge sets: each sender hook records `rejected − this run` of its senders'
    outputs (at aligned positions); each receiver hook adds the patched senders' differences, per row and slot
    (`masks[hook] [rows, slots, n_up]`)."""
    diffs: list[Tensor] = []  # filled in sender order as the forward runs
    pos_mask = run.pos_mask

    def sender_hook(act: Tensor, hook: HookPoint) -> Tensor:
        for a in act.unbind(2) if act.ndim == 4 else [act]:
            src = run.source[len(diffs)].to(a.device, a.dtype)
            diffs.append((src - a) * pos_mask.to(a.device, a.dtype)[:, None])
        return act

    def receiver_hook(name: str) -> Callable:
        mask = masks[name]

        def hook(act: Tensor, hook: HookPoint) -> Tensor:
            stacked = torch.stack(diffs[: mask.shape[-1]], dim=1)  # [rows, sender, pos, d_model]
            delta = torch.einsum("rspd,rks->rpkd", stacked, mask.to(act.device, act.dtype))
            return act + (delta if act.ndim == 4 else delta[:, :, 0])

        return hook

    return [(name, sender_hook) for name in graph.sender_hooks] + [(name, receiver_hook(name)) for name in masks]


def _receiver_grads(
    model: HookedRewardModel, graph: CircuitGraph, run: _PairRun, alphas: Sequence[float], output: int | str | None
) -> dict[str, Tensor]:
    """∂r/∂(receiver input), averaged over the runs whose embeddings sit at `alphas` on the line from the rejected
    (α = 0) to the chosen (α = 1) run: `{hook: [pos, slots, d_model] or [pos, d_model]}`, float32."""
    rows = len(alphas)
    step_back = (1.0 - torch.tensor(list(alphas), dtype=torch.float32))[:, None, None]
    embed_diff = run.diffs[0]
    store: dict[str, Tensor] = {}

    def interpolate(act: Tensor, hook: HookPoint) -> Tensor:
        moved = act.detach() + (step_back.to(act.device) * embed_diff.to(act.device)).to(act.dtype)
        return moved.requires_grad_(True)

    def keeper(name: str) -> Callable:
        def keep(act: Tensor, hook: HookPoint) -> Tensor:
            # a copy, so the gradient is the receiver's alone: `hook_mlp_in` holds the residual tensor itself,
            # which the skip connection reads too
            store[name] = act.clone()
            return store[name]

        return keep

    hooks = [(graph.sender_hooks[0], interpolate)] + [(name, keeper(name)) for name in graph.receiver_hooks]
    tokens = run.chosen[None].expand(rows, len(run.chosen))
    with torch.enable_grad():
        rewards = model.run_with_hooks(tokens, fwd_hooks=hooks)
        r = select_output(rewards, output, names=model.output_names)
        acts = [store[name] for name in graph.receiver_hooks]
        grads = torch.autograd.grad(r.sum(), acts, allow_unused=True)
    return {
        name: (torch.zeros_like(a[0]) if g is None else g.float().mean(0)).float().cpu()
        for name, a, g in zip(graph.receiver_hooks, acts, grads, strict=True)
    }


def _scores_from_grads(graph: CircuitGraph, run: _PairRun, grads: Mapping[str, Tensor]) -> Float[Tensor, " edge"]:
    """`Σ_pos diff_sender · grad_receiver` for every edge."""
    per_hook = {}
    for name, g in grads.items():
        g = g if g.ndim == 3 else g[:, None]
        per_hook[name] = einops.einsum(run.diffs, g, "sender pos d, pos slot d -> slot sender")
    out = torch.empty(graph.n_edges)
    for e, (s, r) in enumerate(zip(graph.edge_sender, graph.edge_receiver, strict=True)):
        rec = graph.receivers[r]
        out[e] = per_hook[rec.hook][rec.slot, s]
    return out


# ---------------------------------------------------------------------------------------------------- results
@dataclass(repr=False)
class EdgeAttribution(LabeledTensor):
    """Per-pair edge scores: `values [pair, edge]` is the (estimated or exact) change of the reward margin when
    the edge is patched from the rejected run into the chosen run (negative: the edge carries the preference).

    `method`: "eap", "eap-ig" or "exact"; `steps` (EAP-IG). `r_chosen`, `r_rejected` `[pair]`; `margin` their
    difference. `mean()` averages over pairs; `top(k)` ranks edges by |mean score|.
    """

    method: str = ""
    steps: int = 1
    r_chosen: Tensor = field(default_factory=lambda: torch.empty(0))
    r_rejected: Tensor = field(default_factory=lambda: torch.empty(0))
    value_name: str = "Δ margin"

    @property
    def edges(self) -> list[Edge]:
        return list(self.axis_labels("edge"))

    @property
    def margin(self) -> Float[Tensor, " pair"]:
        return self.r_chosen - self.r_rejected

    def mean(self) -> Float[Tensor, " edge"]:
        """The score of each edge averaged over pairs."""
        return self.values.mean(0)

    def top(self, k: int) -> list[Edge]:
        """The `k` edges with the largest |mean score| (ties: graph order)."""
        if k < 0:
            raise InputError(f"k must be >= 0, got {k}.")
        order = torch.argsort(self.mean().abs(), descending=True, stable=True)
        edges = self.edges
        return [edges[i] for i in order[:k].tolist()]

    def to_frame(self) -> Any:
        """One row per edge: sender, receiver, input, mean score and mean |score| over pairs, sorted by |mean|."""
        from hooked_reward.analysis.results import require_pandas

        pd = require_pandas()
        mean = self.mean()
        rows = [
            {
                "edge": str(e),
                "sender": node_label(e.sender),
                "receiver": node_label(e.receiver),
                "input": e.input or "",
                "score": float(mean[i]),
                "mean_abs": float(self.values[:, i].abs().mean()),
            }
            for i, e in enumerate(self.edges)
        ]
        return pd.DataFrame(rows).sort_values("score", key=abs, ascending=False, kind="stable").reset_index(drop=True)

    def plot(self, ax: Axes | None = None, top: int = 20) -> Any:
        """Bars of the `top` edges' mean score (with the pairs' spread as error bars), on `ax`."""
        plt = require_pyplot()
        if ax is None:
            _, ax = plt.subplots(figsize=(max(4.0, 0.35 * top), 3.2))
        edges = self.top(top)
        all_edges = self.edges
        idx = [all_edges.index(e) for e in edges]
        mean = self.mean()[idx].numpy()
        err = self.values[:, idx].std(0).numpy() if self.values.shape[0] > 1 else None
        ax.bar(range(len(edges)), mean, yerr=err, color=["tab:red" if m < 0 else "tab:blue" for m in mean])
        ax.set_xticks(range(len(edges)), [str(e) for e in edges], rotation=90, fontsize=7)
        ax.axhline(0, color="k", lw=0.6)
        ax.set_ylabel(f"{self.value_name} ({self.method})")
        return ax


@dataclass(repr=False)
class CircuitFaithfulness(LabeledTensor):
    """How much of the margin a circuit keeps when every edge outside it is patched.

    `values [pair]`: each pair's kept margin `r_circuit − r_rejected`; `margin [pair]`: `r_chosen − r_rejected`.
    `fraction = mean(kept) / mean(margin)` with a BCa bootstrap interval `ci` over pairs (`confidence`).
    """

    margin: Tensor = field(default_factory=lambda: torch.empty(0))
    fraction: float = math.nan
    ci: tuple[float, float] = (math.nan, math.nan)
    n_edges: int = 0
    n_circuit: int = 0
    confidence: float = 0.95
    value_name: str = "kept margin"


@dataclass(repr=False)
class FaithfulnessCurve(LabeledTensor):
    """Faithfulness of the top-k circuits of a score, for each k in `sizes`.

    `values [size]`: the fraction of the margin kept (ratio of means over pairs); `ci_low`, `ci_high [size]`:
    percentile bootstrap over pairs; `kept [pair, size]` and `margin [pair]` the per-pair numbers. `edge_fraction
    [size]` = size / n_edges. `cpr` (area under faithfulness over the edge fraction: higher is better) and `cmd`
    (area under |1 − faithfulness|: lower is better), trapezoid rule over the sizes given.
    """

    sizes: list[int] = field(default_factory=list)
    edge_fraction: Tensor = field(default_factory=lambda: torch.empty(0))
    ci_low: Tensor = field(default_factory=lambda: torch.empty(0))
    ci_high: Tensor = field(default_factory=lambda: torch.empty(0))
    kept: Tensor = field(default_factory=lambda: torch.empty(0, 0))
    margin: Tensor = field(default_factory=lambda: torch.empty(0))
    cpr: float = math.nan
    cmd: float = math.nan
    method: str = ""
    n_edges: int = 0
    value_name: str = "faithfulness"

    @classmethod
    def from_kept(
        cls,
        kept: Float[Tensor, "pair size"],
        margin: Float[Tensor, " pair"],
        sizes: Sequence[int],
        n_edges: int,
        *,
        method: str = "",
        confidence: float = 0.95,
    ) -> FaithfulnessCurve:
        """The curve from each pair's kept margin per size (`r_circuit − r_rejected`) and margin: the ratio of
        means per size, its bootstrap interval over pairs, CPR and CMD (so per-pair work can be stored and joined)."""
        k, m = kept.double().cpu().numpy(), margin.double().cpu().numpy()
        if k.shape != (m.shape[0], len(sizes)):
            raise InputError(f"kept is {tuple(k.shape)}; expected [pairs={m.shape[0]}, sizes={len(sizes)}].")
        faith = k.mean(0) / m.mean()
        lo, hi = _curve_ci(k, m, confidence)
        x = np.asarray(sizes, dtype=np.float64) / n_edges
        return cls(
            values=torch.tensor(faith),
            dims=("size",),
            labels={"size": list(sizes)},
            sizes=list(sizes),
            edge_fraction=torch.tensor(x),
            ci_low=torch.tensor(lo),
            ci_high=torch.tensor(hi),
            kept=torch.tensor(k),
            margin=torch.tensor(m),
            cpr=float(np.trapezoid(faith, x)) if len(x) > 1 else math.nan,
            cmd=float(np.trapezoid(np.abs(1 - faith), x)) if len(x) > 1 else math.nan,
            method=method,
            n_edges=n_edges,
        )

    def at(self, size: int) -> tuple[float, tuple[float, float]]:
        """`(faithfulness, (ci_low, ci_high))` of the circuit of `size` edges (a size of the curve)."""
        i = self.index_of("size", int(size))
        return float(self.values[i]), (float(self.ci_low[i]), float(self.ci_high[i]))

    def plot(self, ax: Axes | None = None, label: str | None = None) -> Any:
        """Faithfulness against the fraction of edges kept (log x), with the bootstrap band, on `ax`."""
        plt = require_pyplot()
        if ax is None:
            _, ax = plt.subplots(figsize=(4.5, 3.2))
        x = self.edge_fraction.numpy()
        keep = x > 0
        line = ax.plot(x[keep], self.values.numpy()[keep], marker="o", ms=3, label=label or self.method)[0]
        ax.fill_between(
            x[keep], self.ci_low.numpy()[keep], self.ci_high.numpy()[keep], alpha=0.2, color=line.get_color()
        )
        ax.axhline(1.0, color="grey", lw=0.6, ls="--")
        ax.set_xscale("log")
        ax.set_xlabel("fraction of edges in the circuit")
        ax.set_ylabel("fraction of margin kept")
        ax.set_title(f"{self.method}: CPR {self.cpr:.2f}, CMD {self.cmd:.2f}", fontsize=9)
        return ax


@dataclass(repr=False)
class EdgeAgreement(LabeledTensor):
    """Agreement of an edge score with exact edge patching over the same edges: `values [2, edge]` (rows
    "estimate" and "exact", each the mean over pairs), Spearman's `rho` between them and a percentile bootstrap
    interval `ci` over pairs."""

    rho: float = math.nan
    ci: tuple[float, float] = (math.nan, math.nan)
    method: str = ""
    n_pairs: int = 0
    value_name: str = "Δ margin"

    def plot(self, ax: Axes | None = None) -> Any:
        """Scatter of the estimate against exact edge patching (pair means), with y = x, on `ax`."""
        plt = require_pyplot()
        if ax is None:
            _, ax = plt.subplots(figsize=(3.6, 3.4))
        exact, estimate = self.values[1].numpy(), self.values[0].numpy()
        ax.scatter(exact, estimate, s=14)
        lim = float(max(np.abs(exact).max(initial=0), np.abs(estimate).max(initial=0))) or 1.0
        ax.plot([-lim, lim], [-lim, lim], color="grey", lw=0.8, ls="--")
        ax.set_xlabel("exact edge patching (Δ margin)")
        ax.set_ylabel(f"{self.method} (Δ margin)")
        ax.set_title(f"Spearman ρ = {self.rho:.2f} [{self.ci[0]:.2f}, {self.ci[1]:.2f}]", fontsize=9)
        return ax


# ---------------------------------------------------------------------------------------------------- entry points
def _spec(spec: PatchSpec | None, options: Mapping[str, Any], fn: str) -> PatchSpec:
    """The patching options of an entry point (`PatchSpec`, as `spec=` or keywords). The direction is fixed: the
    chosen run with the rejected run's edge contributions written in, i.e. `mode="noise"` (the default here)."""
    spec = patch_spec(spec, options, default=PatchSpec(mode="noise"), fn=fn)
    spec.require_modes(("noise",), f"{fn} (the chosen run patched with the rejected run's edges)")
    return spec


def _check_pairs(pairs: Sequence[PairLike] | PairLike) -> list[PairLike]:
    """The pairs as a list (one pair given alone is a list of one); `InputError` for none."""
    one = isinstance(pairs, (PreferencePair, Mapping)) or (
        isinstance(pairs, tuple) and len(pairs) == 2 and not isinstance(pairs[0], (PreferencePair, Mapping, tuple))
    )
    out: list[PairLike] = [cast(PairLike, pairs)] if one else list(cast(Sequence[PairLike], pairs))
    if not out:
        raise InputError("No pairs given: pass PreferencePairs (or (chosen, rejected) tuples).")
    return out


def _runs(
    model: HookedRewardModel,
    graph: CircuitGraph,
    pairs: Sequence[PairLike],
    render: Render | None,
    align: str | None,
    prompt_len: int | None,
    output: int | str | None,
    progress: bool,
    desc: str,
) -> Iterator[_PairRun]:
    """Each pair's `_PairRun`, after one check of the graph on the first pair (inside `_graph_hooks`)."""
    for i, pair in enumerate(tqdm(pairs, desc=desc, disable=not progress or len(pairs) <= 1, leave=False)):
        run = _setup_pair(model, graph, pair, render, align, prompt_len, output)
        if i == 0:
            _check_graph(model, graph, run.chosen)
        yield run


def edge_attribution(
    model: HookedRewardModel,
    pairs: Sequence[PairLike] | PairLike,
    method: str = "eap",
    steps: int = 5,
    *,
    render: Render | None = None,
    spec: PatchSpec | None = None,
    **options: Any,
) -> EdgeAttribution:
    """First-order scores of patching each edge from the rejected run into the chosen run, on the margin.

    `method="eap"`: the gradient at the chosen run; `"eap-ig"`: averaged over `steps` points on the line between
    the two runs' embeddings (see the module docstring). Returns `values [pair, edge]` (an `EdgeAttribution`).
    Pairs are `PreferencePair`s (or what `as_pairs` reads), rendered with `render` (None: the chat template), or
    `(chosen, rejected)` tuples of token rows; `align` / `prompt_len` for pairs of different lengths.
    """
    spec = _spec(spec, options, "edge_attribution")
    align, prompt_len, output, progress = spec.align, spec.prompt_len, spec.output, spec.progress
    if method not in METHODS:
        raise InputError(f"method must be one of {METHODS}, got {method!r}.")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise InputError(f"steps must be an integer >= 1, got {steps!r}.")
    pairs = _check_pairs(pairs)
    graph = circuit_graph(model)
    alphas = [1.0] if method == "eap" else [k / steps for k in range(1, steps + 1)]
    rows, r_c, r_r = [], [], []
    with _graph_hooks(model):
        for run in _runs(model, graph, pairs, render, align, prompt_len, output, progress, method):
            rows.append(_scores_from_grads(graph, run, _receiver_grads(model, graph, run, alphas, output)))
            r_c.append(run.r_chosen)
            r_r.append(run.r_rejected)
    return EdgeAttribution(
        values=torch.stack(rows),
        dims=("pair", "edge"),
        labels={"edge": list(graph.edges)},
        method=method,
        steps=1 if method == "eap" else steps,
        r_chosen=torch.tensor(r_c),
        r_rejected=torch.tensor(r_r),
        meta={"align": align, "output": output},
    )


def exact_edge_effects(
    model: HookedRewardModel,
    pairs: Sequence[PairLike] | PairLike,
    edges: Iterable[str] | None = None,
    *,
    render: Render | None = None,
    spec: PatchSpec | None = None,
    **options: Any,
) -> EdgeAttribution:
    """The exact change of the margin when each edge alone is patched (one forward row per edge and pair):
    `values [pair, edge]` over `edges` (default: every edge), `method="exact"`."""
    spec = _spec(spec, options, "exact_edge_effects")
    align, prompt_len, output, max_rows, progress = (
        spec.align,
        spec.prompt_len,
        spec.output,
        spec.max_rows,
        spec.progress,
    )
    pairs = _check_pairs(pairs)
    graph = circuit_graph(model)
    idx = list(range(graph.n_edges)) if edges is None else graph.index(edges)
    rows, r_c, r_r = [], [], []
    with _graph_hooks(model):
        for run in _runs(model, graph, pairs, render, align, prompt_len, output, progress, "exact edges"):
            rows.append(_patched_rewards(model, graph, run, [[e] for e in idx], output, max_rows) - run.r_chosen)
            r_c.append(run.r_chosen)
            r_r.append(run.r_rejected)
    return EdgeAttribution(
        values=torch.stack(rows),
        dims=("pair", "edge"),
        labels={"edge": [graph.edges[e] for e in idx]},
        method="exact",
        r_chosen=torch.tensor(r_c),
        r_rejected=torch.tensor(r_r),
        meta={"align": align, "output": output},
    )


def patch_edges(
    model: HookedRewardModel,
    pair: PairLike,
    edges: Iterable[str],
    *,
    render: Render | None = None,
    spec: PatchSpec | None = None,
    **options: Any,
) -> float:
    """The chosen text's reward with exactly `edges` (labels or `Edge`s) patched from the rejected run, every
    other path clean (see the module docstring). Every edge gives `r(rejected)`, none `r(chosen)`."""
    spec = _spec(spec, options, "patch_edges")
    align, prompt_len, output = spec.align, spec.prompt_len, spec.output
    graph = circuit_graph(model)
    idx = graph.index(edges)
    with _graph_hooks(model):
        run = next(_runs(model, graph, [pair], render, align, prompt_len, output, False, "patch edges"))
        return float(_patched_rewards(model, graph, run, [idx], output, 1)[0])


def _circuit_index(graph: CircuitGraph, circuit: Iterable[str]) -> list[int]:
    circuit = [circuit] if isinstance(circuit, str) else list(circuit)
    return graph.index(circuit) if circuit else []


def _ratio_ci(kept: np.ndarray, margin: np.ndarray, confidence: float) -> tuple[float, float]:
    """BCa bootstrap interval over pairs of `mean(kept) / mean(margin)`."""

    def ratio(k: np.ndarray, m: np.ndarray, axis: int = -1) -> np.ndarray:
        return k.mean(axis) / m.mean(axis)

    return bootstrap_ci((kept, margin), ratio, confidence=confidence, paired=True, vectorized=True)


def circuit_faithfulness(
    model: HookedRewardModel,
    pairs: Sequence[PairLike] | PairLike,
    circuit: Iterable[str],
    *,
    render: Render | None = None,
    confidence: float = 0.95,
    spec: PatchSpec | None = None,
    **options: Any,
) -> CircuitFaithfulness:
    """The fraction of the margin `circuit` (edge labels) keeps when every other edge is patched, over pairs, with
    a BCa bootstrap interval (see `CircuitFaithfulness`)."""
    spec = _spec(spec, options, "circuit_faithfulness")
    align, prompt_len, output, progress = spec.align, spec.prompt_len, spec.output, spec.progress
    pairs = _check_pairs(pairs)
    graph = circuit_graph(model)
    keep = set(_circuit_index(graph, circuit))
    patched = [e for e in range(graph.n_edges) if e not in keep]
    kept, margins = [], []
    with _graph_hooks(model):
        for run in _runs(model, graph, pairs, render, align, prompt_len, output, progress, "circuit"):
            kept.append(float(_patched_rewards(model, graph, run, [patched], output, 1)[0]) - run.r_rejected)
            margins.append(run.margin)
    k, m = np.asarray(kept), np.asarray(margins)
    return CircuitFaithfulness(
        values=torch.tensor(kept),
        dims=("pair",),
        margin=torch.tensor(margins),
        fraction=float(k.mean() / m.mean()),
        ci=_ratio_ci(k, m, confidence),
        n_edges=graph.n_edges,
        n_circuit=len(keep),
        confidence=confidence,
        meta={"circuit": sorted(str(graph.edges[e]) for e in keep)},
    )


def forward_equivalents(method: str, *, steps: int = 5, n_sets: int = 0) -> int:
    """Forward-equivalents per pair of one call (a backward counted as two forwards, each batched row as one):
    `"eap"` 5 (the rejected and chosen runs' node outputs, one forward and backward), `"eap-ig"` 2 + 3·steps,
    `"patch"` (exact edge patching, `exact_edge_effects` / faithfulness) 2 + `n_sets` (one row per edge set). The
    graph check adds one forward per call."""
    if method == "eap":
        return 5
    if method == "eap-ig":
        return 2 + 3 * steps
    if method == "patch":
        return 2 + n_sets
    raise InputError(f"method must be 'eap', 'eap-ig' or 'patch', got {method!r}.")


def default_sizes(n_edges: int) -> list[int]:
    """Circuit sizes for a faithfulness curve: 0, the benchmark's edge fractions (0.1%, 0.2%, 0.5%, 1%, 2%, 5%,
    10%, 20%, 50%) of `n_edges` (at least one edge each), and every edge; deduplicated, ascending."""
    fractions = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5)
    return sorted({0, n_edges, *(max(1, round(f * n_edges)) for f in fractions)})


def faithfulness_curve(
    model: HookedRewardModel,
    pairs: Sequence[PairLike] | PairLike,
    scores: EdgeAttribution | Sequence[str],
    sizes: Sequence[int] | None = None,
    *,
    render: Render | None = None,
    confidence: float = 0.95,
    spec: PatchSpec | None = None,
    **options: Any,
) -> FaithfulnessCurve:
    """Faithfulness of the top-k circuits of `scores` for each k in `sizes` (edge counts; default
    `default_sizes`), with the area-under-curve summaries CPR and CMD (see `FaithfulnessCurve`).

    `scores` is an `EdgeAttribution` over every edge (ranked by |mean score|, `EdgeAttribution.top`) or the edges
    themselves in rank order, best first (at least `max(sizes)` of them).
    """
    spec = _spec(spec, options, "faithfulness_curve")
    align, prompt_len, output, max_rows, progress = (
        spec.align,
        spec.prompt_len,
        spec.output,
        spec.max_rows,
        spec.progress,
    )
    pairs = _check_pairs(pairs)
    graph = circuit_graph(model)
    if isinstance(scores, EdgeAttribution):
        if [str(e) for e in scores.edges] != [str(e) for e in graph.edges]:
            raise InputError("scores must cover every edge of this model's graph, in graph order (edge_attribution).")
        ranked, method = graph.index_ordered(scores.top(graph.n_edges)), scores.method
    else:
        ranked, method = graph.index_ordered(scores), "ranked edges"
    sizes = default_sizes(graph.n_edges) if sizes is None else sorted({int(k) for k in sizes})
    bad = [k for k in sizes if not 0 <= k <= len(ranked)]
    if bad or not sizes:
        raise InputError(f"sizes must be edge counts in 0..{len(ranked)} (the edges ranked); got {bad or 'none'}.")
    edge_sets = [sorted(set(range(graph.n_edges)) - set(ranked[:k])) for k in sizes]
    kept, margins = [], []
    with _graph_hooks(model):
        for run in _runs(model, graph, pairs, render, align, prompt_len, output, progress, "faithfulness curve"):
            kept.append(_patched_rewards(model, graph, run, edge_sets, output, max_rows) - run.r_rejected)
            margins.append(run.margin)
    return FaithfulnessCurve.from_kept(
        torch.stack(kept), torch.tensor(margins), sizes, graph.n_edges, method=method, confidence=confidence
    )


def _curve_ci(
    kept: Float[np.ndarray, "pair size"], margin: Float[np.ndarray, " pair"], confidence: float, n_resamples: int = 2000
) -> tuple[np.ndarray, np.ndarray]:
    """Per-size percentile bootstrap interval of `mean(kept[:, size]) / mean(margin)`, pairs resampled together
    for every size (seeded)."""
    n_pairs = kept.shape[0]
    if n_pairs < 2:
        nan = np.full(kept.shape[1], np.nan)
        return nan, nan.copy()
    rows = np.random.default_rng(0).integers(0, n_pairs, (n_resamples, n_pairs))
    return percentile_interval(kept[rows].mean(1) / margin[rows].mean(1)[:, None], confidence)


def edge_agreement(
    estimate: EdgeAttribution,
    exact: EdgeAttribution,
    *,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> EdgeAgreement:
    """Spearman's ρ between `estimate`'s and `exact`'s pair-mean scores over the edges `exact` covers (e.g. the top
    edges, from `exact_edge_effects(..., edges=...)`), with a percentile bootstrap interval over pairs (pairs
    resampled, both means recomputed, ρ of each resample: `stats.spearman_along`)."""
    if exact.values.shape[0] != estimate.values.shape[0]:
        raise InputError(
            f"estimate has {estimate.values.shape[0]} pairs and exact {exact.values.shape[0]}; use the same pairs."
        )
    idx = [estimate.index_of("edge", e) for e in exact.edges]
    approx = estimate.values[:, idx].double().numpy()
    truth = exact.values.double().numpy()
    n_pairs = approx.shape[0]
    rho = spearman(approx.mean(0), truth.mean(0), what="edge scores vs exact edge patching")
    ci = (math.nan, math.nan)
    if n_pairs >= 2:
        rows = np.random.default_rng(seed).integers(0, n_pairs, (n_resamples, n_pairs))
        resampled = np.asarray(spearman_along(approx[rows].mean(1), truth[rows].mean(1)))
        lo, hi = percentile_interval(resampled, confidence, ignore_nan=True)
        ci = (float(lo), float(hi))
    return EdgeAgreement(
        values=torch.stack([torch.tensor(approx.mean(0)), torch.tensor(truth.mean(0))]),
        dims=("method", "edge"),
        labels={"method": ["estimate", "exact"], "edge": exact.edges},
        rho=rho,
        ci=ci,
        method=estimate.method,
        n_pairs=n_pairs,
    )
