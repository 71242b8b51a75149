"""Bad checkpoint files: each class is a `CheckpointError` naming the file (or tensor) and the fix; nothing is
filled at random; HF's logging is left as the user set it."""

from __future__ import annotations

import json
import logging
import shutil
import struct
import warnings
from pathlib import Path

import pytest
import torch
from conftest import build_hf_model, save_checkpoint
from safetensors.torch import load_file, save_file

from hooked_reward import CheckpointError, HookedRewardModel

TEXTS = ["the cat is good", "the dog was bad"]


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return save_checkpoint(build_hf_model("llama"), tmp_path_factory.mktemp("base") / "ckpt")


def _copy(base: Path, tmp_path: Path) -> Path:
    out = tmp_path / "ckpt"
    shutil.copytree(base, out)
    return out


def _edit_weights(path: Path, edit) -> None:
    state = load_file(str(path / "model.safetensors"))
    edit(state)
    save_file(state, str(path / "model.safetensors"), metadata={"format": "pt"})


@pytest.mark.parametrize("key", ["score.weight", "model.layers.1.mlp.up_proj.weight"])
def test_missing_weight_is_an_error_naming_it(base, tmp_path, key):
    path = _copy(base, tmp_path)
    _edit_weights(path, lambda s: s.pop(key))
    with pytest.raises(CheckpointError, match=rf"{key}.*not in the checkpoint's files.*random"):
        HookedRewardModel.from_pretrained(path)


def test_unexpected_weights_are_listed_in_a_warning(base, tmp_path):
    path = _copy(base, tmp_path)
    _edit_weights(path, lambda s: s.update({"extra.proj.weight": torch.zeros(2, 2)}))
    with pytest.warns(UserWarning, match=r"does not use, ignored: extra\.proj\.weight"):
        model = HookedRewardModel.from_pretrained(path)
    torch.testing.assert_close(model(TEXTS), HookedRewardModel.from_pretrained(base)(TEXTS), rtol=0, atol=1e-6)


def test_wrong_shape_names_key_and_shapes(base, tmp_path):
    path = _copy(base, tmp_path)
    _edit_weights(path, lambda s: s.update({"score.weight": torch.zeros(1, 16)}))
    with pytest.raises(CheckpointError, match=r"score\.weight: \(1, 16\) in the file, \(1, 32\) expected"):
        HookedRewardModel.from_pretrained(path)


def _truncate(p: Path) -> None:
    data = (p / "model.safetensors").read_bytes()
    (p / "model.safetensors").write_bytes(data[: len(data) // 2])


def _bad_header(p: Path) -> None:
    data = (p / "model.safetensors").read_bytes()
    (p / "model.safetensors").write_bytes(struct.pack("<Q", 16) + b"{not json at all" + data[24:])


def _unknown_type(p: Path) -> None:
    config = json.loads((p / "config.json").read_text())
    (p / "config.json").write_text(json.dumps({**config, "model_type": "florp"}))


@pytest.mark.parametrize(
    "corrupt, pattern",
    [
        (_truncate, r"model\.safetensors is not a readable safetensors file.*again"),
        (lambda p: (p / "model.safetensors").write_bytes(b""), r"model\.safetensors is empty \(0 bytes\)"),
        (_bad_header, r"model\.safetensors is not a readable safetensors file"),
        (lambda p: (p / "config.json").write_text('{"model_type": "llama",'), r"config\.json is not valid JSON"),
        (lambda p: (p / "config.json").write_text(""), r"config\.json is empty"),
        (lambda p: (p / "config.json").write_bytes(b"\xff\xfe{}"), r"config\.json is not UTF-8"),
        (lambda p: (p / "config.json").write_text("[1, 2]"), r"config\.json holds a JSON list"),
        (_unknown_type, r"model_type 'florp' is not a model type transformers"),
        (lambda p: (p / "tokenizer.json").write_text("{bad"), r"tokenizer\.json is not valid JSON"),
        (lambda p: (p / "tokenizer_config.json").write_text("{bad"), r"tokenizer_config\.json is not valid JSON"),
    ],
    ids=[
        "truncated",
        "zero-byte",
        "bad-header",
        "config-json",
        "config-empty",
        "config-binary",
        "config-list",
        "model-type",
        "tokenizer-json",
        "tokenizer-config",
    ],
)
def test_corrupt_files_name_the_file(base, tmp_path, corrupt, pattern):
    path = _copy(base, tmp_path)
    corrupt(path)
    with pytest.raises(CheckpointError, match=pattern):
        HookedRewardModel.from_pretrained(path)


def test_missing_shard_of_an_index(base, tmp_path):
    path = _copy(base, tmp_path)
    (path / "model.safetensors").rename(path / "model-00001-of-00002.safetensors")
    weight_map = {k: "model-00001-of-00002.safetensors" for k in load_file(str(base / "model.safetensors"))}
    weight_map["score.weight"] = "model-00002-of-00002.safetensors"
    (path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    with pytest.raises(CheckpointError, match=r"model-00002-of-00002\.safetensors.*incomplete"):
        HookedRewardModel.from_pretrained(path)


def test_corrupt_tensor_bytes_giving_nan_name_the_tensor(base, tmp_path):
    """Overwrite bytes inside the data of one tensor (header intact): the file loads, its values are NaN."""
    path = _copy(base, tmp_path)
    file = path / "model.safetensors"
    data = bytearray(file.read_bytes())
    header_len = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + header_len])
    start, _ = header["model.layers.0.self_attn.q_proj.weight"]["data_offsets"]
    offset = 8 + header_len + start
    data[offset : offset + 16] = b"\xff" * 16  # four float32 NaNs
    file.write_bytes(bytes(data))
    model = HookedRewardModel.from_pretrained(path)  # checked when the layer first runs (issue 33: lazy load)
    for _ in range(2):  # and on every forward until fixed
        with pytest.raises(CheckpointError, match=r"model\.layers\.0\.self_attn\.q_proj\.weight.*4 non-finite"):
            model(torch.tensor([[1, 2, 3]]))


def test_armorm_and_value_head_missing_backbone_weight(tmp_path):
    from test_armorm import tiny_state, write_armorm
    from test_value_heads import causal_lm, save_with_head

    state, config = tiny_state()
    state = {k: v for k, v in state.items() if k != "model.layers.0.mlp.down_proj.weight"}
    with pytest.raises(CheckpointError, match=r"layers\.0\.mlp\.down_proj\.weight.*not in the checkpoint"):
        HookedRewardModel.from_pretrained(write_armorm(tmp_path / "armorm", state, config))
    head = {"v_head.summary.weight": torch.randn(1, 32), "v_head.summary.bias": torch.randn(1)}
    vh = save_with_head(tmp_path / "vh", causal_lm(), head)
    _edit_weights(vh, lambda s: s.pop("model.norm.weight"))
    with pytest.raises(CheckpointError, match=r"model\.norm\.weight.*not in the checkpoint"):
        HookedRewardModel.from_pretrained(vh)
    vh2 = save_with_head(tmp_path / "vh2", causal_lm(), head)  # no LM head: the reward never reads it
    _edit_weights(vh2, lambda s: s.pop("lm_head.weight"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        HookedRewardModel.from_pretrained(vh2)


def test_transformers_log_level_is_the_users():
    """Importing hooked_reward (and TransformerLens through it) leaves the transformers logger's level alone."""
    import subprocess
    import sys

    code = (
        "import logging, transformers; transformers.logging.set_verbosity_info(); "
        "import hooked_reward; print(logging.getLogger('transformers').level)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.stdout.strip().splitlines()[-1] == str(logging.INFO), out.stderr


def test_dtype_auto_and_names(base, tmp_path):
    path = _copy(base, tmp_path)
    config = json.loads((path / "config.json").read_text())
    config.pop("torch_dtype", None)
    (path / "config.json").write_text(json.dumps({**config, "dtype": "bfloat16"}))
    assert HookedRewardModel.from_pretrained(path, dtype="auto").W_R.dtype == torch.bfloat16
    assert HookedRewardModel.from_pretrained(path, dtype="float16").W_R.dtype == torch.float16
    with pytest.raises(CheckpointError, match="not a floating-point torch dtype"):
        HookedRewardModel.from_pretrained(path, dtype="int8")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_non_finite_half_precision_weight(tmp_path, dtype):
    model = build_hf_model("llama").to(dtype)
    with torch.no_grad():
        model.model.layers[1].mlp.down_proj.weight[3, 5] = float("inf")
    path = save_checkpoint(model, tmp_path / "ckpt")
    loaded = HookedRewardModel.from_pretrained(path, dtype=dtype)
    with pytest.raises(CheckpointError, match=r"model\.layers\.1\.mlp\.down_proj\.weight.*1 non-finite"):
        loaded(torch.tensor([[1, 2, 3]]))


def test_finite_check_runs_once_per_module_on_first_use(base, tmp_path):
    """Issue 33: the backbone's weights are checked at the first call of the module owning them (not at load), then
    the check is gone; weights outside the backbone (the score head) are checked at load."""
    from hooked_reward.hf_load import FirstUseCheck

    def pending(model: HookedRewardModel) -> list[str]:
        """The weights whose check has not run yet."""
        hooks = [h for m in model.modules() for h in m._forward_pre_hooks.values() if isinstance(h, FirstUseCheck)]
        return [name for hook in hooks for name, _ in hook.named]

    model = HookedRewardModel.from_pretrained(_copy(base, tmp_path))
    assert {"model.layers.1.mlp.down_proj.weight", "model.embed_tokens.weight"} <= set(pending(model))
    model(torch.tensor([[1, 2, 3]]), stop_at_layer=1)  # layer 0 ran, layer 1 did not
    assert "model.layers.1.mlp.down_proj.weight" in pending(model)
    assert not any(name.startswith("model.layers.0.") for name in pending(model))
    model(torch.tensor([[1, 2, 3]]))
    assert pending(model) == []
    path = _copy(base, tmp_path / "score")
    _edit_weights(path, lambda s: s["score.weight"].fill_(float("nan")))
    with pytest.raises(CheckpointError, match=r"score\.weight"):
        HookedRewardModel.from_pretrained(path)
