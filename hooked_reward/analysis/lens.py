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

Heads that are not one affine map are read through a `Readout` (`head_readout`): `value = h · direction + offset`
per column, with `h` = ln_final's output and a per-row direction:

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
from typing import Any, Literal

import torch
from einops import rearrange
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from hooked_reward.analysis.results import LabeledTensor, require_pyplot
from hooked_reward.errors import InputError
from hooked_reward.heads.base import as_float

LensVariant = Literal["frozen", "recomputed"]
VARIANTS: tuple[str, ...] = ("frozen", "recomputed")
Inputs = str | Sequence[str] | Int[Tensor, "batch pos"]


# ---------------------------------------------------------------------------------------------- batching
def iter_token_batches(
    model: Any,
    inputs: Inputs,
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


def token_strings(model: Any, tokens: Int[Tensor, "pos"]) -> list[str]:
    """The tokenizer's string for each id (ids as strings when the model has no tokenizer)."""
    tok = getattr(model, "tokenizer", None)
    ids = tokens.tolist()
    if tok is None:
        return [str(i) for i in ids]
    return [str(t) for t in tok.convert_ids_to_tokens(ids)]


# ---------------------------------------------------------------------------------------------- lens points
def lens_points(model: Any, sublayers: bool = True) -> list[tuple[str, str]]:
    """`(label, hook_name)` for each lens point, in order, with TransformerLens's `accumulated_resid` labels.

    `sublayers=True`: `l_pre` (`blocks.l.hook_resid_pre`) and `l_mid` (`blocks.l.hook_resid_mid`, after
    attention) for every block, then `final_post` (the last block's `hook_resid_post`, what `ln_final` reads).
    `sublayers=False` leaves the `_mid` points out. (`blocks.l.hook_resid_post` equals
    `blocks.{l+1}.hook_resid_pre`, so it is not repeated.)
    """
    points: list[tuple[str, str]] = []
    for layer in range(model.cfg.n_layers):
        points.append((f"{layer}_pre", f"blocks.{layer}.hook_resid_pre"))
        if sublayers:
            points.append((f"{layer}_mid", f"blocks.{layer}.hook_resid_mid"))
    points.append(("final_post", f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"))
    return points


# ---------------------------------------------------------------------------------------------- head readouts
READOUT_KINDS = ("affine", "gate_fixed", "linearised")


@dataclass
class Readout:
    """How the lens and DRA read the final-normed residual `h` (ln_final's output): `h · direction + offset` per
    column.

    `direction` is `[batch, n_cols, d_model]` (one per row) or `[batch, pos, n_cols, d_model]` (one per row and
    position); `offset` is the same without `d_model`. `names` label the columns. `kind`: "affine" (the head's
    `W_R`, `b_R`: exact everywhere), "gate_fixed" (ArmoRM: objectives, and the score with the gate held at the
    run's weights) or "linearised" (an MLP head's gradient and offset at the run's own point).
    """

    direction: Tensor
    offset: Tensor
    names: list[str]
    kind: str

    def select(self, column: int | None) -> Readout:
        """This readout with only column `column` (all when None)."""
        if column is None:
            return self
        return Readout(
            self.direction[..., column : column + 1, :],
            self.offset[..., column : column + 1],
            [self.names[column]],
            self.kind,
        )


def is_gated(model: Any) -> bool:
    """True for ArmoRM-style heads: named objectives (`W_R` rows) and a gated score (`score_directions`)."""
    head = getattr(model, "head", None)
    return getattr(head, "objective_names", None) is not None and hasattr(head, "score_directions")


def is_linearised(model: Any) -> bool:
    """True for heads read through their linearisation (`linearise_at`, e.g. MLP value heads)."""
    return hasattr(getattr(model, "head", None), "linearise_at") and model.head.linear_map() is None


def readout_names(model: Any) -> list[str]:
    """The columns the lens and DRA report: the objectives then "score" for ArmoRM heads, else the outputs."""
    if is_gated(model):
        return list(model.head.objective_names) + ["score"]
    return list(model.output_names)


def column_index(model: Any, output: int | str | None) -> int | None:
    """Index into `readout_names(model)` for `output` (an int, a name, or None for every column)."""
    names = readout_names(model)
    if output is None:
        return None
    if isinstance(output, str):
        if output not in names:
            raise InputError(f"Unknown output {output!r}; this head's columns are {names}.")
        return names.index(output)
    if not -len(names) <= output < len(names):
        raise InputError(f"output={output} is out of range for a head with {len(names)} outputs ({names}).")
    return output % len(names)


def readout_hooks(model: Any) -> list[str]:
    """Head hooks a readout needs from the cache (the gate's weights and per-objective values for ArmoRM)."""
    if is_gated(model):
        return ["gating.hook_weights", "objectives.hook_rewards", "objectives.hook_transformed"]
    return []


def head_readout(
    model: Any,
    gate_weights: Float[Tensor, "batch n_obj"] | None = None,
    normed: Float[Tensor, "batch *pos d_model"] | None = None,
) -> Readout:
    """The model's `Readout` for a batch.

    Affine heads need nothing (`W_R`, `b_R`, shared by rows). ArmoRM heads need the run's `gate_weights`
    (`gating.hook_weights`): the gate is held fixed at them. Linearised (MLP) heads need `normed`, the
    final-normed residual `[batch, d_model]` or `[batch, pos, d_model]` where each row (and position) is read:
    the head is linearised there (`head.linearise_at`).
    """
    head = model.head
    if is_gated(model):
        if gate_weights is None:
            raise InputError(
                "ArmoRM's score is read with the gate held at the run's weights: pass gate_weights "
                "(the cache's 'gating.hook_weights')."
            )
        g = gate_weights.to(torch.float32)
        w = as_float(head.regression_layer.weight).to(g.device)  # [K, d]
        score = head.score_directions(g).to(g.device)  # [b, d]
        direction = torch.cat([w.expand(g.shape[0], *w.shape), score[:, None]], dim=1)
        return Readout(
            direction, torch.zeros(direction.shape[:-1], device=g.device), readout_names(model), "gate_fixed"
        )
    if is_linearised(model):
        if normed is None:
            raise InputError("A linearised head is read around the run's point: pass normed (ln_final's output).")
        lin = head.linearise_at(normed.reshape(-1, normed.shape[-1]))
        lead = normed.shape[:-1]
        return Readout(
            lin.direction.reshape(*lead, 1, normed.shape[-1]),
            lin.offset.reshape(*lead, 1),
            readout_names(model),
            "linearised",
        )
    w_r, b_r, _, _ = _head_weights(model)
    return Readout(w_r[None], b_r[None], readout_names(model), "affine")


def readout_from_cache(model: Any, cache: Any, normed: Tensor | None = None) -> Readout:
    """`head_readout` at each row's reward position from a `RewardActivationCache` (ArmoRM: the cache needs
    `gating.hook_weights`; MLP heads: `hook_reward_resid`, unless `normed` is given)."""
    gate = None
    if is_gated(model):
        if "gating.hook_weights" not in cache.cache_dict:
            raise InputError(
                "ArmoRM readouts hold the gate at this run's weights, so the cache needs "
                "'gating.hook_weights'; include it in names_filter."
            )
        gate = cache["gating.hook_weights"]
    if is_linearised(model) and normed is None:
        if "hook_reward_resid" not in cache.cache_dict:
            raise InputError(
                "A linearised head's readout needs 'hook_reward_resid' in the cache (the point it is "
                "linearised at); include it in names_filter."
            )
        normed = cache["hook_reward_resid"]
    return head_readout(model, gate, normed)


def _mlp_head_values(model: Any, normed: Float[Tensor, "... d_model"]) -> Float[Tensor, "... 1"]:
    """The real (MLP) head on final-normed residuals, without firing its hooks."""
    from hooked_reward.heads.value_head import ACTIVATIONS

    head = model.head
    x = normed.to(head.first.weight.dtype)
    with torch.no_grad():
        out = head.second(ACTIVATIONS[head.activation](head.first(x)))
    return out.to(torch.float32)


def _project(x: Tensor, direction: Tensor) -> Tensor:
    """`x · direction` per column: x `[b, point, d]` or `[b, point, pos, d]`; direction `[b|1, o, d]` or
    `[b, pos, o, d]` -> `[b, point(, pos), o]`."""
    direction = direction.to(x.device, torch.float32)
    if direction.ndim == 3:
        return torch.einsum("b...d,bod->b...o", x, direction.expand(x.shape[0], *direction.shape[1:]))
    return torch.einsum("blpd,bpod->blpo", x, direction)


def _offset(x: Tensor, offset: Tensor) -> Tensor:
    """`offset` `[b|1, o]` or `[b, pos, o]` shaped to add to `_project(x, ...)`."""
    offset = offset.to(x.device, torch.float32)
    if offset.ndim == 3:
        return offset[:, None]  # [b, 1, pos, o]
    return offset.reshape(offset.shape[0], *([1] * (x.ndim - 2)), offset.shape[-1])


def _frozen_normed(model: Any, resid: Tensor, scale: Tensor) -> Tensor:
    x = resid.to(torch.float32)
    if model.final_norm_is_layernorm:
        x = x - x.mean(-1, keepdim=True)
    return x / scale.to(x.device, torch.float32)


def _apply_ln_final(model: Any, resid: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_model"]:
    """The bridged `ln_final` on residuals of any leading shape (float32 out)."""
    shape = resid.shape
    flat = resid.reshape(1, -1, shape[-1])
    with torch.no_grad():
        normed = model.ln_final(flat.to(model.W_E.dtype)).to(torch.float32)
    return normed.reshape(shape)


def readout_lens(
    model: Any,
    resid: Float[Tensor, "batch point *pos d_model"],
    scale: Float[Tensor, "batch 1 *pos 1"],
    readout: Readout,
    variant: str,
) -> Float[Tensor, "batch point *pos n_cols"]:
    """One lens variant through a `Readout`. frozen: `(P x / σ) · (direction ⊙ g) + direction · β + offset`
    (linear in x); recomputed: `ln_final(x) · direction + offset`, or the real head on `ln_final(x)` for
    linearised (MLP) heads."""
    gain, beta = model.final_norm_gain_bias()
    if variant == "frozen":
        x = _frozen_normed(model, resid, scale)
        direction = readout.direction.to(x.device, torch.float32)
        bias = (direction * beta.to(x.device)).sum(-1) + readout.offset.to(x.device, torch.float32)
        return _project(x, direction * gain.to(x.device)) + _offset(x, bias)
    normed = _apply_ln_final(model, resid)
    if readout.kind == "linearised":
        return _mlp_head_values(model, normed)
    return _project(normed, readout.direction) + _offset(normed, readout.offset)


# ---------------------------------------------------------------------------------------------- the readings
def _head_weights(model: Any) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """`(W_R, b_R, W_R_eff, b_R_eff)` as `[n_outputs, d_model]` / `[n_outputs]` float32 tensors."""
    try:
        w_r, b_r, w_eff, b_eff = model.W_R, model.b_R, model.W_R_eff, model.b_R_eff
    except AttributeError as err:
        raise InputError(
            f"The reward lens reads the head as one affine map (W_R, b_R); this model's head has none: {err}"
        ) from err
    w_r, w_eff = as_float(w_r), as_float(w_eff)
    b_r, b_eff = as_float(torch.as_tensor(b_r)), as_float(torch.as_tensor(b_eff))
    if w_r.ndim == 1:
        w_r, w_eff, b_r, b_eff = w_r[None], w_eff[None], b_r.reshape(1), b_eff.reshape(1)
    return w_r, b_r, w_eff, b_eff


def frozen_lens(
    model: Any,
    resid: Float[Tensor, "... d_model"],
    scale: Float[Tensor, "... 1"],
) -> Float[Tensor, "... n_outputs"]:
    """`(P x / σ) · W_R_eff + b_R_eff` for residuals `x` and their frozen final-norm scales `σ` (broadcast).

    Linear in `x`: the frozen lens of a sum is the sum of the frozen lenses, plus `b_R_eff` once.
    """
    _, _, w_eff, b_eff = _head_weights(model)
    x = resid.to(torch.float32)
    if model.final_norm_is_layernorm:
        x = x - x.mean(-1, keepdim=True)
    x = x / scale.to(x.device, torch.float32)
    return x @ w_eff.to(x.device).T + b_eff.to(x.device)


def recomputed_lens(model: Any, resid: Float[Tensor, "... d_model"]) -> Float[Tensor, "... n_outputs"]:
    """`ln_final(x) · W_R + b_R`: the bridged final norm recomputed on each residual `x`, then the head's map."""
    w_r, b_r, _, _ = _head_weights(model)
    shape = resid.shape
    flat = rearrange(resid, "... d -> 1 (...) d") if resid.ndim != 3 else resid
    with torch.no_grad():
        normed = model.ln_final(flat.to(model.W_E.dtype)).to(torch.float32)
    normed = normed.reshape(*shape[:-1], shape[-1])
    return normed @ w_r.to(normed.device).T + b_r.to(normed.device)


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

    def plot(self, ax: Any = None, text: int | None = None, output: int = 0, **kwargs: Any) -> Any:
        """Lens curves: reward against lens point, one line per text (solid frozen, dashed recomputed).

        Per-position results plot a heatmap instead: the first variant for `text` (default 0), point × token.
        Multi-output results show `output`.
        """
        plt = require_pyplot()
        if ax is None:
            _, ax = plt.subplots(figsize=(8, 3.5))
        values = self.values.detach().to("cpu", torch.float32)
        if "output" in self.dims:
            values = values[..., output]
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
    model: Any,
    tokens: Int[Tensor, "b pos"],
    mask: Int[Tensor, "b pos"],
    variants: list[str],
    points: list[tuple[str, str]],
    per_position: bool,
) -> tuple[Tensor, Tensor, list[list[str]]]:
    """One batch: `(values [variant, b, point(, pos), n_cols], rewards [b, n_cols], token strings)`."""
    names = [hook for _, hook in points] + ["ln_final.hook_scale"] + readout_hooks(model)
    rewards, cache = model.run_with_cache(
        tokens, attention_mask=mask, names_filter=names, positions=None if per_position else "reward"
    )
    stack = torch.stack([cache[hook] for _, hook in points], dim=1)  # [b, point, pos, d]
    scale = cache["ln_final.hook_scale"]
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
    return values, _readout_rewards(model, cache, rewards), tokens_str


def _batch_readout(model: Any, cache: Any, stack: Tensor) -> Readout:
    """The readout for a lens batch; linearised heads are linearised at ln_final of the final point (the head's
    own input at every position read)."""
    normed = _apply_ln_final(model, stack[:, -1]) if is_linearised(model) else None
    return readout_from_cache(model, cache, normed=normed)


def _readout_rewards(model: Any, cache: Any, rewards: Tensor) -> Float[Tensor, "b n_cols"]:
    """The model's values for each readout column: `[objectives.hook_rewards, score]` for ArmoRM, else the
    rewards."""
    rewards = rewards.to(torch.float32).reshape(rewards.shape[0], -1)
    if is_gated(model):
        objectives = cache["objectives.hook_rewards"].to(rewards.device, torch.float32)
        return torch.cat([objectives, rewards], dim=-1)
    return rewards


def reward_lens(
    model: Any,
    inputs: Inputs,
    attention_mask: Int[Tensor, "batch pos"] | None = None,
    *,
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
    for tokens, mask in iter_token_batches(model, inputs, attention_mask, batch_size, progress, "reward lens"):
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
    cache: Any,
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
    if "hook_reward" in cache.cache_dict and (not is_gated(model) or "objectives.hook_rewards" in cache.cache_dict):
        rewards = _readout_rewards(model, cache, cache["hook_reward"])
    else:  # the frozen lens at the final point is the reward (tested)
        final = stack[:, -1:]
        rewards = readout_lens(model, final, scale, readout, "frozen")[:, -1]
    return _make_result(model, values, rewards, variants, points, False, output, [])


def _make_result(
    model: Any,
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
    names = readout_names(model)
    column = column_index(model, output)
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
        "readout": "affine"
        if not (is_gated(model) or is_linearised(model))
        else ("gate_fixed" if is_gated(model) else "linearised"),
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
