"""Where a checkpoint's files are: a local directory, or a Hugging Face Hub id resolved to its local snapshot.

`resolve_checkpoint("org/name")` downloads (or, offline, finds in the cache) the files a reward model needs —
config, weights, tokenizer, chat template — with `huggingface_hub.snapshot_download`, exactly where and how
`transformers.from_pretrained` would (`revision`, `cache_dir`, `local_files_only`, `token`; `HF_HOME`,
`HF_HUB_CACHE`, `HF_HUB_OFFLINE` and `HF_TOKEN` are honoured by huggingface_hub itself). Everything after that
reads the snapshot directory, so hub ids and local folders load through the same code. Nothing in the repository
is ever executed: `*.py` files are not even downloaded.
"""

from __future__ import annotations

from pathlib import Path

from hooked_reward.errors import CheckpointError

# What a reward checkpoint needs: config and tokenizer JSON, safetensors weights, sentencepiece/tiktoken vocabularies,
# chat templates. PyTorch .bin weights are fetched only when a repository has no safetensors.
CHECKPOINT_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.tiktoken", "*.txt", "*.jinja"]
BIN_PATTERNS = ["pytorch_model*.bin", "adapter_model.bin"]


def looks_like_hub_id(name: str) -> bool:
    """Whether `name` can be a hub repository id (`name` or `org/name`) rather than a local path."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if name.startswith((".", "/", "~")) or "\\" in name or name.count("/") > 1:
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def resolve_checkpoint(
    path_or_id: str | Path,
    *,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    local_files_only: bool = False,
    token: str | bool | None = None,
) -> Path:
    """The local directory holding the checkpoint `path_or_id`: the path itself when it exists, else the hub
    snapshot of the repository id (downloaded, or found in the cache when offline). Raises `CheckpointError`
    saying what was tried and how to fix it.

    A name that does not exist locally is tried on the Hub only when it is clearly a repository id: `org/name`
    (or `name`) with the Hub's characters, not starting with `.`, `/` or `~`, and whose `org` is not a local
    folder (`runs/model-3` with a `./runs` folder is a mistyped path: an error naming what `./runs` holds,
    never a download of someone's `runs/model-3`)."""
    path = Path(path_or_id).expanduser()
    if not path.exists() and not isinstance(path_or_id, Path) and looks_like_hub_id(str(path_or_id)):
        head = str(path_or_id).split("/")[0]
        if "/" in str(path_or_id) and Path(head).is_dir():
            raise CheckpointError(
                f"{str(path_or_id)!r} does not exist: ./{head} is a local folder but has no "
                f"{str(path_or_id).split('/', 1)[1]!r} in it, so this is read as a local path, not tried as a Hub id. "
                f"Check the path (folders in ./{head}: "
                f"{', '.join(sorted(p.name for p in Path(head).iterdir() if p.is_dir())[:8]) or 'none'})."
            )
    if path.exists() or isinstance(path_or_id, Path) or not looks_like_hub_id(str(path_or_id)):
        if revision is not None:
            raise CheckpointError(
                f"revision={revision!r} applies to hub ids, but {str(path_or_id)!r} is a local path. Check out that "
                "revision yourself, or pass the hub id."
            )
        return path
    return _snapshot(str(path_or_id), revision, cache_dir, local_files_only, token)


def _snapshot(
    repo_id: str, revision: str | None, cache_dir: str | Path | None, local_files_only: bool, token: str | bool | None
) -> Path:
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    offline = local_files_only or constants.HF_HUB_OFFLINE
    where = f"the hub cache ({cache_dir or constants.HF_HUB_CACHE})"

    def download(patterns: list[str]) -> Path:
        """The snapshot folder holding the files of `repo_id` that match `patterns`."""
        return Path(
            snapshot_download(
                repo_id,
                allow_patterns=patterns,
                revision=revision,
                cache_dir=cache_dir,
                local_files_only=offline,
                token=token,
            )
        )

    try:
        folder = download(CHECKPOINT_PATTERNS)
        if not any(folder.glob("*.safetensors")) and not (folder / "model.safetensors.index.json").exists():
            folder = download(CHECKPOINT_PATTERNS + BIN_PATTERNS)
    except GatedRepoError as err:
        raise CheckpointError(
            f"{repo_id!r} is a gated repository: accept its terms on huggingface.co and log in "
            "(`hf auth login`, or HF_TOKEN / token=)."
        ) from err
    except RepositoryNotFoundError as err:
        raise CheckpointError(
            f"{repo_id!r} is neither a local directory nor a repository on the Hugging Face Hub (or it is private: "
            "log in with `hf auth login`, or pass token=). Check the spelling, or pass the checkpoint's folder."
        ) from err
    except RevisionNotFoundError as err:
        raise CheckpointError(f"{repo_id!r} has no revision {revision!r} (a branch, tag or commit hash).") from err
    except LocalEntryNotFoundError as err:
        reason = "offline (HF_HUB_OFFLINE=1 or local_files_only=True)" if offline else "the hub could not be reached"
        raise CheckpointError(
            f"{repo_id!r}{f' (revision {revision!r})' if revision else ''} is not a local directory and is not in "
            f"{where}, and "
            f"{reason}. Download it once online (`hf download {repo_id}`), pass cache_dir= where it is cached, "
            "or pass the checkpoint's folder."
        ) from err
    except HfHubHTTPError as err:
        raise CheckpointError(f"Could not download {repo_id!r} from the Hugging Face Hub: {err}") from err
    except OSError as err:  # a snapshot in the cache with files missing, a cache folder we cannot write
        raise CheckpointError(f"Could not read {repo_id!r} from {where}: {err}") from err
    return folder
