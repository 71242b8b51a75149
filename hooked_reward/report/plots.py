"""Plots for reports, drawn one way: colour = mechanism (or label), line style = variant, a title and axis labels
on every plot, integer layer ticks, lens points named in words, and no rows that are zero everywhere."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
from jaxtyping import Float

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = [
    "VARIANT_STYLES",
    "bars_with_ci",
    "colours",
    "integer_ticks",
    "lens_point_names",
    "nonzero_rows",
    "scatter_agreement",
]

#: Line style per lens variant: frozen final-norm scale solid, recomputed dashed.
VARIANT_STYLES = {"frozen": "-", "recomputed": "--"}


def colours(names: Sequence[str]) -> dict[str, str]:
    """One colour per mechanism/label, stable in the order given (matplotlib's tab10 cycle)."""
    return {name: f"C{i % 10}" for i, name in enumerate(names)}


def integer_ticks(ax: Axes, axis: str = "x") -> None:
    """Only whole-number ticks on `axis` (layers are integers)."""
    from matplotlib.ticker import MaxNLocator

    (ax.xaxis if axis == "x" else ax.yaxis).set_major_locator(MaxNLocator(integer=True))


def lens_point_names(points: Sequence[str]) -> list[str]:
    """Readable names for TransformerLens's accumulated-residual labels: `0_pre` is the embeddings, `l_mid` the
    stream after layer l's attention, `l_pre` (l > 0) after layer l−1's MLP, `final_post` after the last MLP
    (what the final norm reads). The original label is kept in brackets."""
    n_layers = sum(1 for p in points if str(p).endswith("_pre"))
    names = []
    for p in map(str, points):
        if p == "final_post":
            names.append(f"+ MLP {n_layers - 1} (final_post)")
        elif p.endswith("_pre"):
            layer = int(p.split("_")[0])
            names.append("embeddings (0_pre)" if layer == 0 else f"+ MLP {layer - 1} ({p})")
        elif p.endswith("_mid"):
            names.append(f"+ attn {int(p.split('_')[0])} ({p})")
        else:
            names.append(p)
    return names


def nonzero_rows(labels: Sequence[str], values: Float[np.ndarray, "... component"]) -> list[int]:
    """Indices of the components (last axis) that are not exactly zero everywhere (e.g. drop a bias term the
    model does not have)."""
    flat = np.asarray(values, dtype=float).reshape(-1, len(labels))
    return [i for i in range(len(labels)) if np.any(np.nan_to_num(flat[:, i]) != 0)]


def bars_with_ci(
    ax: Axes,
    labels: Sequence[str],
    series: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
    colour: Mapping[str, str],
    *,
    hatches: Mapping[str, str] | None = None,
    ylabel: str,
    title: str,
    xlabel: str = "",
) -> None:
    """Grouped bars, one group per label and one bar per series (`{name: (mean, low, high)}`), with CI whiskers."""
    n = max(1, len(series))
    width = 0.8 / n
    x = np.arange(len(labels))
    for k, (name, (mean, low, high)) in enumerate(series.items()):
        mean, low, high = (np.asarray(a, dtype=float) for a in (mean, low, high))
        err = np.vstack([np.clip(mean - low, 0, None), np.clip(high - mean, 0, None)])
        err = np.nan_to_num(err)
        ax.bar(
            x + (k - (n - 1) / 2) * width,
            mean,
            width=width,
            color=colour.get(name, f"C{k}"),
            hatch=(hatches or {}).get(name),
            edgecolor="white" if not hatches else "k",
            linewidth=0.3,
            label=name,
            yerr=err,
            capsize=2,
            error_kw={"elinewidth": 0.8},
        )
    ax.set_xticks(x, list(labels), rotation=60 if len(labels) > 8 else 0, ha="right" if len(labels) > 8 else "center")
    ax.axhline(0, color="grey", linewidth=0.6)
    ax.set_ylabel(ylabel)
    if xlabel:
        ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=10)
    if len(series) > 1:
        ax.legend(fontsize=7)


def scatter_agreement(
    ax: Axes,
    labels: Sequence[str],
    dra: Float[np.ndarray, "pair component"],
    patching: Float[np.ndarray, "pair component"],
    colour: str,
    *,
    title: str,
    annotate: int = 4,
) -> None:
    """DRA (x) against patching effect (y): faint dots per pair and component, large dots for the mean over pairs,
    the `annotate` components with the largest mean |patching effect| named, and the y = x line."""
    dra, patching = np.asarray(dra, dtype=float), np.asarray(patching, dtype=float)
    ax.scatter(dra.ravel(), patching.ravel(), s=8, color=colour, alpha=0.2, linewidths=0, label="one pair")
    mx, my = np.nanmean(dra, 0), np.nanmean(patching, 0)
    ax.scatter(mx, my, s=36, color=colour, edgecolors="k", linewidths=0.6, label="mean over pairs", zorder=3)
    size = np.abs(np.nan_to_num(my)) + np.abs(np.nan_to_num(mx))
    span_x = float(np.nanmax(mx) - np.nanmin(mx)) if np.isfinite(mx).any() else 0.0
    span_y = float(np.nanmax(my) - np.nanmin(my)) if np.isfinite(my).any() else 0.0
    placed: list[tuple[float, float, list[str]]] = []  # labels at (nearly) the same place share one annotation
    for i in np.argsort(-np.abs(np.nan_to_num(my)))[:annotate]:
        if size[i] < 0.1 * size.max():
            continue  # unlabelled: a cluster of near-zero components would only print over each other
        near = next(
            (
                p
                for p in placed
                if abs(p[0] - mx[i]) <= 0.08 * (span_x or 1.0) and abs(p[1] - my[i]) <= 0.08 * (span_y or 1.0)
            ),
            None,
        )
        if near is None:
            placed.append((float(mx[i]), float(my[i]), [str(labels[i])]))
        else:
            near[2].append(str(labels[i]))
    for x, y, names in placed:
        ax.annotate(", ".join(names), (x, y), xytext=(4, 3), textcoords="offset points", fontsize=7)
    finite = np.concatenate([dra.ravel(), patching.ravel()])
    finite = finite[np.isfinite(finite)]
    if finite.size:
        lo, hi = float(finite.min()), float(finite.max())
        pad = 0.05 * (hi - lo or 1.0)
        ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="grey", lw=0.7, ls=":", label="y = x")
    ax.axhline(0, color="grey", lw=0.4)
    ax.axvline(0, color="grey", lw=0.4)
    ax.set_xlabel("direct reward attribution (Δreward)")
    ax.set_ylabel("patching effect (Δreward)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=6, loc="best")
