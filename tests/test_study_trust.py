"""The results store never serves a stale or edited number (issue 29 items 2 and 3).

The study key is the whole input: editing config.json, a tokenizer file or the chat template, switching the
attention path, or editing a pair's content forces a recompute (before: "0 units computed here, 6 from the store"
and the old margins). Weight digests are cached by content identity: another model's file copied over with its
mtime kept is hashed again. Each record carries a checksum: an edited record is reported by file and line and its
unit computed again (before: a hand-edited r_chosen of 42.0 was shown in the report)."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch

from hooked_reward import HookedRewardModel
from hooked_reward.study.provenance import model_fingerprint, weights_sha256
from hooked_reward.study.runner import Unit
from hooked_reward.study.store import record_checksum
from hooked_reward.study.units import open_study


@pytest.fixture
def setup(make_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("HOOKED_REWARD_CACHE", str(tmp_path / "cache"))
    ckpt = make_checkpoint("llama")
    model = HookedRewardModel.from_pretrained(ckpt)
    return ckpt, model, tmp_path / "out"


def units(texts=("good cat", "bad dog", "a cat")) -> list[Unit]:
    return [Unit(f"pair/{i}", {"chosen": t, "rejected": t + " !"}, {"pair": i}) for i, t in enumerate(texts)]


def run(out, ckpt, model, todo=None):
    """One study over `todo`; returns (results, ids computed here, the study)."""
    study = open_study(out, "analyze", model, ckpt, settings={"max_length": None})
    calls: list[str] = []

    def compute(unit: Unit) -> dict:
        calls.append(unit.id)
        return {"r_chosen": torch.tensor([float(len(unit.input["chosen"]))])}

    results = study.run(todo or units(), compute, progress=False)
    return results, calls, study


def test_unchanged_inputs_are_reused(setup):
    ckpt, model, out = setup
    assert len(run(out, ckpt, model)[1]) == 3
    assert run(out, ckpt, model)[1] == []


@pytest.mark.parametrize("edit", ["config", "tokenizer", "chat_template", "new_head_file"])
def test_checkpoint_file_edits_force_a_recompute(setup, edit):
    ckpt, model, out = setup
    run(out, ckpt, model)
    if edit == "config":
        cfg = json.loads((ckpt / "config.json").read_text())
        cfg["rope_theta"] = 1234.0
        (ckpt / "config.json").write_text(json.dumps(cfg))
    elif edit == "tokenizer":  # swap the ids of two words
        tok = json.loads((ckpt / "tokenizer.json").read_text())
        vocab = tok["model"]["vocab"]
        vocab["cat"], vocab["dog"] = vocab["dog"], vocab["cat"]
        (ckpt / "tokenizer.json").write_text(json.dumps(tok))
    elif edit == "chat_template":
        (ckpt / "chat_template.jinja").write_text("{% for m in messages %}{{ m['content'] }}{% endfor %}")
    else:
        (ckpt / "head_config.json").write_text(json.dumps({"objectives": 19}))
    assert len(run(out, ckpt, model)[1]) == 3  # a new study: nothing stale is served
    (ckpt / "README.md").write_text("notes")  # documentation changes no number
    assert run(out, ckpt, model)[1] == []


def test_attention_path_is_in_the_key(setup):
    ckpt, model, out = setup
    run(out, ckpt, model)
    model.set_fused_attention(False)
    try:
        assert len(run(out, ckpt, model)[1]) == 3
    finally:
        model.set_fused_attention(True)


def test_pair_content_not_name_decides(setup):
    ckpt, model, out = setup
    run(out, ckpt, model)
    _, calls, _ = run(out, ckpt, model, units(("good cat", "bad dog EDITED", "a cat")))
    assert calls == ["pair/1"]  # only the edited pair


def test_edited_record_is_reported_and_recomputed(setup):
    ckpt, model, out = setup
    first, _, study = run(out, ckpt, model)
    files = [study.store.dir / "records.jsonl", study.store.rank_file(0)]
    for path in files:  # change r_chosen of pair/1 to 42.0 (still valid JSON), in every copy
        lines = path.read_text().splitlines()
        record = json.loads(lines[1])
        assert record["checksum"] == record_checksum(record)
        record["result"]["r_chosen"]["__tensor__"] = [42.0]
        lines[1] = json.dumps(record, separators=(",", ":"))
        path.write_text("\n".join(lines) + "\n")
    results, calls, study = run(out, ckpt, model)
    assert calls == ["pair/1"]
    assert results[1]["r_chosen"].item() == first[1]["r_chosen"].item() != 42.0
    assert len(study.damaged) == 2 and all(":2: unit 'pair/1': checksum mismatch" in d for d in study.damaged)
    assert {d.split(":2:")[0] for d in study.damaged} == {str(p) for p in files}
    assert run(out, ckpt, model)[1] == []  # the recomputed record is valid


def test_weight_digest_cache_survives_cp_p(make_checkpoint, tmp_path, monkeypatch):
    """Another model's weights copied over with size and mtime kept (`cp -p`) are hashed again, not served from
    the cache of the first (before: keyed by path, size and mtime)."""
    monkeypatch.setenv("HOOKED_REWARD_CACHE", str(tmp_path / "cache"))
    a, b = make_checkpoint("llama", seed=0), make_checkpoint("llama", seed=1)
    wa, wb = a / "model.safetensors", b / "model.safetensors"
    assert wa.stat().st_size == wb.stat().st_size
    digest_a, digest_b = weights_sha256(a)[0], weights_sha256(b)[0]
    assert digest_a != digest_b
    st = wa.stat()
    shutil.copyfile(wb, wa)
    os.utime(wa, ns=(st.st_atime_ns, st.st_mtime_ns))  # the mtime restored, as cp -p / rsync -a do
    assert wa.stat().st_mtime_ns == st.st_mtime_ns and wa.stat().st_size == st.st_size
    assert weights_sha256(a)[0] == digest_b  # the content's digest, not the cached one
    assert weights_sha256(a, use_cache=False)[0] == digest_b
    fp = model_fingerprint(a)
    assert fp["weights_sha256"] == digest_b and "config.json" in fp["input_files"]
    assert "tokenizer.json" in fp["input_files"] and "model.safetensors" not in fp["input_files"]


def test_verify_checks_report_store_and_records(setup, capsys):
    """`hooked-reward verify OUT` (issue 29 item 3): counts, checksums and the key of a store, and the report's
    marker and files; exit 0 when clean, 2 naming each problem (file and line of an edited record)."""
    from hooked_reward.cli import main
    from hooked_reward.report.html import Report

    ckpt, model, out = setup
    _, _, study = run(out, ckpt, model)
    with Report(out, "r", command="analyze") as report:
        report.add_data("n", 3)
        report.write()
    assert main(["verify", str(out)]) == 0
    text = capsys.readouterr().out
    assert "key matches its inputs" in text and "records.jsonl: 3 record(s) with valid checksums" in text
    assert f"verified {out}: no problem found" in text
    merged = study.store.dir / "records.jsonl"
    lines = merged.read_text().splitlines()
    record = json.loads(lines[2])
    record["result"]["r_chosen"]["__tensor__"] = [42.0]
    lines[2] = json.dumps(record)
    merged.write_text("\n".join(lines) + "\n")
    (out / "notes.txt").write_text("mine")
    assert main(["verify", str(out)]) == 2
    captured = capsys.readouterr()
    assert f"PROBLEM: {merged}:3: unit 'pair/2': checksum mismatch" in captured.out
    assert "file(s) the report did not write: notes.txt" in captured.out
    assert "2 problem(s)" in captured.err and len(captured.err.strip().splitlines()) == 1
    assert (out / "notes.txt").read_text() == "mine"  # verify changes nothing
