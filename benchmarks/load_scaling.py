"""How loading time grows with depth: ours and TransformerLens's own bridge vs HF, at several layer counts.

    python benchmarks/load_scaling.py [--layers 4,8,16,32] [--repeats 5] [--quick] [--out FILE.json]

Same set-up as `run.py`'s loading figure (d_model 512 Llama, float32, each load in a process forked from one that
has done the imports, medians over interleaved repeats), repeated for each layer count, so that the per-layer
cost of building the bridge can be read off next to HF's own per-layer cost.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # benchmarks/ is a folder of scripts, not a package: imported after the path is set


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", default="4,8,16,32", help="comma-separated layer counts")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="run.py's CI-sized shapes (timings not meaningful)")
    parser.add_argument("--out", default="benchmarks/results/load_scaling.json")
    args = parser.parse_args(argv)
    rows: dict[int, dict[str, Any]] = {}
    layer_counts = [int(x) for x in args.layers.split(",")]
    server = run.start_load_server(args.threads)
    for i, n_layers in enumerate(layer_counts):
        shape = {**run.SHAPES["quick" if args.quick else "full"], "n_layers": n_layers}
        with tempfile.TemporaryDirectory() as tmp:
            path = run.make_checkpoint(shape, Path(tmp) / "rm")
            causal = run.make_causal_checkpoint(shape, Path(tmp) / "lm")
            run.log(f"loading, {n_layers} layers")
            rows[n_layers] = run.bench_loading(server, path, causal, args.repeats, last=i == len(layer_counts) - 1)
    print(f"{'layers':>6}  {'HF s':>7}  {'ours s':>7}  {'ratio':>6}  {'TL ratio':>8}  {'ours - HF':>9}  {'TL - HF':>8}")
    for n_layers, r in rows.items():
        print(
            f"{n_layers:>6}  {r['hf']['seconds']:7.3f}  {r['ours']['seconds']:7.3f}  {r['time_ratio_vs_hf']:6.2f}  "
            f"{r['tl_bridge_time_ratio_vs_hf_causal_lm']:8.2f}  {r['bridge_seconds_over_hf']:9.3f}  "
            f"{r['tl_bridge_seconds_over_hf_causal_lm']:8.3f}"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {"machine": run.machine_info(args.threads), "by_layers": rows}
    out.write_text(json.dumps(result, indent=2, default=float))
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
