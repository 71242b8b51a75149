"""Common mistakes at load time are one-line errors with exit 2 that name the fix (issue 29 item 6): an unknown
device, CUDA asked of a CPU-only torch, a pickle checkpoint torch refuses, a tokenizer with ids beyond the model's
embedding, a relative path that does not exist. Before, each ended in "unexpected error ... please report it"
(exit 1) or, for the path, in a Hub lookup of a name that was meant as a folder."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hooked_reward import CheckpointError, HookedRewardModel, InputError
from hooked_reward.cli import main
from hooked_reward.devices import check_device


@pytest.fixture
def pairs(tmp_path: Path) -> Path:
    rows = [{"prompt": "", "chosen": f"the cat is good {i}", "rejected": f"the cat is bad {i}"} for i in range(4)]
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return path


def run_cli(capsys, *argv: str) -> tuple[int, str]:
    """Exit status and stderr of one CLI run."""
    status = main([*argv, "--quiet"])
    return status, capsys.readouterr().err


def assert_one_line(err: str, *needles: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err  # one line: no traceback, no "please report it"
    assert "Traceback" not in err and "unexpected error" not in err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


@pytest.mark.parametrize(
    ("device", "needles"),
    [
        ("potato", ("'potato' is not a device", "--device cpu")),
        ("cuda", ("CPU-only build", torch.__version__, "download.pytorch.org/whl/cu", "--device cpu")),
        ("cuda:3", ("CPU-only build", "--device cpu")),
    ],
)
def test_device_mistakes_exit_2(capsys, make_checkpoint, pairs, tmp_path, monkeypatch, device, needles):
    monkeypatch.setattr(torch.version, "cuda", None)  # a CPU-only build, whatever this machine has
    monkeypatch.setattr(torch.version, "hip", None)
    ckpt = make_checkpoint("llama")
    status, err = run_cli(capsys, "analyze", "--model", str(ckpt), "--pairs", str(pairs), "--out", str(tmp_path / "o"))
    assert status == 0  # the same command on the CPU works
    status, err = run_cli(
        capsys, "analyze", "--model", str(ckpt), "--pairs", str(pairs), "--out", str(tmp_path / "r"), "--device", device
    )
    assert status == 2
    assert_one_line(err, *needles)
    assert not (tmp_path / "r").exists()


def test_cuda_build_without_a_visible_gpu(monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", "12.6")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.raises(InputError, match="built for CUDA 12.6, but no GPU is visible.*--device cpu"):
        check_device("cuda")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(InputError, match="shows 1 GPU.*cuda:0 to cuda:0"):
        check_device("cuda:3")
    check_device("cuda:0")  # present: no error
    for fine in (None, "cpu", "meta", "auto", {"": "cpu"}, torch.device("cpu")):
        check_device(fine)


def _pickle_checkpoint(src: Path, dst: Path) -> Path:
    """`src` with its safetensors replaced by a pytorch_model.bin pickle holding a Python object beyond tensors
    (what torch's weights_only loader refuses)."""
    shutil.copytree(src, dst)
    state = load_file(dst / "model.safetensors")
    (dst / "model.safetensors").unlink()
    state["training_args"] = argparse.Namespace(lr=1e-5)
    torch.save(state, dst / "pytorch_model.bin")
    return dst


def test_pickle_checkpoint_refused_with_convert_advice(capsys, make_checkpoint, pairs, tmp_path):
    ckpt = _pickle_checkpoint(make_checkpoint("llama"), tmp_path / "pickled")
    with pytest.raises(CheckpointError) as err:
        HookedRewardModel.from_pretrained(ckpt)
    assert "safetensors" in str(err.value) and "weights_only" not in str(err.value)
    status, out = run_cli(capsys, "analyze", "--model", str(ckpt), "--pairs", str(pairs), "--out", str(tmp_path / "o"))
    assert status == 2
    assert_one_line(out, "pytorch_model.bin is a pickle", "Convert the checkpoint to safetensors")
    assert "weights_only" not in out  # never the advice to load it unsafely


def test_tokenizer_beyond_the_embedding_refused_at_load(capsys, make_checkpoint, pairs, tmp_path):
    ckpt = shutil.copytree(make_checkpoint("llama"), tmp_path / "edited")
    rows = json.loads((ckpt / "config.json").read_text())["vocab_size"]
    tok = json.loads((ckpt / "tokenizer.json").read_text())
    tok["model"]["vocab"]["cat"] = rows + 100  # an id the embedding has no row for
    (ckpt / "tokenizer.json").write_text(json.dumps(tok))
    with pytest.raises(CheckpointError, match=rf"ids up to {rows + 100} but the model's embedding has {rows} rows"):
        HookedRewardModel.from_pretrained(ckpt)  # at load, not at the first text holding "cat"
    status, err = run_cli(capsys, "analyze", "--model", str(ckpt), "--pairs", str(pairs), "--out", str(tmp_path / "o"))
    assert status == 2
    assert_one_line(err, "'cat' = ", "restore the checkpoint's own ones")


def test_relative_path_is_not_looked_up_on_the_hub(capsys, pairs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "model-1").mkdir(parents=True)

    def no_hub(*args, **kwargs):
        raise AssertionError("a local path was looked up on the Hub")

    monkeypatch.setattr("huggingface_hub.snapshot_download", no_hub)
    status, err = run_cli(capsys, "analyze", "--model", "runs/model-3", "--pairs", str(pairs), "--out", "o")
    assert status == 2
    assert_one_line(err, "'runs/model-3' does not exist", "not tried as a Hub id", "model-1")
    status, err = run_cli(capsys, "analyze", "--model", "./elsewhere/m", "--pairs", str(pairs), "--out", "o")
    assert status == 2
    assert_one_line(err, "does not exist", "was not looked up there")


# ------------------------------------------------------------------------------------------ disk and file mistakes
def _failing_command(monkeypatch, exc_factory):
    """Make the command's work end in the OSError `exc_factory()` raises from the results store's writer."""
    from hooked_reward.study.store import RecordWriter

    def work(args, *rest, **kw):
        with RecordWriter(Path(args.out + ".store") / "study" / "rank-00000.jsonl") as writer:
            writer.write({"key": "k", "result": [0.5] * 1000})

    monkeypatch.setattr("hooked_reward.cli._load_model", work)
    monkeypatch.setattr("os.fsync", exc_factory)


def test_disk_full_names_the_file_and_the_bytes(capsys, tmp_path, monkeypatch):
    import errno

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    _failing_command(monkeypatch, full)
    status, err = run_cli(capsys, "demo", "--out", str(tmp_path / "o"))
    assert status == 2
    assert_one_line(err, "the disk is full writing", "rank-00000.jsonl", "MiB free there", "that write needed", "--out")


def test_unwritable_store_file_names_it(capsys, tmp_path, monkeypatch):
    import errno

    from hooked_reward.study import store

    def denied(self):
        raise PermissionError(errno.EACCES, "Permission denied", str(self.path))

    monkeypatch.setattr(store.RecordWriter, "_repair", denied)
    _failing_command(monkeypatch, lambda fd: None)
    status, err = run_cli(capsys, "demo", "--out", str(tmp_path / "o"))
    assert status == 2
    assert_one_line(err, "no permission to write", "rank-00000.jsonl", "--out")


def test_deeply_nested_json_line_is_named(capsys, tmp_path, make_checkpoint):
    from hooked_reward.pairs import read_pairs

    deep = tmp_path / "deep.jsonl"
    good = json.dumps({"prompt": "", "chosen": "the cat is good", "rejected": "the cat is bad"})
    deep.write_text(good + "\n" + "[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(InputError, match=r"deep.jsonl line 2: JSON nested too deeply"):
        read_pairs(deep)
    status, err = run_cli(
        capsys, "analyze", "--model", str(make_checkpoint("llama")), "--pairs", str(deep), "--out", str(tmp_path / "o")
    )
    assert status == 2
    assert_one_line(err, "deep.jsonl line 2", "nested too deeply")


def test_cli_errors_name_the_cli_option_not_python(capsys, tmp_path, make_checkpoint):
    """A text longer than the context: the CLI says `--max-length N`, not `model.tokenize(..., max_length=N)`."""
    ckpt = make_checkpoint("llama")
    n_ctx = HookedRewardModel.from_pretrained(ckpt).cfg.n_ctx
    long = " ".join(["cat"] * (n_ctx + 10))
    pairs = tmp_path / "long.jsonl"
    pairs.write_text(json.dumps({"prompt": "", "chosen": long + " good", "rejected": long + " bad"}) + "\n")
    status, err = run_cli(capsys, "analyze", "--model", str(ckpt), "--pairs", str(pairs), "--out", str(tmp_path / "o"))
    assert status == 2
    assert_one_line(err, f"--max-length {n_ctx}")
    assert "max_length=" not in err and "model.tokenize" not in err


def test_from_hf_model_refuses_a_tokenizer_beyond_the_embedding():
    from conftest import build_hf_model, word_tokenizer

    hf = build_hf_model("llama")
    tok = word_tokenizer(extra_words=tuple(f"w{i}" for i in range(hf.config.vocab_size)))  # more ids than rows
    with pytest.raises(CheckpointError, match="have no embedding. Pass the model's own tokenizer"):
        HookedRewardModel.from_hf_model(hf, tokenizer=tok)
    HookedRewardModel.from_hf_model(build_hf_model("llama"), tokenizer=word_tokenizer())  # its own: fine
