"""Preference pairs: the one type every analysis takes, and how its two texts are rendered.

A `PreferencePair` holds what a preference data set holds — a prompt, the chosen and the rejected response, a
label (the mechanism or subset the pair tests) and free metadata — in either of the two shapes data sets use:

- **text**: `prompt`, `chosen` and `rejected` are strings (TRL's standard format, RewardBench rows, our
  JSONL). An empty prompt means `chosen`/`rejected` are already the full texts the model reads (TRL's
  "implicit prompt").
- **conversation**: `chosen` and `rejected` are lists of `{"role", "content"}` messages, and `prompt` is the
  list of messages before them (TRL's conversational format with an explicit prompt) or empty (the implicit
  prompt: each side is the whole conversation).

`pair.render(model_or_tokenizer)` gives the two texts the reward model scores, `(chosen_text, rejected_text)`:

- a conversation, and a text pair with a prompt, go through the tokenizer's chat template
  (`apply_chat_template(messages, tokenize=False)`; a text pair is the conversation `[user: prompt,
  assistant: response]`), which is exactly what HF scores. The rendered text is a `ChatText`, so
  `HookedRewardModel.tokenize` adds no special tokens of its own (no doubled BOS), as `apply_chat_template(...,
  tokenize=True)` does not;
- without a chat template, the plain join: the messages' contents, in order, joined by one newline (for a text
  pair, `prompt + "\\n" + response`);
- a text pair without a prompt is used as it is.

A custom `render(prompt, response) -> str` (e.g. `organisms.render` for the bundled organisms) replaces all of
this for text pairs.

That is `rendering="chat"` (the default). Two other renderings (`RENDERINGS`):

- `"trl"`: as TRL's `RewardTrainer` renders and tokenises its data sets (trl >= 1.0, `_prepare_dataset`): a text
  pair's response gets the tokenizer's eos appended (unless it ends with it), the prompt is prepended as it is
  (no separator), and the text is tokenised with the tokenizer's own special tokens (`tokenizer(text)`, so a text
  that starts with the BOS gets a second one, as in TRL); a conversation is `prompt + chosen` messages through
  `apply_chat_template(..., tokenize=True)`, with no eos added. The texts are `TokenizedText`s carrying those ids,
  which `HookedRewardModel.tokenize` uses unchanged.
- `"raw"`: the texts as given, `prompt + response` with no template and no eos (a conversation: its contents
  joined by newlines), tokenised as any text.

`read_pairs(source)` reads pairs from a `.jsonl`, `.json` or `.parquet` file, a `datasets.Dataset` or Python
objects, in TRL's standard and conversational formats, RewardBench's rows and ours (`PreferencePair.from_record`);
every bad value is an `InputError` naming the file, line (or row) and field.
"""

from __future__ import annotations

import codecs
import json
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeGuard

from hooked_reward.errors import ChatFormatWarning, InputError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from hooked_reward.model import HookedRewardModel

Message = dict[str, str]
"""One chat message: `{"role": "user" | "assistant" | "system" | ..., "content": str}`."""
Side = str | list[Message]
"""One side of a pair (or its prompt): a text, or a list of messages."""


class ChatText(str):
    """A text rendered by a chat template. Its special tokens (BOS, role markers) are already in it, so
    `HookedRewardModel.tokenize` tokenizes it with `add_special_tokens=False`, as `apply_chat_template` does."""

    __slots__ = ()


class TokenizedText(str):
    """A rendered text with the exact token ids its training tool gives it (`input_ids`), e.g. TRL's
    `RewardTrainer`: `HookedRewardModel.tokenize` uses these ids as they are (no special token added or removed;
    `max_length` still cuts the prompt side)."""

    input_ids: tuple[int, ...]

    def __new__(cls, text: str, input_ids: Sequence[int]) -> TokenizedText:
        obj = super().__new__(cls, text)
        obj.input_ids = tuple(int(i) for i in input_ids)
        return obj

    def __getnewargs__(self) -> tuple[str, tuple[int, ...]]:  # type: ignore[override]
        return str(self), self.input_ids


#: How a pair becomes the texts the model scores: the chat template ("chat"), TRL's RewardTrainer ("trl"), or the
#: texts as given ("raw"); see the module docstring.
RENDERINGS = ("chat", "trl", "raw")


@dataclass(frozen=True)
class PreferencePair:
    """One preference pair: `chosen` is preferred to `rejected` as a response to `prompt`.

    `prompt`, `chosen`, `rejected`: strings (text pairs; `prompt=""` when the sides are full texts), or lists
    of `{"role", "content"}` messages (conversations; `prompt` is then the messages before the response, or
    `[]`/`""` when each side is the whole conversation). `label`: the mechanism or subset the pair tests
    (`None` when unlabelled). `metadata`: anything else the row carried (e.g. RewardBench's `id`).

    Build it directly, or with `PreferencePair.from_record(row)` from a row in any supported format. The
    constructor checks every field and raises `InputError` naming the bad one.
    """

    prompt: Side
    chosen: Side
    rejected: Side
    label: str | None = None
    metadata: dict = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        for name in ("prompt", "chosen", "rejected"):
            _check_side(getattr(self, name), name)
        conv = [isinstance(getattr(self, n), list) for n in ("chosen", "rejected")]
        if conv[0] != conv[1]:
            raise InputError(
                "`chosen` and `rejected` must both be strings or both be lists of messages; got "
                f"{type(self.chosen).__name__} and {type(self.rejected).__name__}."
            )
        if not conv[0] and isinstance(self.prompt, list) and self.prompt:
            raise InputError(
                "`prompt` is a list of messages but `chosen`/`rejected` are strings: give the responses as "
                'messages too (e.g. [{"role": "assistant", "content": ...}]), or the prompt as a string.'
            )
        if self.chosen == self.rejected:
            raise InputError(
                f"`chosen` and `rejected` are the same ({_short(self.chosen)}): the pair's margin is 0 by construction "
                "and tests nothing. Remove the pair or fix its rejected response."
            )
        if self.label is not None and not isinstance(self.label, str):
            raise InputError(f"`label` must be a string or None, got {type(self.label).__name__} {self.label!r}.")
        if not isinstance(self.metadata, dict):
            raise InputError(f"`metadata` must be a dict, got {type(self.metadata).__name__}.")

    @property
    def is_conversation(self) -> bool:
        """Whether the sides are lists of messages (rendered with the chat template)."""
        return isinstance(self.chosen, list)

    def messages(self) -> tuple[list[Message], list[Message]]:
        """The two full conversations, `(chosen, rejected)`, as the chat template receives them. A text pair with
        a prompt is `[user: prompt, assistant: response]`; a text pair without one has no conversation
        (`InputError`)."""
        if isinstance(self.chosen, list) and isinstance(self.rejected, list):  # a conversation
            prompt = _as_messages(self.prompt)
            return prompt + list(self.chosen), prompt + list(self.rejected)
        if not self.prompt or not isinstance(self.prompt, str):
            raise InputError("This pair's sides are full texts (no prompt), so it has no conversation form.")
        chosen, rejected = self.texts()
        return (
            [{"role": "user", "content": self.prompt}, {"role": "assistant", "content": chosen}],
            [{"role": "user", "content": self.prompt}, {"role": "assistant", "content": rejected}],
        )

    def texts(self) -> tuple[str, str]:
        """`(chosen, rejected)` as strings: the two sides of a text pair (full texts for a rendered pair, whose
        prompt is ""); `InputError` for a conversation (render it first with `rendered`)."""
        if not (isinstance(self.chosen, str) and isinstance(self.rejected, str)):
            raise InputError(
                f"This pair ({self.label!r}) holds messages, not texts: render it with `pair.rendered(model)` first."
            )
        return self.chosen, self.rejected

    def render(
        self,
        model_or_tokenizer: HookedRewardModel | PreTrainedTokenizerBase | None = None,
        *,
        render: Callable[[str, str], str] | None = None,
        rendering: str = "chat",
    ) -> tuple[str, str]:
        """The two texts the reward model scores, `(chosen_text, rejected_text)` (see the module docstring).

        `model_or_tokenizer` supplies the chat template (a `HookedRewardModel` or an HF tokenizer; None: the
        plain join). `render(prompt, response)`, if given, renders text pairs instead (never conversations).
        `rendering`: "chat" (the default), "trl" (as TRL's RewardTrainer tokenises the pair; needs a tokenizer)
        or "raw" (the texts as given).
        """
        check_rendering(rendering)
        tok: Any = getattr(model_or_tokenizer, "tokenizer", model_or_tokenizer)
        if rendering == "trl":
            return trl_render(self.prompt, self.chosen, tok), trl_render(self.prompt, self.rejected, tok)
        if rendering == "raw":
            if self.is_conversation:
                chosen, rejected = self.messages()
                return render_messages(chosen, None), render_messages(rejected, None)
            return str(self.prompt) + str(self.chosen), str(self.prompt) + str(self.rejected)
        if not self.is_conversation and not self.prompt:
            return self.texts()
        if render is not None and not self.is_conversation:
            prompt = self.prompt if isinstance(self.prompt, str) else ""  # a text pair's prompt is a string
            chosen_text, rejected_text = self.texts()
            return render(prompt, chosen_text), render(prompt, rejected_text)
        chosen, rejected = self.messages()
        if render is not None:  # a conversation, for a model with its own text format
            single = _single_turn(chosen, rejected)
            if single is not None:  # one user turn, one assistant reply each: the model's own format
                prompt, chosen_reply, rejected_reply = single
                return render(prompt, chosen_reply), render(prompt, rejected_reply)
            warnings.warn(
                ChatFormatWarning(
                    f"Pair {self.label or 'unlabelled'!r} is a conversation of {len(chosen)} / {len(rejected)} "
                    "messages (not one user turn and one assistant reply), which this model's own text format "
                    "cannot hold; it is rendered with the tokenizer's chat template (or the plain join), a format "
                    "the model was not trained on, so its rewards may mislead. Give single-turn pairs (prompt, "
                    "chosen, rejected strings) for this model."
                ),
                stacklevel=3,
            )
        return render_messages(chosen, tok), render_messages(rejected, tok)

    def rendered(
        self,
        model_or_tokenizer: HookedRewardModel | PreTrainedTokenizerBase | None = None,
        *,
        render: Callable[[str, str], str] | None = None,
        rendering: str = "chat",
    ) -> PreferencePair:
        """This pair with its two texts rendered (`render`): a text pair without a prompt, holding the full texts the
        model scores; the same label; metadata gains `"prompt"` (the original prompt) unless it has one."""
        chosen, rejected = self.render(model_or_tokenizer, render=render, rendering=rendering)
        metadata = {"prompt": self.prompt, **self.metadata}
        return PreferencePair("", chosen, rejected, self.label, metadata)

    @classmethod
    def from_record(cls, record: Mapping, where: str = "record") -> PreferencePair:
        """A pair from one row of a preference data set, in any of these formats:

        - TRL standard: `prompt` (optional), `chosen`, `rejected` strings;
        - TRL conversational: `chosen`/`rejected` message lists, with `prompt` a message list (explicit) or
          absent (implicit);
        - RewardBench: `prompt`, `chosen`, `rejected`, `subset` (the label), `id` (kept in metadata);
        - ours: `prompt`, `chosen`, `rejected`, `mechanism` (the label); optionally `chosen_text` /
          `rejected_text`, full rendered texts that replace the rendering.

        The label is `mechanism`, else `subset`, else `label`, else None. Other keys go to `metadata`. Any bad
        value raises `InputError` naming `where` (e.g. "pairs.jsonl line 3") and the field.
        """
        if not isinstance(record, Mapping):
            raise InputError(
                f"{where}: expected an object with 'chosen' and 'rejected', got {type(record).__name__} "
                f"{_short(record)}."
            )
        missing = [k for k in ("chosen", "rejected") if k not in record]
        if missing:
            raise InputError(
                f"{where}: lacks {', '.join(repr(m) for m in missing)}; each pair needs 'chosen' and 'rejected' "
                f"(and usually 'prompt'); it has {sorted(map(str, record))}."
            )
        label = None
        for key in ("mechanism", "subset", "label"):
            if record.get(key) is not None:
                label = record[key]
                if not isinstance(label, str | int):
                    raise InputError(f"{where}: field {key!r} must be a string, got {_short(label)}.")
                label = str(label)
                break
        used = {"prompt", "chosen", "rejected", "mechanism", "subset", "label", "chosen_text", "rejected_text"}
        metadata = {k: v for k, v in record.items() if k not in used}
        for key in ("chosen_text", "rejected_text"):
            if record.get(key) is not None and not isinstance(record[key], str):
                raise InputError(f"{where}: field {key!r} must be a string, got {_short(record[key])}.")
        if record.get("chosen_text") or record.get("rejected_text"):
            if not (record.get("chosen_text") and record.get("rejected_text")):
                raise InputError(f"{where}: give both 'chosen_text' and 'rejected_text', or neither.")
            metadata["prompt"] = record.get("prompt", "")
            metadata["responses"] = (record["chosen"], record["rejected"])
            return _build(cls, where, "", record["chosen_text"], record["rejected_text"], label, metadata)
        prompt = record.get("prompt")
        if prompt is None:
            prompt = [] if isinstance(record["chosen"], list) else ""
        return _build(cls, where, prompt, record["chosen"], record["rejected"], label, metadata)


def as_pairs(
    items: Iterable[PreferencePair | Mapping | Sequence[str]],
    *,
    label: str | None = None,
    where: str = "pairs",
    sides: tuple[str, str] | None = None,
    tuples: bool = True,
) -> list[PreferencePair]:
    """Every item as a `PreferencePair`, the one conversion every analysis uses: a pair as it is; a mapping via
    `PreferencePair.from_record`; a tuple `(prompt, chosen, rejected)`, or `(chosen, rejected)` full texts.
    `label` fills in pairs that carry none (e.g. the dimension they were grouped under).

    Tuples mean one thing everywhere: **(prompt, chosen, rejected)** or **(chosen, rejected)**, the preferred
    side first. `sides=(good, bad)` also reads mappings that name the sides in an analysis's own words, e.g.
    `sides=("aligned", "misaligned")`: `{"prompt": p, "aligned": a, "misaligned": m}` is the pair with
    `chosen=a, rejected=m`. `tuples=False` refuses bare tuples (for analyses whose sides once had another order:
    there a tuple is ambiguous, so the sides must be named)."""
    out = []
    for i, item in enumerate(items):
        here = f"{where}[{i}]"
        if isinstance(item, PreferencePair):
            pair = item
        elif isinstance(item, Mapping) and sides is not None and sides[0] in item and sides[1] in item:
            extra = {k: v for k, v in item.items() if k not in {*sides, "prompt", "label"}}
            prompt = item.get("prompt", "")
            pair = _build(PreferencePair, here, prompt, item[sides[0]], item[sides[1]], item.get("label"), extra)
        elif isinstance(item, Mapping):
            pair = PreferencePair.from_record(item, where=here)
        elif isinstance(item, Sequence) and not isinstance(item, str) and len(item) in (2, 3):
            if not tuples:
                named = sides or ("chosen", "rejected")
                raise InputError(
                    f"{here}: a bare tuple {_short(item)} does not say which side is which here. Name the sides: "
                    f'{{"prompt": ..., "{named[0]}": ..., "{named[1]}": ...}} or PreferencePair(prompt, '
                    f"chosen={named[0]}, rejected={named[1]})."
                )
            pair = _build(PreferencePair, here, *(("", *item) if len(item) == 2 else item))
        else:
            named_sides = f"'{sides[0]}' and '{sides[1]}' or " if sides else ""
            tup = " or a (prompt, chosen, rejected) / (chosen, rejected) tuple" if tuples else ""
            raise InputError(
                f"{here}: expected a PreferencePair or a mapping with {named_sides}'chosen' and 'rejected'{tup}; got "
                f"{type(item).__name__} {_short(item)}."
            )
        if label is not None and pair.label is None:
            pair = PreferencePair(pair.prompt, pair.chosen, pair.rejected, label, dict(pair.metadata))
        out.append(pair)
    return out


# ------------------------------------------------------------------------------------------------ readers
def read_pairs(
    source: str | Path | Iterable[Mapping | PreferencePair] | Any, *, split: str | None = None
) -> list[PreferencePair]:
    """Preference pairs from a file, a `datasets.Dataset`, or Python objects, in any format `from_record` reads.

    - a path ending in `.jsonl` (one JSON object per line; blank lines skipped), `.json` (a JSON array of objects)
      or `.parquet` (one row per pair; needs pyarrow);
    - a `datasets.Dataset` (or a `DatasetDict` with `split=`), e.g. `load_dataset("allenai/reward-bench")`;
    - an iterable of mappings, `PreferencePair`s or tuples (`as_pairs`).

    Any bad value — invalid JSON, a line that is not an object, text that is not UTF-8, a missing field, a null,
    a number or nested junk where a text or message list belongs — raises `InputError` naming the file, the line
    (or row) and the field. An empty source is an error too.
    """
    if isinstance(source, str | Path):
        return _read_file(Path(source))
    if _is_dataset_dict(source):
        if split is None:
            raise InputError(
                f"This is a DatasetDict with splits {sorted(source)}; pass split= (e.g. split={sorted(source)[0]!r})."
            )
        source = source[split]
    elif split is not None:
        raise InputError("split= applies to a datasets.DatasetDict only.")
    where = "dataset row" if _is_dataset(source) else "pairs"
    pairs = as_pairs(source, where=where)
    if not pairs:
        raise InputError("No preference pairs given (the source is empty).")
    return pairs


def _read_file(path: Path) -> list[PreferencePair]:
    if not path.exists():
        raise InputError(f"Pairs file {str(path)!r} does not exist.")
    if path.is_dir():
        raise InputError(f"Pairs file {str(path)!r} is a directory; pass a .jsonl, .json or .parquet file.")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        rows = _parquet_rows(path)
        pairs = [PreferencePair.from_record(row, where=f"{path} row {i}") for i, row in enumerate(rows)]
    elif suffix in (".jsonl", ".json"):
        pairs = _json_pairs(path, lines=suffix == ".jsonl")
    else:
        raise InputError(
            f"Pairs file {str(path)!r}: unknown format {suffix or '(no suffix)'!r}; use .jsonl (one object per line), "
            ".json (an array of objects) or .parquet."
        )
    if not pairs:
        raise InputError(f"Pairs file {str(path)!r} has no pairs.")
    return pairs


_TOO_DEEP = (
    "{where}: JSON nested too deeply to read (arrays or objects inside each other thousands of levels deep); a pair "
    "is an object of texts or message lists: fix or remove that line."
)


def _json_pairs(path: Path, lines: bool) -> list[PreferencePair]:
    data = path.read_bytes()
    if not lines:
        try:
            records = json.loads(data.decode("utf-8-sig"))  # a leading BOM (Windows editors) is not an error
        except UnicodeDecodeError as err:
            line_no = data[: err.start].count(b"\n") + 1
            raise InputError(f"{path} line {line_no}: not UTF-8 text ({err.reason}); save the file as UTF-8.") from err
        except json.JSONDecodeError as err:
            raise InputError(f"{path} line {err.lineno}: not valid JSON ({err.msg}, column {err.colno}).") from err
        except RecursionError:
            raise InputError(_TOO_DEEP.format(where=str(path))) from None
        if not isinstance(records, list):
            raise InputError(
                f"{path}: a .json pairs file must hold an array of objects, got a JSON {type(records).__name__}. "
                "(One object per line is the .jsonl format.)"
            )
        return [PreferencePair.from_record(r, where=f"{path} item {i}") for i, r in enumerate(records)]
    pairs = []
    data = data.removeprefix(codecs.BOM_UTF8)  # a leading BOM (Windows editors) is not an error
    for n, raw in enumerate(data.split(b"\n"), start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise InputError(f"{path} line {n}: not UTF-8 text ({err.reason}); save the file as UTF-8.") from err
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise InputError(f"{path} line {n}: not valid JSON ({err.msg}, column {err.colno}).") from err
        except RecursionError:
            raise InputError(_TOO_DEEP.format(where=f"{path} line {n}")) from None
        pairs.append(PreferencePair.from_record(record, where=f"{path} line {n}"))
    return pairs


def _parquet_rows(path: Path) -> list[dict]:
    try:
        import pyarrow.parquet as pq
    except ImportError as err:
        raise InputError(
            f"Reading {str(path)!r} needs pyarrow: `pip install pyarrow` (or `pip install hooked_reward[data]`), "
            "or convert the file to JSONL."
        ) from err
    try:
        return pq.read_table(path).to_pylist()
    except Exception as err:  # pyarrow's ArrowInvalid & co: a corrupt or non-parquet file
        raise InputError(f"{path} is not a readable Parquet file ({type(err).__name__}: {err}).") from err


def _is_dataset(obj: object) -> bool:
    return type(obj).__name__ in ("Dataset", "IterableDataset") and type(obj).__module__.startswith("datasets")


def _is_dataset_dict(obj: object) -> TypeGuard[Mapping[str, Any]]:
    return type(obj).__name__ in ("DatasetDict", "IterableDatasetDict") and type(obj).__module__.startswith("datasets")


def render_messages(messages: Sequence[Message], tokenizer: PreTrainedTokenizerBase | None) -> str:
    """A conversation as the text the model scores: the tokenizer's chat template (a `ChatText`: its special
    tokens are in it), or without one the contents joined by newlines."""
    if tokenizer is not None and getattr(tokenizer, "chat_template", None):
        try:
            text = tokenizer.apply_chat_template(list(messages), tokenize=False)
        except Exception as err:  # jinja2 errors: raise_exception in templates, bad roles, ...
            raise InputError(
                f"The checkpoint's chat template could not render this conversation ({type(err).__name__}: "
                f"{err}); roles were {[m['role'] for m in messages]}."
            ) from err
        return ChatText(text)
    return "\n".join(m["content"] for m in messages)


def check_rendering(rendering: object) -> str:
    """`rendering` if it is one of `RENDERINGS`, else `InputError` naming the choices."""
    if rendering not in RENDERINGS:
        raise InputError(f"rendering must be one of {RENDERINGS}, got {rendering!r}.")
    return str(rendering)


def trl_render(prompt: Side, response: Side, tokenizer: PreTrainedTokenizerBase | None) -> TokenizedText:
    """One side of a pair as TRL's `RewardTrainer` renders and tokenises it (`_prepare_dataset`, trl >= 1.0): a
    text gets the eos appended to the response unless it ends with it, then `prompt + response` through
    `tokenizer(text)`; a conversation is `prompt + response` messages through `apply_chat_template(...,
    tokenize=True)`. The text, with TRL's ids (`TokenizedText`)."""
    if tokenizer is None:
        raise InputError("rendering='trl' tokenises as TRL does, which needs the model's tokenizer; none is loaded.")
    if isinstance(response, list):
        messages = _as_messages(prompt) + list(response)
        text = render_messages(messages, tokenizer)
        encoded: Any = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)
        return TokenizedText(text, list(encoded["input_ids"]))
    eos = tokenizer.eos_token
    if eos is None:
        raise InputError("rendering='trl' appends the tokenizer's eos token to each response; this tokenizer has none.")
    text = str(prompt) + (response if response.endswith(eos) else response + eos)
    return TokenizedText(text, list(tokenizer(text=text)["input_ids"]))


def render_pairs(
    pairs: Sequence[PreferencePair],
    model_or_tokenizer: HookedRewardModel | PreTrainedTokenizerBase | None = None,
    *,
    render: Callable[[str, str], str] | None = None,
    rendering: str = "chat",
) -> tuple[list[str], list[str]]:
    """The chosen and the rejected texts of every pair, `(chosen_texts, rejected_texts)` (see
    `PreferencePair.render`)."""
    texts = [p.render(model_or_tokenizer, render=render, rendering=rendering) for p in pairs]
    return [c for c, _ in texts], [r for _, r in texts]


def _as_messages(prompt: Side) -> list[Message]:
    if isinstance(prompt, list):
        return list(prompt)
    return [{"role": "user", "content": prompt}] if prompt else []


def _build(cls: type[PreferencePair], where: str, *args: object) -> PreferencePair:
    try:
        return cls(*args)  # type: ignore[arg-type]
    except InputError as err:
        raise InputError(f"{where}: {err}") from None


def _check_side(value: object, name: str) -> None:
    if isinstance(value, str):
        if name != "prompt" and not value.strip():
            raise InputError(f"field {name!r} is an empty text; a pair needs two non-empty responses.")
        return
    if isinstance(value, list):
        if name != "prompt" and not value:
            raise InputError(f"field {name!r} is an empty list of messages.")
        for i, m in enumerate(value):
            if (
                not isinstance(m, Mapping)
                or not isinstance(m.get("role"), str)
                or not isinstance(m.get("content"), str)
            ):
                raise InputError(
                    f"field {name!r} message {i} must be an object with string 'role' and 'content', got {_short(m)}."
                )
        return
    raise InputError(
        f"field {name!r} must be a string or a list of {{role, content}} messages, got "
        f"{type(value).__name__} {_short(value)}."
    )


def _short(value: object, n: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= n else text[: n - 3] + "..."


def _single_turn(chosen: list[Message], rejected: list[Message]) -> tuple[str, str, str] | None:
    """`(prompt, chosen reply, rejected reply)` when both conversations are one user message (the same) and one
    assistant reply with string contents; None otherwise."""
    roles = ["user", "assistant"]
    if [m.get("role") for m in chosen] != roles or [m.get("role") for m in rejected] != roles:
        return None
    texts = [t for m in (*chosen, *rejected) if isinstance(t := m.get("content"), str)]
    if len(texts) != 4 or texts[0] != texts[2]:  # every content a string, the same user message
        return None
    return texts[0], texts[1], texts[3]
