"""LabeledTensor: the one result type every analysis returns (a tensor plus a name and labels per axis).

A notebook user looks at it (`.to_frame()`, `.plot()`); a test asserts on `.values`; a report stores
`.to_json()`. Analyses subclass it (as dataclasses whose extra fields all have defaults) to give `.plot()` the
picture that suits them and to carry extra fields (rewards, intervals, p-values, settings). A subclass whose
numbers live in named fields (e.g. a similarity matrix) may instead be constructed without `values` and
derive it in `_derive()` (keyword-only dataclass redeclaring `values: Tensor | None = None`, `dims = ()`).

The contract every subclass keeps:

* `values` (a tensor) with one name per axis in `dims`, and `labels[dim]` for the axes that have labels;
* `to_frame()`: a pandas DataFrame (tidy by default; subclasses may give the table that reads best);
* `plot(ax=None, **options) -> Axes`: draws on the `ax` given (a new figure's axes when None) and returns it.
  Results with several panels also have `plot_panels(fig=None) -> Figure`;
* `to_json() -> dict`: JSON-safe (lists, floats, strings; NaN and ±inf as the strings "nan", "inf", "-inf"),
  holding `type`, `dims`, `labels`, `value_name`, `values`, every extra field and `meta`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import torch
from torch import Tensor

from hooked_reward.errors import InputError

if TYPE_CHECKING:
    from matplotlib.axes import Axes

LT = TypeVar("LT", bound="LabeledTensor")

__all__ = ["LabeledTensor", "jsonable", "require_pandas", "require_pyplot"]


def jsonable(value: Any) -> Any:
    """`value` as plain JSON types: tensors and arrays as nested lists, numpy scalars as numbers, non-finite
    floats as "nan"/"inf"/"-inf", dataclasses and results (anything with `to_json()`) as dicts, tuples as
    lists, paths as strings; other objects as their `repr` (never an error: results carry settings of any kind).
    """
    if isinstance(value, Tensor):
        return jsonable(value.detach().to("cpu").tolist())
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        return jsonable(value.item())
    if isinstance(value, str):
        return str(value)  # plain str (component labels are a str subclass)
    if isinstance(value, bool) or value is None or isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "to_json") and callable(value.to_json):
        return jsonable(value.to_json())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value) if f.repr}
    return repr(value)


def require_pandas() -> Any:
    """Import pandas, or raise an ImportError that says how to get it."""
    try:
        import pandas as pd
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "to_frame() needs pandas, which is not installed: `pip install pandas` (or `pip install "
            "hooked_reward[test]`). The numbers are in `.values` and their labels in `.labels` without it."
        ) from err
    return pd


def require_pyplot() -> Any:
    """Import matplotlib.pyplot, or raise an ImportError that says how to get it."""
    try:
        import matplotlib.pyplot as plt
    except ImportError as err:  # pragma: no cover
        raise ImportError("plot() needs matplotlib: `pip install matplotlib`.") from err
    return plt


@dataclass
class LabeledTensor:
    """A tensor whose axes have names (`dims`) and whose entries along each axis may have labels.

    `values`: the numbers, any shape, one name per axis in `dims`.
    `labels`: for each axis name, a list of `values.shape[axis]` labels (str or int); an axis left out is
    labelled 0..n-1.
    `value_name`: what a number means (the column name in `to_frame()`, the y-axis label in plots).
    `meta`: anything else worth keeping (settings used, the texts, ...).
    """

    values: Tensor
    dims: tuple[str, ...]
    labels: dict[str, list[Any]] = field(default_factory=dict)
    value_name: str = "value"
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.values is None:  # a subclass that keeps its numbers in named fields derives the tensor from them
            self.values, self.dims, derived = self._derive()
            self.labels = {**derived, **self.labels}
        self.dims = tuple(self.dims)
        if len(self.dims) != self.values.ndim:
            raise InputError(f"dims {self.dims} do not match values of shape {tuple(self.values.shape)}.")
        for dim, labels in self.labels.items():
            if dim not in self.dims:
                raise InputError(f"labels given for {dim!r}, which is not one of dims {self.dims}.")
            n = self.values.shape[self.dims.index(dim)]
            if len(labels) != n:
                raise InputError(f"{len(labels)} labels for axis {dim!r} of size {n}.")

    def _derive(self) -> tuple[Tensor, tuple[str, ...], dict[str, list[Any]]]:
        """`(values, dims, labels)` built from a subclass's own fields, for subclasses constructed without
        `values` (they redeclare `values: Tensor | None = None` and `dims = ()`, keyword-only)."""
        raise TypeError(f"{type(self).__name__} needs `values` and `dims`.")

    # ------------------------------------------------------------------ access
    @property
    def shape(self) -> torch.Size:
        return self.values.shape

    def axis_labels(self, dim: str) -> list[Any]:
        """The labels along `dim` (0..n-1 when none were given)."""
        if dim in self.labels:
            return list(self.labels[dim])
        return list(range(self.values.shape[self.dims.index(dim)]))

    def index_of(self, dim: str, label: Any) -> int:
        """Position of `label` on axis `dim` (ValueError naming the known labels when absent)."""
        labels = self.axis_labels(dim)
        if label not in labels:
            shown = ", ".join(map(str, labels[:20])) + (" ..." if len(labels) > 20 else "")
            raise InputError(f"{label!r} is not a label of axis {dim!r}; it has: {shown}")
        return labels.index(label)

    def sel(self, **selection: Any) -> LabeledTensor:
        """Select by label along named axes: `res.sel(component="L1H3")` drops that axis; a list keeps it."""
        values, dims, labels = self.values, list(self.dims), dict(self.labels)
        for dim, want in selection.items():
            if dim not in dims:
                raise InputError(f"{dim!r} is not an axis; axes are {tuple(dims)}.")
            axis = dims.index(dim)
            if isinstance(want, Sequence) and not isinstance(want, str):
                idx = [self.index_of(dim, w) for w in want]
                values = values.index_select(axis, torch.tensor(idx, device=values.device))
                labels[dim] = list(want)
            else:
                values = values.select(axis, self.index_of(dim, want))
                dims.pop(axis)
                labels.pop(dim, None)
        return LabeledTensor(values, tuple(dims), labels, self.value_name, dict(self.meta))

    # ------------------------------------------------------------------ views
    @classmethod
    def concat(cls, parts: Sequence[LT], dim: str = "text") -> LT:
        """Results of one analysis on successive inputs (e.g. one text at a time) joined along axis `dim`.

        `values` (and `dim`'s labels) are concatenated; so are the fields holding one entry per position along
        `dim`: for `dim="text"`, `rewards` and a per-text `bias` (as many axes as `rewards`); `meta` entries with
        one item per position (tensors or lists as long as the part's axis); nested results (a pair
        attribution's `chosen`/`rejected`). Everything else is the first part's (the same in every part: labels
        of other axes, settings).
        """
        if not parts:
            raise InputError(f"{cls.__name__}.concat needs at least one part to join along {dim!r}.")
        first = parts[0]
        axis = first._axis(dim)
        sizes = [p.values.shape[axis] for p in parts]
        kw = {f.name: getattr(first, f.name) for f in dataclasses.fields(first) if f.init}
        kw["values"] = torch.cat([p.values for p in parts], dim=axis)
        if dim in first.labels:
            kw["labels"] = {**first.labels, dim: [lab for p in parts for lab in p.labels[dim]]}
        rewards = getattr(first, "rewards", None)
        if dim == "text" and isinstance(rewards, Tensor) and rewards.ndim > 0:
            kw["rewards"] = torch.cat([getattr(p, "rewards") for p in parts])  # noqa: B009 (LT: not every result has it)
            bias = getattr(first, "bias", None)
            if isinstance(bias, Tensor) and bias.ndim == rewards.ndim:
                kw["bias"] = torch.cat([getattr(p, "bias") for p in parts])  # noqa: B009 (as rewards)
        kw["meta"] = _concat_meta([p.meta for p in parts], sizes)
        for name in ("chosen", "rejected"):
            if isinstance(kw.get(name), LabeledTensor):
                kw[name] = LabeledTensor.concat([getattr(p, name) for p in parts], dim)
        return type(first)(**kw)

    def isel(self: LT, dim: str, index: Sequence[int]) -> LT:
        """This result restricted to the positions `index` (in that order) along axis `dim`, the axis kept; the
        per-position fields follow as in `concat`."""
        n = self.values.shape[self._axis(dim)]
        bad = [i for i in index if not -n <= int(i) < n]
        if bad:
            raise InputError(f"isel: positions {bad[:5]} are outside axis {dim!r} of size {n}.")
        parts = [_positions(self, dim, [int(i)], n) for i in index]
        return LabeledTensor.concat(parts, dim) if parts else _positions(self, dim, [], n)

    def _axis(self, dim: str) -> int:
        if dim not in self.dims:
            raise InputError(f"{dim!r} is not an axis; axes are {self.dims}.")
        return self.dims.index(dim)

    def to_frame(self) -> Any:
        """A tidy pandas DataFrame: one row per entry, one column per axis (its labels) plus `value_name`."""
        pd = require_pandas()
        values = self.values.detach().to("cpu", torch.float64)
        grids = torch.meshgrid(*[torch.arange(n) for n in values.shape], indexing="ij") if values.ndim else ()
        data: dict[str, Any] = {}
        for dim, grid in zip(self.dims, grids, strict=True):
            labels = self.axis_labels(dim)
            data[dim] = [labels[i] for i in grid.flatten().tolist()]
        data[self.value_name] = values.flatten().numpy()
        return pd.DataFrame(data)

    def plot(self, ax: Axes | None = None) -> Any:
        """A default picture: bars for one axis, one line per row for two, an image for more, on `ax` (a new
        figure's when None); returns the Axes. Subclasses add keyword options after `ax`."""
        plt = require_pyplot()
        if ax is None:
            _, ax = plt.subplots(figsize=(8, 3.5))
        values = self.values.detach().to("cpu", torch.float32)
        if values.ndim == 1:
            labels = [str(x) for x in self.axis_labels(self.dims[0])]
            ax.bar(range(len(labels)), values.numpy())
            ax.set_xticks(range(len(labels)), labels, rotation=90)
            ax.set_xlabel(self.dims[0])
        elif values.ndim == 2:
            x_labels = [str(x) for x in self.axis_labels(self.dims[1])]
            for row, label in zip(values, self.axis_labels(self.dims[0]), strict=True):
                ax.plot(range(len(x_labels)), row.numpy(), marker=".", label=str(label))
            ax.set_xticks(range(len(x_labels)), x_labels, rotation=90)
            ax.set_xlabel(self.dims[1])
            if values.shape[0] <= 12:
                ax.legend(title=self.dims[0], fontsize="small")
        else:
            image = values.reshape(values.shape[0], -1)
            ax.imshow(image.numpy(), aspect="auto", cmap="RdBu_r")
            ax.set_ylabel(self.dims[0])
        ax.set_ylabel(self.value_name) if values.ndim <= 2 else None
        return ax

    def to_json(self) -> dict[str, Any]:
        """A JSON-safe dict (see `jsonable`): `type`, `value_name`, `dims`, `labels` (every axis, 0..n-1 when
        none were given), `values` (nested lists), then every extra field of the subclass and `meta`."""
        out: dict[str, Any] = {
            "type": type(self).__name__,
            "value_name": self.value_name,
            "dims": list(self.dims),
            "labels": {dim: self.axis_labels(dim) for dim in self.dims},
            "values": self.values,
        }
        base = {f.name for f in dataclasses.fields(LabeledTensor)}
        for f in dataclasses.fields(self):
            if f.name not in base and f.repr and not f.name.startswith("_"):
                out[f.name] = getattr(self, f.name)
        out.update(self._json_extra())
        out["meta"] = self.meta
        return jsonable(out)

    def _json_extra(self) -> dict[str, Any]:
        """Derived numbers a subclass wants in `to_json()` beside its fields (e.g. summary scalars)."""
        return {}

    def __repr__(self) -> str:
        dims = ", ".join(f"{d}={n}" for d, n in zip(self.dims, self.values.shape, strict=True))
        return f"{type(self).__name__}({self.value_name}: {dims})"


def _positions(result: LT, dim: str, sel: list[int], n: int) -> LT:
    """`result` at positions `sel` along `dim` (per-position fields as in `LabeledTensor.concat`)."""
    axis = result.dims.index(dim)
    kw = {f.name: getattr(result, f.name) for f in dataclasses.fields(result) if f.init}
    kw["values"] = result.values.index_select(axis, torch.tensor(sel, dtype=torch.long))
    if dim in result.labels:
        kw["labels"] = {**result.labels, dim: [result.labels[dim][j] for j in sel]}
    rewards = getattr(result, "rewards", None)
    if dim == "text" and isinstance(rewards, Tensor) and rewards.ndim > 0:
        kw["rewards"] = rewards[sel]
        bias = getattr(result, "bias", None)
        if isinstance(bias, Tensor) and bias.ndim == rewards.ndim:
            kw["bias"] = bias[sel]
    kw["meta"] = _meta_rows(result.meta, sel, n)
    for name in ("chosen", "rejected"):
        if isinstance(kw.get(name), LabeledTensor):
            kw[name] = _positions(kw[name], dim, sel, n)
    return type(result)(**kw)


def _meta_rows(meta: Any, sel: list[int], n: int) -> Any:
    """`meta` entries holding one item per position (tensor or list of length `n`) at positions `sel`."""
    if isinstance(meta, dict):
        return {k: _meta_rows(v, sel, n) for k, v in meta.items()}
    if isinstance(meta, Tensor) and meta.ndim > 0 and meta.shape[0] == n:
        return meta[sel]
    if isinstance(meta, list) and len(meta) == n:
        return [meta[j] for j in sel]
    return meta


def _concat_meta(metas: Sequence[Any], sizes: Sequence[int]) -> Any:
    """`meta` of successive parts joined: entries with one item per position concatenated, the rest the first's."""
    first = metas[0]
    if isinstance(first, dict):
        return {k: _concat_meta([m[k] for m in metas], sizes) for k in first}
    if isinstance(first, Tensor) and first.ndim > 0 and all(m.shape[0] == n for m, n in zip(metas, sizes, strict=True)):
        return torch.cat(list(metas))
    if isinstance(first, list) and all(len(m) == n for m, n in zip(metas, sizes, strict=True)):
        return [item for m in metas for item in m]
    return first
