"""Non-finite rewards: found where they appear, named by row, never passed on silently.

`forward` and `run_with_cache` take `nan_policy` (scipy's vocabulary):

- `"raise"` (default): a row whose reward (any output) is NaN or ±Inf raises `NonFiniteError` naming the rows,
  their values and the first hook point where a non-finite activation appears in those rows (found by a
  second, diagnostic run that only happens on this error path).
- `"omit"`: those rows are dropped from the result (and from the cache), with a `NonFiniteRewardWarning` saying
  how many and which (its `.rows`, numbered in the batch as given). Rows are independent, so omitting per
  batch and concatenating equals omitting over the whole batch.
- `"propagate"`: the rewards are returned as computed, non-finite values included.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Literal

import torch
from jaxtyping import Int
from torch import Tensor

from hooked_reward.errors import InputError, NonFiniteError
from hooked_reward.hook_checks import hook_label

if TYPE_CHECKING:
    from transformer_lens.hook_points import HookPoint

    from hooked_reward.model import HookedRewardModel

NanPolicy = Literal["raise", "omit", "propagate"]
NAN_POLICIES = ("raise", "omit", "propagate")


class NonFiniteRewardWarning(UserWarning):
    """Rows dropped by `nan_policy="omit"`; `.rows` lists them (indices into the batch as given)."""

    def __init__(self, message: str, rows: list[int]) -> None:
        super().__init__(message)
        self.rows = rows


def check_nan_policy(nan_policy: str) -> None:
    if nan_policy not in NAN_POLICIES:
        raise InputError(f"nan_policy must be one of {', '.join(map(repr, NAN_POLICIES))}; got {nan_policy!r}.")


def non_finite_rows(rewards: Tensor) -> list[int]:
    """Rows of `[batch]` or `[batch, n_outputs]` rewards with any NaN or ±Inf value."""
    finite = torch.isfinite(rewards.detach())
    finite = finite.reshape(finite.shape[0], -1).all(-1) if finite.ndim > 1 else finite
    if bool(finite.all()):
        return []
    return (~finite).nonzero().flatten().tolist()


def first_non_finite_hook(
    model: HookedRewardModel, tokens: Int[Tensor, "batch pos"], mask: Int[Tensor, "batch pos"], rows: list[int]
) -> str | None:
    """The first hook point (in the order they fire) whose activation is non-finite in `rows`, or None.

    Runs the model once more with a check on every hook point, stopping at the first hit; -inf in attention
    scores (masked entries) does not count."""

    class Found(Exception):
        pass

    batch = tokens.shape[0]
    index = torch.tensor(rows, device=tokens.device)
    found: list[str] = []

    def look(activation: object, hook: HookPoint) -> None:
        if not isinstance(activation, Tensor) or not activation.is_floating_point() or activation.ndim == 0:
            return
        part = activation.detach()
        if part.shape[0] == batch:
            part = part.index_select(0, index.to(part.device))
        name = getattr(hook, "name", "") or ""
        bad = part.isnan() | (part == float("inf"))
        if not name.endswith("attn_scores"):
            bad |= part == float("-inf")
        if bool(bad.any()):
            found.append(hook_label(hook))
            raise Found

    names = [names[0] for _, names in model._select_hooks(None).values()]
    try:
        with torch.no_grad(), model.hooks(fwd_hooks=[(name, look) for name in names]):
            model.forward(tokens, attention_mask=mask, nan_policy="propagate")
    except Found:
        pass
    except Exception:  # noqa: BLE001 — the diagnosis must never hide the error it explains
        return None
    return found[0] if found else None


def apply_nan_policy(
    model: HookedRewardModel,
    rewards: Tensor,
    tokens: Int[Tensor, "batch pos"],
    mask: Int[Tensor, "batch pos"],
    nan_policy: NanPolicy,
) -> Int[Tensor, " kept"] | None:
    """Apply `nan_policy` to a run's rewards: None when every row is kept, else the kept rows' indices (for
    "omit", with a warning); raises `NonFiniteError` for "raise"."""
    if nan_policy == "propagate":
        return None
    bad = non_finite_rows(rewards)
    if not bad:
        return None
    batch = rewards.shape[0]
    shown = bad[:10]
    values = [rewards[i].detach().tolist() for i in shown]
    more = f" (and {len(bad) - len(shown)} more)" if len(bad) > len(shown) else ""
    if nan_policy == "omit":
        warnings.warn(
            NonFiniteRewardWarning(
                f"Dropped {len(bad)} of {batch} rows whose reward is not finite: rows {shown}{more}, "
                f"rewards {values}. The result has {batch - len(bad)} rows; the warning's .rows lists those dropped.",
                bad,
            ),
            stacklevel=3,
        )
        keep = torch.ones(batch, dtype=torch.bool)
        keep[bad] = False
        return keep.nonzero().flatten().to(rewards.device)
    where = first_non_finite_hook(model, tokens, mask, bad)
    origin = (
        f" Non-finite values first appear at hook point {where}."
        if where
        else " No hook point's activation is non-finite in those rows; the reward head produced them."
    )
    raise NonFiniteError(
        f"The reward of row(s) {shown}{more} of {batch} is not finite: {values}.{origin} Check the weights "
        "(a corrupt or overflowing checkpoint; try float32) and the inputs of those rows, or pass "
        "nan_policy='omit' to drop such rows with a warning (nan_policy='propagate' returns them as they are)."
    )
