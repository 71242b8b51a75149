"""Provenance: what produced a result — the model (path or hub id, revision, weights hash), dtype and device, the
library and dependency versions, the settings, the seed, the pair count and a timestamp.

`model_fingerprint(source, revision)` identifies a checkpoint by its weights, not its name: the SHA-256 of every
weight file (`*.safetensors`, `*.bin`, `*.pt`, `*.pth`, `*.gguf`), streamed once in full. The digest of each file is
cached (in `$HOOKED_REWARD_CACHE` or `~/.cache/hooked_reward/weight_hashes.json`, keyed by the file's absolute path,
size and modification time in nanoseconds), so a study resumed on an unchanged checkpoint does not read its
weights twice; a file rewritten in place changes its mtime and is hashed again.

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


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def weights_sha256(directory: str | Path, *, use_cache: bool = True) -> tuple[str, list[str]]:
    """The SHA-256 over every weight file in `directory` (sorted by relative name; each file's full contents
    hashed, then `name:digest` lines hashed together), and the files' relative names.

    Per-file digests are cached by (absolute path, size, mtime_ns). Raises FileNotFoundError for a folder without
    weight files.
    """
    root = Path(directory).resolve()
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))
    if not files:
        raise FileNotFoundError(f"No weight files ({', '.join(WEIGHT_SUFFIXES)}) under {str(root)!r}.")
    cache = _read_cache() if use_cache else {}
    changed = False
    lines = []
    for path in files:
        st = path.stat()
        cache_key = f"{path}|{st.st_size}|{st.st_mtime_ns}"
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
    """Identify a checkpoint: `{"model": path or hub id, "revision", "weights_sha256", "weight_files"}`.

    A local folder is hashed in place (its revision is the one given, or None). A hub id is looked up in the local
    HF cache (never downloaded): its revision becomes the snapshot's commit, and the snapshot's weights are hashed.
    A hub id that is not cached gets `weights_sha256: None` (the key then rests on the id and revision alone).
    """
    path = Path(source).expanduser()
    if path.is_dir():
        digest, files = weights_sha256(path)
        return {"model": str(path.resolve()), "revision": revision, "weights_sha256": digest, "weight_files": files}
    folder, commit = _hub_snapshot(str(source), revision)
    if folder is None:
        return {"model": str(source), "revision": revision, "weights_sha256": None, "weight_files": []}
    digest, files = weights_sha256(folder)
    return {"model": str(source), "revision": commit, "weights_sha256": digest, "weight_files": files}


def model_runtime(model: HookedRewardModel) -> dict[str, str]:
    """The dtype and device the model's weights are on (the first parameter's)."""
    param = next(model.parameters())
    return {"dtype": str(param.dtype).removeprefix("torch."), "device": str(param.device)}


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
    merged["model files"] = study.get("model")
    merged.update({k: v for k, v in study.items() if k not in skip})
    return merged
