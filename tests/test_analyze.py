"""`analyze` from Python: pairs without a label (as `read_pairs` gives for a file with no mechanism column)."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import build_hf_model, load_tiny

from hooked_reward.pairs import PreferencePair
from hooked_reward.report.analyze import analyze

PAIRS = [("the cat is good", "the cat is bad"), ("yes very good answer", "no very bad answer"), ("a dog", "a cat")]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return load_tiny(build_hf_model("llama"), tmp_path_factory.mktemp("analyze") / "ckpt")


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
