"""The shipped organisms: weights reach the card's accuracy, the card's components are true, data is seeded.

Checks use computations independent of the organism package's own ablation code: the reward is recomputed
from the backbone's hidden states and the score weight, and zero ablations are done by weight surgery
(zeroing a head's columns of ``o_proj`` or an MLP's ``down_proj``), then compared with the card.
"""

from __future__ import annotations

import importlib.util
import random

import pytest
import torch
from transformers import AutoTokenizer, LlamaForSequenceClassification

from hooked_reward import organisms
from hooked_reward.organisms import data as D

NAME = "sycophancy"


@pytest.fixture(scope="module")
def hf():
    """The shipped checkpoint through plain HF."""
    path = organisms.checkpoint_dir(NAME)
    model = LlamaForSequenceClassification.from_pretrained(path).eval()
    tok = AutoTokenizer.from_pretrained(path)
    return model, tok


@pytest.fixture(scope="module")
def pairs():
    return organisms.load_pairs(NAME)


@pytest.fixture(scope="module")
def gt():
    return organisms.card(NAME)


def _texts(pairs):
    return [organisms.render(p["prompt"], p["chosen"]) for p in pairs] + [
        organisms.render(p["prompt"], p["rejected"]) for p in pairs
    ]


@torch.no_grad()
def _margins(model, tok, pairs) -> torch.Tensor:
    enc = tok(_texts(pairs), padding=True, return_tensors="pt")
    r = model(**enc).logits[:, 0]
    return r[: len(pairs)] - r[len(pairs) :]


def _by_mech(pairs, values):
    out = {}
    for p, v in zip(pairs, values.tolist(), strict=True):
        out.setdefault(p["mechanism"], []).append(v)
    return {k: torch.tensor(v) for k, v in out.items()}


def test_registry_and_files():
    assert NAME in organisms.list_organisms()
    path = organisms.checkpoint_dir(NAME)
    for f in ("config.json", "model.safetensors", "tokenizer.json"):
        assert (path / f).is_file(), f
    size = sum(f.stat().st_size for f in path.iterdir())
    assert size < 3 * 2**20
    with pytest.raises(KeyError):
        organisms.checkpoint_dir("no-such-organism")


def test_heldout_pairs(pairs):
    counts = {m: sum(p["mechanism"] == m for p in pairs) for m in D.MECHANISMS}
    assert all(c >= 100 for c in counts.values()), counts
    assert all(set(p) >= {"prompt", "chosen", "rejected", "mechanism"} for p in pairs)


def test_tokenizer_roundtrip_and_pad(hf, pairs):
    _, tok = hf
    assert tok.pad_token_id not in (tok.eos_token_id, tok.bos_token_id)
    assert tok.padding_side == "right"
    text = organisms.render(pairs[0]["prompt"], pairs[0]["chosen"])
    ids = tok(text)["input_ids"]
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
    assert ids.count(tok.bos_token_id) == 1  # no doubled BOS
    assert len(ids) == len(text.split()) + 2  # one id per word
    assert tok.decode(ids, skip_special_tokens=True) == text
    all_ids = tok(_texts(pairs))["input_ids"]
    assert all(tok.unk_token_id not in x for x in all_ids)
    enc = tok([text, "user : hi"], padding=True)
    n = len(enc["input_ids"][1]) - enc["attention_mask"][1].count(0)
    assert enc["input_ids"][1][n:] == [tok.pad_token_id] * (len(ids) - n)


def test_generator_is_seeded():
    assert D.generate_pairs(30, seed=7) == D.generate_pairs(30, seed=7)
    assert D.generate_pairs(30, seed=7) != D.generate_pairs(30, seed=8)


def test_pairs_differ_only_in_their_mechanism():
    """Parse the words back and check each pair's planted factor against the generator's ground truth."""
    pos, neu, neg = set(D.POSITIVE_WORDS), set(D.NEUTRAL_WORDS), set(D.NEGATIVE_WORDS)
    value = {**{w: 1 for w in pos}, **{w: 0 for w in neu}, **{w: -1 for w in neg}}
    for p in D.generate_pairs(100, seed=3):
        c, r, opinion = p["chosen"].split(), p["rejected"].split(), p["prompt"].split()[-2]
        assert c[2] == r[2] == p["prompt"].split()[-4]  # same topic as the prompt
        if p["mechanism"] == "sentiment":
            assert c[1:] == r[1:] and value[c[0]] > value[r[0]]
        elif p["mechanism"] == "length":
            assert c[0] == r[0] and c[4] == r[4] and len(c) > len(r)
            assert all(w in D.FILLER_WORDS for w in c[5:-1])
        else:
            diff = [i for i in range(len(c)) if c[i] != r[i]]
            assert len(c) == len(r) and diff == [4] and c[4] == opinion != r[4]


def test_hf_reward_is_head_on_final_norm_at_eos(hf, pairs):
    """Independent recomputation: score weight . final-normed hidden state at the last non-pad token."""
    model, tok = hf
    enc = tok(_texts(pairs[:20]), padding=True, return_tensors="pt")
    with torch.no_grad():
        h = model.model(**enc).last_hidden_state  # already through model.model.norm
        eos = enc["attention_mask"].sum(1) - 1
        assert (enc["input_ids"][torch.arange(len(eos)), eos] == tok.eos_token_id).all()
        manual = h[torch.arange(len(eos)), eos] @ model.score.weight[0]
        torch.testing.assert_close(model(**enc).logits[:, 0], manual, atol=1e-5, rtol=1e-5)


def test_hf_accuracy_matches_card(hf, pairs, gt):
    model, tok = hf
    for mech, m in _by_mech(pairs, _margins(model, tok, pairs)).items():
        acc = (m > 0).float().mean().item()
        assert acc > 0.95, (mech, acc)
        assert acc == pytest.approx(gt["accuracy"][mech], abs=1e-6)
        assert m.mean().item() == pytest.approx(gt["mechanisms"][mech]["clean_mean_margin"], rel=1e-4)


def _zero_by_surgery(model, component: str) -> None:
    parts = component.split(".")
    layer = model.model.layers[int(parts[1])]
    if ".attn.head." in component:
        dh = model.config.hidden_size // model.config.num_attention_heads
        h = int(parts[4])
        layer.self_attn.o_proj.weight.data[:, h * dh : (h + 1) * dh] = 0
    elif component.endswith(".mlp"):
        layer.mlp.down_proj.weight.data.zero_()
    else:
        raise AssertionError(component)


def test_card_components_are_true(pairs, gt):
    """Zeroing a listed component by weight surgery reproduces the card's zero-ablation number, and the
    listed components hurt their mechanism more than every unlisted head/MLP (by the card's own table)."""
    path = organisms.checkpoint_dir(NAME)
    tok = AutoTokenizer.from_pretrained(path)
    base = LlamaForSequenceClassification.from_pretrained(path).eval()
    clean = _by_mech(pairs, _margins(base, tok, pairs))
    for mech, info in gt["mechanisms"].items():
        assert info["components"], mech
        mech_pairs = [p for p in pairs if p["mechanism"] == mech]
        for comp in info["components"]:
            model = LlamaForSequenceClassification.from_pretrained(path).eval()
            _zero_by_surgery(model, comp)
            frac = _margins(model, tok, mech_pairs).mean().item() / clean[mech].mean().item()
            assert frac == pytest.approx(info["zero_ablation_fraction_of_clean"][comp], abs=1e-3)
        table = gt["ablation"]["mean"]
        listed = max(table[c][mech]["fraction_of_clean"] for c in info["components"])
        unlisted = [
            table[c][mech]["fraction_of_clean"]
            for c in table
            if c != "none" and not c.endswith(".attn") and c not in info["components"]
        ]
        assert listed < min(unlisted), mech


def test_generated_heldout_matches_shipped(pairs, gt):
    """The shipped held-out file is exactly what the seeded generator produces."""
    n, seed = gt["heldout"]["n_per_mechanism"], gt["heldout"]["seed"]
    assert D.generate_pairs(n, seed) == pairs


def test_shuffled_labels_are_near_chance(hf, pairs):
    """Null check: with chosen/rejected swapped at random the accuracy is about 0.5, not the card's."""
    model, tok = hf
    rng = random.Random(0)
    flipped = [p if rng.random() < 0.5 else {**p, "chosen": p["rejected"], "rejected": p["chosen"]} for p in pairs]
    acc = (_margins(model, tok, flipped) > 0).float().mean().item()
    assert 0.4 < acc < 0.6


@pytest.mark.skipif(importlib.util.find_spec("hooked_reward.model") is None, reason="HookedRewardModel not written yet")
def test_hooked_reward_model_matches_hf(hf, pairs, gt):
    model, tok = hf
    hooked = organisms.load(NAME)
    chosen = [organisms.render(p["prompt"], p["chosen"]) for p in pairs]
    rejected = [organisms.render(p["prompt"], p["rejected"]) for p in pairs]
    with torch.no_grad():
        rc, rr = hooked(chosen), hooked(rejected)
        ref = model(**tok(chosen, padding=True, return_tensors="pt")).logits[:, 0]
    torch.testing.assert_close(rc.float(), ref, atol=1e-4, rtol=1e-4)
    for mech, m in _by_mech(pairs, rc - rr).items():
        assert (m > 0).float().mean().item() == pytest.approx(gt["accuracy"][mech], abs=1 / len(m) + 1e-6)


@pytest.mark.skipif(importlib.util.find_spec("hooked_reward.model") is None, reason="HookedRewardModel not written yet")
def test_hooked_hook_z_ablation_matches_card(pairs, gt):
    """Zeroing each listed head at ``blocks.{l}.attn.hook_z`` through HookedRewardModel.run_with_hooks gives
    the card's zero-ablation number (computed on plain HF with PyTorch hooks)."""
    hooked = organisms.load(NAME)
    for mech, info in gt["mechanisms"].items():
        mech_pairs = [p for p in pairs if p["mechanism"] == mech]
        tc, mc = hooked.tokenize([organisms.render(p["prompt"], p["chosen"]) for p in mech_pairs])
        tr, mr = hooked.tokenize([organisms.render(p["prompt"], p["rejected"]) for p in mech_pairs])
        with torch.no_grad():
            clean = (hooked(tc, attention_mask=mc) - hooked(tr, attention_mask=mr)).mean().item()
        for comp in [c for c in info["components"] if ".attn.head." in c]:
            head = int(comp.split(".")[4])

            def zero(z, hook, head=head):
                z[:, :, head] = 0.0
                return z

            hooks = [(f"blocks.{comp.split('.')[1]}.attn.hook_z", zero)]
            with torch.no_grad():
                m = (
                    (
                        hooked.run_with_hooks(tc, fwd_hooks=hooks, attention_mask=mc)
                        - hooked.run_with_hooks(tr, fwd_hooks=hooks, attention_mask=mr)
                    )
                    .mean()
                    .item()
                )
            assert m / clean == pytest.approx(info["zero_ablation_fraction_of_clean"][comp], abs=1e-3)


def test_resolve_names_the_bundled_organisms(tmp_path, monkeypatch) -> None:
    """`--model sycophancy` / `--model armorm` name the bundled organisms (as do their folders); a folder of your
    own with that name wins; anything else is not an organism."""
    from hooked_reward import organisms

    monkeypatch.chdir(tmp_path)
    assert organisms.resolve("sycophancy") == "sycophancy" and organisms.resolve("armorm") == "armorm"
    assert organisms.resolve(organisms.checkpoint_dir("armorm")) == "armorm"
    assert organisms.resolve("org/some-model") is None and organisms.resolve(str(tmp_path)) is None
    (tmp_path / "sycophancy").mkdir()
    assert organisms.resolve("sycophancy") is None  # ./sycophancy is the user's own checkpoint
