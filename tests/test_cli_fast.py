"""The command line fails fast and explains itself (issue 32): a missing pairs file is one line and exit 2 in under
2 s (no command module, torch or model loaded); --help has a description, examples and the docs link."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_a_missing_pairs_file_fails_in_under_two_seconds(tmp_path: Path) -> None:
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "hooked_reward", "analyze", "--model", "sycophancy", "--pairs", "missing.jsonl"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        timeout=60,
    )
    took = time.perf_counter() - start
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "--pairs missing.jsonl does not exist" in lines[0], proc.stderr
    assert proc.stdout == ""
    assert took < 2.0, f"took {took:.2f} s"


def test_the_check_imports_neither_torch_nor_a_command() -> None:
    code = (
        "import sys\n"
        "from hooked_reward.cli import main\n"
        "assert main(['faithfulness', '--pairs', 'missing.jsonl']) == 2\n"
        "heavy = [m for m in ('torch', 'transformer_lens', 'hooked_reward.study.analyze') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_help_has_a_description_examples_and_the_docs_link(capsys) -> None:
    import pytest

    from hooked_reward.cli import main

    for argv in (["--help"], ["analyze", "--help"]):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 0
        text = capsys.readouterr().out
        assert "examples:" in text and "hooked-reward analyze --model sycophancy" in text
        assert "docs/cli.md" in text and "report" in text


def test_output_errors_name_the_flag() -> None:
    """The library's `output=` errors read as the CLI's `--output` (compare, analyze on a multi-output head)."""
    from hooked_reward.cli import _cli_terms
    from hooked_reward.errors import InputError
    from hooked_reward.outputs import output_index

    names = ["helpfulness", "score"]
    for bad in ("bogus", 7):
        try:
            output_index(bad, names)
        except InputError as err:
            text = _cli_terms(str(err))
        else:
            raise AssertionError(f"{bad!r} accepted")
        assert "--output" in text and "output=" not in text, text
