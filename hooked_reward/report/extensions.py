"""The five extensions on one model, one section each (a table, a plot and the numbers in `report.json`).

`hooked-reward extensions [--model DIR]` calls `write_extensions_report`. Data, unless given: the templated
misalignment pairs (aligned preferred) as the distortion dimensions (`default_dimensions`; the CLI passes an
organism's own held-out pairs, grouped by mechanism, for a bundled organism). A section that cannot run on this
model (e.g. the gated conflict analysis without a gate) says why instead of failing the report.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from hooked_reward.analysis.extensions._common import final_normed
from hooked_reward.analysis.extensions.cascade import cascade_analysis, misalignment_pairs
from hooked_reward.analysis.extensions.concepts import dose_response, fit_concept
from hooked_reward.analysis.extensions.conflict import conflict_analysis, has_gated_terms
from hooked_reward.analysis.extensions.distortion import distortion_index
from hooked_reward.analysis.extensions.divergence import ablation_sweep, fit_residual_density
from hooked_reward.errors import HookedRewardError, InputError
from hooked_reward.names import act_name
from hooked_reward.report.html import Report, format_value, to_jsonable

if TYPE_CHECKING:
    from hooked_reward.model import HookedRewardModel

__all__ = ["SECTIONS", "default_dimensions", "extension_sections", "write_extensions_report"]

Pair = tuple[str, str]


def default_dimensions(
    model: HookedRewardModel, render: Callable[[str, str], str] | None = None, max_per_dimension: int = 40
) -> tuple[dict[str, list[Pair]], Callable[[str, str], str]]:
    """`({dimension: [(preferred, dispreferred)]}, render)`: the misalignment templates with the aligned response
    preferred, rendered with `render` (default: the model's chat template)."""
    render = render or model.render_chat
    return (
        {
            d: [pair.render(model, render=render) for pair in items][:max_per_dimension]
            for d, items in misalignment_pairs().items()
        },
        render,
    )


def _frame_rows(df: Any) -> list[dict[str, Any]]:
    return [{k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()} for row in df.to_dict("records")]


def write_extensions_report(
    model: HookedRewardModel,
    out_dir: str | Path = "hooked_reward_extensions",
    *,
    dimensions: Mapping[str, Sequence[Pair]] | None = None,
    render: Callable[[str, str], str] | None = None,
    texts: Sequence[str] | None = None,
    n_boot: int = 999,
    n_perm: int = 499,
    progress: bool = True,
    seed: int = 0,
    provenance: dict[str, Any] | None = None,
    outputs: Mapping[str, dict[str, Any]] | None = None,
) -> Path:
    """Run the five extensions on `model` and write `out_dir/index.html` with one section per extension (a table
    and a PNG each) and `report.json` (`results[name]` per extension; `{"skipped": reason}` when one cannot run).

    `dimensions`: `{name: [(preferred, dispreferred)]}` (default: see `default_dimensions`); `texts`: reference
    texts for divergence and conflict (default: every text of the dimensions). `outputs`: each section's output
    already computed (`extension_sections`, e.g. read back from the results store). Returns the HTML path.
    """
    if outputs is None:
        sections = extension_sections(
            model, dimensions=dimensions, render=render, texts=texts, n_boot=n_boot, n_perm=n_perm, seed=seed
        )
        outputs = {}
        for name, (_, compute) in sections.items():
            if progress:
                print(f"[extensions] {name} ...")
            outputs[name] = compute()
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


class _Tables:
    """Collects the tables a section makes (heading, rows, caption), so that its output is plain data."""

    def __init__(self) -> None:
        self.tables: list[dict[str, Any]] = []

    def add_table(self, heading: str, rows: list[dict[str, Any]], caption: str = "", *, level: int = 2) -> None:
        self.tables.append({"heading": heading, "rows": to_jsonable(rows), "caption": caption, "level": level})


def extension_sections(
    model: HookedRewardModel,
    *,
    dimensions: Mapping[str, Sequence[Pair]] | None = None,
    render: Callable[[str, str], str] | None = None,
    texts: Sequence[str] | None = None,
    n_boot: int = 999,
    n_perm: int = 499,
    seed: int = 0,
) -> dict[str, tuple[str, Callable[[], dict[str, Any]]]]:
    """The five sections as units of work: `{name: (heading, compute)}`, where `compute()` runs that extension and
    returns its output as data — `{"tables": [{heading, rows, caption}], "png": bytes of the figure, "text":
    caption, "data": numbers for report.json}`, or `{"skipped": reason}` when it cannot run on this model."""
    import io

    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    report = _Tables()
    if dimensions is None:
        dimensions, render = default_dimensions(model, render)
    else:
        render = render or model.render_chat
    dimensions = {k: list(v) for k, v in dimensions.items()}
    all_texts = (
        list(texts)
        if texts is not None
        else list(dict.fromkeys(t for pairs in dimensions.values() for pair in pairs for t in pair))
    )

    def distortion() -> tuple[Any, Any, str]:
        res = distortion_index(model, dimensions, n_boot=n_boot, seed=seed)
        report_rows = _frame_rows(res.to_frame())
        report.add_table("Distortion index: per dimension", report_rows, level=3)
        s = res.summary()
        text = (
            f"Overall distortion {s['overall']:.3f} [{s['overall_low']:.3f}, {s['overall_high']:.3f}] "
            f"(0: every pair ranked right; 1: chance or worse). Inverted dimensions: {format_value(s['inverted'])}."
        )
        return {"summary": s, "dimensions": report_rows}, res.plot_panels(), text

    def divergence() -> tuple[Any, Any, str]:
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(all_texts))
        if len(order) < 30:
            raise InputError(f"Divergence calibration needs at least 30 texts, got {len(order)}.")
        third = len(order) // 3
        ref = [all_texts[i] for i in order[:third]]
        held = [all_texts[i] for i in order[third : 2 * third]]
        test = [all_texts[i] for i in order[2 * third :]][:64]
        density = fit_residual_density(model, ref, held, k=min(32, max(2, len(ref) // 4)))
        comps = [act_name(f"{c}_out", layer) for layer in range(model.cfg.n_layers) for c in ("attn", "mlp")]
        res = ablation_sweep(model, test, density, comps, reference=ref, seed=seed)
        rows = _frame_rows(res.to_frame())
        report.add_table("Divergence-aware ablation: per component and mode", rows, level=3)
        text = (
            f"Residual densities fitted on {len(ref)} texts, threshold = 99th percentile of {len(held)} "
            "held-out clean texts. A run is flagged when most rows exceed it."
        )
        return {"rows": rows, "meta": density.meta}, res.plot().figure, text

    def cascade() -> tuple[Any, Any, str]:
        res = cascade_analysis(model, render=render, n_perm=n_perm, n_boot=n_boot, seed=seed)
        rows = _frame_rows(res.to_frame())
        report.add_table("Misalignment cascade: per dimension", rows, level=3)
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
        return data, res.plot_panels(), text

    def conflict() -> tuple[Any, Any, str]:
        pairs = [p for ps in dimensions.values() for p in ps]
        gated = has_gated_terms(model)
        directions, names = None, None
        if not gated:
            _, normed, _, _ = final_normed(model, all_texts)
            index = {t: i for i, t in enumerate(all_texts)}
            means, names = [], []
            for name, ps in dimensions.items():
                a = torch.tensor([index[p] for p, _ in ps])
                b = torch.tensor([index[d] for _, d in ps])
                means.append((normed[a] - normed[b]).mean(0))
                names.append(name)
            directions = torch.stack(means)
        res = conflict_analysis(model, all_texts, pairs, directions=directions, names=names, n_boot=n_boot, seed=seed)
        rows = _frame_rows(res.to_frame())
        report.add_table("Reward-term conflict: per pair of terms", rows, level=3)
        kind = "objectives (gated head)" if res.meta["gated"] else "dimension mean-difference directions"
        text = (
            f"Terms: {kind}. Δscore split exactly (max error {res.split_error:.2g}); "
            "conflict = terms of opposite sign on a pair, and which one Δscore follows."
        )
        return {"rows": rows, "split_error": res.split_error, "meta": res.meta}, res.plot_panels(), text

    def concepts() -> tuple[Any, Any, str]:
        import matplotlib.pyplot as plt

        names = list(dimensions)[:3]
        fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 3.6), squeeze=False)
        rows = []
        for ax, name in zip(axes[0], names, strict=True):
            ps = dimensions[name]
            cv = fit_concept(model, [p for p, _ in ps], [d for _, d in ps], name=name, n_boot=n_boot, seed=seed)
            probe_texts = [d for _, d in ps][:32]
            dr = dose_response(model, cv, probe_texts, freeze_norm=True, n_boot=n_boot, seed=seed)
            dr_free = dose_response(model, cv, probe_texts, n_boot=n_boot, seed=seed)
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
        report.add_table("Concept vectors: per dimension (positive = preferred side)", rows, level=3)
        fig.tight_layout()
        return {"rows": rows}, fig, "Dose–response of each dimension's concept direction at the final residual."

    def run(fn: Callable[[], tuple[Any, Any, str]]) -> Callable[[], dict[str, Any]]:
        def compute() -> dict[str, Any]:
            report.tables = []
            try:
                data, fig, text = fn()
            except (HookedRewardError, ValueError, RuntimeError, AttributeError) as err:
                return {"skipped": str(err)}
            buf = io.BytesIO()
            fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
            plt.close(fig)
            return {"tables": list(report.tables), "png": buf.getvalue(), "text": text, "data": to_jsonable(data)}

        return compute

    fns = {
        "distortion": distortion,
        "divergence": divergence,
        "cascade": cascade,
        "conflict": conflict,
        "concepts": concepts,
    }
    return {name: (heading, run(fns[name])) for name, heading in SECTIONS.items()}
