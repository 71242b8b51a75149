"""The reward position: where a reward head reads the residual stream, by the checkpoint's own rule.

Each kind of checkpoint reads its reward where the code it was trained and evaluated with reads it:

* HF's `*ForSequenceClassification` (`SequenceClassifierRule`): the rightmost token that is not the config's pad id
  (no pad id: the last token). The rule is not re-implemented: the class's own `forward` is run on a stand-in for
  the model whose backbone returns each position's index and whose head is the identity, so what it pools is the
  position it reads, for whatever class and transformers version is installed. With pad = eos and an eos appended
  to every text (TRL's default), that is the token before the trailing eos, not the eos.
* ArmoRM's `LlamaForRewardModelWithGating` and TRL's value-head reward (`BeforeFirstPadRule`): the token before the
  first pad id (no pad id in the row, or none set: the last token), as ArmoRM's `modeling_custom.py` and TRL's
  `get_reward` compute it.
* Anything else (`rule=None`): the row's last attended token.

Every rule reads a row as its tool would see it alone: its attended tokens, without the batch's padding (so the
position does not depend on the padding side, the pad id used to pad, or the other rows), mapped back to the
padded batch. `reward_positions(mask, tokens, rule)` is the one function that applies a rule;
`HookedRewardModel.reward_positions` applies the model's own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

import torch
from jaxtyping import Bool, Int
from torch import Tensor, nn

from hooked_reward.errors import InputError


@runtime_checkable
class PositionRule(Protocol):
    """A checkpoint's rule for where its reward is read.

    `pad_token_id` is the id the rule looks for (None: it reads no token ids, only the row's length).
    `__call__(ids)` takes rows as the tool sees them, `[batch, n]` token ids left-aligned and right-padded with
    `pad_token_id`, and returns the index read in each row, `[batch]` (a negative index counts from the end);
    it may raise `ValueError` for a batch it cannot take (HF refuses a batch of several rows without a pad id),
    and is then called row by row. `describe()` says in words which token it reads.
    """

    @property
    def pad_token_id(self) -> int | None: ...

    def __call__(self, ids: Int[Tensor, "batch n"]) -> Int[Tensor, " batch"]: ...

    def describe(self) -> str: ...


class _ReadPositions(nn.Module):
    """The stand-in backbone: `last_hidden_state[b, t, 0] = t`, so whatever the head pools is a position."""

    def forward(self, input_ids: Tensor | None = None, *args: Any, **kwargs: Any) -> Any:
        from transformers.modeling_outputs import BaseModelOutputWithPast

        if input_ids is None:
            raise InputError("the position probe reads positions from token ids; none were given.")
        batch, n = input_ids.shape[:2]
        index = torch.arange(n, dtype=torch.float64, device=input_ids.device)
        return BaseModelOutputWithPast(last_hidden_state=index.expand(batch, n)[..., None])


class _ModelStandIn:
    """What an HF `*ForSequenceClassification.forward` sees as `self`: the real config and attributes, with the
    backbone replaced by `_ReadPositions` and the head by the identity. No real module is ever run or changed (so
    the probe is safe beside concurrent forwards)."""

    def __init__(self, model: nn.Module, head_name: str) -> None:
        self.__dict__["_model"] = model
        self.__dict__[str(model.base_model_prefix)] = _ReadPositions()
        self.__dict__[head_name] = nn.Identity()

    def __getattr__(self, name: str) -> Any:
        value = getattr(self.__dict__["_model"], name)
        if isinstance(value, nn.Module):
            raise AttributeError(f"the position probe does not run the model's module {name!r}")
        return value


@dataclass
class SequenceClassifierRule:
    """HF's rule for a `*ForSequenceClassification` model, read off the class's own `forward` (see the module
    docstring). `head_name` is the head's attribute ("score")."""

    model: nn.Module
    head_name: str = "score"

    @property
    def pad_token_id(self) -> int | None:
        config: Any = self.model.config
        text = config.get_text_config() if hasattr(config, "get_text_config") else config
        return getattr(text, "pad_token_id", None)

    def __call__(self, ids: Int[Tensor, "batch n"]) -> Int[Tensor, " batch"]:
        stand_in = _ModelStandIn(self.model, self.head_name)
        forward: Callable[..., Any] = getattr(type(self.model), "forward")  # noqa: B009 (the class's, unbound)
        out = forward(stand_in, input_ids=ids, return_dict=True)
        pooled = out.logits.reshape(ids.shape[0], -1)[:, 0]
        index = pooled.round().long()
        if not torch.equal(index.double(), pooled.double()):
            raise InputError(
                f"{type(self.model).__name__} does not read its reward at one token (its pooling gives "
                f"{pooled.tolist()} for the positions), so it has no reward position hooked_reward can read."
            )
        return index

    def describe(self) -> str:
        return f"{type(self.model).__name__} (transformers' own forward) reads the last token that is not the pad id"


@dataclass
class BeforeFirstPadRule:
    """The token before the first pad id in the row, or the last token when the row holds none (or no pad id is
    set): ArmoRM's `sequence_lengths = (ids == pad).int().argmax(-1) - 1`, modulo the length, and TRL's
    `get_reward`, `first_true_indices(ids == pad) - 1`. `pad` is the id, or a function giving it at call time
    (a value head's tokenizer is attached after loading)."""

    pad: int | None | Any
    source: str = "ArmoRM's modeling_custom.py"

    @property
    def pad_token_id(self) -> int | None:
        return self.pad() if callable(self.pad) else self.pad

    def __call__(self, ids: Int[Tensor, "batch n"]) -> Int[Tensor, " batch"]:
        pad = self.pad_token_id
        n = ids.shape[-1]
        if pad is None:
            return torch.full((ids.shape[0],), n - 1, dtype=torch.long, device=ids.device)
        return ((ids == pad).int().argmax(-1) - 1) % n

    def describe(self) -> str:
        return f"{self.source} reads the token before the first pad id"


def _compact(
    tokens: Int[Tensor, "batch pos"], mask: Int[Tensor, "batch pos"], fill: int
) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch pos"], Int[Tensor, " batch"]]:
    """Each row's attended tokens moved to the left, the rest filled with `fill`: `(ids, order, lengths)`, where
    `order[b, k]` is where the row's k-th attended token sits in the padded batch."""
    attended = mask.bool()
    order = torch.argsort((~attended).to(torch.int8), dim=-1, stable=True)
    lengths = attended.sum(-1)
    ids = tokens.gather(-1, order)
    inside = torch.arange(tokens.shape[-1], device=tokens.device) < lengths[:, None]
    return torch.where(inside, ids, torch.full_like(ids, fill)), order, lengths


def last_attended(attention_mask: Int[Tensor, "batch pos"]) -> Int[Tensor, " batch"]:
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


def reward_positions(
    attention_mask: Int[Tensor, "batch pos"],
    tokens: Int[Tensor, "batch pos"] | None = None,
    rule: PositionRule | None = None,
) -> Int[Tensor, " batch"]:
    """Each row's reward position in the padded batch, `[batch]`, by `rule` (None: the last attended token).

    The rule sees every row alone, as its tool would: the row's attended tokens, left-aligned and padded with the
    rule's pad id (so batch padding is never read), then row by row where it refuses the batch or reads past a
    row's end. `tokens` are needed when the rule reads token ids (`rule.pad_token_id` is set); `InputError`
    otherwise, and for a row with no attended token.
    """
    last = last_attended(attention_mask)
    if rule is None:
        return last
    pad = rule.pad_token_id
    if tokens is None:
        if pad is None:
            return last
        raise InputError(
            f"Where this checkpoint reads its reward depends on its token ids ({rule.describe()}, pad id {pad}), "
            "and only the attention mask was given. Pass the tokens too: `model.reward_positions(mask, tokens)`."
        )
    if tokens.shape != attention_mask.shape:
        shapes = f"{tuple(tokens.shape)} and {tuple(attention_mask.shape)}"
        raise InputError(f"tokens and attention_mask differ in shape: {shapes}.")
    ids, order, lengths = _compact(tokens.long(), attention_mask, 0 if pad is None else int(pad))
    width = int(lengths.max())
    ids = ids[:, :width]
    try:
        index = rule(ids).to(lengths.device).long() % width
        redo = (index >= lengths).nonzero().flatten().tolist()
    except ValueError:
        index, redo = torch.zeros_like(lengths), list(range(ids.shape[0]))
    for row in redo:
        n = int(lengths[row])
        index[row] = int(rule(ids[row : row + 1, :n])[0]) % n
    return order.gather(-1, index[:, None].to(order.device))[:, 0]


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


def position_choice(positions: str | None) -> Literal["all", "reward"]:
    """The one meaning of a `positions=` keyword that picks token positions: "all" (also None: every attended
    token) or "reward" (each row's reward position). Returns "all" or "reward"; `InputError` otherwise."""
    if positions is None or positions == "all":
        return "all"
    if positions == "reward":
        return "reward"
    raise InputError(f"positions must be 'all' (or None) or 'reward', got {positions!r}.")
