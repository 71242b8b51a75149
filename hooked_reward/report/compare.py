"""The report of `compare_models`: every metric with its interval, and the comparison plot."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from hooked_reward.report.html import Report

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
        rows = [
            {"metric": name, "value": est[0], "CI low": est[1], "CI high": est[2]}
            for name, est in result.scalars().items()
        ]
        basis = "shared" if result.shared_basis else "not shared"
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
