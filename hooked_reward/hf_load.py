"""A checkpoint's files, read through HF with every fault a clear `CheckpointError` and nothing filled at random.

Core, below `heads` and `loading` (both read checkpoints through it): config.json and other JSON (`read_json`,
`read_config`: invalid JSON, an unknown `model_type`), safetensors headers (`check_weight_files`: zero-byte,
truncated, corrupt, missing shards), HF's `from_pretrained` with its loading info read (`load_hf_model`: missing
weights and wrong shapes are errors, unused weights a warning), finite weights (`check_finite_weights`; the
backbone's at the first call of each module, `check_finite_on_first_use`), the
tokenizer (`load_tokenizer`), `dtype="auto"` (`resolve_dtype`), the tensors a checkpoint holds (`tensor_files`,
`read_tensors`: what layout recognisers and head loaders read without building the model) and in-memory PEFT models
(`check_not_peft`). Every message names the file or tensor and the fix.
"""

from __future__ import annotations

import json
import logging
import pickle
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from hooked_reward.errors import CheckpointError, UnsupportedArchitectureError

WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
GENERIC_TOKENIZER_CLASSES = ("TokenizersBackend", "PreTrainedTokenizerFast")


def read_config(path: Path) -> dict:
    """config.json of a checkpoint directory, with clear errors for a missing directory, file or weights, invalid
    JSON, and a `model_type` transformers does not know."""
    if not path.exists():
        raise CheckpointError(
            f"Checkpoint path {str(path)!r} does not exist (and is not of the Hub's `org/name` form, so it was not "
            "looked up there). Pass a directory saved with "
            "`save_pretrained` (config.json + weights), a Hugging Face Hub id (`org/name`), or load the HF model "
            "yourself and use `HookedRewardModel.from_hf_model(model, tokenizer=tok)`."
        )
    if not path.is_dir():
        raise CheckpointError(f"Checkpoint path {str(path)!r} is a file; pass its directory.")
    config_file = path / "config.json"
    if not config_file.exists():
        raise CheckpointError(
            f"No config.json in {str(path)!r}: not an HF checkpoint directory. "
            "Save the model with `model.save_pretrained(dir)`."
        )
    if not any((path / f).exists() for f in WEIGHT_FILES):
        raise CheckpointError(
            f"No weights in {str(path)!r} (looked for {', '.join(WEIGHT_FILES)}). "
            "The directory has a config but no model weights; re-save with `save_pretrained`."
        )
    config = read_json(config_file)
    if not isinstance(config, dict):
        raise CheckpointError(f"{config_file} holds a JSON {type(config).__name__}, not an object: {_REFETCH}")
    from transformers import CONFIG_MAPPING

    model_type = config.get("model_type")
    if model_type not in CONFIG_MAPPING:
        import transformers

        raise CheckpointError(
            f"{config_file}: model_type {model_type!r} is not a model type transformers {transformers.__version__} "
            "knows (hooked_reward never runs a checkpoint's own code). Upgrade transformers, or fix model_type to "
            "the architecture the weights are for (e.g. 'llama', 'qwen3', 'gemma2')."
        )
    return config


_REFETCH = "the file is corrupt or was cut short; download or save the checkpoint again."


def read_json(file: Path) -> Any:
    """A JSON file of a checkpoint, or `CheckpointError` naming the file and where it is invalid."""
    try:
        return json.loads(file.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as err:
        raise CheckpointError(f"{file} is not UTF-8 text: {_REFETCH}") from err
    except json.JSONDecodeError as err:
        what = (
            "empty" if not err.doc.strip() else f"not valid JSON ({err.msg} at line {err.lineno}, column {err.colno})"
        )
        raise CheckpointError(f"{file} is {what}: {_REFETCH}") from err


def check_weight_files(path: Path) -> None:
    """Check every safetensors file of the checkpoint before loading: present (the shard index's files too) and
    readable (a zero-byte, truncated or corrupt header raises `CheckpointError` naming the file). Only headers
    are read, so this costs milliseconds."""
    from safetensors import SafetensorError, safe_open

    files = sorted(path.glob("*.safetensors"))
    index = path / "model.safetensors.index.json"
    if index.exists():
        weight_map = read_json(index).get("weight_map")
        if not isinstance(weight_map, dict):
            raise CheckpointError(f"{index} has no 'weight_map' object: {_REFETCH}")
        shards = sorted(set(weight_map.values()))
        absent = [f for f in shards if not (path / f).exists()]
        if absent:
            raise CheckpointError(
                f"{index} lists shard(s) {absent} that are not in {str(path)!r}: the download is incomplete; "
                "download the checkpoint again."
            )
    for file in files:
        if file.stat().st_size == 0:
            raise CheckpointError(f"{file} is empty (0 bytes): {_REFETCH}")
        try:
            with safe_open(str(file), framework="pt"):
                pass
        except (SafetensorError, OSError) as err:
            raise CheckpointError(f"{file} is not a readable safetensors file ({err}): {_REFETCH}") from err


def tensor_files(path: Path) -> dict[str, Path]:
    """Every tensor name of the checkpoint in `path` and the file holding it: single or sharded safetensors (read
    from the headers and the index: milliseconds), else single or sharded PyTorch `.bin` (the index, or the file
    memory-mapped). Empty when the directory holds no model weights."""
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = path / index_name
        if index.exists():
            weight_map = read_json(index).get("weight_map")
            if not isinstance(weight_map, dict):
                raise CheckpointError(f"{index} has no 'weight_map' object: {_REFETCH}")
            return {name: path / file for name, file in weight_map.items()}
    single = path / "model.safetensors"
    if single.exists():
        from safetensors import safe_open

        with safe_open(str(single), framework="pt") as f:
            return dict.fromkeys(f.keys(), single)
    binary = path / "pytorch_model.bin"
    if binary.exists():
        return dict.fromkeys(_load_bin(binary), binary)
    return {}


def read_tensors(path: Path, names: list[str]) -> dict[str, torch.Tensor]:
    """The tensors `names` of the checkpoint in `path` (each read alone from its file; missing names are left out)."""
    from safetensors import safe_open

    where = tensor_files(path)
    out: dict[str, torch.Tensor] = {}
    by_file: dict[Path, list[str]] = {}
    for name in names:
        if name in where:
            by_file.setdefault(where[name], []).append(name)
    for file, wanted in by_file.items():
        if file.suffix == ".safetensors":
            with safe_open(str(file), framework="pt") as f:
                out.update({name: f.get_tensor(name) for name in wanted})
        else:
            state = _load_bin(file)
            out.update({name: state[name].clone() for name in wanted})
    return out


def _load_bin(file: Path) -> dict[str, torch.Tensor]:
    try:
        return torch.load(str(file), map_location="cpu", mmap=True, weights_only=True)
    except Exception as err:  # pickle errors, a truncated zip, tensors weights_only refuses
        raise CheckpointError(f"{file} is not a readable PyTorch weight file ({err}): {_REFETCH}") from err


def check_not_peft(module: nn.Module, constructor: str) -> None:
    """Refuse an in-memory `peft.PeftModel` (a LoRA or other adapter wrapping a model): its module tree is PEFT's,
    not the model's, and its reward is the merged model's. The message gives the one-line fix, `merge_and_unload()`
    (which folds the adapter into the base weights, in place)."""
    if not type(module).__module__.startswith("peft."):
        return
    base = getattr(getattr(module, "base_model", None), "model", None)
    raise UnsupportedArchitectureError(
        f"{constructor} got a PEFT {type(module).__name__} (an adapter over a {type(base).__name__}). Merge the "
        f"adapter into the model first: `{constructor}(model.merge_and_unload(), ...)` (folds the adapter weights into "
        "the base model in place; PEFT's forward and the merged model's agree). A saved adapter directory "
        "(adapter_config.json) loads directly with `HookedRewardModel.from_pretrained(adapter_dir)`."
    )


def load_tokenizer(path: Path) -> Any:
    """The checkpoint's tokenizer, or None when the directory ships none (token-id input still works).
    Invalid tokenizer files raise `CheckpointError` naming the file."""
    if not any((path / f).exists() for f in TOKENIZER_FILES):
        return None
    try:
        return _load_tokenizer(path)
    except Exception as err:  # tokenizers' Rust errors, JSONDecodeError, sentencepiece errors, ...
        for name in ("tokenizer_config.json", "tokenizer.json", "special_tokens_map.json", "vocab.json"):
            if (path / name).exists():
                read_json(path / name)  # names the file when it is not JSON
        raise CheckpointError(
            f"Could not load the tokenizer in {str(path)!r} ({type(err).__name__}: {err}). Its tokenizer files are "
            "corrupt or incomplete: download them again, or pass tokenizer= to from_pretrained."
        ) from err


def _load_tokenizer(path: Path) -> Any:
    from transformers import AutoTokenizer

    config_file = path / "tokenizer_config.json"
    declared = read_json(config_file).get("tokenizer_class") if config_file.exists() else None
    if declared in GENERIC_TOKENIZER_CLASSES and (path / "tokenizer.json").exists():
        # A generic fast tokenizer: AutoTokenizer (transformers 5) would substitute the class of the model type
        # (e.g. Qwen2Tokenizer) and rebuild its pre-tokenizer, changing the token ids.
        from transformers import PreTrainedTokenizerFast

        return PreTrainedTokenizerFast.from_pretrained(str(path))
    return AutoTokenizer.from_pretrained(str(path), trust_remote_code=False)


def resolve_dtype(dtype: torch.dtype | str, config: dict) -> torch.dtype:
    """A torch dtype from `dtype`: a torch dtype, its name ("bfloat16"), or "auto" (the checkpoint's
    `torch_dtype`/`dtype` in config.json, float32 when it names none), as HF's `dtype="auto"`."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        name = config.get("dtype") or config.get("torch_dtype") or "float32"
        dtype = str(name).removeprefix("torch.")
    resolved = getattr(torch, str(dtype), None) if isinstance(dtype, str) else None
    if not isinstance(resolved, torch.dtype) or not resolved.is_floating_point:
        raise CheckpointError(
            f"dtype {dtype!r} is not a floating-point torch dtype; use 'auto', 'float32', 'bfloat16' or 'float16'."
        )
    return resolved


def _no_load_report(record: logging.LogRecord) -> bool:
    """A logging filter dropping transformers' LOAD REPORT table (missing / unexpected / mismatched keys), which
    `load_hf_model` reads from the loading info and reports itself: an error for what would be random, one warning
    for unused weights, nothing for the head weights our own loader reads (ArmoRM's gating and regression layers)."""
    return "LOAD REPORT" not in str(record.msg)


def load_hf_model(
    auto_class: Any,
    path: Path,
    *,
    consumed: tuple[str, ...] = (),
    unused: tuple[str, ...] = (),
    **kwargs: Any,
) -> nn.Module:
    """`auto_class.from_pretrained(path, **kwargs)` (never remote code), refusing what HF would fill at random.

    HF's loading info is read: a weight of the model missing from the files raises `CheckpointError` naming the
    keys (HF would initialise it randomly and only log it); a weight whose shape differs raises one naming the key
    and both shapes; weights in the files the model does not use are listed in a warning. Keys starting with a
    prefix in `consumed` (read by our own head loader) are not reported as unused; missing keys starting with a
    prefix in `unused` (e.g. `lm_head.` for a value-head model, whose reward never reads it) are allowed.
    Finally every parameter is checked to be finite (`check_finite_weights`).
    """
    from safetensors import SafetensorError

    hf_logger = logging.getLogger("transformers.modeling_utils")
    hf_logger.addFilter(_no_load_report)  # its findings are read from `info` below and reported once, our way
    try:
        hf_model, info = auto_class.from_pretrained(
            str(path), output_loading_info=True, ignore_mismatched_sizes=True, trust_remote_code=False, **kwargs
        )
    except pickle.UnpicklingError as err:
        raise _pickle_refused(path) from err
    except (OSError, SafetensorError, RuntimeError, ValueError, KeyError, EOFError) as err:
        if isinstance(err, (CheckpointError, torch.OutOfMemoryError)):
            raise
        if "weights_only" in str(err) or isinstance(err.__cause__, pickle.UnpicklingError):
            raise _pickle_refused(path) from err
        raise CheckpointError(
            f"Could not load the weights in {str(path)!r} ({type(err).__name__}: {err}). If this is about the files, "
            "they are corrupt or do not fit config.json: download or save the checkpoint again; if it is about "
            "device_map / max_memory / dtype, fix those arguments."
        ) from err
    finally:
        hf_logger.removeFilter(_no_load_report)
    mismatched = sorted(info.get("mismatched_keys") or [], key=lambda m: m[0])
    if mismatched:
        shapes = "; ".join(
            f"{k}: {tuple(a)} in the file, {tuple(b)} expected from config.json" for k, a, b in mismatched
        )
        raise CheckpointError(
            f"{str(path)!r}: weight(s) of the wrong shape ({shapes}). config.json does not describe these weights "
            "(edited config, or weights of another model): fix config.json or download the checkpoint again."
        )
    missing = sorted(k for k in info.get("missing_keys") or [] if not k.startswith(unused))
    if missing:
        shown = ", ".join(missing[:20]) + (f" and {len(missing) - 20} more" if len(missing) > 20 else "")
        raise CheckpointError(
            f"{str(path)!r}: weight(s) {shown} are not in the checkpoint's files, so HF would fill them with random "
            f"values and every reward would be meaningless. The checkpoint is incomplete or is not a "
            f"{auto_class.__name__.removeprefix('Auto')} with this config: download it again, or save the complete "
            "model with `save_pretrained`."
        )
    unexpected = sorted(k for k in info.get("unexpected_keys") or [] if not k.startswith(consumed))
    if unexpected:
        shown = ", ".join(unexpected[:20]) + (f" and {len(unexpected) - 20} more" if len(unexpected) > 20 else "")
        warnings.warn(
            f"{str(path)!r}: the checkpoint has weight(s) the model does not use, ignored: {shown}.", stacklevel=3
        )
    check_finite_on_first_use(hf_model, path)
    return hf_model


def check_vocabulary(
    hf_model: nn.Module,
    tokenizer: Any,
    path: Path | str,
    fix: str = "The tokenizer files are not this model's (or were edited): restore the checkpoint's own ones.",
) -> None:
    """Raise `CheckpointError` when the tokenizer can produce ids the model has no embedding row for (its largest
    id is at least the embedding's row count): such a text would end in an `IndexError` deep inside the forward,
    or, on a GPU, a device-side assert. Checked at load, once. More rows than ids is normal (padded vocabularies)."""
    if tokenizer is None or not hasattr(tokenizer, "get_vocab"):
        return
    get_embeddings = getattr(hf_model, "get_input_embeddings", None)
    embed = get_embeddings() if callable(get_embeddings) else None
    rows = getattr(embed, "num_embeddings", None)
    vocab = tokenizer.get_vocab()
    if rows is None or not vocab:
        return
    largest = max(vocab.values())
    if largest >= rows:
        beyond = sorted((i, t) for t, i in vocab.items() if i >= rows)
        shown = ", ".join(f"{t!r} = {i}" for i, t in beyond[:5]) + (" ..." if len(beyond) > 5 else "")
        raise CheckpointError(
            f"{str(path)!r}: the tokenizer has ids up to {largest} but the model's embedding has {rows} rows "
            f"(config vocab_size), so {len(beyond)} token(s) ({shown}) have no embedding. {fix}"
        )


def _pickle_refused(path: Path) -> CheckpointError:
    """The error for a pickle weight file (`pytorch_model.bin`) that torch's safe loader refuses."""
    files = ", ".join(sorted(p.name for p in Path(path).glob("pytorch_model*.bin"))) or "its .bin weights"
    return CheckpointError(
        f"{str(path)!r}: {files} is a pickle holding more than tensors, which torch's safe loader refuses (loading "
        "it could run code from the file). Convert the checkpoint to safetensors (model.safetensors; the author or "
        "the Hub's safetensors conversion can provide one) and load that."
    )


def check_finite_on_first_use(hf_model: nn.Module, path: Path | str) -> None:
    """`check_finite_weights`, for the backbone's weights deferred to the first call of the module that owns them.

    HF's load of safetensors is lazy (the weights are memory-mapped; the first forward reads them), so checking
    every weight at load read the whole checkpoint (0.16 s of a 0.6 s load at Qwen3-0.6B in bfloat16, more in
    float32). Each backbone module (`hf_model.base_model`: embeddings, every layer's linears and norms, the final
    norm) now checks its own weights in a forward pre-hook that removes itself after its first call, when the
    forward reads them anyway; a non-finite weight raises the same `CheckpointError` there, before the module runs.
    Weights outside the backbone (the score head, an LM head) are checked now, as before."""
    backbone = getattr(hf_model, "base_model", hf_model)
    deferred: set[int] = set()
    prefixes = {id(module): name for name, module in hf_model.named_modules()}
    for module in backbone.modules():
        own = [(n, p) for n, p in module.named_parameters(recurse=False) if p.is_floating_point()]
        if not own:
            continue
        prefix = prefixes.get(id(module), "")
        named = [(f"{prefix}.{n}" if prefix else n, p) for n, p in own]
        deferred.update(id(p) for _, p in own)
        check = FirstUseCheck(named, path)
        check.handle = module.register_forward_pre_hook(check)
    _check_named([(n, p) for n, p in hf_model.named_parameters() if id(p) not in deferred], path)


class FirstUseCheck:
    """A forward pre-hook that checks its module's weights are finite, then removes itself (kept while the check
    fails, so every forward raises until the weights are fixed)."""

    def __init__(self, named: list[tuple[str, nn.Parameter]], path: Path | str) -> None:
        self.named, self.path = named, path
        self.handle: RemovableHandle | None = None

    def __call__(self, _module: nn.Module, _args: Any) -> None:
        _check_named(self.named, self.path)
        if self.handle is not None:
            self.handle.remove()
            self.handle = None


def check_finite_weights(module: nn.Module, path: Path | str) -> None:
    """Raise `CheckpointError` naming the first parameter holding NaN or ±Inf (corrupt tensor bytes, a diverged
    run). One reduction per tensor; parameters offloaded to disk (on the meta device) are not checked."""
    _check_named(list(module.named_parameters()), path)


def _check_named(named: list[tuple[str, nn.Parameter]], path: Path | str) -> None:
    for name, param in named:
        if param.device.type == "meta" or not param.is_floating_point():
            continue
        data = param.detach()
        # One sum in the tensor's own dtype (a float32-accumulating sum of a bf16 tensor is ~30x slower): NaN/Inf
        # make it non-finite; it overflows only for huge finite sums, and then the exact (slow) check decides.
        if torch.isfinite(data.sum()) or bool(torch.isfinite(data).all()):
            continue
        bad = int((~torch.isfinite(data)).sum())
        raise CheckpointError(
            f"{str(path)!r}: weight {name!r} {tuple(data.shape)} has {bad} non-finite value(s) (NaN or Inf): the "
            "weight file is corrupt or the model diverged in training; download or save the checkpoint again."
        )


def execution_device(module: nn.Module) -> torch.device:
    """Where `module`'s output is computed: the device of its last parameter that is not offloaded to disk (the
    meta device), i.e. where a head placed after it must live; CPU when every parameter is offloaded."""
    device = torch.device("cpu")
    for param in module.parameters():
        if param.device.type != "meta":
            device = param.device
    return device
