"""Issue 22, second pass: inputs a hostile new user tried that the first pass let through, each refused (or, for
text the tokenizer does not know, flagged) where it enters (`model.prepare`, hook registration, `pairs.py`, the
CLI's argument types) with its value named, or accepted with the right answer."""

from __future__ import annotations

import codecs
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import build_hf_model, save_checkpoint

from hooked_reward import HookedRewardModel, HookError, InputError
from hooked_reward.cli import main
from hooked_reward.errors import UnknownTokensWarning
from hooked_reward.pairs import read_pairs

PAIR = {"prompt": "the question", "chosen": "yes good answer", "rejected": "no bad answer", "mechanism": "m"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> HookedRewardModel:
    path = save_checkpoint(build_hf_model("llama"), tmp_path_factory.mktemp("hostile") / "llama")
    return HookedRewardModel.from_pretrained(path)


def hook_count(model: HookedRewardModel) -> int:
    return sum(len(hp._forward_hooks) + len(hp._backward_hooks) for hp in model.hook_dict.values())


# ---------------------------------------------------------------- text the tokenizer does not know
def test_text_of_only_unknown_tokens_is_flagged(tiny: HookedRewardModel) -> None:
    """A text the word tokenizer knows none of (another script, a repr of ids) became `<s> <unk> <unk>` and got a
    reward like any other, silently; now it warns, naming the row and the text. A text with some known words does
    not warn."""
    for text in ("日本語 ありがとう", "[2, 7, 8]"):
        with pytest.warns(UnknownTokensWarning) as record:
            tiny(["the cat is good", text])
        message = str(record[0].message)
        assert record[0].message.rows == [1] and "[1]" in message and text in message and "<unk>" in message
    tokens, mask = tiny.tokenize(["the cat is 😀 good"])
    assert (tokens == tiny.tokenizer.unk_token_id).any()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(tiny("the cat is 😀 good"), tiny(tokens, attention_mask=mask))


def test_max_length_takes_numpy_integers(tiny: HookedRewardModel) -> None:
    expected = tiny.prepare("the cat is very good", max_length=3)
    got = tiny.prepare("the cat is very good", max_length=np.int64(3))
    assert all(torch.equal(a, b) for a, b in zip(got, expected, strict=True)) and expected[0].shape == (1, 3)


# ---------------------------------------------------------------- hooks that cannot be called
@pytest.mark.parametrize(
    ("hook_fn", "named"),
    [
        ("not a function", ["blocks.0.hook_in", "str", "not a function"]),
        (lambda activation: None, ["blocks.0.hook_in", "<lambda>(activation)", "hook=hook_point"]),
        (lambda a, b, c: None, ["blocks.0.hook_in", "<lambda>(a, b, c)"]),
    ],
)
def test_hook_that_cannot_be_called_fails_when_added(tiny: HookedRewardModel, hook_fn, named: list[str]) -> None:
    """A hook with the wrong signature failed mid-run with a bare TypeError naming no hook point; now it fails when
    added, naming the hook point and the signature, and leaves nothing attached."""
    before = hook_count(tiny)
    with pytest.raises(HookError) as info:
        tiny.run_with_hooks("the cat", fwd_hooks=[("blocks.0.hook_resid_pre", hook_fn)])
    for value in named:
        assert value in str(info.value), (value, str(info.value))
    with pytest.raises(HookError):
        tiny.add_hook("blocks.0.hook_resid_pre", hook_fn)
    assert hook_count(tiny) == before
    # The signatures TransformerLens accepts still work: (activation, hook), keyword defaults, *args/**kwargs.
    for ok in (lambda act, hook: None, lambda act, hook=None: None, lambda *args, **kwargs: None):
        assert torch.equal(tiny.run_with_hooks("the cat", fwd_hooks=[("blocks.0.hook_resid_pre", ok)]), tiny("the cat"))


# ---------------------------------------------------------------- pairs files
def test_pair_with_identical_sides_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps(PAIR) + "\n" + json.dumps({**PAIR, "rejected": PAIR["chosen"]}) + "\n")
    with pytest.raises(InputError) as info:
        read_pairs(path)
    assert "line 2" in str(info.value) and "yes good answer" in str(info.value) and "the same" in str(info.value)


@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
def test_pairs_file_with_a_byte_order_mark_reads_as_without(tmp_path: Path, suffix: str) -> None:
    """Windows editors save UTF-8 with a BOM; it was refused as invalid JSON."""
    text = json.dumps(PAIR) + "\r\n" if suffix == ".jsonl" else json.dumps([PAIR])
    plain, bom = tmp_path / f"plain{suffix}", tmp_path / f"bom{suffix}"
    plain.write_bytes(text.encode())
    bom.write_bytes(codecs.BOM_UTF8 + text.encode())
    assert read_pairs(bom) == read_pairs(plain) and len(read_pairs(bom)) == 1


# ---------------------------------------------------------------- CLI counts
@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["analyze", "--max-pairs", "-1"], "'-1'"),
        (["probe", "--n-pairs", "0"], "'0'"),
        (["probe", "--n-pairs", "-3"], "'-3'"),
        (["probe", "--min-effect", "-1"], "'-1'"),
        (["probe", "--min-effect", "nan"], "'nan'"),
    ],
)
def test_cli_counts_are_checked_before_work(
    tmp_path: Path, capsys: pytest.CaptureFixture, argv: list[str], named: str
) -> None:
    """`--max-pairs -1` silently kept one pair per label; `--n-pairs 0` ended in an unexpected ValueError."""
    out = tmp_path / "report"
    with pytest.raises(SystemExit) as info:
        main([*argv, "--out", str(out), "--quiet"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert named in err and argv[1] in err
    assert not out.exists()


def test_cli_bad_output_leaves_no_store(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A bad `--output` was found only after the results store `OUT.store/` had been created."""
    out = tmp_path / "report"
    assert main(["probe", "--output", "junk", "--n-pairs", "4", "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "'junk'" in err and "reward" in err
    assert list(tmp_path.iterdir()) == []


def test_cli_refuses_pairs_truncated_to_the_same_tokens(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """`--max-length 1` cut every text to its last token, so every margin was 0 and the report said accuracy 0."""
    pairs = tmp_path / "pairs.jsonl"
    row = {"prompt": "i think cats are good .", "chosen": "okay , cats are good .", "rejected": "no , cats are bad ."}
    pairs.write_text(json.dumps(row) + "\n")
    out = tmp_path / "report"
    assert main(["analyze", "--pairs", str(pairs), "--max-length", "1", "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "[0]" in err and "--max-length 1" in err and "same tokens" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pairs.jsonl"]


# ---------------------------------------------------------------- cache lookups and probe settings
def test_cache_lookup_of_a_missing_name_says_why(tiny: HookedRewardModel) -> None:
    """A missing cache key was a bare KeyError with the expanded name; now a HookNameError (still a KeyError) that
    says whether the run did not cache it or it does not exist."""
    _, cache = tiny.run_with_cache("the cat", names_filter="blocks.0.hook_resid_pre")
    assert torch.equal(cache["resid_pre", 0], cache["blocks.0.hook_resid_pre"])
    with pytest.raises(KeyError) as info:
        cache["blocks.1.hook_resid_pre"]
    assert "'blocks.1.hook_resid_pre'" in str(info.value) and "not in this cache" in str(info.value)
    assert "names_filter" in str(info.value)
    with pytest.raises(KeyError) as info:
        cache["nonsense", 0]
    assert "'blocks.0.hook_nonsense'" in str(info.value) and "not a hook point" in str(info.value)
    with pytest.raises(KeyError) as info:
        cache["blocks.0.hook_resid_prex"]
    assert "Did you mean 'blocks.0.hook_resid_pre'" in str(info.value)


@pytest.mark.parametrize(("kwargs", "named"), [({"n_pairs": 0}, "n_pairs=0"), ({"alpha": 2.0}, "alpha=2.0")])
def test_probe_settings_are_checked_before_scoring(tiny: HookedRewardModel, kwargs: dict, named: str) -> None:
    """`n_pairs=0` ended in numpy's "need at least one array to concatenate"; `alpha=2` made every factor
    significant."""
    from hooked_reward.analysis.probes.suite import run_probe_suite

    with pytest.raises(InputError) as info:
        run_probe_suite(tiny, progress=False, localise=False, **kwargs)
    assert named in str(info.value)


# ---------------------------------------------------------------- cached positions
def test_cache_position_on_padding_is_refused(tiny: HookedRewardModel) -> None:
    """TransformerLens's habit `positions=-1` on a right-padded batch cached the padding of the shorter rows,
    silently; now it names the row, the position and where the row's tokens are."""
    tokens, mask = tiny.tokenize(["the cat is very good", "a dog"])
    with pytest.raises(InputError) as info:
        tiny.run_with_cache(tokens, attention_mask=mask, positions=-1)
    assert "position 5 of row 1 is padding" in str(info.value) and "0..2" in str(info.value)
    # positions on tokens (and "reward") still cache exactly the full cache's values there
    # (the full cache without patterns: a pattern hook would send attention to the explicit path, which rounds
    # differently from the fused one that the position cache runs)
    _, full = tiny.run_with_cache(tokens, attention_mask=mask, names_filter=lambda name: "resid" in name)
    _, kept = tiny.run_with_cache(tokens, attention_mask=mask, positions=[4, 2])
    resid = full["blocks.1.hook_resid_pre"]
    assert torch.equal(kept["blocks.1.hook_resid_pre"][:, 0], resid[[0, 1], [4, 2]])


def test_remove_batch_dim_needs_one_row_before_the_run(tiny: HookedRewardModel) -> None:
    tokens, mask = tiny.tokenize(["the cat", "a dog"])
    with pytest.raises(InputError) as info:
        tiny.run_with_cache(tokens, attention_mask=mask, remove_batch_dim=True)
    assert "2 rows" in str(info.value)
    _, cache = tiny.run_with_cache(tokens[:1], attention_mask=mask[:1], remove_batch_dim=True)
    assert cache["blocks.0.hook_resid_pre"].shape == (tokens.shape[1], tiny.cfg.d_model)
