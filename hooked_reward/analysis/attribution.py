"""Direct reward attribution (DRA): how much each part of the model writes, directly, into the reward.

The residual at the reward position r is a sum of parts, x = Σ_c x_c (embeddings, each attention layer's
output, each MLP's output). With the final norm's scale σ frozen from the real run (and centring P for
LayerNorm, which is linear), the reward is exactly

    reward = Σ_c (P x_c / σ) · W_R_eff + b_R_eff = Σ_c x_c · u + b_R_eff,     u = P W_R_eff / σ

so each part's direct reward is `x_c · u`. Finer parts split a layer's output further:

- heads: attn_out = Σ_h z_h W_O[h] + b_O, so head h gives `z_h W_O[h] · u`, and the layer's remaining term,
  the "attn_bias" row, is attn_out − Σ_h heads (= b_O · u; checked against the weights, with a warning if not);
- source positions: z_h at r is Σ_k A_h[r, k] v_h[k], so head h's direct reward splits over source tokens k
  as `A_h[r, k] (v_h[k] W_O[h]) · u`;
- neurons: mlp_out = Σ_n post_n W_out[n] + b_out, so neuron n gives `post_n (W_out[n] · u)`, and the
  "mlp_bias" row is mlp_out − Σ_n neurons (= b_out · u).

Blocks with a norm after the sublayer (Gemma 2's `ln1_post` / `ln2_post`) are handled the same way with
that norm's scale frozen too: a part y of the sublayer output reaches the residual as (P y / σ_post) ⊙ g_post,
so it is read with u_post = P(g_post ⊙ u) / σ_post, and the post-norm's bias goes into the bias row.

Heads that are not one affine map are read through the lens's `Readout` (per-row directions): ArmoRM gives one
column per objective (`W_R` rows) and a "score" column along `(T g) @ W_R` **with the gate held fixed at this
run's weights** (components plus the per-row bias sum to the score exactly; what the gate does is not in any
component). For pairs, the head's `pair_split` reads the difference (ArmoRM: `score_difference`): each
component's Δ per-objective attributions weighted by the two runs' mean gate, plus a separate "gate" row for the
change of the gate, so the rows sum to Δscore exactly. MLP value heads are read along their linearisation at the
run's point (`head.linearise_at` of `hook_reward_resid`); the bias then holds the linearisation's offset.

Direct only: a part's effect through later layers (its indirect effect) is not in its number, and the frozen
σ means a part is credited as if the others had left the norm unchanged. See docs/tools/attribution.md.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import torch
from einops import einsum, repeat
from jaxtyping import Float, Int
from torch import Tensor

from hooked_reward.analysis.lens import Inputs, iter_token_batches, token_strings
from hooked_reward.analysis.results import LabeledTensor, require_pyplot
from hooked_reward.cache import RewardActivationCache
from hooked_reward.errors import InputError
from hooked_reward.final_norm import fold_final_norm, frozen_final_norm, frozen_norm, norm_gain_bias, norm_is_layernorm
from hooked_reward.heads.base import as_float
from hooked_reward.names import FINAL_SCALE, REWARD, Component, act_name, head_components
from hooked_reward.outputs import output_index
from hooked_reward.positions import gather_at_positions

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from hooked_reward.model import HookedRewardModel

Granularity = Literal["component", "head", "position", "neuron"]
GRANULARITIES: tuple[str, ...] = ("component", "head", "position", "neuron")
BIAS_CHECK_ATOL = 1e-3


# ---------------------------------------------------------------------------------------------- readout maps
def reward_readout(
    model: HookedRewardModel, cache: RewardActivationCache, output: int | str | None = None
) -> Float[Tensor, "batch n_outputs d_model"]:
    """`u = P (direction ⊙ g) / σ` for each row: the vector whose dot product with a residual-stream part at the
    reward position is that part's direct reward (σ = the row's frozen final-norm scale; direction = the head's
    `readout(cache)`: `W_R` for affine heads, ArmoRM's objectives and gate-fixed score, an MLP head's
    linearisation)."""
    readout = model.head.readout(cache).select(output_index(output, model.head.readout_names()))
    scale = cache.final_scale_at_reward().to(torch.float32)  # [b, 1]
    return frozen_final_norm(model, fold_final_norm(model, readout).direction.to(scale.device), scale[:, :, None])


def readout_bias(
    model: HookedRewardModel, cache: RewardActivationCache, output: int | str | None = None
) -> Float[Tensor, "batch n_outputs"]:
    """What no component carries, per row: `direction · β + offset` (β = the final norm's bias). For affine
    heads this is `b_R_eff` on every row; ArmoRM: `W_R · β` per objective and `score_direction · β` (0 for
    RMSNorm); MLP heads: the linearisation's offset plus `direction · β`."""
    readout = model.head.readout(cache).select(output_index(output, model.head.readout_names()))
    bias = fold_final_norm(model, readout).offset
    return bias.expand(cache.reward_pos.shape[0], bias.shape[-1])


def _post_norm_readout(
    model: HookedRewardModel, cache: RewardActivationCache, layer: int, which: str, u: Tensor
) -> tuple[Float[Tensor, "batch n_outputs d_model"], Float[Tensor, "batch n_outputs"]]:
    """Readout for a sublayer's own output (before its post-norm, if the block has one) and the post-norm
    bias's direct reward. `which` is "ln1_post" (attention) or "ln2_post" (MLP)."""
    name = act_name("scale", layer, which)
    if name not in cache.cache_dict:
        return u, torch.zeros(u.shape[:2], device=u.device)
    norm = getattr(model.blocks[layer], which)
    (gain, bias), centres = norm_gain_bias(model, norm), norm_is_layernorm(norm)
    scale = cache[name]
    scale = scale[..., None] if scale.ndim == 2 else scale
    scale = cache.at_reward(scale).to(u.device, torch.float32)  # [b, 1]
    inner = frozen_norm(gain.to(u.device) * u, scale[:, :, None], centres=centres)
    return inner, einsum(bias.to(u.device), u, "d, b o d -> b o")


def _weight_or_none(model: HookedRewardModel, name: str, layer: int) -> Tensor | None:
    try:
        w = getattr(model, name)
    except AttributeError:
        return None
    return None if w is None else as_float(w[layer])


def _check_bias(label: str, measured: Tensor, expected: Tensor) -> None:
    err = float((measured - expected).abs().max())
    if err > BIAS_CHECK_ATOL * max(1.0, float(expected.abs().max())):
        warnings.warn(
            f"{label}: the layer's output minus its parts differs from the bias read from the weights by "
            f"{err:.3g}; this architecture may add something the decomposition does not model (the bias row "
            "holds the difference, so totals stay exact).",
            stacklevel=3,
        )


# ---------------------------------------------------------------------------------------------- hooks needed
def required_hooks(model: HookedRewardModel, by: Granularity = "component", layer: int | None = None) -> list[str]:
    """The hook names `attribution_from_cache` reads for granularity `by` (pass them as `names_filter`)."""
    hooks = set(model.hook_dict)
    names = [act_name("resid_pre", 0), FINAL_SCALE, REWARD] + model.head.readout_hooks()
    if "hook_pos_embed" in hooks:
        names.append("hook_pos_embed")
    for l_ in range(model.cfg.n_layers):
        names += [act_name("attn_out", l_), act_name("mlp_out", l_)]
        names += [n for n in (act_name("scale", l_, "ln1_post"), act_name("scale", l_, "ln2_post")) if n in hooks]
        if by in ("head", "position"):
            names.append(act_name("z", l_))
        if by == "position":
            names += [act_name("v", l_), act_name("pattern", l_)]
    if by == "neuron":
        names.append(act_name("post", _check_layer(model, layer)))
    return names


def _check_layer(model: HookedRewardModel, layer: int | None) -> int:
    if layer is None:
        raise InputError("by='neuron' needs layer=<the MLP layer whose neurons to attribute>.")
    n = model.cfg.n_layers
    if not -n <= layer < n:
        raise InputError(f"layer={layer} is out of range for a model with {n} layers.")
    return layer % n


# ---------------------------------------------------------------------------------------------- one batch
def _component_rows(
    model: HookedRewardModel, cache: RewardActivationCache, u: Tensor, by: str
) -> tuple[list[Tensor], list[Component]]:
    """Rows `[b, n_outputs]` and labels for by="component" or "head" (each row a direct reward)."""
    rows: list[Tensor] = []
    labels: list[Component] = []

    def read(name: str, readout: Tensor) -> Tensor:
        return einsum(cache.at_reward(cache[name]).to(readout.device, torch.float32), readout, "b d, b o d -> b o")

    pos_embed = read("hook_pos_embed", u) if "hook_pos_embed" in cache.cache_dict else None
    embed = read(act_name("resid_pre", 0), u)
    rows.append(embed if pos_embed is None else embed - pos_embed)  # resid_pre_0 − pos_embed: exact by construction
    labels.append(Component("embed"))
    if pos_embed is not None:
        rows.append(pos_embed)
        labels.append(Component("pos_embed"))
    for layer in range(model.cfg.n_layers):
        attn = read(act_name("attn_out", layer), u)
        if by == "head":
            u_attn, post_bias = _post_norm_readout(model, cache, layer, "ln1_post", u)
            z = cache.at_reward(cache[act_name("z", layer)].flatten(-2)).to(u.device, torch.float32)
            z = z.unflatten(-1, (model.cfg.n_heads, -1))  # [b, head, d_head]
            w_o = as_float(model.W_O[layer]).to(z.device)  # [head, d_head, d_model]
            heads = einsum(z, w_o, u_attn, "b h k, h k d, b o d -> h b o")
            rows += list(heads)
            labels += head_components(model, [layer])
            bias_row = attn - heads.sum(0)
            b_o = _weight_or_none(model, "b_O", layer)
            expected = post_bias + (0.0 if b_o is None else einsum(b_o.to(u.device), u_attn, "d, b o d -> b o"))
            _check_bias(f"layer {layer} attention", bias_row, expected)
            rows.append(bias_row)
            labels.append(Component("attn_bias", layer))
        else:
            rows.append(attn)
            labels.append(Component("attn_out", layer))
        rows.append(read(act_name("mlp_out", layer), u))
        labels.append(Component("mlp_out", layer))
    return rows, labels


def _neuron_rows(
    model: HookedRewardModel, cache: RewardActivationCache, u: Tensor, layer: int
) -> tuple[list[Tensor], list[Component]]:
    """Rows for each neuron of MLP `layer`, plus its "mlp_bias" row (mlp_out − Σ neurons)."""
    u_mlp, post_bias = _post_norm_readout(model, cache, layer, "ln2_post", u)
    post = cache.at_reward(cache[act_name("post", layer)]).to(u.device, torch.float32)  # [b, d_mlp]
    w_out = as_float(model.W_out[layer]).to(post.device)  # [d_mlp, d_model]
    neurons = einsum(post, w_out, u_mlp, "b n, n d, b o d -> n b o")
    mlp_out = cache.at_reward(cache[act_name("mlp_out", layer)]).to(u.device, torch.float32)
    mlp = einsum(mlp_out, u, "b d, b o d -> b o")
    bias_row = mlp - neurons.sum(0)
    b_out = _weight_or_none(model, "b_out", layer)
    expected = post_bias + (0.0 if b_out is None else einsum(b_out.to(u.device), u_mlp, "d, b o d -> b o"))
    _check_bias(f"layer {layer} MLP", bias_row, expected)
    labels = [Component("neuron", layer, n) for n in range(neurons.shape[0])] + [Component("mlp_bias", layer)]
    return list(neurons) + [bias_row], labels


def _position_values(
    model: HookedRewardModel, cache: RewardActivationCache, u: Tensor
) -> Float[Tensor, "batch layer head pos n_outputs"]:
    """Each head's direct reward split over source positions: `A[r, k] (v[k] W_O[h]) · u_post`."""
    if cache.cached_pos is not None:
        raise InputError("Per-source-position attribution needs every position cached (positions=None).")
    out = []
    index = cache.reward_index
    for layer in range(model.cfg.n_layers):
        u_attn, _ = _post_norm_readout(model, cache, layer, "ln1_post", u)
        pattern = gather_at_positions(cache[act_name("pattern", layer)], index, pos_dim=-2)[:, :, 0]
        v = cache[act_name("v", layer)].to(u.device, torch.float32)  # [b, pos, kv_head, d_head]
        v = repeat(v, "b k g d -> b k (g r) d", r=model.cfg.n_heads // v.shape[2])  # GQA: share kv heads
        w_o = as_float(model.W_O[layer]).to(v.device)
        per_value = einsum(v, w_o, u_attn, "b k h e, h e d, b o d -> b h k o")
        out.append(pattern.to(u.device, torch.float32)[..., None] * per_value)
    return torch.stack(out, dim=1)


def attribution_from_cache(
    cache: RewardActivationCache,
    by: Granularity = "component",
    layer: int | None = None,
    output: int | str | None = None,
) -> tuple[Tensor, list[Component]]:
    """Direct reward attribution from a `RewardActivationCache` holding `required_hooks(model, by, layer)`.

    Returns `(values, labels)`: for by="component"/"head"/"neuron", values `[row, batch, n_outputs]` (one
    row per label); for by="position", `[batch, layer, head, pos, n_outputs]` (raw cache positions) and no
    labels. component/head rows sum to reward − `readout_bias` (b_R_eff for affine heads); neuron rows sum to
    that MLP's direct reward. Columns are `lens.readout_names(model)` (ArmoRM: objectives, then the score with
    the gate held fixed).
    """
    model = cache.model
    if by not in GRANULARITIES:
        raise InputError(f"by={by!r}: choose from {GRANULARITIES}.")
    with torch.no_grad():
        u = reward_readout(model, cache, output)
        if by == "position":
            return _position_values(model, cache, u), []
        if by == "neuron":
            rows, labels = _neuron_rows(model, cache, u, _check_layer(model, layer))
        else:
            rows, labels = _component_rows(model, cache, u, by)
    return torch.stack(rows), labels


# ---------------------------------------------------------------------------------------------- results
@dataclass(repr=False)
class AttributionResult(LabeledTensor):
    """Direct reward attributions.

    dims `(text, component[, output])` for by="component"/"head"/"neuron"; `(text, layer, head, pos[,
    output])` for by="position" (positions are each text's own token indices, NaN past its end; tokens in
    `meta["tokens"]`). `rewards` `[text(, output)]` are the model's rewards; `bias` is what no component
    carries: `b_R_eff` (`[output]` or a scalar) for affine heads, per text (`[text(, output)]`) for heads read
    along per-row directions (ArmoRM's gate-fixed score, an MLP head's linearisation offset). For component and
    head granularity `values.sum(1) + bias == rewards` (to float precision).
    """

    rewards: Tensor = field(default_factory=lambda: torch.empty(0))
    bias: Tensor = field(default_factory=lambda: torch.zeros(()))
    by: str = "component"

    def total(self) -> Tensor:
        """Sum of all attributions per text (NaN-safe): reward − bias for component/head granularity."""
        dims = tuple(range(1, 4 if self.by == "position" else 2))
        return self.values.nansum(dim=dims)

    def top(self, k: int = 10, text: int = 0, output: int | str = 0) -> list[tuple[Any, float]]:
        """The `k` rows with the largest |attribution| for one text: `[(label, value), ...]`."""
        vals = self.values[text]
        if "output" in self.dims:
            vals = vals[..., output_index(output, self.axis_labels("output"))]
        flat = torch.nan_to_num(vals.flatten())
        order = flat.abs().argsort(descending=True)[:k]
        if self.by == "position":
            n_heads, n_pos = vals.shape[1], vals.shape[2]
            return [
                (f"{Component('head', i // (n_heads * n_pos), i // n_pos % n_heads)}@{i % n_pos}", float(flat[i]))
                for i in order.tolist()
            ]
        labels = self.axis_labels("component")
        return [(labels[i], float(flat[i])) for i in order.tolist()]

    def plot(self, ax: Axes | None = None, text: int | None = None, output: int | str = 0, **kwargs: Any) -> Any:
        """Bars per component (the mean over texts with a ±1 s.d. whisker when `text` is None and there are
        several); for by="position", a heatmap of (layer, head) × source token for `text` (default 0)."""
        plt = require_pyplot()
        values = self.values.detach().to("cpu", torch.float32)
        if "output" in self.dims:
            values = values[..., output_index(output, self.axis_labels("output"))]
        if ax is None:
            _, ax = plt.subplots(figsize=(max(6, 0.25 * values.shape[-1]), 3.5))
        if self.by == "position":
            row = 0 if text is None else text
            image = values[row].flatten(0, 1)  # [(layer head), pos]
            vmax = float(torch.nan_to_num(image).abs().max()) or 1.0
            im = ax.imshow(image.numpy(), aspect="auto", cmap="RdBu_r", vmin=-vmax, vmax=vmax)
            n_layers, n_heads = values.shape[1], values.shape[2]
            head_labels = [Component("head", i // n_heads, i % n_heads) for i in range(n_layers * n_heads)]
            ax.set_yticks(range(n_layers * n_heads), head_labels)
            tokens = self.meta.get("tokens")
            if tokens is not None:
                ax.set_xticks(range(len(tokens[row])), tokens[row], rotation=90)
            ax.set_xlabel("source position")
            ax.figure.colorbar(im, ax=ax, label=self.value_name)
            return ax
        labels = [str(x) for x in self.axis_labels("component")]
        if text is None and values.shape[0] > 1:
            mean, std = values.mean(0), values.std(0)
            ax.bar(range(len(labels)), mean.numpy(), yerr=std.numpy(), capsize=2, **kwargs)
            ax.set_title(f"mean over {values.shape[0]} texts (±1 s.d.)")
        else:
            ax.bar(range(len(labels)), values[0 if text is None else text].numpy(), **kwargs)
        ax.set_xticks(range(len(labels)), labels, rotation=90)
        ax.axhline(0.0, color="grey", lw=0.5)
        ax.set_ylabel(self.value_name)
        return ax


@dataclass(repr=False)
class PairAttributionResult(AttributionResult):
    """Δ direct reward attributions, chosen − rejected (each side read with its own frozen scale σ).

    `values.sum(1) == rewards` (= r(chosen) − r(rejected)) for component/head granularity: b_R_eff cancels,
    so `bias` is 0. `chosen` and `rejected` hold each side's own `AttributionResult`.
    """

    chosen: AttributionResult | None = None
    rejected: AttributionResult | None = None


# ---------------------------------------------------------------------------------------------- entry points
def _realign_positions(values: Tensor, mask: Tensor) -> Tensor:
    """`[b, layer, head, pos, o]` on raw positions -> each row's own token indices, NaN past its length."""
    lengths = mask.sum(-1)
    out = torch.full_like(values[..., : int(lengths.max()), :], float("nan"))
    for b in range(values.shape[0]):
        keep = mask[b].bool().to(values.device)
        out[b, :, :, : int(lengths[b])] = values[b][:, :, keep]
    return out


def direct_reward_attribution(
    model: HookedRewardModel,
    inputs: Inputs,
    *,
    attention_mask: Int[Tensor, "batch pos"] | None = None,
    by: Granularity = "component",
    layer: int | None = None,
    output: int | str | None = None,
    batch_size: int = 16,
    progress: bool = True,
) -> AttributionResult:
    """Direct reward attribution for texts (or token ids with a mask), batched with a tqdm bar.

    `by`: "component" (embed, pos_embed, each `l_attn_out` and `l_mlp_out`), "head" (embed, each head
    `LlHh`, each layer's `l_attn_bias`, each `l_mlp_out`), "position" (each head's direct reward split over
    the source tokens its attention reads; values `[text, layer, head, pos]`), or "neuron" (each neuron
    `LlNn` of MLP `layer`, and its `l_mlp_bias`). Multi-output heads get a trailing output axis (or only
    output `output`, an index or a name). Component and head rows sum, with `bias`, to the reward.

    ArmoRM heads: the output axis is the objectives (`head.objective_names`; rows sum to
    `objectives.hook_rewards`) then "score", attributed with the gate held fixed at each run's
    `gating.hook_weights` (rows + bias sum to the score exactly; `bias` is then per text). What the head's
    `pair_split` reads (its `pair_split_hooks()`, e.g. the gate's weights and the transformed rewards) is kept in
    `meta["head_state"]` (`{hook: [text, ...]}`), so that pairs can be split later. MLP value heads: read
    along the head's linearisation at the run's point (`head.linearise_at(hook_reward_resid)`); `bias` holds each
    text's linearisation offset.
    """
    if by not in GRANULARITIES:
        raise InputError(f"by={by!r}: choose from {GRANULARITIES}.")
    column = output_index(output, model.head.readout_names())
    names = required_hooks(model, by, layer)
    chunks, rewards, biases, tokens_str = [], [], [], []
    state_hooks = model.head.pair_split_hooks()
    state: dict[str, list[Tensor]] = {hook: [] for hook in state_hooks}
    labels: list[Component] = []
    batches = iter_token_batches(
        model, inputs, attention_mask=attention_mask, batch_size=batch_size, progress=progress, desc=f"DRA by {by}"
    )
    for tokens, mask in batches:
        with torch.no_grad():
            r, cache = model.run_with_cache(
                tokens, attention_mask=mask, names_filter=names, positions=None if by == "position" else "reward"
            )
        values, labels = attribution_from_cache(cache, by=by, layer=layer, output=column)
        if by == "position":
            chunks.append(_realign_positions(values, mask))
            tokens_str += [token_strings(model, tokens[b][mask[b].bool()]) for b in range(tokens.shape[0])]
        else:
            chunks.append(values.permute(1, 0, 2))  # [b, row, o]
        r = model.head.readout_values(cache, r)
        rewards.append(r if column is None else r[:, column : column + 1])
        biases.append(readout_bias(model, cache, column).to(r.device))
        for hook in state_hooks:  # what the head's pair_split reads
            state[hook].append(cache[hook].to(torch.float32))
    if by == "position":
        width = max(c.shape[3] for c in chunks)
        chunks = [torch.nn.functional.pad(c, (0, 0, 0, width - c.shape[3]), value=float("nan")) for c in chunks]
    values = torch.cat(chunks)
    all_rewards = torch.cat(rewards)
    bias = torch.cat(biases)  # [text, o]
    if model.head.readout_is_shared:
        bias = bias[0]  # b_R_eff, the same on every row
    meta: dict[str, Any] = {"layer": layer} if by == "neuron" else {}
    if tokens_str:
        meta["tokens"] = tokens_str
    if state_hooks:
        meta["head_state"] = {hook: torch.cat(values) for hook, values in state.items()}
    names_out = model.head.readout_names()
    return _make_result(
        values, all_rewards, bias, by, labels, meta, names_out if column is None else [names_out[column]]
    )


def _make_result(
    values: Tensor,
    rewards: Tensor,
    bias: Tensor,
    by: str,
    labels: Sequence[str],
    meta: dict[str, Any],
    names: list[str],
    cls: type | None = None,
    **extra: Any,
) -> Any:
    """An `AttributionResult` (or `cls`) with the output axis dropped when there is one column."""
    if by == "position":
        dims = ["text", "layer", "head", "pos"]
        axis_labels: dict[str, list[Any]] = {}
    else:
        dims = ["text", "component"]
        axis_labels = {"component": list(labels)}
    if values.shape[-1] == 1:
        values, rewards, bias = values[..., 0], rewards[..., 0], bias[..., 0]
    else:
        dims.append("output")
        axis_labels["output"] = list(names)
    return (cls or AttributionResult)(
        values=values.detach(),
        dims=tuple(dims),
        labels=axis_labels,
        value_name=extra.pop("value_name", "direct reward"),
        meta=meta,
        rewards=rewards.detach(),
        bias=bias.detach(),
        by=by,
        **extra,
    )


def _state_cache(model: HookedRewardModel, state: dict[str, Tensor]) -> RewardActivationCache:
    """A cache holding only the head state one side's DRA kept (`meta["head_state"]`), for `head.pair_split`."""
    batch = next(iter(state.values())).shape[0] if state else 0
    return RewardActivationCache(dict(state), model, reward_pos=torch.zeros(batch, dtype=torch.long))


def pair_reward_attribution(
    model: HookedRewardModel,
    chosen: str | Sequence[str] | Int[Tensor, "batch pos"],
    rejected: str | Sequence[str] | Int[Tensor, "batch pos"],
    *,
    chosen_mask: Int[Tensor, "batch pos"] | None = None,
    rejected_mask: Int[Tensor, "batch pos"] | None = None,
    by: Granularity = "component",
    layer: int | None = None,
    output: int | str | None = None,
    batch_size: int = 16,
    progress: bool = True,
) -> PairAttributionResult:
    """Decompose Δreward = r(chosen) − r(rejected) per component/head/neuron: `values = DRA(chosen) −
    DRA(rejected)` `[pair, component(, output)]`, each side with its own frozen final-norm scale.

    ArmoRM heads: objective columns are DRA(chosen) − DRA(rejected) (summing to Δ`objectives.hook_rewards`). The
    score column follows `score_difference`'s exact split Δscore = Σ_k ḡ_k Δt_k + Σ_k Δg_k t̄_k: each
    component's Δ per-objective attributions weighted by `T ḡ` (the two runs' mean gate through the transform),
    and a last row "gate" = Σ_k Δg_k t̄_k, what the change of the gate between the two texts contributes (0 in the
    objective columns). The rows then sum to Δscore exactly (`bias` 0). `meta["pair_split"]` keeps the
    per-objective split (`objectives`, `gate`: `[pair, K]`).

    by="position" is refused: the two texts' source positions are different tokens, so a position-wise
    difference would compare unrelated tokens (call `direct_reward_attribution` on each side instead).
    """
    if by == "position":
        raise InputError(
            "by='position' has no pairwise difference: chosen and rejected source positions are different "
            "tokens. Run direct_reward_attribution(model, chosen, by='position') and the same for rejected."
        )
    column = output_index(output, model.head.readout_names())
    # a split that mixes columns (its head reads state for it) needs every column of both sides
    mixes = bool(model.head.pair_split_hooks())

    def side(texts: Inputs, mask: Tensor | None) -> AttributionResult:
        return direct_reward_attribution(
            model,
            texts,
            attention_mask=mask,
            by=by,
            layer=layer,
            output=None if mixes else column,
            batch_size=batch_size,
            progress=progress,
        )

    side_c, side_r = side(chosen, chosen_mask), side(rejected, rejected_mask)
    if side_c.values.shape[0] != side_r.values.shape[0]:
        raise InputError(f"{side_c.values.shape[0]} chosen texts but {side_r.values.shape[0]} rejected ones.")
    common: dict[str, Any] = dict(value_name="Δ direct reward (chosen − rejected)", chosen=side_c, rejected=side_r)
    split = model.head.pair_split(
        _state_cache(model, side_c.meta.get("head_state", {})), _state_cache(model, side_r.meta.get("head_state", {}))
    )
    names = list(side_c.labels.get("output", [model.head.readout_names()[column or 0]]))
    delta, delta_bias = side_c.values - side_r.values, side_c.bias - side_r.bias
    rewards = side_c.rewards - side_r.rewards
    if delta.ndim == 2:
        delta, delta_bias, rewards = delta[..., None], delta_bias[..., None], rewards[..., None]
    values, bias, own_rows = split.apply(delta, delta_bias)
    meta = {key: v for key, v in side_c.meta.items() if key != "head_state"}
    if split.detail:
        meta["pair_split"] = dict(split.detail)
    labels: list[Any] = list(side_c.labels["component"]) + own_rows
    if mixes and column is not None:
        values, rewards, bias, names = (
            values[..., column : column + 1],
            rewards[..., column : column + 1],
            bias[..., column : column + 1],
            [names[column]],
        )
    return _make_result(values, rewards, bias, by, labels, meta, names, cls=PairAttributionResult, **common)
