"""`analyze` from Python: pairs without a label (as `read_pairs` gives for a file with no mechanism column)."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import build_hf_model, load_tiny

from hooked_reward.pairs import PreferencePair
from hooked_reward.study.analyze import analyze

PAIRS = [("the cat is good", "the cat is bad"), ("yes very good answer", "no very bad answer"), ("a dog", "a cat")]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return load_tiny(build_hf_model("llama"), tmp_path_factory.mktemp("analyze") / "ckpt")


@pytest.mark.slow  # a whole analyze report
def test_unlabelled_pairs_are_grouped_as_unlabelled(model, tmp_path) -> None:
    """`label=None` pairs (mixed with labelled ones) are analysed as the group "unlabelled", as the CLI does; the
    behaviour table's accuracy is the share of positive margins computed with plain forwards. (This raised
    TypeError at the label sort: None < str.)"""
    pairs = [PreferencePair("", c, r) for c, r in PAIRS] + [PreferencePair("", "good good", "bad bad", "m")]
    analyze(model, pairs, tmp_path / "r", causal="ranked", budget=30, progress=False)
    behaviour = {
        row["mechanism"]: row
        for row in json.loads((tmp_path / "r" / "report.json").read_text())["results"]["behaviour"]
    }
    assert set(behaviour) == {"unlabelled", "m"}
    with torch.no_grad():
        margins = [float(model(c)[0] - model(r)[0]) for c, r in PAIRS]
    assert behaviour["unlabelled"]["pairs"] == 3
    assert behaviour["unlabelled"]["accuracy"] == pytest.approx(sum(m > 0 for m in margins) / 3)
    assert behaviour["unlabelled"]["mean margin"] == pytest.approx(sum(margins) / 3, abs=1e-5)


@pytest.mark.slow  # a whole analyze report
def test_a_report_without_circuitsvis_says_how_to_get_the_interactive_views(model, tmp_path, monkeypatch) -> None:
    """Without the [viz] extra the interactive attention views are replaced by a note naming the install command
    (scripts/demo.sh installs it); with circuitsvis the views are there and the note is not."""
    import hooked_reward.report.analyze as analyze_module

    pairs = [PreferencePair("", c, r, "m") for c, r in PAIRS]
    monkeypatch.setattr(analyze_module, "circuitsvis_bundle", lambda: None)
    analyze(model, pairs, tmp_path / "without", causal="ranked", budget=30, progress=False)
    page = (tmp_path / "without" / "index.html").read_text()
    assert "pip install &#39;hooked_reward[viz]&#39;" in page or "pip install 'hooked_reward[viz]'" in page
    assert not (tmp_path / "without" / "circuitsvis.js").exists()
    monkeypatch.undo()
    pytest.importorskip("circuitsvis")
    analyze(model, pairs, tmp_path / "with", causal="ranked", budget=30, progress=False)
    page = (tmp_path / "with" / "index.html").read_text()
    assert "hooked_reward[viz]" not in page and (tmp_path / "with" / "circuitsvis.js").exists()


def test_the_demo_script_installs_the_viz_extra() -> None:
    from pathlib import Path

    script = (Path(__file__).resolve().parents[1] / "scripts" / "demo.sh").read_text()
    assert '. scripts/setup.sh "[viz]"' in script
