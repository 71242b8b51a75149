"""Splice sparse autoencoders into a ``HookedRewardModel`` at their hook points.

While spliced, the activation at ``sae.cfg.hook_name`` is replaced by the SAE's output, and the SAE's own
hook points are addressable on the model (``run_with_hooks``, ``run_with_cache``, ``model.hook_dict``) as
``{hook_name}.{sae hook}``::

    blocks.1.hook_resid_post.hook_sae_input     [batch, pos, d_in]   the original activation
    blocks.1.hook_resid_post.hook_sae_acts_pre  [batch, pos, d_sae]
    blocks.1.hook_resid_post.hook_sae_acts      [batch, pos, d_sae]  edit to ablate / patch features
    blocks.1.hook_resid_post.hook_sae_recons    [batch, pos, d_in]
    blocks.1.hook_resid_post.hook_sae_error     [batch, pos, d_in]   input - clean reconstruction
    blocks.1.hook_resid_post.hook_sae_output    [batch, pos, d_in]   what the model continues with

(the same names SAE-Lens's ``HookedSAETransformer`` uses, with ``hook_sae_acts`` for its
``hook_sae_acts_post``). The model's own hook point ``blocks.1.hook_resid_post`` then carries the SAE's
output (hooks on it run after the splice).

With ``use_error_term=True`` (the default) the SAE output is ``recons + (input - clean recons)`` = the input,
so rewards are unchanged (tested to 1e-4) while the features are exposed for editing; with
``use_error_term=False`` the model runs on the reconstruction and :func:`splice_report` says how much that
moves the reward.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float
from torch import Tensor

from hooked_reward.analysis.results import LabeledTensor
from hooked_reward.errors import InputError
from hooked_reward.hook_registry import add_hook_points, remove_hook_points
from hooked_reward.outputs import select_output
from hooked_reward.sae.autoencoder import SparseAutoencoder

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from transformer_lens.hook_points import HookPoint

    from hooked_reward.model import HookedRewardModel

_D_MODEL_HOOK = re.compile(
    r"^(blocks\.\d+\.hook_(resid_pre|resid_mid|resid_post|attn_out|mlp_out)|hook_embed|hook_pos_embed|"
    r"hook_reward_resid|ln_final\.hook_(in|out|normalized))$"
)
_D_MLP_HOOK = re.compile(r"^blocks\.\d+\.mlp\.hook_(pre|post)$")


#: The hook points an SAE is spliced into now (one SAE per hook point).
_SPLICED: weakref.WeakSet[HookPoint] = weakref.WeakSet()


def expected_width(model: HookedRewardModel, hook_name: str) -> int | None:
    """The activation width at ``hook_name`` when it is known from the config (d_model / d_mlp), else None."""
    if _D_MODEL_HOOK.match(hook_name):
        return int(model.cfg.d_model)
    d_mlp = getattr(model.cfg, "d_mlp", None)
    if _D_MLP_HOOK.match(hook_name) and d_mlp:
        return int(d_mlp)
    return None


def check_sae_fits_model(model: HookedRewardModel, sae: SparseAutoencoder, hook_name: str | None = None) -> str:
    """Raise ``ValueError`` unless the SAE's hook exists on ``model`` and its ``d_in`` matches the width there.

    Returns the hook name used.
    """
    name = hook_name or sae.cfg.hook_name
    if name is None:
        raise InputError("The SAE has no hook_name; set sae.cfg.hook_name or pass hook_name=.")
    hooks = model.hook_dict
    if name not in hooks:
        close = [n for n in hooks if n.split(".")[-1] == name.split(".")[-1]][:6]
        raise InputError(
            f"The SAE's hook {name!r} does not exist on this model"
            + (f"; hook points with the same suffix: {close}" if close else "")
            + f" ({model.cfg.n_layers} layers)."
        )
    width = expected_width(model, name)
    if width is not None and width != sae.cfg.d_in:
        raise InputError(
            f"SAE width d_in={sae.cfg.d_in} does not match the model's width {width} at {name!r} "
            f"(d_model={model.cfg.d_model}); this SAE was made for another model or hook."
        )
    return name


@dataclass
class _Splice:
    sae: SparseAutoencoder
    hook_name: str
    hook_point: Any
    handle: Any
    registered: list[str]
    old_error: bool


@contextmanager
def splice_sae(
    model: HookedRewardModel,
    saes: SparseAutoencoder | Sequence[SparseAutoencoder],
    *,
    use_error_term: bool = True,
) -> Iterator[Any]:
    """Context manager: run ``model`` with ``saes`` spliced in at their ``cfg.hook_name``; yields the model.

    Each SAE's hook points are registered on the model as ``{hook_name}.hook_sae_*`` for the duration and
    removed afterwards (as are the splice hooks, even on error). ``model.reset_hooks()`` inside the block
    does not remove the splice. One SAE per hook point.
    """
    sae_list = [saes] if isinstance(saes, SparseAutoencoder) else list(saes)
    names = [check_sae_fits_model(model, s) for s in sae_list]
    if len(set(names)) != len(names):
        raise InputError(f"Two SAEs share a hook point: {names}.")
    splices: list[_Splice] = []
    try:
        for sae, name in zip(sae_list, names, strict=True):
            hp = model.hook_dict[name]
            if hp in _SPLICED:
                raise InputError(f"An SAE is already spliced at {name!r}.")
            sae._set_hook_names(name)
            extra = {hp_.name: hp_ for hp_ in sae.hook_dict.values() if hp_.name is not None}  # named just above

            def splice_fn(tensor: Tensor, hook: HookPoint, _sae: SparseAutoencoder = sae, _name: str = name) -> Tensor:
                if tensor.shape[-1] != _sae.cfg.d_in:
                    raise InputError(
                        f"Activation at {_name!r} has width {tensor.shape[-1]}, the SAE expects {_sae.cfg.d_in}."
                    )
                return _sae(tensor)

            old_error = sae.use_error_term
            sae.use_error_term = use_error_term
            handle = hp.add_hook(splice_fn, dir="fwd", is_permanent=True)
            _SPLICED.add(hp)
            splices.append(_Splice(sae, name, hp, handle, list(extra), old_error))
            add_hook_points(model, extra)
        yield model
    finally:
        for s in reversed(splices):
            s.handle.hook.remove()
            s.hook_point.fwd_hooks = [h for h in s.hook_point.fwd_hooks if h is not s.handle]
            _SPLICED.discard(s.hook_point)
            remove_hook_points(model, s.registered)
            s.sae.use_error_term = s.old_error
            s.sae._set_hook_names("")


def run_with_sae(
    model: HookedRewardModel,
    inputs: Sequence[str] | Tensor,
    saes: SparseAutoencoder | Sequence[SparseAutoencoder],
    *,
    attention_mask: Tensor | None = None,
    use_error_term: bool = True,
    fwd_hooks: Sequence[tuple[Any, Any]] = (),
) -> Tensor:
    """Rewards ``[batch]`` (or ``[batch, n_outputs]``) with ``saes`` spliced in, plus optional ``fwd_hooks``

    (which may name the SAE hook points, e.g. ``("blocks.1.hook_resid_post.hook_sae_acts", fn)``).
    """
    tokens, mask = model.prepare(inputs, attention_mask=attention_mask)
    with splice_sae(model, saes, use_error_term=use_error_term):
        return model.run_with_hooks(tokens, attention_mask=mask, fwd_hooks=list(fwd_hooks))


def run_with_cache_with_sae(
    model: HookedRewardModel,
    inputs: Sequence[str] | Tensor,
    saes: SparseAutoencoder | Sequence[SparseAutoencoder],
    *,
    attention_mask: Tensor | None = None,
    use_error_term: bool = True,
    **cache_kwargs: Any,
) -> tuple[Tensor, Any]:
    """``model.run_with_cache`` with ``saes`` spliced in: ``(rewards, cache)``; the cache can hold SAE hooks."""
    tokens, mask = model.prepare(inputs, attention_mask=attention_mask)
    with splice_sae(model, saes, use_error_term=use_error_term):
        return model.run_with_cache(tokens, attention_mask=mask, **cache_kwargs)


SPLICE_RUNS = ("clean", "spliced_with_error", "reconstruction")


@dataclass(repr=False, kw_only=True)
class SpliceReport(LabeledTensor):
    """Rewards without, with (error term kept) and through (reconstruction only) an SAE, per text; a
    `LabeledTensor` with dims ``("text", "run")``.

    ``values``: ``[n, 3]`` = (clean, spliced with error term, reconstruction only); ``labels["text"]``: one per
    text, ``labels["run"]`` = ``columns``.
    ``max_abs_diff_with_error`` should be ~0 (float noise); ``reward_change`` = reconstruction - clean is
    what replacing the activation by its reconstruction does to the reward; ``fvu`` / ``l0`` are measured on
    the activations of these texts at the hook (non-padding tokens).
    """

    hook_name: str
    fvu: float
    l0: float
    extra: dict[str, Any] = field(default_factory=dict)
    value_name: str = "reward"

    @property
    def columns(self) -> tuple[str, ...]:
        """The runs: clean, spliced with the error term, reconstruction only."""
        return tuple(self.axis_labels("run"))

    @property
    def reward_change(self) -> Float[Tensor, " n"]:
        return self.values[:, 2] - self.values[:, 0]

    @property
    def max_abs_diff_with_error(self) -> float:
        return float((self.values[:, 1] - self.values[:, 0]).abs().max())

    def to_frame(self) -> Any:
        pd = _require_pandas()
        df = pd.DataFrame(self.values.numpy(), columns=list(self.columns))
        df.insert(0, "label", self.axis_labels("text"))
        df["reward_change"] = self.reward_change.numpy()
        return df

    def plot(self, ax: Axes | None = None) -> Any:
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(4.5, 4))
        v = self.values.numpy()
        ax.scatter(v[:, 0], v[:, 2], s=12, label="reconstruction only")
        ax.scatter(v[:, 0], v[:, 1], s=6, marker="x", label="with error term")
        lo, hi = float(v.min()), float(v.max())
        ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8)
        ax.set_xlabel("clean reward")
        ax.set_ylabel("reward with SAE spliced")
        ax.set_title(f"SAE at {self.hook_name}: FVU {self.fvu:.3f}, L0 {self.l0:.1f}")
        ax.legend()
        return ax


def _require_pandas() -> Any:
    try:
        import pandas as pd
    except ImportError as e:  # pragma: no cover - exercised only without pandas
        raise ImportError("to_frame() needs pandas: pip install pandas (or hooked_reward[test]).") from e
    return pd


def _label_texts(inputs: Sequence[str] | Tensor, n: int) -> list[str]:
    if isinstance(inputs, Tensor):
        return [f"item {i}" for i in range(n)]
    if isinstance(inputs, str):
        inputs = [inputs]
    return [t if len(t) <= 60 else t[:57] + "..." for t in inputs]


def splice_report(
    model: HookedRewardModel,
    sae: SparseAutoencoder,
    inputs: Sequence[str] | Tensor,
    *,
    attention_mask: Tensor | None = None,
    output: int | str | None = None,
) -> SpliceReport:
    """Compare rewards clean / spliced with error term / spliced without it, on ``inputs``."""
    tokens, mask = model.prepare(inputs, attention_mask=attention_mask)
    name = check_sae_fits_model(model, sae)
    with torch.no_grad():
        clean, cache = model.run_with_cache(tokens, attention_mask=mask, names_filter=[name])
        with splice_sae(model, sae, use_error_term=True):
            with_err = model(tokens, attention_mask=mask)
        with splice_sae(model, sae, use_error_term=False):
            recon = model(tokens, attention_mask=mask)
    act = cache[name]
    rows = act[mask.to(act.device).bool()] if act.dim() == 3 else act
    stats = sae.reconstruction_stats(rows)
    values = torch.stack(
        [select_output(r.detach(), output, names=model.output_names).float().cpu() for r in (clean, with_err, recon)],
        dim=-1,
    )
    return SpliceReport(
        values=values,
        dims=("text", "run"),
        labels={"text": _label_texts(inputs, values.shape[0]), "run": list(SPLICE_RUNS)},
        hook_name=name,
        fvu=stats["fvu"],
        l0=stats["l0"],
        extra={"mse": stats["mse"]},
    )
