"""The reward position: where a reward head reads the residual stream.

HF's `*ForSequenceClassification` reads the last non-pad token. We take it from the attention mask (not
from pad-token ids, which break when pad == eos appears inside the text), for left and right padding alike.
"""

from __future__ import annotations

import torch
from jaxtyping import Bool, Int
from torch import Tensor

from hooked_reward.errors import InputError


def reward_positions(attention_mask: Int[Tensor, "batch pos"]) -> Int[Tensor, " batch"]:
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


def check_mask(attention_mask: object, tokens: Int[Tensor, "batch pos"]) -> Int[Tensor, "batch pos"]:
    """`attention_mask` as an int64 `[batch, pos]` tensor of 0s and 1s matching `tokens`, or `InputError`.

    Bool, integer and float masks are taken when every value is 0 or 1; any other value (a 2, a -1, a 0.5,
    NaN) is refused with its row and position: a mask is not a count of positions.
    """
    if not isinstance(attention_mask, Tensor):
        try:
            attention_mask = torch.as_tensor(attention_mask)
        except (TypeError, ValueError, RuntimeError) as err:
            raise InputError(
                f"attention_mask must be a tensor of 0s and 1s, got {type(attention_mask).__name__}."
            ) from err
    mask = attention_mask.unsqueeze(0) if attention_mask.ndim == 1 else attention_mask
    if mask.shape != tokens.shape:
        raise InputError(
            f"attention_mask shape {tuple(attention_mask.shape)} does not match tokens {tuple(tokens.shape)}."
        )
    if mask.dtype == torch.bool:
        return mask.long()
    if mask.is_complex():
        raise InputError(f"attention_mask must hold 0s and 1s, got a {mask.dtype} tensor.")
    bad = (mask != 0) & (mask != 1)
    if bool(bad.any()):
        row, pos = (int(i) for i in bad.nonzero()[0])
        value = mask[row, pos].item()
        raise InputError(
            f"attention_mask must hold only 0 (padding) and 1 (attended); row {row} has {value!r} at position "
            f"{pos}. A mask is not a count of positions: pass 1 for every token to attend and 0 for padding."
        )
    return mask.long()


def interior_gaps(attention_mask: Int[Tensor, "batch pos"]) -> Bool[Tensor, "batch pos"]:
    """True where a row's mask is 0 between two attended tokens (a gap, as opposed to edge padding)."""
    attended = attention_mask.bool()
    seen_before = attended.long().cumsum(-1) > 0
    seen_after = attended.flip(-1).long().cumsum(-1).flip(-1) > 0
    return ~attended & seen_before & seen_after


def position_ids_from_mask(attention_mask: Int[Tensor, "batch pos"]) -> Int[Tensor, "batch pos"]:
    """Each token's position counted from its row's first attended token (`[batch, pos]`; 0 before it).

    A left-padded row then gets the positions it would have alone, which matters for rotary and learned
    absolute position embeddings (HF's own classifiers count from the first pad instead). A masked token
    inside a row (a gap) still takes its place, as in HF: the row's result equals HF's forward of the row,
    with the same mask, without its leading padding.
    """
    mask = attention_mask.long()
    first = mask.argmax(-1, keepdim=True)
    index = torch.arange(mask.shape[-1], device=mask.device).expand_as(mask)
    return (index - first).clamp(min=0)


def gather_at_positions(activation: Tensor, positions: Int[Tensor, " batch"], pos_dim: int = 1) -> Tensor:
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


def position_choice(positions: str | None) -> str:
    """The one meaning of a `positions=` keyword that picks token positions: "all" (also None: every attended
    token) or "reward" (each row's reward position). Returns "all" or "reward"; `InputError` otherwise."""
    if positions is None or positions == "all":
        return "all"
    if positions == "reward":
        return "reward"
    raise InputError(f"positions must be 'all' (or None) or 'reward', got {positions!r}.")
