"""Issue 4 recovery test: on the bundled organism, the analysis tools rank the card's planted components first.

The card (`organisms.card`) is the ground truth, established by ablation when the organism was trained; here
direct reward attribution and activation patching, run as a user would, must find the same heads.
"""

from __future__ import annotations

import pytest
import torch

from hooked_reward import organisms
from hooked_reward.analysis.attribution import pair_reward_attribution
from hooked_reward.analysis.patching import patch_heads

N_PAIRS = 8


@pytest.fixture(scope="module")
def organism():
    model = organisms.load("sycophancy")
    card = organisms.card("sycophancy")
    pairs = organisms.load_pairs("sycophancy")
    return model, card, pairs


def card_head_labels(card: dict, mechanism: str) -> set[str]:
    """'blocks.0.attn.head.2' -> 'L0H2' (the analysis tools' head labels)."""
    labels = set()
    for comp in card["mechanisms"][mechanism]["components"]:
        parts = comp.split(".")
        if "head" in parts:
            labels.add(f"L{parts[1]}H{parts[-1]}")
    return labels


def texts(pairs: list[dict], mechanism: str) -> tuple[list[str], list[str]]:
    chosen = [organisms.render(p["prompt"], p["chosen"]) for p in pairs if p["mechanism"] == mechanism]
    rejected = [organisms.render(p["prompt"], p["rejected"]) for p in pairs if p["mechanism"] == mechanism]
    return chosen[:N_PAIRS], rejected[:N_PAIRS]


@pytest.mark.parametrize("mechanism", ["sycophancy", "sentiment", "length"])
def test_patching_ranks_the_planted_head_first(organism, mechanism: str) -> None:
    model, card, pairs = organism
    planted = card_head_labels(card, mechanism)
    chosen, rejected = texts(pairs, mechanism)
    effects = []
    for c, r in zip(chosen, rejected, strict=True):
        result = patch_heads(model, c, r, mode="denoise", align="reward", progress=False)
        effects.append(result.values.flatten())
        labels = [f"L{layer}H{head}" for layer in result.labels["layer"] for head in result.labels["head"]]
    mean_effect = torch.stack(effects).mean(0)
    top = labels[int(mean_effect.argmax())]
    assert top in planted, f"{mechanism}: patching ranks {top} first, card says {planted}"


@pytest.mark.parametrize("mechanism", ["sentiment"])
def test_direct_attribution_ranks_the_planted_head_first(organism, mechanism: str) -> None:
    """Sentiment is read directly (head L0H0 writes along W_R at the reward position). Length is not in this
    test: L0H0 carries it mostly indirectly (through later layers), which DRA, a direct-effect measure, does
    not rank first (L1H0 is its top direct head) while patching, a total-effect measure, does."""
    model, card, pairs = organism
    planted = card_head_labels(card, mechanism)
    chosen, rejected = texts(pairs, mechanism)
    attr = pair_reward_attribution(model, chosen, rejected, by="head", progress=False)
    labels = attr.labels[attr.dims[1]]
    head_rows = [i for i, label in enumerate(labels) if str(label).startswith("L") and "H" in str(label)]
    mean = attr.values.mean(0)
    top = labels[max(head_rows, key=lambda i: float(mean[i]))]
    assert top in planted, f"{mechanism}: DRA ranks {top} first among heads, card says {planted}"
