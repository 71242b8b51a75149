"""`hooked-reward verify OUT`: check a report folder and its results store without running anything.

What is checked, each finding one line:

- the report folder `OUT`: our marker (`.hooked-reward-report`) and that every file it lists is there and nothing
  else is; `report.json` is valid JSON with our schema;
- the store `OUT.store/`: each study folder's `study.json` is readable and its key is the hash of what it says the
  study is (and the folder's name carries that key); every record of every file (the merged view and each rank's)
  carries a checksum that matches (`FILE:LINE` of each that does not), belongs to that study, and appears in the
  merged view; the counts per file;
- the run lock: free, held by a live run (pid, host), or stale.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from hooked_reward.errors import InputError
from hooked_reward.processes import pid_alive
from hooked_reward.report.html import MARKER, SCHEMA, read_marker
from hooked_reward.study.lock import LOCK_NAME
from hooked_reward.study.store import MERGED, decode, hash_of, read_numbered_records, record_checksum, store_root

__all__ = ["Verification", "verify_output"]


@dataclass
class Verification:
    """What `verify_output` found: `lines` (everything, in order) and `problems` (the lines that are faults)."""

    lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def ok(self, line: str) -> None:
        self.lines.append(f"ok: {line}")

    def bad(self, line: str) -> None:
        self.lines.append(f"PROBLEM: {line}")
        self.problems.append(line)


def _check_report(out: Path, v: Verification) -> None:
    if not out.is_dir():
        v.lines.append(f"no report folder at {out}")
        return
    marker = read_marker(out)
    if marker is None:
        v.bad(f"{out} has no report marker of ours ({MARKER}): not a report written by hooked_reward")
        return
    listed = set(marker["files"])
    present = {p.name for p in out.iterdir()} - {MARKER}
    missing, extra = sorted(listed - present), sorted(present - listed)
    if missing:
        v.bad(f"{out}: file(s) the report wrote are missing: {', '.join(missing)}")
    if extra:
        v.bad(f"{out}: file(s) the report did not write: {', '.join(extra)}")
    if not missing and not extra:
        command = marker.get("command") or "command unknown"
        v.ok(f"report {out} (id {marker['report_id']}, {command}): {len(listed)} files")
    try:
        report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as err:
        v.bad(f"{out / 'report.json'} is not readable JSON ({err})")
        return
    if not isinstance(report, dict) or report.get("schema") != SCHEMA:
        v.bad(f"{out / 'report.json'} does not have schema {SCHEMA!r}")


def _check_study(folder: Path, v: Verification) -> None:
    try:
        info = json.loads((folder / "study.json").read_text(encoding="utf-8"))
        study = decode(info["study"])
        key = info["key"]
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as err:
        v.bad(f"{folder / 'study.json'} is missing or unreadable ({type(err).__name__}): its key cannot be checked")
        return
    if hash_of(study) != key or not folder.name.endswith(key[:16]):
        v.bad(f"{folder / 'study.json'}: key {key[:16]}... is not the hash of the study it describes (edited)")
    else:
        v.ok(f"study {folder.name}: key matches its inputs ({study.get('command')})")
    merged_keys: set[str] = set()
    rank_keys: set[str] = set()
    files = [folder / MERGED, *sorted(folder.glob("rank-*.jsonl"))]
    for path in files:
        if not path.exists():
            continue
        good = 0
        for line, record in read_numbered_records(path):
            unit = (record.get("unit") or {}).get("id") if isinstance(record, dict) else None
            if not isinstance(record, dict) or record.get("checksum") != record_checksum(record):
                why = "no checksum" if isinstance(record, dict) and "checksum" not in record else "checksum mismatch"
                v.bad(f"{path}:{line}: unit {unit!r}: {why} (edited or damaged; the next run computes it again)")
                continue
            if record.get("study") != key:
                v.bad(f"{path}:{line}: unit {unit!r} belongs to another study ({str(record.get('study'))[:16]}...)")
                continue
            good += 1
            (merged_keys if path.name == MERGED else rank_keys).add(record["key"])
        v.ok(f"{path.relative_to(folder.parent)}: {good} record(s) with valid checksums")
    absent = rank_keys - merged_keys
    if absent and (folder / MERGED).exists():
        v.lines.append(
            f"note: {len(absent)} record(s) of the rank files are not in the merged view yet (a run stopped before "
            "merging; the next run merges them)"
        )


def verify_output(out_dir: str | Path) -> Verification:
    """Check the report folder `out_dir` and its store (module docstring); nothing is changed."""
    out = Path(out_dir).expanduser().absolute()
    v = Verification()
    _check_report(out, v)
    root = store_root(out)
    if not root.is_dir():
        v.lines.append(f"no results store at {root}")
        return v
    studies = sorted(p for p in root.iterdir() if p.is_dir() and (p / "study.json").exists())
    if not studies:
        v.lines.append(f"{root} holds no study")
    for folder in studies:
        _check_study(folder, v)
    lock = root / LOCK_NAME
    if lock.exists():
        try:
            holder = json.loads(lock.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            holder = {}
        state = "held by a running process" if pid_alive(holder.get("pid")) else "stale (its process is gone)"
        v.lines.append(f"lock {lock}: pid {holder.get('pid')} on {holder.get('host')!r}, {state}")
    return v


def report_verification(out_dir: str | Path) -> None:
    """`hooked-reward verify OUT`: print what `verify_output` finds, one line each; raise `InputError` (exit 2)
    when it finds a fault. Nothing is run or changed."""
    found = verify_output(out_dir)
    for line in found.lines:
        print(line)
    if found.problems:
        raise InputError(f"{len(found.problems)} problem(s) in {out_dir} (the lines marked PROBLEM above).")
    print(f"verified {out_dir}: no problem found")
