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
