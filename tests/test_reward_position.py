"""The reward is read where the checkpoint's own code reads it (issue 36): HF's `*ForSequenceClassification` rule
(the last token that is not the config's pad id; no pad id: the last token), compared with HF's forward on HF's own
ids for pad = eos, pad = bos, a separate pad, no pad; left and right padding; an eos appended or not."""

from __future__ import annotations

import warnings

import pytest
import torch
import transformers
from conftest import build_hf_model, word_tokenizer

from hooked_reward import HookedRewardModel
from hooked_reward.errors import InputError, RewardPositionWarning
from hooked_reward.positions import BeforeFirstPadRule, last_attended, reward_positions

TEXTS = ["the cat is good", "a dog", "the answer is very very great", "no"]
PADS = {"eos": "</s>", "bos": "<s>", "pad": "<pad>", "none": None}


def tiny_checkpoint(tmp_path, arch: str, pad: str):
    """A tiny `arch` reward model whose config and tokenizer use `pad` as the pad token, saved and loaded back:
    `(HookedRewardModel, HF model from disk, tokenizer)`."""
    model = build_hf_model(arch, seed=3)
    tok = word_tokenizer()
    ids = dict(zip(["pad", "unk", "bos", "eos"], range(4), strict=True))
    model.config.pad_token_id = None if pad == "none" else ids[pad]
    model.config.bos_token_id, model.config.eos_token_id = ids["bos"], ids["eos"]
    if pad != "none":
        tok.pad_token = PADS[pad]
    out = tmp_path / f"{arch}-{pad}"
    model.save_pretrained(out)
    tok.save_pretrained(out)
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(str(out), dtype=torch.float32).eval()
    return HookedRewardModel.from_pretrained(out), hf, transformers.AutoTokenizer.from_pretrained(str(out))


def hf_rewards(hf, batch) -> torch.Tensor:
    """HF's forward on the padded batch; positions counted from each row's first token (as generation does), so
    that left padding does not shift learned absolute positions (GPT-2)."""
    mask = batch["attention_mask"]
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        return hf(**batch, position_ids=position_ids).logits[:, 0]


def hf_rows_alone(hf, batch) -> torch.Tensor:
    """HF's forward on each row alone (its attended tokens): what HF computes for a pad id of None."""
    rows = []
    with torch.no_grad():
        for ids, mask in zip(batch["input_ids"], batch["attention_mask"], strict=True):
            rows.append(hf(input_ids=ids[mask.bool()][None]).logits[0, 0])
    return torch.stack(rows)


@pytest.mark.parametrize("arch", ["llama", "qwen3", "gpt2"])
@pytest.mark.parametrize("pad", ["eos", "bos", "pad", "none"])
def test_rewards_equal_hf(tmp_path, arch: str, pad: str) -> None:
    model, hf, tok = tiny_checkpoint(tmp_path, arch, pad)
    for eos in (True, False):
        texts = [t + " </s>" if eos else t for t in TEXTS]
        for side in ("left", "right"):
            if pad == "none":
                batch = tok(texts[:1], return_tensors="pt")  # HF takes no batch without a pad id
                with torch.no_grad():
                    for text in texts:
                        one = tok([text], return_tensors="pt")
                        ours = model(dict(one))
                        torch.testing.assert_close(ours, hf(**one).logits[:, 0], atol=1e-4, rtol=0)
                # the library pads with the tokenizer's pad (<pad> here is not the config's): rows as HF reads them
                tok.pad_token = "<pad>"
                batch = tok(texts, return_tensors="pt", padding=True, padding_side=side)
                tok.pad_token = None
                reference = hf_rows_alone(hf, batch)
            else:
                batch = tok(texts, return_tensors="pt", padding=True, padding_side=side)
                reference = hf_rows_alone(hf, batch)
                torch.testing.assert_close(hf_rewards(hf, batch), reference, atol=1e-4, rtol=0)
            with torch.no_grad():
                ours = model(dict(batch))
            torch.testing.assert_close(ours, reference, atol=1e-4, rtol=0, msg=f"{arch} pad={pad} {side} eos={eos}")


def test_pad_eos_reads_before_the_trailing_eos_and_warns_once(tmp_path) -> None:
    model, hf, tok = tiny_checkpoint(tmp_path, "llama", "eos")
    batch = tok([t + " </s>" for t in TEXTS], return_tensors="pt", padding=True, padding_side="right")
    tokens, mask = batch["input_ids"], batch["attention_mask"]
    with pytest.warns(RewardPositionWarning, match=r"read at 'good' \(position 4\)") as caught:
        positions = model.reward_positions(mask, tokens)
    assert len(caught) == 1
    torch.testing.assert_close(positions, last_attended(mask) - 1)  # the word before each row's </s>
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per model
        with torch.no_grad():
            rewards, cache = model.run_with_cache(dict(batch), positions="reward")
    torch.testing.assert_close(cache.reward_pos, positions)
    torch.testing.assert_close(rewards, hf_rewards(hf, batch), atol=1e-4, rtol=0)
    # the reward-position cache holds the residual at that token
    with torch.no_grad():
        _, full = model.run_with_cache(dict(batch))
    rows = torch.arange(len(TEXTS))
    name = "ln_final.hook_normalized"
    torch.testing.assert_close(cache[name][:, 0], full[name][rows, positions])
    with pytest.raises(InputError, match="tokens"):
        model.reward_positions(mask)


def test_text_input_reads_where_hf_reads(tmp_path) -> None:
    """Texts that end with the eos (TRL's standard format) give HF's reward on HF's tokenisation of them."""
    model, hf, tok = tiny_checkpoint(tmp_path, "qwen3", "eos")
    texts = [t + " </s>" for t in TEXTS]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RewardPositionWarning)
        with torch.no_grad():
            ours = model(texts)
    torch.testing.assert_close(ours, hf_rewards(hf, tok(texts, return_tensors="pt", padding=True)), atol=1e-4, rtol=0)


def test_rule_sees_each_row_alone() -> None:
    """Padding with another id, gaps in the mask and a row of pad ids only: each row as the tool reads it alone."""
    rule = BeforeFirstPadRule(3)
    tokens = torch.tensor([[9, 9, 5, 6, 3, 7], [3, 5, 6, 0, 0, 0], [0, 3, 3, 3, 0, 0]])
    mask = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [0, 1, 1, 1, 0, 0]])
    # row 0 alone: [5 6 3 7] -> before the first 3: 6 (position 3); row 1 alone [3 5 6]: first pad at 0 -> last
    # token (ArmoRM's modulo); row 2 alone [3 3 3]: the same, its last token
    torch.testing.assert_close(reward_positions(mask, tokens, rule), torch.tensor([3, 2, 3]))


def test_value_head_rule_is_trls_get_reward() -> None:
    """TRL's `get_reward` reads `first_true_indices(ids == pad) - 1` on right-padded rows: the same positions."""
    trl_utils = pytest.importorskip("trl.experimental.utils")
    torch.manual_seed(0)
    ids = torch.randint(4, 30, (6, 9))
    ids[0, 5:] = 3  # an eos used as pad, appended and padded
    ids[1, 2] = 3  # a pad id inside the text: TRL reads before it
    ids[2, 8] = 3
    mask = torch.ones_like(ids)
    theirs = trl_utils.first_true_indices(ids == 3) - 1
    theirs = theirs % ids.shape[-1]  # no pad in the row: TRL's -1 is the last token
    torch.testing.assert_close(reward_positions(mask, ids, BeforeFirstPadRule(3)), theirs)


def test_analyses_read_where_hf_reads_on_pad_eos(tmp_path) -> None:
    """pad = eos with eos appended: the lens's final point and the exact decomposition give HF's reward, and
    patching the last block's output residual at HF's reward position restores the whole gap, at the trailing eos
    nothing (causal: it comes after), in the fast sweep and the plain one alike."""
    from hooked_reward.analysis.lens import reward_lens
    from hooked_reward.analysis.patching import patch_resid

    model, hf, tok = tiny_checkpoint(tmp_path, "llama", "eos")
    clean, corrupt = "the cat is very good </s>", "the dog is very bad </s>"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RewardPositionWarning)
        reference = hf_rows_alone(hf, tok([clean, corrupt], return_tensors="pt", padding=True))
        lens = reward_lens(model, [clean, corrupt], progress=False)
        final = lens.values[lens.labels["variant"].index("frozen"), :, -1]
        torch.testing.assert_close(final.float(), reference, atol=1e-4, rtol=0)
        with torch.no_grad():
            _, cache = model.run_with_cache([clean, corrupt])
        parts, _ = cache.decompose_reward()
        torch.testing.assert_close(parts.sum(0).float(), reference, atol=1e-4, rtol=0)
        last = model.cfg.n_layers - 1
        for fast in (True, False):
            res = patch_resid(model, clean, corrupt, hook="resid_post", layers=[last], fast=fast, progress=False)
            frac = res.fraction[0]
            n = frac.shape[-1]
            assert frac[n - 2].item() == pytest.approx(1.0, abs=1e-4)  # the word before </s>: HF's position
            assert frac[n - 1].item() == pytest.approx(0.0, abs=1e-4)  # the trailing </s>
