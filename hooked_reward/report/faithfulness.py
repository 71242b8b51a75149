"""The report of `hooked-reward faithfulness`: does direct reward attribution rank components as patching does,
over every pair and per mechanism: per-pair Spearman ρ with its tests, and the pooled comparison. It draws result
objects (`hooked_reward.study.faithfulness` computes them)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hooked_reward.report import plots
from hooked_reward.report.agreement import verdict
from hooked_reward.report.html import Report, format_value

if TYPE_CHECKING:
    from hooked_reward.analysis.agreement import Agreement
    from hooked_reward.analysis.faithfulness import FaithfulnessResult
    from hooked_reward.report.analyze import Pair

__all__ = ["by_label", "write_faithfulness_report"]


def write_faithfulness_report(
    results: Mapping[str, FaithfulnessResult],
    agreements: Mapping[str, Agreement],
    pairs: Sequence[Pair],
    out_dir: str | Path,
    *,
    per_mechanism: Mapping[str, Mapping[str, FaithfulnessResult]] | None = None,
    provenance: dict[str, Any] | None = None,
) -> Path:
    """Write `index.html`, PNGs and `report.json` of a faithfulness study by component and by head over `pairs`
    (chosen as clean, rejected as corrupted, aligned at the reward token): `results` (`{"component": ...,
    "head": ...}`), their `agreements` (`analysis.agreement.agreement` of each) and, where the pairs carry
    several labels, `per_mechanism[label][by]` (the same study over that label's pairs); returns the HTML path."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    intro = (
        "Per pair, the Spearman correlation between each component's direct reward attribution of "
        "r(chosen) − r(rejected) and its denoising patching effect (the chosen text's activation patched into the "
        "rejected text's run); pairs of different token lengths are aligned at the reward token. Over pairs: the "
        "mean ρ with a BCa bootstrap 95% interval, sign-flip and Wilcoxon tests against 0, and the pooled ρ of the "
        "mean effects."
    )
    title = "Attribution vs patching"
    groups = by_label(pairs)
    per_mechanism = per_mechanism or {}
    with Report(out_dir, title, command="faithfulness", provenance=provenance, intro=intro) as report:
        summary_text = _summary(results, per_mechanism, groups)
        report.add_text("Summary", summary_text)
        report.sections[-1].css_class = "summary"
        report.add_data("summary", summary_text)
        rows = []
        for by, result in results.items():
            a = agreements[by]
            summary = result.summary()
            rows.append(
                {
                    "over": _OVER[by],
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
            "All pairs pooled",
            rows,
            "Mean ρ per pair: the average over pairs of the Spearman rank correlation between DRA and patching "
            "effects (1: same order, 0: unrelated). CI: its 95% bootstrap interval. p (sign-flip), p (Wilcoxon): "
            "the chance of a mean this far from 0 if DRA and patching were unrelated. Pooled ρ: the correlation of "
            "the mean effects over pairs. Verdict: agree when the interval of the mean ρ lies above 0.5, disagree "
            "when it reaches 0, partly agree in between.",
        )
        if per_mechanism:
            mech_rows = []
            for mech, by_result in per_mechanism.items():
                for by, result in by_result.items():
                    mech_rows.append(
                        {
                            "mechanism": mech,
                            "over": _OVER[by],
                            "pairs used": result.n,
                            "mean ρ per pair": result.mean,
                            "CI low": result.ci[0],
                            "CI high": result.ci[1],
                            "verdict": verdict(result.mean, result.ci),
                        }
                    )
            report.add_table(
                "Per mechanism",
                mech_rows,
                "The same agreement within each label of the pairs: a pooled verdict can hide a mechanism on which "
                "DRA and patching disagree.",
            )
            summaries = {m: {b: r.summary() for b, r in d.items()} for m, d in per_mechanism.items()}
            report.add_data("per_mechanism", summaries)
        report.add_table(
            "Pairs used",
            _pairs_used(pairs),
            f"The {len(pairs)} pairs this report used, in order"
            + (f" (the first {_SHOWN} shown; all in report.json)" if len(pairs) > _SHOWN else "")
            + ". With --max-pairs N: at most N pairs, the labels taking turns in file order.",
        )
        report.add_data("pairs_used", _pairs_used(pairs, limit=None))
        for by, result in results.items():
            a = agreements[by]
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


_OVER = {"component": "attention and MLP layers", "head": "heads"}
_SHOWN = 50


def by_label(pairs: Sequence[Pair]) -> dict[str, list[int]]:
    """Pair indices per label ("unlabelled" for none), labels in order of first appearance."""
    groups: dict[str, list[int]] = {}
    for i, p in enumerate(pairs):
        groups.setdefault(p.label or "unlabelled", []).append(i)
    return groups


def _summary(
    results: Mapping[str, FaithfulnessResult],
    per_mechanism: Mapping[str, Mapping[str, FaithfulnessResult]],
    groups: dict[str, list[int]],
) -> list[str]:
    """The findings in words: the pooled verdict per granularity, then each mechanism's where labels exist."""
    n = len(next(iter(results.values())).rho)
    label_text = ", ".join(f"{m} ({len(i)})" for m, i in groups.items())
    pooled = "; ".join(
        f"over {_OVER[by]} they {verdict(r.mean, r.ci)} (mean ρ {r.mean:.2f}, 95% CI {r.ci[0]:.2f} to {r.ci[1]:.2f})"
        for by, r in results.items()
    )
    out = [
        f"Does direct reward attribution (DRA) rank the components that carry the preference as activation patching "
        f"does? Over all {n} pairs ({label_text}): {pooled}."
    ]
    for mech, by_result in per_mechanism.items():
        words = "; ".join(
            f"over {_OVER[by]} {verdict(r.mean, r.ci)} (mean ρ {r.mean:.2f})" for by, r in by_result.items()
        )
        out.append(f"{mech} ({len(groups[mech])} pairs): {words}.")
    disagree = [m for m, d in per_mechanism.items() if any(verdict(r.mean, r.ci) == "disagree" for r in d.values())]
    if disagree:
        out.append(
            "DRA disagrees with patching on " + ", ".join(disagree) + ": there the components that matter act through "
            "later ones, which DRA cannot see; trust patching for those pairs."
        )
    return out


def _pairs_used(pairs: Sequence[Pair], limit: int | None = _SHOWN) -> list[dict[str, Any]]:
    """One row per pair: its index, label, any id, and the start of its two texts."""
    rows = []
    for i, p in enumerate(pairs if limit is None else pairs[:limit]):
        chosen, rejected = p.texts()
        row: dict[str, Any] = {"pair": i, "label": p.label or "unlabelled"}
        meta = getattr(p, "metadata", None) or {}
        if "id" in meta:
            row["id"] = meta["id"]
        row["chosen (start)"] = _clip(str(chosen))
        row["rejected (start)"] = _clip(str(rejected))
        rows.append(row)
    return rows


def _clip(text: str, n: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"
