"""A report folder is ours or untouched (issue 29 item 1, item 7): a folder is replaced only when it carries our
marker and holds nothing the marker does not list; anything else non-empty is refused before any work, and the
user's files survive byte for byte. Folders follow the umask; leftovers of killed runs are removed by the next run.
Before: any folder holding an `index.html` or `report.json` was replaced whole (a site's notes.txt, a thesis
beside a report.json deleted, exit 0), folders were created 0700, and `.partial-*` folders stayed."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from hooked_reward import InputError
from hooked_reward.cli import main
from hooked_reward.report.html import MARKER, Report, check_output_dir, read_marker


def write_report(out: Path, title: str = "r", data: int = 1) -> Path:
    with Report(out, title, command="test") as report:
        report.add_text("a", "b")
        report.add_data("n", data)
        return report.write()


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_site_with_an_index_html_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("x\n")
    (site / "notes.txt").write_text("keep\n")
    before = snapshot(site)
    loaded = []
    monkeypatch.setattr("hooked_reward.cli._load_model", lambda *a, **k: loaded.append(1))
    assert main(["demo", "--out", str(site), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "index.html" in err and "notes.txt" in err and "not a report of ours" in err
    assert len(err.strip().splitlines()) == 1
    assert not loaded  # refused before any work
    assert snapshot(site) == before  # byte for byte
    with pytest.raises(InputError, match="notes.txt"):
        write_report(site)
    assert snapshot(site) == before


def test_thesis_beside_a_report_json_survives(tmp_path, monkeypatch):
    work = tmp_path / "work"
    (work / "data").mkdir(parents=True)
    (work / "report.json").write_text(json.dumps({"schema": "hooked_reward.report/1"}))
    (work / "data" / "thesis.tex").write_text("\\chapter{Results}\n")
    before = snapshot(work)
    monkeypatch.chdir(work)
    assert main(["demo", "--out", ".", "--quiet"]) == 2
    with pytest.raises(InputError, match="data/"):
        check_output_dir(work)  # the same folder by its path: a report.json alone does not make it ours
    assert snapshot(work) == before


def test_our_report_is_replaced_but_not_with_a_users_file_in_it(tmp_path):
    out = tmp_path / "rep"
    write_report(out, "first")
    marker = read_marker(out)
    assert marker is not None and set(marker["files"]) == {"index.html", "report.json"}
    assert len(marker["report_id"]) == 32  # the report's id (not in report.json: equal runs give equal reports)
    write_report(out, "second")  # ours and nothing else: replaced
    assert json.loads((out / "report.json").read_text())["title"] == "second"
    (out / "my_notes.md").write_text("mine\n")
    before = snapshot(out)
    with pytest.raises(InputError, match="a report of ours with files it did not write.*my_notes.md"):
        write_report(out, "third")
    assert snapshot(out) == before
    forged = tmp_path / "forged"  # a marker that is not ours (no report id) does not make a folder replaceable
    forged.mkdir()
    (forged / MARKER).write_text(json.dumps({"files": ["a.txt"]}))
    (forged / "a.txt").write_text("mine\n")
    with pytest.raises(InputError, match="a.txt"):
        check_output_dir(forged)


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o755), (0o002, 0o775), (0o077, 0o700)])
def test_report_folder_follows_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        out = write_report(tmp_path / f"rep{umask:o}").parent
    finally:
        os.umask(old)
    assert out.stat().st_mode & 0o777 == mode


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_leftovers_of_a_killed_run_are_removed_by_the_next(tmp_path):
    out = tmp_path / "rep"
    ours = {"schema": "hooked_reward.report/1", "report_id": "x", "host": socket.gethostname(), "files": []}
    partial = tmp_path / ".rep.partial-abc"
    partial.mkdir()
    (partial / MARKER).write_text(json.dumps({**ours, "pid": _dead_pid()}))
    (partial / "lens.png").write_bytes(b"png")
    old = tmp_path / ".rep.old-def"
    (old / "rep").mkdir(parents=True)
    (old / MARKER).write_text(json.dumps({**ours, "pid": _dead_pid(), "files": ["rep"]}))
    running = tmp_path / ".rep.partial-live"  # a run in progress (this process): kept
    running.mkdir()
    (running / MARKER).write_text(json.dumps({**ours, "pid": os.getpid()}))
    foreign = tmp_path / ".rep.partial-mine"  # not ours: kept
    foreign.mkdir()
    (foreign / "data.csv").write_text("1,2\n")
    write_report(out)
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == [".rep.partial-live", ".rep.partial-mine", "rep"]
    assert (foreign / "data.csv").read_text() == "1,2\n"


def test_a_killed_run_leaves_a_leftover_the_next_removes(tmp_path):
    out = tmp_path / "rep"
    script = (
        "import os, signal\n"
        "from hooked_reward.report.html import Report\n"
        f"r = Report({str(out)!r}, 't')\n"
        "r.add_text('a', 'b')\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True)
    assert proc.returncode == -9
    assert [p.name.split("-")[0] for p in tmp_path.iterdir()] == [".rep.partial"]
    write_report(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rep"]
