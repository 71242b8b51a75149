"""A Hugging Face Hub cache, laid out as huggingface_hub writes it, built from a local checkpoint (no network)."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path


def add_to_hub_cache(
    hub_dir: Path, repo_id: str, checkpoint: Path, commit: str = "0" * 39 + "1", ref: str = "main"
) -> Path:
    """Put `checkpoint`'s files into `hub_dir` as revision `commit` of model repository `repo_id`:
    `models--org--name/blobs/<sha256>`, `snapshots/<commit>/<file>` (relative symlinks to the blobs) and
    `refs/<ref>` holding the commit hash. Returns the snapshot folder."""
    repo = hub_dir / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    for file in sorted(checkpoint.rglob("*")):
        if not file.is_file():
            continue
        digest = hashlib.sha256(file.read_bytes()).hexdigest()
        blob = repo / "blobs" / digest
        if not blob.exists():
            shutil.copyfile(file, blob)
        link = snapshot / file.relative_to(checkpoint)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs" / ref).write_text(commit)
    return snapshot
