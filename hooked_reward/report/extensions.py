"""The five extensions on one model, one section each (a table, a plot and the numbers in `report.json`).

`write_extensions_report(outputs, out_dir)` writes the page from each section's output; the `*_section`
functions draw one section from its analysis results (`{"tables", "png", "text", "data"}`, plain data that the
results store keeps). `hooked_reward.study.extensions` runs the analyses (`extension_sections`).
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hooked_reward.report.html import Report, format_value, to_jsonable

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from hooked_reward.analysis.extensions.cascade import CascadeResult
    from hooked_reward.analysis.extensions.concepts import ConceptVector, DoseResponse
    from hooked_reward.analysis.extensions.conflict import ConflictResult
    from hooked_reward.analysis.extensions.distortion import DistortionResult
    from hooked_reward.analysis.extensions.divergence import DivergenceResult

__all__ = [
    "SECTIONS",
    "cascade_section",
    "concepts_section",
    "conflict_section",
    "distortion_section",
    "divergence_section",
    "write_extensions_report",
]


def _frame_rows(df: Any) -> list[dict[str, Any]]:
    return [{k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()} for row in df.to_dict("records")]


def write_extensions_report(
    outputs: Mapping[str, dict[str, Any]],
    out_dir: str | Path = "hooked_reward_extensions",
    *,
    provenance: dict[str, Any] | None = None,
) -> Path:
    """Write `out_dir/index.html` with one section per extension (a table and a PNG each) and `report.json`
    (`results[name]` per extension; `{"skipped": reason}` when one could not run), from each section's output
    (`SECTIONS` order; `study.extensions.extension_sections` computes them). Returns the HTML path."""
    report = Report(
        out_dir,
        "The five extensions",
        command="extensions",
        provenance=provenance,
        intro="Distortion index, divergence-aware patching, misalignment cascade, reward-term conflict and concept "
        "vectors, each on the model's preference pairs grouped into dimensions (see the docs' Extensions pages).",
    )
    with report:
        summary = _summary(outputs)
        report.add_text("Summary", summary)
        report.sections[-1].css_class = "summary"
        report.add_data("summary", summary)
        for name, heading in SECTIONS.items():
            out = outputs[name]
            if "skipped" in out:
                report.add_text(heading, f"Not run on this model: {out['skipped']}")
                report.add_data(name, {"skipped": out["skipped"]})
                continue
            report.add_image(heading, out["png"], name, caption=out["text"])  # the heading, then its tables
            for table in out["tables"]:
                report.add_table(table["heading"], table["rows"], table["caption"], level=table["level"])
            report.add_data(name, out["data"])
        return report.write()


def _summary(outputs: Mapping[str, dict[str, Any]]) -> list[str]:
    """One sentence per extension, in words, from its numbers (an extension that was skipped says so)."""
    out = []
    for name, heading in SECTIONS.items():
        o = outputs[name]
        title = heading.split(". ", 1)[-1]
        if "skipped" in o:
            out.append(f"{title}: not run on this model ({o['skipped']}).")
            continue
        d = o["data"]
        if name == "distortion":
            s = d["summary"]
            inverted = format_value(s["inverted"])
            out.append(
                f"{title}: {format_value(s['overall'])} overall (0: every pair ranked right, 1: chance or worse); "
                f"dimensions the reward gets backwards: {inverted}."
            )
        elif name == "divergence":
            flagged = [r for r in d["rows"] if r.get("flagged")]
            out.append(
                f"{title}: {len(flagged)} of {len(d['rows'])} ablations push the residual stream off the model's "
                "distribution (their reward changes are not to be trusted as they stand)."
            )
        elif name == "cascade":
            out.append(
                f"{title}: strength {format_value(d['strength'])} (share of the failures explained by one shared "
                f"pattern), p = {format_value(d['p_value'])}."
            )
        elif name == "conflict":
            rows = d["rows"]
            worst = max(rows, key=lambda r: r.get("disagree_rate", 0.0), default=None)
            if worst is None:
                out.append(f"{title}: no pair of terms.")
            else:
                out.append(
                    f"{title}: the terms {worst['i']} and {worst['j']} conflict most, on "
                    f"{format_value(worst['disagree_rate'])} of the pairs (share)."
                )
        elif name == "concepts":
            aucs = ", ".join(f"{r['concept']} {format_value(r['test_auc'])}" for r in d["rows"])
            out.append(f"{title}: held-out AUC of each concept direction (0.5: chance, 1: perfect): {aucs}.")
    return out


#: The sections, in report order: name -> heading.
SECTIONS = {
    "distortion": "1. Distortion index",
    "divergence": "2. Divergence-aware patching",
    "cascade": "3. Misalignment cascade",
    "conflict": "4. Reward-term conflict",
    "concepts": "5. Concept vectors",
}


def _section(tables: list[dict[str, Any]], fig: Figure, text: str, data: Any) -> dict[str, Any]:
    """One section's output: its tables, the figure as PNG bytes, its caption and its numbers (JSON-ready)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return {"tables": tables, "png": buf.getvalue(), "text": text, "data": to_jsonable(data)}


def _table(heading: str, rows: list[dict[str, Any]], caption: str = "", *, level: int = 3) -> dict[str, Any]:
    return {"heading": heading, "rows": to_jsonable(rows), "caption": caption, "level": level}


def distortion_section(res: DistortionResult) -> dict[str, Any]:
    """1. The distortion index per dimension and overall."""
    rows = _frame_rows(res.to_frame())
    s = res.summary()
    text = (
        f"Overall distortion {s['overall']:.3f} [{s['overall_low']:.3f}, {s['overall_high']:.3f}] "
        f"(0: every pair ranked right; 1: chance or worse). Inverted dimensions: {format_value(s['inverted'])}."
    )
    tables = [_table("Distortion index: per dimension", rows)]
    return _section(tables, res.plot_panels(), text, {"summary": s, "dimensions": rows})


def divergence_section(
    res: DivergenceResult, meta: dict[str, Any], n_reference: int, n_held_out: int
) -> dict[str, Any]:
    """2. Divergence-aware ablation per component and mode (`meta`: the fitted density's)."""
    rows = _frame_rows(res.to_frame())
    text = (
        f"Residual densities fitted on {n_reference} texts, threshold = 99th percentile of {n_held_out} "
        "held-out clean texts. A run is flagged when most rows exceed it."
    )
    tables = [_table("Divergence-aware ablation: per component and mode", rows)]
    return _section(tables, res.plot().figure, text, {"rows": rows, "meta": meta})


def cascade_section(res: CascadeResult) -> dict[str, Any]:
    """3. The misalignment cascade: strength, clusters, shared components."""
    rows = _frame_rows(res.to_frame())
    text = (
        f"Cascade strength (top-eigenvalue share) {res.strength:.3f}, p = {res.p_value:.3g} against "
        f"unaligned profiles. Clusters at t = {res.threshold:.2f}: "
        f"{' | '.join(format_value(c) for c in res.clusters) or 'none'}. "
        "Most shared components (loading): "
        f"{', '.join(f'{c} ({w:+.2f})' for c, w in res.shared_components[:3]) or 'none'}."
    )
    data = {
        "rows": rows,
        "strength": res.strength,
        "p_value": res.p_value,
        "p_distinct": res.p_distinct,
        "threshold": res.threshold,
        "clusters": res.clusters,
        "similarity": res.similarity,
        "shared_components": res.shared_components,
    }
    return _section([_table("Misalignment cascade: per dimension", rows)], res.plot_panels(), text, data)


def conflict_section(res: ConflictResult) -> dict[str, Any]:
    """4. Reward-term conflict per pair of terms."""
    rows = _frame_rows(res.to_frame())
    kind = "objectives (gated head)" if res.meta["gated"] else "dimension mean-difference directions"
    text = (
        f"Terms: {kind}. Δscore split exactly (max error {res.split_error:.2g}); "
        "conflict = terms of opposite sign on a pair, and which one Δscore follows."
    )
    tables = [_table("Reward-term conflict: per pair of terms", rows)]
    data = {"rows": rows, "split_error": res.split_error, "meta": res.meta}
    return _section(tables, res.plot_panels(), text, data)


def concepts_section(fits: Sequence[tuple[ConceptVector, DoseResponse, DoseResponse]]) -> dict[str, Any]:
    """5. Concept vectors: per dimension its concept direction, the dose-response with the final norm frozen and
    free (`fits`: `(concept, frozen, free)` per dimension)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(fits), figsize=(5 * len(fits), 3.6), squeeze=False)
    rows = []
    for ax, (cv, dr, dr_free) in zip(axes[0], fits, strict=True):
        dr_free.plot(ax=ax)
        row = _frame_rows(cv.to_frame())[0]
        row.update(
            slope_frozen=dr.slope,
            predicted_frozen=dr.predicted_slope,
            slope=dr_free.slope,
            slope_low=dr_free.slope_low,
            slope_high=dr_free.slope_high,
        )
        rows.append(row)
    fig.tight_layout()
    tables = [_table("Concept vectors: per dimension (positive = preferred side)", rows)]
    text = "Dose–response of each dimension's concept direction at the final residual."
    return _section(tables, fig, text, {"rows": rows})
