"""A study: units of work run through the results store, resumable, optionally split over torch.distributed ranks.

    study = Study(out_dir, "faithfulness", models=[fingerprint], runtime=model_runtime(model),
                  settings={...}, seed=0, n_pairs=len(pairs), dist=init_distributed())
    results = study.run(units, compute)      # rank 0: every unit's result, in unit order; other ranks: None

`run` (every rank calls it with the same units):

1. rank 0 reads the store (`OUT.store/COMMAND-KEY16/`, every rank's file and the merged view; a torn last line
   is ignored) and broadcasts which units are already done (their record key is there);
2. the units still to do are split round-robin over the ranks (`DistContext.shard`); each rank computes its
   own, appending one record per unit to its own file (flushed and fsynced when the unit finishes);
3. the new records are gathered on rank 0, which writes the merged view in unit order and returns the decoded
   results in unit order — the same list, bit for bit, however the work was split or interrupted, as long as
   `compute(unit)` depends on that unit alone.

Records of a rank that died stay in its file; the next run (resume is the default) skips them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from hooked_reward.errors import InputError
from hooked_reward.study.distributed import DistContext
from hooked_reward.study.provenance import provenance as make_provenance
from hooked_reward.study.store import ResultsStore, decode, encode

__all__ = ["MODEL_IDENTITY", "Study", "Unit"]

#: What of a model's fingerprint is in the study key: where it is, its revision, the content of its weights and of
#: every other file that can change a number (config, tokenizer files, chat template, head files).
MODEL_IDENTITY = ("model", "revision", "weights_sha256", "files_sha256")


@dataclass(frozen=True)
class Unit:
    """One unit of work: `id` (unique in the study, e.g. `"component/17"`), `input` (what it is computed from —
    e.g. the rendered pair's texts —, hashed into its record key) and `info` (labels stored with the record,
    e.g. the pair's index and mechanism)."""

    id: str
    input: Any
    info: dict[str, Any] = field(default_factory=dict)


class Study:
    """Units of one command on one model (or two), with one store folder per (command, models, settings,
    library version).

    `models`: fingerprints (`provenance.model_fingerprint`) of the model(s) used; `runtime`: dtype and device;
    `settings`: every option that changes a unit's numbers (hashed into the key: change one and a new store
    starts; options that only change the summary, such as the bootstrap's seed, belong in the provenance);
    `resume`: reuse the records already in the store (default True); False moves the old folder aside and
    recomputes everything. `dist`: the distributed context (one process when None).
    """

    def __init__(
        self,
        out_dir: str | Path,
        command: str,
        *,
        models: Sequence[dict[str, Any]],
        runtime: dict[str, str],
        settings: dict[str, Any],
        seed: int | None = None,
        n_pairs: int | None = None,
        resume: bool | None = None,
        dist: DistContext | None = None,
    ) -> None:
        import hooked_reward

        self.dist = dist or DistContext()
        self.command = command
        self.resume = True if resume is None else bool(resume)
        identity = {
            "command": command,
            "models": [{k: m.get(k) for k in MODEL_IDENTITY} for m in models],
            "dtype": runtime.get("dtype"),
            "device_type": str(runtime.get("device", "cpu")).split(":")[0],
            "fused_attention": runtime.get("fused_attention"),
            "settings": settings,
            "version": hooked_reward.__version__,
        }
        self.store: ResultsStore | None = ResultsStore(out_dir, identity)
        self.provenance = make_provenance(
            command=command,
            fingerprint=models[0],
            runtime=runtime,
            settings=settings,
            seed=seed,
            n_pairs=n_pairs,
            world_size=self.dist.world_size,
        )
        if len(models) > 1:
            self.provenance["other_models"] = [{k: m.get(k) for k in MODEL_IDENTITY} for m in models[1:]]
        self.provenance["store"] = str(self.store.dir)
        self.computed = 0  # units computed by this process
        self.reused = 0  # units found in the store (counted on rank 0)
        self.damaged: list[str] = []  # records whose checksum failed (file:line), recomputed
        self._order: list[str] = []
        self._ordered: set[str] = set()
        if self.dist.is_main:
            self.store.prepare(self.provenance, resume=self.resume)
        self.dist.barrier()  # no rank writes before the folder is ready (and an old one moved aside)

    @classmethod
    def in_memory(cls, command: str) -> Study:
        """A study without a store: `run` computes every unit in this process and keeps nothing (what an analysis
        called from Python without an output folder uses; the same units, so the same numbers)."""
        study = cls.__new__(cls)
        study.dist, study.command, study.resume = DistContext(), command, False
        study.store, study.provenance = None, {}
        study.computed = study.reused = 0
        study.damaged = []
        study._order, study._ordered = [], set()
        return study

    def run(
        self,
        units: Sequence[Unit],
        compute: Callable[[Unit], Any],
        *,
        desc: str = "",
        progress: bool = True,
        everywhere: bool = False,
    ) -> list[Any] | None:
        """Compute every unit not yet in the store (this rank's share), store it, and return all results in unit
        order on rank 0 (on every rank with `everywhere`); None on the other ranks."""
        ids = [u.id for u in units]
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise InputError(f"Unit id {dup!r} appears twice in the study's units; ids must be unique.")
        if self.store is None:
            computed = [compute(u) for u in tqdm(units, desc=desc or self.command, disable=not progress)]
            self.computed += len(computed)
            return computed
        keys = [self.store.record_key(u.id, u.input) for u in units]
        existing: dict[str, dict[str, Any]] = {}
        if self.dist.is_main:
            existing = self.store.load()
            self.damaged.extend(self.store.damaged)
            done = {k for k in keys if k in existing}
        else:
            done = set()
        done = self.dist.broadcast(done)
        todo = [i for i, k in enumerate(keys) if k not in done]
        mine = self.dist.shard(todo)
        new: list[dict[str, Any]] = []
        with self.store.writer(self.dist.rank) as writer:
            label = desc or self.command
            if self.dist.enabled:
                label = f"{label} [rank {self.dist.rank}/{self.dist.world_size}]"
            for i in tqdm(mine, desc=label, disable=not progress):
                unit = units[i]
                start = time.perf_counter()
                result = compute(unit)
                record = {
                    "key": keys[i],
                    "study": self.store.key,
                    "command": self.command,
                    "unit": {"id": unit.id, **unit.info},
                    "result": encode(result),
                    "provenance": {
                        **self.provenance,
                        "rank": self.dist.rank,
                        "finished": datetime.now(timezone.utc).isoformat(timespec="microseconds"),
                    },
                    "elapsed_s": round(time.perf_counter() - start, 6),
                }
                writer.write(record)
                new.append(record)
        self.computed += len(mine)
        gathered = self.dist.gather(new)
        results: list[Any] | None = None
        if self.dist.is_main:
            assert gathered is not None
            for part in gathered:
                for record in part:
                    existing.setdefault(record["key"], record)
            missing = [units[i].id for i, k in enumerate(keys) if k not in existing]
            if missing:  # pragma: no cover - a rank returned without its share
                raise RuntimeError(f"Units {missing[:5]} were not computed by any rank.")
            self.reused += len(done)
            for k in keys:
                if k not in self._ordered:
                    self._order.append(k)
                    self._ordered.add(k)
            self.store.write_merged(existing[k] for k in self._order)
            results = [decode(existing[k]["result"]) for k in keys]
        if everywhere:
            results = self.dist.broadcast(results)
        return results
