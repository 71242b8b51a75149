"""What the commands' units share: how a study is opened, what identifies a pair's unit, and how per-unit
results are joined back along their text axis.

Each command (`hooked_reward.study.analyze`, `.faithfulness`, `.probe`, `.compare`, `.extensions`) lists its
units (`Unit`: one pair, one factor, one site), computes each on its own through `study.run` (so the results do
not depend on how the work is split over processes or interrupted), and rebuilds the analysis results from the
stored records, in unit order. Rank 0 gets the results; the other ranks get None (they only compute their share).

`open_study` builds the `Study` of a command: it fingerprints the model(s) (on rank 0, shared with the others),
records dtype and device, and opens the store beside the report folder.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import torch
from torch import Tensor

from hooked_reward.analysis.results import LabeledTensor
from hooked_reward.study.distributed import DistContext
from hooked_reward.study.provenance import model_fingerprint, model_runtime
from hooked_reward.study.runner import Study

if TYPE_CHECKING:
    from hooked_reward.model import HookedRewardModel
    from hooked_reward.pairs import PreferencePair

__all__ = ["concat_texts", "open_study", "pair_input", "pair_label", "select_texts"]

LT = TypeVar("LT", bound=LabeledTensor)


def open_study(
    out_dir: str | Path,
    command: str,
    model: HookedRewardModel,
    source: str | Path,
    *,
    settings: dict[str, Any],
    revision: str | None = None,
    others: Sequence[tuple[str | Path, str | None]] = (),
    seed: int | None = None,
    n_pairs: int | None = None,
    resume: bool | None = None,
    dist: DistContext | None = None,
) -> Study:
    """The study of `command` on `model` (loaded from `source`, at `revision`); `others`: further models' (source,
    revision), e.g. `compare`'s second model. The weights are hashed once, on rank 0."""
    dist = dist or DistContext()
    mine: list[dict[str, Any]] = []  # hashed on rank 0 only; the other ranks receive its list
    if dist.is_main:
        mine = [model_fingerprint(source, revision)] + [model_fingerprint(s, r) for s, r in others]
    fingerprints = dist.broadcast(mine)
    return Study(
        out_dir,
        command,
        models=fingerprints,
        runtime=model_runtime(model),
        settings=settings,
        seed=seed,
        n_pairs=n_pairs,
        resume=resume,
        dist=dist,
    )


def pair_input(pair: PreferencePair) -> dict[str, str]:
    """What identifies a pair's unit: its rendered texts (exactly what the model reads: the commands pass pairs
    already rendered, `PreferencePair(prompt="", chosen=text, rejected=text, label=...)`), and the token ids a
    training tool gave them (`TokenizedText`, e.g. `--rendering trl`)."""
    out: dict = {"chosen": pair.chosen, "rejected": pair.rejected}
    for side in ("chosen", "rejected"):
        ids = getattr(out[side], "input_ids", None)
        if ids is not None:
            out[f"{side}_ids"] = list(ids)
    return out


def pair_label(pair: PreferencePair) -> str | None:
    """The pair's label (mechanism), stored with its unit."""
    return getattr(pair, "label", None)


def concat_texts(parts: Sequence[LT]) -> LT:
    """Results of one analysis on successive texts (or pairs), joined along their `text` axis.

    `values` (and `text` labels) are concatenated; so are the per-text fields — `rewards`, a per-text `bias` (as
    many axes as `rewards`), and `meta` entries holding one item per text (tensors or lists whose length is the
    part's number of texts) — and nested results (a pair attribution's `chosen`/`rejected`). Everything else is
    the first part's (the same in every part: labels of other axes, settings).
    """
    first = parts[0]
    axis = first.dims.index("text")
    sizes = [p.values.shape[axis] for p in parts]
    kw = {f.name: getattr(first, f.name) for f in fields(first) if f.init}
    kw["values"] = torch.cat([p.values for p in parts], dim=axis)
    if "text" in first.labels:
        kw["labels"] = {**first.labels, "text": [lab for p in parts for lab in p.labels["text"]]}
    rewards = getattr(first, "rewards", None)
    if isinstance(rewards, Tensor) and rewards.ndim > 0:
        kw["rewards"] = torch.cat([p.rewards for p in parts])
        bias = getattr(first, "bias", None)
        if isinstance(bias, Tensor) and bias.ndim == rewards.ndim:
            kw["bias"] = torch.cat([p.bias for p in parts])
    kw["meta"] = _concat_meta([p.meta for p in parts], sizes)
    for name in ("chosen", "rejected"):
        if isinstance(kw.get(name), LabeledTensor):
            kw[name] = concat_texts([getattr(p, name) for p in parts])
    return type(first)(**kw)


def select_texts(result: LT, idx: Sequence[int]) -> LT:
    """`result` restricted to the texts at positions `idx` along its `text` axis (per-text fields as in
    `concat_texts`)."""
    n = result.values.shape[result.dims.index("text")]
    parts = [_one_text(result, i, n) for i in idx]
    return concat_texts(parts) if parts else _one_text(result, slice(0, 0), n)


def _one_text(result: LT, i: int | slice, n: int) -> LT:
    sel = [i] if isinstance(i, int) else i
    axis = result.dims.index("text")
    kw = {f.name: getattr(result, f.name) for f in fields(result) if f.init}
    kw["values"] = result.values.index_select(axis, torch.arange(n)[sel])
    if "text" in result.labels:
        kw["labels"] = {**result.labels, "text": [result.labels["text"][j] for j in range(n)[sel]]}
    rewards = getattr(result, "rewards", None)
    if isinstance(rewards, Tensor) and rewards.ndim > 0:
        kw["rewards"] = rewards[sel]
        bias = getattr(result, "bias", None)
        if isinstance(bias, Tensor) and bias.ndim == rewards.ndim:
            kw["bias"] = bias[sel]
    kw["meta"] = _meta_rows(result.meta, sel, n)
    for name in ("chosen", "rejected"):
        if isinstance(kw.get(name), LabeledTensor):
            kw[name] = _one_text(kw[name], i, n)
    return type(result)(**kw)


def _meta_rows(meta: Any, sel: list[int] | slice, n: int) -> Any:
    if isinstance(meta, dict):
        return {k: _meta_rows(v, sel, n) for k, v in meta.items()}
    if isinstance(meta, Tensor) and meta.ndim > 0 and meta.shape[0] == n:
        return meta[sel]
    if isinstance(meta, list) and len(meta) == n:
        return [meta[j] for j in range(n)[sel]] if isinstance(sel, slice) else [meta[j] for j in sel]
    return meta


def _concat_meta(metas: Sequence[Any], sizes: Sequence[int]) -> Any:
    first = metas[0]
    if isinstance(first, dict):
        return {k: _concat_meta([m[k] for m in metas], sizes) for k in first}
    if isinstance(first, Tensor) and first.ndim > 0 and all(m.shape[0] == n for m, n in zip(metas, sizes, strict=True)):
        return torch.cat(list(metas))
    if isinstance(first, list) and all(len(m) == n for m, n in zip(metas, sizes, strict=True)):
        return [item for m in metas for item in m]
    return first
