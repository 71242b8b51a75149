"""`hooked-reward probe`: the reward-hacking probe suite (does a surface factor move the reward, and where).

Factors: with `--pairs FILE`, the user's own labelled pairs, one factor per label (`probes.domain.pairs_by_label`:
Δ = r(chosen) − r(rejected)), and the built-in factors only with `--builtin`; without it, the built-in factors (a
bundled organism's own, in its vocabulary). The built-in probe texts are checked against the model's domain
(`probes.domain.domain_check`: unknown tokens, and with `--pairs` the reward baseline on the user's pairs); out of
it, the report says so and marks their verdicts.

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
    pairs: Any = None,
    phrases: Any = None,
    **kwargs: Any,
) -> ProbeSuiteResult | None:
    """`run_probe_suite` in two stored phases: one unit per factor (`factor/NAME`: its pairs scored, in batches
    of that factor's pairs only), then, from the statistics over all factors (computed on every rank), one unit
    per significant factor (`localise/NAME`). `pairs`, `phrases`: ready-made factors (`probe_pairs`; e.g. the
    user's labelled pairs, already rendered: pass `render` that keeps texts as they are). `kwargs` go to
    `summarise_probe_scores` (alpha, n_boot, min_effect, nan_policy). Rank 0 gets the result; other ranks None."""
    from hooked_reward.analysis.probes.suite import (
        localise_factor,
        probe_pairs,
        render_texts,
        score_factor,
        summarise_probe_scores,
    )

    all_pairs, phrase_of = probe_pairs(factors, n_pairs, seed, pairs=pairs, phrases=phrases)

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
    takes_pairs = True
    pairs_optional = True  # --pairs: the user's labelled pairs, one factor per label; else the built-in factors

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--builtin",
            action="store_true",
            help="with --pairs, also run the built-in probe factors (checked against the domain of your pairs)",
        )
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
        factors = "organism" if inputs.factors is not None else "default"
        if inputs.pairs is not None:
            factors = f"pairs + {factors}" if args.builtin else "pairs"
        return {
            "n_pairs": args.n_pairs,
            "factors": factors,
            "batch_size": args.batch_size,  # a factor's pairs are scored in batches of this size
        }

    def run(self, study: Study, inputs: Inputs) -> ProbeSuiteResult | None:
        """Two phases (factors, then the significant factors' localisation), so `run` itself, not units."""
        from hooked_reward.analysis.probes.domain import domain_check, mark_out_of_domain, pairs_by_label

        args = inputs.args
        model = inputs.model
        factors: Any = inputs.factors  # None: the built-in factors; a bundled organism's own, in its vocabulary
        render = inputs.render if inputs.factors is not None else None
        own: dict[str, Any] = {}
        if inputs.pairs is not None:  # the user's labelled pairs, already rendered: read as they are
            own_pairs, phrases = pairs_by_label(inputs.pairs)
            own = {"pairs": own_pairs, "phrases": phrases}
            if not args.builtin:
                factors = []
            base = render or model.render_chat
            render = lambda prompt, response: response if not prompt else base(prompt, response)  # noqa: E731
        result = probe_results(
            study,
            model,
            factors=factors,
            n_pairs=args.n_pairs,
            seed=args.seed,
            render=render,
            progress=inputs.progress,
            min_effect=args.min_effect,
            batch_size=args.batch_size,
            output=inputs.output,
            **own,
        )
        if result is None:
            return None
        builtin = [name for name in result.pairs if name not in own.get("pairs", {})]
        hooked = getattr(model, "tokenizer", None) is not None
        if builtin and inputs.factors is None and hooked:  # the generic English templates: in this model's domain?
            from hooked_reward.analysis.probes.suite import render_texts

            ps = [p for name in builtin for p in result.pairs[name]]
            texts = render_texts(model, [p.prompt for p in ps], [p.biased for p in ps], render)
            domain = [p.texts() for p in inputs.pairs] if inputs.pairs is not None else None
            check = domain_check(model, texts, domain_pairs=domain, batch_size=args.batch_size, output=inputs.output)
            mark_out_of_domain(result, check, builtin)
        return result

    def write_report(
        self, result: ProbeSuiteResult, inputs: Inputs, out_dir: str | Path, provenance: dict[str, Any]
    ) -> Path:
        from hooked_reward.report.probes import write_probe_report

        return write_probe_report(result, out_dir, provenance=provenance)


COMMAND = Probe()
