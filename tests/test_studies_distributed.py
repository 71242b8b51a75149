"""Studies split over processes with torchrun (gloo, CPU) and resumed after a kill give exactly the single-process
results: the same numbers in report.json, the same records in the store, and no stored unit computed twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hooked_reward import cli
from hooked_reward.study.store import read_records, store_root

pytestmark = pytest.mark.slow  # torchrun: multi-process studies, killed and resumed

ROOT = Path(__file__).resolve().parents[1]
N_FAITH = 40  # --max-pairs in the kill tests (13 per mechanism: 78 units), long enough to kill a run halfway


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(ROOT), TQDM_DISABLE="1")
    env.pop("WORLD_SIZE", None)
    return env


def _torchrun(args: list[str], nproc: int = 2) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
            "-m", "hooked_reward", *args]  # fmt: skip


def _single(args: list[str]) -> None:
    assert cli.main(args) == 0


def _numbers(out: Path) -> dict:
    """report.json without its provenance (timestamps, command line, world size differ by design)."""
    data = json.loads((out / "report.json").read_text())
    data.pop("provenance", None)
    if isinstance(data.get("results"), dict):
        data["results"].pop("provenance", None)
    return data


def _study_dir(out: Path) -> Path:
    (folder,) = [p for p in store_root(out).iterdir() if p.is_dir()]
    return folder


def _merged(out: Path) -> list[dict]:
    """The merged store: every record's key, unit and result (provenance and timing aside)."""
    return [
        {k: r[k] for k in ("key", "study", "unit", "result")} for r in read_records(_study_dir(out) / "records.jsonl")
    ]


def _rank_records(out: Path) -> list[dict]:
    folder = store_root(out)
    if not folder.exists():
        return []
    return [r for path in sorted(folder.glob("*/rank-*.jsonl")) for r in read_records(path)]


def _lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


@pytest.fixture(scope="module")
def faith_reference(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("faith1") / "report"
    _single(["faithfulness", "--max-pairs", str(N_FAITH), "--out", str(out), "--quiet"])
    return out


@pytest.mark.parametrize("command,pairs", [("faithfulness", 12), ("analyze", 9), ("circuit", 3)])
def test_two_processes_equal_one(tmp_path, command, pairs):
    one, two = tmp_path / "one", tmp_path / "two"
    _single([command, "--max-pairs", str(pairs), "--out", str(one), "--quiet"])
    run = subprocess.run(
        _torchrun([command, "--max-pairs", str(pairs), "--out", str(two), "--quiet"]),
        env=_env(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert _numbers(two) == _numbers(one)
    assert _merged(two) == _merged(one)
    ranks = {r["provenance"]["rank"] for r in _rank_records(two)}
    assert ranks == {0, 1}  # both processes did work
    prov = json.loads((two / "report.json").read_text())["provenance"]
    assert prov["world_size"] == 2 and prov["n_pairs"] == pairs and prov["seed"] == 0
    assert prov["dtype"] == "float32" and prov["device"] == "cpu" and prov["settings"]["align"] == "reward"
    assert prov["versions"]["torch"] and prov["versions"]["hooked_reward"] and prov["created"]
    record = _rank_records(two)[0]["provenance"]
    assert record["weights_sha256"] == prov["weights_sha256"] and len(prov["weights_sha256"]) == 64
    page = (two / "index.html").read_text()
    assert prov["weights_sha256"] in page and "world_size" in page  # the HTML shows the provenance


def _children(pid: int) -> list[int]:
    out = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            kids = (task / "children").read_text().split()
            for kid in map(int, kids):
                out += [kid, *_children(kid)]
    except (FileNotFoundError, ProcessLookupError):
        pass
    return out


def _rank_pid(launcher: int, rank: int) -> int | None:
    for pid in _children(launcher):
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in env and b"LOCAL_RANK=" + str(rank).encode() in env:
            return pid
    return None


def _wait_for_records(path: Path, n: int, proc: subprocess.Popen, timeout: float = 300) -> None:
    start = time.time()
    while _lines(path) < n:
        assert proc.poll() is None, "the run ended before it could be interrupted"
        assert time.time() - start < timeout, "no records appeared"
        time.sleep(0.02)


def _resumed_equal(out: Path, reference: Path, stored_before: int) -> None:
    records = _rank_records(out)
    keys = [r["key"] for r in records]
    n_units = len(_merged(reference))
    assert len(set(keys)) == n_units
    assert len(keys) == n_units  # nothing stored before was computed (and appended) again
    assert stored_before < n_units
    assert _numbers(out) == _numbers(reference)
    assert _merged(out) == _merged(reference)


def test_sigkill_of_one_rank_then_resume(tmp_path, faith_reference):
    out = tmp_path / "report"
    args = ["faithfulness", "--max-pairs", str(N_FAITH), "--out", str(out), "--quiet"]
    proc = subprocess.Popen(_torchrun(args), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _wait_for_records_any(store_root(out), proc)
    folder = _study_dir(out)
    _wait_for_records(folder / "rank-00001.jsonl", 5, proc)
    pid = _rank_pid(proc.pid, 1)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    proc.communicate(timeout=300)
    assert proc.returncode != 0  # the launcher reports the failed rank (and stops the other)
    assert not (out / "report.json").exists()
    stored = _rank_records(out)
    n_units = len(_merged(faith_reference))
    assert 5 <= len(stored) < n_units
    stored_keys = {r["key"] for r in stored}
    # Resume in one process: only the missing units are computed, appended to rank 0's file.
    before0 = len(list(read_records(folder / "rank-00000.jsonl")))
    _single(args)
    after0 = len(list(read_records(folder / "rank-00000.jsonl")))
    assert after0 - before0 == n_units - len(stored_keys)
    _resumed_equal(out, faith_reference, len(stored))


def _wait_for_records_any(root: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
    start = time.time()
    while not (root.exists() and any(root.glob("*/rank-*.jsonl"))):
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:] if proc.stderr else "run ended"
        assert time.time() - start < timeout
        time.sleep(0.02)


def test_sigint_of_the_whole_run_then_resume(tmp_path, faith_reference):
    out = tmp_path / "report"
    args = ["faithfulness", "--max-pairs", str(N_FAITH), "--out", str(out), "--quiet"]
    proc = subprocess.Popen(
        _torchrun(args), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    _wait_for_records_any(store_root(out), proc)
    folder = _study_dir(out)
    _wait_for_records(folder / "rank-00000.jsonl", 5, proc)
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in a terminal: every process of the launch gets SIGINT
    proc.communicate(timeout=300)
    assert proc.returncode != 0
    stored = _rank_records(out)
    assert 5 <= len(stored) < len(_merged(faith_reference))
    run = subprocess.run(_torchrun(args), env=_env(), capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    _resumed_equal(out, faith_reference, len(stored))
