"""The faithfulness report on the bundled organism: a plain-language summary first, a verdict per mechanism (a
pooled verdict can hide one that disagrees), and the pairs it used (issue 32)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from hooked_reward.cli import main


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("faith") / "r"
    assert main(["faithfulness", "--max-pairs", "6", "--out", str(out), "--quiet"]) == 0
    return json.loads((out / "report.json").read_text())


def test_summary_comes_first_and_names_every_mechanism(report: dict) -> None:
    assert report["sections"][0] == "Summary"
    text = " ".join(report["results"]["summary"])
    for mech in report["results"]["per_mechanism"]:
        assert mech in text
    assert "6 pairs" in text


def test_per_mechanism_means_are_the_means_of_their_pairs(report: dict) -> None:
    """Each mechanism's mean ρ is the plain mean of the per-pair ρ of the pairs with that label (numpy, from the
    pooled result's per-pair ρ and the listed pairs)."""
    labels = [row["label"] for row in report["results"]["pairs_used"]]
    assert len(labels) == 6 and len(set(labels)) == 3  # --max-pairs 6: two per label
    for by in ("component", "head"):
        rho = np.asarray(report["results"][by]["agreement"]["rho_per_pair"], dtype=float)
        for mech, summaries in report["results"]["per_mechanism"].items():
            mine = rho[[i for i, label in enumerate(labels) if label == mech]]
            expected = float(np.mean(mine[np.isfinite(mine)]))
            assert math.isclose(summaries[by]["mean_rho"], expected, rel_tol=1e-6, abs_tol=1e-6)
            assert summaries[by]["n_pairs"] == int(np.isfinite(mine).sum())
