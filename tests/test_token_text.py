"""Tokens are shown as text (issue 36 item 5): byte-level BPE's "Ġright" reads " right" in every plot and label."""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from hooked_reward.analysis.lens import token_strings
from hooked_reward.analysis.patching import position_labels


class _Model:
    """Only what the display helpers read: a tokenizer."""

    def __init__(self, tokenizer: PreTrainedTokenizerFast | None) -> None:
        self.tokenizer = tokenizer


def byte_level_tokenizer() -> PreTrainedTokenizerFast:
    """A GPT-2 / Llama-3 / Qwen style byte-level BPE vocabulary ("Ġ" a space, "Ċ" a newline)."""
    vocab = {"<s>": 0, "Ġright": 1, "the": 2, "Ċ": 3, "Ġ": 4, "r": 5, "i": 6, "g": 7, "h": 8, "t": 9, "e": 10}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>")


def test_byte_level_tokens_read_as_text() -> None:
    model = _Model(byte_level_tokenizer())
    ids = torch.tensor([0, 1, 2, 3])
    assert model.tokenizer.convert_ids_to_tokens(ids.tolist()) == ["<s>", "Ġright", "the", "Ċ"]  # what was shown
    assert token_strings(model, ids) == ["<s>", " right", "the", "\n"]
    assert position_labels(model, ids) == ["0:<s>", "1: right", "2:the", "3:\n"]


def test_without_tokenizer_ids_are_shown() -> None:
    assert token_strings(_Model(None), torch.tensor([5, 7])) == ["5", "7"]
    assert position_labels(_Model(None), torch.tensor([5, 7])) == ["0", "1"]
