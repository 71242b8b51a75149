"""Real shapes at real lengths: random-weight reward models with the exact configs of two published ones.

    python benchmarks/scale.py [--configs qwen3-0.6b,llama-3.2-1b] [--dtypes float32,bfloat16] [--tokens 512]
                               [--top-k 8] [--out benchmarks/recorded/scale.json]

Configs: Skywork-Reward-V2-Qwen3-0.6B (Qwen3: d_model 1024, 28 layers, 16 heads / 8 KV heads, head_dim 128,
d_mlp 3072, vocab 151,936, tied embeddings) and Skywork-Reward-V2-Llama-3.2-1B (d_model 2048, 16 layers, 32 / 8
heads, d_mlp 8192, vocab 128,256, llama3 rope scaling, tied embeddings), each as `*ForSequenceClassification`
with one output. Weights are random (HF's initialisation), saved with `save_pretrained` in the dtype measured.

One chat-format pair of ~`--tokens` tokens: token rows shaped like a rendered chat (BOS, a system/user header,
a shared prompt of ~80% of the length, an assistant header, then a response that differs between chosen and
rejected, and an end-of-turn token), as ids (no tokenizer is downloaded).

Each measurement runs in its own process (peak RSS is per process, `ru_maxrss`), one process at a time:

* **hf**: `AutoModelForSequenceClassification.from_pretrained` (time) and its forward of the pair (batch 2):
  peak RSS after the forward.
* **ours**: `HookedRewardModel.from_pretrained` (time), the forward of the pair (rewards checked against hf's),
  then the causal step `analyze` budgets for (`ranked_patching` by component and by head, `top_k` exact sites
  each) with every block's forward counted: forward-equivalents per pair = block-row passes / n_layers, plus 2
  per backward pass (one per granularity). Peak RSS after all of it.

Targets (issue 21): forward-equivalents per pair <= 30 at the default settings; peak RSS <= 1.3x HF's forward
peak at the same batch (which includes the weights); load time ratio <= 1.3x.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFIGS: dict[str, tuple[str, dict]] = {
    "qwen3-0.6b": (
        "Qwen3Config",
        dict(
            hidden_size=1024,
            num_hidden_layers=28,
            num_attention_heads=16,
            num_key_value_heads=8,
            head_dim=128,
            intermediate_size=3072,
            vocab_size=151936,
            max_position_embeddings=40960,
            rope_theta=1000000,
            rms_norm_eps=1e-6,
            tie_word_embeddings=True,
            bos_token_id=151643,
            eos_token_id=151645,
            pad_token_id=151643,
        ),
    ),
    "llama-3.2-1b": (
        "LlamaConfig",
        dict(
            hidden_size=2048,
            num_hidden_layers=16,
            num_attention_heads=32,
            num_key_value_heads=8,
            head_dim=64,
            intermediate_size=8192,
            vocab_size=128256,
            max_position_embeddings=131072,
            rope_theta=500000.0,
            rope_scaling={
                "factor": 32.0,
                "high_freq_factor": 4.0,
                "low_freq_factor": 1.0,
                "original_max_position_embeddings": 8192,
                "rope_type": "llama3",
            },
            rms_norm_eps=1e-5,
            tie_word_embeddings=True,
            bos_token_id=128000,
            eos_token_id=128009,
            pad_token_id=128004,  # <|finetune_right_pad_id|>: not the end-of-turn id that ends every row
        ),
    ),
}
# CI-sized stand-in (Qwen3 layout, 2 layers) for `run.py --quick`: its figures only show that the code runs.
TINY: dict[str, tuple[str, dict]] = {
    "qwen3-tiny": (
        "Qwen3Config",
        dict(
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=16,
            intermediate_size=128,
            vocab_size=2048,
            max_position_embeddings=4096,
            bos_token_id=1,
            eos_token_id=2,
            pad_token_id=0,
        ),
    ),
}
ALL_CONFIGS = {**CONFIGS, **TINY}


def chat_pair(config: dict, tokens: int, seed: int = 0) -> tuple[list[int], list[int]]:
    """Chosen and rejected rows of `tokens` ids shaped like a rendered chat (see the module docstring)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    vocab = min(config["vocab_size"], 100_000)  # ordinary (non-special) ids
    bos, eot = config["bos_token_id"], config["eos_token_id"]
    header = [bos, 10, 20, 30, 40]
    prompt_len = int(tokens * 0.8) - len(header) - 4
    prompt = torch.randint(1000, vocab, (prompt_len,), generator=g).tolist()
    assistant = [eot, 50, 60, 70]
    n_resp = tokens - len(header) - prompt_len - len(assistant) - 1
    chosen = torch.randint(1000, vocab, (n_resp,), generator=g).tolist()
    rejected = torch.randint(1000, vocab, (n_resp,), generator=g).tolist()
    base = header + prompt + assistant
    return base + chosen + [eot], base + rejected + [eot]


def peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM: reset by exec, unlike ru_maxrss, which a child inherits from its parent)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------------------------------------- children
def child_make(name: str, dtype: str, out: str) -> dict:
    import torch
    import transformers

    cls_name, kwargs = ALL_CONFIGS[name]
    config = getattr(transformers, cls_name)(num_labels=1, **kwargs)
    arch = cls_name.replace("Config", "ForSequenceClassification")
    torch.manual_seed(0)
    model = getattr(transformers, arch)(config).to(getattr(torch, dtype)).eval()
    model.save_pretrained(out)
    return {"params": sum(p.numel() for p in model.parameters())}


def child_hf(name: str, dtype: str, path: str, tokens: int) -> dict:
    import torch
    import transformers

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    _import_model_class(name)
    rss0 = peak_rss_mb()
    t0 = time.perf_counter()
    model = transformers.AutoModelForSequenceClassification.from_pretrained(path, dtype=getattr(torch, dtype)).eval()
    load = time.perf_counter() - t0
    rss_loaded = peak_rss_mb()
    chosen, rejected = chat_pair(ALL_CONFIGS[name][1], tokens)
    with torch.no_grad():
        t0 = time.perf_counter()
        logits = model(torch.tensor([chosen, rejected])).logits[:, 0]
        fwd = time.perf_counter() - t0
    return {
        "load_s": load,
        "forward_s": fwd,
        "rewards": logits.float().tolist(),
        "rss_start_mb": rss0,
        "rss_loaded_mb": rss_loaded,
        "peak_rss_mb": peak_rss_mb(),
    }


def _import_model_class(name: str) -> None:
    """Import the architecture's modeling module before any clock starts (transformers imports it lazily, on the
    first `from_pretrained`; hooked_reward's import of TransformerLens imports it up front)."""
    import transformers

    getattr(transformers, ALL_CONFIGS[name][0].replace("Config", "ForSequenceClassification"))


def child_ours(name: str, dtype: str, path: str, tokens: int, top_k: int) -> dict:
    import torch

    from hooked_reward import HookedRewardModel
    from hooked_reward.analysis.ranked_patching import forward_equivalents, ranked_patching

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    _import_model_class(name)
    rss0 = peak_rss_mb()
    t0 = time.perf_counter()
    model = HookedRewardModel.from_pretrained(path, dtype=getattr(torch, dtype))
    load = time.perf_counter() - t0
    rss_loaded = peak_rss_mb()
    chosen, rejected = chat_pair(ALL_CONFIGS[name][1], tokens)
    c, r = torch.tensor(chosen), torch.tensor(rejected)
    with torch.no_grad():
        t0 = time.perf_counter()
        rewards = model(torch.stack([c, r]))
        fwd = time.perf_counter() - t0
    rss_forward = peak_rss_mb()

    n_layers = model.cfg.n_layers
    counted = {"rows": 0}

    def count(_module, args):
        counted["rows"] += args[0].shape[0] * args[0].shape[1] / tokens if args and hasattr(args[0], "shape") else 0

    handles = [block.register_forward_pre_hook(count) for block in model.blocks]
    out = {}
    t0 = time.perf_counter()
    for by in ("component", "head") if top_k > 0 else ():  # --top-k 0: loading and the forward only
        res = ranked_patching(model, c, r, by=by, top_k=top_k)
        out[by] = res.side_by_side()
    causal = time.perf_counter() - t0
    for h in handles:
        h.remove()
    measured = counted["rows"] / n_layers + 2 * len(out)  # + one backward (2 forward-equivalents) per granularity
    expected = forward_equivalents(n_layers, model.cfg.n_heads, top_k, ("component", "head"))
    return {
        "load_s": load,
        "forward_s": fwd,
        "causal_s": causal,
        "rewards": rewards.float().tolist(),
        "rss_start_mb": rss0,
        "rss_loaded_mb": rss_loaded,
        "rss_forward_mb": rss_forward,
        "peak_rss_mb": peak_rss_mb(),
        "forward_equivalents_measured": measured,
        "forward_equivalents_formula": expected["ranked"],
        "forward_equivalents_exact_every_site": expected["exact_every_site"],
        "side_by_side": out,
        "n_layers": n_layers,
        "n_heads": model.cfg.n_heads,
    }


def child_load(which: str, name: str, dtype: str, path: str) -> dict:
    """CPU seconds of this process (one torch thread) for one load: `hf` (AutoModelForSequenceClassification) or
    `ours` (HookedRewardModel), after the imports and the modeling module (not counted)."""
    import torch
    import transformers

    torch.set_num_threads(1)
    _import_model_class(name)
    if which == "ours":
        from hooked_reward import HookedRewardModel

        load = lambda: HookedRewardModel.from_pretrained(path, dtype=getattr(torch, dtype))  # noqa: E731
    else:
        auto = transformers.AutoModelForSequenceClassification
        load = lambda: auto.from_pretrained(path, dtype=getattr(torch, dtype)).eval()  # noqa: E731
    t0 = time.process_time()
    load()
    return {"cpu_s": time.process_time() - t0}


def child_atp(name: str, dtype: str, path: str, tokens: int) -> dict:
    """Peak RSS of `attribution_patch` (every default site: resid_pre, attn_out, mlp_out, z) over the pair, after
    loading; and its checkpointed gradients against nothing else (the numbers are tested in the unit tests)."""
    import torch

    from hooked_reward import HookedRewardModel
    from hooked_reward.analysis.attribution_patching import attribution_patch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    _import_model_class(name)
    model = HookedRewardModel.from_pretrained(path, dtype=getattr(torch, dtype))
    rss_loaded = peak_rss_mb()
    chosen, rejected = chat_pair(ALL_CONFIGS[name][1], tokens)
    t0 = time.perf_counter()
    result = attribution_patch(model, torch.tensor(chosen), torch.tensor(rejected))
    return {
        "atp_s": time.perf_counter() - t0,
        "rss_loaded_mb": rss_loaded,
        "peak_rss_mb": peak_rss_mb(),
        "finite": bool(torch.isfinite(result.values[~result.values.isnan()]).all()),
    }


def real_config_figures(name: str, dtype: str, tokens: int, load_repeats: int, timeout: float = 3600) -> dict:
    """Load time (CPU seconds of each loading process, hf and ours alternating, medians) and attribution patching's
    peak RSS against HF's forward peak (each in its own process) at one config; the checkpoint is random weights
    saved in `dtype` to a temporary directory (read once first, so that every load reads from the page cache)."""
    import statistics

    tmp = Path(tempfile.mkdtemp(prefix=f"real-{name}-{dtype}-"))
    try:
        made = run_child("make", name, dtype, str(tmp), timeout=timeout)
        for file in tmp.glob("*.safetensors"):
            with open(file, "rb") as f:
                while f.read(1 << 26):
                    pass
        loads: dict[str, list[float]] = {"hf": [], "ours": []}
        for r in range(load_repeats):
            for which in ("hf", "ours") if r % 2 == 0 else ("ours", "hf"):
                loads[which].append(run_child("load", which, name, dtype, str(tmp), timeout=timeout)["cpu_s"])
        hf = run_child("hf", name, dtype, str(tmp), str(tokens), timeout=timeout)
        atp = run_child("atp", name, dtype, str(tmp), str(tokens), timeout=timeout)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    hf_load, ours_load = statistics.median(loads["hf"]), statistics.median(loads["ours"])
    return {
        "config": name,
        "dtype": dtype,
        "tokens": tokens,
        "params": made["params"],
        "load_cpu_s": loads,
        "load_ratio_vs_hf": ours_load / hf_load,
        "load_seconds_over_hf": ours_load - hf_load,
        "hf_forward_peak_rss_mb": hf["peak_rss_mb"],
        "atp": atp,
        "atp_peak_rss_ratio_vs_hf_forward": atp["peak_rss_mb"] / hf["peak_rss_mb"],
    }


# ---------------------------------------------------------------------------------------------- driver
def run_child(*argv: str, timeout: float) -> dict:
    cmd = [sys.executable, __file__, "--child", *argv]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure(name: str, dtype: str, tokens: int, top_k: int, timeout: float) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix=f"scale-{name}-{dtype}-"))
    try:
        made = run_child("make", name, dtype, str(tmp), timeout=timeout)
        for file in tmp.glob("*.safetensors"):  # both loads read from the page cache, not the first from disk
            with open(file, "rb") as f:
                while f.read(1 << 26):
                    pass
        hf = run_child("hf", name, dtype, str(tmp), str(tokens), timeout=timeout)
        ours = run_child("ours", name, dtype, str(tmp), str(tokens), str(top_k), timeout=timeout)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    weights_mb = made["params"] * (4 if dtype == "float32" else 2) / 2**20
    fe = ours["forward_equivalents_formula"]
    return {
        "config": name,
        "dtype": dtype,
        "tokens": tokens,
        "top_k": top_k,
        "params": made["params"],
        "weights_mb": weights_mb,
        "hf": hf,
        "ours": ours,
        "reward_max_abs_diff": max(abs(a - b) for a, b in zip(hf["rewards"], ours["rewards"], strict=True)),
        "forward_equivalents_per_pair": fe,
        "forward_equivalents_target": 30,
        "forward_equivalents_met": fe <= 30,
        "peak_rss_ratio": ours["peak_rss_mb"] / hf["peak_rss_mb"],
        "peak_rss_target": 1.3,
        "load_ratio": ours["load_s"] / hf["load_s"],
        "load_target": 1.3,
    }


def markdown(results: list[dict]) -> str:
    """The recorded runs as the table in docs/performance.md. Forward-equivalents per pair are `analyze`'s at its
    defaults (`study.analyze.causal_plan`: budget 30), from the counted cost of ranked patching (`6 + k` per
    granularity, checked by the block counter at the run's `top_k`) plus the fixed forwards of the other views."""
    from types import SimpleNamespace

    from hooked_reward.study.analyze import causal_plan

    def met(ok: bool) -> str:
        return "met" if ok else "**missed**"

    lines = [
        "| config | dtype | tokens | forward-equivalents / pair (target <= 30) | peak RSS ours / HF (target <= 1.3) "
        "| load ours / HF (target <= 1.3) | max reward diff vs HF |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        ours, hf = r["ours"], r["hf"]
        plan = causal_plan(SimpleNamespace(cfg=SimpleNamespace(n_layers=ours["n_layers"], n_heads=ours["n_heads"])))
        fe, rss, load = plan["forward_equivalents_per_pair"], r["peak_rss_ratio"], r["load_ratio"]
        counted = (
            f"ranked top-{r['top_k']} counted {ours['forward_equivalents_measured']:.0f}"
            if r["top_k"]
            else "causal step not run: load and forward only"
        )
        lines.append(
            f"| {r['config']} | {r['dtype']} | {r['tokens']} | {fe} ({plan['method']}, k={plan['top_k']}; {counted}; "
            f"exact every site: {plan['exact_would_cost']}) {met(fe <= 30)} "
            f"| {rss:.2f}x ({ours['peak_rss_mb']:.0f} / {hf['peak_rss_mb']:.0f} MB) "
            + (f"{met(rss <= 1.3)} " if r["top_k"] else "load + forward only ")
            + f"| {load:.2f}x ({ours['load_s']:.1f} / {hf['load_s']:.1f} s) {met(load <= 1.3)} "
            f"| {r['reward_max_abs_diff']:.1e} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--child", nargs="+")
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--tokens", type=int, default=512)
    parser.add_argument("--top-k", type=int, default=3, help="exact sites per granularity (0: load and forward only)")
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--out", default=str(Path(__file__).parent / "recorded" / "scale.json"))
    parser.add_argument("--table", help="print the markdown table of a recorded JSON and exit")
    args = parser.parse_args(argv)
    if args.table:
        print(markdown(json.loads(Path(args.table).read_text())["runs"]))
        return 0
    if args.child:
        role, *rest = args.child
        if role == "make":
            result = child_make(rest[0], rest[1], rest[2])
        elif role == "hf":
            result = child_hf(rest[0], rest[1], rest[2], int(rest[3]))
        elif role == "load":
            result = child_load(rest[0], rest[1], rest[2], rest[3])
        elif role == "atp":
            result = child_atp(rest[0], rest[1], rest[2], int(rest[3]))
        else:
            result = child_ours(rest[0], rest[1], rest[2], int(rest[3]), int(rest[4]))
        print(json.dumps(result))
        return 0
    results = []
    for name in args.configs.split(","):
        for dtype in args.dtypes.split(","):
            t0 = time.perf_counter()
            row = measure(name, dtype, args.tokens, args.top_k, args.timeout)
            row["wall_s"] = time.perf_counter() - t0
            results.append(row)
            print(
                f"{name} {dtype}: forward-equivalents {row['forward_equivalents_per_pair']} "
                f"(measured {row['ours']['forward_equivalents_measured']:.1f}), peak RSS x{row['peak_rss_ratio']:.2f}, "
                f"load x{row['load_ratio']:.2f}, reward diff {row['reward_max_abs_diff']:.2e}",
                flush=True,
            )
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps({"runs": results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
