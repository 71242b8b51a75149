"""From a checkpoint directory (or a loaded HF model) to the pieces a `HookedRewardModel` is built from.

A checkpoint is read in one of the registered layouts (`registry.CheckpointLayout`: HF `*ForSequenceClassification`,
ArmoRM, TRL value heads, OpenRLHF reward models, PEFT adapters; docs/architectures.md lists them with how each is
recognised). `load_checkpoint` resolves hub ids, reads and checks the directory once, and hands it to the layout
that recognises it; the layouts live in their own modules (`heads/`, `peft_adapter`), registered on import.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

import hooked_reward.heads
import hooked_reward.peft_adapter  # noqa: F401  (registers the PEFT adapter layout)
from hooked_reward.heads import from_sequence_classifier  # noqa: F401  (public here before)
from hooked_reward.hf_load import (  # noqa: F401  (read_config, load_tokenizer: public here before)
    WEIGHT_FILES,
    check_vocabulary,
    check_weight_files,
    load_hf_model,
    load_tokenizer,
    read_config,
    resolve_dtype,
)
from hooked_reward.registry import (  # noqa: F401  (re-exported: loading.register_loader is public)
    LAYOUTS,
    CheckpointContents,
    CheckpointLayout,
    LoadedCheckpoint,
    causal_lm_architecture,
    layouts,
    load_layout,
    read_contents,
    register_content_loader,
    register_layout,
    register_loader,
    supported_causal_architectures,
)


def load_checkpoint(
    path: str | Path,
    dtype: torch.dtype | str = torch.float32,
    device_map: Any = None,
    *,
    max_memory: dict | None = None,
    offload_folder: str | Path | None = None,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    local_files_only: bool = False,
    token: str | bool | None = None,
    normalize_reward: bool | None = None,
    base_model: str | Path | None = None,
) -> LoadedCheckpoint:
    """Load a reward checkpoint — a local directory or a hub id (`hub.resolve_checkpoint`) — without running any
    code from it (`trust_remote_code=False`). The files are checked first (`read_contents`), the layout that
    recognises the directory loads it (`registry.load_layout`), and nothing is filled at random (`load_hf_model`).

    `normalize_reward` (OpenRLHF checkpoints, or a PEFT adapter over one) overrides config.json's: True applies
    `(r - mean) / std` with the config's statistics, False gives the raw score. `base_model` (PEFT adapters) is the
    directory or hub id of the model the adapter was trained on, when `adapter_config.json`'s
    `base_model_name_or_path` does not point at it here. Either raises `InputError` for a layout it does not apply to.
    """
    from hooked_reward.devices import check_device
    from hooked_reward.hub import resolve_checkpoint

    check_device(device_map)  # before any file is read: a wrong device fails in a second
    hub_kwargs: dict[str, Any] = {"cache_dir": cache_dir, "local_files_only": local_files_only, "token": token}
    path = resolve_checkpoint(path, revision=revision, **hub_kwargs)
    contents = read_contents(path)
    if contents.config is not None or dtype != "auto":  # an adapter's "auto" is its base's dtype (peft_adapter)
        dtype = resolve_dtype(dtype, contents.config or {})
    hf_kwargs: dict[str, Any] = {"dtype": dtype}
    if device_map is not None:
        hf_kwargs["device_map"] = device_map
    if max_memory is not None:
        hf_kwargs["max_memory"] = max_memory
    if offload_folder is not None:
        hf_kwargs["offload_folder"] = str(offload_folder)
    options = {"normalize_reward": normalize_reward, "base_model": base_model, "hub_kwargs": hub_kwargs}
    loaded = load_layout(contents, options, **hf_kwargs)
    if loaded.tokenizer is None:
        loaded.tokenizer = load_tokenizer(path)
    check_vocabulary(loaded.module, loaded.tokenizer, path)  # ids past the embedding: refused at load
    return loaded
