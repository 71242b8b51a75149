"""Issue 4's main job on the ArmoRM organism: `hooked-reward analyze` writes a report whose score views hold the
gate fixed, whose pair attributions have a gate row summing to Δscore, and with a per-objective section."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hooked_reward import organisms
from hooked_reward.cli import main


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("armorm_report")
    main(
        [
            "analyze",
            "--model",
            str(organisms.checkpoint_dir("armorm")),
            "--max-pairs",
            "8",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    return out, json.loads((out / "report.json").read_text())["results"]


@pytest.mark.slow  # a whole analyze report
def test_analyze_armorm_report(report) -> None:
    out, data = report
    assert (out / "index.html").exists()
    for png in (
        "lens",
        "attribution_component",
        "attribution_head",
        "objectives_delta_score",
        "lens_objectives",
        "attribution_objectives",
    ):
        assert (out / f"{png}.png").exists(), png
    names = organisms.load("armorm").head.objective_names
    mechanisms = {row["mechanism"] for row in data["behaviour"]}
    assert mechanisms == {"helpfulness", "brevity", "safety", "politeness"}
    assert sum(row["pairs"] for row in data["behaviour"]) == 8
    for by in ("component", "head"):
        attr = data[f"attribution_{by}"]
        assert attr["labels"][-1] == "gate"
        assert attr["sum_check"] <= 1e-4  # rows (gate included) sum to Δscore for every pair
    objectives = data["objectives"]
    assert objectives["names"] == names
    per_pair = objectives["per_pair"]
    delta = np.array(per_pair["delta_score"])
    terms = np.array(per_pair["objective_terms"]).sum(-1) + np.array(per_pair["gate_terms"]).sum(-1)
    assert np.abs(terms - delta).max() <= 1e-4
    assert np.allclose(delta, np.array(data["margins"]), atol=1e-4)
    for row in objectives["table"]:  # each planted mechanism is carried by its own objective's term
        assert max(names, key=lambda n: row[f"{n} term"]) == row["mechanism"]
    lens = data["lens"]["curves"]
    final = {m: lens[f"frozen/{m}"][-1] for m in mechanisms}
    for row in data["behaviour"]:  # the frozen lens of the score margin ends at the mean margin
        assert abs(final[row["mechanism"]] - row["mean margin"]) <= 1e-4
