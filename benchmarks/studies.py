"""Studies over processes: the speed-up of `torchrun --nproc-per-node 2` over one process, and the results store's
cost per record.

    python benchmarks/studies.py [--pairs 300] [--repeats 2] [--quick] [--out FILE.json]

Speed-up: `hooked-reward faithfulness` on the bundled organism (`--max-pairs N`: two units per pair, by component
and by head), run from the command line in a fresh process with a fresh output folder (`--no-resume`), once with
one process and once under `torchrun --standalone --nproc-per-node 2` (gloo), alternating, `--repeats` times each.
Three figures per run: the wall time of the whole command (imports, loading, the study, the report), the study
phase alone (from the first to the last record's finishing time in the store: loading and the report excluded),
and the summed compute time of the units (`elapsed_s` of every record: it grows when two processes share cores).
Both runs' report numbers are checked equal.

Store overhead: for real records of this study (faithfulness by head and by component, and an `analyze` pair),
the time to encode a unit's result and append it with flush + fsync (`RecordWriter.write`), per record, next to
the time to compute that unit, and the bytes per record.

All runs use one thread per process (`OMP_NUM_THREADS=1`), as torchrun sets by default for several processes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(ROOT), TQDM_DISABLE="1")
    env.pop("WORLD_SIZE", None)
    return env


def _command(nproc: int, pairs: int, out: Path) -> list[str]:
    args = ["faithfulness", "--max-pairs", str(pairs), "--out", str(out), "--quiet", "--no-resume"]
    if nproc == 1:
        return [sys.executable, "-m", "hooked_reward", *args]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
            "-m", "hooked_reward", *args]  # fmt: skip


def _records(out: Path) -> list[dict[str, Any]]:
    from hooked_reward.study.store import read_records, store_root

    return [r for path in store_root(out).glob("*/rank-*.jsonl") for r in read_records(path)]


def _numbers(out: Path) -> dict[str, Any]:
    data = json.loads((out / "report.json").read_text())
    return data.get("results", data)


def run_once(nproc: int, pairs: int, tmp: Path, tag: str) -> dict[str, Any]:
    out = tmp / f"{tag}-n{nproc}"
    start = time.perf_counter()
    proc = subprocess.run(_command(nproc, pairs, out), env=_env(), capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{nproc}-process run failed:\n{proc.stderr[-3000:]}")
    records = _records(out)
    finished = sorted(datetime.fromisoformat(r["provenance"]["finished"]) for r in records)
    first_start = min(datetime.fromisoformat(r["provenance"]["finished"]).timestamp() - r["elapsed_s"] for r in records)
    return {
        "processes": nproc,
        "wall_s": wall,
        "study_s": finished[-1].timestamp() - first_start,
        "unit_compute_s": sum(r["elapsed_s"] for r in records),
        "units": len(records),
        "numbers": _numbers(out),
    }


def speedup(pairs: int, repeats: int) -> dict[str, Any]:
    runs: dict[int, list[dict[str, Any]]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(repeats):
            for nproc in (1, 2) if rep % 2 == 0 else (2, 1):
                print(f"  {nproc} process(es), repeat {rep + 1}/{repeats}", file=sys.stderr)
                runs[nproc].append(run_once(nproc, pairs, Path(tmp), f"r{rep}"))
    equal = all(r["numbers"] == runs[1][0]["numbers"] for n in runs for r in runs[n])

    def med(n: int, key: str) -> float:
        return statistics.median(r[key] for r in runs[n])

    return {
        "pairs_flag": pairs,
        "units": runs[1][0]["units"],
        "repeats": repeats,
        "wall_s": {n: [r["wall_s"] for r in runs[n]] for n in runs},
        "study_s": {n: [r["study_s"] for r in runs[n]] for n in runs},
        "unit_compute_s": {n: [r["unit_compute_s"] for r in runs[n]] for n in runs},
        "speedup_wall": med(1, "wall_s") / med(2, "wall_s"),
        "speedup_study": med(1, "study_s") / med(2, "study_s"),
        "reports_equal": equal,
    }


def store_overhead(n_records: int) -> dict[str, Any]:
    """Encode + append + fsync per record, for real units of this study, against the unit's compute time."""
    from hooked_reward import organisms
    from hooked_reward.analysis.faithfulness import faithfulness_pair
    from hooked_reward.pairs import PreferencePair
    from hooked_reward.study.analyze import analysis_pair
    from hooked_reward.study.store import RecordWriter, encode

    model = organisms.load("sycophancy")
    pairs = [
        PreferencePair("", organisms.render(r["prompt"], r["chosen"]), organisms.render(r["prompt"], r["rejected"]))
        for r in organisms.load_pairs("sycophancy")[:n_records]
    ]
    kinds: dict[str, Any] = {
        "faithfulness_component": lambda p: faithfulness_pair(
            model, p.chosen, p.rejected, by="component", align="reward"
        ),
        "faithfulness_head": lambda p: faithfulness_pair(model, p.chosen, p.rejected, by="head", align="reward"),
        "analyze_pair": lambda p: analysis_pair(model, p.chosen, p.rejected, output=None, gated=False),
    }
    prov = {"model": "x" * 60, "weights_sha256": "0" * 64, "versions": {"torch": "2"}, "settings": {"a": 1}}
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind, compute in kinds.items():
            compute_s, store_s, sizes = [], [], []
            with RecordWriter(Path(tmp) / f"{kind}.jsonl") as writer:
                for i, pair in enumerate(pairs):
                    t0 = time.perf_counter()
                    result = compute(pair)
                    t1 = time.perf_counter()
                    record = {
                        "key": "k" * 64,
                        "unit": {"id": f"{kind}/{i}"},
                        "result": encode(result),
                        "provenance": prov,
                    }
                    sizes.append(writer.write(record))
                    t2 = time.perf_counter()
                    compute_s.append(t1 - t0)
                    store_s.append(t2 - t1)
            out[kind] = {
                "records": len(pairs),
                "compute_ms_median": 1e3 * statistics.median(compute_s),
                "store_ms_median": 1e3 * statistics.median(store_s),
                "store_ms_max": 1e3 * max(store_s),
                "store_share_of_unit": statistics.median(s / (s + c) for s, c in zip(store_s, compute_s, strict=True)),
                "bytes_per_record": statistics.median(sizes),
            }
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=300, help="--max-pairs of the study (two units per pair)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--records", type=int, default=60, help="records timed for the store overhead")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (timings not meaningful)")
    parser.add_argument("--out", default="benchmarks/results/studies.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.pairs, args.repeats, args.records = 6, 1, 3
    sys.path.insert(0, str(ROOT))
    result = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "load_average_before": os.getloadavg(),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        },
        "store_overhead": store_overhead(args.records),
        "speedup": speedup(args.pairs, args.repeats),
    }
    result["machine"]["load_average_after"] = os.getloadavg()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result["speedup"].items() if k != "numbers"}, indent=1))
    print(json.dumps(result["store_overhead"], indent=1))
    return result


if __name__ == "__main__":
    main()
