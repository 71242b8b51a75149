"""The formulas of docs/gpu-and-large-models.md, and the tables it shows (predicted, not measured on a GPU).

    python benchmarks/gpu_guide.py            # print the doc's tables (tests/test_gpu_guide.py checks they match)

Every figure is a formula in the model's shape (layers L, d_model d, d_mlp m, query width q = heads x head_dim,
key/value width kv = kv_heads x head_dim, vocabulary V), the tokens per text T, the rows per forward R and the
bytes per value b (4 float32, 2 bfloat16/float16). `tests/test_gpu_guide.py` checks them against the CPU scale
benchmark's recorded runs (`benchmarks/recorded/scale.json`, real configs, random weights): the parameter count
and weight bytes exactly, the forward and causal-step memory within the tolerances below, the forward-equivalents
per pair against `analysis.ranked_patching.forward_equivalents` / `study.analyze.causal_plan` and the counted
block passes.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "CAUSAL_FACTOR",
    "CAUSAL_TOLERANCE",
    "FORWARD_FACTOR",
    "FORWARD_TOLERANCE",
    "GPUS",
    "MFU",
    "SHAPES",
    "Shape",
    "causal_bytes",
    "forward_bytes",
    "forward_equivalents_per_pair",
    "markdown",
    "params",
    "seconds_per_pair",
    "weight_bytes",
]


@dataclass(frozen=True)
class Shape:
    """A decoder reward model's shape (a `*ForSequenceClassification` with one output, no biases)."""

    name: str
    d_model: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    d_mlp: int
    vocab: int
    norms_per_layer: int = 2  # Gemma-2: 4 (pre/post attention and MLP)
    qk_norm: bool = False  # Qwen3: RMSNorm over each query and key head

    @property
    def q(self) -> int:
        return self.n_heads * self.head_dim

    @property
    def kv(self) -> int:
        return self.n_kv_heads * self.head_dim


#: The two configs `benchmarks/scale.py` measured, and two larger published reward models' configs.
SHAPES: dict[str, Shape] = {
    "qwen3-0.6b": Shape("Skywork-Reward-V2-Qwen3-0.6B", 1024, 28, 16, 8, 128, 3072, 151936, qk_norm=True),
    "llama-3.2-1b": Shape("Skywork-Reward-V2-Llama-3.2-1B", 2048, 16, 32, 8, 64, 8192, 128256),
    "llama-3.1-8b": Shape("Skywork-Reward-V2-Llama-3.1-8B", 4096, 32, 32, 8, 128, 14336, 128256),
    "gemma-2-27b": Shape("Skywork-Reward-Gemma-2-27B-v0.2", 4608, 46, 32, 16, 128, 36864, 256000, norms_per_layer=4),
}

BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}

#: Forward (no gradient) memory above the weights: FORWARD_FACTOR x L x R x T x d x b. Fitted to the four recorded
#: forwards (2 rows of 512 tokens; 1.51-1.70 there); every one lies within FORWARD_TOLERANCE of it.
FORWARD_FACTOR = 1.6
FORWARD_TOLERANCE = 0.15

#: The causal step (attribution patching's backward over one row, the clean run's activations kept) above the
#: weights: CAUSAL_FACTOR x L x T x b x (6d + 2q + 2kv + 4m) -- the values each layer saves for the backward
#: (norm inputs and outputs, q/k/v and their rotated copies, the attention output, the MLP's gate, up, activation
#: and product). The factor is calibrated on the ONE recorded causal step (Qwen3-0.6B, float32, 512 tokens).
CAUSAL_FACTOR = 2.4
CAUSAL_TOLERANCE = 0.10

#: Assumed fraction of a GPU's dense bf16 peak reached by a forward of one 512-token row (not measured here).
MFU = 0.35

#: (label, memory in GB, dense bf16 peak in TFLOP/s).
GPUS: list[tuple[str, int, float]] = [
    ("24 GB (L4)", 24, 121.0),
    ("40 GB (A100 40GB)", 40, 312.0),
    ("80 GB (H100 SXM)", 80, 989.0),
]


def params(s: Shape, n_outputs: int = 1) -> int:
    """Parameter count: V d + L (2 d q + 2 d kv + 3 d m + norms x d [+ 2 head_dim]) + d + n_outputs d."""
    layer = 2 * s.d_model * s.q + 2 * s.d_model * s.kv + 3 * s.d_model * s.d_mlp + s.norms_per_layer * s.d_model
    if s.qk_norm:
        layer += 2 * s.head_dim
    return s.vocab * s.d_model + s.n_layers * layer + s.d_model + n_outputs * s.d_model


def weight_bytes(s: Shape, dtype: str) -> int:
    """The weights' memory: params x bytes per value (exactly)."""
    return params(s) * BYTES[dtype]


def forward_bytes(s: Shape, rows: int, tokens: int, dtype: str) -> float:
    """Memory above the weights of a forward without gradients over `rows` texts of `tokens` tokens."""
    return FORWARD_FACTOR * s.n_layers * rows * tokens * s.d_model * BYTES[dtype]


def causal_bytes(s: Shape, tokens: int, dtype: str) -> float:
    """Memory above the weights of the causal step's backward (ranked patching; `analyze` on a large model)."""
    width = 6 * s.d_model + 2 * s.q + 2 * s.kv + 4 * s.d_mlp
    return CAUSAL_FACTOR * s.n_layers * tokens * BYTES[dtype] * width


def forward_equivalents_per_pair(command: str, s: Shape) -> int:
    """Forwards of one text per pair (a backward counts 2), from the code's own cost functions:

    * `analyze` / `demo`: `study.analyze.causal_plan` (12 fixed + exact patching if within the budget of 30, else
      ranked patching at the top_k that fits: 30);
    * `faithfulness`: per granularity, DRA (2) + an exact sweep (2 cached forwards + one per site):
      8 + 2L + L x heads;
    * `compare`: one cached forward of each text under each model: 4;
    * `probe`: 2 per generated pair scored (a significant factor's localisation adds 2 + 2L per pair of it).
    """
    from types import SimpleNamespace

    from hooked_reward.analysis.ranked_patching import forward_equivalents
    from hooked_reward.study.analyze import causal_plan

    if command == "analyze":
        cfg = SimpleNamespace(cfg=SimpleNamespace(n_layers=s.n_layers, n_heads=s.n_heads))
        return int(causal_plan(cfg)["forward_equivalents_per_pair"])  # type: ignore[arg-type]
    if command == "faithfulness":
        return 2 * 2 + forward_equivalents(s.n_layers, s.n_heads, 0, ("component", "head"))["exact_every_site"]
    if command == "compare":
        return 4
    if command == "probe":
        return 2
    raise ValueError(f"no formula for {command!r}")


def flops_per_row(s: Shape, tokens: int) -> float:
    """One forward of one text: 2 x (non-embedding parameters) x T + causal attention's 2 x L x T^2 x q."""
    return 2 * (params(s) - s.vocab * s.d_model) * tokens + 2 * s.n_layers * tokens**2 * s.q


def seconds_per_pair(command: str, s: Shape, tokens: int, tflops: float, gpus: int = 1) -> float:
    """Predicted seconds per pair: forward-equivalents x FLOPs of one text / (MFU x peak), over `gpus` ranks
    (torchrun splits the pairs; each rank holds the whole model)."""
    return forward_equivalents_per_pair(command, s) * flops_per_row(s, tokens) / (MFU * tflops * 1e12) / gpus


COMMANDS = ("analyze", "faithfulness", "compare", "probe")


def _gb(n: float) -> str:
    return f"{n / 1e9:.1f}"


def _s(x: float) -> str:
    """Seconds to three significant digits, never in exponent form."""
    return f"{x:.3g}" if x < 1000 else f"{x:.0f}"


def markdown(tokens: int = 512, dtype: str = "bfloat16") -> str:
    """The doc's tables: sizes, memory per command, which cards fit, seconds per pair (predicted)."""
    big = ("llama-3.2-1b", "llama-3.1-8b", "gemma-2-27b")
    out = [
        f"Memory in GB (10^9 bytes), {dtype}, {tokens} tokens per text:",
        "",
        "| model | params | weights | forward, 1 pair (R=2) | exact sweep (R=64) | causal step (backward) "
        "| forward-equivalents / pair: analyze, faithfulness, compare, probe |",
        "|---|---|---|---|---|---|---|",
    ]
    for key in big:
        s = SHAPES[key]
        fe = ", ".join(str(forward_equivalents_per_pair(c, s)) for c in COMMANDS)
        out.append(
            f"| {s.name} | {params(s) / 1e9:.2f} B | {_gb(weight_bytes(s, dtype))} "
            f"| +{_gb(forward_bytes(s, 2, tokens, dtype))} | +{_gb(forward_bytes(s, 64, tokens, dtype))} "
            f"| +{_gb(causal_bytes(s, tokens, dtype))} | {fe} |"
        )
    out += ["", "Which commands fit one card (weights + the largest step; exact sweeps at 64 rows):", ""]
    out.append("| model | " + " | ".join(label for label, _, _ in GPUS) + " |")
    out.append("|---|" + "---|" * len(GPUS))
    for key in big:
        s = SHAPES[key]
        w = weight_bytes(s, dtype)
        need = {
            "compare, probe": w + forward_bytes(s, 2, tokens, dtype),
            "analyze": w + max(causal_bytes(s, tokens, dtype), forward_bytes(s, 64, tokens, dtype)),
            "faithfulness": w + forward_bytes(s, 64, tokens, dtype),
        }
        cells = []
        for _, gb, _ in GPUS:
            fits = [c for c, n in need.items() if n <= 0.9 * gb * 1e9]  # 10% for CUDA context and fragmentation
            cells.append(", ".join(fits) if fits else "none (use `--device-map auto`)")
        out.append(f"| {s.name} | " + " | ".join(cells) + " |")
    out += ["", f"Predicted seconds per pair ({tokens} tokens, MFU {MFU}; one GPU / 8 GPUs under torchrun):", ""]
    out.append("| model | GPU | " + " | ".join(COMMANDS) + " |")
    out.append("|---|---|" + "---|" * len(COMMANDS))
    for key in big:
        s = SHAPES[key]
        for label, gb, tf in GPUS:
            if weight_bytes(s, dtype) > 0.9 * gb * 1e9:
                continue
            cells = [
                f"{_s(seconds_per_pair(c, s, tokens, tf))} / {_s(seconds_per_pair(c, s, tokens, tf, 8))}"
                for c in COMMANDS
            ]
            out.append(f"| {s.name} | {label} | " + " | ".join(cells) + " |")
    return "\n".join(out)


if __name__ == "__main__":
    print(markdown())
