"""`hooked-reward analyze` (and `demo`): how each mechanism (or label) moves the reward, and where observational
attribution and causal patching agree about which components carry it.

Units: one per pair (`pair/17`): `analysis_pair`, that pair's rewards, reward lens of each side, attributions and
faithfulness rows by component and by head, computed on its own. Summary: `AnalysisData` (every pair's numbers,
in pair order). Report: `report.analyze.analyze` (per-mechanism statistics, plots and the page).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from hooked_reward.study.command import Command, Inputs
from hooked_reward.study.faithfulness import FAITHFULNESS_BY
from hooked_reward.study.runner import Study, Unit
from hooked_reward.study.units import concat_texts, pair_input, pair_label, select_texts

if TYPE_CHECKING:
    from hooked_reward.analysis.attribution import PairAttributionResult
    from hooked_reward.analysis.lens import RewardLensResult
    from hooked_reward.model import HookedRewardModel
    from hooked_reward.pairs import PreferencePair

__all__ = [
    "COMMAND",
    "Analyze",
    "AnalysisData",
    "analysed_output",
    "analysis_pair",
    "analysis_results",
    "analysis_unit",
    "analysis_units",
]


@dataclass
class AnalysisData:
    """Everything `analyze` computes per pair, for all pairs in order: rewards of each side `[pair]` (the analysed
    output), the reward lens of each side (`RewardLensResult`, dims `(variant, text, point[, output])`), the pair
    attributions by component and by head (`PairAttributionResult`), and the per-pair faithfulness rows by
    component and by head (`faithfulness_pair`'s dicts)."""

    r_chosen: Tensor
    r_rejected: Tensor
    lens_chosen: RewardLensResult
    lens_rejected: RewardLensResult
    attributions: dict[str, PairAttributionResult]
    faithfulness: dict[str, list[dict[str, Any]]]

    def select(self, keep: Sequence[bool]) -> AnalysisData:
        """The pairs where `keep` is true (e.g. those with a finite margin), in order."""
        idx = [i for i, k in enumerate(keep) if k]
        return AnalysisData(
            r_chosen=self.r_chosen[idx],
            r_rejected=self.r_rejected[idx],
            lens_chosen=select_texts(self.lens_chosen, idx),
            lens_rejected=select_texts(self.lens_rejected, idx),
            attributions={by: select_texts(a, idx) for by, a in self.attributions.items()},
            faithfulness={by: [rows[i] for i in idx] for by, rows in self.faithfulness.items()},
        )


def analysis_pair(
    model: HookedRewardModel,
    chosen: str,
    rejected: str,
    *,
    output: int | None,
    gated: bool,
    method: str = "exact",
    top_k: int = 8,
) -> dict[str, Any]:
    """One pair's unit of `analyze`, computed on its own (batches of one text: no padding, no dependence on the
    other pairs): rewards, lens of each side, attributions and faithfulness rows by component and by head."""
    from hooked_reward.analysis.attribution import pair_reward_attribution
    from hooked_reward.analysis.faithfulness import faithfulness_pair
    from hooked_reward.analysis.lens import reward_lens
    from hooked_reward.outputs import select_output

    with torch.no_grad():
        r_c, r_r = (
            select_output(model([t]), output, names=model.output_names, required=False) for t in (chosen, rejected)
        )
    column = None if gated else output
    kw: dict[str, Any] = {"batch_size": 1, "progress": False, "output": column}
    return {
        "r_chosen": r_c.detach().cpu(),
        "r_rejected": r_r.detach().cpu(),
        "lens_chosen": reward_lens(model, [chosen], **kw),
        "lens_rejected": reward_lens(model, [rejected], **kw),
        "attributions": {
            by: pair_reward_attribution(model, [chosen], [rejected], by=by, **kw) for by in FAITHFULNESS_BY
        },
        "faithfulness": {
            by: faithfulness_pair(
                model, chosen, rejected, by=by, align="reward", output=output, method=method, top_k=top_k
            )
            for by in FAITHFULNESS_BY
        },
    }


def analysis_units(pairs: Sequence[PreferencePair]) -> list[Unit]:
    """One unit per pair: `pair/17`, ..."""
    return [Unit(f"pair/{i}", pair_input(p), {"pair": i, "label": pair_label(p)}) for i, p in enumerate(pairs)]


def analysed_output(model: HookedRewardModel, output: int | str | None) -> int | None:
    """The output `analyze` reads (index), from `output` (index or name; default the first of a multi-output
    head; None for a one-output head)."""
    from hooked_reward.outputs import output_index

    index = output_index(output, model.output_names) if output is not None else None
    return 0 if index is None and model.n_outputs > 1 else index


def analysis_unit(
    model: HookedRewardModel, unit: Unit, *, output: int | str | None, method: str = "exact", top_k: int = 8
) -> dict[str, Any]:
    """One unit of `analyze_units`: `analysis_pair` of its pair."""
    return analysis_pair(
        model,
        unit.input["chosen"],
        unit.input["rejected"],
        output=analysed_output(model, output),
        gated=bool(model.head.term_names()),  # a head summing gated terms is read in every column
        method=method,
        top_k=top_k,
    )


def summarise_units(rows: Sequence[dict[str, Any]]) -> AnalysisData:
    """The rows of `analysis_units` (in pair order) joined into one `AnalysisData`."""
    return AnalysisData(
        r_chosen=torch.cat([r["r_chosen"] for r in rows]),
        r_rejected=torch.cat([r["r_rejected"] for r in rows]),
        lens_chosen=concat_texts([r["lens_chosen"] for r in rows]),
        lens_rejected=concat_texts([r["lens_rejected"] for r in rows]),
        attributions={by: concat_texts([r["attributions"][by] for r in rows]) for by in FAITHFULNESS_BY},
        faithfulness={by: [r["faithfulness"][by] for r in rows] for by in FAITHFULNESS_BY},
    )


def analysis_results(
    study: Study,
    model: HookedRewardModel,
    pairs: Sequence[PreferencePair],
    *,
    output: int | str | None = None,
    method: str = "exact",
    top_k: int = 8,
    progress: bool = True,
) -> AnalysisData | None:
    """`analyze`'s numbers, one stored unit per pair, put back together in pair order (rank 0; None elsewhere).
    `output`: the output analysed (index or name; default the first of a multi-output head), as in `analyze`;
    `method`, `top_k`: how patching effects are computed (`analyze`'s `causal_plan`)."""
    rows = study.run(
        analysis_units(pairs),
        lambda unit: analysis_unit(model, unit, output=output, method=method, top_k=top_k),
        desc="analyze",
        progress=progress,
    )
    return None if rows is None else summarise_units(rows)


class Analyze(Command):
    name = "analyze"
    help = "lens, attribution and patching on your checkpoint and pairs"
    default_out = "hooked_reward_report"

    def settings(self, inputs: Inputs) -> dict[str, Any]:
        from hooked_reward.report.analyze import causal_plan

        plan = causal_plan(inputs.model)  # analyze's default: exact patching when it fits the budget, else ranked
        return {"align": "reward", "units": "pair", "method": plan["method"], "top_k": plan["top_k"]}

    def units(self, inputs: Inputs) -> list[Unit]:
        return analysis_units(inputs.pairs or [])

    def compute_unit(self, inputs: Inputs, unit: Unit) -> dict[str, Any]:
        method, top_k = inputs.settings["method"], inputs.settings["top_k"]
        return analysis_unit(inputs.model, unit, output=inputs.output, method=method, top_k=top_k)

    def summarise(self, inputs: Inputs, rows: list[Any]) -> AnalysisData:
        return summarise_units(rows)

    def write_report(
        self, result: AnalysisData, inputs: Inputs, out_dir: str | Path, provenance: dict[str, Any]
    ) -> Path:
        from hooked_reward.report.analyze import analyze

        what = f"the {inputs.organism} organism" if inputs.organism is not None else inputs.args.model
        return analyze(
            inputs.model,
            inputs.pairs or [],
            out_dir,
            title=f"How {what} rewards its pairs",
            planted=inputs.card,
            provenance=provenance,
            command=self.name,
            progress=inputs.progress,
            output=inputs.output,
            data=result,
        )


COMMAND = Analyze()
