"""Activation patching on reward models: denoising, noising and ablation sweeps, batched.

Three modes, all against TransformerLens hook points, over one (clean, corrupted) pair:

* ``"denoise"``: run the *corrupted* input and write the *clean* activation in at the patch site.
* ``"noise"``: run the *clean* input and write the *corrupted* activation in.
* ablation, ``"zero"`` / ``"mean"`` / ``"resample"``: run the *clean* input and write in zeros, the mean
  activation over a reference set (over its rows and attended positions, one vector per component), or the
  activation of each reference input in turn (the reward is averaged over the reference inputs).

Every result reports the patched reward, the reward change against the unpatched run of the same input
(``values``), and one normalised number on the corrupt → clean scale,

    fraction = (r_patched − r_corrupt) / (r_clean − r_corrupt),

which reads as the *recovered fraction* for denoising (0: nothing recovered, 1: the clean reward), the
*remaining fraction* for noising (1: the patch destroys nothing, 0: it gives the corrupted reward, so
``1 − fraction`` is the fraction destroyed), and for ablation (given a corrupted input as the reference point)
how far the ablated clean run sits on the same scale; without a corrupted input it is NaN.

Sweeps stack copies of the run along the batch axis, each row with its own patch, `max_rows` rows per forward
(the memory bound). The residual sweep (`patch_resid`) runs each patch only from the patched block and position
on (`hooked_reward.analysis.patching_fast`, about a quarter of the compute) wherever that is the faster path.
Pairs of different lengths are refused unless an alignment is named (see `Alignment`).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from hooked_reward.analysis.lens import token_strings
from hooked_reward.analysis.patch_spec import ABLATIONS, MODES, Input, PatchSpec, patch_spec
from hooked_reward.analysis.results import LabeledTensor, require_pandas, require_pyplot
from hooked_reward.errors import InputError
from hooked_reward.names import act_name, block_components
from hooked_reward.outputs import select_output
from hooked_reward.tl_compat import FwdHooks

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from transformer_lens.hook_points import HookPoint

    from hooked_reward.model import HookedRewardModel

__all__ = [
    "Alignment",
    "Patch",
    "PatchSpec",
    "PatchingResult",
    "as_row",
    "align_pair",
    "run_patched",
    "patch_hooks",
    "patch_resid",
    "patch_block_outputs",
    "patch_heads",
    "reward_position_hook",
    "write_at_positions",
    "MODES",
    "ABLATIONS",
]

HEAD_ACTS = ("z", "q", "k", "v", "pattern")


# ---------------------------------------------------------------------------------------------------- inputs
def as_row(model: HookedRewardModel, x: Input) -> Int[Tensor, " pos"]:
    """One input as an unpadded 1-D token row: text, a `[pos]` / `[1, pos]` id tensor, or `(tokens, mask)`,
    read by `model.prepare` (the one input path).

    Padding is removed (the mask's attended tokens are kept), so that positions are the sequence's own.
    """
    if isinstance(x, tuple) and len(x) == 2:
        ids, attended = (t.reshape(1, -1) if isinstance(t, Tensor) and t.ndim == 1 else t for t in x)
        tokens, mask = model.prepare((ids, attended))
    else:
        tokens, mask = model.prepare([x] if isinstance(x, str) else x)
    if tokens.shape[0] != 1:
        raise InputError(
            f"Pass one sequence per input (text, [pos] or [1, pos] ids, or (tokens, mask)); got {tokens.shape[0]} rows."
        )
    return tokens[0][mask[0].bool()]


def row_reward_position(model: HookedRewardModel, row: Int[Tensor, " pos"]) -> int:
    """Where the model reads the reward of one unpadded token row (`model.reward_positions`: the checkpoint's own
    rule, e.g. the token before a trailing eos that is also the pad id)."""
    return int(model.reward_positions(torch.ones_like(row)[None], row[None])[0])


def reward_alignment(
    model: HookedRewardModel,
    target: Int[Tensor, " pos"],
    source: Int[Tensor, " pos"],
    align: str | None = None,
    prompt_len: int | None = None,
) -> Alignment:
    """`align_pair` for two unpadded rows; `align="reward"` lines up their reward positions (by the model's rule)."""
    ends = (row_reward_position(model, target), row_reward_position(model, source)) if align == "reward" else None
    return align_pair(len(target), len(source), align, prompt_len, reward_pos=ends)


@dataclass(frozen=True)
class Alignment:
    """Which target position reads which source position: source = target − `offset`, for targets in [lo, hi).

    Built by `align_pair`. The *target* is the run being patched (corrupted for denoising, clean for noising),
    the *source* the run the patched-in activation comes from.
    """

    target_len: int
    source_len: int
    offset: int
    lo: int
    hi: int
    kind: str

    def has(self, pos: int) -> bool:
        """Whether target position `pos` has a source counterpart."""
        return self.lo <= pos < self.hi

    def indices(self, positions: Sequence[int] | None) -> tuple[Tensor, Tensor]:
        """`(target_idx, source_idx)` for the given target positions (None: every aligned position)."""
        if positions is None:
            tgt = torch.arange(self.lo, self.hi)
        else:
            tgt = torch.as_tensor(list(positions), dtype=torch.long)
            bad = [int(p) for p in tgt if not self.has(int(p))]
            if bad:
                raise InputError(
                    f"Target position(s) {bad} have no source counterpart under align={self.kind!r} "
                    f"(aligned target span is {self.lo}..{self.hi - 1})."
                )
        return tgt, tgt - self.offset


def align_pair(
    target_len: int,
    source_len: int,
    align: str | None = None,
    prompt_len: int | None = None,
    *,
    reward_pos: tuple[int, int] | None = None,
) -> Alignment:
    """The position map between a target and a source sequence; refuses silent misalignment.

    * ``align=None`` (or ``"position"``): position i ↔ position i; the lengths must be equal, else
      `InputError` (patching position by position from the start would put the wrong activation at the
      reward token).
    * ``align="prompt"``: only the shared prompt span `0..prompt_len-1` is patchable (same index in both);
      `prompt_len` is required and must not exceed either length. Under causal attention the prompt's
      activations do not depend on the response, so this span is exactly comparable.
    * ``align="reward"``: line the reward positions up: target position t reads source position
      t − (target reward position − source reward position), where that exists. `reward_pos` gives the two
      positions (`reward_alignment` reads them with the model's rule); without it, the last tokens
      (right-aligned sequences).
    """
    if align in (None, "position"):
        if target_len != source_len:
            raise InputError(
                f"The pair has different lengths ({target_len} vs {source_len} tokens), so position-by-position "
                "patching would misalign them (the reward token would get another token's activation). Pass an "
                "explicit alignment: align='reward' (right-align, reward positions coincide) or align='prompt' "
                "with prompt_len=<tokens of the shared prompt>."
            )
        return Alignment(target_len, source_len, 0, 0, target_len, "position")
    if align == "prompt":
        if prompt_len is None or prompt_len < 1:
            raise InputError("align='prompt' needs prompt_len (the number of tokens of the shared prompt, >= 1).")
        if prompt_len > min(target_len, source_len):
            raise InputError(
                f"prompt_len={prompt_len} exceeds a sequence's length ({target_len}, {source_len} tokens)."
            )
        return Alignment(target_len, source_len, 0, 0, prompt_len, "prompt")
    if align == "reward":
        t_end, s_end = reward_pos if reward_pos is not None else (target_len - 1, source_len - 1)
        offset = t_end - s_end
        return Alignment(target_len, source_len, offset, max(0, offset), min(target_len, source_len + offset), "reward")
    raise InputError(f"align must be None, 'position', 'prompt' or 'reward'; got {align!r}.")


# ---------------------------------------------------------------------------------------------------- patches
def hook_axes(name: str) -> tuple[int, int | None]:
    """`(position axis, head axis)` of a hook's activation, counting the batch axis as 0.

    Attention patterns/scores are `[batch, head, query, key]` (position = the query axis); q/k/v/z are
    `[batch, pos, head, d_head]`; everything else `[batch, pos, ...]` with no head axis.
    """
    if name.endswith(("hook_pattern", "hook_attn_scores")):
        return 2, 1
    if name.endswith(("hook_q", "hook_k", "hook_v", "hook_z", "hook_rot_q", "hook_rot_k", "hook_result")):
        return 1, 2
    return 1, None


def has_position_axis(name: str) -> bool:
    """False for the reward head's hooks (`hook_reward_resid`, `hook_reward`, `unembed.*`, head hooks), which
    hold one vector per row (read at the reward position) rather than one per position."""
    return not name.startswith(("hook_reward", "unembed.", "hook_unembed", "head."))


def is_pattern(name: str) -> bool:
    return name.endswith(("hook_pattern", "hook_attn_scores"))


@dataclass(frozen=True)
class Patch:
    """One patch site: a hook, the target positions (None: all aligned positions) and optionally one head."""

    hook: str
    positions: tuple[int, ...] | None = None
    head: int | None = None


def _patch_views(act: Tensor, src: Tensor, patch: Patch, align: Alignment) -> None:
    """Copy `src` (one source row, no batch axis) into `act` (one target row) at `patch`, in place."""
    if not has_position_axis(patch.hook):
        if patch.positions is not None or patch.head is not None:
            raise InputError(f"{patch.hook!r} has one vector per row (no position or head axis): drop positions/head.")
        act.copy_(src)
        return
    pos_axis, head_axis = hook_axes(patch.hook)
    pos_axis -= 1
    if patch.head is not None:
        if head_axis is None:
            raise InputError(f"Hook {patch.hook!r} has no head axis; drop head= for it.")
        act = act.select(head_axis - 1, patch.head)
        src = src.select(head_axis - 1, patch.head)
        if head_axis - 1 < pos_axis:
            pos_axis -= 1
    tgt, srci = align.indices(patch.positions)
    tgt, srci = tgt.to(act.device), srci.to(act.device)
    if is_pattern(patch.hook):
        # the key axis follows the query axis; only equal-length pairs reach here (see _check_hook_alignment)
        act.index_copy_(pos_axis, tgt, src.index_select(pos_axis, srci))
    else:
        act.index_copy_(pos_axis, tgt, src.index_select(pos_axis, srci))


def write_at_positions(
    act: Tensor,
    positions: Int[Tensor, " batch"],
    value: Tensor | Callable[[Tensor, Tensor], Tensor],
    *,
    index: int | None = None,
) -> Tensor:
    """A copy of `act` (`[batch, pos, ...]`) with each row b's entry at position `positions[b]` replaced: the
    whole vector, or with `index` only entry `index` of the axis after the position (a head of `hook_z`, a
    feature of an SAE's acts). `value` is the new rows (`[batch, ...]`) or a function of the current rows and the
    row indices (`fn(rows, batch_index) -> new rows`), e.g. `lambda x, _b: x + a * u` to steer. The one place
    where patches are written at each row's reward position (`model.reward_positions(mask, tokens)`)."""
    act = act.clone()
    rows = torch.arange(act.shape[0], device=act.device)
    where = (rows, positions.to(act.device)) if index is None else (rows, positions.to(act.device), index)
    new = value(act[where], rows) if callable(value) else value
    act[where] = new.to(act.device, act.dtype)
    return act


def reward_position_hook(
    positions: Int[Tensor, " batch"],
    value: Tensor | Callable[[Tensor, Tensor], Tensor],
    *,
    index: int | None = None,
) -> Callable[[Tensor, HookPoint], Tensor]:
    """A forward hook that applies `write_at_positions(act, positions, value, index=index)`: patch (or steer) the
    activation at each row's reward position, whatever the padding."""

    def hook(act: Tensor, hook: HookPoint) -> Tensor:
        return write_at_positions(act, positions, value, index=index)

    return hook


def _check_hook_alignment(hooks: Iterable[str], align: Alignment) -> None:
    if align.kind != "position" and any(is_pattern(h) for h in hooks):
        raise InputError(
            "Attention patterns can only be patched between sequences of equal length (the key axis cannot be "
            "aligned); patch hook_z / hook_q / hook_k / hook_v instead, or use an equal-length pair."
        )


def run_patched(
    model: HookedRewardModel,
    target: Int[Tensor, " pos"],
    sources: Mapping[str, Tensor],
    patch_sets: Sequence[Sequence[Patch]],
    align: Alignment,
    *,
    spec: PatchSpec | None = None,
    desc: str = "patching",
    extra_hooks: Sequence[tuple[str, Callable]] = (),
    **options: Any,
) -> Float[Tensor, " n_patches"]:
    """The reward of the target run under each set of patches: `[len(patch_sets)]`.

    `sources[hook]` is the source activation for that hook without a batch axis (`[pos, ...]`, the source's
    own length). The target row is stacked `max_rows` times along the batch axis; row i gets `patch_sets[i]`
    (all its patches at once). `extra_hooks` are applied to every row (e.g. freezing, for path patching).
    `output`, `max_rows`, `progress`: the `PatchSpec` fields (`spec=` or keywords).
    """
    spec = patch_spec(spec, options, fn="run_patched")
    output, max_rows, progress = spec.output, spec.max_rows, spec.progress
    _check_hook_alignment({p.hook for ps in patch_sets for p in ps}, align)
    if max_rows < 1:
        raise InputError(f"max_rows must be >= 1, got {max_rows}.")
    out: list[Tensor] = []
    starts = range(0, len(patch_sets), max_rows)
    bar = tqdm(starts, desc=desc, disable=not progress or len(starts) <= 1, leave=False)
    for start in bar:
        chunk = patch_sets[start : start + max_rows]
        by_hook: dict[str, list[tuple[int, Patch]]] = defaultdict(list)
        for row, patches in enumerate(chunk):
            for patch in patches:
                by_hook[patch.hook].append((row, patch))

        def make_hook(name: str, items: list[tuple[int, Patch]]) -> Callable:
            src = sources[name]

            def hook(act: Tensor, hook: HookPoint) -> Tensor:
                act = act.clone()
                source = src.to(act.device, act.dtype)
                for row, patch in items:
                    _patch_views(act[row], source, patch, align)
                return act

            return hook

        hooks: FwdHooks = [*extra_hooks, *((name, make_hook(name, items)) for name, items in by_hook.items())]
        tokens = target[None].expand(len(chunk), -1)
        with torch.no_grad():
            rewards = model.run_with_hooks(tokens, fwd_hooks=hooks)
        out.append(select_output(rewards, output, names=model.output_names).detach().float().cpu())
    return torch.cat(out) if out else torch.zeros(0)


# ---------------------------------------------------------------------------------------------------- results
@dataclass(repr=False)
class PatchingResult(LabeledTensor):
    """Patched rewards over a grid of patch sites (a `LabeledTensor`).

    `values` is the reward change against the unpatched run of the patched input (`rewards − r_target`),
    with named `dims` (e.g. `("layer", "pos")`) and `labels` per dim; NaN where a site had no aligned
    counterpart. `fraction` is `(rewards − r_corrupt) / (r_clean − r_corrupt)` (see the module docstring for
    its reading per mode). `axes` is the old name of `dims`.
    """

    rewards: Tensor = field(default_factory=lambda: torch.empty(0))
    mode: str = ""
    site: str = ""
    r_clean: float = math.nan
    r_corrupt: float = math.nan
    r_target: float = math.nan
    value_name: str = "Δ reward"

    @property
    def axes(self) -> tuple[str, ...]:
        """The axis names (same as `dims`)."""
        return self.dims

    @property
    def fraction(self) -> Tensor:
        """Normalised reward on the corrupt → clean scale (NaN when no corrupted reference exists)."""
        gap = self.r_clean - self.r_corrupt
        if not math.isfinite(gap) or gap == 0:
            return torch.full_like(self.rewards, math.nan)
        return (self.rewards - self.r_corrupt) / gap

    def _json_extra(self) -> dict[str, Any]:
        return {"fraction": self.fraction}

    def to_frame(self) -> Any:
        """Long-form `pandas.DataFrame`: one row per site, the axes' labels, reward, change and fraction."""
        import itertools

        pd = require_pandas()
        rows = []
        frac = self.fraction
        labels = [self.axis_labels(d) for d in self.dims]
        for idx in itertools.product(*[range(n) for n in self.values.shape]):
            row = {axis: labels[a][i] for a, (axis, i) in enumerate(zip(self.dims, idx, strict=True))}
            row.update(
                reward=float(self.rewards[idx]),
                change=float(self.values[idx]),
                fraction=float(frac[idx]),
                mode=self.mode,
            )
            rows.append(row)
        return pd.DataFrame(rows)

    def plot(self, ax: Axes | None = None, what: str = "values", title: str | None = None) -> Any:
        """Heatmap (2-D and 3-D grids; 3-D folds the first two axes) or bar chart (1-D) of `values` or
        `fraction`, drawn on `ax` (a new figure's when None). Returns the matplotlib Axes."""
        plt = require_pyplot()
        data = (self.fraction if what == "fraction" else self.values).detach().float()
        if ax is None:
            _, ax = plt.subplots(figsize=(max(4.0, 0.35 * data.shape[-1] + 2), 3.5) if data.ndim > 1 else (6, 3))
        title = title or f"{self.mode} patching: {self.site} ({'fraction' if what == 'fraction' else 'Δ reward'})"
        labels = [[str(x) for x in self.axis_labels(d)] for d in self.dims]
        if data.ndim == 1:
            ax.bar(range(len(data)), data.numpy())
            ax.set_xticks(range(len(data)), labels[0], rotation=90, fontsize=7)
            ax.set_ylabel("fraction" if what == "fraction" else "Δ reward")
        else:
            rows_labels = labels[0]
            if data.ndim == 3:
                rows_labels = [f"{a}.{b}" for a in labels[0] for b in labels[1]]
                data = data.reshape(-1, data.shape[-1])
            lim = float(data.nan_to_num().abs().max()) or 1.0
            im = ax.imshow(data.numpy(), cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
            ax.set_yticks(range(len(rows_labels)), rows_labels, fontsize=7)
            ax.set_xticks(range(data.shape[-1]), labels[-1], rotation=90, fontsize=7)
            ax.set_xlabel(self.dims[-1])
            ax.set_ylabel(".".join(self.dims[:-1]))
            ax.figure.colorbar(im, ax=ax)
        ax.set_title(title, fontsize=9)
        return ax


# ---------------------------------------------------------------------------------------------------- setup
@dataclass
class _Setup:
    """The runs of one patching experiment: target row, source activations per reference, rewards."""

    target: Tensor
    sources: list[dict[str, Tensor]]
    aligns: list[Alignment]
    r_clean: float
    r_corrupt: float
    r_target: float
    target_acts: dict[str, Tensor]


def _reward_of(model: HookedRewardModel, row: Tensor, output: int | str | None) -> float:
    with torch.no_grad():
        return float(select_output(model(row[None]), output, names=model.output_names)[0])


def _cache_row(
    model: HookedRewardModel, row: Tensor, hooks: Sequence[str], output: int | str | None = None
) -> tuple[float, dict[str, Tensor]]:
    """`(reward, {hook: activation [pos, ...]})` of one unpadded row."""
    with torch.no_grad():
        rewards, cache = model.run_with_cache(row[None], names_filter=list(hooks))
    return float(select_output(rewards, output, names=model.output_names)[0]), {h: cache[h][0] for h in hooks}


def _ablation_source(
    model: HookedRewardModel, hook: str, mode: str, target_act: Tensor, reference: Sequence[Tensor]
) -> Tensor:
    if mode == "zero":
        return torch.zeros_like(target_act)
    # mean over the reference rows and their (attended, unpadded) positions: one vector per component
    if is_pattern(hook):
        raise InputError("Mean-ablating attention patterns is not defined (rows differ in length); use zero/resample.")
    pos_axis, _ = hook_axes(hook)
    acts = [_cache_row(model, r, [hook])[1][hook] for r in reference]
    mean = torch.cat([a.movedim(pos_axis - 1, 0) for a in acts]).mean(0)
    return mean.unsqueeze(pos_axis - 1).expand_as(target_act).contiguous()


def _setup(
    model: HookedRewardModel, clean: Input, corrupt: Input | None, hooks: Sequence[str], spec: PatchSpec
) -> _Setup:
    """The target row, the source activations (one dict per source run) and the reference rewards of `spec`."""
    mode, reference, align, prompt_len, output = spec.mode, spec.reference, spec.align, spec.prompt_len, spec.output
    clean_row = as_row(model, clean)
    corrupt_row = None if corrupt is None else as_row(model, corrupt)
    hooks = list(dict.fromkeys(hooks))
    reference_rows: list[Tensor] = []
    if mode in ("denoise", "noise"):
        if corrupt_row is None:
            raise InputError(f"mode={mode!r} needs a corrupted input.")
        target, source_rows = (corrupt_row, [clean_row]) if mode == "denoise" else (clean_row, [corrupt_row])
    else:
        target = clean_row
        source_rows = []
        if mode in ("mean", "resample"):
            if not reference:
                raise InputError(f"mode={mode!r} needs reference=[inputs] (the reference set).")
            reference_rows = [as_row(model, r) for r in reference]
            if mode == "resample":
                source_rows = list(reference_rows)
    r_target, target_acts = _cache_row(model, target, hooks, output)
    if mode in ("zero", "mean"):
        sources = [{h: _ablation_source(model, h, mode, target_acts[h], reference_rows) for h in hooks}]
        aligns = [align_pair(len(target), len(target))]
    else:
        aligns = [reward_alignment(model, target, row, align, prompt_len) for row in source_rows]
        runs = [_cache_row(model, row, hooks, output) for row in source_rows]
        sources = [acts for _, acts in runs]
    if mode == "denoise":
        r_clean, r_corrupt = runs[0][0], r_target
    elif mode == "noise":
        r_clean, r_corrupt = r_target, runs[0][0]
    else:
        r_clean = r_target
        r_corrupt = math.nan if corrupt_row is None else _reward_of(model, corrupt_row, output)
    return _Setup(target, sources, aligns, r_clean, r_corrupt, r_target, target_acts)


def _run_sites(
    model: HookedRewardModel, setup: _Setup, sites: Sequence[Sequence[Patch] | None], spec: PatchSpec, desc: str
) -> Tensor:
    """Rewards for each site (None: a site with no aligned counterpart → NaN), averaged over sources."""
    live = [(i, s) for i, s in enumerate(sites) if s is not None]
    rows = [i for i, _ in live]
    total = torch.zeros(len(sites))
    for source, align in zip(setup.sources, setup.aligns, strict=True):
        ok = [i for i, s in live if all(p.positions is None or all(align.has(q) for q in p.positions) for p in s)]
        if len(ok) != len(live):
            raise InputError("A resample reference leaves some sites unaligned; use references of the target's length.")
        r = run_patched(model, setup.target, source, [s for _, s in live], align, spec=spec, desc=desc)
        total[rows] += r
    total /= len(setup.sources)
    dead = [i for i, s in enumerate(sites) if s is None]
    total[dead] = math.nan
    return total


def _result(
    setup: _Setup,
    rewards: Tensor,
    shape: tuple[int, ...],
    axes: tuple[str, ...],
    labels: Sequence[Sequence[str]],
    mode: str,
    site: str,
) -> PatchingResult:
    rewards = rewards.reshape(shape)
    return PatchingResult(
        values=rewards - setup.r_target,
        rewards=rewards,
        dims=axes,
        labels={axis: list(names) for axis, names in zip(axes, labels, strict=True)},
        mode=mode,
        site=site,
        r_clean=setup.r_clean,
        r_corrupt=setup.r_corrupt,
        r_target=setup.r_target,
        meta={"target_len": len(setup.target)},
    )


def position_labels(model: HookedRewardModel, row: Tensor) -> list[str]:
    """`"i:token"` for each position of a row (the token as text, `lens.token_strings`, when the model has a
    tokenizer)."""
    if getattr(model, "tokenizer", None) is None:
        return [str(i) for i in range(len(row))]
    try:
        strs = token_strings(model, row)
    except Exception:  # noqa: BLE001 — labels are cosmetic
        return [str(i) for i in range(len(row))]
    return [f"{i}:{s}" for i, s in enumerate(strs)]


# ---------------------------------------------------------------------------------------------------- sweeps
def patch_hooks(
    model: HookedRewardModel,
    clean: Input,
    corrupt: Input | None = None,
    sites: Mapping[str, Patch | Sequence[Patch]] | None = None,
    *,
    spec: PatchSpec | None = None,
    **options: Any,
) -> PatchingResult:
    """Patch arbitrary named sites: `sites = {label: Patch or [Patch, ...]}` (a list is patched together).

    Returns a 1-D result over `("site",)` in the order of `sites`. The patching options (`mode`, `reference`,
    `align`, `prompt_len`, `output`, `max_rows`, `progress`) are `PatchSpec`'s, as `spec=` or keywords.
    """
    spec = patch_spec(spec, options, fn="patch_hooks")
    if not sites:
        raise InputError("sites is empty: pass {label: Patch(hook, positions, head)}.")
    sets = [[s] if isinstance(s, Patch) else list(s) for s in sites.values()]
    hooks = [p.hook for ps in sets for p in ps]
    setup = _setup(model, clean, corrupt, hooks, spec)
    rewards = _run_sites(model, setup, sets, spec, f"{spec.mode} sites")
    return _result(setup, rewards, (len(sets),), ("site",), [list(sites)], spec.mode, "custom sites")


def _layers(model: HookedRewardModel, layers: Sequence[int] | None) -> list[int]:
    """Layer indices to sweep (negative ones count from the end); out-of-range ones are refused, not wrapped."""
    n = model.cfg.n_layers
    if layers is None:
        return list(range(n))
    bad = [int(layer) for layer in layers if not -n <= int(layer) < n]
    if bad:
        raise InputError(f"layers {bad} are out of range for a model with {n} layers (valid: {-n}..{n - 1}).")
    return [int(layer) % n for layer in layers]


def patch_resid(
    model: HookedRewardModel,
    clean: Input,
    corrupt: Input | None = None,
    *,
    hook: str = "resid_pre",
    layers: Sequence[int] | None = None,
    fast: bool | None = None,
    spec: PatchSpec | None = None,
    **options: Any,
) -> PatchingResult:
    """Residual-stream sweep over layer × position: `values [n_layers, target_len]`.

    `hook` is ``"resid_pre"``, ``"resid_mid"`` or ``"resid_post"`` (`blocks.{l}.hook_{hook}`). Each site
    patches one position of one layer. Positions with no aligned counterpart are NaN.

    The fast sweep (every mode, `resid_pre` and `resid_post`) runs each patched run only from the patched block
    on and only over positions from the patched one on, attending to the unpatched run's keys/values before it
    (see `hooked_reward.analysis.patching_fast`): about a quarter of the plain sweep's compute, equal to it to
    float tolerance, but with a Python call per block and position. `fast=None` (the default) uses it where it
    is the faster of the two (`patching_fast.fast_sweep_pays`: n_layers x positions x d_model of at least
    `FAST_SWEEP_MIN_WORK`, measured), `fast=True` wherever it applies, `fast=False` never. Where it does not
    apply (`resid_mid`, non-causal attention, a block argument it cannot slice, a failed self-check) the plain
    sweep runs; `result.meta["fast"]` says which ran and `meta["fast_reason"]` why not. User hooks active
    around the call fire on the suffix only in the fast path: use `fast=False` to combine the sweep with other
    hooks. The patching options (`mode`, `reference`, `align`, `prompt_len`, `output`, `max_rows`, `progress`) are
    `PatchSpec`'s, as `spec=` or keywords.
    """
    spec = patch_spec(spec, options, fn="patch_resid")
    mode = spec.mode
    if hook not in ("resid_pre", "resid_mid", "resid_post"):
        raise InputError(f"hook must be 'resid_pre', 'resid_mid' or 'resid_post', got {hook!r}.")
    layer_list = _layers(model, layers)
    names = [act_name(hook, layer) for layer in layer_list]
    setup = _setup(model, clean, corrupt, names, spec)
    n_pos = len(setup.target)
    sites: list[list[Patch] | None] = []
    for name in names:
        for p in range(n_pos):
            aligned = all(a.has(p) for a in setup.aligns)
            sites.append([Patch(name, (p,))] if aligned else None)
    rewards, reason = None, "fast=False"
    if fast is None:
        fast, reason = _fast_pays(model, n_pos)
    if fast:
        rewards, reason = _fast_resid(model, setup, hook, layer_list, sites, spec)
    if rewards is None:
        rewards = _run_sites(model, setup, sites, spec, f"{mode} {hook}")
    result = _result(
        setup,
        rewards,
        (len(layer_list), n_pos),
        ("layer", "pos"),
        [[str(layer) for layer in layer_list], position_labels(model, setup.target)],
        mode,
        act_name(hook, "*"),
    )
    result.meta.update(fast=reason == "", fast_reason=reason)
    return result


def _fast_pays(model: HookedRewardModel, n_pos: int) -> tuple[bool, str]:
    """`(True, "")` when the fast sweep is the faster one for this model and length, else `(False, why)`."""
    from hooked_reward.analysis import patching_fast as pf

    n_layers, d_model = model.cfg.n_layers, model.cfg.d_model
    if pf.fast_sweep_pays(n_pos, n_layers, d_model):
        return True, ""
    work = n_layers * n_pos * d_model
    return False, (
        f"the plain sweep is faster at this size (n_layers x positions x d_model = {n_layers} x {n_pos} x "
        f"{d_model} = {work:,} < {pf.FAST_SWEEP_MIN_WORK:,}); pass fast=True to use the fast sweep anyway"
    )


def _fast_resid(
    model: HookedRewardModel,
    setup: _Setup,
    hook: str,
    layer_list: list[int],
    sites: Sequence[Sequence[Patch] | None],
    spec: PatchSpec,
) -> tuple[Tensor | None, str]:
    """`(rewards, "")` from the fast sweep, or `(None, reason)` when it does not apply."""
    from hooked_reward.analysis import patching_fast as pf

    output, max_rows, progress, mode = spec.output, spec.max_rows, spec.progress, spec.mode
    if hook not in pf.FAST_HOOKS:
        return None, f"{hook} lies inside a block (only resid_pre / resid_post are fast)"
    if max_rows < 1:
        raise InputError(f"max_rows must be >= 1, got {max_rows}.")
    plan, reason = pf.plan_fast_sweep(model, setup.target)
    if plan is None:
        return None, reason
    reason = pf.self_check(plan, output)
    if reason:
        pf.warn_fallback(reason)
        return None, reason
    n_pos = len(setup.target)
    total = torch.zeros(len(sites))
    for source, align in zip(setup.sources, setup.aligns, strict=True):
        fast_sites: list[tuple[int, int, Tensor] | None] = []
        for i, site in enumerate(sites):
            if site is None:
                fast_sites.append(None)
                continue
            positions = site[0].positions
            assert positions is not None  # resid sweep sites patch one position each
            layer, p = layer_list[i // n_pos], positions[0]
            start = layer if hook == "resid_pre" else layer + 1
            fast_sites.append((start, p, source[site[0].hook][p - align.offset]))
        total += pf.fast_resid_rewards(
            plan, fast_sites, output=output, max_rows=max_rows, progress=progress, desc=f"{mode} {hook} (fast)"
        )
    return total / len(setup.sources), ""


def patch_block_outputs(
    model: HookedRewardModel,
    clean: Input,
    corrupt: Input | None = None,
    *,
    per_position: bool = False,
    layers: Sequence[int] | None = None,
    spec: PatchSpec | None = None,
    **options: Any,
) -> PatchingResult:
    """Attention and MLP outputs (`hook_attn_out`, `hook_mlp_out`) per layer: `values [2 * n_layers]` over
    components ``{l}_attn_out``, ``{l}_mlp_out`` (`names.Component`s; all aligned positions patched at once),
    or `[2 * n_layers, pos]` with
    `per_position=True`. The component order matches `cache.decompose_resid()` without the embeddings. The
    patching options are `PatchSpec`'s, as `spec=` or keywords."""
    spec = patch_spec(spec, options, fn="patch_block_outputs")
    layer_list = _layers(model, layers)
    comps = [(c, c.hook_name) for c in block_components(model, layer_list)]
    setup = _setup(model, clean, corrupt, [h for _, h in comps], spec)
    n_pos = len(setup.target)
    sites: list[list[Patch] | None]
    shape: tuple[int, ...]
    axes: tuple[str, ...]
    labels: Sequence[Sequence[str]]
    if per_position:
        sites = [
            [Patch(h, (p,))] if all(a.has(p) for a in setup.aligns) else None for _, h in comps for p in range(n_pos)
        ]
        shape, axes = (len(comps), n_pos), ("component", "pos")
        labels = [[c for c, _ in comps], position_labels(model, setup.target)]
    else:
        sites = [[Patch(h)] for _, h in comps]
        shape, axes, labels = (len(comps),), ("component",), [[c for c, _ in comps]]
    rewards = _run_sites(model, setup, sites, spec, f"{spec.mode} attn/mlp")
    return _result(setup, rewards, shape, axes, labels, spec.mode, "hook_attn_out / hook_mlp_out")


def patch_heads(
    model: HookedRewardModel,
    clean: Input,
    corrupt: Input | None = None,
    *,
    act: str = "z",
    per_position: bool = False,
    layers: Sequence[int] | None = None,
    spec: PatchSpec | None = None,
    **options: Any,
) -> PatchingResult:
    """Per-head patching of `blocks.{l}.attn.hook_{act}` (act in z, q, k, v, pattern).

    `values [n_layers, n_heads]` (all aligned positions of the head at once), or `[n_layers, n_heads, pos]`
    with `per_position=True` (for patterns, the position is the query/destination row). With grouped-query
    attention, k and v have `n_key_value_heads` heads. Patterns need an equal-length pair. The patching options
    are `PatchSpec`'s, as `spec=` or keywords.
    """
    spec = patch_spec(spec, options, fn="patch_heads")
    if act not in HEAD_ACTS:
        raise InputError(f"act must be one of {HEAD_ACTS}, got {act!r}.")
    layer_list = _layers(model, layers)
    names = [act_name(act, layer) for layer in layer_list]
    setup = _setup(model, clean, corrupt, names, spec)
    _, head_axis = hook_axes(names[0])
    assert head_axis is not None  # every HEAD_ACTS hook has a head axis
    n_heads = setup.target_acts[names[0]].shape[head_axis - 1]
    n_pos = len(setup.target)
    sites: list[list[Patch] | None]
    shape: tuple[int, ...]
    axes: tuple[str, ...]
    labels: Sequence[Sequence[str]]
    if per_position:
        sites = [
            [Patch(n, (p,), h)] if all(a.has(p) for a in setup.aligns) else None
            for n in names
            for h in range(n_heads)
            for p in range(n_pos)
        ]
        shape, axes = (len(names), n_heads, n_pos), ("layer", "head", "pos")
        labels = [[str(l) for l in layer_list], [str(h) for h in range(n_heads)], position_labels(model, setup.target)]  # noqa: E741
    else:
        sites = [[Patch(n, None, h)] for n in names for h in range(n_heads)]
        shape, axes = (len(names), n_heads), ("layer", "head")
        labels = [[str(l) for l in layer_list], [str(h) for h in range(n_heads)]]  # noqa: E741
    rewards = _run_sites(model, setup, sites, spec, f"{spec.mode} heads {act}")
    return _result(setup, rewards, shape, axes, labels, spec.mode, act_name(act, "*"))
