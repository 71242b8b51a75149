"""`hooked-reward extensions`: the five extensions on one model (distortion, divergence, cascade, conflict,
concepts), one section each.

Units: one per extension (`extension/distortion`, ...): its tables, figure (PNG bytes), caption and numbers.
Summary: `{name: output}`. Report: `report.extensions.write_extensions_report`. Data: an organism's own held-out
pairs grouped by mechanism, else the templated misalignment pairs.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from hooked_reward.study.command import Command, Inputs
from hooked_reward.study.runner import Study, Unit

if TYPE_CHECKING:
    from hooked_reward.model import HookedRewardModel

__all__ = ["COMMAND", "Extensions", "extension_results"]


def extension_results(
    study: Study, model: HookedRewardModel, *, progress: bool = True, **kwargs: Any
) -> dict[str, dict[str, Any]] | None:
    """The five extensions with one stored unit per extension (`extension/distortion`, ...): its tables, figure
    (PNG bytes), caption and numbers (`report.extensions.extension_sections`; `kwargs` go there). Rank 0 gets
    `{name: output}`; other ranks None."""
    from hooked_reward.report.extensions import extension_sections

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
    takes_pairs = False

    def settings(self, inputs: Inputs) -> dict[str, Any]:
        organism = organism_dimensions(inputs)
        return {"n_boot": 999, "n_perm": 499, "dimensions": "organism pairs" if organism else "templates"}

    def run(self, study: Study, inputs: Inputs) -> dict[str, dict[str, Any]] | None:
        return extension_results(study, inputs.model, progress=inputs.progress, **organism_dimensions(inputs))

    def write_report(
        self, result: dict[str, dict[str, Any]], inputs: Inputs, out_dir: str | Path, provenance: dict[str, Any]
    ) -> Path:
        from hooked_reward.report.extensions import write_extensions_report

        return write_extensions_report(
            inputs.model, out_dir, progress=inputs.progress, provenance=provenance, outputs=result
        )


COMMAND = Extensions()
