"""Provenance: what produced a result — the model (path or hub id, revision, weights hash), dtype and device, the
library and dependency versions, the settings, the seed, the pair count and a timestamp.

`model_fingerprint(source, revision)` identifies a checkpoint by its content, not its name: the SHA-256 of every
weight file (`*.safetensors`, `*.bin`, `*.pt`, `*.pth`, `*.gguf`), streamed once in full, and the SHA-256 of every
other file that can change a number (`files_sha256`: `config.json`, every tokenizer file, the chat template, head
files such as ArmoRM's or a value head's, anything else in the folder but documentation). The full digest of each
weight file is cached (in `$HOOKED_REWARD_CACHE` or `~/.cache/hooked_reward/weight_hashes.json`) under a content
identity, never under the modification time alone: the file's path, size and mtime plus the SHA-256 of its
safetensors header (tensor names, shapes, offsets) and of 32 blocks sampled evenly through it. Another model's file
copied over it with its mtime kept (`cp -p`, `rsync -a`) has other sampled bytes, so it is hashed in full again;
an unseen identity is always hashed in full.

`provenance(...)` is the flat dict carried by every store record and every `report.json` (and shown at the end of
each HTML report).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hooked_reward.model import HookedRewardModel

__all__ = [
    "WEIGHT_SUFFIXES",
    "dependency_versions",
    "model_fingerprint",
    "merge_provenance",
    "model_runtime",
    "content_identity",
    "input_files_sha256",
    "provenance",
    "weights_sha256",
]

#: File suffixes hashed as weights (configs and tokenizers are not weights; they are in the settings' hash).
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
#: The packages whose versions can change a number (recorded in every record).
DEPENDENCIES = ("torch", "transformers", "transformer-lens", "numpy", "scipy", "scikit-learn", "safetensors")
_CHUNK = 1 << 22  # 4 MiB reads


def _cache_path() -> Path:
    root = os.environ.get("HOOKED_REWARD_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "hooked_reward")
    return Path(root) / "weight_hashes.json"


def _read_cache() -> dict[str, str]:
    try:
        return json.loads(_cache_path().read_text())
    except (OSError, ValueError):
        return {}


def _write_cache(cache: dict[str, str]) -> None:
    path = _cache_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache, indent=0, sort_keys=True))
        os.replace(tmp, path)
    except OSError:  # a read-only home: hash again next time, never fail a run for a cache
        pass


#: Files in a checkpoint folder that cannot change a number (documentation, VCS and OS files).
_NOT_INPUTS = (".md", ".rst", ".png", ".jpg", ".jpeg", ".gif", ".svg", ".pdf")
_NOT_INPUT_NAMES = ("LICENSE", "LICENCE", "NOTICE", "README", ".gitattributes", ".gitignore", ".DS_Store")
_SAMPLES, _SAMPLE_BYTES = 32, 4096


def content_identity(path: Path) -> str:
    """A cheap identity of a weight file's content: path, size, mtime (ns), the SHA-256 of its safetensors header
    (the whole header for `.safetensors`; the first 64 KiB otherwise) and of `_SAMPLES` blocks of `_SAMPLE_BYTES`
    sampled evenly through the file (the last block included). Reads about 200 KiB whatever the file's size."""
    st = path.stat()
    size = st.st_size
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        head = f.read(8)
        if path.suffix == ".safetensors" and len(head) == 8:
            n = int.from_bytes(head, "little")
            digest.update(head + f.read(min(n, 100 << 20)))
        else:
            digest.update(head + f.read(65536 - 8))
        header = digest.hexdigest()
        sampled = hashlib.sha256()
        for i in range(_SAMPLES):
            f.seek(max(0, (size - _SAMPLE_BYTES) * i // max(1, _SAMPLES - 1)))
            sampled.update(f.read(_SAMPLE_BYTES))
    return f"{path}|{size}|{st.st_mtime_ns}|{header}|{sampled.hexdigest()}"


def input_files_sha256(directory: str | Path) -> tuple[str, list[str]]:
    """The SHA-256 over every file of a checkpoint folder that is not a weight file or documentation (config,
    tokenizer files, chat template, head files, generation config, ...): `name:digest` lines, sorted by name,
    hashed together; and the files' relative names. These are small, so they are hashed in full every time."""
    root = Path(directory).resolve()
    lines = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if not path.is_file() or any(part.startswith(".") for part in rel.parts[:-1]) or ".git" in rel.parts:
            continue
        name = path.name
        if name.endswith(WEIGHT_SUFFIXES) or name.endswith(_NOT_INPUTS) or name.startswith(_NOT_INPUT_NAMES):
            continue
        lines.append(f"{rel.as_posix()}:{_file_sha256(path)}")
    combined = hashlib.sha256("\n".join(lines).encode()).hexdigest()
    return combined, [line.rsplit(":", 1)[0] for line in lines]


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def weights_sha256(directory: str | Path, *, use_cache: bool = True) -> tuple[str, list[str]]:
    """The SHA-256 over every weight file in `directory` (sorted by relative name; each file's full contents
    hashed, then `name:digest` lines hashed together), and the files' relative names.

    Per-file digests are cached by `content_identity` (path, size, mtime and sampled content: a `cp -p` of
    another model's file over this one is hashed again). Raises FileNotFoundError for a folder without weight files.
    """
    root = Path(directory).resolve()
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))
    if not files:
        raise FileNotFoundError(f"No weight files ({', '.join(WEIGHT_SUFFIXES)}) under {str(root)!r}.")
    cache = _read_cache() if use_cache else {}
    changed = False
    lines = []
    for path in files:
        cache_key = content_identity(path)
        digest = cache.get(cache_key)
        if digest is None:
            digest = _file_sha256(path)
            cache[cache_key] = digest
            changed = True
        lines.append(f"{path.relative_to(root).as_posix()}:{digest}")
    if use_cache and changed:
        _write_cache(cache)
    combined = hashlib.sha256("\n".join(lines).encode()).hexdigest()
    return combined, [line.split(":")[0] for line in lines]


def _hub_snapshot(repo_id: str, revision: str | None) -> tuple[Path | None, str | None]:
    """The local snapshot folder and commit of a hub id already in the HF cache (nothing is downloaded)."""
    try:
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(repo_id, revision=revision, local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached, not a repo id, or no huggingface_hub: no local files to hash
        return None, revision
    return folder, folder.name  # snapshots/<commit sha>


def model_fingerprint(source: str | Path, revision: str | None = None) -> dict[str, Any]:
    """Identify a checkpoint: `{"model": path or hub id, "revision", "weights_sha256", "weight_files",
    "files_sha256", "input_files"}` (`files_sha256`: config, tokenizer, chat template, head files; see
    `input_files_sha256`).

    A local folder is hashed in place (its revision is the one given, or None). A hub id is looked up in the local
    HF cache (never downloaded): its revision becomes the snapshot's commit, and the snapshot's weights are hashed.
    A hub id that is not cached gets `weights_sha256: None` (the key then rests on the id and revision alone).
    """
    path = Path(source).expanduser()
    if path.is_dir():
        digest, files = weights_sha256(path)
        inputs, names = input_files_sha256(path)
        return {
            "model": str(path.resolve()),
            "revision": revision,
            "weights_sha256": digest,
            "weight_files": files,
            "files_sha256": inputs,
            "input_files": names,
        }
    folder, commit = _hub_snapshot(str(source), revision)
    if folder is None:
        return {"model": str(source), "revision": revision, "weights_sha256": None, "weight_files": []}
    digest, files = weights_sha256(folder)
    inputs, names = input_files_sha256(folder)
    return {
        "model": str(source),
        "revision": commit,
        "weights_sha256": digest,
        "weight_files": files,
        "files_sha256": inputs,
        "input_files": names,
    }


def model_runtime(model: HookedRewardModel) -> dict[str, str]:
    """The dtype and device the model's weights are on (the first parameter's), and whether its attention runs
    fused where it can (`set_fused_attention`: the fused and explicit paths agree to ~1e-7, not bitwise)."""
    param = next(model.parameters())
    fused = [
        bool(getattr(block.attn, "_fused_attention_enabled", False))
        for block in getattr(model, "blocks", [])
        if hasattr(block, "attn")
    ]
    return {
        "dtype": str(param.dtype).removeprefix("torch."),
        "device": str(param.device),
        "fused_attention": "on" if any(fused) else "off",
    }


def dependency_versions() -> dict[str, str]:
    """Versions of hooked_reward, Python and the packages that can change a number (None if not installed)."""
    import hooked_reward

    versions: dict[str, str] = {"hooked_reward": hooked_reward.__version__, "python": platform.python_version()}
    for name in DEPENDENCIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    try:
        import torch

        if torch.cuda.is_available():
            versions["cuda"] = str(torch.version.cuda)
    except ImportError:  # pragma: no cover
        pass
    return versions


def provenance(
    *,
    command: str,
    fingerprint: dict[str, Any],
    runtime: dict[str, str],
    settings: dict[str, Any],
    seed: int | None,
    n_pairs: int | None,
    world_size: int = 1,
) -> dict[str, Any]:
    """The provenance dict of a study: model, revision, weights hash, dtype, device, versions, settings, seed,
    pair count, the number of processes, the command line and a UTC timestamp (ISO 8601)."""
    return {
        "command": command,
        "model": fingerprint["model"],
        "revision": fingerprint.get("revision"),
        "weights_sha256": fingerprint.get("weights_sha256"),
        "files_sha256": fingerprint.get("files_sha256"),
        "dtype": runtime.get("dtype"),
        "device": runtime.get("device"),
        "versions": dependency_versions(),
        "settings": settings,
        "seed": seed,
        "n_pairs": n_pairs,
        "world_size": world_size,
        "argv": list(sys.argv),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def merge_provenance(base: dict[str, Any], study: dict[str, Any]) -> dict[str, Any]:
    """A report's provenance: `base` (the CLI's: command line, model as named, versions, time) with the study's
    (model files, revision, weights hash, dtype, device, settings, seed, pair count, processes, store)."""
    merged = dict(base)
    skip = {"command", "argv", "model"}
    # each fact once: the study's dtype and device, and its versions, replace the CLI's shorter rows of them
    if "dtype" in study and "device" in study:
        merged.pop("dtype, device", None)
    if isinstance(study.get("versions"), dict):
        for name in study["versions"]:
            merged.pop(name, None)
    merged["model files"] = study.get("model")
    merged.update({k: v for k, v in study.items() if k not in skip})
    return merged
