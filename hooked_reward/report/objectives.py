"""ArmoRM-style (gated, multi-objective) heads in the main report: Δscore split per objective and the gate,
per-objective margins, per-objective lens curves and a component × objective attribution heatmap."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from hooked_reward.report import plots

if TYPE_CHECKING:
    from hooked_reward.analysis.attribution import PairAttributionResult
    from hooked_reward.analysis.lens import RewardLensResult
    from hooked_reward.report.html import Report

__all__ = ["objectives_section"]


def objectives_section(
    report: Report,
    objectives: Sequence[str],
    mechanisms: Sequence[str],
    by_mech: dict[str, np.ndarray],
    attr: PairAttributionResult,
    lens_c: RewardLensResult,
    lens_r: RewardLensResult,
) -> None:
    """ArmoRM: Δscore split per objective and the gate (`score_difference`), per-objective margins, per-objective
    frozen-lens margin curves, and a component × objective attribution heatmap per mechanism. `objectives`: the
    head's objective names (its readout names but "score")."""
    import matplotlib.pyplot as plt

    colour = plots.colours(list(mechanisms))
    objectives = list(objectives)
    k = len(objectives)
    split = attr.meta["pair_split"]
    obj_term = split["objectives"].numpy()  # [pair, K]: ḡ_k Δt_k
    gate_term = split["gate"].numpy()  # [pair, K]: Δg_k t̄_k
    delta_raw = attr.rewards[:, :k].numpy()  # [pair, K]: Δ objectives.hook_rewards
    delta_score = attr.rewards[:, k].numpy()
    rows, terms = [], {}
    for mech in mechanisms:
        idx = by_mech[mech]
        row: dict[str, Any] = {"mechanism": mech, "Δscore": float(delta_score[idx].mean())}
        for j, name in enumerate(objectives):
            row[f"Δ{name}"] = float(delta_raw[idx, j].mean())
        for j, name in enumerate(objectives):
            row[f"{name} term"] = float(obj_term[idx, j].mean())
        row["gate term"] = float(gate_term[idx].sum(-1).mean())
        rows.append(row)
        terms[mech] = list(obj_term[idx].mean(0)) + [float(gate_term[idx].sum(-1).mean())]
    report.add_table(
        "Objectives and gate: per-objective margins",
        rows,
        "Δname: mean margin of each objective's raw reward (objectives.hook_rewards). 'name term': its share of "
        "Δscore, ḡ_k·Δt_k (t = transformed reward, ḡ = the two texts' mean gate weight); 'gate term': "
        "Σ_k Δg_k·t̄_k, what the change of the gate contributes. Terms sum to Δscore exactly (score_difference).",
    )
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * (k + 1) * max(1, len(mechanisms)) / 2), 3.5))
    width = 0.8 / len(mechanisms)
    for mi, mech in enumerate(mechanisms):
        ax.bar(np.arange(k + 1) + mi * width, terms[mech], width=width, label=mech, color=colour[mech])
    ax.set_xticks(np.arange(k + 1) + 0.4 - width / 2, objectives + ["gate"], rotation=30, fontsize=8)
    ax.set_ylabel("mean contribution to Δscore")
    ax.set_title("Δscore split into objective terms and the gate, per mechanism", fontsize=10)
    ax.axhline(0, color="grey", linewidth=0.5)
    ax.legend(fontsize=7)
    report.add_figure(
        "Objectives and gate: attribution of Δscore",
        fig,
        "objectives_delta_score",
        "Δscore = Σ_k ḡ_k Δt_k + Σ_k Δg_k t̄_k: each objective's term and the gate's, mean over pairs.",
    )

    frozen = lens_c.index_of("variant", "frozen")
    lens_margin = (lens_c.values[frozen] - lens_r.values[frozen]).numpy()  # [pair, point, K + 1]
    points = [str(p) for p in lens_c.labels["point"]]
    fig, axes = plt.subplots(1, k, figsize=(3.2 * k, 3), sharey=True, squeeze=False)
    curves: dict[str, Any] = {}
    for j, name in enumerate(objectives):
        ax = axes[0, j]
        for mech in mechanisms:
            curve = lens_margin[by_mech[mech], :, j].mean(0)
            ax.plot(range(len(points)), curve, marker=".", label=mech, color=colour[mech])
            curves[f"{name}/{mech}"] = curve
        ax.set_title(name, fontsize=9)
        ax.set_xticks(range(len(points)), plots.lens_point_names(points), rotation=60, ha="right", fontsize=6)
        ax.axhline(0, color="grey", linewidth=0.5)
    axes[0, 0].set_ylabel("objective margin (frozen lens)")
    fig.supxlabel("residual stream after each sublayer", fontsize=8)
    axes[0, -1].legend(fontsize=6)
    report.add_figure(
        "Objectives and gate: reward lens per objective",
        fig,
        "lens_objectives",
        "Mean margin of each objective's raw reward through the frozen reward lens (W_R row k); the "
        "last point is Δobjectives.hook_rewards.",
    )

    labels = [str(x) for x in attr.labels["component"]][:-1]  # the "gate" row is 0 for raw objective rewards
    values = attr.values.numpy()[:, :-1, :k]  # [pair, component, K]
    fig, axes = plt.subplots(
        1, len(mechanisms), figsize=(2.2 + 0.6 * k * len(mechanisms), 0.3 * len(labels) + 1.5), squeeze=False
    )
    heat = {}
    vmax = float(np.abs(values).max()) or 1.0
    for mi, mech in enumerate(mechanisms):
        mean = values[by_mech[mech]].mean(0)
        heat[mech] = mean
        ax = axes[0, mi]
        im = ax.imshow(mean, aspect="auto", cmap="RdBu_r", vmin=-vmax, vmax=vmax)
        ax.set_xticks(range(k), objectives, rotation=60, fontsize=7)
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
        ax.set_title(mech, fontsize=8)
    fig.colorbar(im, ax=axes[0, -1], label="mean Δ objective reward")
    report.add_figure(
        "Objectives and gate: component × objective attribution",
        fig,
        "attribution_objectives",
        "Mean over pairs of each component's direct contribution to each objective's raw reward margin "
        "(objectives.hook_rewards; the gate does not enter raw objective rewards).",
    )
    report.add_data(
        "objectives",
        {
            "names": objectives,
            "table": rows,
            "delta_score_terms": terms,
            "lens_points": points,
            "lens_curves": curves,
            "components": labels,
            "component_attribution": heat,
            "per_pair": {
                "delta_score": delta_score,
                "delta_objectives": delta_raw,
                "objective_terms": obj_term,
                "gate_terms": gate_term,
            },
        },
    )
