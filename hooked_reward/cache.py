"""RewardActivationCache: TransformerLens's ActivationCache plus views at each row's reward position.

TL's `decompose_resid`, `accumulated_resid`, `stack_head_results`, `apply_ln_to_stack` all work unchanged.
The reward views read every stack at each row's own reward position (rows of a padded batch differ), divide
by the final norm's scale frozen from this run (centring first for LayerNorm), and project on `W_R_eff`,
so that `sum(reward_attrs(decompose_resid())) + b_R_eff == reward` exactly.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens.ActivationCache import ActivationCache

from hooked_reward.errors import InputError
from hooked_reward.final_norm import fold_final_norm, frozen_final_norm
from hooked_reward.names import Component, as_components
from hooked_reward.outputs import output_index
from hooked_reward.positions import gather_at_positions


class RewardActivationCache(ActivationCache):
    """Activations of one run, with `reward_pos` (each row's reward position in the sequence).

    `cached_pos` is None when every position was cached, else the one position per row that was kept (at
    index 0 of every position axis), e.g. the reward position for `run_with_cache(..., positions="reward")`.
    """

    def __init__(
        self,
        cache_dict: dict[str, Tensor],
        model: Any,
        reward_pos: Int[Tensor, "batch"],
        cached_pos: Int[Tensor, "batch"] | None = None,
        attention_mask: Int[Tensor, "batch pos"] | None = None,
    ) -> None:
        super().__init__(cache_dict, model, has_batch_dim=True)
        self.reward_pos = reward_pos
        self.cached_pos = cached_pos
        self.attention_mask = attention_mask

    def stack_head_results(self, *args: Any, **kwargs: Any) -> Any:
        """TransformerLens's per-head results. On models with post-sublayer norms (Gemma-2/3 `ln1_post`)
        they are read before that norm, so they do not sum to `hook_attn_out`: a warning says so, and
        `analysis.attribution.direct_reward_attribution(by="head")` gives exact per-head reward attributions."""
        if any(name == "ln1_post" for name, _ in self.model.blocks[0].named_children()):
            warnings.warn(
                "stack_head_results: this model normalises attention output after the heads (ln1_post), so "
                "head results are pre-norm and their reward_attrs are not exact. Use "
                "hooked_reward.analysis.attribution.direct_reward_attribution(model, texts, by='head').",
                stacklevel=2,
            )
        return super().stack_head_results(*args, **kwargs)

    @property
    def reward_index(self) -> Int[Tensor, "batch"]:
        """Where each row's reward position sits on the cached position axis."""
        if self.cached_pos is None:
            return self.reward_pos
        if torch.equal(self.cached_pos.cpu(), self.reward_pos.cpu()):
            return torch.zeros_like(self.reward_pos)
        raise InputError(
            "This cache kept a position other than the reward position, so reward views cannot be read "
            "from it. Run `run_with_cache(..., positions='reward')` or cache all positions."
        )

    def at_reward(self, stack: Float[Tensor, "... batch pos d"]) -> Float[Tensor, "... batch d"]:
        """Each row's reward-position vector from a stack with a position axis (second to last)."""
        if stack.ndim < 3:
            raise InputError(f"Expected a stack [..., batch, pos, d], got shape {tuple(stack.shape)}.")
        lead = stack.shape[:-3]
        flat = stack.reshape(-1, *stack.shape[-3:])
        index = self.reward_index.to(stack.device)
        picked = torch.stack([gather_at_positions(s, index, pos_dim=1)[:, 0] for s in flat])
        return picked.reshape(*lead, *picked.shape[1:])

    def final_scale_at_reward(self) -> Float[Tensor, "batch 1"]:
        """The final norm's scale (`ln_final.hook_scale`) at each row's reward position, frozen from this run."""
        if "ln_final.hook_scale" not in self.cache_dict:
            raise InputError(
                "The cache lacks 'ln_final.hook_scale', which the reward views need; include it in names_filter."
            )
        scale = self["ln_final.hook_scale"]
        if scale.ndim == 2:
            scale = scale[..., None]
        return self.at_reward(scale)

    def apply_final_ln_at_reward(
        self, stack: Float[Tensor, "... batch pos d_model"]
    ) -> Float[Tensor, "... batch d_model"]:
        """Read a residual stack at the reward position through the final norm, scale frozen (gain excluded:
        it is folded into `W_R_eff`). LayerNorm models are centred first, as their norm does."""
        return frozen_final_norm(self.model, self.at_reward(stack), self.final_scale_at_reward())

    def reward_attrs(
        self, residual_stack: Float[Tensor, "... batch pos d_model"], output: int | str | None = None
    ) -> Tensor:
        """The reward-head analogue of `logit_attrs`: each component's direct contribution to the reward.

        `residual_stack` is `[components, batch, pos, d_model]` (from `decompose_resid`, `stack_head_results`,
        `accumulated_resid`, ...). Returns `[components, batch]` for a single output, `[components, batch,
        n_outputs]` otherwise (or that output alone with `output=k`). With the final norm's scale frozen
        from this run, contributions of a full decomposition plus `model.b_R_eff` sum to the reward.
        `output` (an index or a name) selects one column of the head's `readout(cache)` (ArmoRM: an objective, or
        "score" along a per-row direction with the gate held fixed; MLP heads: their linearisation at the run's
        `hook_reward_resid`), giving `[components, batch]`.
        """
        normed = self.apply_final_ln_at_reward(residual_stack)
        if output is None:
            w_eff = self.model.W_R_eff.to(normed.device)
            return normed @ w_eff.T if w_eff.ndim == 2 else normed @ w_eff
        readout = self.model.head.readout(self)
        column = output_index(output, readout.names)
        direction = fold_final_norm(self.model, readout.select(column)).direction[..., 0, :].to(normed.device)
        if direction.shape[0] == 1:  # one direction for every row (an affine head's W_R_eff row)
            return normed @ direction[0]
        return (normed * direction).sum(-1)

    def decompose_reward(self, output: int | str | None = None) -> tuple[Tensor, list[Component]]:
        """`(attributions, labels)`: per-component reward contributions of `decompose_resid` (embeddings,
        each attention layer and MLP), `[components, batch(, n_outputs)]`; they sum to reward − b_R_eff."""
        stack, labels = self.decompose_resid(return_labels=True)
        components = as_components(labels, self.model, pos_embed="pos_embed" in labels)
        return self.reward_attrs(stack, output=output), components
