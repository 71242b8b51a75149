"""Report plots (issue 32): attention heatmaps scaled to the data, scatter labels that never print over each other."""

from __future__ import annotations

import matplotlib
import numpy as np

matplotlib.use("Agg")

import matplotlib.pyplot as plt

from hooked_reward.analysis.attention import HeadAttention
from hooked_reward.report import plots
from hooked_reward.report.attention import attention_figure


def _view(weights: list[list[float]]) -> HeadAttention:
    rows = np.asarray(weights, dtype=float)  # [head, src]: the reward position's row
    n_head, n_tok = rows.shape
    patterns = np.zeros((n_head, n_tok, n_tok))
    patterns[:, -1, :] = rows
    return HeadAttention([f"L0H{h}" for h in range(n_head)], [f"t{i}" for i in range(n_tok)], patterns, n_tok - 1)


def test_attention_heatmaps_share_one_scale_fitted_to_the_data() -> None:
    chosen = _view([[0.05, 0.1, 0.85], [0.3, 0.3, 0.4]])
    rejected = _view([[0.2, 0.2, 0.6], [0.1, 0.45, 0.45]])
    fig = attention_figure([("chosen", chosen), ("rejected", rejected)], "t")
    clims = {ax.images[0].get_clim() for ax in fig.axes if ax.images}
    plt.close(fig)
    assert clims == {(0.0, 0.85)}  # the largest weight shown, not 1


def test_scatter_labels_at_the_same_place_share_one_annotation() -> None:
    dra = np.array([[1.0, 1.01, -2.0, 0.0]])
    patching = np.array([[1.0, 1.02, 2.0, 0.0]])
    fig, ax = plt.subplots()
    plots.scatter_agreement(ax, ["A", "B", "C", "D"], dra, patching, "C0", title="t", annotate=4)
    texts = sorted(t.get_text() for t in ax.texts)
    plt.close(fig)
    assert texts == ["B, A", "C"] or texts == ["A, B", "C"]  # A and B nearly coincide; D is near zero
