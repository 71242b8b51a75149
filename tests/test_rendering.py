"""Pairs rendered as the training tool rendered them (issue 36 item 2): TRL's RewardTrainer tokenisation of its
standard, implicit-prompt and conversational formats (checked against trl's own processing when it is installed),
raw text, and `compare` rendering each model's pairs with its own chat template."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import transformers
from conftest import build_hf_model, chat_tokenizer

from hooked_reward import HookedRewardModel
from hooked_reward.errors import InputError
from hooked_reward.pairs import PreferencePair, TokenizedText

STANDARD = [
    {"prompt": "is the cat good", "chosen": " yes the cat is very good", "rejected": " no"},
    {"prompt": "<s> is the dog bad", "chosen": " no the dog is good", "rejected": " yes very bad</s>"},
]
IMPLICIT = [{"chosen": "the answer is yes", "rejected": "the answer is no please"}]
CONVERSATIONAL = [
    {
        "prompt": [{"role": "user", "content": "is the cat good"}],
        "chosen": [{"role": "assistant", "content": "yes the cat is very good"}],
        "rejected": [{"role": "assistant", "content": "no"}],
    }
]
IMPLICIT_CONVERSATIONAL = [
    {
        "chosen": [{"role": "user", "content": "thanks"}, {"role": "assistant", "content": "yes"}],
        "rejected": [{"role": "user", "content": "thanks"}, {"role": "assistant", "content": "no answer"}],
    }
]
FORMATS = {
    "standard": STANDARD,
    "implicit": IMPLICIT,
    "conversational": CONVERSATIONAL,
    "implicit_conversational": IMPLICIT_CONVERSATIONAL,
}


@pytest.fixture(scope="module")
def trl_run(tmp_path_factory):
    """A tiny Llama and a tokenizer without a pad token given to TRL's RewardTrainer (which pads with eos and sets
    `config.pad_token_id` to it), saved as TRL leaves them; TRL's own tokenisation of every format."""
    trl = pytest.importorskip("trl")
    datasets = pytest.importorskip("datasets")
    model, tok = build_hf_model("llama", seed=5), chat_tokenizer()
    tok.pad_token = None
    out = tmp_path_factory.mktemp("trl")
    args = trl.RewardConfig(output_dir=str(out / "run"), report_to="none", use_cpu=True, dataset_num_proc=None)
    trainer = trl.RewardTrainer(
        model=model, args=args, train_dataset=datasets.Dataset.from_list(STANDARD), processing_class=tok
    )
    processed = {
        name: trainer._prepare_dataset(datasets.Dataset.from_list(rows), tok, args, name)
        for name, rows in FORMATS.items()
    }
    model.save_pretrained(out / "ckpt")
    tok.save_pretrained(out / "ckpt")
    return out / "ckpt", processed


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_trl_rendering_gives_trls_ids_and_hfs_reward(trl_run, fmt: str) -> None:
    path, processed = trl_run
    model = HookedRewardModel.from_pretrained(path)
    assert model.original_model.config.pad_token_id == model.tokenizer.eos_token_id  # as TRL saved it
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(str(path), dtype=torch.float32).eval()
    for row, theirs in zip(FORMATS[fmt], processed[fmt], strict=True):
        pair = PreferencePair.from_record(row)
        chosen, rejected = pair.render(model, rendering="trl")
        assert isinstance(chosen, TokenizedText)
        assert list(chosen.input_ids) == theirs["chosen_ids"]
        assert list(rejected.input_ids) == theirs["rejected_ids"]
        with torch.no_grad():
            ours = model([chosen, rejected])
            ids = [theirs["chosen_ids"], theirs["rejected_ids"]]
            reference = torch.stack([hf(input_ids=torch.tensor([i])).logits[0, 0] for i in ids])
        torch.testing.assert_close(ours, reference, atol=1e-4, rtol=0)


def test_trl_rendering_of_a_standard_pair_by_hand() -> None:
    """TRL's standard format, written out: prompt + response + eos through `tokenizer(text)` (so a prompt that
    starts with the BOS gets a second one); runs without trl."""
    tok = chat_tokenizer()
    pair = PreferencePair.from_record(STANDARD[1])
    chosen, rejected = pair.render(tok, rendering="trl")
    assert str(chosen) == "<s> is the dog bad no the dog is good</s>"
    assert str(rejected) == "<s> is the dog bad yes very bad</s>"  # already ends with eos: none added
    bos, eos = tok.bos_token_id, tok.eos_token_id
    assert chosen.input_ids[:2] == (bos, bos) and chosen.input_ids[-1] == eos
    assert list(chosen.input_ids) == tok("<s> is the dog bad no the dog is good</s>")["input_ids"]


def test_raw_rendering_and_bad_rendering() -> None:
    tok = chat_tokenizer()
    pair = PreferencePair.from_record(STANDARD[0])
    assert pair.render(tok, rendering="raw") == ("is the cat good yes the cat is very good", "is the cat good no")
    conv = PreferencePair.from_record(CONVERSATIONAL[0])
    assert conv.render(tok, rendering="raw")[1] == "is the cat good\nno"
    with pytest.raises(InputError, match="rendering must be one of"):
        pair.render(tok, rendering="TRL")
    with pytest.raises(InputError, match="tokenizer"):
        pair.render(None, rendering="trl")


def test_compare_renders_each_models_pairs_with_its_own_template(tmp_path: Path, monkeypatch) -> None:
    """Model B's texts come from model B's chat template, not model A's."""
    from hooked_reward import cli
    from hooked_reward.study import compare, registry

    dirs = []
    for name, bos in (("a", True), ("b", False)):
        out = tmp_path / name
        build_hf_model("llama", seed=1).save_pretrained(out)
        tok = chat_tokenizer(bos_in_template=bos)
        if not bos:
            tok.chat_template = tok.chat_template.replace(":", "says")
        tok.save_pretrained(out)
        dirs.append(out)
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in CONVERSATIONAL))
    seen = {}

    def fake_compare(study, model_a, model_b, pairs, **kwargs):
        seen.update(a=model_a, b=model_b, pairs=pairs, pairs_b=kwargs["pairs_b"])

    monkeypatch.setattr(compare, "compare_results", fake_compare)
    argv = ["compare", "--model", str(dirs[0]), "--model-b", str(dirs[1]), "--pairs", str(path)]
    args = cli.build_parser().parse_args([*argv, "--out", str(tmp_path / "rep"), "--quiet"])
    args.argv = argv
    cli.run_command(registry.command("compare"), args)
    expect_a, _ = PreferencePair.from_record(CONVERSATIONAL[0]).render(seen["a"])
    expect_b, _ = PreferencePair.from_record(CONVERSATIONAL[0]).render(seen["b"])
    assert expect_a != expect_b
    assert seen["pairs"][0].chosen == expect_a
    assert seen["pairs_b"][0].chosen == expect_b
