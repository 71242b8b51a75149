"""The reward position: where a reward head reads the residual stream.

HF's `*ForSequenceClassification` reads the last non-pad token. We take it from the attention mask (not
from pad-token ids, which break when pad == eos appears inside the text), for left and right padding alike.
"""

from __future__ import annotations

import torch
from jaxtyping import Int
from torch import Tensor

from hooked_reward.errors import InputError


def reward_positions(attention_mask: Int[Tensor, "batch pos"]) -> Int[Tensor, "batch"]:
    """Index of each row's last attended token, `[batch]`.

    Raises `InputError` for a row with no attended token (an all-padding row has no reward).
    """
    if attention_mask.ndim != 2:
        raise InputError(
            f"attention_mask must be [batch, pos], got shape {tuple(attention_mask.shape)}; "
            "pass the mask returned by `model.tokenize(texts)`."
        )
    mask = attention_mask.long()
    empty = mask.sum(-1) == 0
    if bool(empty.any()):
        rows = empty.nonzero().flatten().tolist()
        raise InputError(
            f"Row(s) {rows} of the attention mask are all padding, so they have no token to read a "
            "reward from. Remove the empty rows (or the empty texts) from the batch."
        )
    seq = mask.shape[-1]
    index = torch.arange(seq, device=mask.device).expand_as(mask)
    return torch.where(mask.bool(), index, -1).amax(-1)


def position_ids_from_mask(attention_mask: Int[Tensor, "batch pos"]) -> Int[Tensor, "batch pos"]:
    """Absolute position of each token counted over attended tokens only (`[batch, pos]`).

    A left-padded row then gets the positions it would have alone, which matters for learned absolute
    position embeddings (GPT-2). HF's own GPT-2 sequence classifier does not do this.
    """
    mask = attention_mask.long()
    return (mask.cumsum(-1) - 1).clamp(min=0)


def gather_at_positions(activation: Tensor, positions: Int[Tensor, "batch"], pos_dim: int = 1) -> Tensor:
    """Pick one position per row: `activation[b, positions[b]]` along `pos_dim`, keeping that dim (size 1).

    Works for `[batch, pos, ...]` (pos_dim 1) and attention patterns `[batch, head, q, k]` (pos_dim -2).
    """
    pos_dim = pos_dim % activation.ndim
    shape = [1] * activation.ndim
    shape[0] = activation.shape[0]
    index = positions.to(activation.device).view(shape)
    expand = list(activation.shape)
    expand[pos_dim] = 1
    index = index.expand(expand) if pos_dim != 0 else index
    return activation.gather(pos_dim, index)


def pad_rows(
    rows: list[list[int]], pad_id: int = 0, left: bool = False
) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch pos"]]:
    """Token-id rows of different lengths as one padded batch `(tokens, attention_mask)`, padded on the left
    or the right with `pad_id`."""
    width = max(len(row) for row in rows)
    tokens = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        span = slice(width - len(row), width) if left else slice(0, len(row))
        tokens[i, span] = torch.tensor(row, dtype=torch.long)
        mask[i, span] = 1
    return tokens, mask
