"""Attention patterns of chosen heads on one text, read from the reward position: what the heads that matter
look at (`head_attention` -> `HeadAttention`; `report.attention` draws them)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from jaxtyping import Float

from hooked_reward.analysis.lens import token_strings
from hooked_reward.names import Component, act_name

if TYPE_CHECKING:
    from hooked_reward.model import HookedRewardModel

__all__ = ["HeadAttention", "head_attention"]


@dataclass
class HeadAttention:
    """Attention patterns of some heads on one text.

    `patterns [head, dest, src]` for the heads named `heads` (e.g. "L0H2"), `tokens` the text's tokens and
    `reward_pos` the position the reward is read at (its row is what the head reads into the reward);
    `text_tokens` the tokens as they read in running text (for display).
    """

    heads: list[str]
    tokens: list[str]
    patterns: Float[np.ndarray, "head dest src"]
    reward_pos: int
    text_tokens: list[str] | None = None

    @property
    def from_reward(self) -> Float[np.ndarray, "head src"]:
        """Each head's attention from the reward position over the tokens."""
        return self.patterns[:, self.reward_pos, :]


def head_attention(model: HookedRewardModel, text: str, heads: Sequence[Component]) -> HeadAttention:
    """Attention patterns (`blocks.{l}.attn.hook_pattern`) of `heads` (head `Component`s) on `text`, without
    padding."""
    tokens, mask = model.prepare([text])
    n = int(mask[0].sum())
    start = int(torch.nonzero(mask[0])[0])
    names = sorted({act_name("pattern", h.layer) for h in heads})
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, attention_mask=mask, names_filter=names)
    rows = []
    for h in heads:
        pattern = cache[act_name("pattern", h.layer)][0, h.index].float()
        rows.append(pattern[start : start + n, start : start + n].cpu().numpy())
    reward_pos = int(model.reward_positions(mask, tokens)[0]) - start
    strings = token_strings(model, tokens[0, start : start + n])
    return HeadAttention(
        list(heads), strings, np.stack(rows), reward_pos, _display_tokens(model, tokens[0, start : start + n])
    )


def _display_tokens(model: HookedRewardModel, ids: torch.Tensor) -> list[str]:
    """Each token as it reads in running text (decoded one by one, so BPE's leading spaces show); a word-level
    tokenizer's tokens get a space after each."""
    tok = getattr(model, "tokenizer", None)
    if tok is None:
        return [f"{i} " for i in ids.tolist()]
    pieces = [tok.decode([i]) for i in ids.tolist()]
    if not any(p[:1].isspace() for p in pieces[1:]):
        pieces = [p + " " for p in pieces]
    return pieces
