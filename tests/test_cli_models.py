"""The CLI on user checkpoints: model-loading flags on every model command, hub ids, pair files in every format
(rendered with the checkpoint's chat template), `--output`, `--quiet`, and bad pair files (exit 2, no report)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import build_hf_model, chat_tokenizer
from hub_cache import add_to_hub_cache

from hooked_reward.cli import _load_model, _pairs, build_parser, main

MODEL_COMMANDS = ["demo", "analyze", "probe", "compare", "faithfulness", "extensions"]
FLAGS = ["--dtype", "--device", "--device-map", "--batch-size", "--max-length", "--output", "--revision", "--quiet"]
CONV_PAIRS = [
    {
        "prompt": [{"role": "user", "content": "is the cat good"}],
        "chosen": [{"role": "assistant", "content": "yes the cat is very good"}],
        "rejected": [{"role": "assistant", "content": "no"}],
    },
    {
        "prompt": [{"role": "user", "content": "is the dog bad"}],
        "chosen": [{"role": "assistant", "content": "no the dog is good"}],
        "rejected": [{"role": "assistant", "content": "yes very bad"}],
    },
    {
        "prompt": [{"role": "user", "content": "answer the question please"}],
        "chosen": [{"role": "assistant", "content": "yes thanks"}],
        "rejected": [{"role": "assistant", "content": "no answer"}],
    },
]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A two-output tiny Llama reward model with named outputs and a chat template."""
    model = build_hf_model("llama", num_labels=2)
    model.config.id2label = {0: "helpful", 1: "harmless"}
    model.config.label2id = {"helpful": 0, "harmless": 1}
    out = tmp_path_factory.mktemp("cli") / "ckpt"
    model.save_pretrained(out)
    chat_tokenizer().save_pretrained(out)
    return out


def _args(*argv: str):
    return build_parser().parse_args(list(argv))


@pytest.mark.parametrize("command", MODEL_COMMANDS)
def test_every_model_command_has_the_model_flags(command, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args([command, "--help"])
    help_text = capsys.readouterr().out
    for flag in FLAGS:
        assert flag in help_text, (command, flag)
    with pytest.raises(SystemExit):
        build_parser().parse_args([command, "--dtype", "int8"])
    with pytest.raises(SystemExit):
        build_parser().parse_args([command, "--batch-size", "0"])


def test_flags_reach_the_model(checkpoint):
    args = _args("analyze", "--model", str(checkpoint), "--dtype", "bfloat16", "--max-length", "6")
    model, render, bundled = _load_model(args)
    assert render is None and bundled is None
    assert model.W_R.dtype == torch.bfloat16 and model.max_length == 6
    tokens, _ = model.tokenize(["the cat is good very good please thanks"])
    assert tokens.shape[-1] == 6 and tokens[0, 0].item() == model.tokenizer.bos_token_id


def test_conversational_pairs_are_rendered_with_the_chat_template(checkpoint, tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in CONV_PAIRS))
    args = _args("analyze", "--model", str(checkpoint), "--pairs", str(path))
    model, render, bundled = _load_model(args)
    pairs = _pairs(args, bundled, model, render)
    tok = model.tokenizer
    for pair, record in zip(pairs, CONV_PAIRS, strict=True):
        expected = tok.apply_chat_template(record["prompt"] + record["chosen"], tokenize=False)
        assert pair.chosen == expected and pair.label == "unlabelled"
        assert "<unk>" not in tok.convert_ids_to_tokens(model.tokenize([pair.chosen])[0][0])


@pytest.mark.slow  # a whole analyze report through the CLI
def test_analyze_with_flags_and_output_name(checkpoint, tmp_path, capsys):
    pairs = tmp_path / "pairs.json"
    pairs.write_text(json.dumps(CONV_PAIRS))
    out = tmp_path / "report"
    argv = ["analyze", "--model", str(checkpoint), "--pairs", str(pairs), "--out", str(out), "--quiet"]
    argv += ["--batch-size", "2", "--max-length", "40", "--output", "harmless"]
    assert main(argv) == 0, capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    assert "'harmless' (index 1 of 2)" in json.dumps(report)
    err = capsys.readouterr().err
    assert "Loading weights" not in err and "%|" not in err  # --quiet: no bars, HF's included


def test_hub_id_on_the_command_line(checkpoint, tmp_path, monkeypatch):
    from huggingface_hub import constants

    add_to_hub_cache(tmp_path / "hub", "org/tiny-chat-rm", checkpoint)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    model, _, _ = _load_model(_args("analyze", "--model", "org/tiny-chat-rm", "--revision", "main"))
    assert model.n_outputs == 2 and model.output_names == ["helpful", "harmless"]


@pytest.mark.parametrize(
    "content, where",
    [
        (
            '{"prompt": "p", "chosen": "a", "rejected": "b"}\n{"prompt": "p", "chosen": null, "rejected": "b"}\n',
            "line 2",
        ),
        ('{"prompt": "p", "chosen": "a", "rejected": "b"}\n\n"just a string"\n', "line 3"),
        ('{"prompt": "p", "chosen": [{"role": "user"}], "rejected": "b"}\n', "line 1"),
    ],
)
def test_bad_pairs_file_exits_2_with_the_line_and_no_report(checkpoint, tmp_path, capsys, content, where):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(content)
    out = tmp_path / "report"
    assert main(["analyze", "--model", str(checkpoint), "--pairs", str(pairs), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"pairs.jsonl {where}:" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not out.exists() and not list(tmp_path.glob("report*"))


def test_device_and_device_map_together_is_an_error(tmp_path, capsys):
    argv = ["demo", "--out", str(tmp_path / "o"), "--device", "cpu", "--device-map", "auto", "--quiet"]
    assert main(argv) == 2
    assert "not both" in capsys.readouterr().err


def test_cli_page_lists_every_command_and_flag():
    import argparse

    page = (Path(__file__).resolve().parents[1] / "docs" / "cli.md").read_text()
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for name, parser in sub.choices.items():
        assert f"hooked-reward {name}" in page, name
        for action in parser._actions:
            for flag in action.option_strings:
                if flag.startswith("--") and flag != "--help":
                    assert f"`{flag}" in page, (name, flag)
