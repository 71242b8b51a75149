"""The interface every reward head implements."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import torch
from einops import einsum
from jaxtyping import Float, Int
from torch import Tensor, nn
from transformer_lens.hook_points import HookPoint

from hooked_reward.errors import InputError

if TYPE_CHECKING:
    from hooked_reward.cache import RewardActivationCache

#: How a head's `readout` reads it: "affine" (`W_R`, `b_R`, exact everywhere), "gate_fixed" (a gate held at the
#: run's weights, e.g. ArmoRM) or "linearised" (an MLP head linearised at the run's own point).
ReadoutKind = Literal["affine", "gate_fixed", "linearised"]


@dataclass
class HeadInputs:
    """What a head may read besides the reward-position residual.

    `final_resid` is the final-normed residual at every position (`[batch, pos, d_model]`), needed by heads
    that read a second position (ArmoRM's gate reads the prompt's end). `tokens` and `attention_mask` are the
    run's inputs.
    """

    final_resid: Float[Tensor, "batch pos d_model"]
    tokens: Int[Tensor, "batch pos"]
    attention_mask: Int[Tensor, "batch pos"]
    reward_pos: Int[Tensor, " batch"]


@dataclass
class Readout:
    """How a head is read off the final-normed residual `h` (ln_final's output): `h · direction + offset` per
    column.

    `direction` is `[batch | 1, n_cols, d_model]` (one per row, or shared) or `[batch, pos, n_cols, d_model]`
    (one per row and position); `offset` is the same without `d_model`. `names` label the columns. `kind`:
    "affine" (`W_R`, `b_R`: exact everywhere), "gate_fixed" (ArmoRM: objectives, and the score with the gate held
    at the run's weights) or "linearised" (an MLP head's gradient and offset at the run's own point).
    """

    direction: Tensor
    offset: Tensor
    names: list[str]
    kind: ReadoutKind

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

    def apply(self, h: Float[Tensor, "batch *mid d_model"]) -> Float[Tensor, "batch *mid n_cols"]:
        """`h · direction + offset` for `h` `[batch, *mid, d_model]` (a shared or per-row direction broadcasts
        over `mid`; a per-position direction `[batch, pos, n_cols, d]` needs `h` `[batch, point, pos, d]`)."""
        return self.project(h) + self.offset_like(h)

    def project(self, h: Float[Tensor, "batch *mid d_model"]) -> Float[Tensor, "batch *mid n_cols"]:
        """`h · direction` per column, without the offset (shapes as in `apply`)."""
        direction = self.direction.to(h.device, torch.float32)
        if direction.ndim == 3:
            return torch.einsum("b...d,bod->b...o", h, direction.expand(h.shape[0], *direction.shape[1:]))
        return torch.einsum("blpd,bpod->blpo", h, direction)

    def offset_like(self, h: Float[Tensor, "batch *mid d_model"]) -> Tensor:
        """`offset` shaped to add to `project(h)`."""
        offset = self.offset.to(h.device, torch.float32)
        if offset.ndim == 3:
            return offset[:, None]  # [b, 1, pos, o]
        return offset.reshape(offset.shape[0], *([1] * (h.ndim - 2)), offset.shape[-1])


@dataclass
class PairSplit:
    """How a pair's reward difference, r(a) − r(b), is read from the two runs' per-column attributions.

    For readout column j: Δ_j = Σ_i weights[b, j, i] · (a_i − b_i) over the readout columns i (each side's
    column-wise attribution, e.g. DRA rows), plus `own[b, j]`: the part of the difference that is the head's own
    state changing between the two runs, which no residual direction carries (ArmoRM's gate), reported as one more
    row named `own_name`. `weights` None: every column is its own plain difference (affine and linearised heads);
    `own` None: the head has no state of its own. `detail` holds named per-part splits for reports
    (ArmoRM: "objectives" and "gate", `[batch, K]`, as `score_difference` gives them).
    """

    weights: Float[Tensor, "batch n_cols n_cols"] | None = None
    own: Float[Tensor, "batch n_cols"] | None = None
    own_name: str = "gate"
    detail: dict[str, Tensor] = field(default_factory=dict)

    def apply(
        self,
        delta: Float[Tensor, "batch comp n_cols"],
        delta_bias: Float[Tensor, "batch n_cols"] | Float[Tensor, " n_cols"],
    ) -> tuple[
        Float[Tensor, "batch comp_out n_cols"], Float[Tensor, "batch n_cols"] | Float[Tensor, " n_cols"], list[str]
    ]:
        """`(values, bias, extra_rows)`: the per-side differences `delta` (`a − b` per component and column) and
        `delta_bias` (`[batch, n_cols]`, or `[n_cols]` for a shared readout) read as this split says, with the
        head's own row appended (its name in `extra_rows`)."""
        if self.weights is None:
            values, bias = delta, delta_bias
        else:
            w = self.weights.to(delta.device, delta.dtype)
            values = einsum(delta, w, "b c i, b j i -> b c j")
            shared = "i" if delta_bias.ndim == 1 else "b i"  # a shared readout's bias has no batch axis
            bias = einsum(delta_bias, w.to(delta_bias.device), f"{shared}, b j i -> b j")
        if self.own is None:
            return values, bias, []
        own = self.own.to(values.device, values.dtype)[:, None]
        return torch.cat([values, own], dim=1), bias, [self.own_name]


class RewardHead(nn.Module):
    """Base class: `forward(reward_resid, inputs) -> rewards`.

    `reward_resid` is `[batch, d_model]` (the final-normed residual at each row's reward position);
    rewards are `[batch]` for one output or `[batch, n_outputs]`.
    Subclasses set `output_names` and, where the head is one affine map, return it from `linear_map()`.
    """

    output_names: list[str]
    #: False for heads that read ln_final's output beyond one Linear (gates, MLPs): TL's weight processing,
    #: which folds ln_final into the unembed, is then refused.
    supports_weight_processing: bool = True
    #: How `readout` reads the head: "affine", "gate_fixed" or "linearised" (see `Readout`, `ReadoutKind`).
    readout_kind: ReadoutKind = "affine"

    @property
    def n_outputs(self) -> int:
        return len(self.output_names)

    def linear_map(self) -> tuple[Float[Tensor, "n_outputs d_model"], Float[Tensor, "n_outputs"]] | None:
        """`(W, b)` with rewards = reward_resid @ W.T + b, or None when the head is not affine."""
        return None

    def hook_points(self) -> dict[str, HookPoint]:
        """The head's hook points, by the name they get in the model's hook graph."""
        return {}

    # -------------------------------------------------------------- how the head is read (analyses use only these)
    def readout_names(self) -> list[str]:
        """The columns analyses report for this head (default: `output_names`)."""
        return list(self.output_names)

    def readout_hooks(self) -> list[str]:
        """Hook points `readout(cache)` needs in the cache (beyond the residual and `ln_final.hook_scale`)."""
        return []

    def readout(self, cache: RewardActivationCache | None = None, *, normed: Tensor | None = None) -> Readout:  # noqa: ARG002 (the RewardHead interface's signature)
        """How this head is read off the final-normed residual, for the run in `cache`: an affine head's
        `(W_R, b_R)` (needs neither `cache` nor `normed`). Heads that are not one affine map override this
        (ArmoRM: the gate held at the cache's weights; MLP heads: linearised at `normed`, or the cache's
        `hook_reward_resid`)."""
        linear = self.linear_map()
        if linear is None:
            raise InputError(f"{type(self).__name__} is not one affine map and defines no readout().")
        weight, bias = linear
        return Readout(as_float(weight)[None], as_float(bias)[None], self.readout_names(), self.readout_kind)

    @property
    def readout_is_shared(self) -> bool:
        """Whether `readout` is the same for every run (an affine head's `W_R`, `b_R`); False when it depends on
        the run (a gate's weights, a linearisation point), so its offsets differ per row."""
        return self.readout_kind == "affine"

    @property
    def readout_needs_point(self) -> bool:
        """Whether `readout` must be given the point it is read at (`normed=`, ln_final's output): a linearised
        head's directions depend on it."""
        return self.readout_kind == "linearised"

    def readout_column(self, output: int | None) -> int | None:
        """The readout column that follows the model's output `output` (an index into `output_names`; None: all
        columns). Default: the same index; heads whose readout has more columns than outputs (ArmoRM: the
        objectives, then the score) override it."""
        return output

    # -------------------------------------------------------------- pairs: the difference of two runs
    def pair_split_hooks(self) -> list[str]:
        """Hook points `pair_split` reads in each run's cache; empty when the split is the plain difference (then
        each readout column of a pair can be computed on its own)."""
        return []

    def pair_split(
        self,
        cache_a: RewardActivationCache,  # noqa: ARG002 (the RewardHead interface's signature)
        cache_b: RewardActivationCache,  # noqa: ARG002
    ) -> PairSplit:
        """How r(a) − r(b) is read from the two runs' per-column attributions (see `PairSplit`). Default: the
        plain difference of each column. Gated heads override it (ArmoRM: the score column as the mean gate
        through the transform times each objective's difference, plus the gate's own term)."""
        return PairSplit()

    # -------------------------------------------------------------- named terms (heads whose score sums terms)
    def term_names(self) -> list[str]:
        """The named terms whose gate-weighted sum is the head's score (ArmoRM: the objectives); empty for heads
        without such terms."""
        return []

    def term_hooks(self) -> list[str]:
        """Hook points `terms` reads in a cache."""
        return []

    def terms(self, cache: RewardActivationCache, *, transformed: bool = True) -> HeadTerms:  # noqa: ARG002
        """Each run's terms and gate (see `HeadTerms`); `InputError` for heads without terms (`term_names()` empty)."""
        raise InputError(f"{type(self).__name__} has no named terms (term_names() is empty).")

    def term_directions(
        self,
        directions: Float[Tensor, "n_terms d_model"],
        transformed: bool = True,  # noqa: ARG002
    ) -> Float[Tensor, "n_terms d_model"]:
        """The directions the terms read, from the raw per-term directions `directions` (e.g. rows of `W_R_eff`):
        unchanged by default; ArmoRM's transformed objectives read `Tᵀ directions`."""
        return directions

    def readout_values(
        self,
        cache: RewardActivationCache,  # noqa: ARG002 (the RewardHead interface's signature)
        rewards: Float[Tensor, " batch *n_outputs"],
    ) -> Float[Tensor, "batch n_cols"]:
        """The model's own value of each readout column for the run in `cache` (default: the rewards)."""
        return rewards.to(torch.float32).reshape(rewards.shape[0], -1)

    def values_at(self, normed: Float[Tensor, "... d_model"], readout: Readout) -> Float[Tensor, "... n_cols"]:
        """The head's columns evaluated on final-normed residuals `normed` (ln_final's output), the readout's
        run-specific state (a gate's weights) held fixed: `readout.apply(normed)`, exact for affine and
        gate-fixed readouts. Heads that are linearised override this with their real map."""
        return readout.apply(normed)

    def forward(self, reward_resid: Float[Tensor, "batch d_model"], inputs: HeadInputs) -> Tensor:
        raise NotImplementedError

    @staticmethod
    def squeeze_single(rewards: Float[Tensor, "batch n_outputs"]) -> Tensor:
        """`[batch]` for a single-output head, else unchanged."""
        return rewards[:, 0] if rewards.shape[-1] == 1 else rewards


@dataclass
class HeadTerms:
    """A head's named terms for a batch of runs: score = Σ_k weights_k · values_k (ArmoRM: the objectives, raw or
    transformed, and the gate). `values` and `weights` are `[batch, K]`."""

    names: list[str]
    values: Float[Tensor, "batch n_terms"]
    weights: Float[Tensor, "batch n_terms"]


def as_float(t: Tensor) -> Tensor:
    """Detached float32 copy of a weight, for analysis (weights may be bf16)."""
    return t.detach().to(torch.float32)
