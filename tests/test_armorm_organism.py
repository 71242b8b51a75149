"""The shipped ArmoRM-style organism reaches its card's held-out accuracies, through the ArmoRM loader and head."""

from __future__ import annotations

import json

import pytest
import torch

from hooked_reward import HookedRewardModel
from hooked_reward.heads.armorm import ArmoRMHead
from hooked_reward.organisms.armorm import ARMORM_DIR, WEIGHTS_DIR
from hooked_reward.organisms.armorm.train import MECHANISMS, OBJECTIVES, render

pytestmark = pytest.mark.skipif(not (WEIGHTS_DIR / "model.safetensors").exists(), reason="organism not trained")


@pytest.fixture(scope="module")
def organism():
    model = HookedRewardModel.from_pretrained(WEIGHTS_DIR)
    card = json.loads((ARMORM_DIR / "card.json").read_text())
    pairs = [json.loads(line) for line in (ARMORM_DIR / "heldout.jsonl").read_text().splitlines() if line.strip()]
    return model, card, pairs


def scores(model, texts: list[str]) -> torch.Tensor:
    out = []
    for i in range(0, len(texts), 256):
        out.append(model(texts[i : i + 256]).detach())
    return torch.cat(out)


def test_card_and_files(organism):
    model, card, pairs = organism
    assert isinstance(model.head, ArmoRMHead)
    assert model.head.objective_names == OBJECTIVES == card["objectives"]
    assert (WEIGHTS_DIR / "model.safetensors").stat().st_size < 3_000_000
    assert {p["mechanism"] for p in pairs} == set(MECHANISMS)
    for p in pairs:
        assert set(p) >= {"prompt", "chosen", "rejected", "mechanism"}
    assert model.cfg.n_layers == 2 and model.cfg.d_model <= 128


def test_shipped_weights_reach_card_accuracy(organism):
    model, card, pairs = organism
    chosen = scores(model, [render(p["prompt"], p["chosen"]) for p in pairs])
    rejected = scores(model, [render(p["prompt"], p["rejected"]) for p in pairs])
    correct = (chosen > rejected).float()
    for mechanism in MECHANISMS:
        rows = [i for i, p in enumerate(pairs) if p["mechanism"] == mechanism]
        accuracy = float(correct[rows].mean())
        assert accuracy > 0.95, (mechanism, accuracy)
        assert abs(accuracy - card["results"]["accuracy"][mechanism]) < 1e-6, mechanism


def test_gate_routes_by_intent(organism):
    """The gate weights the objective the prompt's intent plants (read from gating.hook_weights)."""
    model, card, _ = organism
    planted = card["planted"]["gate_by_intent"]
    learned = card["results"]["gate_mean_by_intent"]
    for intent, weights in planted.items():
        top = max(weights, key=weights.get)
        assert max(learned[intent], key=learned[intent].get) == top, (intent, learned[intent])
    # brief vs explain prompt, same two responses: the preference flips (helpfulness vs brevity)
    long_informative = "because heat water light energy well so"
    short = "gravity"
    for prompt, expect_long in (("explain the moon .", True), ("briefly the moon .", False)):
        s = model([render(prompt, long_informative), render(prompt, short)])
        assert bool(s[0] > s[1]) == expect_long, prompt


def test_loading_prints_no_load_report():
    """The backbone's loader would log transformers' LOAD REPORT listing the head weights as UNEXPECTED (our own
    head loader reads them); loading logs nothing of it (a real problem is still an error or one warning: hf_load)."""
    import logging
    import warnings

    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    hf_logger = logging.getLogger("transformers.modeling_utils")
    assert hf_logger.isEnabledFor(logging.WARNING)  # so the report would be logged if nothing stopped it
    handler = Collect()
    hf_logger.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            HookedRewardModel.from_pretrained(WEIGHTS_DIR)
    finally:
        hf_logger.removeHandler(handler)
    assert not [r for r in records if "LOAD REPORT" in str(r.msg) or "UNEXPECTED" in r.getMessage()]
    assert not [w for w in caught if "does not use" in str(w.message)]
