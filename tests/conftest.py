"""Fixtures over the tiny reward checkpoints of `tests/helpers/models.py` (built from configs, saved with
`save_pretrained`, loaded from disk; no downloads), and the suite's one-thread rule."""

from __future__ import annotations

import os

# One thread for torch in this process and in every subprocess a test starts (CLI runs, torchrun, notebooks): on
# a shared 2-core machine two threads per process stall at OpenMP barriers (tiny models gain nothing from them).
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

from collections.abc import Callable, Iterator  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import TYPE_CHECKING  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from helpers.models import (  # noqa: E402, F401  (re-exported: tests import them from conftest)
    ARCH_CONFIGS,
    ARCHS,
    CHAT_TEMPLATE,
    SPECIALS,
    VOCAB,
    WORDS,
    build_hf_model,
    chat_tokenizer,
    hf_reference_rewards,
    load_tiny,
    padded_tokens,
    save_checkpoint,
    word_tokenizer,
)

if TYPE_CHECKING:
    from hooked_reward import HookedRewardModel

_DEFAULT_THREADS = os.cpu_count() or 1  # what torch would use without the pin (one per core)
torch.set_num_threads(1)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "threads: a test about torch's thread count (runs with the default count)")


@pytest.fixture(autouse=True)
def _one_torch_thread(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every test starts with one torch thread (re-pinned, in case an earlier test changed it); a test marked
    `threads` starts with torch's default count instead and is responsible for what it sets."""
    threads = 1 if request.node.get_closest_marker("threads") is None else _DEFAULT_THREADS
    torch.set_num_threads(threads)
    yield
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """`tiny_checkpoint(arch, num_labels=1, seed=0)` -> a saved checkpoint directory (with the word tokenizer),
    built once per session and shared: do not write into it."""
    root = tmp_path_factory.mktemp("tiny-checkpoints")
    made: dict[tuple[str, int, int], Path] = {}

    def get(arch: str, num_labels: int = 1, seed: int = 0) -> Path:
        key = (arch, num_labels, seed)
        if key not in made:
            made[key] = save_checkpoint(build_hf_model(arch, num_labels, seed), root / f"{arch}-{num_labels}-{seed}")
        return made[key]

    return get


@pytest.fixture(scope="session")
def tiny_model(tiny_checkpoint: Callable[..., Path]) -> Callable[..., HookedRewardModel]:
    """`tiny_model(arch, num_labels=1, seed=0)` -> that checkpoint loaded as a HookedRewardModel, once per session
    and shared by every test that asks for it: use it read-only (no settings changed, no hooks left attached);
    a test that changes its model loads its own (`make_checkpoint`, `load_tiny`)."""
    from hooked_reward import HookedRewardModel

    loaded: dict[tuple[str, int, int], HookedRewardModel] = {}

    def get(arch: str, num_labels: int = 1, seed: int = 0) -> HookedRewardModel:
        key = (arch, num_labels, seed)
        if key not in loaded:
            loaded[key] = HookedRewardModel.from_pretrained(tiny_checkpoint(arch, num_labels, seed))
        return loaded[key]

    return get


@pytest.fixture
def make_checkpoint(tmp_path: Path) -> Callable[..., Path]:
    """`make_checkpoint(arch, num_labels=1, tokenizer=True, seed=0)` -> a saved checkpoint directory."""

    def make(arch: str, num_labels: int = 1, tokenizer: bool = True, seed: int = 0) -> Path:
        model = build_hf_model(arch, num_labels=num_labels, seed=seed)
        out = tmp_path / f"{arch}-{num_labels}-{seed}"
        if tokenizer:
            return save_checkpoint(model, out)
        model.save_pretrained(out)
        return out

    return make


@pytest.fixture(scope="module")
def armorm(tmp_path_factory: pytest.TempPathFactory):
    """A tiny ArmoRM-layout checkpoint (see test_armorm.py), loaded: `(model, state, config)`."""
    from test_armorm import tiny_state, write_armorm

    from hooked_reward import HookedRewardModel

    state, config = tiny_state()
    path = write_armorm(tmp_path_factory.mktemp("armorm") / "ckpt", state, config)
    return HookedRewardModel.from_pretrained(path), state, config
