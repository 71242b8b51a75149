"""The results store: an append-only JSONL file of finished units of work (a pair, a factor, a site), one record
per line, written and fsynced as soon as each unit is done, so that a study can be interrupted and resumed.

Layout, beside the report folder (the report folder itself is replaced atomically by each report, so the store
lives next to it, not in it):

    OUT/                               the report (index.html, report.json, PNGs)
    OUT.store/
        COMMAND-KEY16/                 one study: the command, model(s), settings and library version (hashed)
            study.json                 what the key was computed from (readable), and the study's provenance
            rank-00000.jsonl           records appended by the process of rank 0 (the only one without torchrun)
            rank-00001.jsonl           ... one file per rank, each with a single writer
            records.jsonl              the merged view: one record per unit, in the study's unit order

A record is one JSON object: `key` (SHA-256 of the study key, the unit's id and its input — e.g. the rendered
pair), `study`, `command`, `unit` (id, index and labels such as the mechanism), `result` (the unit's numbers,
encoded by `encode`; tensors keep their dtype and every float round-trips exactly), `provenance` (model, revision,
weights hash, dtype, device, versions, settings, seed, pair count, rank and world size, `finished` timestamp) and
`elapsed_s`, and `checksum`: the SHA-256 of the record's canonical JSON without it (`record_checksum`). A record
whose checksum does not match (edited by hand, or rotted on disk) is never used: `ResultsStore.load` lists it in
`damaged` by file and line, and the study computes that unit again. A process killed mid-write leaves a torn last
line: `read_records` stops at the last complete record and `RecordWriter` cuts the torn tail before appending.

Read a store with pandas: `pandas.read_json(".../records.jsonl", lines=True)` or `hooked_reward.study.store.
to_frame(path)` (one row per record, the unit's fields and the result's scalar fields as columns).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import importlib
import json
import math
import os
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import fields, is_dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hooked_reward.errors import InputError

__all__ = [
    "STORE_SUFFIX",
    "RecordWriter",
    "ResultsStore",
    "canonical_json",
    "decode",
    "encode",
    "hash_of",
    "read_records",
    "record_checksum",
    "store_root",
    "to_frame",
]

STORE_SUFFIX = ".store"
#: Tensors and arrays with more elements than this are stored as base64 of their raw bytes (exact, 4/3 byte per
#: byte) instead of readable JSON lists (about 20 bytes per float).
INLINE_MAX = 256
MERGED = "records.jsonl"


# ---------------------------------------------------------------------------------------------------- codec
def encode(value: Any) -> Any:
    """A JSON-ready form of a unit's result that `decode` turns back into equal objects, bit for bit.

    Tensors become `{"__tensor__": nested list, "dtype"}` (shape kept by the nesting; an empty or 0-d tensor
    also records `shape`), numpy arrays `{"__ndarray__": ..., "dtype", "shape"}`; above `INLINE_MAX` elements
    `{"__tensor_b64__" | "__ndarray_b64__": base64 of the raw bytes, "dtype", "shape"}` (little-endian);
    non-finite floats `{"__float__": "nan"}`, tuples `{"__tuple__": [...]}`, bytes (e.g. a PNG)
    `{"__bytes__": base64}`, component labels (`names.Component`) `{"__component__": [kind, layer, index]}`, and
    dataclasses of this package (analysis results) `{"__dataclass__": "module:Class", "fields": {...}}`. Python
    floats are written with `repr`, which round-trips float64 (and so float32 and bfloat16) exactly.
    """
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu()
        dtype = str(t.dtype).removeprefix("torch.")
        if t.numel() > INLINE_MAX:
            return {
                "__tensor_b64__": _b64(t.contiguous().view(torch.uint8).numpy()),
                "dtype": dtype,
                "shape": list(t.shape),
            }
        out: dict[str, Any] = {"__tensor__": _finite(t.tolist()), "dtype": dtype}
        if t.ndim == 0 or t.numel() == 0:
            out["shape"] = list(t.shape)
        return out
    if isinstance(value, np.ndarray):
        if value.size > INLINE_MAX:
            return {
                "__ndarray_b64__": _b64(np.ascontiguousarray(value)),
                "dtype": str(value.dtype),
                "shape": list(value.shape),
            }
        return {"__ndarray__": _finite(value.tolist()), "dtype": str(value.dtype), "shape": list(value.shape)}
    if isinstance(value, np.generic):
        return encode(value.item())
    if isinstance(value, float):
        return value if math.isfinite(value) else {"__float__": repr(value)}
    if isinstance(value, str) and type(value) is not str:
        from hooked_reward.names import Component

        if isinstance(value, Component):  # a label that knows its kind, layer and index
            return {"__component__": [value.kind, value.layer, value.index]}
        return str(value)
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, bytes):
        return {"__bytes__": base64.b64encode(value).decode("ascii")}
    if isinstance(value, dict):
        return {str(k): encode(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return {"__tuple__": [encode(v) for v in value]}
    if isinstance(value, list):
        return [encode(v) for v in value]
    if is_dataclass(value) and not isinstance(value, type):
        cls = type(value)
        if not cls.__module__.startswith("hooked_reward."):
            raise TypeError(f"Cannot store a {cls.__module__}.{cls.__qualname__}: only hooked_reward's results.")
        return {
            "__dataclass__": f"{cls.__module__}:{cls.__qualname__}",
            "fields": {f.name: encode(getattr(value, f.name)) for f in fields(value) if f.init},
        }
    raise TypeError(f"Cannot store a value of type {type(value).__name__} in a record: {value!r:.80}")


def _b64(array: np.ndarray) -> str:
    return base64.b64encode(array.tobytes()).decode("ascii")


def _finite(x: Any) -> Any:
    """Non-finite floats inside a tolist() as tagged strings (JSON has no NaN)."""
    if isinstance(x, float):
        return x if math.isfinite(x) else {"__float__": repr(x)}
    if isinstance(x, list):
        return [_finite(v) for v in x]
    return x


def _unfinite(x: Any) -> Any:
    if isinstance(x, dict) and "__float__" in x:
        return float(x["__float__"])
    if isinstance(x, list):
        return [_unfinite(v) for v in x]
    return x


def decode(value: Any) -> Any:
    """The inverse of `encode`."""
    if isinstance(value, list):
        return [decode(v) for v in value]
    if not isinstance(value, dict):
        return value
    if "__tensor__" in value:
        dtype = getattr(torch, value["dtype"])
        data = _unfinite(value["__tensor__"])
        t = torch.tensor(data, dtype=dtype)
        return t.reshape(value["shape"]) if "shape" in value else t
    if "__tensor_b64__" in value:
        raw = np.frombuffer(base64.b64decode(value["__tensor_b64__"]), dtype=np.uint8).copy()
        dtype = getattr(torch, value["dtype"])
        return torch.from_numpy(raw).view(dtype).reshape(value["shape"])
    if "__ndarray_b64__" in value:
        raw = base64.b64decode(value["__ndarray_b64__"])
        return np.frombuffer(raw, dtype=value["dtype"]).reshape(value["shape"]).copy()
    if "__ndarray__" in value:
        return np.array(_unfinite(value["__ndarray__"]), dtype=value["dtype"]).reshape(value["shape"])
    if "__float__" in value:
        return float(value["__float__"])
    if "__component__" in value:
        from hooked_reward.names import Component

        return Component(*value["__component__"])
    if "__bytes__" in value:
        return base64.b64decode(value["__bytes__"])
    if "__tuple__" in value:
        return tuple(decode(v) for v in value["__tuple__"])
    if "__dataclass__" in value:
        module, _, qualname = value["__dataclass__"].partition(":")
        if not module.startswith("hooked_reward."):
            raise InputError(f"A store record names class {value['__dataclass__']!r}, outside hooked_reward.")
        obj: Any = importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
        return obj(**{k: decode(v) for k, v in value["fields"].items()})
    return {k: decode(v) for k, v in value.items()}


def canonical_json(value: Any) -> str:
    """Sorted keys, no spaces: the text that is hashed."""
    return json.dumps(encode(value), sort_keys=True, separators=(",", ":"), allow_nan=False)


def hash_of(*parts: Any) -> str:
    """SHA-256 (hex) of the canonical JSON of `parts`."""
    return hashlib.sha256(canonical_json(list(parts)).encode()).hexdigest()


# ---------------------------------------------------------------------------------------------------- files
def store_root(out_dir: str | Path) -> Path:
    """Where the store of the report folder `out_dir` lives: `OUT.store` beside it."""
    out = Path(out_dir).expanduser().absolute()
    return out.with_name(out.name + STORE_SUFFIX)


def record_checksum(record: dict[str, Any]) -> str:
    """SHA-256 of a record's canonical JSON (sorted keys, no spaces) without its `checksum` field."""
    body = {k: v for k, v in record.items() if k != "checksum"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()).hexdigest()


def read_records(path: str | Path) -> Iterator[dict[str, Any]]:
    """The complete records of one JSONL file, in file order (see `read_numbered_records`)."""
    for _, record in read_numbered_records(path):
        yield record


def read_numbered_records(path: str | Path) -> Iterator[tuple[int, Any]]:
    """`(line number, record)` of the complete records of one JSONL file, in file order. A torn last line (a
    process killed mid-write: no final newline, or not valid JSON) is skipped; so is a blank line. A missing file
    has no records. A line nested too deeply to parse is reported like invalid JSON."""
    path = Path(path)
    if not path.exists():
        return
    with open(path, "rb") as f:
        data = f.read()
    lines = data.split(b"\n")
    complete, tail = lines[:-1], lines[-1]  # text after the last newline was never finished
    for n, line in enumerate(complete, start=1):
        if not line.strip():
            continue
        try:
            yield n, json.loads(line)
        except (ValueError, RecursionError):  # a torn line later followed by a newline, or junk nested too deep
            import warnings

            warnings.warn(f"{path}:{n}: skipped an incomplete record.", stacklevel=2)
    if tail.strip():
        with contextlib.suppress(ValueError, RecursionError):
            yield len(complete) + 1, json.loads(tail)  # complete JSON, only its newline missing


class RecordWriter:
    """Appends records to one JSONL file, one line each, flushed and fsynced before `write` returns.

    Opening cuts a torn tail (bytes after the last newline) left by a killed process, so that the next record
    starts on its own line. One writer per file (each rank has its own file).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._repair()
        self._file = open(self.path, "ab")  # noqa: SIM115 - kept open for the writer's lifetime

    def _repair(self) -> None:
        if not self.path.exists():
            return
        with open(self.path, "rb+") as f:
            data = f.read()
            end = data.rfind(b"\n") + 1
            if end != len(data):
                tail = data[end:]
                try:
                    json.loads(tail)  # a complete record whose newline is missing: keep it
                    f.seek(0, os.SEEK_END)
                    f.write(b"\n")
                except ValueError:
                    f.truncate(end)
                f.flush()
                os.fsync(f.fileno())

    def write(self, record: dict[str, Any]) -> int:
        """Append `record` with its `checksum` (added to `record` too); returns the bytes written."""
        record["checksum"] = record_checksum(record)
        line = (json.dumps(record, separators=(",", ":"), allow_nan=False) + "\n").encode()
        try:
            self._file.write(line)
            self._file.flush()
            os.fsync(self._file.fileno())
        except OSError as err:  # a full disk or quota: say which file and how much one record needed
            raise _named(err, self.path, len(line)) from err
        return len(line)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ResultsStore:
    """One study's folder in the store: `OUT.store/COMMAND-KEY16/`.

    `study` is what identifies the study — the command, the model fingerprint(s) (path or hub id, revision,
    weights hash), the settings and the library version; its hash is `key`. A different model or setting gives
    a different folder, so results are never mixed. Each record's own key adds the unit's id and input (e.g.
    the rendered pair), so a record is reused only for exactly the same work.
    """

    def __init__(self, out_dir: str | Path, study: dict[str, Any]) -> None:
        self.root = store_root(out_dir)
        self.study = study
        self.key = hash_of(study)
        self.command = str(study.get("command", "study"))
        self.dir = self.root / f"{self.command}-{self.key[:16]}"

    def record_key(self, unit_id: str, unit_input: Any) -> str:
        """The key of one unit's record: hash of (study key, unit id, unit input)."""
        return hash_of(self.key, unit_id, unit_input)

    def exists(self) -> bool:
        return self.dir.is_dir() and any(self.dir.glob("*.jsonl"))

    def rank_file(self, rank: int) -> Path:
        return self.dir / f"rank-{rank:05d}.jsonl"

    def files(self) -> list[Path]:
        """The merged view first, then each rank's file."""
        return [self.dir / MERGED, *sorted(self.dir.glob("rank-*.jsonl"))]

    def load(self) -> dict[str, dict[str, Any]]:
        """Every complete record of this study whose checksum matches, by key (the first valid copy of a key wins;
        copies are equal). Records whose checksum is missing or does not match are left out and listed in
        `self.damaged` as `"FILE:LINE: unit ID: ..."` (so their units are computed again)."""
        records: dict[str, dict[str, Any]] = {}
        self.damaged: list[str] = []
        for path in self.files():
            for line, record in read_numbered_records(path):
                if not isinstance(record, dict) or record.get("study") != self.key or "key" not in record:
                    continue
                if record.get("checksum") != record_checksum(record):
                    unit = (record.get("unit") or {}).get("id") if isinstance(record.get("unit"), dict) else None
                    why = "no checksum" if "checksum" not in record else "checksum mismatch (edited or damaged)"
                    self.damaged.append(f"{path}:{line}: unit {unit!r}: {why}; not used, computed again")
                    continue
                records.setdefault(record["key"], record)
        return records

    def prepare(self, provenance: dict[str, Any], *, resume: bool) -> None:
        """Create the study folder and its `study.json`. Without `resume`, an existing folder of the same key is
        moved aside (`...-replaced-TIME`), never deleted, and the study starts empty."""
        if not resume and self.dir.exists():
            stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
            os.replace(self.dir, self.dir.with_name(f"{self.dir.name}-replaced-{stamp}"))
        self.dir.mkdir(parents=True, exist_ok=True)
        info = {"key": self.key, "study": encode(self.study), "provenance": encode(provenance)}
        _atomic_write(self.dir / "study.json", json.dumps(info, indent=1, allow_nan=False))

    def writer(self, rank: int) -> RecordWriter:
        return RecordWriter(self.rank_file(rank))

    def write_merged(self, records: Iterable[dict[str, Any]]) -> Path:
        """Write the merged view (`records.jsonl`, records in the given order) atomically."""
        text = "".join(json.dumps(r, separators=(",", ":"), allow_nan=False) + "\n" for r in records)
        path = self.dir / MERGED
        _atomic_write(path, text)
        return path

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def _named(err: OSError, path: Path, needed: int) -> OSError:
    """`err` with the file it was writing and the bytes that write needed (`needed_bytes`), for a one-line message."""
    named = OSError(err.errno, err.strerror, str(path))
    named.needed_bytes = needed  # type: ignore[attr-defined]
    return named


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    data = text.encode("utf-8")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise _named(err, path, len(data)) from err
    os.replace(tmp, path)


def to_frame(path: str | Path) -> Any:
    """A pandas DataFrame of a store's records (`records.jsonl`, a rank file, or a study folder): one row per
    record with `key`, `command`, the unit's fields (`unit.id`, `unit.index`, ...), `elapsed_s`, the finishing
    time, and every scalar of the result as `result.NAME` (non-scalar results stay in the `result` column,
    decoded: tensors as tensors)."""
    import pandas as pd

    path = Path(path)
    if path.is_dir():
        merged = path / MERGED
        files = [merged] if merged.exists() else sorted(path.glob("rank-*.jsonl"))
    else:
        files = [path]
    rows = []
    for file in files:
        for record in read_records(file):
            result = decode(record.get("result"))
            row: dict[str, Any] = {"key": record.get("key"), "command": record.get("command")}
            row.update({f"unit.{k}": v for k, v in (record.get("unit") or {}).items()})
            row["elapsed_s"] = record.get("elapsed_s")
            row["finished"] = (record.get("provenance") or {}).get("finished")
            if isinstance(result, dict):
                for k, v in result.items():
                    if isinstance(v, (int, float, str, bool)) or v is None:
                        row[f"result.{k}"] = v
            row["result"] = result
            rows.append(row)
    return pd.DataFrame(rows)
