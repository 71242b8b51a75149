"""`hooked-reward probe`: the reward-hacking probe suite (does a surface factor move the reward, and where).

Two stored phases: one unit per factor (`factor/NAME`: its pairs scored), then, from the statistics over all
factors, one unit per significant factor (`localise/NAME`). Summary: `ProbeSuiteResult`. Report:
`report.probes.write_probe_report`.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hooked_reward.study.arguments import min_effect, positive_int
from hooked_reward.study.command import Command, Inputs
from hooked_reward.study.runner import Study, Unit

if TYPE_CHECKING:
    from hooked_reward.analysis.probes.suite import ProbeSuiteResult
    from hooked_reward.model import HookedRewardModel

__all__ = ["COMMAND", "Probe", "probe_results"]


def probe_results(
    study: Study,
    model: HookedRewardModel,
    *,
    factors: Any = None,
    n_pairs: int = 30,
    seed: int = 0,
    render: Any = None,
    batch_size: int = 32,
    output: int | str | None = None,
    progress: bool = True,
    **kwargs: Any,
) -> ProbeSuiteResult | None:
    """`run_probe_suite` in two stored phases: one unit per factor (`factor/NAME`: its pairs scored, in batches
    of that factor's pairs only), then, from the statistics over all factors (computed on every rank), one unit
    per significant factor (`localise/NAME`). `kwargs` go to `summarise_probe_scores` (alpha, n_boot,
    min_effect, nan_policy). Rank 0 gets the result; other ranks None."""
    from hooked_reward.analysis.probes.suite import (
        localise_factor,
        probe_pairs,
        render_texts,
        score_factor,
        summarise_probe_scores,
    )

    all_pairs, phrase_of = probe_pairs(factors, n_pairs, seed)

    def texts(ps: Sequence[Any]) -> dict[str, list[str]]:
        return {
            "biased": render_texts(model, [p.prompt for p in ps], [p.biased for p in ps], render),
            "neutral": render_texts(model, [p.prompt_neutral for p in ps], [p.neutral for p in ps], render),
        }

    inputs = {name: {"factor": name, **texts(ps)} for name, ps in all_pairs.items()}
    units = [Unit(f"factor/{name}", inputs[name], {"factor": name, "pairs": len(ps)}) for name, ps in all_pairs.items()]

    def score(unit: Unit) -> Any:
        name = unit.info["factor"]
        return score_factor(model, all_pairs[name], render=render, batch_size=batch_size, output=output)

    scores = study.run(units, score, desc="probe factors", progress=progress, everywhere=True)
    assert scores is not None
    result = summarise_probe_scores(
        model, all_pairs, phrase_of, dict(zip(all_pairs, scores, strict=True)), seed=seed, **kwargs
    )
    local_units = [Unit(f"localise/{name}", inputs[name], {"factor": name}) for name in result.significant]

    def localise(unit: Unit) -> Any:
        ps = result.pairs[unit.info["factor"]]
        return localise_factor(model, ps, render=render, batch_size=batch_size, output=output)

    found = study.run(local_units, localise, desc="localise", progress=progress)
    if found is None:
        return None
    result.localisation = {u.info["factor"]: loc for u, loc in zip(local_units, found, strict=True)}
    return result


class Probe(Command):
    name = "probe"
    help = "the reward-hacking probe suite"
    default_out = "hooked_reward_probe"
    takes_pairs = False

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--n-pairs", type=positive_int, default=30, help="pairs per factor (default 30)")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument(
            "--min-effect",
            type=min_effect,
            default=None,
            help="smallest mean Δ (reward units) that matters: each factor says whether its CI excludes it",
        )

    def settings(self, inputs: Inputs) -> dict[str, Any]:
        args = inputs.args
        return {
            "n_pairs": args.n_pairs,
            "factors": "organism" if inputs.factors is not None else "default",
            "batch_size": args.batch_size,  # a factor's pairs are scored in batches of this size
        }

    def run(self, study: Study, inputs: Inputs) -> ProbeSuiteResult | None:
        """Two phases (factors, then the significant factors' localisation), so `run` itself, not units."""
        args = inputs.args
        organism: dict[str, Any] = {}
        if inputs.factors is not None:  # the organism's word-level vocabulary: its own factor templates
            organism = {"factors": inputs.factors, "render": inputs.render}
        return probe_results(
            study,
            inputs.model,
            n_pairs=args.n_pairs,
            seed=args.seed,
            progress=inputs.progress,
            min_effect=args.min_effect,
            batch_size=args.batch_size,
            output=inputs.output,
            **organism,
        )

    def write_report(
        self, result: ProbeSuiteResult, inputs: Inputs, out_dir: str | Path, provenance: dict[str, Any]
    ) -> Path:
        from hooked_reward.report.probes import write_probe_report

        return write_probe_report(result, out_dir, provenance=provenance)


COMMAND = Probe()
