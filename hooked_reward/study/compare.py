"""`hooked-reward compare`: two reward models on the same pairs (rewards, lens, attributions, representations).

Units: one per (model, pair) (`A/17`, `B/17`): that pair's run under one model (`collect_run`). Summary:
`compare_runs` over every pair (`CompareResult`). Report: `report.compare.write_compare_report`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hooked_reward.errors import InputError
from hooked_reward.study.command import Command, Inputs
from hooked_reward.study.runner import Study, Unit
from hooked_reward.study.units import pair_input, pair_label

if TYPE_CHECKING:
    import argparse

    from hooked_reward.analysis.compare import CompareResult, ModelRun
    from hooked_reward.model import HookedRewardModel
    from hooked_reward.pairs import PreferencePair

__all__ = ["COMMAND", "Compare", "compare_results", "concat_runs"]


def compare_results(
    study: Study,
    model_a: HookedRewardModel,
    model_b: HookedRewardModel,
    pairs: Sequence[PreferencePair],
    *,
    names: tuple[str, str] = ("A", "B"),
    output_a: int | str | None = None,
    output_b: int | str | None = None,
    progress: bool = True,
    pairs_b: Sequence[PreferencePair] | None = None,
    **kwargs: Any,
) -> CompareResult | None:
    """`compare_models` with one stored unit per (model, pair) — `A/17`, `B/17`: that pair's rewards, lens,
    attributions and reward-position residuals under one model, run on its own — then the statistics over all
    pairs (`compare_runs`, rank 0; `kwargs` go there). Other ranks get None. `pairs` are rendered for model A;
    `pairs_b`, the same pairs rendered for model B (its own chat template), default to `pairs`."""
    from hooked_reward.analysis.compare import collect_run, compare_runs

    models = {"A": model_a, "B": model_b}
    outputs = {"A": output_a, "B": output_b}
    pairs_b = pairs if pairs_b is None else pairs_b
    if len(pairs_b) != len(pairs):
        raise InputError(f"pairs_b holds {len(pairs_b)} pairs, pairs {len(pairs)}: they must be the same pairs.")
    rendered = {"A": pairs, "B": pairs_b}
    units = [
        Unit(f"{side}/{i}", pair_input(p), {"model": side, "pair": i, "label": pair_label(p)})
        for side in models
        for i, p in enumerate(rendered[side])
    ]

    def compute(unit: Unit) -> Any:
        side = unit.info["model"]
        name = names[0] if side == "A" else names[1]
        return collect_run(
            models[side],
            [""],
            [unit.input["chosen"]],
            [unit.input["rejected"]],
            name=name,
            render=_as_is,
            batch_size=1,
            output=outputs[side],
            progress=False,
        )

    runs = study.run(units, compute, desc="compare", progress=progress)
    if runs is None:
        return None
    n = len(pairs)
    ra, rb = concat_runs(runs[:n]), concat_runs(runs[n:])
    return compare_runs(ra, rb, model_a=model_a, model_b=model_b, **kwargs)


def _as_is(_prompt: str, response: str) -> str:
    """The texts are already rendered."""
    return response


def concat_runs(parts: Sequence[ModelRun]) -> ModelRun:
    """`ModelRun`s of successive pairs joined along the pair axis (rewards and final normed residuals on axis 0;
    lens, attributions and residual stacks on axis 1; labels, depth and reward direction from the first)."""
    import numpy as np

    first = parts[0]
    kw = {f.name: getattr(first, f.name) for f in fields(first) if f.init}
    for name in ("r_chosen", "r_rejected", "xnorm_chosen", "xnorm_rejected"):
        kw[name] = np.concatenate([getattr(p, name) for p in parts], axis=0)
    for name in ("lens_chosen", "lens_rejected", "attr_chosen", "attr_rejected", "resid_chosen", "resid_rejected"):
        kw[name] = np.concatenate([getattr(p, name) for p in parts], axis=1)
    return type(first)(**kw)


class Compare(Command):
    name = "compare"
    help = "compare two reward models on the same pairs"
    default_out = "hooked_reward_compare"
    extra_models = ("model_b",)

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--model-b", required=True, help="the second checkpoint directory")

    def settings(self, inputs: Inputs) -> dict[str, Any]:
        return {"units": "model x pair"}

    def run(self, study: Study, inputs: Inputs) -> CompareResult | None:
        """The same pairs, rendered for each model as it reads them (its own chat template, or the organisms'
        render): `inputs.pairs` for model A, `inputs.pairs_for["model_b"]` for model B."""
        names = (inputs.names["model"], inputs.names["model_b"])
        if names[0] == names[1]:
            names = (f"{names[0]} (A)", f"{names[1]} (B)")
        return compare_results(
            study,
            inputs.model,
            inputs.models["model_b"],
            inputs.pairs or [],
            names=names,
            progress=inputs.progress,
            output_a=inputs.output,
            output_b=inputs.output,
            pairs_b=inputs.pairs_for.get("model_b"),
        )

    def provenance(self, inputs: Inputs) -> dict[str, Any]:
        return {"model B": inputs.args.model_b}

    def write_report(
        self, result: CompareResult, inputs: Inputs, out_dir: str | Path, provenance: dict[str, Any]
    ) -> Path:
        from hooked_reward.report.compare import write_compare_report

        return write_compare_report(result, out_dir, provenance=provenance)


COMMAND = Compare()
