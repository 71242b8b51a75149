"""PEFT adapters (LoRA and the other PEFT methods) over a reward model, loaded by merging them into their base.

A directory holding `adapter_config.json` (what `PeftModel.save_pretrained` writes: the adapter's weights in
`adapter_model.safetensors`, the base model named by `base_model_name_or_path`) is loaded in three steps:

1. the base model (a local directory or a hub id; `base_model=` when the recorded path does not exist here) is
   loaded in its own layout (any registered one: HF `*ForSequenceClassification`, OpenRLHF, TRL value head...).
   An adapter trained for sequence classification (`task_type: "SEQ_CLS"`, TRL's `RewardTrainer` with a
   `peft_config`) over a plain causal LM base saves its new `score` head in the adapter (`modules_to_save`): the
   base is then built as a `*ForSequenceClassification` whose `score` comes from the adapter (refused when the
   adapter does not hold it, rather than left random);
2. PEFT loads the adapter onto it (`PeftModel.from_pretrained`);
3. `merge_and_unload()` folds the adapter into the base weights, and the merged model is bridged as usual: its
   rewards equal PEFT's own forward (tested to 1e-5), and every hook and analysis sees the merged weights.

PEFT is an optional dependency (`pip install "hooked_reward[peft]"`); without it an adapter directory raises an
`ImportError` saying so. An in-memory `PeftModel` passed to `from_hf_model` / `from_value_head` is refused with the
`merge_and_unload()` fix (`hf_load.check_not_peft`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from hooked_reward.errors import CheckpointError, UnsupportedArchitectureError
from hooked_reward.heads import from_sequence_classifier
from hooked_reward.hf_load import check_finite_weights, load_hf_model, load_tokenizer, read_json, resolve_dtype
from hooked_reward.registry import (
    ADAPTER_CONFIG,
    CheckpointContents,
    LoadedCheckpoint,
    causal_lm_architecture,
    find_layout,
    load_layout,
    read_contents,
    register_layout,
)

LAYOUT = "peft_adapter"
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
PEFT_PREFIX = "base_model.model."


def _is_adapter(contents: CheckpointContents) -> bool:
    return contents.has_file(ADAPTER_CONFIG)


def import_peft() -> Any:
    """The `peft` package, or an `ImportError` saying exactly what to install."""
    try:
        import peft
    except ImportError as err:
        raise ImportError(
            "This checkpoint is a PEFT adapter (adapter_config.json); loading it merges the adapter into its base "
            'model with the `peft` package, which is not installed: `pip install "hooked_reward[peft]"` (or '
            "`pip install peft`)."
        ) from err
    return peft


@register_layout(
    LAYOUT,
    "adapter_config.json (a PEFT/LoRA adapter): its base model loaded in its own layout, the adapter merged in",
    _is_adapter,
    priority=10,
    options=("normalize_reward", "base_model", "hub_kwargs"),
)
def load_peft_adapter(
    path: Path,
    dtype: torch.dtype | str = torch.float32,
    normalize_reward: bool | None = None,
    base_model: str | Path | None = None,
    hub_kwargs: dict[str, Any] | None = None,
    **hf_kwargs: Any,
) -> LoadedCheckpoint:
    """The adapter in `path` merged into its base model (see the module docstring)."""
    peft = import_peft()
    adapter_config = read_json(path / ADAPTER_CONFIG)
    if not isinstance(adapter_config, dict):
        raise CheckpointError(f"{path / ADAPTER_CONFIG} holds no JSON object: save the adapter again.")
    weights = [path / name for name in ADAPTER_WEIGHTS if (path / name).exists()]
    if not weights:
        raise CheckpointError(
            f"{str(path)!r} has adapter_config.json but no adapter weights ({' or '.join(ADAPTER_WEIGHTS)}): the "
            "adapter was not saved completely; save it again with `model.save_pretrained(dir)`."
        )
    saved = _saved_modules(weights[0], adapter_config)
    base_path = _resolve_base(path, adapter_config, base_model, hub_kwargs or {})
    base = read_contents(base_path)
    dtype = resolve_dtype(dtype, base.config or {})  # "auto": the base model's dtype
    try:
        find_layout(base)
        base_is_reward_model = True
    except UnsupportedArchitectureError:
        base_is_reward_model = False
    if base_is_reward_model:
        options = {"normalize_reward": normalize_reward, "hub_kwargs": hub_kwargs}
        loaded = load_layout(base, options, dtype=dtype, **hf_kwargs)
    elif adapter_config.get("task_type") == "SEQ_CLS" and "score" in saved:
        loaded = _classifier_over_lm(base_path, saved["score"], dtype, hf_kwargs)
    else:
        raise UnsupportedArchitectureError(
            f"{str(path)!r} is a PEFT adapter over {str(base_path)!r}, which is not a reward model "
            f"(architectures {base.architectures}), and the adapter saves no classifier head (task_type "
            f"{adapter_config.get('task_type')!r}, saved modules {sorted(saved) or 'none'}): there is no reward head "
            "to read. Point base_model= at the reward model the adapter was trained on."
        )
    peft_model = peft.PeftModel.from_pretrained(loaded.module, str(path), is_trainable=False)
    merged = peft_model.merge_and_unload()
    merged.eval()
    check_finite_weights(merged, path)
    loaded.module = merged
    loaded.tokenizer = load_tokenizer(path) or loaded.tokenizer or load_tokenizer(base_path)
    loaded.layout = f"{LAYOUT} over {loaded.layout}"
    return loaded


def _saved_modules(weights: Path, adapter_config: dict) -> dict[str, dict[str, tuple[int, ...]]]:
    """The modules the adapter saves whole (`modules_to_save`, e.g. a new `score` head): their name -> each saved
    tensor's name (without PEFT's `base_model.model.` prefix) and shape."""
    if weights.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(weights), framework="pt") as f:
                shapes = {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}  # noqa: SIM118
        except (SafetensorError, OSError) as err:
            raise CheckpointError(
                f"{weights} is not a readable safetensors file ({err}): save the adapter again."
            ) from err
    else:
        try:
            state = torch.load(str(weights), map_location="cpu", mmap=True, weights_only=True)
        except Exception as err:  # pickle errors, a truncated zip
            raise CheckpointError(f"{weights} is not a readable PyTorch file ({err}): save the adapter again.") from err
        shapes = {key: tuple(t.shape) for key, t in state.items()}
    wanted = set(adapter_config.get("modules_to_save") or [])
    saved: dict[str, dict[str, tuple[int, ...]]] = {}
    for key, shape in shapes.items():
        name = key.removeprefix(PEFT_PREFIX)
        leaf = name.rsplit(".", 1)[0].rsplit(".", 1)[-1]
        if leaf in wanted:
            saved.setdefault(leaf, {})[name] = shape
    return saved


def _resolve_base(path: Path, adapter_config: dict, base_model: str | Path | None, hub_kwargs: dict) -> Path:
    from hooked_reward.hub import resolve_checkpoint

    recorded = adapter_config.get("base_model_name_or_path")
    reference = base_model if base_model is not None else recorded
    if not reference:
        raise CheckpointError(
            f"{path / ADAPTER_CONFIG} names no base model (base_model_name_or_path): pass base_model= (the "
            "directory or hub id of the model the adapter was trained on)."
        )
    revision = adapter_config.get("revision") if base_model is None else None
    hint = "Pass base_model= (the directory or hub id of the model the adapter was trained on)."
    try:
        base = resolve_checkpoint(reference, revision=revision, **hub_kwargs)
    except CheckpointError as err:
        raise CheckpointError(
            f"The adapter in {str(path)!r} is over base model {str(reference)!r}, which could not be found ({err}). "
            + hint
        ) from err
    if not base.is_dir():
        raise CheckpointError(
            f"The adapter in {str(path)!r} is over base model {str(reference)!r}, which is not a directory here "
            f"(adapter_config.json's base_model_name_or_path is where it was trained). {hint}"
        )
    return base


def _classifier_over_lm(
    base_path: Path, head: dict[str, tuple[int, ...]], dtype: torch.dtype, hf_kwargs: dict[str, Any]
) -> LoadedCheckpoint:
    """A `*ForSequenceClassification` over a causal LM base whose `score` (absent from the base's files) the adapter
    fills with its saved copy: `num_labels` from that copy's shape; nothing else may be missing."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    if "score.weight" not in head:
        raise CheckpointError(f"The adapter saves score tensors {sorted(head)} but no score.weight: save it again.")
    hf_config = AutoConfig.from_pretrained(str(base_path), trust_remote_code=False)
    hf_config.num_labels = head["score.weight"][0]
    arch = causal_lm_architecture(hf_config)
    hf_model = load_hf_model(
        AutoModelForSequenceClassification,
        base_path,
        unused=("score.",),
        consumed=("lm_head.",),
        config=hf_config,
        dtype=dtype,
        **hf_kwargs,
    )
    score: nn.Module = hf_model.score  # type: ignore[assignment]
    unfilled = sorted(f"score.{name}" for name, _ in score.named_parameters() if f"score.{name}" not in head)
    if unfilled:
        raise CheckpointError(
            f"The adapter's saved classifier head has no {unfilled}, and the base {str(base_path)!r} has none either: "
            "they would be left random. Save the adapter with the complete head (modules_to_save)."
        )
    return from_sequence_classifier(hf_model, None, arch)
