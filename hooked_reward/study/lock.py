"""One writer per output: an exclusive lock file in the results store (`OUT.store/run.lock`) held for a whole run.

A second run into the same `--out` finds the lock and stops before any work with an `InputError` naming the
holder's pid, host and start time (two runs used to both print "Report written"; the last writer won silently).
The file is created with `O_CREAT | O_EXCL`, so exactly one process gets it, and holds `{"pid", "host",
"started"}`. A lock whose process is gone (same host, pid not running: a run killed with SIGKILL) is stale and is
taken over; a lock from another host is never taken over (we cannot tell whether its process lives): the message
says which file to delete once that run is known to be dead.

Under `torchrun`, rank 0 takes the lock for the whole launch (it writes the merged store and the report); the other
ranks write only their own rank files and do not take it (`RANK` != 0), so a launch shares one lock.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import Any

from hooked_reward.errors import InputError
from hooked_reward.processes import pid_alive
from hooked_reward.study.store import store_root

__all__ = ["LOCK_NAME", "RunLock"]

LOCK_NAME = "run.lock"
_UNREADABLE_GRACE_S = 10.0  # a lock file still being written by its creator


class RunLock:
    """The run lock of the report folder `out_dir` (a context manager; `acquire` / `release`). `rank`: this
    process's rank in a torchrun launch (default: `$RANK`, 0 without torchrun); only rank 0 takes the lock."""

    def __init__(self, out_dir: str | Path, rank: int | None = None) -> None:
        self.path = store_root(out_dir) / LOCK_NAME
        self.rank = int(os.environ.get("RANK", "0")) if rank is None else rank
        self.held = False

    def _holder(self) -> dict[str, Any] | None:
        try:
            holder = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError):
            return None
        return holder if isinstance(holder, dict) else None

    def acquire(self) -> RunLock:
        """Take the lock, or raise `InputError` naming the run that holds it."""
        if self.rank != 0:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder is None:
                    try:
                        age = time.time() - self.path.stat().st_mtime
                    except FileNotFoundError:
                        continue  # released meanwhile: try again
                    if age > _UNREADABLE_GRACE_S:
                        self.path.unlink(missing_ok=True)  # an empty lock its creator never finished
                        continue
                    time.sleep(0.2)
                    holder = self._holder() or {}
                if holder.get("host") == me["host"] and holder.get("pid") is not None and not pid_alive(holder["pid"]):
                    self.path.unlink(missing_ok=True)  # stale: its run was killed
                    continue
                raise InputError(
                    f"Another run is writing into this output: pid {holder.get('pid')} on host "
                    f"{holder.get('host')!r}, started {holder.get('started')} (lock {self.path}). Wait for it to "
                    "finish, or give another --out; if that run is dead (another machine), delete the lock file."
                ) from None
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(me, f)
            self.held = True
            return self
        raise InputError(f"Could not take the run lock {self.path}: it keeps changing; is another run starting?")

    def release(self) -> None:
        """Drop the lock (only if this process holds it)."""
        if self.held:
            holder = self._holder()
            if holder is None or holder.get("pid") == os.getpid():
                self.path.unlink(missing_ok=True)
            self.held = False
            with contextlib.suppress(OSError):
                self.path.parent.rmdir()  # the store folder, when the run stored nothing (it failed early)

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.release()
