"""The main job: reward lens, direct reward attribution and activation patching on preference pairs.

`analyze(model, pairs, out_dir)` writes `index.html` (PNG plots: lens curves, attribution bars, patching
heatmaps) and `report.json` (every number). `hooked-reward demo` runs it on the bundled organism.

Multi-objective (ArmoRM) heads: the main views follow the final score (lens and attribution read with the gate held
fixed at each text's own gate weights; pair attributions add a "gate" row for the change of the gate, so they sum
to Δscore exactly), and an "Objectives and gate" section splits Δscore per objective (`score_difference`), with
per-objective margins, per-objective lens curves and a component × objective attribution heatmap.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hooked_reward.analysis.stats import accuracy, bootstrap_ci, check_nan_policy, finite_rows
from hooked_reward.errors import InputError
from hooked_reward.outputs import select_output
from hooked_reward.report.html import Report


@dataclass
class Pair:
    """One preference pair, rendered: `chosen`/`rejected` are full texts as the model reads them."""

    chosen: str
    rejected: str
    mechanism: str = "unlabelled"
    prompt: str = ""


def read_pairs(path: str | Path) -> list[dict]:
    """Read a JSONL of pairs (`prompt`, `chosen`, `rejected`, optional `mechanism`), with clear errors."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"Pairs file {str(path)!r} does not exist.")
    records = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise InputError(f"{path}:{n} is not valid JSON: {err}") from err
        missing = [k for k in ("chosen", "rejected") if k not in record]
        if missing:
            raise InputError(f"{path}:{n} lacks {missing}; each line needs 'prompt', 'chosen' and 'rejected'.")
        records.append(record)
    if not records:
        raise InputError(f"Pairs file {str(path)!r} has no pairs.")
    return records


def render_pairs(records: Sequence[dict], render: Callable[[str, str], str]) -> list[Pair]:
    """Full texts for each record: `render(prompt, response)`, unless the record already has full texts
    (`chosen_text`/`rejected_text`)."""
    pairs = []
    for r in records:
        prompt = r.get("prompt", "")
        chosen = r.get("chosen_text") or render(prompt, r["chosen"])
        rejected = r.get("rejected_text") or render(prompt, r["rejected"])
        pairs.append(Pair(chosen, rejected, str(r.get("mechanism", "unlabelled")), prompt))
    return pairs


def _mean_ci(x: np.ndarray) -> tuple[float, float, float]:
    """Mean with a BCa bootstrap 95% CI (NaN CI for fewer than 3 values or constant data)."""
    x = np.asarray(x, dtype=float)
    low, high = bootstrap_ci(x, n_resamples=1999)
    return float(x.mean()), float(low), float(high)


def analyze(
    model: Any,
    pairs: Sequence[Pair],
    out_dir: str | Path,
    *,
    title: str = "hooked_reward analysis",
    n_patch_pairs: int = 4,
    batch_size: int = 32,
    progress: bool = True,
    nan_policy: str = "raise",
) -> Path:
    """Run the reward lens, DRA and activation patching on `pairs`; write the report; return index.html.

    A pair with a non-finite margin raises `NonFiniteError` naming it; `nan_policy="omit"` drops those pairs
    (`report.json` records `n_omitted`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hooked_reward.analysis.attribution import pair_reward_attribution
    from hooked_reward.analysis.lens import reward_lens
    from hooked_reward.analysis.patching import patch_block_outputs

    if not pairs:
        raise InputError("No pairs to analyse.")
    check_nan_policy(nan_policy, allowed=("raise", "omit"))
    report = Report(Path(out_dir), title)
    chosen = [p.chosen for p in pairs]
    rejected = [p.rejected for p in pairs]
    mechanisms = sorted({p.mechanism for p in pairs})
    output = None if model.n_outputs == 1 else 0  # the model's output analysed (patching, behaviour)
    gated = model.head.readout_kind == "gate_fixed"
    names = model.head.readout_names()
    # The lens/DRA column of that output: ArmoRM's columns are its objectives then the score.
    column = names.index("score") if gated else output
    by_mech = {mech: np.array([p.mechanism == mech for p in pairs]) for mech in mechanisms}

    # Behaviour: margins and accuracy per mechanism.
    with torch.no_grad():
        r_chosen = _batched_rewards(model, chosen, output, batch_size)
        r_rejected = _batched_rewards(model, rejected, output, batch_size)
    margins = (r_chosen - r_rejected).numpy()
    ok = finite_rows(margins, what="analyze: margins r(chosen) − r(rejected) (pairs by index)", nan_policy=nan_policy)
    if not ok.all():  # nan_policy="omit": every analysis below runs on the pairs with finite margins only
        pairs = [p for p, keep in zip(pairs, ok, strict=True) if keep]
        chosen, rejected, margins = [p.chosen for p in pairs], [p.rejected for p in pairs], margins[ok]
        by_mech = {mech: flags[ok] for mech, flags in by_mech.items()}
        report.add_data("n_omitted", int((~ok).sum()))
    rows = []
    for mech in mechanisms:
        idx = by_mech[mech]
        mean, low, high = _mean_ci(margins[idx])
        rows.append(
            {
                "mechanism": mech,
                "pairs": int(idx.sum()),
                "accuracy": accuracy(margins[idx]),
                "mean margin": mean,
                "ci low": low,
                "ci high": high,
            }
        )
    report.add_table("Behaviour", rows, "Margin = r(chosen) − r(rejected); 95% BCa bootstrap CI over pairs.")
    report.add_data("behaviour", rows)
    report.add_data("margins", margins)

    # Reward lens of the margin, per layer (every column; the plot shows the analysed output).
    lens_c = reward_lens(model, chosen, batch_size=batch_size, progress=progress, output=None if gated else output)
    lens_r = reward_lens(model, rejected, batch_size=batch_size, progress=progress, output=None if gated else output)
    lens_margin = (lens_c.values - lens_r.values).numpy()  # [variant, pair, point(, column)]
    main_margin = lens_margin[..., column] if gated else lens_margin
    points = lens_c.labels["point"]
    fig, ax = plt.subplots(figsize=(8, 4))
    lens_data = {}
    for vi, variant in enumerate(lens_c.labels["variant"]):
        for mech in mechanisms:
            curve = main_margin[vi][by_mech[mech]].mean(0)
            ax.plot(
                range(len(points)),
                curve,
                marker=".",
                linestyle="-" if variant == "frozen" else "--",
                label=f"{mech} ({variant})",
            )
            lens_data[f"{variant}/{mech}"] = curve
    ax.set_xticks(range(len(points)), [str(p) for p in points], rotation=70, fontsize=7)
    ax.set_ylabel("score margin through the reward lens" if gated else "margin through the reward lens")
    ax.axhline(0, color="grey", linewidth=0.5)
    ax.legend(fontsize=7)
    caption = "Solid: final norm's scale frozen from the real run (additive); dashed: norm recomputed."
    if gated:
        caption += (
            " The score is read with the gate held fixed at each text's own gate weights "
            "(gating.hook_weights), so the lens follows how the residual moves the score through the "
            "objectives, not through the gate."
        )
    report.add_figure("Reward lens of the margin", fig, "lens", caption)
    report.add_data("lens", {"points": points, "curves": lens_data})

    # Direct reward attribution of Δreward, per head and per component.
    component_attr = None
    for by in ("component", "head"):
        attr = pair_reward_attribution(
            model, chosen, rejected, by=by, batch_size=batch_size, progress=progress, output=None if gated else output
        )
        if by == "component":
            component_attr = attr
        labels = attr.labels["component"]
        values = attr.values.numpy()
        values = values[..., column] if gated else values
        fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(labels)), 3.5))
        width = 0.8 / len(mechanisms)
        table = {}
        for mi, mech in enumerate(mechanisms):
            mean = values[by_mech[mech]].mean(0)
            table[mech] = mean
            ax.bar(np.arange(len(labels)) + mi * width, mean, width=width, label=mech)
        ax.set_xticks(np.arange(len(labels)) + 0.4 - width / 2, [str(x) for x in labels], rotation=70, fontsize=7)
        ax.set_ylabel("mean Δscore contribution" if gated else "mean Δreward contribution")
        ax.axhline(0, color="grey", linewidth=0.5)
        ax.legend(fontsize=7)
        caption = (
            "Mean over pairs of each component's contribution to r(chosen) − r(rejected) "
            "(frozen final-norm scale; contributions plus b_R sum to the reward)."
        )
        if gated:
            caption = (
                "Mean over pairs of each component's contribution to score(chosen) − score(rejected): its "
                "Δ per-objective direct rewards weighted by T·ḡ (the two texts' mean gate through the "
                "transform). The 'gate' bar is what the change of the gate between the two texts "
                "contributes; the rows sum to Δscore exactly."
            )
        report.add_figure(f"Direct reward attribution by {by}", fig, f"attribution_{by}", caption)
        report.add_data(
            f"attribution_{by}",
            {
                "labels": labels,
                "mean_by_mechanism": table,
                "sum_check": float(
                    np.abs(values.sum(1) - attr.rewards.numpy()[..., column if gated else slice(None)]).max()
                ),
            },
        )
    if gated and component_attr is not None:
        _objectives_section(report, model, pairs, mechanisms, by_mech, component_attr, lens_c, lens_r, plt)

    # Activation patching: denoise chosen activations into the rejected run, per layer and position. Pairs of
    # different token lengths are aligned at their right ends (the reward positions), never position-by-position.
    patch_rows = []
    for mech in mechanisms:
        for k, pair in enumerate([p for p in pairs if p.mechanism == mech][:n_patch_pairs]):
            align = None if _same_length(model, pair) else "reward"
            result = patch_block_outputs(
                model,
                pair.chosen,
                pair.rejected,
                per_position=True,
                mode="denoise",
                align=align,
                progress=False,
                output=output,
            )
            patch_rows.append({"mechanism": mech, "pair": k, "align": align or "position", "result": result})
    first: dict[str, dict] = {}
    for row in patch_rows:
        first.setdefault(row["mechanism"], row)
    for mech, row in first.items():
        fig = row["result"].plot(what="fraction").figure
        aligned = (
            "positions aligned at the reward token (the texts differ in length; unmatched positions blank)"
            if row["align"] == "reward"
            else "same-length texts, position by position"
        )
        report.add_figure(
            f"Activation patching ({mech})",
            fig,
            f"patching_{mech}",
            "Denoising: each component's clean (chosen) output patched into the rejected run; "
            f"value = fraction of the reward gap recovered; {aligned}.",
        )
    report.add_data(
        "patching",
        [
            {
                "mechanism": r["mechanism"],
                "pair": r["pair"],
                "align": r["align"],
                "values": r["result"].values,
                "labels": r["result"].labels,
            }
            for r in patch_rows
        ],
    )
    return report.write()


def _objectives_section(
    report: Any,
    model: Any,
    pairs: Sequence[Pair],
    mechanisms: list[str],
    by_mech: dict[str, np.ndarray],
    attr: Any,
    lens_c: Any,
    lens_r: Any,
    plt: Any,
) -> None:
    """ArmoRM: Δscore split per objective and the gate (`score_difference`), per-objective margins, per-objective
    frozen-lens margin curves, and a component × objective attribution heatmap per mechanism."""
    objectives = list(model.head.objective_names)
    k = len(objectives)
    split = attr.meta["score_difference"]
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
        ax.bar(np.arange(k + 1) + mi * width, terms[mech], width=width, label=mech)
    ax.set_xticks(np.arange(k + 1) + 0.4 - width / 2, objectives + ["gate"], rotation=30, fontsize=8)
    ax.set_ylabel("mean contribution to Δscore")
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
            ax.plot(range(len(points)), curve, marker=".", label=mech)
            curves[f"{name}/{mech}"] = curve
        ax.set_title(name, fontsize=9)
        ax.set_xticks(range(len(points)), points, rotation=70, fontsize=6)
        ax.axhline(0, color="grey", linewidth=0.5)
    axes[0, 0].set_ylabel("objective margin (frozen lens)")
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


def _batched_rewards(model: Any, texts: Sequence[str], output: int | None, batch_size: int) -> torch.Tensor:
    rewards = torch.cat([model(list(texts[i : i + batch_size])) for i in range(0, len(texts), batch_size)])
    return select_output(rewards, output, names=model.output_names, required=False)


def _same_length(model: Any, pair: Pair) -> bool:
    return int(model.tokenize([pair.chosen])[1].sum()) == int(model.tokenize([pair.rejected])[1].sum())
