"""Run a probe suite on a reward model: score minimal pairs, test each factor, localise the significant ones.

``run_probe_suite(model, factors)`` renders each pair's two sides (with the tokenizer's chat template when
it has one — no doubled BOS), scores them, computes per-factor statistics with Benjamini–Hochberg across the
factors (see :mod:`hooked_reward.analysis.probes.stats`), and for every significant factor localises the
effect over components and heads (:mod:`hooked_reward.analysis.probes.localise`).

``model`` is a :class:`hooked_reward.HookedRewardModel` or, for quick checks, any callable mapping a list
of texts to rewards (then nothing is localised and lengths are counted in words).
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from hooked_reward.analysis.probes.generators import Factor, ProbePair, default_factors
from hooked_reward.analysis.probes.localise import FactorLocalisation, concat_localisations, localise_pairs
from hooked_reward.analysis.probes.stats import STATS, FactorStats, factor_stats
from hooked_reward.analysis.results import LabeledTensor
from hooked_reward.analysis.stats import check_nan_policy, finite_rows
from hooked_reward.errors import InputError
from hooked_reward.outputs import select_output

__all__ = [
    "ProbeSuiteResult",
    "run_probe_suite",
    "render_texts",
    "render_and_tokenize",
    "score_texts",
    "probe_pairs",
    "score_factor",
    "summarise_probe_scores",
]

Render = Callable[[str, str], str]


def _is_hooked(model) -> bool:
    return hasattr(model, "run_with_cache") and hasattr(model, "tokenize")


def render_texts(model, prompts: Sequence[str], responses: Sequence[str], render: Render | None = None) -> list[str]:
    """The full text of each (prompt, response), as the reward model reads it.

    ``render`` wins when given (e.g. an organism's own renderer).  Otherwise a HookedRewardModel renders
    with ``model.render_chat`` (the tokenizer's chat template when it has one; the rendered text keeps the
    template's BOS and ``model.tokenize`` does not add a second), and a pair without a prompt is the bare
    response when there is no template.  A plain callable gets ``prompt + "\\n" + response``.
    """
    out = []
    for p, r in zip(prompts, responses, strict=True):
        if render is not None:
            out.append(render(p, r))
        elif _is_hooked(model) and hasattr(model, "render_chat"):
            templated = bool(getattr(getattr(model, "tokenizer", None), "chat_template", None))
            out.append(model.render_chat(p, r) if (p or templated) else r)
        else:
            out.append(f"{p}\n{r}" if p else r)
    return out


def render_and_tokenize(
    model, prompts: Sequence[str], responses: Sequence[str], render: Render | None = None
) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch pos"]]:
    """``render_texts`` then ``model.prepare`` (special tokens applied once): ``(tokens, attention_mask)``."""
    return model.prepare(render_texts(model, prompts, responses, render))


def _as_rewards(out, output: int | str | None, names: Sequence[str] | None = None) -> np.ndarray:
    r = out.detach().float().cpu() if isinstance(out, Tensor) else torch.as_tensor(np.asarray(out, dtype=np.float64))
    return select_output(r, output, names=names).numpy().astype(np.float64)


@torch.no_grad()
def score_texts(
    model,
    prompts: Sequence[str],
    responses: Sequence[str],
    *,
    render: Render | None = None,
    batch_size: int = 32,
    output: int | str | None = None,
) -> tuple[Float[np.ndarray, " n"], Float[np.ndarray, " n"]]:
    """Rewards and lengths (tokens for a HookedRewardModel, words for a plain callable) of each text."""
    rewards, lengths = [], []
    for s in range(0, len(prompts), batch_size):
        p, r = prompts[s : s + batch_size], responses[s : s + batch_size]
        if _is_hooked(model):
            tokens, mask = render_and_tokenize(model, p, r, render)
            # non-finite rewards are kept: the suite applies its own nan_policy to the pairs
            rewards.append(
                _as_rewards(model(tokens, attention_mask=mask, nan_policy="propagate"), output, model.output_names)
            )
            lengths.append(mask.sum(-1).cpu().numpy().astype(np.float64))
        else:
            texts = render_texts(model, p, r, render)
            rewards.append(_as_rewards(model(texts), output))
            lengths.append(np.array([len(t.split()) for t in texts], dtype=np.float64))
    return np.concatenate(rewards), np.concatenate(lengths)


STAT_COLUMNS = STATS


@dataclass(repr=False)
class ProbeSuiteResult(LabeledTensor):
    """Everything a probe suite measured, a `LabeledTensor`.

    ``values [factor, stat]``: the numeric statistics of each factor (stats ``STAT_COLUMNS``: n, mean, sd,
    std_mean, d, ci_low, ci_high, p, q); ``stats``: one :class:`FactorStats` per factor (in run order, with the
    verdicts and flags). ``rewards[f] = (r_biased, r_neutral)`` per pair; ``deltas[f] = r_biased − r_neutral``.
    ``reward_sd``: sd of all rewards over every probe text (the unit of ``std_mean``). ``localisation[f]`` for
    each significant factor (when the model could be localised).
    """

    stats: list[FactorStats] = field(default_factory=list, repr=False)
    rewards: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    reward_sd: float = math.nan
    alpha: float = 0.05
    pairs: dict[str, list[ProbePair]] = field(default_factory=dict)
    localisation: dict[str, FactorLocalisation] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    value_name: str = "statistic"

    @classmethod
    def build(cls, stats: list[FactorStats], **fields: object) -> ProbeSuiteResult:
        """The result from its per-factor statistics (and any of the other fields by name)."""
        values = torch.tensor([[float(getattr(s, c)) for c in STAT_COLUMNS] for s in stats], dtype=torch.float64)
        labels = {"factor": [s.factor for s in stats], "stat": list(STAT_COLUMNS)}
        values = values.reshape(len(stats), len(STAT_COLUMNS))
        return cls(values=values, dims=("factor", "stat"), labels=labels, stats=stats, **fields)  # type: ignore[arg-type]

    @property
    def deltas(self) -> dict[str, np.ndarray]:
        return {k: b - n for k, (b, n) in self.rewards.items()}

    def __getitem__(self, factor: str) -> FactorStats:
        for s in self.stats:
            if s.factor == factor:
                return s
        raise KeyError(f"no factor {factor!r}; have {[s.factor for s in self.stats]}")

    @property
    def significant(self) -> list[str]:
        """Factors whose BH-adjusted p is at most ``alpha``."""
        return [s.factor for s in self.stats if s.significant]

    def to_frame(self):
        """One row per factor with every statistic (pandas DataFrame)."""
        import pandas as pd

        return pd.DataFrame([s.as_dict() for s in self.stats]).set_index("factor")

    def _json_extra(self) -> dict:
        """The old report keys: every factor's statistics and the per-pair deltas."""
        return {"factors": [s.as_dict() for s in self.stats], "deltas": self.deltas}

    def save_json(self, path) -> None:
        with open(path, "w") as f:
            json.dump(self.to_json(), f, indent=1)

    def plot(self, ax=None):
        """Forest plot: mean Δ in reward-sd units with its 95% BCa interval, one row per factor.

        Filled markers are significant after BH; an infinite Cohen's d (perfectly consistent shift) is
        marked with "*" after the name.
        """
        import matplotlib.pyplot as plt

        n = len(self.stats)
        if ax is None:
            _, ax = plt.subplots(figsize=(6, 0.4 * n + 1.2))
        sd = self.reward_sd if self.reward_sd > 0 else 1.0
        for i, s in enumerate(self.stats[::-1]):
            color = "tab:red" if s.significant and s.mean > 0 else "tab:blue" if s.significant else "0.5"
            ax.plot([s.ci_low / sd, s.ci_high / sd], [i, i], color=color, lw=2)
            ax.plot([s.mean / sd], [i], "o", color=color, mfc=color if s.significant else "white")
        ax.axvline(0, color="k", lw=0.6)
        ax.set_yticks(range(n), [s.factor + ("*" if s.degenerate else "") for s in self.stats[::-1]])
        ax.set_xlabel("mean Δ = r(biased) − r(neutral), in sd of probe rewards (95% BCa CI)")
        ax.set_title(f"Probe effects (filled: BH q ≤ {self.alpha})", fontsize=10)
        return ax


def _resolve_factors(factors: Iterable[str | Factor] | Mapping[str, Factor] | None) -> list[Factor]:
    builtin = default_factors()
    if factors is None:
        return list(builtin.values())
    if isinstance(factors, Mapping):
        return list(factors.values())
    out = []
    for f in factors:
        if isinstance(f, str):
            if f not in builtin:
                raise InputError(f"unknown factor {f!r}; built-in factors are {sorted(builtin)}")
            f = builtin[f]
        out.append(f)
    return out


def run_probe_suite(
    model,
    factors: Iterable[str | Factor] | Mapping[str, Factor] | None = None,
    n_pairs: int = 30,
    seed: int = 0,
    *,
    pairs: Mapping[str, Sequence[ProbePair]] | None = None,
    phrases: Mapping[str, str] | None = None,
    render: Render | None = None,
    alpha: float = 0.05,
    batch_size: int = 32,
    localise: bool = True,
    heads: bool = True,
    patching: bool = True,
    output: int | str | None = None,
    n_boot: int = 9999,
    progress: bool = True,
    min_effect: float | None = None,
    nan_policy: str = "raise",
) -> ProbeSuiteResult:
    """Score every factor's minimal pairs, test each factor, and localise the significant ones.

    Args:
        model: a HookedRewardModel, or a callable ``texts -> rewards`` (no localisation then).
        factors: built-in factor names, :class:`Factor` objects, or None for all built-in factors.
            Pass ``factors=[]`` to run only ``pairs``.
        n_pairs, seed: pairs generated per factor, and their seed.
        pairs: extra ready-made pairs by factor name (e.g. from ``load_pairs_jsonl``); ``phrases`` names
            what their biased side adds, for the verdicts.
        render: ``(prompt, response) -> text``; default ``model.render_chat`` (chat template if any).
        alpha: false-discovery rate for Benjamini–Hochberg across the factors.
        localise, heads, patching: what to compute for each significant factor.
        output: which output of a multi-output head to probe.
        min_effect: the smallest mean Δ (reward units) that matters; each factor reports whether its CI
            excludes it (``beyond_min_effect``) or lies inside it (``negligible``), beside significance.
        nan_policy: a pair with a non-finite reward raises `NonFiniteError` naming the factor and pairs
            ("raise"), or is dropped with a note saying how many ("omit").
    Returns:
        :class:`ProbeSuiteResult` (``.to_frame()``, ``.plot()``, ``.significant``, ``.localisation``).
    """
    _check_alpha(alpha)  # before scoring: a bad alpha fails in a second, not after the run
    all_pairs, phrase_of = probe_pairs(factors, n_pairs, seed, pairs=pairs, phrases=phrases)
    scores = {
        name: score_factor(model, ps, render=render, batch_size=batch_size, output=output)
        for name, ps in tqdm(all_pairs.items(), desc="probe factors", disable=not progress)
    }
    result = summarise_probe_scores(
        model,
        all_pairs,
        phrase_of,
        scores,
        alpha=alpha,
        n_boot=n_boot,
        seed=seed,
        min_effect=min_effect,
        nan_policy=nan_policy,
    )
    if localise and _is_hooked(model):
        for name in tqdm(result.significant, desc="localise", disable=not progress):
            result.localisation[name] = localise_factor(
                model,
                result.pairs[name],
                render=render,
                batch_size=batch_size,
                heads=heads,
                patching=patching,
                output=output,
            )
    elif localise and result.significant:
        result.notes.append("model is a plain reward function: no localisation")
    return result


def _check_alpha(alpha: float) -> None:
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not 0 < alpha <= 1:
        raise InputError(f"alpha={alpha!r}: the false-discovery rate must lie in (0, 1] (e.g. 0.05).")


def probe_pairs(
    factors: Iterable[str | Factor] | Mapping[str, Factor] | None = None,
    n_pairs: int = 30,
    seed: int = 0,
    *,
    pairs: Mapping[str, Sequence[ProbePair]] | None = None,
    phrases: Mapping[str, str] | None = None,
) -> tuple[dict[str, list[ProbePair]], dict[str, str]]:
    """Every factor's pairs (generated: `n_pairs` with `seed`; or given in `pairs`) and what its biased side
    adds, in run order."""
    if isinstance(n_pairs, bool) or not isinstance(n_pairs, numbers.Integral) or n_pairs < 1:
        raise InputError(f"n_pairs={n_pairs!r}: give the number of pairs per factor, an int >= 1.")
    all_pairs: dict[str, list[ProbePair]] = {}
    phrase_of: dict[str, str] = {}
    for f in _resolve_factors(factors):
        all_pairs[f.name] = f.pairs(n_pairs, seed)
        phrase_of[f.name] = f.phrase
    for name, ps in (pairs or {}).items():
        all_pairs[name] = list(ps)
        phrase_of[name] = (phrases or {}).get(name, name.replace("_", " "))
    if not all_pairs:
        raise InputError("no factors and no pairs to probe")
    return all_pairs, phrase_of


def score_factor(
    model,
    ps: Sequence[ProbePair],
    *,
    render: Render | None = None,
    batch_size: int = 32,
    output: int | str | None = None,
) -> tuple[Float[np.ndarray, " n"], Float[np.ndarray, " n"], Float[np.ndarray, " n"]]:
    """One factor's unit: rewards of the biased and neutral sides, and their length difference (biased −
    neutral, tokens or words), in batches of this factor's pairs only."""
    rb, lb = score_texts(
        model, [p.prompt for p in ps], [p.biased for p in ps], render=render, batch_size=batch_size, output=output
    )
    rn, ln = score_texts(
        model,
        [p.prompt_neutral for p in ps],
        [p.neutral for p in ps],
        render=render,
        batch_size=batch_size,
        output=output,
    )
    return rb, rn, lb - ln


def summarise_probe_scores(
    model,
    all_pairs: Mapping[str, Sequence[ProbePair]],
    phrase_of: Mapping[str, str],
    scores: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
    *,
    alpha: float = 0.05,
    n_boot: int = 9999,
    seed: int = 0,
    min_effect: float | None = None,
    nan_policy: str = "raise",
) -> ProbeSuiteResult:
    """Per-factor statistics (Benjamini–Hochberg across factors) from every factor's `score_factor`, without
    localisation (`run_probe_suite` adds it for the significant factors)."""
    _check_alpha(alpha)
    all_pairs = {k: list(v) for k, v in all_pairs.items()}
    rewards = {name: (rb, rn) for name, (rb, rn, _) in scores.items()}
    len_diffs = {name: d for name, (_, _, d) in scores.items()}
    check_nan_policy(nan_policy, allowed=("raise", "omit"))
    notes: list[str] = []
    raw_deltas = {k: b - n for k, (b, n) in rewards.items()}  # factor_stats drops and counts non-finite ones
    for name, (rb, rn) in list(rewards.items()):
        ok = finite_rows(rb, rn, what=f"probe rewards of factor {name!r} (pairs by index)", nan_policy=nan_policy)
        if not ok.all():  # nan_policy="omit": drop the pairs, say so
            rewards[name] = (rb[ok], rn[ok])
            len_diffs[name] = len_diffs[name][ok]
            all_pairs[name] = [p for p, keep in zip(all_pairs[name], ok, strict=True) if keep]
            notes.append(f"{name}: {int((~ok).sum())} pair(s) with non-finite rewards dropped (nan_policy='omit').")
    everything = np.concatenate([np.concatenate(v) for v in rewards.values()])
    reward_sd = float(np.std(everything, ddof=1)) if everything.size > 1 else math.nan
    st = factor_stats(
        raw_deltas,
        phrase_of,
        reward_sd,
        alpha=alpha,
        n_boot=n_boot,
        seed=seed,
        len_diffs=len_diffs,
        min_effect=min_effect,
        nan_policy=nan_policy,
    )
    result = ProbeSuiteResult.build(st, rewards=rewards, reward_sd=reward_sd, alpha=alpha, pairs=all_pairs, notes=notes)
    unit = "tokens" if _is_hooked(model) else "words"
    for s in st:
        if math.isfinite(s.mean_len_diff) and abs(s.mean_len_diff) >= 1 and s.factor != "length":
            result.notes.append(
                f"{s.factor}: the biased side is on average {s.mean_len_diff:+.1f} {unit} longer; on a model "
                "with a length bias part of this factor's effect is length."
            )
    return result


def localise_factor(
    model,
    pairs: Sequence[ProbePair],
    *,
    render: Render | None = None,
    batch_size: int = 32,
    heads: bool = True,
    patching: bool = True,
    output: int | str | None = None,
) -> FactorLocalisation:
    """DRA and reward-position patching of one factor's mean Δ, batched over its pairs."""
    parts, weights = [], []
    for s in range(0, len(pairs), batch_size):
        ps = pairs[s : s + batch_size]
        b = render_and_tokenize(model, [p.prompt for p in ps], [p.biased for p in ps], render)
        n = render_and_tokenize(model, [p.prompt_neutral for p in ps], [p.neutral for p in ps], render)
        parts.append(localise_pairs(model, b, n, ps[0].factor, heads=heads, patching=patching, output=output))
        weights.append(len(ps))
    return parts[0] if len(parts) == 1 else concat_localisations(parts, weights)
