"""The circuit found, as a reader sees it: attention of chosen heads over a text (an interactive circuitsvis view,
with a static PNG beside it) and a text's tokens coloured by how much each one matters. The patterns are
`analysis.attention.head_attention`'s (`HeadAttention`).

circuitsvis is optional (`pip install hooked_reward[viz]`); without it the report shows the PNG only. Its
JavaScript bundle is written once into the report folder (`circuitsvis.js`), never loaded from a CDN.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from hooked_reward.analysis.attention import HeadAttention

__all__ = ["attention_figure", "circuitsvis_bundle", "circuitsvis_view", "highlight_tokens"]


def attention_figure(views: Sequence[tuple[str, HeadAttention]], title: str) -> Figure:
    """A static heatmap per text: each head's attention from the reward position (rows) over its tokens."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        len(views),
        1,
        figsize=(
            max(6.0, 0.42 * max(len(v.tokens) for _, v in views) + 1.5),
            0.45 * sum(len(v.heads) for _, v in views) + 1.4 * len(views),
        ),
        squeeze=False,
        layout="constrained",
    )
    # one colour scale for every text, scaled to the data (weights of a few percent would be invisible on 0-1)
    vmax = max(float(np.nanmax(v.from_reward)) for _, v in views if np.size(v.from_reward)) or 1.0
    for ax, (name, view) in zip(axes[:, 0], views, strict=True):
        im = ax.imshow(view.from_reward, cmap="Blues", vmin=0, vmax=vmax, aspect="auto")
        ax.set_yticks(range(len(view.heads)), view.heads, fontsize=8)
        ax.set_xticks(range(len(view.tokens)), view.tokens, rotation=60, ha="right", fontsize=8)
        ax.set_title(name, fontsize=9, loc="left")
        for j, row in enumerate(view.from_reward):
            k = int(row.argmax())
            colour = "white" if row[k] > 0.5 * vmax else "k"
            ax.text(k, j, f"{row[k]:.2f}", ha="center", va="center", fontsize=6, color=colour)
    fig.colorbar(im, ax=axes[:, 0].tolist(), label="attention weight", shrink=0.8, aspect=30)
    fig.suptitle(title, fontsize=10)
    return fig


def circuitsvis_bundle() -> str | None:
    """circuitsvis's browser bundle (defines `window.CircuitsVis`), or None when circuitsvis is not installed."""
    try:
        import circuitsvis
    except ImportError:
        return None
    from pathlib import Path

    bundle = Path(circuitsvis.__file__).resolve().parent / "dist" / "cdn" / "iife.js"
    if not bundle.exists():
        return None
    text = bundle.read_text(encoding="utf-8")
    return "\n".join(line for line in text.splitlines() if not line.startswith("//# sourceMappingURL"))


def circuitsvis_view(view: HeadAttention, element_id: str, *, full: bool = False) -> str:
    """Markup rendering `view` with circuitsvis (needs the bundle from `circuitsvis_bundle()` on the page).

    Default: `ColoredTokensMulti`, the text's tokens coloured by each head's attention from the reward position
    (pick a head with its button; hover a token for every head's weight). `full=True`: `AttentionHeads`, each
    head's whole pattern (pick a head to zoom; rows attend to columns)."""
    from circuitsvis.utils.convert_props import convert_props

    if full:
        name = "AttentionHeads"
        props = {
            "attention": view.patterns.tolist(),
            "tokens": view.tokens,
            "attentionHeadNames": view.heads,
            "maskUpperTri": True,
        }
    else:
        name = "ColoredTokensMulti"
        tokens = view.text_tokens or view.tokens
        props = {"tokens": tokens, "values": view.from_reward.T.tolist(), "labels": view.heads}
    # a token "</script>" must not end the script element
    js_props = convert_props(props).replace("</", "<\\/")
    safe_id = html.escape(element_id, quote=True)
    return (
        f'<div id="{safe_id}" class="cv-view" data-view="{name}"></div>\n'
        f"<script>CircuitsVis.render({json.dumps(element_id)}, CircuitsVis.{name}, {js_props});</script>"
    )


def highlight_tokens(tokens: Sequence[str], values: Sequence[float], *, unit: str = "Δ reward") -> str:
    """The tokens as inline spans, coloured by `values` (red positive, blue negative, white 0; NaN grey), each
    with its value on hover."""
    finite = [abs(v) for v in values if v is not None and math.isfinite(v)]
    scale = max(finite) if finite and max(finite) > 0 else 1.0
    spans = []
    for tok, v in zip(tokens, values, strict=True):
        if v is None or not math.isfinite(v):
            style, label = "background:#eee;color:#888", "no aligned counterpart"
        else:
            a = min(1.0, abs(v) / scale)
            rgb = "214,39,40" if v > 0 else "31,119,180"
            style, label = f"background:rgba({rgb},{0.85 * a:.2f})", f"{unit} {v:+.3g}"
        spans.append(f'<span class="tok" style="{style}" title="{html.escape(label)}">{html.escape(tok)}</span>')
    return '<div class="tokens">' + " ".join(spans) + "</div>"
