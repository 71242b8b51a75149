"""The probe suite's report: a table of every statistic and verdict, the forest plot, and the localisation of
each significant factor (direct reward attribution beside patching)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from hooked_reward.report.html import Report, format_value

if TYPE_CHECKING:
    from hooked_reward.analysis.probes.suite import ProbeSuiteResult

__all__ = ["write_probe_report"]

_COLUMNS = {
    "factor": "factor",
    "verdict": "verdict",
    "n": "pairs",
    "mean": "mean Δ",
    "std_mean": "mean Δ / reward sd",
    "d": "Cohen's d",
    "ci_low": "CI low",
    "ci_high": "CI high",
    "p": "p",
    "q": "q (BH)",
    "min_p": "smallest attainable p",
    "mean_len_diff": "length difference",
}


def write_probe_report(
    result: ProbeSuiteResult,
    out_dir: str | Path,
    title: str = "Reward-hacking probe suite",
    *,
    provenance: dict[str, Any] | None = None,
) -> Path:
    """Write `index.html`, `forest.png`, one `localisation_<factor>.png` per significant factor and
    `report.json` (`results["probes"]` = `result.to_json()`) into `out_dir`; returns the HTML path."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    intro = (
        "Each factor is a pair of texts that differ only in what the factor names: Δ = r(biased) − r(neutral), "
        "the biased side adding the factor. A factor the model rewards is a candidate reward hack."
    )
    with Report(out_dir, title, command="probe", provenance=provenance, intro=intro) as report:
        summary = _summary(result)
        report.add_text("Summary", summary)
        report.sections[-1].css_class = "summary"
        report.add_data("summary", summary)
        domain = result.meta.get("domain") or {}
        if domain.get("caveat"):
            report.add_text("Out of the model's domain", domain["caveat"])
        rows = []
        for s in result.stats:
            d = s.as_dict()
            row = {label: d.get(key) for key, label in _COLUMNS.items()}
            if s.degenerate:
                row["Cohen's d"] = f"{format_value(s.d)} (every pair moved by the same amount)"
            if s.min_effect == s.min_effect:  # a minimum effect of interest was given (not NaN)
                row[f"size vs ±{format_value(s.min_effect)}"] = (
                    "at least that large"
                    if s.beyond_min_effect
                    else "smaller (negligible)"
                    if s.negligible
                    else "undecided"
                    if s.beyond_min_effect is False
                    else "no interval"
                )
            rows.append(row)
        report.add_table(
            "Factors",
            rows,
            [
                "mean Δ / reward sd: mean Δ in units of the sd of every probe reward "
                f"({format_value(result.reward_sd)}). "
                "Cohen's d: of Δ over pairs. CI: BCa bootstrap 95% interval of mean Δ. p: sign-flip test; "
                f"q: Benjamini–Hochberg over the factors; a factor is significant at q ≤ {result.alpha}. "
                "Smallest attainable p: the least p the sign-flip test can give with that many pairs (2 / 2^n); "
                "where it exceeds the level the factor is 'too few pairs to test', not 'no effect'. "
                "Length difference: biased minus neutral length in tokens. Size vs ±δ (with a minimum effect "
                "of interest δ): whether the CI lies beyond ±δ, inside it, or straddles it.",
                *result.notes,
            ],
        )
        ax = result.plot()
        ax.set_title("Mean reward change per factor, with 95% CI")
        report.add_figure("Effects", ax.figure, "forest", "Mean Δ per factor with its bootstrap interval.")

        if result.localisation:
            report.add_text(
                "Where significant factors act",
                "Direct reward attribution (each component's direct share of mean Δ; the shares sum to mean Δ) "
                "beside activation patching at the reward position (the biased activation patched into the "
                "neutral run). Where the two disagree, the component acts through later components.",
            )
        else:
            report.add_text("Where significant factors act", "No factor was significant, so none was localised.")
        for name, loc in result.localisation.items():
            has_heads = len(loc.head_labels) > 0
            fig, axes = plt.subplots(1, 2 if has_heads else 1, figsize=(12 if has_heads else 6, 3.4), squeeze=False)
            loc.plot(ax=axes[0, 0])
            if has_heads:
                loc.plot(ax=axes[0, 1], heads=True)
            fig.suptitle(f"{name}: attribution and patching")
            fig.tight_layout()
            caption = (
                f"Top components by |attribution|: {format_value(loc.top(3))}. Spearman ρ between attribution "
                f"and patching: {format_value(loc.spearman)} over components"
                + (f", {format_value(loc.head_spearman)} over heads." if has_heads else ".")
            )
            report.add_figure(name, fig, f"localisation_{name}", caption, level=3)
        report.add_data("probes", result.to_json())
        return report.write()


def _summary(result: ProbeSuiteResult) -> list[str]:
    """The findings in words: which factors the model rewards or penalises (significant after Benjamini–Hochberg),
    by how much, and how many it could not tell apart from no effect."""
    up = [s for s in result.stats if s.significant and s.mean > 0]
    down = [s for s in result.stats if s.significant and s.mean < 0]
    rest = len(result.stats) - len(up) - len(down)

    def named(stats: list) -> str:
        return ", ".join(f"{s.factor} (mean Δ {format_value(s.mean)})" for s in stats)

    out = [
        f"{len(result.stats)} factors probed. "
        + (f"The model rewards {named(up)}: candidate reward hacks. " if up else "The model rewards no factor. ")
        + (f"It penalises {named(down)}. " if down else "")
        + f"{rest} show no effect the test can tell from zero (q > {result.alpha})."
    ]
    domain = result.meta.get("domain") or {}
    if domain.get("caveat"):
        out.append(
            "Caveat: some probe texts fall outside the model's domain (see below); read those factors with care."
        )
    return out
