"""The main job: `hooked-reward demo` and `analyze` write an HTML report with PNG plots and a JSON of numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hooked_reward import organisms
from hooked_reward.cli import main


def test_demo_writes_report(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--max-pairs", "12", "--quiet"]) == 0
    for name in ["index.html", "report.json", "lens.png", "attribution_head.png", "attribution_component.png"]:
        assert (out / name).exists(), name
    assert list(out.glob("patching_*.png")), "patching heatmaps"
    data = json.loads((out / "report.json").read_text())
    by_mech = {row["mechanism"]: row for row in data["behaviour"]}
    assert set(by_mech) == {"sentiment", "length", "sycophancy"}
    card = organisms.card("sycophancy")
    for mech, row in by_mech.items():
        assert row["accuracy"] >= card["accuracy"][mech] - 0.25  # 4 pairs each: the card's rate, up to one miss
    # The lens's last point (both variants) is the mean margin itself.
    curves = data["lens"]["curves"]
    for mech, row in by_mech.items():
        for variant in ("frozen", "recomputed"):
            assert curves[f"{variant}/{mech}"][-1] == pytest.approx(row["mean margin"], abs=1e-4)


def test_analyze_user_checkpoint_and_pairs(tmp_path: Path) -> None:
    pairs = tmp_path / "pairs.jsonl"
    records = organisms.load_pairs("sycophancy")[:3] + organisms.load_pairs("sycophancy")[-3:]
    pairs.write_text("\n".join(json.dumps(r) for r in records))
    out = tmp_path / "analyze"
    code = main(
        [
            "analyze",
            "--model",
            str(organisms.checkpoint_dir("sycophancy")),
            "--pairs",
            str(pairs),
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert code == 0 and (out / "index.html").exists()


def test_cli_errors_are_clear(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["analyze", "--model", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "x"}\n')
    code = main(
        [
            "analyze",
            "--model",
            str(organisms.checkpoint_dir("sycophancy")),
            "--pairs",
            str(bad),
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert code == 2 and "chosen" in capsys.readouterr().err
