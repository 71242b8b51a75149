"""Picking one output of a reward head: the one rule every analysis uses.

A head has one output (`rewards [batch]`) or several (`[batch, n_outputs]`, e.g. objectives). An analysis that
reads one number per text takes `output: int | str | None`: an index (negative counts from the end), a name
(`model.output_names`, or the columns an analysis reports, such as ArmoRM's objectives and "score"), or None.
"""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Integral

from jaxtyping import Float
from torch import Tensor

from hooked_reward.errors import InputError

OutputArg = int | str | None


def output_index(output: OutputArg, names: Sequence[str]) -> int | None:
    """The position of `output` among `names` (None stays None); `InputError` for an unknown name or an index
    out of range, naming the valid choices."""
    if output is None:
        return None
    names = list(names)
    if isinstance(output, str):
        if output not in names:
            raise InputError(f"Unknown output {output!r}; this head's outputs are {names} (pass a name or an index).")
        return names.index(output)
    if isinstance(output, bool) or not isinstance(output, Integral):
        raise InputError(f"output must be an int, a name or None; got {type(output).__name__} {output!r}.")
    n = len(names)
    if not -n <= int(output) < n:
        raise InputError(
            f"output={int(output)} is out of range for a head with {n} output(s) {names}; use 0..{n - 1} or a name."
        )
    return int(output) % n


def select_output(
    rewards: Float[Tensor, " batch *n_outputs"],
    output: OutputArg,
    *,
    names: Sequence[str] | None = None,
    required: bool = True,
) -> Tensor:
    """One output's values from rewards `[batch]` (one output: returned as is) or `[batch, n_outputs]`.

    `output` is an index, a name from `names` (default `output_0`, `output_1`, ...) or None. With several
    outputs and `output=None`, `required=True` raises `InputError` (pick one) and `required=False` returns every
    output unchanged. Returns `[batch]` (or `[batch, n_outputs]` for `required=False, output=None`).
    """
    if rewards.ndim <= 1:
        if output is not None:
            output_index(output, list(names) if names is not None and len(names) == 1 else ["reward"])
        return rewards
    n = rewards.shape[-1]
    names = list(names) if names is not None and len(names) == n else [f"output_{i}" for i in range(n)]
    index = output_index(output, names)
    if index is None:
        if required:
            raise InputError(
                f"The model has {n} reward outputs {names}; pass output= (an index or a name) to pick one."
            )
        return rewards
    return rewards[..., index]
