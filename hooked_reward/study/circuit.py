"""`hooked-reward circuit`: the circuit of the reward margin by edge attribution (EAP-IG and EAP), checked by exact
edge patching, with both methods' faithfulness curves.

Two passes over the pairs, each unit one pair computed on its own (so results do not depend on how the work is
split over processes or interrupted):

1. `scores/{i}`: EAP and EAP-IG (`--steps`) scores of every edge on pair i (`analysis.circuits.edge_attribution`).
2. `check/{i}`: on pair i, the exact change of the margin when each edge in either method's top `--top-k` is
   patched alone (`exact_edge_effects`), and each method's faithfulness-curve points (kept margins of its top-k
   circuits, `faithfulness_curve`). Which edges and in which rank order come from pass 1's means over every pair,
   and are part of the units' input (a different ranking is a different unit).

Summary: `{"scores": {method: EdgeAttribution}, "exact": EdgeAttribution, "curves": {method: FaithfulnessCurve},
"agreements": {method: EdgeAgreement}}`. Report: `report.circuit.write_circuit_report`, drawing `--method`'s top
`--top-k` circuit. Pairs of different token lengths are aligned at the reward token (`align="reward"`).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from hooked_reward.study.arguments import positive_int
from hooked_reward.study.command import Command, Inputs
from hooked_reward.study.runner import Study, Unit
from hooked_reward.study.units import pair_input, pair_label

if TYPE_CHECKING:
    from hooked_reward.analysis.circuits import EdgeAttribution
    from hooked_reward.model import HookedRewardModel

__all__ = ["COMMAND", "Circuit", "METHODS_RUN"]

#: Both methods are always computed (the report compares them); `--method` picks the circuit drawn.
METHODS_RUN = ("eap-ig", "eap")
ALIGN = "reward"


def _pair(unit: Unit) -> tuple[Any, Any]:
    return unit.input["chosen"], unit.input["rejected"]


def scores_unit(model: HookedRewardModel, unit: Unit, *, steps: int, output: int | str | None) -> dict[str, Any]:
    """Pass 1 on one pair: every edge's EAP and EAP-IG score (`[edge]` each) and the pair's two rewards."""
    from hooked_reward.analysis.circuits import edge_attribution

    out: dict[str, Any] = {}
    for method in METHODS_RUN:
        res = edge_attribution(model, [_pair(unit)], method, steps=steps, align=ALIGN, output=output, progress=False)
        out[method] = res.values[0]
        out["r_chosen"], out["r_rejected"] = float(res.r_chosen[0]), float(res.r_rejected[0])
    return out


def check_unit(model: HookedRewardModel, unit: Unit, *, output: int | str | None) -> dict[str, Any]:
    """Pass 2 on one pair: exact effects of the checked edges (`[edge]`) and, per method, the kept margin of each
    top-k circuit (`[size]`)."""
    from hooked_reward.analysis.circuits import exact_edge_effects, faithfulness_curve

    pair, info = _pair(unit), unit.input
    exact = exact_edge_effects(model, [pair], info["edges"], align=ALIGN, output=output, progress=False)
    out: dict[str, Any] = {"exact": exact.values[0], "margin": float(exact.margin[0])}
    for method in METHODS_RUN:
        curve = faithfulness_curve(
            model, [pair], info["ranking"][method], info["sizes"], align=ALIGN, output=output, progress=False
        )
        out[method] = curve.kept[0]
    return out


def join_scores(model: HookedRewardModel, rows: Sequence[dict[str, Any]], method: str, steps: int) -> EdgeAttribution:
    """One method's `EdgeAttribution [pair, edge]` from pass 1's rows."""
    from hooked_reward.analysis.circuits import EdgeAttribution, circuit_graph

    return EdgeAttribution(
        values=torch.stack([torch.as_tensor(r[method]) for r in rows]),
        dims=("pair", "edge"),
        labels={"edge": list(circuit_graph(model).edges)},
        method=method,
        steps=steps if method == "eap-ig" else 1,
        r_chosen=torch.tensor([r["r_chosen"] for r in rows]),
        r_rejected=torch.tensor([r["r_rejected"] for r in rows]),
        meta={"align": ALIGN},
    )


def curve_sizes(n_edges: int, top_k: int) -> list[int]:
    """The benchmark's circuit sizes (`default_sizes`) and the drawn circuit's."""
    from hooked_reward.analysis.circuits import default_sizes

    return sorted({*default_sizes(n_edges), min(top_k, n_edges)})


def check_plan(scores: dict[str, EdgeAttribution], top_k: int) -> dict[str, Any]:
    """What pass 2 checks: the edges in either method's top `top_k` (graph order), each method's ranking up to the
    largest curve size, and the sizes."""
    any_scores = next(iter(scores.values()))
    n_edges = len(any_scores.edges)
    sizes = curve_sizes(n_edges, top_k)
    tops = {str(e) for res in scores.values() for e in res.top(top_k)}
    edges = [str(e) for e in any_scores.edges if str(e) in tops]
    ranking = {m: [str(e) for e in res.top(max(sizes))] for m, res in scores.items()}
    return {"edges": edges, "ranking": ranking, "sizes": sizes}


def cost_per_pair(steps: int, n_checked: int, n_sizes: int) -> dict[str, int]:
    """Forward-equivalents per pair of each part of the study (`analysis.circuits.forward_equivalents`)."""
    from hooked_reward.analysis.circuits import forward_equivalents

    return {
        "eap": forward_equivalents("eap"),
        "eap-ig": forward_equivalents("eap-ig", steps=steps),
        "exact": forward_equivalents("patch", n_sets=n_checked),
        "faithfulness curves (both methods)": 2 * forward_equivalents("patch", n_sets=n_sizes),
    }


class Circuit(Command):
    name = "circuit"
    help = "the reward margin's circuit by edge attribution (EAP-IG, EAP), checked by exact edge patching"
    default_out = "hooked_reward_circuit"
    max_pairs_default = 24

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--method",
            choices=("eap-ig", "eap"),
            default="eap-ig",
            help="whose circuit is drawn and summarised (both are computed and compared; default eap-ig)",
        )
        parser.add_argument(
            "--steps", type=positive_int, default=5, help="EAP-IG's points on the path between the runs (default 5)"
        )
        parser.add_argument(
            "--top-k",
            type=positive_int,
            default=20,
            help="edges in the circuit drawn, and per method checked by exact edge patching (default 20)",
        )

    def settings(self, inputs: Inputs) -> dict[str, Any]:
        return {"steps": inputs.args.steps, "top_k": inputs.args.top_k, "align": ALIGN}

    def units(self, inputs: Inputs) -> list[Unit]:
        return [
            Unit(f"scores/{i}", pair_input(p), {"pair": i, "label": pair_label(p)})
            for i, p in enumerate(inputs.pairs or [])
        ]

    def compute_unit(self, inputs: Inputs, unit: Unit) -> dict[str, Any]:
        return scores_unit(inputs.model, unit, steps=inputs.args.steps, output=inputs.output)

    def run(self, study: Study, inputs: Inputs) -> dict[str, Any] | None:
        pairs = inputs.pairs or []
        rows = study.run(
            self.units(inputs),
            lambda unit: self.compute_unit(inputs, unit),
            desc="circuit: edge scores",
            progress=inputs.progress,
            everywhere=True,  # every rank needs the ranking for pass 2
        )
        assert rows is not None
        scores = {m: join_scores(inputs.model, rows, m, inputs.args.steps) for m in METHODS_RUN}
        plan = check_plan(scores, inputs.args.top_k)
        checks = study.run(
            [
                Unit(f"check/{i}", {**pair_input(p), **plan}, {"pair": i, "label": pair_label(p)})
                for i, p in enumerate(pairs)
            ],
            lambda unit: check_unit(inputs.model, unit, output=inputs.output),
            desc="circuit: exact edge patching",
            progress=inputs.progress,
        )
        return None if checks is None else self.summarise_checks(inputs, scores, plan, checks)

    def summarise_checks(
        self,
        inputs: Inputs,
        scores: dict[str, EdgeAttribution],
        plan: dict[str, Any],
        checks: Sequence[dict[str, Any]],
    ) -> dict[str, Any]:
        """The result objects of both passes."""
        from hooked_reward.analysis.circuits import EdgeAttribution, FaithfulnessCurve, edge_agreement

        base = scores["eap"]
        exact = EdgeAttribution(
            values=torch.stack([torch.as_tensor(c["exact"]) for c in checks]),
            dims=("pair", "edge"),
            labels={"edge": [base.edges[base.index_of("edge", e)] for e in plan["edges"]]},
            method="exact",
            r_chosen=base.r_chosen,
            r_rejected=base.r_rejected,
            meta={"align": ALIGN},
        )
        margin = torch.tensor([c["margin"] for c in checks])
        n_edges = len(base.edges)
        curves = {
            m: FaithfulnessCurve.from_kept(
                torch.stack([torch.as_tensor(c[m]) for c in checks]), margin, plan["sizes"], n_edges, method=m
            )
            for m in METHODS_RUN
        }
        agreements = {m: edge_agreement(scores[m], exact) for m in METHODS_RUN}
        cost = cost_per_pair(inputs.args.steps, len(plan["edges"]), len(plan["sizes"]))
        return {"scores": scores, "exact": exact, "curves": curves, "agreements": agreements, "cost": cost}

    def provenance(self, inputs: Inputs) -> dict[str, Any]:
        return {"circuit drawn": f"top {inputs.args.top_k} edges by {inputs.args.method}"}

    def write_report(
        self, result: dict[str, Any], inputs: Inputs, out_dir: str | Path, provenance: dict[str, Any]
    ) -> Path:
        from hooked_reward.report.circuit import write_circuit_report

        cfg = inputs.model.cfg
        return write_circuit_report(
            result["scores"],
            result["exact"],
            result["curves"],
            result["agreements"],
            out_dir,
            method=inputs.args.method,
            top_k=inputs.args.top_k,
            n_layers=cfg.n_layers,
            n_heads=cfg.n_heads,
            cost=result["cost"],
            provenance=provenance,
        )


COMMAND = Circuit()
