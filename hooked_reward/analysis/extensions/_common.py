"""Shared pieces of the five extensions: reward-position residuals, the final norm, the random-direction null.

Everything here is in one of two bases, and the names say which:

* **raw**: the residual stream as a hook sees it (`blocks.{l}.hook_resid_post`), `[batch, d_model]`.
* **normed**: the final residual read the way the head reads it, `(h − mean(h)) / σ` for LayerNorm or `h / σ`
  for RMSNorm, with σ = `ln_final.hook_scale` of the same run (frozen). Then `reward = normed · W_R_eff + b_R_eff`
  exactly, for every linear head. `W_R_eff` (the head with the norm's gain folded in) lives in this basis.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from hooked_reward.errors import InputError
from hooked_reward.final_norm import frozen_final_norm, reward_direction
from hooked_reward.names import FINAL_SCALE, final_resid_hook

if TYPE_CHECKING:
    from hooked_reward.model import HookedRewardModel


@torch.no_grad()
def reward_position_acts(
    model: HookedRewardModel,
    texts_or_tokens: Any,
    hooks: Sequence[str],
    *,
    attention_mask: Tensor | None = None,
    batch_size: int = 64,
    fwd_hooks: Sequence[tuple[str, Callable]] = (),
) -> tuple[Float[Tensor, " batch"], dict[str, Float[Tensor, "batch d"]]]:
    """Rewards and each hook's activation at each row's reward position, `{hook: [batch, d]}` (float32, cpu).

    Runs in batches of `batch_size`; `fwd_hooks` (e.g. a patch) are active during the run.
    """
    tokens, mask = model.prepare(texts_or_tokens, attention_mask=attention_mask)
    hooks = list(dict.fromkeys(hooks))
    rewards: list[Tensor] = []
    acts: dict[str, list[Tensor]] = {h: [] for h in hooks}
    for start in range(0, tokens.shape[0], batch_size):
        tok, msk = tokens[start : start + batch_size], mask[start : start + batch_size]
        with model.hooks(fwd_hooks=list(fwd_hooks)), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            r, cache = model.run_with_cache(tok, attention_mask=msk, names_filter=hooks, positions="reward")
        rewards.append(r.float().cpu())
        for h in hooks:
            a = cache[h]
            acts[h].append(a.reshape(a.shape[0], -1).float().cpu() if a.ndim > 2 else a.float().cpu())
    return torch.cat(rewards), {h: torch.cat(v) for h, v in acts.items()}


@torch.no_grad()
def final_normed(
    model: HookedRewardModel, texts_or_tokens: Any, *, attention_mask: Tensor | None = None, batch_size: int = 64
) -> tuple[Float[Tensor, " batch"], Float[Tensor, "batch d"], Float[Tensor, "batch d"], Float[Tensor, " batch"]]:
    """`(rewards, normed, raw, scale)` at the reward position: raw final residual, its normed form and σ."""
    hook = final_resid_hook(model)
    rewards, acts = reward_position_acts(
        model, texts_or_tokens, [hook, FINAL_SCALE], attention_mask=attention_mask, batch_size=batch_size
    )
    scale = acts[FINAL_SCALE].reshape(-1)
    return rewards, frozen_final_norm(model, acts[hook], scale.reshape(-1, 1)), acts[hook], scale


def reward_direction_or_none(
    model: HookedRewardModel, output: int | str | None = None
) -> Float[Tensor, " d_model"] | None:
    """`final_norm.reward_direction(model, output)` (a `W_R_eff` row) on cpu, or None when the head has no single
    affine direction for `output`."""
    try:
        return reward_direction(model, output).cpu()
    except InputError:
        return None


def cosine(a: Tensor, b: Tensor, eps: float = 1e-12) -> float:
    """Cosine of two vectors (0 when either is zero)."""
    a, b = a.double().flatten(), b.double().flatten()
    na, nb = float(a.norm()), float(b.norm())
    return 0.0 if na < eps or nb < eps else float(a @ b / (na * nb))


def cosine_matrix(rows: Float[Tensor, "k d"]) -> Float[Tensor, "k k"]:
    """Pairwise cosines of rows (a zero row has cosine 0 with everything, 1 with itself)."""
    rows = rows.double()
    norms = rows.norm(dim=-1, keepdim=True)
    unit = torch.where(norms > 1e-12, rows / norms.clamp_min(1e-300), torch.zeros_like(rows))
    sim = unit @ unit.T
    sim.fill_diagonal_(1.0)
    return sim


def sign_score(margins: np.ndarray) -> np.ndarray:
    """1 for a positive margin, −1 for a negative one, 0 for a tie: mean(sign) = 2·AUC − 1 (ties ½)."""
    return np.sign(np.asarray(margins, dtype=np.float64))


def figure(n: int = 1, width: float = 6.0, height: float = 3.6) -> tuple[Any, Any]:
    """A matplotlib figure with `n` axes side by side (Agg-safe)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, n, figsize=(width * n, height), squeeze=False)
    return fig, axes[0] if n > 1 else axes[0, 0]


def frame(rows: list[dict[str, Any]]) -> Any:
    """A pandas DataFrame of `rows`, with a clear ImportError when pandas is missing."""
    try:
        import pandas as pd
    except ImportError as err:  # pragma: no cover
        raise ImportError("to_frame() needs pandas: `pip install pandas`.") from err
    return pd.DataFrame(rows)
