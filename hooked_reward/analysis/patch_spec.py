"""One patch spec: how a patching experiment runs, whatever it patches.

Every patching entry point (`patching.patch_hooks`, `patch_resid`, `patch_block_outputs`, `patch_heads`,
`run_patched`, `path_patching.path_patch`, `attribution_patching.attribution_patch`,
`ranked_patching.ranked_patching`, `faithfulness.faithfulness_pair` / `faithfulness_study`) takes the same
options, defined once here as `PatchSpec`:

    mode        "denoise" | "noise" | "zero" | "mean" | "resample"   which run is patched with what
    reference   inputs for "mean" / "resample" ablation
    align       None / "position" | "prompt" | "reward"               how the two sequences' positions pair up
    prompt_len  tokens of the shared prompt, for align="prompt"
    output      which reward output is read (an index or a name; see `outputs.select_output`)
    max_rows    patched runs stacked per forward (the memory bound)
    progress    a tqdm bar over the batches

Pass them either as keywords (`patch_resid(model, clean, corrupt, mode="noise", align="reward")`, as before) or
as one object (`spec = PatchSpec(align="reward", output="helpfulness")`, then `patch_resid(..., spec=spec)`;
keywords given beside a spec override its fields). The entry point's own arguments (what to patch: `hook`,
`layers`, `act`, `per_position`, `sites`, `receiver`...) stay its own.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from hooked_reward.errors import InputError

__all__ = ["MODES", "ABLATIONS", "Input", "PatchSpec", "patch_spec"]

MODES = ("denoise", "noise", "zero", "mean", "resample")
ABLATIONS = ("zero", "mean", "resample")
#: One patching input: a text, a `[pos]` / `[1, pos]` token tensor, or `(tokens, attention_mask)`.
Input = str | Tensor | tuple[Tensor, Tensor]


@dataclass(frozen=True)
class PatchSpec:
    """The options every patching entry point shares (see the module docstring for each field's meaning).

    The mode is checked here (`InputError` naming the choices); alignments are checked where the pair is known
    (`patching.align_pair`)."""

    mode: str = "denoise"
    reference: Sequence[Input] | None = None
    align: str | None = None
    prompt_len: int | None = None
    output: int | str | None = None
    max_rows: int = 64
    progress: bool = True

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise InputError(f"mode must be one of {MODES}, got {self.mode!r}.")

    def replace(self, **changes: Any) -> PatchSpec:
        """A copy with `changes` applied (unknown names raise `TypeError` listing the fields)."""
        return patch_spec(self, changes, fn="PatchSpec.replace")

    def require_modes(self, modes: Sequence[str], what: str) -> None:
        """`InputError` unless `mode` is one of `modes` (e.g. path patching only denoises or noises)."""
        if self.mode not in modes:
            choices = " or ".join(repr(m) for m in modes)
            raise InputError(f"{what} supports mode={choices}, got {self.mode!r}.")


FIELDS = tuple(f.name for f in dataclasses.fields(PatchSpec))


def patch_spec(
    spec: PatchSpec | None, options: Mapping[str, Any], *, default: PatchSpec | None = None, fn: str = "patching"
) -> PatchSpec:
    """The spec an entry point runs with: `spec` (or the entry point's `default`, else `PatchSpec()`) with the
    keyword `options` applied on top. A keyword that is no `PatchSpec` field raises `TypeError`, as an unknown
    keyword argument does."""
    unknown = sorted(set(options) - set(FIELDS))
    if unknown:
        raise TypeError(f"{fn}() got unexpected keyword argument(s) {unknown}; the patching options are {FIELDS}.")
    base = spec if spec is not None else (default if default is not None else PatchSpec())
    if not isinstance(base, PatchSpec):
        raise InputError(f"spec must be a PatchSpec, got {type(base).__name__}.")
    return dataclasses.replace(base, **options) if options else base
