"""The report of `compare_models`: every metric with its interval, and the comparison plot."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from hooked_reward.report.glossary import metric_help, metric_label
from hooked_reward.report.html import Report, format_value

if TYPE_CHECKING:
    from hooked_reward.analysis.compare import CompareResult

__all__ = ["write_compare_report"]


def write_compare_report(
    result: CompareResult,
    out_dir: str | Path,
    title: str = "Reward model comparison",
    *,
    provenance: dict[str, Any] | None = None,
) -> Path:
    """Write `index.html`, `compare.png` and `report.json` (`results["compare"]` = `result.to_json()`)."""
    import matplotlib

    matplotlib.use("Agg", force=False)

    a, b = result.names
    with Report(out_dir, f"{title}: {a} vs {b}", command="compare", provenance=provenance) as report:
        scalars = result.scalars()
        rows = [
            {
                "metric": metric_label(name),
                "value": est[0],
                "CI low": est[1],
                "CI high": est[2],
                "meaning": metric_help(name),
            }
            for name, est in scalars.items()
        ]
        basis = "shared" if result.shared_basis else "not shared"
        summary = _summary(a, b, scalars)
        report.add_text("Summary", summary)
        report.sections[-1].css_class = "summary"
        report.add_data("summary", summary)
        report.add_table(
            "Metrics",
            rows,
            [
                f"Intervals: 95% bootstrap over pairs. Residual bases {basis} ({result.basis_reason}).",
                *result.notes,
            ],
        )
        fig = result.plot_panels()
        report.add_figure(
            "Comparison",
            fig,
            "compare",
            "Margins of the two models, their reward lens curves, attribution profiles and the CKA of their "
            "residual streams by layer.",
        )
        report.add_data("compare", result.to_json())
        return report.write()


def _summary(a: str, b: str, scalars: dict[str, tuple[float, float, float]]) -> list[str]:
    """The comparison in words: do the two models prefer the same texts, form the preference at the same depth,
    and read it with the same direction (each figure with its 95% interval)."""

    def est(key: str) -> str:
        v, lo, hi = scalars.get(key, (float("nan"),) * 3)
        return format_value(v) + (f" [{format_value(lo)}, {format_value(hi)}]" if lo == lo and hi == hi else "")

    return [
        f"{a} and {b} prefer the same text in {est('behaviour.agreement')} of the pairs (share), and their margins "
        f"correlate with Spearman ρ {est('behaviour.spearman')}. Accuracy (chosen preferred): {a} "
        f"{est('behaviour.accuracy_a')}, {b} {est('behaviour.accuracy_b')}.",
        f"Where the preference forms (0: embeddings, 1: last layer): {a} {est('formation.depth_a')}, {b} "
        f"{est('formation.depth_b')}. Similarity of where their direct attributions sit: "
        f"{est('mechanism.profile_similarity')} (1: the same). Final-layer CKA: {est('geometry.cka_final')}.",
    ]
