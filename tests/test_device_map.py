"""`device_map` / `max_memory` / `offload_folder` are HF's (accelerate's): offloaded layers give the same rewards as
the plain load. The GPU tests run only where CUDA is available."""

from __future__ import annotations

import pytest
import torch
import transformers
from conftest import build_hf_model, save_checkpoint

from hooked_reward import HookedRewardModel

TEXTS = ["the cat is good", "the dog was very bad answer", "yes"]
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_checkpoint(build_hf_model("llama"), tmp_path_factory.mktemp("dm") / "ckpt")


def _hf_device_map(model: HookedRewardModel) -> dict:
    return next(m.hf_device_map for m in model.modules() if hasattr(m, "hf_device_map"))


@pytest.mark.parametrize("cpu_bytes", [20_000, 60_000])
def test_offload_gives_the_plain_rewards(checkpoint, tmp_path, cpu_bytes):
    plain = HookedRewardModel.from_pretrained(checkpoint)
    offloaded = HookedRewardModel.from_pretrained(
        checkpoint, device_map="auto", max_memory={"cpu": cpu_bytes}, offload_folder=tmp_path / "offload"
    )
    assert "disk" in set(_hf_device_map(offloaded).values())  # the max_memory really forced offloading
    with torch.no_grad():
        torch.testing.assert_close(offloaded(TEXTS), plain(TEXTS), rtol=0, atol=1e-5)
        _, cache = offloaded.run_with_cache(TEXTS)
        _, ref = plain.run_with_cache(TEXTS)
    torch.testing.assert_close(cache["blocks.1.hook_resid_post"], ref["blocks.1.hook_resid_post"], rtol=0, atol=1e-5)


@cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_matches_hf_on_cuda(checkpoint, dtype):
    model = HookedRewardModel.from_pretrained(checkpoint, dtype=dtype, device_map="cuda")
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(checkpoint, dtype=dtype).cuda().eval()
    tokens, mask = model.tokenize(TEXTS)
    assert tokens.device.type == "cpu"
    with torch.no_grad():
        ours = model(TEXTS)
        rows = [hf(tokens[i][mask[i].bool()][None].cuda()).logits[0, 0] for i in range(len(TEXTS))]
    assert ours.device.type == "cuda"
    tol = 1e-4 if dtype == torch.float32 else 3e-2
    torch.testing.assert_close(ours.float(), torch.stack(rows).float(), rtol=0, atol=tol)


@cuda
def test_cuda_auto_with_cpu_offload(checkpoint):
    plain = HookedRewardModel.from_pretrained(checkpoint)
    split = HookedRewardModel.from_pretrained(checkpoint, device_map="auto", max_memory={0: 40_000, "cpu": 10**9})
    assert {"cpu"} <= {str(d) for d in _hf_device_map(split).values()}
    with torch.no_grad():
        torch.testing.assert_close(split(TEXTS).cpu(), plain(TEXTS), rtol=0, atol=1e-4)
