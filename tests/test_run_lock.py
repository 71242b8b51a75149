"""One writer per output (issue 29 item 4): a run holds an exclusive lock file in the results store; a second run
into the same --out exits 2 before any work, naming the holder's pid and host; a lock whose process was killed is
taken over; torchrun ranks other than 0 share rank 0's lock. Before, two runs into one --out both printed "Report
written" and the last writer won silently."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

from hooked_reward.cli import main
from hooked_reward.study.lock import LOCK_NAME, RunLock
from hooked_reward.study.store import store_root

HOLD = (
    "import sys, time\n"
    "from hooked_reward.study.lock import RunLock\n"
    "RunLock(sys.argv[1]).acquire()\n"
    "print('held', flush=True)\n"
    "time.sleep(120)\n"
)


def test_second_run_into_the_same_out_exits_2(tmp_path, capsys, monkeypatch):
    out = tmp_path / "rep"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    env.pop("RANK", None)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        loaded = []
        monkeypatch.setattr("hooked_reward.cli._load_model", lambda *a, **k: loaded.append(1))
        assert main(["demo", "--out", str(out), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
        assert f"pid {holder.pid} on host {socket.gethostname()!r}" in err and "--out" in err
        assert not loaded and not out.exists()  # refused before any work
        assert RunLock(out, rank=1).acquire().held is False  # torchrun's other ranks share rank 0's lock
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # the holder was killed (SIGKILL: its lock file stays): the next run takes the stale lock over
    assert (store_root(out) / LOCK_NAME).exists()
    with RunLock(out) as lock:
        assert lock.held
    assert not (store_root(out) / LOCK_NAME).exists()


def test_a_failed_run_releases_its_lock(tmp_path, capsys):
    out = tmp_path / "rep"
    assert main(["analyze", "--model", str(tmp_path / "missing"), "--pairs", "p.jsonl", "--out", str(out)]) == 2
    assert not store_root(out).exists() and not out.exists()
    started = time.time()
    with RunLock(out) as lock:  # free again at once
        assert lock.held and time.time() - started < 5
