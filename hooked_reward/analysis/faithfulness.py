"""Faithfulness of linear attribution: does direct reward attribution rank components as patching does?

Per (clean, corrupted) pair, over the same components (attention layers and MLPs, or heads):

* linear attribution: ΔDRA_c = DRA_c(clean) − DRA_c(corrupted) (`pair_reward_attribution`), the direct
  contribution of component c to the reward difference, each side with its own frozen final-norm scale;
* patching effect: the denoising change r(corrupted with c's clean output) − r(corrupted) (`hook_attn_out`,
  `hook_mlp_out` at all positions, or a head's `hook_z`), the component's total (direct + indirect) effect.

The per-pair statistic is Spearman's ρ between the two vectors. Over pairs we report the mean ρ, a BCa
bootstrap 95% interval (`scipy.stats.bootstrap` via `analysis.stats.bootstrap_ci`), a sign-flip permutation
test of mean ρ = 0 and a Wilcoxon signed-rank test, and the per-pair distribution (`.plot()`: a histogram).

`recovery_control` checks the machinery on a planted mechanism: one head's W_O is set to write along the
reward direction, so patching must rank it first; the same head writing along random directions of matched
norm (orthogonal to the reward readout) is the null.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from hooked_reward.analysis.attribution import Granularity, pair_reward_attribution
from hooked_reward.analysis.patch_spec import PatchSpec, patch_spec
from hooked_reward.analysis.patching import Input, as_row, patch_block_outputs, patch_heads
from hooked_reward.analysis.ranked_patching import ranked_patching
from hooked_reward.analysis.results import LabeledTensor, require_pandas, require_pyplot
from hooked_reward.analysis.stats import bootstrap_ci, sign_flip_test, spearman, wilcoxon_test
from hooked_reward.errors import InputError
from hooked_reward.final_norm import reward_direction
from hooked_reward.names import Component, act_name, block_components, head_components
from hooked_reward.pairs import PreferencePair

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from hooked_reward.model import HookedRewardModel

__all__ = [
    "FaithfulnessResult",
    "faithfulness_pair",
    "faithfulness_study",
    "summarise_faithfulness",
    "RecoveryControl",
    "recovery_control",
    "plant_head",
]

#: The patching options of one faithfulness pair unless given: denoising, no progress bar per pair.
PAIR_DEFAULT = PatchSpec(progress=False)


@dataclass(repr=False)
class FaithfulnessResult(LabeledTensor):
    """Per-pair Spearman ρ between linear attribution and patching, and its summary over pairs.

    `values` = `rho [pair]` (NaN for a pair where either vector is constant or there are fewer than 3
    components; excluded from the summary), `attribution` and `patching` `[pair, component]` over
    `components`. `mean`, `ci` (BCa bootstrap, `confidence`), `p_sign_flip` and `p_wilcoxon` (two-sided, H0: ρ
    centred on 0) summarise the `n` finite ρs.
    """

    attribution: Float[Tensor, "pair component"] = field(default_factory=lambda: torch.empty(0, 0))
    patching: Float[Tensor, "pair component"] = field(default_factory=lambda: torch.empty(0, 0))
    components: list[Component] = field(default_factory=list)
    by: str = "component"
    mean: float = math.nan
    ci: tuple[float, float] = (math.nan, math.nan)
    p_sign_flip: float = math.nan
    p_wilcoxon: float = math.nan
    n: int = 0
    confidence: float = 0.95
    value_name: str = "Spearman ρ"

    @property
    def rho(self) -> Float[Tensor, " pair"]:
        """The per-pair ρ (= `values`)."""
        return self.values

    def summary(self) -> dict[str, Any]:
        """One row: granularity, n pairs used, mean ρ, CI, p-values."""
        return {
            "by": self.by,
            "n_pairs": self.n,
            "mean_rho": self.mean,
            "ci_low": self.ci[0],
            "ci_high": self.ci[1],
            "p_sign_flip": self.p_sign_flip,
            "p_wilcoxon": self.p_wilcoxon,
        }

    def _json_extra(self) -> dict[str, Any]:
        return {"summary": self.summary()}

    def to_frame(self) -> Any:
        """Per-pair table: pair index, ρ, and each pair's reward gap (clean − corrupted)."""
        pd = require_pandas()
        gaps = self.meta.get("reward_gap", [math.nan] * len(self.rho))
        return pd.DataFrame({"pair": range(len(self.rho)), "rho": self.rho.numpy(), "reward_gap": gaps})

    def plot(self, ax: Axes | None = None, bins: int = 20) -> Any:
        """Histogram of per-pair ρ with the mean and its bootstrap interval, on `ax`; returns the Axes."""
        plt = require_pyplot()
        if ax is None:
            _, ax = plt.subplots(figsize=(5, 3))
        finite = self.rho[torch.isfinite(self.rho)].numpy()
        ax.hist(finite, bins=bins, range=(-1, 1), color="tab:blue", alpha=0.7)
        ax.axvline(self.mean, color="k", label=f"mean ρ = {self.mean:.2f}")
        ax.axvspan(self.ci[0], self.ci[1], color="grey", alpha=0.3, label=f"{int(self.confidence * 100)}% CI")
        ax.axvline(0, color="tab:red", ls="--", lw=0.8)
        ax.set_xlabel(f"Spearman ρ (DRA vs patching, by {self.by})")
        ax.set_ylabel("pairs")
        ax.set_title(f"n = {self.n}, p (sign-flip) = {self.p_sign_flip:.2g}", fontsize=9)
        ax.legend(fontsize=7)
        return ax


def _dra_labels(model: HookedRewardModel, by: str) -> list[Component]:
    return block_components(model) if by == "component" else head_components(model)


def _input_pairs(
    model: HookedRewardModel, pairs: Sequence[PreferencePair | tuple[Input, Input]]
) -> list[tuple[Input, Input]]:
    """`(clean, corrupted)` inputs: a `PreferencePair`'s rendered `(chosen, rejected)` texts, or the pair as given."""
    return [p.render(model) if isinstance(p, PreferencePair) else p for p in pairs]


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    return spearman(x, y, what="DRA vs patching effects of one pair")


def _dra_output(model: HookedRewardModel, output: int | str | None) -> int | str | None:
    """DRA reads the same output as patching: on a multi-objective head (objective columns, then the score) that
    is the column named like the model's output, not the output's index."""
    if (output is None or isinstance(output, int)) and model.output_names[output or 0] in model.head.readout_names():
        return model.output_names[output or 0]
    return output


def faithfulness_pair(
    model: HookedRewardModel,
    clean: Input,
    corrupt: Input,
    *,
    by: str = "component",
    method: str = "exact",
    top_k: int = 8,
    spec: PatchSpec | None = None,
    **options: Any,
) -> dict[str, Any]:
    """One pair's unit of a faithfulness study, computed on its own (nothing depends on other pairs, so a study
    split over processes or resumed from a results store gives the same numbers).

    Returns `attribution [component]` (ΔDRA, float32) and `patching [component]` (denoising effects, float32) over
    `_dra_labels(model, by)`, `rho` (Spearman; NaN if either vector is constant) and `reward_gap`
    (r(clean) − r(corrupted)); with `method="ranked"` also `exact [component]` (which effects are exact) and
    `side_by_side` (estimate and exact effect of the patched sites). The patching options (`align`,
    `prompt_len`, `output`, `max_rows`; denoising, no progress bar) are `PatchSpec`'s, as `spec=` or keywords.
    """
    spec = patch_spec(spec, options, default=PAIR_DEFAULT, fn="faithfulness_pair")
    output = spec.output
    if by not in ("component", "head"):
        raise InputError(f"by must be 'component' or 'head', got {by!r}.")
    if method not in ("exact", "ranked"):
        raise InputError(f"method must be 'exact' or 'ranked', got {method!r}.")
    labels = _dra_labels(model, by)
    c_row, x_row = as_row(model, clean), as_row(model, corrupt)
    granularity: Granularity = "component" if by == "component" else "head"
    dra = pair_reward_attribution(
        model, c_row[None], x_row[None], by=granularity, output=_dra_output(model, output), progress=False
    )
    idx = [dra.labels["component"].index(lab) for lab in labels]
    attr = dra.values[0, idx].float().cpu()
    extra: dict[str, Any] = {}
    if method == "ranked":
        ranked = ranked_patching(model, c_row, x_row, by=by, top_k=top_k, spec=spec)
        exact = ~torch.isnan(ranked.values)
        eff = torch.where(exact, ranked.values, ranked.estimate).float().cpu()
        extra = {"exact": exact.cpu(), "side_by_side": ranked.side_by_side()}
        r_clean, r_corrupt = ranked.r_clean, ranked.r_corrupt
    else:
        if by == "component":
            res = patch_block_outputs(model, c_row, x_row, spec=spec)
        else:
            res = patch_heads(model, c_row, x_row, act="z", spec=spec)
        eff = res.values.reshape(-1).float().cpu()
        r_clean, r_corrupt = res.r_clean, res.r_corrupt
    return {
        "attribution": attr,
        "patching": eff,
        "rho": _spearman(attr.numpy(), eff.numpy()),
        "reward_gap": float(r_clean - r_corrupt),
        **extra,
    }


def summarise_faithfulness(
    rows: Sequence[dict[str, Any]],
    labels: list[Component],
    *,
    by: str,
    confidence: float = 0.95,
    n_resamples: int = 9999,
    seed: int = 0,
    method: str = "exact",
    top_k: int = 8,
) -> FaithfulnessResult:
    """The study's result from its per-pair rows (`faithfulness_pair`'s dicts, in pair order): mean ρ over the
    finite ρs, BCa bootstrap interval, sign-flip and Wilcoxon p-values."""
    if len(rows) == 0:
        raise InputError("No pairs given.")
    rho = torch.tensor([float(r["rho"]) for r in rows], dtype=torch.float32)
    finite = rho[torch.isfinite(rho)].double().numpy()
    n = int(finite.size)
    mean = float(finite.mean()) if n else math.nan
    ci = bootstrap_ci(finite, confidence=confidence, n_resamples=n_resamples, seed=seed) if n >= 2 else (math.nan,) * 2
    p_flip = sign_flip_test(finite, seed=seed) if n else math.nan
    p_wil = wilcoxon_test(finite)
    return FaithfulnessResult(
        values=rho,
        dims=("pair",),
        attribution=torch.stack([r["attribution"] for r in rows]),
        patching=torch.stack([r["patching"] for r in rows]),
        components=list(labels),
        by=by,
        mean=mean,
        ci=(float(ci[0]), float(ci[1])),
        p_sign_flip=p_flip,
        p_wilcoxon=p_wil,
        n=n,
        confidence=confidence,
        meta={"reward_gap": [float(r["reward_gap"]) for r in rows], "n_dropped": len(rows) - n, "method": method}
        | (
            {
                "top_k": top_k,
                "exact": torch.stack([r["exact"] for r in rows]),
                "side_by_side": [r["side_by_side"] for r in rows],
            }
            if method == "ranked"
            else {}
        ),
    )


def faithfulness_study(
    model: HookedRewardModel,
    pairs: Sequence[PreferencePair | tuple[Input, Input]],
    *,
    by: str = "component",
    confidence: float = 0.95,
    n_resamples: int = 9999,
    progress: bool = True,
    seed: int = 0,
    method: str = "exact",
    top_k: int = 8,
    spec: PatchSpec | None = None,
    **options: Any,
) -> FaithfulnessResult:
    """Spearman ρ between ΔDRA and denoising-patching effects per pair, summarised over `pairs`.

    `method="exact"` patches every site exactly (one forward per site and pair). `method="ranked"` (for large
    models) uses `ranked_patching`: attribution-patching estimates at every site, exact patching of the `top_k`
    it ranks; `patching` then holds the exact effect at those sites and the estimate elsewhere, `meta["exact"]`
    marks which entries are exact (`[pair, component]` bool) and `meta["side_by_side"]` lists estimate and exact
    for the patched sites of each pair.

    `pairs` are `PreferencePair`s (clean = chosen, corrupted = rejected, rendered by `PreferencePair.render`) or
    `(clean, corrupted)` inputs (text or token rows). `by="component"` compares attention layers and MLPs
    (`hook_attn_out`, `hook_mlp_out`, all positions); `by="head"` compares heads (`hook_z`). Different-length
    pairs need `align` (and `prompt_len`), as in `patching`. Each pair is computed on its own
    (`faithfulness_pair`), then summarised (`summarise_faithfulness`). The patching options (`align`,
    `prompt_len`, `output`, `max_rows`) are `PatchSpec`'s, as `spec=` or keywords; `progress` is the bar over
    pairs.
    """
    spec = patch_spec(spec, options, default=PAIR_DEFAULT, fn="faithfulness_study")
    if by not in ("component", "head"):
        raise InputError(f"by must be 'component' or 'head', got {by!r}.")
    if len(pairs) == 0:
        raise InputError("No pairs given.")
    if method not in ("exact", "ranked"):
        raise InputError(f"method must be 'exact' or 'ranked', got {method!r}.")
    rows = [
        faithfulness_pair(model, clean, corrupt, by=by, method=method, top_k=top_k, spec=spec)
        for clean, corrupt in tqdm(_input_pairs(model, pairs), desc=f"faithfulness ({by})", disable=not progress)
    ]
    return summarise_faithfulness(
        rows,
        _dra_labels(model, by),
        by=by,
        confidence=confidence,
        n_resamples=n_resamples,
        seed=seed,
        method=method,
        top_k=top_k,
    )


# ---------------------------------------------------------------------------------------------- planted control
def _o_slice(model: HookedRewardModel, layer: int, head: int) -> tuple[Tensor, tuple[slice, slice], bool]:
    """The output projection's weight and the block holding head `head`'s W_O, in the module's own layout."""
    proj = model.blocks[layer].attn.o
    proj = getattr(proj, "original_component", proj)
    weight = proj.weight
    d_head = model.cfg.d_head
    cols = slice(head * d_head, (head + 1) * d_head)
    if isinstance(proj, torch.nn.Linear):  # [d_model, n_heads * d_head]
        return weight, (slice(None), cols), False
    return weight, (cols, slice(None)), True  # GPT-2 Conv1D: [n_heads * d_head, d_model]


def plant_head(
    model: HookedRewardModel, layer: int, head: int, direction: Tensor, read: Tensor, scale: float
) -> Tensor:
    """Set head (layer, head)'s W_O to `scale · read ⊗ direction` (TL layout `[d_head, d_model]`), in place.

    The head then writes `scale (z · read) direction` into the residual. Returns the old weight block, to
    restore with `restore_head`.
    """
    weight, sl, transposed = _o_slice(model, layer, head)
    old = weight.data[sl].clone()
    w_o = scale * torch.outer(read / read.norm(), direction / direction.norm())  # [d_head, d_model]
    with torch.no_grad():
        weight.data[sl] = (w_o if transposed else w_o.T).to(weight.dtype)
    return old


def restore_head(model: HookedRewardModel, layer: int, head: int, old: Tensor) -> None:
    weight, sl, _ = _o_slice(model, layer, head)
    with torch.no_grad():
        weight.data[sl] = old


@dataclass(repr=False)
class RecoveryControl(LabeledTensor):
    """Where patching ranks a planted head (1 = the largest mean |effect| over pairs), against the null.

    `values` = `effects [layer, head]`: the planted run's mean |effect| of patching each head.
    `planted_rank` / `planted_share` (the planted head's share of the summed mean |effect|) with W_O along the
    reward direction; `null_ranks` / `null_shares` with W_O along random directions of the same norm,
    orthogonal to the reward readout.
    """

    layer: int = 0
    head: int = 0
    planted_rank: int = 0
    planted_share: float = math.nan
    null_ranks: list[int] = field(default_factory=list)
    null_shares: list[float] = field(default_factory=list)
    value_name: str = "mean |Δ reward|"

    @property
    def effects(self) -> Tensor:
        """The planted run's mean |effect| per head, `[layer, head]` (= `values`)."""
        return self.values

    def to_frame(self) -> Any:
        """One row per run (planted, null0, ...): the planted head's rank and share."""
        pd = require_pandas()
        rows = [{"run": "planted", "rank": self.planted_rank, "share": self.planted_share}]
        nulls = zip(self.null_ranks, self.null_shares, strict=True)
        rows += [{"run": f"null{i}", "rank": r, "share": s} for i, (r, s) in enumerate(nulls)]
        return pd.DataFrame(rows)

    def plot(self, ax: Axes | None = None) -> Any:
        """Heatmap of mean |effect| per head with the planted head boxed, on `ax`; returns the Axes."""
        plt = require_pyplot()
        if ax is None:
            _, ax = plt.subplots(figsize=(4.5, 3.5))
        im = ax.imshow(self.values.detach().float().cpu().numpy(), aspect="auto", cmap="viridis")
        ax.add_patch(plt.Rectangle((self.head - 0.5, self.layer - 0.5), 1, 1, fill=False, ec="red", lw=2))
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
        ax.set_title(f"planted L{self.layer}H{self.head}: rank {self.planted_rank}", fontsize=9)
        ax.figure.colorbar(im, ax=ax, label=self.value_name)
        return ax


def _head_effects(model: HookedRewardModel, pairs: Sequence[tuple[Tensor, Tensor]], max_rows: int) -> Tensor:
    effs = [patch_heads(model, c, x, act="z", max_rows=max_rows, progress=False).values.abs() for c, x in pairs]
    return torch.stack(effs).mean(0)


def _rank_share(effects: Tensor, layer: int, head: int) -> tuple[int, float]:
    flat = effects.reshape(-1)
    k = layer * effects.shape[1] + head
    rank = int((flat > flat[k]).sum()) + 1
    return rank, float(flat[k] / flat.sum())


def recovery_control(
    model: HookedRewardModel,
    pairs: Sequence[PreferencePair | tuple[Input, Input]],
    layer: int | None = None,
    head: int = 0,
    *,
    scale: float = 1.0,
    n_null: int = 3,
    max_rows: int = 64,
    seed: int = 0,
) -> RecoveryControl:
    """Plant a reward-writing head, check head patching finds it; random matched-norm directions as null.

    The head (default: last layer, head `head`) reads `read` = the mean clean − corrupted difference of its
    z at the reward position (so the pair differs along what it reads), and writes along `W_R_eff`'s direction
    with W_O norm `scale` × the residual norm scale (`sqrt(d_model)`); the null runs write along random unit
    directions with the component along `W_R_eff` removed. The model's weights are restored afterwards. Keep
    `scale` near 1: a much larger write moves the final norm's scale, which is an effect in any direction.
    """
    layer = model.cfg.n_layers - 1 if layer is None else layer
    rows = [(as_row(model, c), as_row(model, x)) for c, x in _input_pairs(model, pairs)]
    name = act_name("z", layer)
    diffs = []
    for c, x in rows:
        _, cc = model.run_with_cache(c[None], names_filter=name)
        _, cx = model.run_with_cache(x[None], names_filter=name)
        diffs.append(cc[name][0, -1, head] - cx[name][0, -1, head])
    read = torch.stack(diffs).mean(0).float()
    if float(read.norm()) == 0:
        read = torch.ones_like(read)
    w_r = reward_direction(model, 0)
    size = scale * math.sqrt(model.cfg.d_model)
    gen = torch.Generator().manual_seed(seed)
    nulls = []
    for _ in range(n_null):
        d = torch.randn(model.cfg.d_model, generator=gen)
        d = d - (d @ w_r) / (w_r @ w_r) * w_r
        nulls.append(d)
    results = []
    for direction in [w_r, *nulls]:
        old = plant_head(model, layer, head, direction, read, size)
        try:
            effects = _head_effects(model, rows, max_rows)
        finally:
            restore_head(model, layer, head, old)
        results.append((effects, *_rank_share(effects, layer, head)))
    planted = results[0]
    return RecoveryControl(
        values=planted[0],
        dims=("layer", "head"),
        layer=layer,
        head=head,
        planted_rank=planted[1],
        planted_share=planted[2],
        null_ranks=[r[1] for r in results[1:]],
        null_shares=[r[2] for r in results[1:]],
    )
