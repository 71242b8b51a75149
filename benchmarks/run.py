"""hooked_reward benchmarks (issue 16): speed and memory of the hooked model against the HF model it wraps.

    python benchmarks/run.py [--quick] [--out benchmarks/results/latest.json] [--threads N] [--repeats N]
                             [--sweep-stride N] [--device cpu|cuda]

Everything is measured in one run, on the same inputs and the same number of torch threads, and reported as a
ratio against a baseline measured in the same run (timings are interleaved: each repeat runs every variant once,
in rotating order, and the median over repeats is kept), so that a machine shared with other processes still
gives comparable numbers. `--quick` uses CI-sized shapes (finishes in well under a minute on 2 cores); its
timings are not meaningful, only that every figure is produced.

Figures (see docs/performance.md for targets and the last recorded numbers):

* forward: HookedRewardModel vs the HF `LlamaForSequenceClassification` loaded separately from the same saved
  checkpoint; `run_with_cache` with every hook, with a residual-stream `names_filter`, and with
  `positions="reward"`; TransformerLens's own bridge over a `LlamaForCausalLM` with the same weights (against
  that HF causal LM, since its unembedding is a vocabulary-sized matmul the reward model does not have).
* memory: cached activation bytes (exact: the sum of `nbytes` of the distinct cached tensors) of the full,
  residual-filtered and reward-position caches, bytes per cached token, and the peak of bytes allocated by
  torch during each run (torch.profiler memory events: the CPU allocator's running total).
* patching: a full layer x position `resid_pre` sweep over one pair, ours (`analysis.patching.patch_resid`) vs
  one forward per patch (`run_with_hooks`) vs `transformer_lens.patching.get_act_patch_resid_pre`; attribution
  patching of every component in forward-equivalents and its Spearman agreement with exact patching.
* loading: `HookedRewardModel.from_pretrained` vs `AutoModelForSequenceClassification.from_pretrained`, time
  and peak RSS (VmHWM), each load in its own process forked from a server that has done the imports.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

SHAPES: dict[str, dict[str, Any]] = {
    "full": dict(
        d_model=512,
        n_layers=8,
        n_heads=8,
        d_mlp=1376,
        vocab=32000,
        batch=8,
        seq=128,
        sweep_seq=128,
        repeats=9,
        load_repeats=5,
        lengths=(128, 512, 2048),
        length_repeats=5,
        sweep_sample_positions=4,
        fixed_cost=((128, 1), (128, 8), (512, 1), (512, 8), (2048, 1)),
        fixed_cost_repeats=7,
        real_configs=("qwen3-0.6b",),
        real_dtype="float32",
        real_tokens=512,
        real_load_repeats=3,
    ),
    "quick": dict(
        d_model=64,
        n_layers=2,
        n_heads=4,
        d_mlp=128,
        vocab=512,
        batch=2,
        seq=24,
        sweep_seq=8,
        repeats=3,
        load_repeats=1,
        lengths=(16, 48),
        length_repeats=1,
        sweep_sample_positions=2,
        fixed_cost=((16, 1), (16, 2)),
        fixed_cost_repeats=3,
        real_configs=("qwen3-tiny",),
        real_dtype="float32",
        real_tokens=48,
        real_load_repeats=2,
    ),
}

# figure -> (comparison, bound); "le": value must be <= bound
TARGETS: dict[str, tuple[str, float]] = {
    "forward.ratio_vs_hf": ("le", 1.05),
    "forward.cache_all_ratio_vs_hf": ("le", 1.15),
    "forward.retained_memory.cache_all_ratio_vs_hf": ("le", 1.15),
    "forward.cache_resid_ratio_vs_hf": ("le", 1.08),
    "memory.reward_cache_excess_bytes_over_full_per_seq": ("le_const", 0.0),
    "patching.sweep_ratio_vs_naive": ("le", 0.35),
    "patching.sweep_max_abs_diff_vs_naive": ("le", 1e-4),
    "attribution_patching.forward_equivalents": ("le", 4.5),
    "loading.time_ratio_vs_hf": ("le", 1.3),
    "loading.peak_rss_ratio_vs_hf": ("le", 1.2),
    "loading.bridge_ms_per_layer": ("le", 10.0),
    "imports.hooked_reward_ratio_vs_transformer_lens": ("le", 1.1),
    "lengths.max_forward_ratio_vs_hf": ("le", 1.05),
    "lengths.longest.cache_resid_ratio_vs_hf": ("le", 1.10),
    "lengths.longest.cache_reward_pos_ratio_vs_hf": ("le", 1.10),
    "lengths.longest.pattern_hook_cost_vs_explicit_layer": ("le", 1.0),
    "lengths.max_sweep_chosen_over_plain": ("le", 1.0),
    "lengths.max_sweep_abs_diff_fast_vs_plain": ("le", 1e-4),
    "fixed_cost.max_forward_ratio_vs_hf": ("le", 1.05),
    "real.max_load_ratio_vs_hf": ("le", 1.3),
    "real.max_atp_peak_rss_ratio_vs_hf_forward": ("le", 1.3),
}

RESID_HOOKS = ("hook_resid_pre", "hook_resid_post")
SECTIONS = ("forward", "memory", "patching", "lengths", "fixed_cost", "loading", "real", "imports")


# ------------------------------------------------------------------------------------------------ set-up
def llama_config(shape: dict[str, int]) -> Any:
    """A Llama reward-model config of the given shape (one output, pad id 0)."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=shape["vocab"],
        hidden_size=shape["d_model"],
        intermediate_size=shape["d_mlp"],
        num_hidden_layers=shape["n_layers"],
        num_attention_heads=shape["n_heads"],
        num_key_value_heads=shape["n_heads"],
        max_position_embeddings=max(2 * shape["seq"], 256, *shape["lengths"]),
        num_labels=1,
        pad_token_id=0,
    )


def make_checkpoint(shape: dict[str, int], out: Path, seed: int = 0) -> Path:
    """A randomly initialised `LlamaForSequenceClassification` saved with `save_pretrained` (weights drawn at
    1/sqrt(fan_in) so that rewards and patching effects are O(1), not HF's tiny default init)."""
    from transformers import LlamaForSequenceClassification

    torch.manual_seed(seed)
    model = LlamaForSequenceClassification(llama_config(shape)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim >= 2:
                p.normal_(0.0, p.shape[-1] ** -0.5)
            elif "norm" in name:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
    model.save_pretrained(out)
    return out


def log(msg: str) -> None:
    """Progress on stderr."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def synchronizer(device: torch.device) -> Callable[[], None]:
    """Waits for queued device work before a clock is read (CUDA runs asynchronously); a no-op on CPU."""
    return torch.cuda.synchronize if device.type == "cuda" else (lambda: None)


def time_interleaved(
    fns: dict[str, Callable[[], Any]],
    repeats: int,
    warmup: int = 1,
    device: torch.device = torch.device("cpu"),
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, float]:
    """Median seconds per call of each function; every repeat runs each once, in an order rotated per repeat.
    `clock=time.process_time` counts this process's CPU seconds (with one torch thread: robust to other load)."""
    names = list(fns)
    sync = synchronizer(device)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            sync()
            t0 = clock()
            fns[name]()
            sync()
            times[name].append(clock() - t0)
    return {n: statistics.median(v) for n, v in times.items()}


def peak_alloc_bytes(fn: Callable[[], Any], device: torch.device = torch.device("cpu")) -> tuple[int, Any]:
    """`(peak, result)`: the peak of bytes allocated by torch's allocator for `device` while `fn` runs, above what
    was allocated before (CPU: torch.profiler memory events carry the allocator's running total; CUDA: the
    caching allocator's peak statistic)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
        start = torch.cuda.memory_allocated(device)
        result = fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated(device) - start, result
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = fn()

    def walk(nodes: list) -> Any:
        for node in nodes:
            yield node
            yield from walk(node.children)

    events = [n for n in walk(prof.profiler.kineto_results.experimental_event_tree()) if n.tag == _EventType.Allocation]
    if not events:
        return 0, result
    events.sort(key=lambda n: n.start_time_ns)
    first = events[0].extra_fields
    start = first.total_allocated - first.alloc_size
    return max(int(e.extra_fields.total_allocated) for e in events) - int(start), result


def cache_bytes(cache: Any) -> dict[str, int]:
    """Bytes held by a cache: `tensor_bytes` sums `nbytes` of each distinct cached tensor (aliases counted once),
    `storage_bytes` the distinct storages they keep alive (larger when a cached tensor is a view)."""
    seen_t: set[tuple] = set()
    seen_s: set[int] = set()
    tensor_bytes = storage_bytes = 0
    for value in cache.cache_dict.values():
        key = (value.data_ptr(), tuple(value.shape), tuple(value.stride()), value.dtype)
        if key not in seen_t:
            seen_t.add(key)
            tensor_bytes += value.nbytes
        storage = value.untyped_storage()
        if storage.data_ptr() not in seen_s:
            seen_s.add(storage.data_ptr())
            storage_bytes += storage.nbytes()
    return {
        "tensor_bytes": tensor_bytes,
        "storage_bytes": storage_bytes,
        "n_entries": len(cache.cache_dict),
        "n_tensors": len(seen_t),
    }


class _Cache:
    """A bare `cache_dict` holder, to count bytes of a subset of a cache."""

    def __init__(self, cache_dict: dict[str, torch.Tensor]) -> None:
        self.cache_dict = cache_dict


def is_resid(name: str) -> bool:
    """The residual-stream `names_filter` benchmarked: every block's resid_pre and resid_post."""
    return name.endswith(RESID_HOOKS)


# ------------------------------------------------------------------------------------------------ figures
def bench_forward(
    model: Any, hf: Any, shape: dict[str, int], repeats: int, device: torch.device = torch.device("cpu")
) -> tuple[dict[str, Any], Callable[[], dict[str, Any]]]:
    """Forward and run_with_cache timings against HF, plus TL's own bridge against its HF causal LM; and a function
    that measures the same under `retain_freed_cpu_memory()` (to be called last)."""
    from transformer_lens.model_bridge.sources import build_bridge_from_module
    from transformers import LlamaForCausalLM

    from hooked_reward.cpu_memory import retain_freed_cpu_memory

    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(1, shape["vocab"], (shape["batch"], shape["seq"]), generator=g).to(device)
    mask = torch.ones_like(tokens)
    cfg = llama_config(shape)
    causal = LlamaForCausalLM(cfg).eval()
    missing = causal.model.load_state_dict(hf.model.state_dict())
    assert not missing.missing_keys and not missing.unexpected_keys
    hf_causal = LlamaForCausalLM(cfg).eval()
    hf_causal.load_state_dict(causal.state_dict())
    causal.to(device)
    hf_causal.to(device)
    tl_bridge = build_bridge_from_module(causal, "LlamaForCausalLM", hf_config=cfg)
    tl_bridge.eval()

    with torch.no_grad():
        ref = hf(input_ids=tokens, attention_mask=mask).logits[:, 0]
        ours = model(tokens, attention_mask=mask)
    max_diff = float((ref - ours).abs().max())

    def nograd(fn: Callable[[], Any]) -> Callable[[], Any]:
        def run() -> Any:
            with torch.no_grad():
                return fn()

        return run

    fns = {
        "hf": nograd(lambda: hf(input_ids=tokens, attention_mask=mask).logits),
        "ours": nograd(lambda: model(tokens, attention_mask=mask)),
        "cache_all": nograd(lambda: model.run_with_cache(tokens, attention_mask=mask)),
        "cache_resid": nograd(lambda: model.run_with_cache(tokens, attention_mask=mask, names_filter=is_resid)),
        "cache_reward_pos": nograd(lambda: model.run_with_cache(tokens, attention_mask=mask, positions="reward")),
        "hf_causal_lm": nograd(lambda: hf_causal(input_ids=tokens, attention_mask=mask).logits),
        "tl_bridge_causal_lm": nograd(lambda: tl_bridge(tokens, attention_mask=mask)),
    }
    t = time_interleaved(fns, repeats, device=device)

    def measure_retained() -> dict[str, Any]:
        """The same runs with freed CPU memory kept for reuse. Process-wide (HF's forward gets it too) and not
        fully undoable, so `main` calls this after every other in-process section."""
        retained = retain_freed_cpu_memory()
        t_retained = time_interleaved(
            {k: fns[k] for k in ("hf", "ours", "cache_all", "cache_resid")}, repeats, device=device
        )
        return {
            "retained_memory": {
                "in_effect": retained,
                "seconds": t_retained,
                "ratio_vs_hf": t_retained["ours"] / t_retained["hf"],
                "cache_all_ratio_vs_hf": t_retained["cache_all"] / t_retained["hf"],
                "cache_resid_ratio_vs_hf": t_retained["cache_resid"] / t_retained["hf"],
            },
        }

    return {
        "seconds": t,
        "max_abs_reward_diff_vs_hf": max_diff,
        "ratio_vs_hf": t["ours"] / t["hf"],
        "cache_all_ratio_vs_hf": t["cache_all"] / t["hf"],
        "cache_resid_ratio_vs_hf": t["cache_resid"] / t["hf"],
        "cache_reward_pos_ratio_vs_hf": t["cache_reward_pos"] / t["hf"],
        "tl_bridge_ratio_vs_hf_causal_lm": t["tl_bridge_causal_lm"] / t["hf_causal_lm"],
        "shape": {"batch": shape["batch"], "seq": shape["seq"]},
    }, measure_retained


def bench_memory(
    model: Any, hf: Any, shape: dict[str, int], device: torch.device = torch.device("cpu")
) -> dict[str, Any]:
    """Cached activation bytes (exact) and peak allocator bytes of each kind of run."""
    g = torch.Generator().manual_seed(2)
    batch, seq = shape["batch"], shape["seq"]
    tokens = torch.randint(1, shape["vocab"], (batch, seq), generator=g).to(device)
    mask = torch.ones_like(tokens)
    out: dict[str, Any] = {}
    with torch.no_grad():
        out["hf_forward_peak_bytes"], _ = peak_alloc_bytes(
            lambda: hf(input_ids=tokens, attention_mask=mask).logits, device
        )
        out["ours_forward_peak_bytes"], _ = peak_alloc_bytes(lambda: model(tokens, attention_mask=mask), device)
    runs = {
        "full": dict(),
        "resid": dict(names_filter=is_resid),
        "reward_pos": dict(positions="reward"),
    }
    caches = {}
    for name, kwargs in runs.items():
        with torch.no_grad():  # grad mode is the caller's; these runs measure caching alone
            peak, (_, cache) = peak_alloc_bytes(
                lambda kw=kwargs: model.run_with_cache(tokens, attention_mask=mask, **kw), device
            )
        counted = cache_bytes(cache)
        tokens_cached = batch * (1 if name == "reward_pos" else seq)
        out[f"cache_{name}"] = {
            **counted,
            "peak_bytes": peak,
            "cached_tokens": tokens_cached,
            "bytes_per_cached_token": counted["tensor_bytes"] / tokens_cached,
        }
        caches[name] = cache
    # the reward-position cache must hold <= 1/seq of the full cache plus a constant: the tensors that have no
    # position axis at all (hook_reward_resid, hook_reward: [batch, ...]), which both caches hold in full.
    full, reward = caches["full"].cache_dict, caches["reward_pos"].cache_dict
    unreduced = {k: v for k, v in reward.items() if k in full and v.shape == full[k].shape}
    no_pos = {k: v for k, v in unreduced.items() if seq not in v.shape}
    seq_dep = {k: v for k, v in unreduced.items() if seq in v.shape}
    const = cache_bytes(_Cache(no_pos))["tensor_bytes"]
    out["reward_cache_unreduced_seq_entries"] = {k: list(v.shape) for k, v in seq_dep.items()}
    out["reward_cache_unreduced_seq_bytes"] = cache_bytes(_Cache(seq_dep))["tensor_bytes"]
    excess = out["cache_reward_pos"]["tensor_bytes"] - out["cache_full"]["tensor_bytes"] / seq
    out["reward_cache_excess_bytes_over_full_per_seq"] = excess
    out["reward_cache_constant_bytes"] = const
    out["reward_cache_within_bound"] = bool(excess <= const)
    out["full_over_reward_bytes"] = out["cache_full"]["tensor_bytes"] / out["cache_reward_pos"]["tensor_bytes"]
    return out


def bench_patching(
    model: Any, shape: dict[str, int], repeats: int, stride: int = 1, device: torch.device = torch.device("cpu")
) -> dict[str, Any]:
    """Full resid_pre layer x position sweep: ours vs naive one-forward-per-patch vs TransformerLens's.

    `stride > 1` runs the two baselines on every `stride`-th position only (every layer) and scales their time to
    the full sweep (each of their patches costs one full forward); ours always runs the full sweep, and the
    max |difference| is taken on the positions both ran."""
    import inspect

    import transformer_lens.patching as tlp

    from hooked_reward.analysis import patching as hp
    from hooked_reward.analysis.attribution_patching import AttributionPatchingResult, attribution_patch
    from hooked_reward.analysis.stats import spearman

    g = torch.Generator().manual_seed(3)
    seq, n_layers = shape["sweep_seq"], model.cfg.n_layers
    clean = torch.randint(1, shape["vocab"], (seq,), generator=g)
    corrupt = clean.clone()
    flip = torch.randperm(seq, generator=g)[: max(1, seq // 4)]
    corrupt[flip] = torch.randint(1, shape["vocab"], (len(flip),), generator=g)
    names = [f"blocks.{layer}.hook_resid_pre" for layer in range(n_layers)]
    fast = "fast" in inspect.signature(hp.patch_resid).parameters
    try:
        import hooked_reward.analysis.patching_fast  # noqa: F401
    except ImportError:
        fast = False

    def ours() -> torch.Tensor:  # the path patch_resid picks (the fast sweep at this size)
        return hp.patch_resid(model, clean, corrupt, mode="denoise", progress=False).rewards

    subset = list(range(0, seq, stride))  # positions the (slow) baselines patch; ours patches every one

    def naive() -> torch.Tensor:
        _, cache = model.run_with_cache(clean[None], names_filter=names)
        out = torch.empty(n_layers, len(subset))
        for layer, name in enumerate(names):
            src = cache[name]
            for j, p in enumerate(subset):

                def hook(act: torch.Tensor, hook: Any, p: int = p, src: torch.Tensor = src) -> torch.Tensor:
                    act[:, p] = src[:, p]
                    return act

                with torch.no_grad():
                    out[layer, j] = model.run_with_hooks(corrupt[None], fwd_hooks=[(name, hook)])[0]
        return out

    def tl() -> torch.Tensor:
        import pandas as pd

        index = pd.DataFrame([(layer, p) for layer in range(n_layers) for p in subset], columns=["layer", "pos"])
        _, cache = model.run_with_cache(clean[None], names_filter=names)
        with torch.no_grad():
            flat = tlp.get_act_patch_resid_pre(
                model, corrupt[None], cache, lambda r: r[0], index_df=index, index_axis_names=None
            )
        return flat.reshape(n_layers, len(subset))

    def one_forward() -> torch.Tensor:
        with torch.no_grad():
            return model(corrupt[None])

    results: dict[str, list[torch.Tensor]] = {"ours": [], "naive": [], "tl": []}
    times: dict[str, list[float]] = {k: [] for k in results}
    # ours is cheaper: run it before and after each slow baseline (interleaved), keep the medians
    order = ["ours", "naive", "tl", "ours"]
    fns = {"ours": ours, "naive": naive, "tl": tl}
    sync = synchronizer(device)
    for name in order:
        log(f"patching: {name}")
        sync()
        t0 = time.perf_counter()
        results[name].append(fns[name]().cpu())
        sync()
        times[name].append(time.perf_counter() - t0)
    # seconds for the whole layer x position sweep (the baselines' cost is the same for every patch: one forward)
    t = {k: statistics.median(v) for k, v in times.items()}
    t["naive"] *= seq / len(subset)
    t["tl"] *= seq / len(subset)
    ref = results["naive"][0]
    ours_sub = results["ours"][0][:, subset]
    t_fwd = time_interleaved({"fwd": one_forward}, max(repeats, 5), device=device)["fwd"]

    # attribution patching of every component, and exact patching of the same components
    def attr() -> AttributionPatchingResult:
        return attribution_patch(model, clean, corrupt, sites=("resid_pre", "attn_out", "mlp_out", "z"))

    t_attr = time_interleaved({"attr": attr, "fwd": one_forward}, repeats, device=device)
    approx = attr()
    exact_blocks = hp.patch_block_outputs(model, clean, corrupt, progress=False)
    exact_heads = hp.patch_heads(model, clean, corrupt, act="z", progress=False)
    exact_resid = results["ours"][0] - float(one_forward()[0])  # checked against the naive loop above

    def rho(a: torch.Tensor, b: torch.Tensor) -> float:
        return spearman(a.flatten().cpu().numpy(), b.flatten().cpu().numpy())

    spear = {
        "resid_pre": rho(approx.sweep("resid_pre").values, exact_resid),
        "block_outputs": rho(approx.sweep("block_outputs").values, exact_blocks.values),
        "z": rho(approx.sweep("z").values, exact_heads.values),
    }
    allx = torch.cat([approx.sweep(k).values.flatten().cpu() for k in ("resid_pre", "block_outputs", "z")])
    ally = torch.cat(
        [exact_resid.flatten().cpu(), exact_blocks.values.flatten().cpu(), exact_heads.values.flatten().cpu()]
    )
    spear["all"] = rho(allx, ally)
    return {
        "patching": {
            "seconds": t,
            "n_patches": n_layers * seq,
            "seq": seq,
            "fast_sweep": fast,
            "baseline_position_stride": stride,
            "baseline_patches_run": n_layers * len(subset),
            "sweep_ratio_vs_naive": t["ours"] / t["naive"],
            "tl_ratio_vs_naive": t["tl"] / t["naive"],
            "sweep_ratio_vs_tl": t["ours"] / t["tl"],
            "sweep_forward_equivalents": t["ours"] / t_fwd,
            "naive_forward_equivalents": t["naive"] / t_fwd,
            "sweep_max_abs_diff_vs_naive": float((ours_sub - ref).abs().max()),
            "tl_max_abs_diff_vs_naive": float((results["tl"][0] - ref).abs().max()),
            "one_forward_seconds": t_fwd,
        },
        "attribution_patching": {
            "seconds": t_attr["attr"],
            "one_forward_seconds": t_attr["fwd"],
            "forward_equivalents": t_attr["attr"] / t_attr["fwd"],
            "sites": ["resid_pre", "attn_out", "mlp_out", "z"],
            "spearman_vs_exact": spear,
        },
    }


def bench_lengths(
    model: Any, hf: Any, shape: dict[str, Any], device: torch.device = torch.device("cpu")
) -> dict[str, Any]:
    """The length axis (batch 1, unpadded): forward, residual-filtered and reward-position caches against HF,
    the cost of a pattern hook on one layer against the explicit path on every layer, and the residual sweep.

    The sweep cannot run over the full layer x position grid at 2048 tokens (16k patches), so it is timed on
    `sweep_sample_positions` evenly spaced positions x every layer, by both paths (`fast_resid_rewards`, after
    the fast sweep's one-off plan and self-check, and `run_patched`), and scaled to the full grid."""
    n_layers, repeats = model.cfg.n_layers, shape["length_repeats"]
    pattern_layer = n_layers // 2
    pattern_hook = f"blocks.{pattern_layer}.attn.hook_pattern"
    out: dict[str, Any] = {"pattern_hook": pattern_hook, "by_length": {}}

    for seq in shape["lengths"]:
        log(f"lengths: {seq}")
        g = torch.Generator().manual_seed(seq)
        tokens = torch.randint(1, shape["vocab"], (1, seq), generator=g).to(device)
        row = length_timings(model, hf, tokens, pattern_hook, repeats, device)
        row["sweep"] = sampled_sweep(model, shape, seq, device)
        out["by_length"][str(seq)] = row
    rows = out["by_length"].values()
    out["longest"] = out["by_length"][str(max(shape["lengths"]))]
    out["max_forward_ratio_vs_hf"] = max(r["ratio_vs_hf"] for r in rows)
    out["max_sweep_chosen_over_plain"] = max(r["sweep"]["chosen_over_plain"] for r in rows)
    out["max_sweep_abs_diff_fast_vs_plain"] = max(r["sweep"]["max_abs_diff_fast_vs_plain"] for r in rows)
    return out


def length_timings(
    model: Any, hf: Any, tokens: torch.Tensor, pattern_hook: str, repeats: int, device: torch.device
) -> dict[str, Any]:
    """Interleaved timings on one `[1, seq]` input: HF, ours (fused attention), residual-filtered and
    reward-position caches, a pattern hook on one layer, and the explicit path on every layer."""

    def nograd(fn: Callable[[], Any]) -> Callable[[], Any]:
        def run() -> Any:
            with torch.no_grad():
                return fn()

        return run

    def explicit_every_layer() -> Any:
        model.set_fused_attention(False)
        try:
            return model(tokens)
        finally:
            model.set_fused_attention(True)

    fns = {
        "hf": nograd(lambda: hf(input_ids=tokens).logits),
        "ours": nograd(lambda: model(tokens)),
        "cache_resid": nograd(lambda: model.run_with_cache(tokens, names_filter=is_resid)),
        "cache_reward_pos": nograd(lambda: model.run_with_cache(tokens, positions="reward")),
        "pattern_hook_one_layer": nograd(
            lambda: model.run_with_hooks(tokens, fwd_hooks=[(pattern_hook, lambda _t, hook: None)])
        ),
        "explicit_every_layer": nograd(explicit_every_layer),
    }
    # CPU seconds of this process on CPU (one torch thread: other processes' load does not count); wall on a GPU
    clock = time.process_time if device.type == "cpu" and torch.get_num_threads() == 1 else time.perf_counter
    t = time_interleaved(fns, repeats, device=device, clock=clock)
    explicit_layer = (t["explicit_every_layer"] - t["ours"]) / model.cfg.n_layers
    return {
        "seconds": t,
        "ratio_vs_hf": t["ours"] / t["hf"],
        "cache_resid_ratio_vs_hf": t["cache_resid"] / t["hf"],
        "cache_reward_pos_ratio_vs_hf": t["cache_reward_pos"] / t["hf"],
        "explicit_every_layer_ratio_vs_hf": t["explicit_every_layer"] / t["hf"],
        "explicit_layer_seconds": explicit_layer,
        "pattern_hook_extra_seconds": t["pattern_hook_one_layer"] - t["ours"],
        # NaN when the explicit path was not measurably slower (tiny shapes): the ratio then means nothing
        "pattern_hook_cost_vs_explicit_layer": (t["pattern_hook_one_layer"] - t["ours"]) / explicit_layer
        if explicit_layer > 0
        else math.nan,
    }


def bench_fixed_cost(model: Any, hf: Any, shape: dict[str, Any]) -> dict[str, Any]:
    """Issue 33 item 2: the forward against HF at each (tokens, batch) of `fixed_cost`, in CPU seconds of this
    process (one torch thread; interleaved, medians), and the fixed cost per forward: the difference on a
    4-token row of a model of the same depth and d_model 64, where the compute is negligible."""
    repeats = shape["fixed_cost_repeats"]
    clock = time.process_time if torch.get_num_threads() == 1 else time.perf_counter
    out: dict[str, Any] = {"clock": clock.__name__, "by_shape": {}}
    for seq, batch in shape["fixed_cost"]:
        log(f"fixed cost: {batch} x {seq}")
        g = torch.Generator().manual_seed(seq + batch)
        tokens = torch.randint(1, shape["vocab"], (batch, seq), generator=g)
        with torch.no_grad():
            t = time_interleaved(
                {"hf": lambda t=tokens: hf(input_ids=t).logits, "ours": lambda t=tokens: model(t)}, repeats, clock=clock
            )
        out["by_shape"][f"{batch}x{seq}"] = {"seconds": t, "ratio_vs_hf": t["ours"] / t["hf"]}
    out["max_forward_ratio_vs_hf"] = max(r["ratio_vs_hf"] for r in out["by_shape"].values())
    from transformers import AutoModelForSequenceClassification

    from hooked_reward import HookedRewardModel

    small = dict(shape, d_model=64, d_mlp=128, vocab=512, n_heads=4)
    with tempfile.TemporaryDirectory() as tmp:
        path = make_checkpoint(small, Path(tmp) / "small")
        hf_small = AutoModelForSequenceClassification.from_pretrained(str(path)).eval()
        ours_small = HookedRewardModel.from_pretrained(path)
    tokens = torch.randint(1, 512, (1, 4))
    n = 20

    def many(fn: Callable[[], Any]) -> Callable[[], None]:
        def run() -> None:
            with torch.no_grad():
                for _ in range(n):
                    fn()

        return run

    t = time_interleaved(
        {"hf": many(lambda: hf_small(input_ids=tokens)), "ours": many(lambda: ours_small(tokens))}, repeats, clock=clock
    )
    out["fixed_ms_per_forward"] = {k: 1000 * v / n for k, v in t.items()}
    out["fixed_ms_over_hf"] = 1000 * (t["ours"] - t["hf"]) / n
    out["n_layers"] = shape["n_layers"]
    return out


def bench_real(shape: dict[str, Any]) -> dict[str, Any]:
    """Issue 33 items 3-4 at the real configs (`benchmarks/scale.py`): load time (CPU seconds per loading process,
    alternating, medians) and attribution patching's peak RSS against HF's forward peak, each in its own process."""
    sys.path.insert(0, str(Path(__file__).parent))
    import scale

    out: dict[str, Any] = {"by_config": {}}
    for name in shape["real_configs"]:
        log(f"real config: {name}")
        out["by_config"][name] = scale.real_config_figures(
            name, shape["real_dtype"], shape["real_tokens"], shape["real_load_repeats"]
        )
    rows = out["by_config"].values()
    out["max_load_ratio_vs_hf"] = max(r["load_ratio_vs_hf"] for r in rows)
    out["max_atp_peak_rss_ratio_vs_hf_forward"] = max(r["atp_peak_rss_ratio_vs_hf_forward"] for r in rows)
    return out


def sampled_sweep(model: Any, shape: dict[str, Any], seq: int, device: torch.device) -> dict[str, Any]:
    """Both paths of the denoising `resid_pre` sweep on sampled positions x every layer, scaled to the full grid."""
    from hooked_reward.analysis import patching_fast as pf
    from hooked_reward.analysis.patching import Patch, align_pair, run_patched

    g = torch.Generator().manual_seed(seq + 1)
    clean = torch.randint(1, shape["vocab"], (seq,), generator=g).to(device)
    corrupt = clean.clone()
    flip = torch.randperm(seq, generator=g)[: max(1, seq // 4)].to(device)
    corrupt[flip] = torch.randint(1, shape["vocab"], (len(flip),), generator=g).to(device)
    n_layers = model.cfg.n_layers
    names = [f"blocks.{layer}.hook_resid_pre" for layer in range(n_layers)]
    positions = torch.linspace(0, seq - 1, shape["sweep_sample_positions"]).round().long().tolist()
    with torch.no_grad():
        _, cache = model.run_with_cache(clean[None], names_filter=names)
    sources = {name: cache[name][0] for name in names}
    max_rows = max(1, 8192 // seq)  # the same memory bound for both paths
    sync = synchronizer(device)

    def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
        sync()
        t0 = time.perf_counter()
        result = fn()
        sync()
        return time.perf_counter() - t0, result

    def plan() -> Any:
        with torch.no_grad():
            found, reason = pf.plan_fast_sweep(model, corrupt)
            assert found is not None and not pf.self_check(found, None), reason
        return found

    t_plan, fast_plan = timed(plan)
    sites = [(layer, p, sources[names[layer]][p]) for layer in range(n_layers) for p in positions]
    t_fast, fast = timed(lambda: pf.fast_resid_rewards(fast_plan, sites, max_rows=max_rows, progress=False))
    patch_sets = [[Patch(names[layer], (p,))] for layer in range(n_layers) for p in positions]
    t_plain, plain = timed(
        lambda: run_patched(
            model, corrupt, sources, patch_sets, align_pair(seq, seq), max_rows=max_rows, progress=False
        )
    )
    scale = n_layers * seq / len(sites)
    fast_full, plain_full = t_plan + t_fast * scale, t_plain * scale
    picks_fast = pf.fast_sweep_pays(seq, n_layers, model.cfg.d_model)
    return {
        "sampled_patches": len(sites),
        "full_grid_patches": n_layers * seq,
        "max_rows": max_rows,
        "fast_plan_and_check_seconds": t_plan,
        "fast_sampled_seconds": t_fast,
        "plain_sampled_seconds": t_plain,
        "fast_full_grid_seconds_est": fast_full,
        "plain_full_grid_seconds_est": plain_full,
        "fast_over_plain": fast_full / plain_full,
        "rule_picks": "fast" if picks_fast else "plain",
        "chosen_over_plain": (fast_full if picks_fast else plain_full) / plain_full,
        "max_abs_diff_fast_vs_plain": float((fast - plain).abs().max()),
    }


IMPORTS = {
    "python": "pass",
    "transformers": "import transformers",
    "transformer_lens": "import transformer_lens",
    "transformer_lens_bridge": "from transformer_lens.model_bridge import TransformerBridge",
    "hooked_reward": "import hooked_reward",
    "hooked_reward_model": "from hooked_reward import HookedRewardModel",
}


def bench_imports(repeats: int) -> dict[str, Any]:
    """Cold import times: each statement in a fresh interpreter (wall seconds of the process, interleaved, median),
    less the bare interpreter's start-up. `hooked_reward_model` is the first use of the model class (it imports
    TransformerLens's bridge), compared with importing that bridge directly."""
    root = str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}

    def run(code: str) -> Callable[[], None]:
        return lambda: subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=root)

    t = time_interleaved({name: run(code) for name, code in IMPORTS.items()}, repeats)
    net = {name: t[name] - t["python"] for name in IMPORTS if name != "python"}
    return {
        "seconds": net,
        "interpreter_seconds": t["python"],
        "hooked_reward_ratio_vs_transformer_lens": net["hooked_reward"] / net["transformer_lens"],
        "model_ratio_vs_transformer_lens": net["hooked_reward_model"] / net["transformer_lens"],
        "model_ratio_vs_transformer_lens_bridge": net["hooked_reward_model"] / net["transformer_lens_bridge"],
    }


def make_causal_checkpoint(shape: dict[str, int], out: Path) -> Path:
    """A `LlamaForCausalLM` of the same shape (default init: only its loading is timed), saved to `out`."""
    from transformers import LlamaForCausalLM

    LlamaForCausalLM(llama_config(shape)).save_pretrained(out)
    return out


LOAD_SERVER = textwrap.dedent(
    """
    import json, os, sys, time
    import torch
    torch.set_num_threads(int(sys.argv[1]))
    import transformers
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification
    import transformers.models.llama.modeling_llama  # noqa: F401
    from transformer_lens.model_bridge.sources import build_bridge_from_module
    from hooked_reward import HookedRewardModel
    from hooked_reward.loading import supported_causal_architectures
    supported_causal_architectures()

    def hwm_kb():
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1])

    print("ready", flush=True)
    for line in sys.stdin:
        kind, path = json.loads(line)
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # reset VmHWM to the current RSS
            base = hwm_kb()
            t0 = time.perf_counter()
            if kind == "hf":
                m = AutoModelForSequenceClassification.from_pretrained(path, dtype=torch.float32)
            elif kind == "ours":
                m = HookedRewardModel.from_pretrained(path, dtype=torch.float32)
            elif kind == "hf_causal_lm":
                m = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
            else:  # TransformerLens's own bridge over the causal LM
                m = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
                m = build_bridge_from_module(m, "LlamaForCausalLM", hf_config=m.config)
            seconds = time.perf_counter() - t0
            peak = hwm_kb()
            os.write(w, json.dumps({"seconds": seconds, "peak_rss_delta_bytes": (peak - base) * 1024,
                                    "baseline_rss_bytes": base * 1024}).encode())
            os._exit(0)
        os.close(w)
        data = b""
        while chunk := os.read(r, 65536):
            data += chunk
        os.close(r)
        os.waitpid(pid, 0)
        print(data.decode(), flush=True)
    """
)


def start_load_server(threads: int) -> subprocess.Popen:
    """A Python process that does the imports once and forks a fresh child for each load."""
    return subprocess.Popen(
        [sys.executable, "-c", LOAD_SERVER, str(threads)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=str(Path(__file__).resolve().parent.parent),
    )


def bench_loading(
    server: subprocess.Popen, path: Path, causal_path: Path, repeats: int, last: bool = True, n_layers: int = 1
) -> dict[str, Any]:
    """Load time and peak RSS above the post-import baseline, medians over interleaved repeats: ours vs HF's
    `AutoModelForSequenceClassification`, and, for comparison, TransformerLens's own bridge over a
    `LlamaForCausalLM` of the same shape vs HF's `AutoModelForCausalLM` on that checkpoint. `last=False` keeps
    the server running for another call."""
    assert server.stdin is not None and server.stdout is not None
    if not getattr(server, "ready", False):
        line = server.stdout.readline().strip()
        if line != "ready":
            raise RuntimeError(f"load server failed to start: {line!r}")
        server.ready = True  # type: ignore[attr-defined]
    kinds = {"hf": path, "ours": path, "hf_causal_lm": causal_path, "tl_bridge_causal_lm": causal_path}
    runs: dict[str, list[dict]] = {kind: [] for kind in kinds}
    names = list(kinds)
    for r in range(repeats):
        for kind in names[r % len(names) :] + names[: r % len(names)]:
            server.stdin.write(json.dumps([kind, str(kinds[kind])]) + "\n")
            server.stdin.flush()
            runs[kind].append(json.loads(server.stdout.readline()))
    if last:
        server.stdin.close()
        server.wait(timeout=60)
    med = {
        k: {f: statistics.median(x[f] for x in v) for f in ("seconds", "peak_rss_delta_bytes")} for k, v in runs.items()
    }
    return {
        **med,
        "time_ratio_vs_hf": med["ours"]["seconds"] / med["hf"]["seconds"],
        "peak_rss_ratio_vs_hf": med["ours"]["peak_rss_delta_bytes"] / med["hf"]["peak_rss_delta_bytes"],
        "bridge_seconds_over_hf": med["ours"]["seconds"] - med["hf"]["seconds"],
        # an upper bound of the per-layer cost (fixed costs included); load_scaling.py fits the slope
        "bridge_ms_per_layer": 1000 * (med["ours"]["seconds"] - med["hf"]["seconds"]) / n_layers,
        "tl_bridge_time_ratio_vs_hf_causal_lm": med["tl_bridge_causal_lm"]["seconds"] / med["hf_causal_lm"]["seconds"],
        "tl_bridge_seconds_over_hf_causal_lm": med["tl_bridge_causal_lm"]["seconds"] - med["hf_causal_lm"]["seconds"],
        "checkpoint_bytes": sum(f.stat().st_size for f in path.iterdir()),
        "repeats": repeats,
    }


# ------------------------------------------------------------------------------------------------ report
def machine_info(threads: int, device: torch.device = torch.device("cpu")) -> dict[str, Any]:
    """CPU model, core count, load average, library versions, date, and the GPU when `device` is one."""
    model = platform.processor() or "unknown"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    import transformers

    try:
        from importlib.metadata import version

        tl_version = version("transformer-lens")
    except Exception:  # noqa: BLE001 - informative only
        tl_version = "unknown"
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "torch_threads": threads,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "transformer_lens": tl_version,
        "python": platform.python_version(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "load_average": os.getloadavg(),
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
    }


def check_targets(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each target figure with its value, bound and whether it is met."""
    out = {}
    for key, (kind, bound) in TARGETS.items():
        section, *path = key.split(".")
        if section not in results or (kind == "le_const" and "memory" not in results):
            continue  # a section left out with --only
        value = functools.reduce(lambda node, part: node.get(part, {}), path, results[section])
        if not isinstance(value, (int, float)):
            continue  # not measured in this run
        if kind == "le_const":
            bound = results["memory"]["reward_cache_constant_bytes"]
        out[key] = {"value": value, "bound": bound, "met": bool(value <= bound)}
    return out


def format_table(results: dict[str, Any]) -> str:
    """A plain-text table of the main figures."""
    tg = results["targets"]

    def mark(key: str) -> str:
        return f"{'met' if tg[key]['met'] else 'MISSED'} (<= {tg[key]['bound']:.4g})" if key in tg else ""

    rows: list[tuple[str, str, str]] = []
    if "forward" in results:
        rows += forward_rows(results["forward"], mark)
    if "memory" in results:
        rows += memory_rows(results["memory"], mark)
    if "patching" in results:
        rows += patching_rows(results["patching"], results["attribution_patching"], mark)
    if "lengths" in results:
        rows += length_rows(results["lengths"], mark)
    if "fixed_cost" in results:
        rows += fixed_cost_rows(results["fixed_cost"], mark)
    if "real" in results:
        rows += real_rows(results["real"], mark)
    if "imports" in results:
        rows += import_rows(results["imports"], mark)
    if "loading" in results:
        rows += loading_rows(results["loading"], mark)
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    return "\n".join(f"{a_:<{w0}}  {b:>{w1}}  {c}" for a_, b, c in rows)


Rows = list[tuple[str, str, str]]


def forward_rows(f: dict[str, Any], mark: Callable[[str], str]) -> Rows:
    return [
        ("forward ours / HF", f"{f['ratio_vs_hf']:.3f}x", mark("forward.ratio_vs_hf")),
        ("run_with_cache all hooks / HF", f"{f['cache_all_ratio_vs_hf']:.3f}x", mark("forward.cache_all_ratio_vs_hf")),
        (
            "  same, retain_freed_cpu_memory() / HF",
            f"{f['retained_memory']['cache_all_ratio_vs_hf']:.3f}x",
            mark("forward.retained_memory.cache_all_ratio_vs_hf"),
        ),
        ("  forward ours / HF, retain_freed_cpu_memory()", f"{f['retained_memory']['ratio_vs_hf']:.3f}x", ""),
        (
            "run_with_cache resid filter / HF",
            f"{f['cache_resid_ratio_vs_hf']:.3f}x",
            mark("forward.cache_resid_ratio_vs_hf"),
        ),
        ("run_with_cache positions='reward' / HF", f"{f['cache_reward_pos_ratio_vs_hf']:.3f}x", ""),
        ("TL bridge (causal LM) / HF causal LM", f"{f['tl_bridge_ratio_vs_hf_causal_lm']:.3f}x", ""),
        ("HF forward (s)", f"{f['seconds']['hf']:.4f}", ""),
        ("max |reward - HF|", f"{f['max_abs_reward_diff_vs_hf']:.2e}", ""),
    ]


def memory_rows(m: dict[str, Any], mark: Callable[[str], str]) -> Rows:
    rows = [
        ("HF forward peak alloc (MB)", f"{m['hf_forward_peak_bytes'] / 2**20:.1f}", ""),
        ("ours forward peak alloc (MB)", f"{m['ours_forward_peak_bytes'] / 2**20:.1f}", ""),
    ]
    for name in ("full", "resid", "reward_pos"):
        c = m[f"cache_{name}"]
        rows.append(
            (
                f"cache {name}: MB / bytes per token / peak MB",
                f"{c['tensor_bytes'] / 2**20:.2f} / {c['bytes_per_cached_token']:.0f} / {c['peak_bytes'] / 2**20:.1f}",
                "",
            )
        )
    rows.append(
        (
            "reward cache - full/seq (bytes)",
            f"{m['reward_cache_excess_bytes_over_full_per_seq']:.0f}",
            mark("memory.reward_cache_excess_bytes_over_full_per_seq"),
        )
    )
    return rows


def patching_rows(p: dict[str, Any], a: dict[str, Any], mark: Callable[[str], str]) -> Rows:
    return [
        (
            f"resid_pre sweep ({p['n_patches']} patches) / naive",
            f"{p['sweep_ratio_vs_naive']:.3f}",
            mark("patching.sweep_ratio_vs_naive"),
        ),
        ("TL get_act_patch_resid_pre / naive", f"{p['tl_ratio_vs_naive']:.3f}", ""),
        (
            "sweep max |diff| vs naive",
            f"{p['sweep_max_abs_diff_vs_naive']:.2e}",
            mark("patching.sweep_max_abs_diff_vs_naive"),
        ),
        (
            "attribution patching (forward-equivalents)",
            f"{a['forward_equivalents']:.2f}",
            mark("attribution_patching.forward_equivalents"),
        ),
        (
            "attribution vs exact Spearman (resid/blocks/z/all)",
            " / ".join(f"{a['spearman_vs_exact'][k]:.3f}" for k in ("resid_pre", "block_outputs", "z", "all")),
            "",
        ),
    ]


def length_rows(lg: dict[str, Any], mark: Callable[[str], str]) -> Rows:
    rows: Rows = []
    for seq, r in lg["by_length"].items():
        sw = r["sweep"]
        rows += [
            (f"[{seq} tokens] forward ours / HF", f"{r['ratio_vs_hf']:.3f}x", ""),
            (
                f"[{seq} tokens]   explicit attention every layer / HF",
                f"{r['explicit_every_layer_ratio_vs_hf']:.3f}x",
                "",
            ),
            (f"[{seq} tokens]   resid cache / HF", f"{r['cache_resid_ratio_vs_hf']:.3f}x", ""),
            (f"[{seq} tokens]   reward-position cache / HF", f"{r['cache_reward_pos_ratio_vs_hf']:.3f}x", ""),
            (
                f"[{seq} tokens]   pattern hook on one layer / explicit layer",
                f"{r['pattern_hook_cost_vs_explicit_layer']:.2f}",
                "",
            ),
            (
                f"[{seq} tokens]   sweep fast / plain (est.), rule picks",
                f"{sw['fast_over_plain']:.3f} {sw['rule_picks']}",
                "",
            ),
        ]
    rows += [
        (
            "max forward ratio over lengths",
            f"{lg['max_forward_ratio_vs_hf']:.3f}x",
            mark("lengths.max_forward_ratio_vs_hf"),
        ),
        (
            "longest: resid cache / HF",
            f"{lg['longest']['cache_resid_ratio_vs_hf']:.3f}x",
            mark("lengths.longest.cache_resid_ratio_vs_hf"),
        ),
        (
            "longest: reward-position cache / HF",
            f"{lg['longest']['cache_reward_pos_ratio_vs_hf']:.3f}x",
            mark("lengths.longest.cache_reward_pos_ratio_vs_hf"),
        ),
        (
            "longest: pattern hook cost / explicit layer",
            f"{lg['longest']['pattern_hook_cost_vs_explicit_layer']:.2f}",
            mark("lengths.longest.pattern_hook_cost_vs_explicit_layer"),
        ),
        (
            "sweep: chosen path / plain (max)",
            f"{lg['max_sweep_chosen_over_plain']:.3f}",
            mark("lengths.max_sweep_chosen_over_plain"),
        ),
    ]
    return rows


def fixed_cost_rows(fc: dict[str, Any], mark: Callable[[str], str]) -> Rows:
    rows = [
        (f"forward / HF, batch x tokens {key} ({fc['clock']})", f"{r['ratio_vs_hf']:.3f}", "")
        for key, r in fc["by_shape"].items()
    ]
    rows.append(
        (
            "forward / HF, worst shape",
            f"{fc['max_forward_ratio_vs_hf']:.3f}",
            mark("fixed_cost.max_forward_ratio_vs_hf"),
        )
    )
    rows.append(
        (
            f"fixed cost per forward over HF ({fc['n_layers']} layers, 4 tokens, d_model 64)",
            f"{fc['fixed_ms_over_hf']:.2f} ms",
            "",
        )
    )
    return rows


def real_rows(rl: dict[str, Any], mark: Callable[[str], str]) -> Rows:
    rows: Rows = []
    for name, r in rl["by_config"].items():
        loads = {k: statistics.median(v) for k, v in r["load_cpu_s"].items()}
        rows.append(
            (
                f"{name} {r['dtype']}: load / HF (CPU s {loads['ours']:.2f} / {loads['hf']:.2f})",
                f"{r['load_ratio_vs_hf']:.2f}x",
                "",
            )
        )
        rows.append(
            (
                f"{name} {r['dtype']} {r['tokens']} tokens: AtP peak RSS / HF forward peak "
                f"({r['atp']['peak_rss_mb']:.0f} / {r['hf_forward_peak_rss_mb']:.0f} MB)",
                f"{r['atp_peak_rss_ratio_vs_hf_forward']:.2f}x",
                "",
            )
        )
    rows.append(
        ("real configs: worst load / HF", f"{rl['max_load_ratio_vs_hf']:.2f}x", mark("real.max_load_ratio_vs_hf"))
    )
    rows.append(
        (
            "real configs: worst AtP peak RSS / HF forward",
            f"{rl['max_atp_peak_rss_ratio_vs_hf_forward']:.2f}x",
            mark("real.max_atp_peak_rss_ratio_vs_hf_forward"),
        )
    )
    return rows


def import_rows(im: dict[str, Any], mark: Callable[[str], str]) -> Rows:
    sec = im["seconds"]
    return [
        (
            "import hooked_reward / import transformer_lens",
            f"{im['hooked_reward_ratio_vs_transformer_lens']:.3f}x",
            mark("imports.hooked_reward_ratio_vs_transformer_lens"),
        ),
        (
            "  HookedRewardModel / TL's TransformerBridge import",
            f"{im['model_ratio_vs_transformer_lens_bridge']:.3f}x",
            "",
        ),
        (
            "  seconds: transformers / TL / TL bridge / ours / ours+model",
            " / ".join(
                f"{sec[k]:.2f}"
                for k in (
                    "transformers",
                    "transformer_lens",
                    "transformer_lens_bridge",
                    "hooked_reward",
                    "hooked_reward_model",
                )
            ),
            "",
        ),
    ]


def loading_rows(ld: dict[str, Any], mark: Callable[[str], str]) -> Rows:
    return [
        ("load time ours / HF", f"{ld['time_ratio_vs_hf']:.3f}x", mark("loading.time_ratio_vs_hf")),
        ("  load time, TL bridge / HF causal LM", f"{ld['tl_bridge_time_ratio_vs_hf_causal_lm']:.3f}x", ""),
        (
            "  seconds above HF: ours / TL bridge",
            f"{ld['bridge_seconds_over_hf']:.3f} / {ld['tl_bridge_seconds_over_hf_causal_lm']:.3f}",
            "",
        ),
        ("load peak RSS ours / HF", f"{ld['peak_rss_ratio_vs_hf']:.3f}x", mark("loading.peak_rss_ratio_vs_hf")),
        ("bridge ms per layer (upper bound)", f"{ld['bridge_ms_per_layer']:.1f}", mark("loading.bridge_ms_per_layer")),
    ]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run every benchmark, print the table, write the JSON; returns the results."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="CI-sized shapes (timings not meaningful)")
    parser.add_argument("--out", default="benchmarks/results/latest.json", help="JSON output path")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch.set_num_threads (default 1: on a shared machine, multi-threaded ops stall at "
        "barriers whenever one of their threads is descheduled, which swamps the ratios)",
    )
    parser.add_argument("--repeats", type=int, default=None, help="timing repeats (median kept)")
    parser.add_argument(
        "--device",
        default="cpu",
        help="device of the forward, memory and patching figures, e.g. cuda (absolute times are "
        "reported too); loading is always timed on CPU",
    )
    parser.add_argument(
        "--only",
        default=",".join(SECTIONS),
        help=f"comma-separated sections to run (default all: {','.join(SECTIONS)})",
    )
    parser.add_argument(
        "--sweep-stride",
        type=int,
        default=1,
        help="baselines of the sweep patch every N-th position (time scaled to the full sweep)",
    )
    args = parser.parse_args(argv)
    only = set(args.only.split(","))
    if not only <= set(SECTIONS):
        parser.error(f"--only {args.only}: unknown section(s) {sorted(only - set(SECTIONS))}; use {','.join(SECTIONS)}")
    try:
        device = torch.device(args.device)
    except RuntimeError as err:
        parser.error(f"--device {args.device}: not a torch device ({err}); use cpu or cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: this torch ({torch.__version__}) sees no CUDA device; use --device cpu")
    if device.type not in ("cpu", "cuda"):
        parser.error(f"--device {args.device}: only cpu and cuda are supported")
    shape = dict(SHAPES["quick" if args.quick else "full"])
    repeats = args.repeats or shape["repeats"]
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    from transformers import AutoModelForSequenceClassification

    from hooked_reward import HookedRewardModel

    t_start = time.perf_counter()
    server = start_load_server(args.threads) if args.quick else None  # quick: overlap its imports with the rest
    results: dict[str, Any] = {
        "mode": "quick" if args.quick else "full",
        "shape": shape,
        "machine": machine_info(args.threads, device),
        "repeats": repeats,
    }
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = make_checkpoint(shape, Path(tmp) / "rm")
            hf = AutoModelForSequenceClassification.from_pretrained(str(path), dtype=torch.float32).eval().to(device)
            device_map = str(device) if device.type != "cpu" else None
            model = HookedRewardModel.from_pretrained(path, dtype=torch.float32, device_map=device_map)
            sections = results["section_seconds"] = {"setup": time.perf_counter() - t_start}
            t0 = time.perf_counter()
            if "forward" in only:
                log("forward")
                results["forward"], measure_retained = bench_forward(model, hf, shape, repeats, device)
                sections["forward"], t0 = time.perf_counter() - t0, time.perf_counter()
            if "memory" in only:
                log("memory")
                results["memory"] = bench_memory(model, hf, shape, device)
                sections["memory"], t0 = time.perf_counter() - t0, time.perf_counter()
            if "patching" in only:
                results.update(bench_patching(model, shape, repeats, args.sweep_stride, device))
                sections["patching"], t0 = time.perf_counter() - t0, time.perf_counter()
            if "lengths" in only:
                results["lengths"] = bench_lengths(model, hf, shape, device)
                sections["lengths"], t0 = time.perf_counter() - t0, time.perf_counter()
            if "fixed_cost" in only:
                results["fixed_cost"] = bench_fixed_cost(model, hf, shape)
                sections["fixed_cost"], t0 = time.perf_counter() - t0, time.perf_counter()
            if "forward" in only:  # last: it changes how this process's allocator returns memory, for good
                log("forward, retain_freed_cpu_memory()")
                results["forward"].update(measure_retained())
                sections["forward_retained"], t0 = time.perf_counter() - t0, time.perf_counter()
            del model, hf
            if "loading" in only:
                server = server or start_load_server(args.threads)
                log("loading")
                results["loading"] = bench_loading(
                    server,
                    path,
                    make_causal_checkpoint(shape, Path(tmp) / "lm"),
                    shape["load_repeats"],
                    n_layers=shape["n_layers"],
                )
                sections["loading"] = time.perf_counter() - t0
    finally:
        if server is not None and server.poll() is None:
            server.kill()  # a section failed before loading (or loading was left out)
    if "real" in only:
        t0 = time.perf_counter()
        results["real"] = bench_real(shape)
        results["section_seconds"]["real"] = time.perf_counter() - t0
    if "imports" in only:
        log("imports")
        results["imports"] = bench_imports(shape["load_repeats"])
    results["targets"] = check_targets(results)
    results["wall_seconds"] = time.perf_counter() - t_start
    print(
        f"hooked_reward benchmarks ({results['mode']}): {results['machine']['gpu'] or results['machine']['cpu']}, "
        f"device {device}, {args.threads} torch threads, torch {torch.__version__}"
    )
    print(format_table(results))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=float))
    print(f"wrote {out} ({results['wall_seconds']:.1f} s)")
    return results


if __name__ == "__main__":
    main()
