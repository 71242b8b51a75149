"""Issue 16: the full layer × position `resid_pre` sweep, fast path vs a naive one-forward-per-patch loop.

    python benchmarks/sweep_speed.py                 # Llama d_model 512, 8 layers, seq 128, one pair
    python benchmarks/sweep_speed.py --quick         # a small shape, seconds
    python benchmarks/sweep_speed.py --crossover     # fast vs plain sweep over widths, depths and lengths

`measure_sweep(model, clean, corrupt)` is the function to call from other benchmarks: it returns the wall time
of the naive loop, of `patch_resid(..., fast=True)` (interleaved around the naive loop, median of its runs)
and of `fast=False`, the ratio fast / naive and the largest absolute difference from the naive loop.
Timings are wall-clock on whatever the machine is doing: compare ratios from one run only.

`measure_crossover` times the fast sweep against the plain batched sweep (`fast=True` vs `fast=False`, this
process's CPU seconds, median of interleaved repeats) on a grid of widths, depths and lengths, next to what
`patching_fast.fast_sweep_pays` decides there: the measurements behind `FAST_SWEEP_MIN_WORK`.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Int
from torch import Tensor

SHAPES: dict[str, dict[str, int]] = {
    "full": dict(d_model=512, n_layers=8, n_heads=8, d_mlp=1376, vocab=32000, seq=128),
    "quick": dict(d_model=128, n_layers=4, n_heads=4, d_mlp=256, vocab=512, seq=32),
}


def make_model(shape: dict[str, int], seed: int = 0) -> Any:
    """A randomly initialised Llama reward model of `shape` (weights at 1/sqrt(fan_in): O(1) patching effects)."""
    from transformers import LlamaConfig, LlamaForSequenceClassification

    from hooked_reward import HookedRewardModel

    config = LlamaConfig(
        vocab_size=shape["vocab"],
        hidden_size=shape["d_model"],
        intermediate_size=shape["d_mlp"],
        num_hidden_layers=shape["n_layers"],
        num_attention_heads=shape["n_heads"],
        num_key_value_heads=shape["n_heads"],
        max_position_embeddings=max(2 * shape["seq"], 256),
        num_labels=1,
        pad_token_id=0,
    )
    torch.manual_seed(seed)
    hf = LlamaForSequenceClassification(config).eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if p.ndim >= 2:
                p.normal_(0.0, p.shape[-1] ** -0.5)
            elif "norm" in name:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
    out = Path(tempfile.mkdtemp(prefix="sweep_speed_"))
    hf.save_pretrained(out)
    return HookedRewardModel.from_pretrained(out)


def make_pair(vocab: int, seq: int, seed: int = 3) -> tuple[Int[Tensor, " pos"], Int[Tensor, " pos"]]:
    """A random clean row and a corrupted copy with a quarter of its tokens redrawn."""
    g = torch.Generator().manual_seed(seed)
    clean = torch.randint(1, vocab, (seq,), generator=g)
    corrupt = clean.clone()
    flip = torch.randperm(seq, generator=g)[: max(1, seq // 4)]
    corrupt[flip] = torch.randint(1, vocab, (len(flip),), generator=g)
    return clean, corrupt


def naive_sweep(model: Any, clean: Tensor, corrupt: Tensor) -> Tensor:
    """Denoising `resid_pre` sweep, one full forward (`run_with_hooks`) per (layer, position)."""
    n_layers, seq = model.cfg.n_layers, len(clean)
    names = [f"blocks.{layer}.hook_resid_pre" for layer in range(n_layers)]
    _, cache = model.run_with_cache(clean[None], names_filter=names)
    out = torch.empty(n_layers, seq)
    for layer, name in enumerate(names):
        src = cache[name]
        for p in range(seq):

            def hook(act: Tensor, hook: Any, p: int = p, src: Tensor = src) -> Tensor:
                act[:, p] = src[:, p]
                return act

            with torch.no_grad():
                out[layer, p] = model.run_with_hooks(corrupt[None], fwd_hooks=[(name, hook)])[0]
    return out


def _timed(fn: Callable[[], Tensor]) -> tuple[float, float, Tensor]:
    """`(wall seconds, CPU seconds of this process, result)`."""
    t0, c0 = time.perf_counter(), time.process_time()
    result = fn()
    return time.perf_counter() - t0, time.process_time() - c0, result


def measure_sweep(model: Any, clean: Tensor, corrupt: Tensor, plain: bool = True) -> dict[str, Any]:
    """Time the full denoising `resid_pre` sweep: fast path, naive loop, plain batched sweep (`plain=True`).

    The fast sweep runs before and after each slow one (interleaved; medians kept). Returns wall and CPU seconds
    per sweep, `ratio_fast_vs_naive` (wall), `cpu_ratio_fast_vs_naive` (this process's CPU time: robust to other
    load on the machine with one torch thread), the same for the plain sweep, and `max_abs_diff_vs_naive`.
    """
    from hooked_reward.analysis.patching import patch_resid

    def fast() -> Tensor:
        return patch_resid(model, clean, corrupt, mode="denoise", progress=False, fast=True).rewards

    def slow_plain() -> Tensor:
        return patch_resid(model, clean, corrupt, mode="denoise", progress=False, fast=False).rewards

    fast()  # warm-up
    times: dict[str, list[float]] = {"fast": [], "naive": [], "plain": []}
    cpu: dict[str, list[float]] = {"fast": [], "naive": [], "plain": []}
    results: dict[str, Tensor] = {}
    order = ["fast", "naive", "fast"] + (["plain", "fast"] if plain else [])
    fns = {"fast": fast, "naive": lambda: naive_sweep(model, clean, corrupt), "plain": slow_plain}
    for name in order:
        wall, used, results[name] = _timed(fns[name])
        times[name].append(wall)
        cpu[name].append(used)
    med = {k: statistics.median(v) for k, v in times.items() if v}
    med_cpu = {k: statistics.median(v) for k, v in cpu.items() if v}
    out: dict[str, Any] = {
        "n_layers": model.cfg.n_layers,
        "d_model": model.cfg.d_model,
        "seq": len(clean),
        "seconds": med,
        "cpu_seconds": med_cpu,
        "fast_runs": times["fast"],
        "fast_runs_cpu": cpu["fast"],
        "ratio_fast_vs_naive": med["fast"] / med["naive"],
        "cpu_ratio_fast_vs_naive": med_cpu["fast"] / med_cpu["naive"],
        "max_abs_diff_vs_naive": float((results["fast"] - results["naive"]).abs().max()),
    }
    if plain:
        out["ratio_plain_vs_naive"] = med["plain"] / med["naive"]
        out["cpu_ratio_plain_vs_naive"] = med_cpu["plain"] / med_cpu["naive"]
        out["max_abs_diff_plain_vs_naive"] = float((results["plain"] - results["naive"]).abs().max())
    return out


def sweep_rewards(model: Any, clean: Tensor, corrupt: Tensor, fast: bool | None = None) -> Tensor:
    """The denoising `resid_pre` sweep's rewards, fast, plain or (None) as `patch_resid` chooses."""
    from hooked_reward.analysis.patching import patch_resid

    return patch_resid(model, clean, corrupt, mode="denoise", progress=False, fast=fast).rewards


# (d_model, n_layers, lengths): around the crossover of each shape
CROSSOVER_GRID: list[tuple[int, int, list[int]]] = [
    (64, 2, [64, 128, 192, 256]),
    (128, 4, [16, 32, 64, 96]),
    (256, 4, [24, 32, 48, 64]),
    (512, 2, [8, 16, 32, 48]),
    (512, 8, [4, 8, 16, 32]),
]


def measure_crossover(grid: list[tuple[int, int, list[int]]] = CROSSOVER_GRID, repeats: int = 3) -> list[dict]:
    """Fast vs plain sweep (CPU seconds, medians) at each grid point, with the default rule's choice and whether
    that choice was the faster path (or within 10% of it)."""
    from hooked_reward.analysis.patching_fast import fast_sweep_pays

    rows = []
    for d_model, n_layers, lengths in grid:
        shape = dict(d_model=d_model, n_layers=n_layers, n_heads=max(4, d_model // 64), d_mlp=d_model * 43 // 16)
        model = make_model({**shape, "vocab": 512, "seq": max(lengths)})
        for seq in lengths:
            clean, corrupt = make_pair(512, seq)
            cpu: dict[bool, list[float]] = {True: [], False: []}
            for _ in range(repeats):
                for fast in (True, False):
                    _, used, _ = _timed(functools.partial(sweep_rewards, model, clean, corrupt, fast=fast))
                    cpu[fast].append(used)
            t_fast, t_plain = statistics.median(cpu[True]), statistics.median(cpu[False])
            picks_fast = fast_sweep_pays(seq, n_layers, d_model)
            chosen, best = (t_fast if picks_fast else t_plain), min(t_fast, t_plain)
            rows.append(
                dict(
                    d_model=d_model,
                    n_layers=n_layers,
                    seq=seq,
                    work=n_layers * seq * d_model,
                    fast_cpu_seconds=t_fast,
                    plain_cpu_seconds=t_plain,
                    fast_over_plain=t_fast / t_plain,
                    rule_picks="fast" if picks_fast else "plain",
                    rule_over_best=chosen / best,
                    rule_never_slower_than_plain=chosen <= t_plain * 1.1,
                )
            )
            print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small shape (seconds)")
    parser.add_argument("--no-plain", action="store_true", help="skip the plain batched sweep")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--crossover", action="store_true", help="fast vs plain sweep over a grid of shapes")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.crossover:
        measure_crossover()
        return
    shape = SHAPES["quick" if args.quick else "full"]
    model = make_model(shape)
    clean, corrupt = make_pair(shape["vocab"], shape["seq"])
    result = measure_sweep(model, clean, corrupt, plain=not args.no_plain)
    result["threads"] = torch.get_num_threads()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
