"""The main job: how each mechanism (or label) moves the reward, and where observational attribution and causal
patching agree about which components carry it.

`write_analyze_report(summary, out_dir)` writes `index.html` and `report.json` from an `AnalyzeSummary` (every
number already computed: `hooked_reward.study.analyze.analyze` computes it, this module only draws and words
it). Per mechanism: behaviour with intervals; the reward lens; direct reward attribution (DRA) by component and
by head; exact denoising patching by component and by head, aggregated over all pairs with intervals; DRA against
patching (scatter, Spearman ρ per pair and pooled, with intervals) and a plain-language summary; attention of the
top heads (by patching) from the reward position over a pair's texts (interactive circuitsvis view and a PNG);
the pair's tokens coloured by how much each one matters. With a model card (`planted=`, the organisms' ground
truth), a "found vs planted" table. `hooked-reward demo` runs it on the bundled organism.

Multi-objective (ArmoRM) heads: the main views follow the final score (lens and attribution read with the gate held
fixed at each text's own gate weights; pair attributions add a "gate" row for the change of the gate, so they sum
to Δscore exactly), and an "Objectives and gate" section splits Δscore per objective (`score_difference`), with
per-objective margins, per-objective lens curves and a component × objective attribution heatmap.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hooked_reward.pairs import PreferencePair
from hooked_reward.report import plots
from hooked_reward.report.agreement import card_label, verdict
from hooked_reward.report.attention import attention_figure, circuitsvis_bundle, circuitsvis_view, highlight_tokens
from hooked_reward.report.html import Report, safe_name

if TYPE_CHECKING:
    from hooked_reward.analysis.agreement import Agreement
    from hooked_reward.analysis.attention import HeadAttention
    from hooked_reward.analysis.attribution import PairAttributionResult
    from hooked_reward.analysis.lens import RewardLensResult
    from hooked_reward.analysis.necessity import NecessityResult
    from hooked_reward.names import Component

__all__ = ["MISSING_VIEW", "AnalyzeSummary", "MechanismSummary", "Pair", "write_analyze_report"]

#: What a report says in place of the interactive attention views when circuitsvis is not installed.
MISSING_VIEW = (
    "The interactive attention views need circuitsvis, which is not installed: "
    "<code>pip install 'hooked_reward[viz]'</code> (or <code>scripts/demo.sh</code>, which installs it), then run "
    "the command again. The PNG above shows the same attention."
)


#: A rendered preference pair: `PreferencePair("", chosen_text, rejected_text, label=mechanism,
#: metadata={"prompt": prompt, ...})`, as `PreferencePair.rendered` makes it.
Pair = PreferencePair


@dataclass
class MechanismSummary:
    """What the report shows for one mechanism: its pairs, mean margin with a BCa 95% interval `(mean, low,
    high)`, accuracy, DRA against patching by component and by head (`Agreement`), the `top_heads` by mean
    patching effect with their attention on the first pair (`attention`: `[("chosen", ...), ("rejected", ...)]`),
    and that pair's token effects (`token_effects [position]`: the reward change when the rejected run's
    `blocks.0.hook_resid_pre` at a position is patched from the chosen run, aligned at the reward end; `token_gap`
    the pair's reward gap)."""

    name: str
    pairs: list[Pair]
    margin: tuple[float, float, float]
    accuracy: float
    by: dict[str, Agreement]
    top_heads: list[Component] = field(default_factory=list)
    attention: list[tuple[str, HeadAttention]] = field(default_factory=list)
    token_effects: np.ndarray = field(default_factory=lambda: np.zeros(0))
    token_gap: float = float("nan")
    #: which of `pairs` the attention and token views show (the largest margin), and further views of the next
    #: largest margins: `(pair index, attention, token_effects, token_gap)`
    view_pair: int = 0
    more_views: list[tuple[int, list[tuple[str, HeadAttention]], np.ndarray, float]] = field(default_factory=list)
    #: per granularity, what each component restores (denoising) beside what it removes (noising), with
    #: intervals and redundancy flags (`analysis.necessity`); empty under ranked patching
    necessity: dict[str, NecessityResult] = field(default_factory=dict)


@dataclass
class AnalyzeSummary:
    """Every number of the analyze report. `mechanisms` in order with `by_mech[m]` the mask of their pairs;
    `margins [pair]`; `n_omitted` pairs left out for a non-finite margin; `causal` how patching was computed
    (`causal_plan`, plus ranked patching's estimate and exact effect side by side); `method` "exact" or "ranked";
    `gated` an ArmoRM head (views follow its score, at lens/DRA `column`); the lens of each side with, per
    mechanism, the 95% bootstrap band of the frozen margin curve (`lens_bands[m] = (low, high)`, 3 pairs or more);
    the pair attributions by component and head with `attribution_ci[by][m] = (mean, low, high)` over pairs;
    `objectives`: a gated head's objective names."""

    mechanisms: list[str]
    by_mech: dict[str, np.ndarray]
    found: dict[str, MechanismSummary]
    margins: np.ndarray
    n_omitted: int
    causal: dict[str, Any]
    method: str
    gated: bool
    column: int | None
    lens_chosen: RewardLensResult
    lens_rejected: RewardLensResult
    lens_bands: dict[str, tuple[np.ndarray, np.ndarray]]
    attributions: dict[str, PairAttributionResult]
    attribution_ci: dict[str, dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]]
    objectives: list[str] | None = None
    #: unlabelled pairs grouped by their dominant component (`study.analyze._group_unlabelled`): groups and sizes,
    #: spread, whether the grouping split them; None for labelled pairs
    grouping: dict[str, Any] | None = None


def _ci_text(mean: float, low: float, high: float, digits: int = 2) -> str:
    def f(v: float) -> str:
        return "n/a" if not np.isfinite(v) else f"{v:.{digits}f}"

    return f"{f(mean)} [{f(low)}, {f(high)}]"


def write_analyze_report(
    summary: AnalyzeSummary,
    out_dir: str | Path,
    *,
    title: str = "hooked_reward analysis",
    planted: dict[str, Any] | None = None,
    provenance: dict[str, Any] | None = None,
    command: str = "analyze",
) -> Path:
    """Write the analyze report of `summary` into `out_dir`; returns index.html. `planted`: a model card's ground
    truth (`mechanisms[m]["components"]`, e.g. `blocks.0.attn.head.2`), which adds the "found vs planted" table."""
    import matplotlib

    matplotlib.use("Agg", force=False)

    found, mechanisms = summary.found, summary.mechanisms
    colour = plots.colours(mechanisms)
    column = summary.column if summary.gated else None
    n_pairs = int(sum(len(m.pairs) for m in found.values()))
    intro = (
        f"{n_pairs} preference pairs in {len(mechanisms)} groups ({', '.join(mechanisms)}). For each group: how "
        "much the model prefers the chosen text, where in the network the preference forms, which components "
        "carry it according to direct reward attribution (DRA, observational: each component's direct write onto "
        "the reward direction W_R) and according to activation patching (causal: the reward change when one "
        "component's output from the chosen text is patched into the rejected text's run), and whether the two "
        "agree."
    )
    with Report(out_dir, title, command=command, provenance=provenance, intro=intro) as report:
        report.add_text(
            "Summary",
            _summary(found),
        )
        report.sections[-1].css_class = "summary"
        report.add_data("causal", summary.causal)
        if summary.grouping is not None:
            _grouping(report, summary.grouping)
        if planted is not None:
            _found_vs_planted(report, found, planted)
        _behaviour(report, found, summary.margins)
        if summary.n_omitted:
            report.add_data("n_omitted", summary.n_omitted)
        _lens(report, summary, column, colour)
        _attribution(report, summary, column, colour)
        _agreement_table(report, found)
        bundle = circuitsvis_bundle()
        if bundle is not None:
            report.add_asset("circuitsvis.js", bundle, script=True)
        for mech, mechanism in found.items():
            _mechanism_sections(report, mechanism, colour[mech], bundle is not None, summary.method)
        if summary.gated:
            from hooked_reward.report.objectives import objectives_section

            objectives_section(
                report,
                summary.objectives or [],
                mechanisms,
                summary.by_mech,
                summary.attributions["component"],
                summary.lens_chosen,
                summary.lens_rejected,
            )
        return report.write()


def _grouping(report: Report, grouping: dict[str, Any]) -> None:
    """How unlabelled pairs were grouped by their dominant component, or how spread they are when one group."""
    sizes = ", ".join(f"{g} ({n} pairs)" for g, n in grouping["groups"].items())
    spread = grouping["spread"]
    if grouping["split"]:
        text = (
            "The pairs carry no labels, so they are grouped by the component that carries each one: the component "
            "of the by-head decomposition (DRA) contributing most toward the pair's margin. Groups: "
            f"{sizes}; components dominating fewer than {grouping['min_size']} pairs are pooled as 'mixed'. "
            "Each group is analysed below as a mechanism of its own."
        )
    else:
        text = (
            "The pairs carry no labels; grouped by the component contributing most toward each pair's margin, "
            f"they form one group ({sizes}): one mechanism appears to carry them all."
        )
    text += (
        f" Spread: the largest group holds {spread['largest']:.0%} of the pairs; the median pair's dominant "
        f"component gives {spread['median_share']:.0%} of its positive contributions."
    )
    report.add_text("Unlabelled pairs, grouped", text)
    report.add_data("grouping", grouping)


def _summary(found: dict[str, MechanismSummary]) -> list[str]:
    """One paragraph per mechanism, in words: the preference, who carries it by patching and by DRA, agreement."""
    out = []
    for mech, m in found.items():
        heads, comps = m.by["head"], m.by["component"]
        top_head = heads.top("patching")
        i = heads.labels.index(top_head)
        share = heads.patch_mean[i] / m.margin[0] if m.margin[0] else float("nan")
        dra_rank = heads.rank(top_head, "dra")
        word = verdict(heads.rho_mean, heads.rho_ci)
        line = (
            f"{mech}: the model prefers the chosen text in {m.accuracy:.0%} of {len(m.pairs)} pairs, mean margin "
            f"{_ci_text(*m.margin)}. Patching names head {top_head} first (patching it alone restores "
            f"{share:.0%} of the margin) and {comps.top('patching')} among layers; DRA ranks {top_head} "
            f"#{dra_rank} of {len(heads.labels)} heads (DRA {heads.dra_mean[i]:+.2f}) and puts {heads.top('dra')} "
            f"first. Over heads, DRA and patching {word} "
            f"(per-pair Spearman ρ {_ci_text(heads.rho_mean, *heads.rho_ci)})."
        )
        if dra_rank > 1 and heads.patch_mean[i] > 2 * abs(heads.dra_mean[i]):
            line += (
                f" {top_head} acts mostly through later components (its patching effect is far larger than its "
                "direct write onto the reward), which DRA cannot see."
            )
        out.append(line)
    return out


def _found_vs_planted(report: Report, found: dict[str, MechanismSummary], card: dict[str, Any]) -> None:
    rows = []
    for mech, info in card.get("mechanisms", {}).items():
        if mech not in found or not isinstance(info, dict):
            continue  # a card without per-component ground truth (e.g. planted objectives) has nothing to match
        for component in info.get("components", []):
            label = card_label(component)
            a = found[mech].by["head" if label.kind == "head" else "component"]
            if label not in a.labels:
                continue
            i = a.labels.index(label)
            rank_p, rank_d = a.rank(label, "patching"), a.rank(label, "dra")
            n_planted = sum(
                1 for c in info.get("components", []) if (card_label(c).kind == "head") == (label.kind == "head")
            )
            rows.append(
                {
                    "mechanism": mech,
                    "planted (model card)": f"{label} ({component})",
                    "patching effect [95% CI]": _ci_text(a.patch_mean[i], a.patch_low[i], a.patch_high[i]),
                    "rank by patching": f"{rank_p} of {len(a.labels)}",
                    "found by patching": "yes" if rank_p <= n_planted else "no",
                    "DRA [95% CI]": _ci_text(a.dra_mean[i], a.dra_low[i], a.dra_high[i]),
                    "rank by DRA": f"{rank_d} of {len(a.labels)}",
                    "found by DRA": "yes" if rank_d <= n_planted else "no",
                }
            )
    if not rows:
        return
    report.add_table(
        "Found vs planted",
        rows,
        "The components the model card says carry each mechanism (planted when the organism was trained, checked "
        "by ablation), against what this report found. 'Found' means the component is among the top k of its "
        "kind (heads, or attention/MLP layers) by mean effect, k being the number planted of that kind.",
    )
    report.add_data("found_vs_planted", rows)


def _behaviour(report: Report, found: dict[str, MechanismSummary], margins: np.ndarray) -> None:
    rows = [
        {
            "mechanism": mech,
            "pairs": len(m.pairs),
            "accuracy": m.accuracy,
            "mean margin": m.margin[0],
            "ci low": m.margin[1],
            "ci high": m.margin[2],
        }
        for mech, m in found.items()
    ]
    report.add_table(
        "Behaviour",
        rows,
        "Margin = r(chosen) − r(rejected); accuracy = share of pairs with a positive margin; 95% BCa bootstrap "
        "interval of the mean margin over pairs.",
    )
    report.add_data("behaviour", rows)
    report.add_data("margins", margins)


def _lens(report: Report, summary: AnalyzeSummary, column: int | None, colour: dict[str, str]) -> None:
    import matplotlib.pyplot as plt

    mechanisms, by_mech = summary.mechanisms, summary.by_mech
    lens_c, lens_r = summary.lens_chosen, summary.lens_rejected
    lens_margin = (lens_c.values - lens_r.values).double().numpy()  # [variant, pair, point(, column)]
    if column is not None:
        lens_margin = lens_margin[..., column]
    points = [str(p) for p in lens_c.labels["point"]]
    names = plots.lens_point_names(points)
    fig, ax = plt.subplots(figsize=(9, 4.2), layout="constrained")
    curves: dict[str, Any] = {}
    x = np.arange(len(points))
    for vi, variant in enumerate(lens_c.labels["variant"]):
        for mech in mechanisms:
            values = lens_margin[vi][by_mech[mech]]
            curve = values.mean(0)
            curves[f"{variant}/{mech}"] = curve
            style = plots.VARIANT_STYLES.get(variant, ":")
            ax.plot(x, curve, style, marker=".", color=colour[mech], label=f"{mech} ({variant})")
            if variant == "frozen" and mech in summary.lens_bands:
                low, high = summary.lens_bands[mech]
                ax.fill_between(x, low, high, color=colour[mech], alpha=0.12, linewidth=0)
    ax.set_xticks(x, names, rotation=30, ha="right", fontsize=8)
    ax.set_xlabel("residual stream after each sublayer")
    ax.set_ylabel("margin read through the reward head")
    ax.set_title("Reward lens of the margin r(chosen) − r(rejected)")
    ax.axhline(0, color="grey", linewidth=0.5)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="mechanism (variant)", title_fontsize=7)
    report.add_figure(
        "Reward lens",
        fig,
        "lens",
        "The margin read off the residual stream after each sublayer through the reward head (W_R, b_R). Colour = "
        "mechanism; solid = frozen (the final norm's scale taken from the full run, so the parts add up), dashed = "
        "recomputed (the final norm applied afresh at each point). Shaded: 95% bootstrap interval of the frozen "
        "mean. The last point equals the model's margin.",
    )
    report.add_data("lens", {"points": points, "point_names": names, "curves": curves})


def _attribution(report: Report, summary: AnalyzeSummary, column: int | None, colour: dict[str, str]) -> None:
    import matplotlib.pyplot as plt

    mechanisms, gated = summary.mechanisms, summary.gated
    for by, attr in summary.attributions.items():
        labels = [str(x) for x in attr.labels["component"]]
        values = attr.values.double().numpy()
        values = values[..., column] if column is not None else values
        keep = plots.nonzero_rows(labels, values)
        fig, ax = plt.subplots(figsize=(max(6.5, 0.42 * len(keep) * max(1, len(mechanisms)) / 2 + 3), 3.8))
        table, series = {}, {}
        for mech in mechanisms:
            mean, low, high = summary.attribution_ci[by][mech]
            table[mech] = {"mean": mean, "ci_low": low, "ci_high": high}
            series[mech] = (mean[keep], low[keep], high[keep])
        what = "Δscore" if gated else "Δreward"
        plots.bars_with_ci(
            ax,
            [labels[i] for i in keep],
            series,
            colour,
            ylabel=f"mean contribution to {what}",
            title=f"Direct reward attribution by {by}",
            xlabel="head (L = layer, H = head)" if by == "head" else "component",
        )
        caption = (
            f"Mean over pairs of each {by}'s direct contribution to r(chosen) − r(rejected), with 95% bootstrap "
            "intervals (the final norm's scale frozen; contributions plus the reward bias sum to the margin). "
            "Components that are zero for every pair (e.g. a bias the model does not have) are left out."
        )
        if gated:
            caption = (
                f"Mean over pairs of each {by}'s contribution to score(chosen) − score(rejected): its Δ "
                "per-objective direct rewards weighted by T·ḡ (the two texts' mean gate through the transform). "
                "The 'gate' bar is what the change of the gate between the two texts contributes; the rows sum "
                "to Δscore exactly."
            )
        report.add_figure(f"Direct reward attribution by {by}", fig, f"attribution_{by}", caption)
        rewards = attr.rewards.double().numpy()
        report.add_data(
            f"attribution_{by}",
            {
                "labels": labels,
                "mean_by_mechanism": {m: t["mean"] for m, t in table.items()},
                "ci_by_mechanism": {m: [t["ci_low"], t["ci_high"]] for m, t in table.items()},
                "sum_check": float(np.abs(values.sum(1) - (rewards[..., column] if gated else rewards)).max()),
            },
        )


def _agreement_table(report: Report, found: dict[str, MechanismSummary]) -> None:
    rows = []
    for mech, m in found.items():
        for by in ("component", "head"):
            a = m.by[by]
            rows.append(
                {
                    "mechanism": mech,
                    "over": "heads" if by == "head" else "attention and MLP layers",
                    "top by patching": a.top("patching"),
                    "top by DRA": a.top("dra"),
                    "ρ per pair, mean [95% CI]": _ci_text(a.rho_mean, *a.rho_ci),
                    "ρ pooled [95% CI]": _ci_text(a.rho_pooled, *a.rho_pooled_ci),
                    "verdict": verdict(a.rho_mean, a.rho_ci),
                }
            )
    report.add_table(
        "Attribution vs patching: agreement",
        rows,
        "Spearman ρ between each component's DRA and its patching effect. Per pair: ρ of one pair's two vectors, "
        "mean over pairs with a BCa bootstrap interval. Pooled: ρ between the mean-over-pairs DRA and patching "
        "vectors, with a bootstrap interval over pairs. Verdict: agree when the per-pair interval lies above 0.5, "
        "disagree when it reaches 0, partly agree in between.",
    )
    report.add_data("agreement", {mech: {by: a.to_json() for by, a in m.by.items()} for mech, m in found.items()})


def _token_markup(views: list[tuple[str, HeadAttention]], effects: np.ndarray, heading: str) -> str:
    """One pair's chosen and rejected tokens coloured by `effects` (per rejected position; the chosen side aligned
    at the reward end)."""
    chosen_tokens, rejected_tokens = views[0][1].tokens, views[1][1].tokens
    offset = len(chosen_tokens) - len(rejected_tokens)
    chosen_effects = [
        float(effects[i - offset]) if 0 <= i - offset < len(effects) else float("nan")
        for i in range(len(chosen_tokens))
    ]
    return (
        f"<p><em>{heading}</em></p><p><strong>chosen</strong></p>"
        + highlight_tokens(chosen_tokens, chosen_effects)
        + "<p><strong>rejected</strong></p>"
        + highlight_tokens(rejected_tokens, [float(v) for v in effects])
    )


def _necessity(report: Report, m: MechanismSummary) -> None:
    """What the components and heads that matter most restore (sufficiency) beside what they remove (necessity)."""
    rows = []
    for by, result in m.necessity.items():
        for r in result.ranked(6):
            rows.append(
                {
                    "kind": by,
                    "component": r["component"],
                    "restores (denoising)": _ci_text(r["restores"], *r["restores_ci"]),
                    "removes (noising)": _ci_text(r["removes"], *r["removes_ci"]),
                    "restores − removes": _ci_text(r["restores"] - r["removes"], *r["difference_ci"]),
                    "flag": r["flag"],
                }
            )
    redundant = [r["component"] for r in rows if r["flag"] == "redundant"]
    report.add_table(
        f"{m.name}: restores and removes",
        rows,
        [
            "Restores: the share of the pair's reward gap brought back when the component's activation from the "
            "chosen text is patched into the rejected run (sufficiency). Removes: the share lost when the "
            "rejected text's activation is patched into the chosen run (necessity). Means over pairs with 95% "
            "BCa intervals; the six largest of each kind. Redundant: restores clearly more than it removes "
            "(another component carries the gap when it is out); joint: removes clearly more than it restores.",
            *(
                [f"Redundant here: {', '.join(redundant)}: naming them as the mechanism overstates what they do alone."]
                if redundant
                else []
            ),
        ],
        level=3,
    )
    report.add_data(f"necessity_{m.name}", {by: r.ranked() for by, r in m.necessity.items()})


def _mechanism_sections(
    report: Report, m: MechanismSummary, colour: str, interactive: bool, method: str = "exact"
) -> None:
    import matplotlib.pyplot as plt

    mech = m.name
    report.add_text(
        f"Mechanism: {mech}",
        f"{len(m.pairs)} pairs; mean margin {_ci_text(*m.margin)}. Below: DRA and patching per component and per "
        "head (means over all pairs of this mechanism, 95% bootstrap intervals), their agreement, and what the "
        "heads that matter most attend to.",
    )
    fig, axes = plt.subplots(1, 2, figsize=(13, 3.6), gridspec_kw={"width_ratios": [1, 2]})
    for ax, by in zip(axes, ("component", "head"), strict=True):
        a = m.by[by]
        plots.bars_with_ci(
            ax,
            a.labels,
            {
                "DRA": (a.dra_mean, a.dra_low, a.dra_high),
                "patching": (a.patch_mean, a.patch_low, a.patch_high),
            },
            {"DRA": "#bbbbbb", "patching": colour},
            ylabel="Δreward",
            title=f"{mech}: DRA and patching by {by}",
            xlabel="head (L = layer, H = head)" if by == "head" else "component",
        )
    fig.tight_layout()
    report.add_figure(
        f"{mech}: DRA and patching",
        fig,
        f"dra_vs_patching_{mech}",
        "Grey: direct reward attribution of the margin. Coloured: the reward change when that component's output "
        "(all positions; the texts aligned at the reward token) from the chosen text is patched into the rejected "
        "text's run. A component with a large patching effect and a small DRA acts through later components.",
        level=3,
    )
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, by in zip(axes, ("component", "head"), strict=True):
        a = m.by[by]
        plots.scatter_agreement(
            ax,
            a.labels,
            a.dra,
            a.patching,
            colour,
            title=f"by {by}: ρ per pair {_ci_text(a.rho_mean, *a.rho_ci)}; "
            f"pooled {_ci_text(a.rho_pooled, *a.rho_pooled_ci)}",
        )
    fig.suptitle(f"{mech}: DRA against patching effect", fontsize=10)
    fig.tight_layout()
    report.add_figure(
        f"{mech}: DRA against patching",
        fig,
        f"scatter_{mech}",
        "Each faint dot is one pair and one component; large dots are means over pairs (the largest by patching "
        "named). On the dotted line DRA equals the patching effect.",
        level=3,
    )

    if m.necessity:
        _necessity(report, m)
    top, pair, views = m.top_heads, m.pairs[m.view_pair], m.attention
    fig = attention_figure(views, f"{mech}: attention from the reward position, heads {', '.join(top)}")
    caption = (
        f"The {len(top)} heads with the largest mean patching effect for {mech} ({', '.join(top)}), on the pair "
        "with the largest margin: how much each attends from the reward position (the token the reward is read at) "
        "to every token."
    )
    report.add_figure(f"{mech}: what the top heads attend to", fig, f"attention_{mech}", caption, level=3)
    if interactive:
        markup = "\n".join(
            f"<p><strong>{side}</strong></p>\n" + circuitsvis_view(view, f"cv-{safe_name(mech)}-{side}")
            for side, view in views
        )
        report.add_html(
            f"{mech}: attention from the reward position (interactive)",
            markup,
            f"circuitsvis: the pair's tokens coloured by how much each of {', '.join(top)} attends to them from the "
            "reward position. Pick a head with its button; hover a token for every head's weight.",
            level=3,
        )
        report.add_html(
            f"{mech}: full attention patterns (interactive)",
            circuitsvis_view(views[0][1], f"cv-{safe_name(mech)}-patterns", full=True),
            "circuitsvis, the chosen text: pick a head to see its whole pattern (rows: the token attending, "
            "columns: the token attended to; the last row is the reward position).",
            level=3,
        )
    else:
        report.add_html(
            f"{mech}: attention from the reward position (interactive)",
            f'<p class="missing-view">{MISSING_VIEW}</p>',
            level=3,
        )

    effects = m.token_effects
    rejected_tokens = views[1][1].tokens
    markup = "".join(
        _token_markup(v_views, v_effects, f"pair {i + 1} of {len(m.pairs)}, reward gap {v_gap:.2f}")
        for i, v_views, v_effects, v_gap in [(m.view_pair, views, effects, m.token_gap), *m.more_views]
    )
    markup += (
        '<p class="legend">Red: putting the chosen text\'s token here (its embedding, patched into the rejected '
        "run at the same position from the reward end) raises the reward; blue: lowers it; grey: no counterpart. "
        "Hover a token for the value.</p>"
    )
    n_views = 1 + len(m.more_views)
    report.add_html(
        f"{mech}: the tokens that matter",
        markup,
        f"The {n_views} {mech} pair(s) with the largest margins, each token coloured by the reward change when the "
        "rejected text's token at that position is replaced by the chosen text's"
        + ("; first-order estimates (attribution patching), as the budget allows." if method == "ranked" else "."),
        level=3,
    )
    report.add_data(
        f"circuit_{mech}",
        {
            "top_heads": top,
            "pair": dict(zip(("chosen", "rejected"), pair.texts(), strict=True)),
            "attention_from_reward": {
                side: {"tokens": v.tokens, "heads": v.heads, "weights": v.from_reward} for side, v in views
            },
            "token_effects": {"tokens": rejected_tokens, "delta_reward": effects},
        },
    )
