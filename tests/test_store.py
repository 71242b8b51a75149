"""The results store: exact round trips, torn lines, keys that separate studies, resume that reuses records."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from hooked_reward.analysis.faithfulness import FaithfulnessResult, summarise_faithfulness
from hooked_reward.study.provenance import model_fingerprint, weights_sha256
from hooked_reward.study.runner import Study, Unit
from hooked_reward.study.store import (
    RecordWriter,
    ResultsStore,
    decode,
    encode,
    read_records,
    store_root,
    to_frame,
)


def _roundtrip(value):
    return decode(json.loads(json.dumps(encode(value), allow_nan=False)))


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().reshape(-1).view(torch.uint8)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("n", [5, 1000])  # inline JSON lists, and base64 of the raw bytes
def test_tensors_round_trip_bit_for_bit(dtype, n):
    g = torch.Generator().manual_seed(n)
    t = (torch.randn(n, generator=g) * 1e3).to(dtype)
    t[0] = math.nan
    t[1] = -math.inf
    back = _roundtrip(t.reshape(-1, 5) if n == 5 else t)
    assert back.dtype == dtype
    assert torch.equal(_bits(back), _bits(t))


def test_scalars_arrays_tuples_and_results_round_trip():
    arr = np.random.default_rng(0).standard_normal((3, 200))
    value = {"a": math.nan, "b": (1, 2.5), "c": arr, "d": torch.tensor(3.0), "e": torch.empty(0, 4), "f": None}
    back = _roundtrip(value)
    assert math.isnan(back["a"]) and back["b"] == (1, 2.5) and back["f"] is None
    assert np.array_equal(back["c"], arr) and back["c"].dtype == arr.dtype
    assert back["d"].shape == () and float(back["d"]) == 3.0 and back["e"].shape == (0, 4)
    rows = [
        {
            "attribution": torch.tensor([1.0, 2.0, 3.0]),
            "patching": torch.tensor([1.0, 3.0, 2.0]),
            "rho": 0.5,
            "reward_gap": 1.0,
        },
        {
            "attribution": torch.tensor([1.0, 2.0, 3.0]),
            "patching": torch.tensor([1.0, 2.0, 3.0]),
            "rho": 1.0,
            "reward_gap": 2.0,
        },
        {
            "attribution": torch.tensor([3.0, 2.0, 1.0]),
            "patching": torch.tensor([1.0, 2.0, 3.0]),
            "rho": -1.0,
            "reward_gap": 0.5,
        },
    ]
    result = summarise_faithfulness(rows, ["x", "y", "z"], by="component", n_resamples=99)
    back = _roundtrip(result)
    assert isinstance(back, FaithfulnessResult)
    assert torch.equal(back.rho, result.rho) and back.ci == result.ci and back.mean == pytest.approx(0.5 / 3)


def test_only_this_package_classes_are_decoded():
    with pytest.raises(Exception, match="outside hooked_reward"):
        decode({"__dataclass__": "os:PathLike", "fields": {}})


def test_torn_last_line_is_skipped_and_cut_before_appending(tmp_path):
    path = tmp_path / "rank-00000.jsonl"
    with RecordWriter(path) as w:
        w.write({"key": "a", "n": 1})
        w.write({"key": "b", "n": 2})
    with open(path, "ab") as f:
        f.write(b'{"key": "c", "n"')  # a process killed mid-write
    assert [r["key"] for r in read_records(path)] == ["a", "b"]
    with RecordWriter(path) as w:  # the torn tail is cut; the next record starts on its own line
        w.write({"key": "d", "n": 4})
    assert [r["key"] for r in read_records(path)] == ["a", "b", "d"]
    assert path.read_text().count("\n") == 3


def test_complete_last_record_without_newline_is_kept(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"key": "a"}\n{"key": "b"}')
    assert [r["key"] for r in read_records(path)] == ["a", "b"]
    with RecordWriter(path) as w:
        w.write({"key": "c"})
    assert [r["key"] for r in read_records(path)] == ["a", "b", "c"]


def _checkpoint(tmp_path, name="ckpt", content=b"weights"):
    folder = tmp_path / name
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(content)
    (folder / "config.json").write_text("{}")
    return folder


def test_weights_hash_is_the_sha256_of_the_files_and_follows_changes(tmp_path, monkeypatch):
    import hashlib

    monkeypatch.setenv("HOOKED_REWARD_CACHE", str(tmp_path / "cache"))
    folder = _checkpoint(tmp_path)
    digest, files = weights_sha256(folder)
    expected = hashlib.sha256(f"model.safetensors:{hashlib.sha256(b'weights').hexdigest()}".encode()).hexdigest()
    assert digest == expected and files == ["model.safetensors"]
    assert (tmp_path / "cache" / "weight_hashes.json").exists()
    assert weights_sha256(folder)[0] == digest  # from the cache
    (folder / "model.safetensors").write_bytes(b"other weights")  # new size and mtime: hashed again
    assert weights_sha256(folder)[0] != digest
    fp = model_fingerprint(folder, "v1")
    assert fp["revision"] == "v1" and fp["weights_sha256"] == weights_sha256(folder)[0]


class _TinyModel(torch.nn.Module):
    """Parameters only (what a study reads for dtype and device)."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(2))


def _study(tmp_path, folder, settings=None, resume=None):
    fp = model_fingerprint(folder)
    return Study(
        tmp_path / "out",
        "toy",
        models=[fp],
        runtime={"dtype": "float32", "device": "cpu"},
        settings=settings or {"k": 1},
        seed=0,
        n_pairs=4,
        resume=resume,
    )


def test_study_resumes_and_separates_models_and_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("HOOKED_REWARD_CACHE", str(tmp_path / "cache"))
    folder = _checkpoint(tmp_path)
    calls: list[str] = []

    def compute(unit):
        calls.append(unit.id)
        return {"square": torch.tensor(float(unit.input) ** 2), "id": unit.id}

    units = [Unit(f"u/{i}", i, {"i": i}) for i in range(6)]
    study = _study(tmp_path, folder)
    out = study.run(units[:4], compute, progress=False)
    assert [float(r["square"]) for r in out] == [0.0, 1.0, 4.0, 9.0] and len(calls) == 4
    # Same model and settings: the four stored units are reused, only the new ones computed, order kept.
    again = _study(tmp_path, folder)
    out = again.run(units, compute, progress=False)
    assert calls[4:] == ["u/4", "u/5"] and again.reused == 4 and again.computed == 2
    assert [r["id"] for r in out] == [u.id for u in units]
    merged = list(read_records(again.store.dir / "records.jsonl"))
    assert [r["unit"]["id"] for r in merged] == [u.id for u in units]
    prov = merged[0]["provenance"]
    for field in ("model", "revision", "weights_sha256", "dtype", "device", "versions", "settings", "seed", "n_pairs"):
        assert field in prov
    assert prov["weights_sha256"] == model_fingerprint(folder)["weights_sha256"]
    # A changed setting, or changed weights, start a new store: everything is computed again.
    other = _study(tmp_path, folder, settings={"k": 2})
    assert other.store.dir != again.store.dir
    other.run(units[:2], compute, progress=False)
    assert calls[6:] == ["u/0", "u/1"]
    (folder / "model.safetensors").write_bytes(b"fine-tuned weights")
    changed = _study(tmp_path, folder)
    assert changed.store.dir not in (again.store.dir, other.store.dir)
    changed.run(units[:1], compute, progress=False)
    assert calls[8:] == ["u/0"]
    # --no-resume: the old folder is moved aside (not deleted) and everything is recomputed.
    fresh = _study(tmp_path, folder, resume=False)
    fresh.run(units[:1], compute, progress=False)
    assert calls[9:] == ["u/0"]
    assert any(p.name.startswith(changed.store.dir.name + "-replaced-") for p in store_root(tmp_path / "out").iterdir())
    frame = to_frame(again.store.dir)
    assert list(frame["unit.i"]) == list(range(6)) and list(frame["result.id"]) == [u.id for u in units]


def test_store_of_a_report_folder_lives_beside_it(tmp_path):
    store = ResultsStore(tmp_path / "report", {"command": "x"})
    assert store.dir.parent == tmp_path / "report.store"


def test_concat_along_text_equals_one_call_on_all_texts():
    """Per-text results joined along `text` equal the analysis run on all texts at once (to float precision: one
    batch pads, single texts do not), with every per-text field joined and the rest kept."""
    from hooked_reward import organisms
    from hooked_reward.analysis.attribution import pair_reward_attribution
    from hooked_reward.analysis.lens import reward_lens
    from hooked_reward.analysis.results import LabeledTensor

    model = organisms.load("sycophancy")
    recs = organisms.load_pairs("sycophancy")[:3]
    chosen = [organisms.render(r["prompt"], r["chosen"]) for r in recs]
    rejected = [organisms.render(r["prompt"], r["rejected"]) for r in recs]
    whole = reward_lens(model, chosen, progress=False)
    joined = LabeledTensor.concat([reward_lens(model, [t], progress=False) for t in chosen], "text")
    assert joined.dims == whole.dims and joined.labels == whole.labels and joined.hook_names == whole.hook_names
    torch.testing.assert_close(joined.values, whole.values, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(joined.rewards, whole.rewards, rtol=1e-5, atol=1e-5)
    whole = pair_reward_attribution(model, chosen, rejected, by="head", progress=False)
    parts = [
        pair_reward_attribution(model, [c], [r], by="head", progress=False)
        for c, r in zip(chosen, rejected, strict=True)
    ]
    joined = LabeledTensor.concat(parts, "text")
    assert joined.labels == whole.labels and joined.values.shape == whole.values.shape
    torch.testing.assert_close(joined.values, whole.values, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(joined.chosen.values, whole.chosen.values, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(joined.rewards, whole.rewards, rtol=1e-5, atol=1e-5)
    picked = joined.isel("text", [2, 0])
    assert torch.equal(picked.values, torch.cat([parts[2].values, parts[0].values]))
    assert torch.equal(picked.rejected.rewards, torch.cat([parts[2].rejected.rewards, parts[0].rejected.rewards]))
