"""Write a probe suite's results to a folder: ``results.json``, ``forest.png``, one localisation PNG per
significant factor, and ``index.html`` tying them together (a table of every statistic and verdict)."""

from __future__ import annotations

import html
import json
import math
from pathlib import Path

__all__ = ["write_probe_report"]


def _fmt(v) -> str:
    if isinstance(v, bool):
        return "yes" if v else ""
    if isinstance(v, float):
        if math.isnan(v):
            return "NaN"
        if math.isinf(v):
            return "+inf" if v > 0 else "-inf"
        return f"{v:.3g}"
    return html.escape(str(v))


def write_probe_report(result, out_dir: str | Path, title: str = "Reward-hacking probe suite") -> Path:
    """Write JSON, PNG and HTML for a :class:`ProbeSuiteResult` into ``out_dir``; returns the HTML path."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "results.json", "w") as f:
        json.dump(result.to_json(), f, indent=1)

    ax = result.plot()
    ax.figure.tight_layout()
    ax.figure.savefig(out / "forest.png", dpi=120)
    plt.close(ax.figure)

    loc_imgs = []
    for name, loc in result.localisation.items():
        has_heads = len(loc.head_labels) > 0
        fig, axes = plt.subplots(1, 2 if has_heads else 1, figsize=(12 if has_heads else 6, 3.4), squeeze=False)
        loc.plot(ax=axes[0, 0])
        if has_heads:
            loc.plot(ax=axes[0, 1], heads=True)
        fig.tight_layout()
        fname = f"localisation_{name}.png"
        fig.savefig(out / fname, dpi=110)
        plt.close(fig)
        loc_imgs.append((name, fname, loc))

    cols = ["factor", "verdict", "n", "mean", "std_mean", "d", "ci_low", "ci_high", "p", "q", "mean_len_diff"]
    rows = []
    for s in result.stats:
        d = s.as_dict()
        d["d"] = _fmt(s.d) + (" (sd(Δ)=0: flagged)" if s.degenerate else "")
        rows.append("<tr>" + "".join(f"<td>{d[c] if c == 'd' else _fmt(d[c])}</td>" for c in cols) + "</tr>")
    loc_html = "".join(
        f"<h3>{html.escape(n)}</h3><p>Top components by |DRA|: {html.escape(', '.join(loc.top(3)))}; "
        f"Spearman(DRA, patching) = {_fmt(loc.spearman)} over components, {_fmt(loc.head_spearman)} over heads."
        f"</p><img src='{f}' style='max-width:100%'>"
        for n, f, loc in loc_imgs
    )
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in result.notes)
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}} td,th{{padding:2px 8px;text-align:right}}
table{{border-collapse:collapse}} tr:nth-child(even){{background:#f4f4f4}}</style></head><body>
<h1>{html.escape(title)}</h1>
<p>Δ = r(biased) − r(neutral): the biased side adds what the factor names. std_mean = mean Δ / sd of all probe
rewards ({_fmt(result.reward_sd)}). d = Cohen's d of Δ (±inf flagged when every pair moved by the same amount).
CI: BCa bootstrap 95% of mean Δ. p: sign-flip test (exact up to 2^n ≤ 1e5); q: Benjamini–Hochberg across the
factors; significant at q ≤ {result.alpha}. mean_len_diff: biased minus neutral length.</p>
<table><tr>{"".join(f"<th>{c}</th>" for c in cols)}</tr>{"".join(rows)}</table>
<ul>{notes}</ul>
<img src="forest.png" style="max-width:100%">
<h2>Localisation of significant factors</h2>
<p>Direct reward attribution (each component's direct share of mean Δ; sums to mean Δ) beside activation
patching at the reward position (biased activation into the neutral run).</p>
{loc_html or "<p>No significant factor, or the model could not be localised.</p>"}
</body></html>"""
    path = out / "index.html"
    path.write_text(page)
    return path
