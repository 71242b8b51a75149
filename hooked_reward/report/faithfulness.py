"""The report of `hooked-reward faithfulness`: does direct reward attribution rank components as patching does,
over every pair (not per mechanism): per-pair Spearman ρ with its tests, and the pooled comparison."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hooked_reward.report import plots
from hooked_reward.report.agreement import agreement, verdict
from hooked_reward.report.html import Report, format_value

if TYPE_CHECKING:
    from hooked_reward.analysis.faithfulness import FaithfulnessResult
    from hooked_reward.model import HookedRewardModel
    from hooked_reward.report.analyze import Pair

__all__ = ["write_faithfulness_report"]


def write_faithfulness_report(
    model: HookedRewardModel,
    pairs: Sequence[Pair],
    out_dir: str | Path,
    *,
    provenance: dict[str, Any] | None = None,
    progress: bool = True,
    results: dict[str, FaithfulnessResult] | None = None,
) -> Path:
    """Run `faithfulness_study` by component and by head on `pairs` (chosen as clean, rejected as corrupted,
    aligned at the reward token) and write `index.html`, PNGs and `report.json`; returns the HTML path.

    `results`: `{"component": ..., "head": ...}` already computed (`study.units.faithfulness_results`, read back
    from the results store); without it they are computed here."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from hooked_reward.analysis.faithfulness import faithfulness_study

    intro = (
        "Per pair, the Spearman correlation between each component's direct reward attribution of "
        "r(chosen) − r(rejected) and its denoising patching effect (the chosen text's activation patched into the "
        "rejected text's run); pairs of different token lengths are aligned at the reward token. Over pairs: the "
        "mean ρ with a BCa bootstrap 95% interval, sign-flip and Wilcoxon tests against 0, and the pooled ρ of the "
        "mean effects."
    )
    output = None if model.n_outputs == 1 else 0
    if results is None:
        results = {
            by: faithfulness_study(
                model, [p.texts() for p in pairs], by=by, align="reward", output=output, progress=progress
            )
            for by in ("component", "head")
        }
    title = "Attribution vs patching"
    with Report(out_dir, title, command="faithfulness", provenance=provenance, intro=intro) as report:
        rows = []
        for by, result in results.items():
            a = agreement(result)
            summary = result.summary()
            rows.append(
                {
                    "over": "heads" if by == "head" else "attention and MLP layers",
                    "pairs used": summary["n_pairs"],
                    "mean ρ per pair": summary["mean_rho"],
                    "CI low": summary["ci_low"],
                    "CI high": summary["ci_high"],
                    "p (sign-flip)": summary["p_sign_flip"],
                    "p (Wilcoxon)": summary["p_wilcoxon"],
                    "pooled ρ": a.rho_pooled,
                    "pooled CI": "[" + format_value(list(a.rho_pooled_ci)) + "]",
                    "verdict": verdict(result.mean, result.ci),
                }
            )
            report.add_data(by, {"summary": summary, "agreement": a.to_json()})
        report.add_table(
            "Summary",
            rows,
            "Verdict: agree when the interval of the mean ρ lies above 0.5, disagree when it reaches 0, partly agree "
            "in between.",
        )
        for by, result in results.items():
            a = agreement(result)
            fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
            result.plot(ax=axes[0])
            axes[0].set_title(f"Per-pair ρ by {by}: mean {result.mean:.2f}", fontsize=9)
            plots.scatter_agreement(axes[1], a.labels, a.dra, a.patching, "C0", title=f"DRA against patching by {by}")
            fig.tight_layout()
            report.add_figure(
                f"By {by}",
                fig,
                f"faithfulness_{by}",
                "Left: the per-pair ρ with its mean and interval. Right: each pair's DRA and patching effect per "
                f"{by} (faint) and their means over pairs (large).",
            )
        return report.write()
