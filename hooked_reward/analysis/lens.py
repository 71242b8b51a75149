"""The reward lens: the reward each partial residual stream would give, read through the final norm and `W_R`.

For a residual `x_p` at lens point p (`blocks.l.hook_resid_pre`, `..._mid`, and the last block's
`hook_resid_post`), at the reward position (or every position), two readings:

    "frozen":      r_p = (P x_p / σ) · W_R_eff + b_R_eff
    "recomputed":  r_p = ln_final(x_p) · W_R + b_R

`σ` is the final norm's scale (`ln_final.hook_scale`) from the real run at that position, `P` centres for
LayerNorm (identity for RMSNorm), `W_R_eff = W_R ⊙ gain`, `b_R_eff = b_R + W_R · bias_ln`. The frozen lens is
linear in x, so the change between two points is exactly the direct reward of the layers in between
(it equals `attribution.direct_reward_attribution` summed). The recomputed lens is the classic logit lens:
the norm renormalises each partial residual, which is what the head would do if the model stopped there,
but its steps do not add up. Both end at the model's reward at the final point.

Every head is read through its own `Readout` (`model.head.readout(cache)`): `value = h · direction + offset`
per column, with `h` = ln_final's output and, for heads that are not one affine map, a per-row direction:

* ArmoRM (`objective_names` + `score_directions`): one column per objective (`W_R` row k, no bias) and a last
  column "score" along `(T g) @ W_R` with the gate `g` **held fixed at this run's weights** (`gating.hook_weights`).
  The frozen lens ends exactly at the objectives' rewards and at the score. The recomputed lens applies
  ln_final to the partial residual and runs the objectives and the transform on it, the gate still held fixed.
* MLP value heads (`linearise_at`): the frozen lens reads along the head's **linearisation at the run's own
  point** (the final-normed residual at that position: gradient direction and offset), so it is additive and
  ends at the reward; the recomputed lens runs the real head on ln_final of each partial residual.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import torch
from einops import rearrange
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from hooked_reward.analysis.results import LabeledTensor, require_pyplot
from hooked_reward.errors import InputError
from hooked_reward.final_norm import fold_final_norm, frozen_final_norm
from hooked_reward.heads.base import Readout
from hooked_reward.names import FINAL_SCALE, REWARD, act_name
from hooked_reward.outputs import output_index

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from hooked_reward.cache import RewardActivationCache
    from hooked_reward.model import HookedRewardModel

LensVariant = Literal["frozen", "recomputed"]
VARIANTS: tuple[str, ...] = ("frozen", "recomputed")
Inputs = str | Sequence[str] | Int[Tensor, "batch pos"]


# ---------------------------------------------------------------------------------------------- batching
def iter_token_batches(
    model: HookedRewardModel,
    inputs: Inputs,
    *,
    attention_mask: Int[Tensor, "batch pos"] | None = None,
    batch_size: int = 16,
    progress: bool = True,
    desc: str = "",
) -> Iterator[tuple[Int[Tensor, "b pos"], Int[Tensor, "b pos"]]]:
    """Yield `(tokens, mask)` batches of at most `batch_size` rows, with a tqdm bar (`progress=False` hides it).

    Texts are tokenized one batch at a time (each batch padded only to its own longest text); token ids are
    sliced, with `attention_mask` (all ones when None).
    """
    if batch_size < 1:
        raise InputError(f"batch_size must be at least 1, got {batch_size}.")
    if isinstance(inputs, str):
        inputs = [inputs]
    if isinstance(inputs, Tensor):
        tokens, mask = model.prepare(inputs, attention_mask=attention_mask)
        n = tokens.shape[0]
        for start in tqdm(range(0, n, batch_size), desc=desc, disable=not progress or n <= batch_size):
            yield tokens[start : start + batch_size], mask[start : start + batch_size]
        return
    texts = list(inputs)
    if attention_mask is not None:
        raise InputError("attention_mask is given with text input; pass token ids with a mask, or text alone.")
    if not texts:
        raise InputError("No texts given: pass at least one string.")
    n = len(texts)
    for start in tqdm(range(0, n, batch_size), desc=desc, disable=not progress or n <= batch_size):
        yield model.prepare(texts[start : start + batch_size])


def token_strings(model: HookedRewardModel, tokens: Int[Tensor, " pos"]) -> list[str]:
    """Each token as text, for people to read (`[pos]` ids -> `pos` strings): the tokenizer's
    `convert_tokens_to_string` of that one token, so byte-level BPE's markers become text ("Ġright" reads
    " right", "Ċ" a newline) and SentencePiece's "▁" a space; a token that converts to nothing keeps its raw
    form. Ids as strings when the model has no tokenizer."""
    tok = getattr(model, "tokenizer", None)
    ids = tokens.tolist()
    if tok is None:
        return [str(i) for i in ids]
    out = []
    for raw in tok.convert_ids_to_tokens(ids):
        raw = str(raw)
        try:
            text = tok.convert_tokens_to_string([raw])
        except Exception:  # noqa: BLE001 — display only: the raw token is still right
            text = raw
        out.append(text if text else raw)
    return out


# ---------------------------------------------------------------------------------------------- lens points
def lens_points(model: HookedRewardModel, sublayers: bool = True) -> list[tuple[str, str]]:
    """`(label, hook_name)` for each lens point, in order, with TransformerLens's `accumulated_resid` labels.

    `sublayers=True`: `l_pre` (`blocks.l.hook_resid_pre`) and `l_mid` (`blocks.l.hook_resid_mid`, after
    attention) for every block, then `final_post` (the last block's `hook_resid_post`, what `ln_final` reads).
    `sublayers=False` leaves the `_mid` points out. (`blocks.l.hook_resid_post` equals
    `blocks.{l+1}.hook_resid_pre`, so it is not repeated.)
    """
    points: list[tuple[str, str]] = []
    for layer in range(model.cfg.n_layers):
        points.append((f"{layer}_pre", act_name("resid_pre", layer)))
        if sublayers:
            points.append((f"{layer}_mid", act_name("resid_mid", layer)))
    points.append(("final_post", act_name("resid_post", model.cfg.n_layers - 1)))
    return points


# ---------------------------------------------------------------------------------------------- the two readings
def _apply_ln_final(model: HookedRewardModel, resid: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_model"]:
    """The bridged `ln_final` on residuals of any leading shape (float32 out)."""
    shape = resid.shape
    flat = rearrange(resid, "... d -> 1 (...) d")
    with torch.no_grad():
        normed = model.ln_final(flat.to(model.W_E.dtype)).to(torch.float32)
    return normed.reshape(shape)


def readout_lens(
    model: HookedRewardModel,
    resid: Float[Tensor, "batch point *pos d_model"],
    scale: Float[Tensor, "batch 1 *pos 1"],
    readout: Readout,
    variant: str,
) -> Float[Tensor, "batch point *pos n_cols"]:
    """One lens variant through the head's `Readout`. frozen: `frozen_final_norm(x) · (direction ⊙ g) +
    direction · β + offset` (linear in x); recomputed: the head's columns on `ln_final(x)` (`head.values_at`:
    the readout itself, or the real head for linearised heads)."""
    if variant == "frozen":
        return fold_final_norm(model, readout).apply(frozen_final_norm(model, resid, scale))
    return model.head.values_at(_apply_ln_final(model, resid), readout)


def frozen_lens(
    model: HookedRewardModel,
    resid: Float[Tensor, "... d_model"],
    scale: Float[Tensor, "... 1"],
) -> Float[Tensor, "... n_outputs"]:
    """`(P x / σ) · W_R_eff + b_R_eff` for residuals `x` and their frozen final-norm scales `σ` (broadcast), for an
    affine head. Linear in `x`: the frozen lens of a sum is the sum of the frozen lenses, plus `b_R_eff` once."""
    folded = fold_final_norm(model, model.head.readout())
    x = frozen_final_norm(model, resid, scale)
    return x @ folded.direction[0].to(x.device).T + folded.offset[0].to(x.device)


def recomputed_lens(model: HookedRewardModel, resid: Float[Tensor, "... d_model"]) -> Float[Tensor, "... n_outputs"]:
    """`ln_final(x) · W_R + b_R`: the bridged final norm recomputed on each residual `x`, then an affine head."""
    readout = model.head.readout()
    normed = _apply_ln_final(model, resid)
    return normed @ readout.direction[0].to(normed.device).T + readout.offset[0].to(normed.device)


# ---------------------------------------------------------------------------------------------- result
@dataclass(repr=False)
class RewardLensResult(LabeledTensor):
    """Reward-lens values with dims `(variant, text, point[, pos][, output])`.

    `rewards`: the model's rewards `[text(, output)]` from the same runs (the lens ends there).
    `hook_names`: the residual hook read at each point. With `pos`, positions are each text's own token
    indices (padding removed, so left and right padding agree); entries past a text's length are NaN, and
    `meta["tokens"]` holds each text's token strings.
    """

    rewards: Tensor = field(default_factory=lambda: torch.empty(0))
    hook_names: list[str] = field(default_factory=list)

    def variant(self, name: str) -> Tensor:
        """The values of one variant ("frozen" or "recomputed"), without the variant axis."""
        return self.values[self.index_of("variant", name)]

    def plot(self, ax: Axes | None = None, text: int | None = None, output: int | str = 0, **kwargs: Any) -> Any:
        """Lens curves: reward against lens point, one line per text (solid frozen, dashed recomputed).

        Per-position results plot a heatmap instead: the first variant for `text` (default 0), point × token.
        Multi-output results show `output`.
        """
        plt = require_pyplot()
        if ax is None:
            _, ax = plt.subplots(figsize=(8, 3.5))
        values = self.values.detach().to("cpu", torch.float32)
        if "output" in self.dims:
            values = values[..., output_index(output, self.axis_labels("output"))]
        points = [str(p) for p in self.axis_labels("point")]
        if "pos" in self.dims:
            row = 0 if text is None else text
            image = values[0, row].numpy()
            vmax = float(abs(values[0, row][~values[0, row].isnan()]).max()) if values[0, row].numel() else 1.0
            im = ax.imshow(image, aspect="auto", cmap="RdBu_r", vmin=-vmax, vmax=vmax)
            ax.set_yticks(range(len(points)), points)
            tokens = self.meta.get("tokens")
            if tokens is not None:
                ax.set_xticks(range(len(tokens[row])), tokens[row], rotation=90)
            ax.set_xlabel("position")
            ax.set_title(f"{self.axis_labels('variant')[0]} reward lens, text {row}")
            ax.figure.colorbar(im, ax=ax, label=self.value_name)
            return ax
        rows = range(values.shape[1]) if text is None else [text]
        styles = {"frozen": "-", "recomputed": "--"}
        for v, variant in enumerate(self.axis_labels("variant")):
            for i, row in enumerate(rows):
                label = f"{variant}, text {row}" if len(rows) <= 8 else (variant if i == 0 else None)
                ax.plot(
                    range(len(points)),
                    values[v, row].numpy(),
                    styles.get(variant, ":"),
                    color=f"C{row % 10}",
                    marker=".",
                    label=label,
                    **kwargs,
                )
        ax.set_xticks(range(len(points)), points, rotation=90)
        ax.set_xlabel("lens point (residual stream)")
        ax.set_ylabel(self.value_name)
        ax.axhline(0.0, color="grey", lw=0.5)
        ax.legend(fontsize="small")
        return ax


# ---------------------------------------------------------------------------------------------- entry points
def _check_variants(variants: str | Sequence[str]) -> list[str]:
    variants = [variants] if isinstance(variants, str) else list(variants)
    for v in variants:
        if v not in VARIANTS:
            raise InputError(f"Unknown lens variant {v!r}; choose from {VARIANTS}.")
    if not variants:
        raise InputError(f"No lens variant given; choose from {VARIANTS}.")
    return variants


def _lens_batch(
    model: HookedRewardModel,
    tokens: Int[Tensor, "b pos"],
    mask: Int[Tensor, "b pos"],
    variants: list[str],
    points: list[tuple[str, str]],
    per_position: bool,
) -> tuple[Tensor, Tensor, list[list[str]]]:
    """One batch: `(values [variant, b, point(, pos), n_cols], rewards [b, n_cols], token strings)`."""
    names = [hook for _, hook in points] + [FINAL_SCALE] + model.head.readout_hooks()
    rewards, cache = model.run_with_cache(
        tokens, attention_mask=mask, names_filter=names, positions=None if per_position else "reward"
    )
    stack = torch.stack([cache[hook] for _, hook in points], dim=1)  # [b, point, pos, d]
    scale = cache[FINAL_SCALE]
    scale = scale[..., None] if scale.ndim == 2 else scale  # [b, pos, 1]
    if not per_position:
        stack, scale = stack[:, :, 0], scale[:, 0][:, None]  # the kept (reward) position: [b, point, d], [b, 1, 1]
    else:
        scale = scale[:, None]  # [b, 1, pos, 1]
    readout = _batch_readout(model, cache, stack)
    values = torch.stack([readout_lens(model, stack, scale, readout, variant) for variant in variants])
    tokens_str: list[list[str]] = []
    if per_position:  # re-index each row by its own token index (drop padding), NaN beyond its length
        lengths = mask.sum(-1)
        aligned = torch.full_like(values, float("nan"))
        for b in range(tokens.shape[0]):
            keep = mask[b].bool()
            aligned[:, b, :, : int(lengths[b])] = values[:, b][:, :, keep.to(values.device)]
            tokens_str.append(token_strings(model, tokens[b][keep]))
        values = aligned[..., : int(lengths.max()), :]
    return values, model.head.readout_values(cache, rewards), tokens_str


def _batch_readout(model: HookedRewardModel, cache: RewardActivationCache, stack: Tensor) -> Readout:
    """The head's readout for a lens batch; a linearised head is linearised at ln_final of the final point (the
    head's own input at every position read)."""
    normed = _apply_ln_final(model, stack[:, -1]) if model.head.readout_needs_point else None
    return model.head.readout(cache, normed=normed)


def reward_lens(
    model: HookedRewardModel,
    inputs: Inputs,
    *,
    attention_mask: Int[Tensor, "batch pos"] | None = None,
    variants: str | Sequence[str] = VARIANTS,
    sublayers: bool = True,
    per_position: bool = False,
    output: int | str | None = None,
    batch_size: int = 16,
    progress: bool = True,
) -> RewardLensResult:
    """The reward lens for texts (or token ids with a mask), batched.

    Returns a `RewardLensResult` with values `[variant, text, point]` (`per_position=False`: read at each
    text's reward position) or `[variant, text, point, pos]` (`per_position=True`: at every token, each with
    its own frozen scale σ or its own recomputed norm), with a trailing `output` axis for multi-output heads
    (or only output `output`, an index or a name). Points are `lens_points(model, sublayers)`. The `final_post`
    point equals the model's reward in both variants.

    ArmoRM heads: the output axis is the objectives (`head.objective_names`, read along `W_R` rows, ending at
    `objectives.hook_rewards`) then "score", read with the gate held fixed at each run's `gating.hook_weights`
    (frozen: exact and additive; recomputed: ln_final of the partial residual through the objectives and the
    transform, gate fixed). MLP value heads: frozen reads along the head's linearisation at the run's own point
    (`head.linearise_at` of ln_final's output at that position), recomputed runs the real head on ln_final of the
    partial residual.
    """
    variants = _check_variants(variants)
    points = lens_points(model, sublayers)
    values, rewards, tokens_str = [], [], []
    batches = iter_token_batches(
        model, inputs, attention_mask=attention_mask, batch_size=batch_size, progress=progress, desc="reward lens"
    )
    for tokens, mask in batches:
        v, r, t = _lens_batch(model, tokens, mask, variants, points, per_position)
        values.append(v)
        rewards.append(r)
        tokens_str.extend(t)
    if per_position:  # batches differ in width: pad each with NaN to the widest
        width = max(v.shape[3] for v in values)
        values = [torch.nn.functional.pad(v, (0, 0, 0, width - v.shape[3]), value=float("nan")) for v in values]
    all_values = torch.cat(values, dim=1)
    all_rewards = torch.cat(rewards, dim=0)
    return _make_result(model, all_values, all_rewards, variants, points, per_position, output, tokens_str)


def reward_lens_from_cache(
    cache: RewardActivationCache,
    *,
    variants: str | Sequence[str] = VARIANTS,
    sublayers: bool = True,
    output: int | str | None = None,
) -> RewardLensResult:
    """The reward lens at the reward position from an existing `RewardActivationCache` (`[variant, batch,
    point(, output)]`). The cache needs the lens points' residual hooks and `ln_final.hook_scale` (ArmoRM heads:
    also `gating.hook_weights`, the gate held fixed; see `reward_lens`)."""
    model = cache.model
    variants = _check_variants(variants)
    points = lens_points(model, sublayers)
    missing = [h for _, h in points if h not in cache.cache_dict]
    if missing:
        raise InputError(f"The cache lacks {missing[:3]}...; run_with_cache with these hooks (or all).")
    stack = rearrange(cache.at_reward(torch.stack([cache[h] for _, h in points])), "point b d -> b point d")
    scale = cache.final_scale_at_reward()[:, None]  # [b, 1, 1]
    readout = _batch_readout(model, cache, stack)
    values = torch.stack([readout_lens(model, stack, scale, readout, variant) for variant in variants])
    if REWARD in cache.cache_dict and all(h in cache.cache_dict for h in model.head.readout_hooks()):
        rewards = model.head.readout_values(cache, cache[REWARD])
    else:  # the frozen lens at the final point is the reward (tested)
        final = stack[:, -1:]
        rewards = readout_lens(model, final, scale, readout, "frozen")[:, -1]
    return _make_result(model, values, rewards, variants, points, False, output, [])


def _make_result(
    model: HookedRewardModel,
    values: Tensor,
    rewards: Tensor,
    variants: list[str],
    points: list[tuple[str, str]],
    per_position: bool,
    output: int | str | None,
    tokens_str: list[list[str]],
) -> RewardLensResult:
    dims = ["variant", "text", "point"] + (["pos"] if per_position else [])
    labels: dict[str, list[Any]] = {"variant": list(variants), "point": [p for p, _ in points]}
    names = model.head.readout_names()
    column = output_index(output, names)
    if column is not None:
        values, rewards = values[..., column], rewards[..., column]
    elif len(names) == 1:
        values, rewards = values[..., 0], rewards[..., 0]
    else:
        dims.append("output")
        labels["output"] = names
    meta: dict[str, Any] = {
        "sublayers": len(points) > model.cfg.n_layers + 1,
        "per_position": per_position,
        "readout": model.head.readout_kind,
    }
    if tokens_str:
        meta["tokens"] = tokens_str
    return RewardLensResult(
        values=values.detach(),
        dims=tuple(dims),
        labels=labels,
        value_name="reward",
        meta=meta,
        rewards=rewards.detach(),
        hook_names=[h for _, h in points],
    )
