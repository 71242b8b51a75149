"""What a unit of work is for each command that loops over pairs, and how its results are put back together.

Each `*_results(study, model, ...)` function lists the command's units (`Unit`: one pair, one factor, one site),
computes each on its own through `study.run` (so the results do not depend on how the work is split over
processes or interrupted), and rebuilds the analysis results from the stored records, in unit order. Rank 0 gets
the results; the other ranks get None (they only compute their share).

`open_study` builds the `Study` of a command: it fingerprints the model(s) (on rank 0, shared with the others),
records dtype and device, and opens the store beside the report folder.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import torch
from torch import Tensor

from hooked_reward.analysis.attribution import Granularity
from hooked_reward.analysis.results import LabeledTensor
from hooked_reward.errors import InputError
from hooked_reward.study.distributed import DistContext
from hooked_reward.study.provenance import model_fingerprint, model_runtime
from hooked_reward.study.runner import Study, Unit

if TYPE_CHECKING:
    from hooked_reward.analysis.attribution import PairAttributionResult
    from hooked_reward.analysis.compare import CompareResult, ModelRun
    from hooked_reward.analysis.faithfulness import FaithfulnessResult
    from hooked_reward.analysis.lens import RewardLensResult
    from hooked_reward.analysis.probes.suite import ProbeSuiteResult
    from hooked_reward.model import HookedRewardModel
    from hooked_reward.pairs import PreferencePair

__all__ = [
    "FAITHFULNESS_BY",
    "AnalysisData",
    "analysis_pair",
    "analysis_results",
    "analysis_units",
    "compare_results",
    "concat_runs",
    "concat_texts",
    "extension_results",
    "select_texts",
    "faithfulness_results",
    "faithfulness_units",
    "open_study",
    "pair_input",
    "probe_results",
]

LT = TypeVar("LT", bound=LabeledTensor)

FAITHFULNESS_BY: tuple[Granularity, ...] = ("component", "head")


def open_study(
    out_dir: str | Path,
    command: str,
    model: HookedRewardModel,
    source: str | Path,
    *,
    settings: dict[str, Any],
    revision: str | None = None,
    others: Sequence[tuple[str | Path, str | None]] = (),
    seed: int | None = None,
    n_pairs: int | None = None,
    resume: bool | None = None,
    dist: DistContext | None = None,
) -> Study:
    """The study of `command` on `model` (loaded from `source`, at `revision`); `others`: further models' (source,
    revision), e.g. `compare`'s second model. The weights are hashed once, on rank 0."""
    dist = dist or DistContext()
    mine: list[dict[str, Any]] = []  # hashed on rank 0 only; the other ranks receive its list
    if dist.is_main:
        mine = [model_fingerprint(source, revision)] + [model_fingerprint(s, r) for s, r in others]
    fingerprints = dist.broadcast(mine)
    return Study(
        out_dir,
        command,
        models=fingerprints,
        runtime=model_runtime(model),
        settings=settings,
        seed=seed,
        n_pairs=n_pairs,
        resume=resume,
        dist=dist,
    )


def pair_input(pair: PreferencePair) -> dict[str, str]:
    """What identifies a pair's unit: its rendered texts (exactly what the model reads: the commands pass pairs
    already rendered, `PreferencePair(prompt="", chosen=text, rejected=text, label=...)`), and the token ids a
    training tool gave them (`TokenizedText`, e.g. `--rendering trl`)."""
    out: dict = {"chosen": pair.chosen, "rejected": pair.rejected}
    for side in ("chosen", "rejected"):
        ids = getattr(out[side], "input_ids", None)
        if ids is not None:
            out[f"{side}_ids"] = list(ids)
    return out


def _label(pair: PreferencePair) -> str | None:
    return getattr(pair, "label", None)


# ---------------------------------------------------------------------------------------------- faithfulness
def faithfulness_units(pairs: Sequence[PreferencePair], by: Sequence[str] = FAITHFULNESS_BY) -> list[Unit]:
    """One unit per (granularity, pair): `component/17`, `head/17`, ..."""
    return [
        Unit(f"{g}/{i}", {"by": g, **pair_input(p)}, {"by": g, "pair": i, "label": _label(p)})
        for g in by
        for i, p in enumerate(pairs)
    ]


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
    from hooked_reward.analysis.faithfulness import _dra_labels, faithfulness_pair, summarise_faithfulness

    def compute(unit: Unit) -> dict[str, Any]:
        g = unit.info["by"]
        return faithfulness_pair(
            model, unit.input["chosen"], unit.input["rejected"], by=g, align=align, output=output, max_rows=max_rows
        )

    units = faithfulness_units(pairs, by)
    rows = study.run(units, compute, desc="faithfulness", progress=progress)
    if rows is None:
        return None
    n = len(pairs)
    return {
        g: summarise_faithfulness(
            rows[k * n : (k + 1) * n], _dra_labels(model, g), by=g, n_resamples=n_resamples, seed=seed
        )
        for k, g in enumerate(by)
    }


# ---------------------------------------------------------------------------------------------- analyze
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
    return [Unit(f"pair/{i}", pair_input(p), {"pair": i, "label": _label(p)}) for i, p in enumerate(pairs)]


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
    from hooked_reward.outputs import output_index

    output = output_index(output, model.output_names) if output is not None else None
    if output is None and model.n_outputs > 1:
        output = 0
    gated = bool(model.head.term_names())  # a head summing gated terms is read in every column

    def compute(unit: Unit) -> dict[str, Any]:
        return analysis_pair(
            model,
            unit.input["chosen"],
            unit.input["rejected"],
            output=output,
            gated=gated,
            method=method,
            top_k=top_k,
        )

    rows = study.run(analysis_units(pairs), compute, desc="analyze", progress=progress)
    if rows is None:
        return None
    return AnalysisData(
        r_chosen=torch.cat([r["r_chosen"] for r in rows]),
        r_rejected=torch.cat([r["r_rejected"] for r in rows]),
        lens_chosen=concat_texts([r["lens_chosen"] for r in rows]),
        lens_rejected=concat_texts([r["lens_rejected"] for r in rows]),
        attributions={by: concat_texts([r["attributions"][by] for r in rows]) for by in FAITHFULNESS_BY},
        faithfulness={by: [r["faithfulness"][by] for r in rows] for by in FAITHFULNESS_BY},
    )


def concat_texts(parts: Sequence[LT]) -> LT:
    """Results of one analysis on successive texts (or pairs), joined along their `text` axis.

    `values` (and `text` labels) are concatenated; so are the per-text fields — `rewards`, a per-text `bias` (as
    many axes as `rewards`), and `meta` entries holding one item per text (tensors or lists whose length is the
    part's number of texts) — and nested results (a pair attribution's `chosen`/`rejected`). Everything else is
    the first part's (the same in every part: labels of other axes, settings).
    """
    first = parts[0]
    axis = first.dims.index("text")
    sizes = [p.values.shape[axis] for p in parts]
    kw = {f.name: getattr(first, f.name) for f in fields(first) if f.init}
    kw["values"] = torch.cat([p.values for p in parts], dim=axis)
    if "text" in first.labels:
        kw["labels"] = {**first.labels, "text": [lab for p in parts for lab in p.labels["text"]]}
    rewards = getattr(first, "rewards", None)
    if isinstance(rewards, Tensor) and rewards.ndim > 0:
        kw["rewards"] = torch.cat([getattr(p, "rewards") for p in parts])  # noqa: B009 (LT: not every result has it)
        bias = getattr(first, "bias", None)
        if isinstance(bias, Tensor) and bias.ndim == rewards.ndim:
            kw["bias"] = torch.cat([getattr(p, "bias") for p in parts])  # noqa: B009 (as rewards)
    kw["meta"] = _concat_meta([p.meta for p in parts], sizes)
    for name in ("chosen", "rejected"):
        if isinstance(kw.get(name), LabeledTensor):
            kw[name] = concat_texts([getattr(p, name) for p in parts])
    return type(first)(**kw)


def select_texts(result: LT, idx: Sequence[int]) -> LT:
    """`result` restricted to the texts at positions `idx` along its `text` axis (per-text fields as in
    `concat_texts`)."""
    n = result.values.shape[result.dims.index("text")]
    parts = [_one_text(result, i, n) for i in idx]
    return concat_texts(parts) if parts else _one_text(result, slice(0, 0), n)


def _one_text(result: LT, i: int | slice, n: int) -> LT:
    sel = [i] if isinstance(i, int) else i
    axis = result.dims.index("text")
    kw = {f.name: getattr(result, f.name) for f in fields(result) if f.init}
    kw["values"] = result.values.index_select(axis, torch.arange(n)[sel])
    if "text" in result.labels:
        kw["labels"] = {**result.labels, "text": [result.labels["text"][j] for j in torch.arange(n)[sel].tolist()]}
    rewards = getattr(result, "rewards", None)
    if isinstance(rewards, Tensor) and rewards.ndim > 0:
        kw["rewards"] = rewards[sel]
        bias = getattr(result, "bias", None)
        if isinstance(bias, Tensor) and bias.ndim == rewards.ndim:
            kw["bias"] = bias[sel]
    kw["meta"] = _meta_rows(result.meta, sel, n)
    for name in ("chosen", "rejected"):
        if isinstance(kw.get(name), LabeledTensor):
            kw[name] = _one_text(kw[name], i, n)
    return type(result)(**kw)


def _meta_rows(meta: Any, sel: list[int] | slice, n: int) -> Any:
    if isinstance(meta, dict):
        return {k: _meta_rows(v, sel, n) for k, v in meta.items()}
    if isinstance(meta, Tensor) and meta.ndim > 0 and meta.shape[0] == n:
        return meta[sel]
    if isinstance(meta, list) and len(meta) == n:
        return [meta[j] for j in range(n)[sel]] if isinstance(sel, slice) else [meta[j] for j in sel]
    return meta


def _concat_meta(metas: Sequence[Any], sizes: Sequence[int]) -> Any:
    first = metas[0]
    if isinstance(first, dict):
        return {k: _concat_meta([m[k] for m in metas], sizes) for k in first}
    if isinstance(first, Tensor) and first.ndim > 0 and all(m.shape[0] == n for m, n in zip(metas, sizes, strict=True)):
        return torch.cat(list(metas))
    if isinstance(first, list) and all(len(m) == n for m, n in zip(metas, sizes, strict=True)):
        return [item for m in metas for item in m]
    return first


# ---------------------------------------------------------------------------------------------- probe
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


# ---------------------------------------------------------------------------------------------- compare
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
        Unit(f"{side}/{i}", pair_input(p), {"model": side, "pair": i, "label": _label(p)})
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


# ---------------------------------------------------------------------------------------------- extensions
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
