"""Where inputs enter the model: text, token ids, masks and residuals, as `(tokens, attention_mask)`, checked once.

Every function takes the model first and is what the `HookedRewardModel` method of the same name (`tokenize`,
`prepare`, `to_tokens`, `render_chat`) calls; the rest are the checks behind them:

    text ─tokenize─▶ ids (special tokens once, prompt side cut to max_length) ─pad_rows─▶ tokens, mask
    ids [+ mask] ─check_token_ids / mask_from_pad_tokens / check_mask─▶ tokens, mask
    (tokens, mask) | {"input_ids", "attention_mask"} ─prepare─▶ tokens, mask  [batch, pos] int64 on the input device

Each broken rule raises `InputError` naming the row, the value and the fix (docs/guarantees.md).
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeGuard

import torch
from jaxtyping import Float, Int
from torch import Tensor

from hooked_reward.errors import InputError, UnknownTokensWarning
from hooked_reward.pairs import ChatText, TokenizedText
from hooked_reward.positions import check_mask, interior_gaps, last_attended, pad_rows, position_choice

if TYPE_CHECKING:
    from hooked_reward.model import HookedRewardModel

TextOrTokens = str | Sequence[str] | Int[Tensor, "batch pos"] | Int[Tensor, " pos"]
#: What `prepare` takes: text(s), token ids, a `(tokens, attention_mask)` pair, or a mapping with `input_ids`.
ModelInputs = TextOrTokens | tuple[Tensor, Tensor] | Mapping[str, Tensor]
PositionsArg = None | str | int | Int[Tensor, " batch"]
NamesFilter = None | str | Sequence[str] | Callable[[str], bool]


def tokenize(
    model: HookedRewardModel,
    texts: str | Sequence[str],
    max_length: int | None = None,
    *,
    prepend_bos: bool | None = None,
    padding_side: str | None = None,
) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch pos"]]:
    """Tokenize texts into padded `(tokens, attention_mask)`, with the tokenizer's special tokens once.

    A text that already starts with the BOS token (e.g. a rendered chat template) does not get a second
    one. `max_length` keeps at most that many tokens per row by cutting the start of the text (the prompt
    side): the last token, which the reward is read from, and a leading BOS are always kept. Raises
    `InputError` for empty texts, a tokenizer without a pad token, a `max_length` below 1, or sequences
    longer than the model's context (pass `max_length` to truncate explicitly). Without `max_length`, the
    model's `max_length` attribute applies (None by default; the CLI's `--max-length` sets it), so every
    analysis that takes texts truncates them the same way.

    TransformerLens's keywords: `prepend_bos=None` (default) tokenizes each text as the checkpoint does (its
    BOS and EOS, as the reward model was trained; `cfg.default_prepend_bos`, which TransformerLens's adapters
    set per architecture, is not consulted); `False` tokenizes
    a fragment: no special tokens at either end (`add_special_tokens=False`; TransformerLens 4 gives the same
    ids on these checkpoints, since it also strips an appended EOS); `True` also puts a BOS first when the
    tokenizer adds none. `padding_side` ("left"/"right") overrides the tokenizer's.
    """
    if padding_side not in (None, "left", "right"):
        raise InputError(f"padding_side must be 'left', 'right' or None, got {padding_side!r}.")
    if max_length is None:
        max_length = model.max_length
    if max_length is not None and (isinstance(max_length, bool) or not isinstance(max_length, numbers.Integral)):
        raise InputError(f"max_length must be a positive int or None, got {max_length!r}.")
    max_length = None if max_length is None else int(max_length)
    if max_length is not None and max_length < 1:
        raise InputError(
            f"max_length={max_length} would leave no token to read a reward from; pass at least 1 "
            "(the reward token), or None to keep whole texts."
        )
    tok = model.tokenizer
    if tok is None:
        raise InputError(
            "This model has no tokenizer, so it cannot take text. Pass token ids (and an attention_mask), "
            "or load with `from_pretrained(dir, tokenizer=tok)`."
        )
    texts = [texts] if isinstance(texts, str) else list(texts)
    if not texts:
        raise InputError("No texts given: pass at least one string.")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            hint = (
                " Token ids go in as an integer tensor: `model(torch.tensor(ids), attention_mask=mask)`."
                if isinstance(text, (int, list, tuple))
                else ""
            )
            raise InputError(f"Text {i} is a {type(text).__name__} ({text!r:.60}), not a str.{hint}")
        if not text.strip():
            raise InputError(f"Text {i} is empty: an empty text has no token to read a reward from.")
    ids: list[list[int]] = []
    bos_text, bos_id = getattr(tok, "bos_token", None), getattr(tok, "bos_token_id", None)
    for text in texts:
        if isinstance(text, TokenizedText):  # the training tool's own ids (e.g. TRL's), used as they are
            row = list(text.input_ids)
        else:
            has_bos = isinstance(bos_text, str) and bool(bos_text) and text.startswith(bos_text)
            special = prepend_bos is not False and not (has_bos or isinstance(text, ChatText))
            row = tok(text, add_special_tokens=special)["input_ids"]
            if has_bos and bos_id is not None and len(row) > 1 and row[0] == bos_id == row[1]:
                row = row[1:]
            if prepend_bos and bos_id is not None and (not row or row[0] != bos_id):
                row = [bos_id, *row]
        if not row:
            raise InputError(f"Text {text!r} gives no tokens (prepend_bos={prepend_bos}).")
        if max_length is not None and len(row) > max_length:
            keep_bos = max_length > 1 and bos_id is not None and row[0] == bos_id
            row = row[:1] + row[len(row) - max_length + 1 :] if keep_bos else row[len(row) - max_length :]
        ids.append(row)
    lengths = {len(r) for r in ids}
    if len(lengths) > 1 and tok.pad_token_id is None:
        raise InputError(
            "The tokenizer has no pad token, so texts of different lengths cannot be batched. Set one, "
            "e.g. `model.tokenizer.pad_token = model.tokenizer.eos_token` (the reward position comes from "
            "the attention mask, so the pad id does not affect rewards)."
        )
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    tokens, mask = pad_rows(ids, pad, left=(padding_side or tok.padding_side) == "left")
    check_length(model, tokens)
    return tokens, mask


def render_chat(model: HookedRewardModel, prompt: str, response: str) -> str:
    """`prompt`/`response` as the text the RM was trained on: the tokenizer's chat template when it has
    one (its BOS is kept, and `tokenize` will not add another), else `prompt + "\\n" + response`."""
    tok = model.tokenizer
    if tok is not None and getattr(tok, "chat_template", None):
        messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
        return ChatText(tok.apply_chat_template(messages, tokenize=False))
    return f"{prompt}\n{response}"


def check_length(model: HookedRewardModel, tokens: Tensor) -> None:
    n_ctx = getattr(model.cfg, "n_ctx", None)
    if n_ctx is not None and n_ctx > 0 and tokens.shape[-1] > n_ctx:
        raise InputError(
            f"Sequence of {tokens.shape[-1]} tokens is longer than the model's context of {n_ctx}. "
            f"Truncate it, e.g. `model.tokenize(texts, max_length={n_ctx})`."
        )


def _is_text_input(inputs: object) -> TypeGuard[str | Sequence[str]]:
    """Text input for `prepare`: a string or a sequence that is not a tensor (its items are checked later)."""
    return isinstance(inputs, str) or (isinstance(inputs, Sequence) and not isinstance(inputs, Tensor))


def _is_all_text(inputs: object) -> TypeGuard[str | Sequence[str]]:
    """A string, or a list of strings (not a `(tokens, mask)` tuple)."""
    return isinstance(inputs, str) or (
        isinstance(inputs, Sequence) and not isinstance(inputs, tuple) and all(isinstance(t, str) for t in inputs)
    )


def prepare(
    model: HookedRewardModel,
    inputs: ModelInputs,
    *,
    attention_mask: Int[Tensor, "batch pos"] | Tensor | None = None,
    max_length: int | None = None,
) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch pos"]]:
    """Every input as `(tokens, attention_mask)`, both `[batch, pos]` int64 on the model's input device:
    the one place where text, token ids and masks enter the model, and where they are checked.

    `inputs` is one of:
    - a text or a list of texts: tokenized with `tokenize` (`max_length` cuts the prompt side, never the
      reward token); `attention_mask` must then be None;
    - token ids, `[batch, pos]` or `[pos]` (an integer tensor; not bool, not float), with an optional
      `attention_mask` of the same shape;
    - a `(tokens, attention_mask)` pair as `tokenize` returns it, or a mapping with `input_ids` (and
      `attention_mask`), e.g. an HF `BatchEncoding`.

    Rules (each broken one raises `InputError` naming the row and value): at least one row and one token;
    ids in `[0, d_vocab)`; at most `n_ctx` tokens; a mask holds only 0 and 1 (bool, int, or float 0./1.),
    and every row has an attended token. A mask may have gaps (interior zeros): masked tokens are invisible
    to the others and positions count from each row's first attended token, which is what HF computes for
    the row without its leading padding. Ids without a mask are all attended, except a run of the
    tokenizer's pad id at the start or end of a row (padding, as `to_tokens` makes it); a pad id between
    other tokens is refused (pass the mask), since it cannot be told apart from a real token.
    """
    if isinstance(inputs, Mapping):
        if "input_ids" not in inputs:
            raise InputError(f"A mapping input needs 'input_ids' (and 'attention_mask'); got keys {sorted(inputs)}.")
        if attention_mask is not None and inputs.get("attention_mask") is not None:
            raise InputError("attention_mask is given twice: in the input mapping and as a keyword.")
        if inputs.get("attention_mask") is not None:
            attention_mask = inputs["attention_mask"]
        inputs = inputs["input_ids"]
    elif isinstance(inputs, tuple) and len(inputs) == 2 and isinstance(inputs[0], Tensor):
        if attention_mask is not None:
            raise InputError("attention_mask is given twice: in the (tokens, mask) pair and as a keyword.")
        inputs, attention_mask = inputs
    if _is_text_input(inputs):
        if attention_mask is not None:
            raise InputError("attention_mask is given with text input; pass token ids with a mask, or text alone.")
        tokens, mask = tokenize(model, inputs, max_length=max_length)
        warn_unknown_only(model, [inputs] if isinstance(inputs, str) else list(inputs), tokens, mask)
    elif isinstance(inputs, Tensor):
        if max_length is not None:
            raise InputError(
                "max_length applies to text; token ids are used as given. Cut them yourself (keep the last "
                "token: the reward is read there), or pass the texts."
            )
        tokens = check_token_ids(model, inputs)
        mask = mask_from_pad_tokens(model, tokens) if attention_mask is None else check_mask(attention_mask, tokens)
        check_length(model, tokens)
    else:
        raise InputError(
            f"Expected text, a list of texts, token ids or (tokens, attention_mask), got {type(inputs).__name__}."
        )
    last_attended(mask)  # every row must have an attended token
    device = model._input_device() or tokens.device
    return tokens.to(device), mask.to(device)


def warn_unknown_only(
    model: HookedRewardModel, texts: list[str], tokens: Int[Tensor, "batch pos"], mask: Int[Tensor, "batch pos"]
) -> None:
    """`UnknownTokensWarning` for texts whose tokens, special tokens aside, are all the tokenizer's unknown
    token: the tokenizer knows none of their words (another language, a repr of a list), so their rewards say
    nothing about their content."""
    tok = model.tokenizer
    unk = getattr(tok, "unk_token_id", None)
    if unk is None:
        return
    special = torch.tensor(sorted(set(getattr(tok, "all_special_ids", ())) - {unk}), dtype=torch.long)
    content = mask.bool() & ~torch.isin(tokens, special)
    only_unk = content.any(-1) & (~content | (tokens == unk)).all(-1)
    if bool(only_unk.any()):
        rows = only_unk.nonzero().flatten().tolist()
        warnings.warn(
            UnknownTokensWarning(
                f"Text(s) {rows[:10]} of {len(texts)} (first: {texts[rows[0]]!r:.80}) tokenize to nothing but the "
                f"unknown token {tok.unk_token!r}: the tokenizer knows none of their words, so their rewards say "
                "nothing about their content. Check the texts (another language or tokenizer? a repr of a list "
                "or of messages?).",
                rows,
            ),
            stacklevel=4,
        )


def check_token_ids(model: HookedRewardModel, ids: Tensor) -> Int[Tensor, "batch pos"]:
    """Token ids as a `[batch, pos]` int64 tensor, or `InputError` saying what is wrong with them."""
    if ids.dtype == torch.bool:
        raise InputError(
            "Token ids are a bool tensor; ids must be integers. A bool tensor is usually a mask: pass it as "
            "attention_mask= beside the token ids."
        )
    if ids.is_floating_point() or ids.is_complex():
        raise InputError(f"Expected token ids (an integer tensor), got a {ids.dtype} tensor.")
    tokens = ids.unsqueeze(0) if ids.ndim == 1 else ids
    if tokens.ndim != 2:
        raise InputError(f"Token ids must be [batch, pos] (or [pos]), got shape {tuple(ids.shape)}.")
    if tokens.shape[0] == 0:
        raise InputError(f"The batch is empty (token ids of shape {tuple(ids.shape)}): pass at least one row.")
    if tokens.shape[-1] == 0:
        raise InputError("Token ids are empty: at least one token is needed to read a reward.")
    d_vocab = getattr(model.cfg, "d_vocab", -1)
    if d_vocab and d_vocab > 0:
        bad = (tokens >= d_vocab) | (tokens < 0)
        if bool(bad.any()):
            row, pos = (int(i) for i in bad.nonzero()[0])
            raise InputError(
                f"Token ids must lie in [0, {d_vocab}); row {row} has {int(tokens[row, pos])} at position {pos}."
            )
    return tokens.long()


def mask_from_pad_tokens(model: HookedRewardModel, tokens: Int[Tensor, "batch pos"]) -> Int[Tensor, "batch pos"]:
    """The mask of token ids given without one: all ones, except a run of the tokenizer's pad id at the start
    or end of a row (padding, e.g. from `to_tokens` on a batch), when that id is not also BOS/EOS/UNK.
    A pad id between other tokens is ambiguous (padding, or a real token?) and raises `InputError`."""
    tok = model.tokenizer
    pad = getattr(tok, "pad_token_id", None) if tok is not None else None
    if pad is None or pad in {getattr(tok, a, None) for a in ("bos_token_id", "eos_token_id", "unk_token_id")}:
        return torch.ones_like(tokens)
    mask = (tokens != pad).long()
    gaps = interior_gaps(mask)
    if bool(gaps.any()):
        row, pos = (int(i) for i in gaps.nonzero()[0])
        raise InputError(
            f"Row {row} of the token ids has the pad id {pad} at position {pos}, between other tokens, and no "
            "attention_mask was given: it cannot be told whether that token is padding. Pass the "
            "attention_mask (e.g. from `model.tokenize(texts)`)."
        )
    return mask


def to_tokens(
    model: HookedRewardModel,
    input: str | Sequence[str],
    prepend_bos: bool | None = None,
    padding_side: str | None = None,
    move_to_device: bool = True,
    truncate: bool = True,
) -> Int[Tensor, "batch pos"]:
    """Token ids as `tokenize` makes them, without the mask (TransformerLens 4's signature).

    `prepend_bos`, `padding_side` as in `tokenize` (None: the checkpoint's own special tokens, once; False: a
    fragment, no special tokens, as `to_single_token` uses). `move_to_device` puts the ids on the model's
    input device (else they stay on the CPU). `truncate=True` keeps at most `cfg.n_ctx` tokens per row by
    cutting the prompt side (TransformerLens cuts the end, which for a reward model would cut the token the
    reward is read from); `truncate=False` raises for longer texts. Prefer `tokenize`, which also returns the
    attention mask; ids passed without a mask read padding from the tokenizer's pad id where that is
    unambiguous.
    """
    n_ctx = getattr(model.cfg, "n_ctx", None)
    max_length = n_ctx if truncate and n_ctx is not None and n_ctx > 0 else None
    tokens = tokenize(model, input, max_length=max_length, prepend_bos=prepend_bos, padding_side=padding_side)[0]
    if move_to_device:
        tokens = tokens.to(model._input_device() or tokens.device)
    return tokens


def prepare_tl(
    model: HookedRewardModel,
    input: ModelInputs,
    attention_mask: Tensor | None,
    prepend_bos: bool | None = None,
    padding_side: str | None = None,
) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch pos"]]:
    """`prepare`, with TransformerLens's tokenization keywords applied to text input (ignored for token ids,
    as in TransformerLens)."""
    if _is_all_text(input) and (prepend_bos is not None or padding_side is not None):
        if attention_mask is not None:
            raise InputError("attention_mask is given with text input; pass token ids with a mask, or text alone.")
        return prepare(model, tokenize(model, input, prepend_bos=prepend_bos, padding_side=padding_side))
    return prepare(model, input, attention_mask=attention_mask)


def residual_input(
    model: HookedRewardModel, residual: Any, attention_mask: Tensor | None
) -> tuple[Float[Tensor, "batch pos d_model"], Int[Tensor, "batch pos"]]:
    """A `start_at_layer` input: a float residual `[batch, pos, d_model]` (or `[pos, d_model]`) and its mask."""
    d_model = model.cfg.d_model
    if not (isinstance(residual, Tensor) and residual.is_floating_point()):
        raise InputError(
            "start_at_layer takes the residual entering that block, a float tensor [batch, pos, d_model] (e.g. "
            f"cache['blocks.k.hook_resid_pre']), got {type(residual).__name__}"
            + (f" of dtype {residual.dtype}." if isinstance(residual, Tensor) else ".")
        )
    residual = residual[None] if residual.ndim == 2 else residual
    if residual.ndim != 3 or residual.shape[-1] != d_model:
        raise InputError(f"start_at_layer needs a residual [batch, pos, {d_model}], got {tuple(residual.shape)}.")
    shape_like = torch.empty(residual.shape[:2], dtype=torch.long)
    mask = torch.ones_like(shape_like) if attention_mask is None else check_mask(attention_mask, shape_like)
    device = model._input_device() or residual.device
    return residual.to(device), mask.to(device)


def cache_positions(
    model: HookedRewardModel, positions: PositionsArg, mask: Tensor, tokens: Tensor | None
) -> Tensor | None:
    """Per-row position to keep in the cache (`positions=` of `run_with_cache`), or None to keep every position;
    "reward" is each row's reward position by the checkpoint's rule (`model._run_positions`)."""
    if positions is None:
        return None
    batch, seq = mask.shape
    if isinstance(positions, str):
        if position_choice(positions) == "all":
            return None
        return model._run_positions(mask, tokens)
    if isinstance(positions, (list, tuple)):
        positions = torch.as_tensor(positions)
    if isinstance(positions, bool) or not isinstance(positions, (numbers.Integral, Tensor)):
        raise InputError(f"positions must be None, 'reward', an int or a [batch] integer tensor; got {positions!r}.")
    if isinstance(positions, Tensor) and (
        positions.dtype == torch.bool or positions.is_floating_point() or positions.is_complex()
    ):
        raise InputError(
            f"positions must be integers, got a {positions.dtype} tensor {positions.tolist()}; "
            "a float or bool position is not converted for you."
        )
    pos = torch.as_tensor(positions, device=mask.device).long()
    if pos.ndim == 0:
        pos = pos.expand(batch)
    if pos.shape != (batch,):
        raise InputError(f"positions must have one entry per row ({batch}), got shape {tuple(pos.shape)}.")
    if bool(((pos >= seq) | (pos < -seq)).any()):
        raise InputError(
            f"positions {pos.tolist()} lie outside the sequence of length {seq}; valid positions are "
            f"{-seq}..{seq - 1} (or positions='reward')."
        )
    pos = pos % seq
    padded = mask.gather(1, pos[:, None].to(mask.device))[:, 0] == 0
    if bool(padded.any()):
        row = int(padded.nonzero()[0])
        attended = mask[row].nonzero().flatten()
        raise InputError(
            f"positions {pos.tolist()}: position {int(pos[row])} of row {row} is padding (the row's tokens are at "
            f"{int(attended[0])}..{int(attended[-1])}), so its activations belong to no token. Pick an attended "
            "position per row, or positions='reward' (each row's last token, whatever the padding)."
        )
    return pos
