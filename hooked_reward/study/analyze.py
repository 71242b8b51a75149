"""`hooked-reward analyze` (and `demo`): how each mechanism (or label) moves the reward, and where observational
attribution and causal patching agree about which components carry it.

Units: one per pair (`pair/17`): `analysis_pair`, that pair's rewards, reward lens of each side, attributions and
faithfulness rows by component and by head, computed on its own. Summary: `summarise_analysis` (per-mechanism
statistics, attention of the top heads, token effects: `report.analyze.AnalyzeSummary`) over `AnalysisData` (every
pair's numbers, in pair order). Report: `report.analyze.write_analyze_report`. `analyze(model, pairs, out_dir)`
does all of it from Python.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from hooked_reward.analysis.results import LabeledTensor
from hooked_reward.errors import InputError
from hooked_reward.study.command import Command, Inputs
from hooked_reward.study.faithfulness import FAITHFULNESS_BY
from hooked_reward.study.runner import Study, Unit
from hooked_reward.study.units import pair_input, pair_label

if TYPE_CHECKING:
    from hooked_reward.analysis.agreement import Agreement
    from hooked_reward.analysis.attribution import PairAttributionResult
    from hooked_reward.analysis.lens import RewardLensResult
    from hooked_reward.model import HookedRewardModel
    from hooked_reward.pairs import PreferencePair
    from hooked_reward.report.analyze import AnalyzeSummary

#: The group name of pairs whose `label` is None.
UNLABELLED = "unlabelled"

__all__ = [
    "COMMAND",
    "UNLABELLED",
    "Analyze",
    "AnalysisData",
    "analysed_output",
    "analysis_pair",
    "analysis_results",
    "analysis_unit",
    "analysis_units",
    "analyze",
    "causal_plan",
    "summarise_analysis",
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
    #: per granularity, each pair's remove shares (noising, `necessity.removes_pair`); None under ranked patching
    necessity: dict[str, list[Tensor]] | None = None

    def select(self, keep: Sequence[bool]) -> AnalysisData:
        """The pairs where `keep` is true (e.g. those with a finite margin), in order."""
        idx = [i for i, k in enumerate(keep) if k]
        return AnalysisData(
            r_chosen=self.r_chosen[idx],
            r_rejected=self.r_rejected[idx],
            lens_chosen=self.lens_chosen.isel("text", idx),
            lens_rejected=self.lens_rejected.isel("text", idx),
            attributions={by: a.isel("text", idx) for by, a in self.attributions.items()},
            faithfulness={by: [rows[i] for i in idx] for by, rows in self.faithfulness.items()},
            necessity=None if self.necessity is None else {by: [r[i] for i in idx] for by, r in self.necessity.items()},
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
    other pairs): rewards, lens of each side, attributions and faithfulness rows by component and by head, and
    with exact patching each component's and head's remove share (noising, beside the faithfulness rows'
    denoising effects: `analysis.necessity`)."""
    from hooked_reward.analysis.attribution import pair_reward_attribution
    from hooked_reward.analysis.faithfulness import faithfulness_pair
    from hooked_reward.analysis.lens import reward_lens
    from hooked_reward.analysis.necessity import removes_pair
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
        **(
            {
                "necessity": {
                    by: removes_pair(model, chosen, rejected, by=by, align="reward", output=output)["removes"]
                    for by in FAITHFULNESS_BY
                }
            }
            if method == "exact"
            else {}
        ),
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
        lens_chosen=LabeledTensor.concat([r["lens_chosen"] for r in rows], "text"),
        lens_rejected=LabeledTensor.concat([r["lens_rejected"] for r in rows], "text"),
        attributions={
            by: LabeledTensor.concat([r["attributions"][by] for r in rows], "text") for by in FAITHFULNESS_BY
        },
        faithfulness={by: [r["faithfulness"][by] for r in rows] for by in FAITHFULNESS_BY},
        necessity=(
            {by: [r["necessity"][by] for r in rows] for by in FAITHFULNESS_BY}
            if all("necessity" in r for r in rows)
            else None
        ),
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


def causal_plan(model: HookedRewardModel, causal: str = "auto", budget: int = 30) -> dict[str, Any]:
    """How `analyze` computes patching effects within `budget` forward-equivalents per pair (see `analyze`).

    Per pair, besides patching: 2 forwards for the rewards, 2 for the lens, and 2 per granularity each for the
    batched and the per-pair DRA (8): 12 in all. Exact patching adds `2 + sites` per granularity; ranked patching
    `6 + k` (a forward and a backward of the corrupted run, a forward of the clean one, 2 cached forwards, k
    patched ones). Returns `{"method", "top_k", "budget", "forward_equivalents_per_pair", "exact_would_cost"}`.
    """
    if causal not in ("auto", "exact", "ranked"):
        raise InputError(f"causal must be 'auto', 'exact' or 'ranked', got {causal!r}.")
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    fixed = 12
    exact = fixed + (2 + 2 * n_layers) + (2 + n_layers * n_heads)
    method = causal if causal != "auto" else ("exact" if exact <= budget else "ranked")
    top_k = max(1, (budget - fixed - 12) // 2)
    cost = exact if method == "exact" else fixed + 2 * (6 + top_k)
    return {
        "method": method,
        "top_k": top_k if method == "ranked" else None,
        "budget": budget,
        "forward_equivalents_per_pair": cost,
        "exact_would_cost": exact,
    }


def analyze(
    model: HookedRewardModel,
    pairs: Sequence[PreferencePair],
    out_dir: str | Path,
    *,
    title: str = "hooked_reward analysis",
    planted: dict[str, Any] | None = None,
    provenance: dict[str, Any] | None = None,
    command: str = "analyze",
    n_top_heads: int = 3,
    progress: bool = True,
    nan_policy: str = "raise",
    output: int | str | None = None,
    causal: str = "auto",
    budget: int = 30,
    data: AnalysisData | None = None,
) -> Path:
    """Analyse `pairs` (grouped by their `mechanism`) and write the report into `out_dir`; returns index.html.

    `planted`: a model card's ground truth (`organisms.card(name)`: `mechanisms[m]["components"]`, e.g.
    `blocks.0.attn.head.2`), which adds the "found vs planted" table. `n_top_heads`: heads shown in the attention
    views (the largest by mean patching effect). A pair with a non-finite margin raises `NonFiniteError` naming
    it; `nan_policy="omit"` drops those pairs (`report.json` records `n_omitted`). `output`: which output of a
    multi-output head is analysed (index or name; default the first); ArmoRM's views follow its score.

    `causal` picks how patching effects are computed, by `budget` (forward-equivalents per pair, a backward counted
    as two): "exact" patches every component and head of every pair; "ranked" uses attribution patching over
    every site and exact patching of the top-k sites it ranks (`ranked_patching`; k is what the budget leaves,
    at least 1), and the token-importance view uses attribution patching; "auto" (default) is "exact" when it
    fits the budget, else "ranked". `report.json`'s "causal" entry holds the method, k, the cost per pair and,
    for "ranked", each pair's estimate and exact effect side by side.

    `data`: the per-pair numbers already computed (`analysis_results` with this plan, read back from the results
    store); without it they are computed here, one pair at a time (the same units, so the same numbers).
    """
    from hooked_reward.report.analyze import write_analyze_report

    summary = summarise_analysis(
        model,
        pairs,
        command=command,
        n_top_heads=n_top_heads,
        progress=progress,
        nan_policy=nan_policy,
        output=output,
        causal=causal,
        budget=budget,
        data=data,
    )
    return write_analyze_report(summary, out_dir, title=title, planted=planted, provenance=provenance, command=command)


def summarise_analysis(
    model: HookedRewardModel,
    pairs: Sequence[PreferencePair],
    *,
    command: str = "analyze",
    n_top_heads: int = 3,
    progress: bool = True,
    nan_policy: str = "raise",
    output: int | str | None = None,
    causal: str = "auto",
    budget: int = 30,
    data: AnalysisData | None = None,
    n_token_views: int = 3,
) -> AnalyzeSummary:
    """Every number of `analyze`'s report (`report.analyze.AnalyzeSummary`), from the per-pair `data` (computed
    here when None): per mechanism the margin with a BCa interval and accuracy, DRA against patching
    (`summarise_faithfulness`, `Agreement`), bootstrap bands of the lens and the attributions, the top heads'
    attention and the first pair's token effects. Arguments as in `analyze`."""
    import numpy as np

    from hooked_reward.analysis.agreement import agreement
    from hooked_reward.analysis.attention import head_attention
    from hooked_reward.analysis.faithfulness import _dra_labels, summarise_faithfulness
    from hooked_reward.analysis.necessity import summarise_restore_remove
    from hooked_reward.analysis.stats import accuracy, bootstrap_ci, bootstrap_mean_ci, check_nan_policy, finite_rows
    from hooked_reward.report.analyze import AnalyzeSummary, MechanismSummary

    if not pairs:
        raise InputError("No pairs to analyse.")
    # Unlabelled pairs (`label=None`, e.g. a pair file with no mechanism column) form one group, as in the CLI.
    pairs = [p if p.label is not None else dataclasses.replace(p, label=UNLABELLED) for p in pairs]
    for p in pairs:
        p.texts()  # rendered pairs (texts), else InputError
    check_nan_policy(nan_policy, allowed=("raise", "omit"))
    mechanisms = list(dict.fromkeys(sorted(_group(p) for p in pairs)))
    # The model's output analysed (behaviour, lens, attribution, patching): `output` (index or name), else the first.
    output = analysed_output(model, output)
    # A head that sums gated terms (ArmoRM's objectives) is read in every column (the terms, then the score)
    gated = bool(model.head.term_names())
    names = model.head.readout_names()
    # The lens/DRA column of that output (ArmoRM: the score, after its objectives).
    column = model.head.readout_column(output)
    by_mech = {mech: np.array([_group(p) == mech for p in pairs]) for mech in mechanisms}

    plan = causal_plan(model, causal, budget)
    causal_data: dict[str, Any] = dict(plan)
    if data is None:
        data = analysis_results(
            Study.in_memory(command),
            model,
            pairs,
            output=output,
            method=plan["method"],
            top_k=plan["top_k"],
            progress=progress,
        )
        if data is None:  # an in-memory study runs in this process alone, as rank 0: it always returns the data
            raise RuntimeError("analysis_results returned no data for an in-memory study")
    margins = (data.r_chosen - data.r_rejected).double().numpy()
    ok = finite_rows(margins, what="analyze: margins r(chosen) − r(rejected) (pairs by index)", nan_policy=nan_policy)
    n_omitted = int((~ok).sum())
    if n_omitted:  # nan_policy="omit": every analysis below runs on the pairs with finite margins only
        pairs = [p for p, keep in zip(pairs, ok, strict=True) if keep]
        data, margins = data.select(ok.tolist()), margins[ok]
        mechanisms = list(dict.fromkeys(sorted(_group(p) for p in pairs)))
        by_mech = {mech: np.array([_group(p) == mech for p in pairs]) for mech in mechanisms}
    grouping = None
    if mechanisms == [UNLABELLED]:  # one mixed group: split it by the component that carries each pair
        pairs, grouping = _group_unlabelled(model, pairs, data, margins)
        sizes = {mech: sum(_group(p) == mech for p in pairs) for mech in {_group(p) for p in pairs}}
        mechanisms = sorted(sizes, key=lambda mech: (mech.endswith(": mixed"), -sizes[mech], mech))
        by_mech = {mech: np.array([_group(p) == mech for p in pairs]) for mech in mechanisms}
    found: dict[str, MechanismSummary] = {}
    for mech in mechanisms:
        group = [p for p in pairs if _group(p) == mech]
        idx = np.flatnonzero(by_mech[mech])
        studies = {
            granularity: summarise_faithfulness(
                [data.faithfulness[granularity][i] for i in idx],
                _dra_labels(model, granularity),
                by=granularity,
                n_resamples=999,
                method=plan["method"],
                top_k=plan["top_k"],
            )
            for granularity in FAITHFULNESS_BY
        }
        by: dict[str, Agreement] = {granularity: agreement(study) for granularity, study in studies.items()}
        if plan["method"] == "ranked":
            causal_data.setdefault("side_by_side", {})[mech] = {
                g: study.meta["side_by_side"] for g, study in studies.items()
            }
        m = margins[by_mech[mech]]
        low, high = bootstrap_ci(np.asarray(m, dtype=float), n_resamples=1999)
        found[mech] = MechanismSummary(mech, group, (float(m.mean()), float(low), float(high)), accuracy(m), by)
        if data.necessity is not None:  # what each component restores beside what it removes
            found[mech].necessity = {
                g: summarise_restore_remove(
                    [{"restores": _restores(data.faithfulness[g][i]), "removes": data.necessity[g][i]} for i in idx],
                    [str(c) for c in _dra_labels(model, g)],
                    n_boot=999,
                )
                for g in FAITHFULNESS_BY
            }

    # Bootstrap bands of the frozen lens margin curve and of the attributions, per mechanism.
    lens_margin = (data.lens_chosen.values - data.lens_rejected.values).double().numpy()  # [variant, pair, point, ...]
    lens_column = column if gated else None
    if lens_column is not None:
        lens_margin = lens_margin[..., lens_column]
    lens_bands: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if "frozen" in data.lens_chosen.labels["variant"]:
        frozen = list(data.lens_chosen.labels["variant"]).index("frozen")
        for mech in mechanisms:
            values = lens_margin[frozen][by_mech[mech]]
            if len(values) >= 3:
                lens_bands[mech] = bootstrap_mean_ci(values, n_resamples=999)
    attribution_ci: dict[str, dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}
    for granularity, attr in data.attributions.items():
        values = attr.values.double().numpy()
        values = values[..., lens_column] if lens_column is not None else values
        attribution_ci[granularity] = {}
        for mech in mechanisms:
            v = values[by_mech[mech]]
            attribution_ci[granularity][mech] = (v.mean(0), *bootstrap_mean_ci(v, n_resamples=999))

    # The heads that matter most (by mean patching), what they attend to, and the token effects of the pairs with
    # the largest margins (the clearest preferences; not just the first pair).
    from hooked_reward.analysis.grouping import largest_margins

    for mech, m in found.items():
        heads = m.by["head"]
        m.top_heads = [heads.labels[i] for i in np.argsort(-heads.patch_mean, kind="stable")[:n_top_heads]]
        order = largest_margins(margins[by_mech[mech]], n_token_views)
        for rank, i in enumerate(order):
            chosen, rejected = m.pairs[i].texts()
            attention = [
                ("chosen", head_attention(model, chosen, m.top_heads)),
                ("rejected", head_attention(model, rejected, m.top_heads)),
            ]
            effects, gap = _token_effects(model, chosen, rejected, output, plan["method"])
            if rank == 0:
                m.view_pair, m.attention, m.token_effects, m.token_gap = i, attention, effects, gap
            else:
                m.more_views.append((i, attention, effects, gap))

    return AnalyzeSummary(
        mechanisms=mechanisms,
        by_mech=by_mech,
        found=found,
        margins=margins,
        n_omitted=n_omitted,
        causal=causal_data,
        method=plan["method"],
        gated=gated,
        column=column,
        lens_chosen=data.lens_chosen,
        lens_rejected=data.lens_rejected,
        lens_bands=lens_bands,
        attributions=data.attributions,
        attribution_ci=attribution_ci,
        objectives=[name for name in names if name != "score"] if gated else None,
        grouping=grouping,
    )


def _group(pair: PreferencePair) -> str:
    """The group a pair is analysed in: its label, or UNLABELLED."""
    return UNLABELLED if pair.label is None else pair.label


#: The fewest pairs a dominant component needs to form its own group of unlabelled pairs.
MIN_GROUP = 3


def _restores(row: dict[str, Any]) -> Tensor:
    """A faithfulness row's denoising effects as shares of the pair's gap (NaN for a zero gap)."""
    gap = row["reward_gap"]
    effects = row["patching"].double()
    return effects / gap if gap != 0 else torch.full_like(effects, float("nan"))


def _group_unlabelled(
    model: HookedRewardModel, pairs: list[PreferencePair], data: AnalysisData, margins: Any
) -> tuple[list[PreferencePair], dict[str, Any]]:
    """Unlabelled pairs relabelled by their dominant head (`group_by_dominant` over each pair's head patching
    effects, the faithfulness rows': the head whose clean activation restores most of the pair's margin),
    "unlabelled: <head>", when that splits them into more than one group; and what the grouping found (groups,
    sizes, spread) for the report. Patching, not DRA: a head that acts through a later MLP is seen."""
    import numpy as np

    from hooked_reward.analysis.faithfulness import _dra_labels
    from hooked_reward.analysis.grouping import OTHER, group_by_dominant

    rows = data.faithfulness["head"]
    values = np.stack([np.asarray(r["patching"], dtype=np.float64) for r in rows])
    labels = [str(c) for c in _dra_labels(model, "head")]
    groups = group_by_dominant(values, margins, labels, min_size=MIN_GROUP)
    info = {
        "groups": {g: len(idx) for g, idx in groups.groups.items()},
        "spread": groups.spread,
        "dominant": groups.dominant,
        "min_size": MIN_GROUP,
        "split": len(groups.groups) > 1,
    }
    if len(groups.groups) <= 1:
        return pairs, info
    name = {g: f"{UNLABELLED}: {'mixed' if g == OTHER else g}" for g in groups.groups}
    return [dataclasses.replace(p, label=name[g]) for p, g in zip(pairs, groups.group_of, strict=True)], info


def _token_effects(
    model: HookedRewardModel, chosen: str, rejected: str, output: int | None, method: str
) -> tuple[Any, float]:
    """The reward change when the rejected run's `blocks.0.hook_resid_pre` at each position is patched from the
    chosen run (aligned at the reward end), `[position]`, and the pair's reward gap. Exact patching, or for
    "ranked" attribution patching's first-order estimate (one forward/backward instead of one per position)."""
    if method == "ranked":
        from hooked_reward.analysis.attribution_patching import attribution_patch

        result = attribution_patch(model, chosen, rejected, sites=("resid_pre",), align="reward", output=output).sweep(
            "resid_pre"
        )  # [layer, pos]: row 0 is the estimate of patching blocks.0.hook_resid_pre per position
    else:
        from hooked_reward.analysis.patching import patch_resid

        result = patch_resid(model, chosen, rejected, layers=[0], align="reward", progress=False, output=output)
    return result.values[0].double().numpy(), float(result.r_clean - result.r_corrupt)


class Analyze(Command):
    name = "analyze"
    help = "lens, attribution and patching on your checkpoint and pairs"
    default_out = "hooked_reward_report"

    def settings(self, inputs: Inputs) -> dict[str, Any]:
        plan = causal_plan(inputs.model)  # analyze's default: exact patching when it fits the budget, else ranked
        return {"align": "reward", "units": "pair", "method": plan["method"], "top_k": plan["top_k"]}

    def units(self, inputs: Inputs) -> list[Unit]:
        return analysis_units(inputs.pairs or [])

    def compute_unit(self, inputs: Inputs, unit: Unit) -> dict[str, Any]:
        method, top_k = inputs.settings["method"], inputs.settings["top_k"]
        return analysis_unit(inputs.model, unit, output=inputs.output, method=method, top_k=top_k)

    def summarise(self, inputs: Inputs, rows: list[Any]) -> AnalyzeSummary:
        return summarise_analysis(
            inputs.model,
            inputs.pairs or [],
            command=self.name,
            progress=inputs.progress,
            output=inputs.output,
            data=summarise_units(rows),
        )

    def write_report(
        self, result: AnalyzeSummary, inputs: Inputs, out_dir: str | Path, provenance: dict[str, Any]
    ) -> Path:
        from hooked_reward.report.analyze import write_analyze_report

        what = f"the {inputs.organism} organism" if inputs.organism is not None else inputs.args.model
        return write_analyze_report(
            result,
            out_dir,
            title=f"How {what} rewards its pairs",
            planted=inputs.card,
            provenance=provenance,
            command=self.name,
        )


COMMAND = Analyze()
