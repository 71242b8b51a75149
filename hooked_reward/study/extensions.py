"""`hooked-reward extensions`: the five extensions on one model (distortion, divergence, cascade, conflict,
concepts), one section each.

Units: one per extension (`extension/distortion`, ...): its tables, figure (PNG bytes), caption and numbers.
Summary: `{name: output}`. Report: `report.extensions.write_extensions_report`. Data (the dimensions every
extension reads, the cascade included): with `--pairs FILE`, the user's pairs grouped by their label (one dimension
per label, chosen preferred); else an organism's own held-out pairs grouped by mechanism, else the templated
misalignment pairs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hooked_reward.errors import HookedRewardError, InputError
from hooked_reward.study.command import Command, Inputs
from hooked_reward.study.runner import Study, Unit

if TYPE_CHECKING:
    from hooked_reward.model import HookedRewardModel

__all__ = [
    "COMMAND",
    "Extensions",
    "default_dimensions",
    "extension_results",
    "extension_sections",
    "extensions_report",
]


#: A (preferred, dispreferred) pair of rendered texts.
Pair = tuple[str, str]


def default_dimensions(
    model: HookedRewardModel, render: Callable[[str, str], str] | None = None, max_per_dimension: int = 40
) -> tuple[dict[str, list[Pair]], Callable[[str, str], str]]:
    """`({dimension: [(preferred, dispreferred)]}, render)`: the misalignment templates with the aligned response
    preferred, rendered with `render` (default: the model's chat template)."""
    from hooked_reward.analysis.extensions.cascade import misalignment_pairs

    render = render or model.render_chat
    return (
        {
            d: [pair.render(model, render=render) for pair in items][:max_per_dimension]
            for d, items in misalignment_pairs().items()
        },
        render,
    )


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
    returns its section drawn as data (`report.extensions.*_section`: `{"tables": [{heading, rows, caption}],
    "png": bytes of the figure, "text": caption, "data": numbers for report.json}`), or `{"skipped": reason}` when
    it cannot run on this model.

    `dimensions`: `{name: [(preferred, dispreferred)]}` (default: `default_dimensions`); `texts`: reference texts
    for divergence and conflict (default: every text of the dimensions)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import numpy as np
    import torch

    from hooked_reward.analysis.extensions._common import final_normed
    from hooked_reward.analysis.extensions.cascade import cascade_analysis
    from hooked_reward.analysis.extensions.concepts import dose_response, fit_concept
    from hooked_reward.analysis.extensions.conflict import conflict_analysis, has_gated_terms
    from hooked_reward.analysis.extensions.distortion import distortion_index
    from hooked_reward.analysis.extensions.divergence import ablation_sweep, fit_residual_density
    from hooked_reward.names import act_name
    from hooked_reward.report import extensions as sections

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

    def distortion() -> dict[str, Any]:
        return sections.distortion_section(distortion_index(model, dimensions, n_boot=n_boot, seed=seed))

    def divergence() -> dict[str, Any]:
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
        return sections.divergence_section(res, density.meta, len(ref), len(held))

    def cascade() -> dict[str, Any]:
        from hooked_reward.pairs import PreferencePair

        # the same dimensions as every other extension (the user's own, an organism's, or the templates)
        named = {d: [PreferencePair("", p, q, d) for p, q in ps] for d, ps in dimensions.items()}
        res = cascade_analysis(model, named, n_perm=n_perm, n_boot=n_boot, seed=seed)
        return sections.cascade_section(res)

    def conflict() -> dict[str, Any]:
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
        return sections.conflict_section(res)

    def concepts() -> dict[str, Any]:
        fits = []
        for name in list(dimensions)[:3]:
            ps = dimensions[name]
            cv = fit_concept(model, [p for p, _ in ps], [d for _, d in ps], name=name, n_boot=n_boot, seed=seed)
            probe_texts = [d for _, d in ps][:32]
            dr = dose_response(model, cv, probe_texts, freeze_norm=True, n_boot=n_boot, seed=seed)
            dr_free = dose_response(model, cv, probe_texts, n_boot=n_boot, seed=seed)
            fits.append((cv, dr, dr_free))
        return sections.concepts_section(fits)

    def run(fn: Callable[[], dict[str, Any]]) -> Callable[[], dict[str, Any]]:
        def compute() -> dict[str, Any]:
            try:
                return fn()
            except (HookedRewardError, ValueError, RuntimeError, AttributeError) as err:
                return {"skipped": str(err)}

        return compute

    fns = {
        "distortion": distortion,
        "divergence": divergence,
        "cascade": cascade,
        "conflict": conflict,
        "concepts": concepts,
    }
    return {name: (heading, run(fns[name])) for name, heading in sections.SECTIONS.items()}


def extensions_report(
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
) -> Path:
    """Run the five extensions on `model` (`extension_sections`, in this process) and write their report
    (`report.extensions.write_extensions_report`); returns the HTML path."""
    from hooked_reward.report.extensions import write_extensions_report

    outputs = {}
    for name, (_, compute) in extension_sections(
        model, dimensions=dimensions, render=render, texts=texts, n_boot=n_boot, n_perm=n_perm, seed=seed
    ).items():
        if progress:
            print(f"[extensions] {name} ...")
        outputs[name] = compute()
    return write_extensions_report(outputs, out_dir, provenance=provenance)


def extension_results(
    study: Study, model: HookedRewardModel, *, progress: bool = True, **kwargs: Any
) -> dict[str, dict[str, Any]] | None:
    """The five extensions with one stored unit per extension (`extension/distortion`, ...): its tables, figure
    (PNG bytes), caption and numbers (`extension_sections`; `kwargs` go there). Rank 0 gets
    `{name: output}`; other ranks None."""
    sections = extension_sections(model, **kwargs)
    inputs = {
        "dimensions": {k: [list(p) for p in v] for k, v in (kwargs.get("dimensions") or {}).items()},
        "texts": list(kwargs.get("texts") or []),
    }
    units = [Unit(f"extension/{name}", {"section": name, **inputs}, {"section": name}) for name in sections]
    outputs = study.run(units, lambda unit: sections[unit.info["section"]][1](), desc="extensions", progress=progress)
    if outputs is None:
        return None
    return dict(zip(sections, outputs, strict=True))


def pair_dimensions(inputs: Inputs) -> dict[str, Any]:
    """The user's `--pairs`, grouped by label into dimensions `{label: [(chosen, rejected)]}` (already rendered),
    as `extension_sections`' `dimensions`; `{}` without `--pairs`."""
    if inputs.pairs is None:
        return {}
    dims: dict[str, list[tuple[str, str]]] = {}
    for p in inputs.pairs:
        dims.setdefault(p.label or "unlabelled", []).append(p.texts())
    return {"dimensions": dims, "render": lambda _prompt, response: response}


def organism_dimensions(inputs: Inputs, per_dimension: int = 40) -> dict[str, Any]:
    """For a bundled organism, its own held-out pairs grouped by mechanism (at most `per_dimension` each), rendered
    with its render, as `extension_sections`' `dimensions` and `render`; `{}` for a user checkpoint."""
    if inputs.bundled is None or inputs.render is None:
        return {}
    dims: dict[str, list[tuple[str, str]]] = {}
    for p in inputs.bundled:
        group = dims.setdefault(p["mechanism"], [])
        if len(group) < per_dimension:
            group.append((inputs.render(p["prompt"], p["chosen"]), inputs.render(p["prompt"], p["rejected"])))
    return {"dimensions": dims, "render": inputs.render}


class Extensions(Command):
    name = "extensions"
    help = "the five extensions"
    default_out = "hooked_reward_extensions"
    takes_pairs = True
    pairs_optional = True  # --pairs: the user's pairs, one dimension per label; else the organism's or templates

    def _data(self, inputs: Inputs) -> dict[str, Any]:
        return pair_dimensions(inputs) or organism_dimensions(inputs)

    def settings(self, inputs: Inputs) -> dict[str, Any]:
        source = "pairs" if inputs.pairs is not None else "organism pairs" if organism_dimensions(inputs) else None
        return {"n_boot": 999, "n_perm": 499, "dimensions": source or "templates"}

    def run(self, study: Study, inputs: Inputs) -> dict[str, dict[str, Any]] | None:
        return extension_results(study, inputs.model, progress=inputs.progress, **self._data(inputs))

    def write_report(
        self, result: dict[str, dict[str, Any]], inputs: Inputs, out_dir: str | Path, provenance: dict[str, Any]
    ) -> Path:
        from hooked_reward.report.extensions import write_extensions_report

        return write_extensions_report(result, out_dir, provenance=provenance)


COMMAND = Extensions()
