"""`hooked-reward faithfulness`: does direct reward attribution rank components as patching does, over every pair.

Units: one per (granularity, pair) (`component/17`, `head/17`): `faithfulness_pair` of that pair, chosen as clean
and rejected as corrupted. Summary: `summarise_faithfulness` per granularity (`{by: FaithfulnessResult}`), their
agreement statistics and, where the pairs carry several labels, the same per label (`FaithfulnessSummary`).
Report: `report.faithfulness.write_faithfulness_report`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hooked_reward.analysis.attribution import Granularity
from hooked_reward.study.command import Command, Inputs
from hooked_reward.study.runner import Study, Unit
from hooked_reward.study.units import pair_input, pair_label

if TYPE_CHECKING:
    from hooked_reward.analysis.agreement import Agreement
    from hooked_reward.analysis.faithfulness import FaithfulnessResult
    from hooked_reward.model import HookedRewardModel
    from hooked_reward.pairs import PreferencePair

__all__ = [
    "COMMAND",
    "FAITHFULNESS_BY",
    "Faithfulness",
    "FaithfulnessSummary",
    "faithfulness_by_label",
    "faithfulness_results",
    "faithfulness_subset",
    "faithfulness_units",
]

#: The granularities of the faithfulness study (and of `analyze`'s attributions).
FAITHFULNESS_BY: tuple[Granularity, ...] = ("component", "head")


def faithfulness_units(pairs: Sequence[PreferencePair], by: Sequence[str] = FAITHFULNESS_BY) -> list[Unit]:
    """One unit per (granularity, pair): `component/17`, `head/17`, ..."""
    return [
        Unit(f"{g}/{i}", {"by": g, **pair_input(p)}, {"by": g, "pair": i, "label": pair_label(p)})
        for g in by
        for i, p in enumerate(pairs)
    ]


def faithfulness_unit(
    model: HookedRewardModel,
    unit: Unit,
    *,
    align: str | None = "reward",
    output: int | str | None = None,
    max_rows: int = 64,
) -> dict[str, Any]:
    """One unit: `faithfulness_pair` of its pair at its granularity."""
    from hooked_reward.analysis.faithfulness import faithfulness_pair

    return faithfulness_pair(
        model,
        unit.input["chosen"],
        unit.input["rejected"],
        by=unit.info["by"],
        align=align,
        output=output,
        max_rows=max_rows,
    )


def summarise_units(
    model: HookedRewardModel,
    rows: Sequence[dict[str, Any]],
    by: Sequence[str] = FAITHFULNESS_BY,
    *,
    n_resamples: int = 9999,
    seed: int = 0,
) -> dict[str, FaithfulnessResult]:
    """`{by: FaithfulnessResult}` from the rows of `faithfulness_units` (granularity-major, in pair order)."""
    from hooked_reward.analysis.faithfulness import _dra_labels, summarise_faithfulness

    n = len(rows) // max(1, len(by))
    return {
        g: summarise_faithfulness(
            list(rows[k * n : (k + 1) * n]), _dra_labels(model, g), by=g, n_resamples=n_resamples, seed=seed
        )
        for k, g in enumerate(by)
    }


def faithfulness_results(
    study: Study,
    model: HookedRewardModel,
    pairs: Sequence[PreferencePair],
    *,
    by: Sequence[str] = FAITHFULNESS_BY,
    align: str | None = "reward",
    output: int | str | None = None,
    max_rows: int = 64,
    n_resamples: int = 9999,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, FaithfulnessResult] | None:
    """`faithfulness_study` over `pairs` (chosen as clean, rejected as corrupted) for each granularity in `by`,
    one stored unit per (granularity, pair). Returns `{by: FaithfulnessResult}` on rank 0, None elsewhere."""
    rows = study.run(
        faithfulness_units(pairs, by),
        lambda unit: faithfulness_unit(model, unit, align=align, output=output, max_rows=max_rows),
        desc="faithfulness",
        progress=progress,
    )
    return None if rows is None else summarise_units(model, rows, by, n_resamples=n_resamples, seed=seed)


def faithfulness_subset(result: FaithfulnessResult, idx: Sequence[int]) -> FaithfulnessResult:
    """`result` summarised over the pairs `idx` only (the same per-pair rows, `summarise_faithfulness` again)."""
    from hooked_reward.analysis.faithfulness import summarise_faithfulness

    gaps = result.meta.get("reward_gap", [float("nan")] * len(result.rho))
    rows = [
        {
            "attribution": result.attribution[i],
            "patching": result.patching[i],
            "rho": float(result.rho[i]),
            "reward_gap": gaps[i],
        }
        for i in idx
    ]
    return summarise_faithfulness(rows, list(result.components), by=result.by, confidence=result.confidence)


def faithfulness_by_label(
    results: dict[str, FaithfulnessResult], pairs: Sequence[PreferencePair]
) -> dict[str, dict[str, FaithfulnessResult]]:
    """`{label: {by: result over that label's pairs}}` when the pairs carry several labels, else `{}` (a pooled
    verdict can hide a mechanism on which DRA and patching disagree)."""
    from hooked_reward.report.faithfulness import by_label

    groups = by_label(pairs)
    if len(groups) < 2:
        return {}
    return {mech: {by: faithfulness_subset(r, idx) for by, r in results.items()} for mech, idx in groups.items()}


@dataclass
class FaithfulnessSummary:
    """What the faithfulness report shows: `results[by]` over all pairs, their `agreements[by]`, and
    `per_mechanism[label][by]` (empty for pairs of one label)."""

    results: dict[str, FaithfulnessResult]
    agreements: dict[str, Agreement]
    per_mechanism: dict[str, dict[str, FaithfulnessResult]]


class Faithfulness(Command):
    name = "faithfulness"
    help = "DRA vs patching agreement over pairs"
    default_out = "hooked_reward_faithfulness"

    def settings(self, inputs: Inputs) -> dict[str, Any]:
        return {"align": "reward", "max_rows": 64}

    def units(self, inputs: Inputs) -> list[Unit]:
        return faithfulness_units(inputs.pairs or [])

    def compute_unit(self, inputs: Inputs, unit: Unit) -> dict[str, Any]:
        return faithfulness_unit(inputs.model, unit, align="reward", output=inputs.output, max_rows=64)

    def summarise(self, inputs: Inputs, rows: list[Any]) -> FaithfulnessSummary:
        from hooked_reward.analysis.agreement import agreement

        results = summarise_units(inputs.model, rows)
        agreements = {by: agreement(r) for by, r in results.items()}
        return FaithfulnessSummary(results, agreements, faithfulness_by_label(results, inputs.pairs or []))

    def write_report(
        self, result: FaithfulnessSummary, inputs: Inputs, out_dir: str | Path, provenance: dict[str, Any]
    ) -> Path:
        from hooked_reward.report.faithfulness import write_faithfulness_report

        return write_faithfulness_report(
            result.results,
            result.agreements,
            inputs.pairs or [],
            out_dir,
            per_mechanism=result.per_mechanism,
            provenance=provenance,
        )


COMMAND = Faithfulness()
