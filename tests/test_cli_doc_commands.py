"""Every command line of docs/cli.md's "Try it" block runs as written on the bundled organisms (issue 32): the lines
are read from the page, each exits 0 and writes a report. Slow: seven commands at their defaults."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from hooked_reward.cli import main

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"<!-- try it -->\s*```bash\n(?P<code>.*?)```", re.S)


def doc_lines() -> list[str]:
    """The `hooked-reward ...` lines of the page's "Try it" block, comments stripped."""
    block = BLOCK.search((ROOT / "docs" / "cli.md").read_text())
    assert block is not None, "docs/cli.md has no <!-- try it --> block"
    lines = [line.split("#", 1)[0].strip() for line in block.group("code").splitlines()]
    return [line for line in lines if line.startswith("hooked-reward ")]


def test_the_block_covers_every_command() -> None:
    commands = {shlex.split(line)[1] for line in doc_lines()}
    assert {"demo", "analyze", "probe", "compare", "faithfulness", "extensions"} <= commands


@pytest.mark.parametrize("line", doc_lines())
def test_doc_command_runs_as_written(
    line: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)  # default report folders land here
    argv = shlex.split(line)[1:]
    out = tmp_path / "report"
    assert main([*argv, "--out", str(out), "--quiet"]) == 0, line
    assert (out / "index.html").is_file() and (out / "report.json").is_file()
    err = capsys.readouterr().err
    assert "warning" not in err.lower(), err  # no noise on the organisms: no warning of ours or a library's
