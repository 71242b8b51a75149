"""PreferencePair: the formats it accepts, how its texts are rendered, and that a rendered conversation gets
exactly HF's reward on `apply_chat_template` of the same messages."""

from __future__ import annotations

import pytest
import torch
import transformers
from conftest import build_hf_model, chat_tokenizer, word_tokenizer

from hooked_reward import HookedRewardModel
from hooked_reward.errors import InputError
from hooked_reward.pairs import ChatText, PreferencePair, render_pairs

CONV = {
    "prompt": [{"role": "user", "content": "is the cat good"}],
    "chosen": [{"role": "assistant", "content": "yes the cat is very good"}],
    "rejected": [{"role": "assistant", "content": "no"}],
}


def _checkpoint(tmp_path, tokenizer):
    model = build_hf_model("llama")
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    return tmp_path


@pytest.mark.parametrize("bos_in_template", [True, False])
@pytest.mark.parametrize(
    "record",
    [
        CONV,  # TRL conversational, explicit prompt
        {"chosen": CONV["prompt"] + CONV["chosen"], "rejected": CONV["prompt"] + CONV["rejected"]},  # implicit
        {"prompt": "is the cat good", "chosen": "yes the cat is very good", "rejected": "no"},  # TRL standard
        {"prompt": "is the cat good", "chosen": "yes the cat is very good", "rejected": "no", "subset": "x", "id": 3},
    ],
    ids=["conversational", "implicit", "standard", "rewardbench"],
)
def test_reward_equals_hf_on_apply_chat_template(tmp_path, record, bos_in_template):
    path = _checkpoint(tmp_path, chat_tokenizer(bos_in_template))
    model = HookedRewardModel.from_pretrained(path)
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(path, dtype=torch.float32).eval()
    tok = transformers.AutoTokenizer.from_pretrained(path)
    pair = PreferencePair.from_record(record)
    chosen_text, rejected_text = pair.render(model)
    assert isinstance(chosen_text, ChatText)
    messages = [
        [{"role": "user", "content": "is the cat good"}, {"role": "assistant", "content": r}]
        for r in ("yes the cat is very good", "no")
    ]
    with torch.no_grad():
        ours = model([chosen_text, rejected_text])
        for i, conv in enumerate(messages):
            ids = tok.apply_chat_template(conv, tokenize=True, return_dict=True, return_tensors="pt")["input_ids"]
            assert int((ids == tok.bos_token_id).sum()) == int(bos_in_template)  # no doubled (or added) BOS
            assert ours[i].item() == pytest.approx(hf(ids).logits[0, 0].item(), abs=1e-5)


def test_plain_join_without_template():
    tok = word_tokenizer()
    standard = PreferencePair("is the cat good", "yes", "no")
    assert standard.render(tok) == ("is the cat good\nyes", "is the cat good\nno")
    conv = PreferencePair.from_record(CONV)
    assert conv.render(tok) == ("is the cat good\nyes the cat is very good", "is the cat good\nno")
    assert conv.render(None) == conv.render(tok)
    full = PreferencePair("", "full chosen text", "full rejected text")
    assert full.render(chat_tokenizer()) == ("full chosen text", "full rejected text")
    assert standard.render(tok, render=lambda p, r: f"{p}|{r}") == ("is the cat good|yes", "is the cat good|no")
    assert render_pairs([standard, full], tok) == (
        ["is the cat good\nyes", "full chosen text"],
        ["is the cat good\nno", "full rejected text"],
    )


def test_labels_and_metadata():
    ours = PreferencePair.from_record({"prompt": "p", "chosen": "a", "rejected": "b", "mechanism": "length"})
    assert ours.label == "length" and ours.metadata == {}
    bench = PreferencePair.from_record({"prompt": "p", "chosen": "a", "rejected": "b", "subset": "math", "id": 7})
    assert bench.label == "math" and bench.metadata == {"id": 7}
    assert PreferencePair.from_record({"chosen": "a", "rejected": "b"}).label is None
    texts = PreferencePair.from_record(
        {"prompt": "p", "chosen": "a", "rejected": "b", "chosen_text": "P A", "rejected_text": "P B"}
    )
    assert texts.render(chat_tokenizer()) == ("P A", "P B")
    assert texts.metadata["responses"] == ("a", "b")


@pytest.mark.parametrize(
    "record, field",
    [
        ({"prompt": "p", "chosen": None, "rejected": "b"}, "chosen"),
        ({"prompt": "p", "chosen": "a", "rejected": 3}, "rejected"),
        ({"prompt": 1.5, "chosen": "a", "rejected": "b"}, "prompt"),
        ({"prompt": "p", "chosen": [{"role": "assistant"}], "rejected": [{"role": "a", "content": "x"}]}, "chosen"),
        ({"prompt": "p", "chosen": [["nested"]], "rejected": [{"role": "a", "content": "x"}]}, "chosen"),
        ({"prompt": "p", "chosen": "a", "rejected": [{"role": "a", "content": "x"}]}, "chosen"),
        ({"prompt": "p", "chosen": " ", "rejected": "b"}, "chosen"),
        ({"prompt": "p", "chosen": "a"}, "rejected"),
        ({"prompt": "p", "chosen": "a", "rejected": "b", "mechanism": {"x": 1}}, "mechanism"),
    ],
)
def test_bad_values_name_the_field(record, field):
    with pytest.raises(InputError, match=rf"pairs.jsonl line 4: .*{field}"):
        PreferencePair.from_record(record, where="pairs.jsonl line 4")


def test_not_an_object():
    with pytest.raises(InputError, match="line 2: expected an object"):
        PreferencePair.from_record(["a", "b"], where="line 2")


def test_template_error_is_input_error():
    tok = chat_tokenizer()
    tok.chat_template = "{{ raise_exception('roles must alternate') }}"
    with pytest.raises(InputError, match="roles must alternate"):
        PreferencePair.from_record(CONV).render(tok)


# ------------------------------------------------------------------------------------------------ readers
RECORDS = [
    CONV,
    {"chosen": CONV["prompt"] + CONV["chosen"], "rejected": CONV["prompt"] + CONV["rejected"]},
    {"prompt": "is the cat good", "chosen": "yes", "rejected": "no"},
    {"prompt": "is the cat good", "chosen": "yes", "rejected": "no", "subset": "math", "id": 7},
    {"prompt": "is the cat good", "chosen": "yes", "rejected": "no", "mechanism": "length"},
]


def _write(path, records, fmt):
    import json

    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    elif fmt == "json":
        path.write_text(json.dumps(records))
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(records), path)
    return path


@pytest.mark.parametrize("fmt", ["jsonl", "json", "parquet", "dataset", "python"])
def test_every_source_reads_the_same_pairs(tmp_path, fmt):
    from hooked_reward.pairs import read_pairs

    expected = [PreferencePair.from_record(r) for r in RECORDS]
    if fmt == "dataset":
        datasets = pytest.importorskip("datasets")
        # One dataset holds one schema: each row shape is its own dataset (as on the hub).
        got = [p for r in RECORDS for p in read_pairs(datasets.Dataset.from_list([r]))]
        with pytest.raises(InputError, match="split="):
            read_pairs(datasets.DatasetDict({"train": datasets.Dataset.from_list(RECORDS[2:])}))
        assert read_pairs(datasets.DatasetDict({"t": datasets.Dataset.from_list(RECORDS[2:3])}), split="t")
    elif fmt == "python":
        got = read_pairs(RECORDS)
    elif fmt == "parquet":
        # A Parquet file has one set of columns: write each row shape to its own file.
        got = [p for i, r in enumerate(RECORDS) for p in read_pairs(_write(tmp_path / f"{i}.parquet", [r], fmt))]
    else:
        got = read_pairs(_write(tmp_path / f"p.{fmt}", RECORDS, fmt))
    assert got == expected
    assert [p.label for p in got][-2:] == ["math", "length"]
    tok = chat_tokenizer()
    assert [p.render(tok) for p in got] == [p.render(tok) for p in expected]


@pytest.mark.parametrize(
    "content, pattern",
    [
        (b'{"chosen": "a", "rejected": "b"}\n\n{"chosen": "a", "rejected": null}\n', r"line 3: field 'rejected'"),
        (b'{"chosen": "a", "rejected": "b"}\n[1, 2]\n', r"line 2: expected an object"),
        (b'{"chosen": "a", "rejected": "b"}\n{"chosen": 5, "rejected": "b"}\n', r"line 2: field 'chosen'"),
        (b'{"chosen": {"x": [1]}, "rejected": "b"}\n', r"line 1: field 'chosen' must be a string or a list"),
        (b'{"chosen": "a", "rejected": "b"}\n{"chosen": "a", "rej\n', r"line 2: not valid JSON"),
        (b'{"chosen": "a", "rejected": "b"}\n{"chosen": "\xff\xfe", "rejected": "b"}\n', r"line 2: not UTF-8"),
        (b'{"prompt": "p", "chosen": "a"}\n', r"line 1: lacks 'rejected'"),
        (b"\n\n", r"has no pairs"),
    ],
)
def test_bad_jsonl_names_file_line_and_field(tmp_path, content, pattern):
    from hooked_reward.pairs import read_pairs

    path = tmp_path / "pairs.jsonl"
    path.write_bytes(content)
    with pytest.raises(InputError, match=rf"pairs\.jsonl.*{pattern}"):
        read_pairs(path)


def test_bad_files(tmp_path):
    from hooked_reward.pairs import read_pairs

    with pytest.raises(InputError, match="does not exist"):
        read_pairs(tmp_path / "absent.jsonl")
    (tmp_path / "x.csv").write_text("a,b")
    with pytest.raises(InputError, match="unknown format '.csv'"):
        read_pairs(tmp_path / "x.csv")
    (tmp_path / "x.json").write_text('{"chosen": "a", "rejected": "b"}')
    with pytest.raises(InputError, match="array of objects"):
        read_pairs(tmp_path / "x.json")
    (tmp_path / "y.json").write_text('[{"chosen": "a", "rejected": "b"}, {"chosen": "a", "rejected": [1]}]')
    with pytest.raises(InputError, match=r"y\.json item 1: field 'rejected'"):
        read_pairs(tmp_path / "y.json")
    (tmp_path / "z.parquet").write_bytes(b"not parquet")
    with pytest.raises(InputError, match=r"z\.parquet is not a readable Parquet"):
        read_pairs(tmp_path / "z.parquet")
    with pytest.raises(InputError, match="empty"):
        read_pairs([])


def test_rendered_keeps_label_and_prompt():
    pair = PreferencePair("is the cat good", "yes", "no", "length", {"id": 1}).rendered(chat_tokenizer())
    assert pair.prompt == "" and pair.label == "length" and pair.metadata == {"prompt": "is the cat good", "id": 1}
    assert isinstance(pair.chosen, ChatText) and pair.chosen.startswith("<s>user : is the cat good </s> assistant")


def test_a_conversation_for_a_model_with_its_own_format() -> None:
    """A model with its own text format (a bundled organism's `render`): a single-turn conversation is rendered in
    that format, exactly as the same pair given as strings; a multi-turn one cannot be, and warns once per pair
    (ChatFormatWarning) before falling back to the plain join."""
    import warnings

    from hooked_reward.errors import ChatFormatWarning

    def render(prompt: str, response: str) -> str:
        return f"Q: {prompt} A: {response}"

    user = [{"role": "user", "content": "is it good"}]
    conv = PreferencePair(user, [{"role": "assistant", "content": "yes"}], [{"role": "assistant", "content": "no"}])
    text = PreferencePair("is it good", "yes", "no")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert (
            conv.render(None, render=render)
            == text.render(None, render=render)
            == (
                "Q: is it good A: yes",
                "Q: is it good A: no",
            )
        )
    turns = [*user, {"role": "assistant", "content": "maybe"}, {"role": "user", "content": "sure?"}]
    multi = PreferencePair(turns, [{"role": "assistant", "content": "yes"}], [{"role": "assistant", "content": "no"}])
    with pytest.warns(ChatFormatWarning, match="not trained on"):
        chosen, _ = multi.render(None, render=render)
    assert chosen == "is it good\nmaybe\nsure?\nyes"  # the plain join, as documented
