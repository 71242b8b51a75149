"""The sparse autoencoder module: one class for standard (ReLU), TopK, JumpReLU and group-max SAEs.

Conventions (the SAE-Lens ones, whichever format the weights came from):

- ``W_enc``: ``[d_in, d_sae]``, ``b_enc``: ``[d_sae]``, ``W_dec``: ``[d_sae, d_in]`` (one *decoder row* per
  feature), ``b_dec``: ``[d_in]``, ``threshold``: ``[d_sae]`` (JumpReLU only), ``W_skip``: ``[d_in, d_in]``
  (optional linear skip connection of sparsify SAEs, ``out += x @ W_skip.T``).
- encode: ``pre = (x_n - b_dec * apply_b_dec_to_input) @ W_enc + b_enc`` where ``x_n`` is the (optionally
  run-time normalised) input; then the activation function of ``architecture``.
- decode: ``recons = acts @ W_dec + b_dec``, un-normalised back to the input's scale.

Hook points (TransformerLens ``HookPoint``s, so an SAE can be hooked on its own with ``run_with_hooks``
and, once spliced into a model, under ``{hook_name}.{hook point}``, e.g.
``blocks.1.hook_resid_post.hook_sae_acts``; see :mod:`hooked_reward.sae.splice`):

=========================  ==================  ===================================================
hook point                 shape               what
=========================  ==================  ===================================================
``hook_sae_input``         ``[..., d_in]``     the activation the SAE reads (after dtype cast)
``hook_sae_acts_pre``      ``[..., d_sae]``    encoder pre-activations
``hook_sae_acts``          ``[..., d_sae]``    feature activations (edit these to ablate/patch)
``hook_sae_recons``        ``[..., d_in]``     reconstruction decoded from (possibly edited) acts
``hook_sae_error``         ``[..., d_in]``     ``input - clean reconstruction`` (always clean)
``hook_sae_output``        ``[..., d_in]``     what goes back into the model
=========================  ==================  ===================================================

The error term is computed from the *unedited* feature activations, so with ``use_error_term=True`` the
output equals the input exactly when nothing is edited, and editing feature ``i`` changes the output by
exactly ``(acts_edited - acts)[..., i] * W_dec[i]``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import torch
from jaxtyping import Float
from torch import Tensor, nn
from transformer_lens.hook_points import HookPoint

from hooked_reward.errors import InputError

if TYPE_CHECKING:
    from hooked_reward.sae.train import TrainingLog

Architecture = Literal["standard", "topk", "jumprelu", "groupmax"]
ARCHITECTURES: tuple[str, ...] = ("standard", "topk", "jumprelu", "groupmax")
NORMALIZATIONS: tuple[str, ...] = ("none", "constant_norm_rescale", "layer_norm")


@dataclass
class SAEConfig:
    """Configuration of a :class:`SparseAutoencoder`.

    Attributes:
        architecture: ``"standard"`` (ReLU), ``"topk"`` (keep the k largest pre-activations, then ReLU),
            ``"jumprelu"`` (ReLU gated by ``pre > threshold``) or ``"groupmax"`` (sparsify: the max of each
            of ``k`` equal groups of latents, then ReLU).
        d_in: width of the activation the SAE reads (d_model for residual / attn_out / mlp_out hooks).
        d_sae: number of features.
        k: active features per token for ``topk`` / number of groups for ``groupmax``.
        hook_name: TransformerLens hook name the SAE was trained on (``None`` if unknown).
        apply_b_dec_to_input: subtract ``b_dec`` from the input before encoding (SAE-Lens default True;
            sparsify SAEs always do).
        normalize_activations: run-time input normalisation, ``"none"``, ``"constant_norm_rescale"``
            (scale each input to norm ``sqrt(d_in)``, undo on the output) or ``"layer_norm"`` (centre and
            divide by std, undo on the output). Dataset-level scaling factors are folded into the weights
            at load time (see :func:`hooked_reward.sae.formats.load_sae`).
        dtype: parameter dtype name (``"float32"``...).
        source_format: where the weights came from (``"sae_lens"``, ``"sparsify"``, ``"trained"``).
        metadata: anything else from the source config (kept for saving; not interpreted).
    """

    architecture: Architecture
    d_in: int
    d_sae: int
    k: int | None = None
    hook_name: str | None = None
    apply_b_dec_to_input: bool = True
    normalize_activations: str = "none"
    dtype: str = "float32"
    source_format: str = "trained"
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise InputError(f"Unknown SAE architecture {self.architecture!r}; supported: {', '.join(ARCHITECTURES)}.")
        if self.architecture in ("topk", "groupmax"):
            if self.k is None or int(self.k) < 1:
                raise InputError(f"architecture {self.architecture!r} needs a positive integer k, got {self.k}.")
            if int(self.k) > self.d_sae:
                raise InputError(f"k={self.k} is larger than d_sae={self.d_sae}.")
            if self.architecture == "groupmax" and self.d_sae % int(self.k) != 0:
                raise InputError(f"groupmax needs d_sae ({self.d_sae}) divisible by k ({self.k}).")
            self.k = int(self.k)
        if self.normalize_activations not in NORMALIZATIONS:
            raise InputError(
                f"normalize_activations={self.normalize_activations!r} is not supported at run time; "
                f"supported: {', '.join(NORMALIZATIONS)} (fold a dataset scaling factor into the weights "
                "with load_sae(..., norm_scaling_factor=...))."
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_DTYPES = {
    "float32": torch.float32,
    "float64": torch.float64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "torch.float32": torch.float32,
    "torch.float64": torch.float64,
    "torch.float16": torch.float16,
    "torch.bfloat16": torch.bfloat16,
}


def dtype_from_name(name: str | torch.dtype) -> torch.dtype:
    if isinstance(name, torch.dtype):
        return name
    if name not in _DTYPES:
        raise InputError(f"Unknown dtype {name!r}; expected one of {sorted(set(_DTYPES))}.")
    return _DTYPES[name]


class SparseAutoencoder(nn.Module):
    """A sparse autoencoder with TransformerLens hook points (see the module docstring for the maths).

    Args:
        cfg: the :class:`SAEConfig`.
        use_error_term: if True, :meth:`forward` returns ``recons + (input - clean recons)``, i.e. the input
            itself unless feature activations were edited through ``hook_sae_acts``.
    """

    training_log: TrainingLog  # what `train_sae` recorded (set by it; absent on an SAE loaded from files)

    def __init__(self, cfg: SAEConfig, use_error_term: bool = False) -> None:
        super().__init__()
        self.cfg = cfg
        self.use_error_term = use_error_term
        dtype = dtype_from_name(cfg.dtype)
        d_in, d_sae = cfg.d_in, cfg.d_sae
        self.W_enc = nn.Parameter(torch.zeros(d_in, d_sae, dtype=dtype))
        self.b_enc = nn.Parameter(torch.zeros(d_sae, dtype=dtype))
        self.W_dec = nn.Parameter(torch.zeros(d_sae, d_in, dtype=dtype))
        self.b_dec = nn.Parameter(torch.zeros(d_in, dtype=dtype))
        self.threshold: nn.Parameter | None = (
            nn.Parameter(torch.zeros(d_sae, dtype=dtype)) if cfg.architecture == "jumprelu" else None
        )
        self.W_skip: nn.Parameter | None = None

        self.hook_sae_input = HookPoint()
        self.hook_sae_acts_pre = HookPoint()
        self.hook_sae_acts = HookPoint()
        self.hook_sae_recons = HookPoint()
        self.hook_sae_error = HookPoint()
        self.hook_sae_output = HookPoint()
        self._set_hook_names(prefix="")

    # ------------------------------------------------------------------ hook bookkeeping
    HOOK_POINT_NAMES: tuple[str, ...] = (
        "hook_sae_input",
        "hook_sae_acts_pre",
        "hook_sae_acts",
        "hook_sae_recons",
        "hook_sae_error",
        "hook_sae_output",
    )

    def _set_hook_names(self, prefix: str) -> None:
        """Name the hook points ``{prefix}.{hook}`` (bare ``hook`` when ``prefix`` is empty)."""
        for name in self.HOOK_POINT_NAMES:
            getattr(self, name).name = f"{prefix}.{name}" if prefix else name

    @property
    def hook_dict(self) -> dict[str, HookPoint]:
        """The SAE's hook points under their current names (``{hook_name}.hook_sae_acts`` once spliced)."""
        return {getattr(self, n).name: getattr(self, n) for n in self.HOOK_POINT_NAMES}

    @property
    def dtype(self) -> torch.dtype:
        return self.W_dec.dtype

    @property
    def device(self) -> torch.device:
        return self.W_dec.device

    # ------------------------------------------------------------------ maths
    def _normalize(self, x: Float[Tensor, "... d_in"]) -> tuple[Float[Tensor, "... d_in"], tuple]:
        """Run-time input normalisation; returns the normalised input and what :meth:`_unnormalize` needs."""
        mode = self.cfg.normalize_activations
        if mode == "constant_norm_rescale":
            coeff = math.sqrt(self.cfg.d_in) / x.norm(dim=-1, keepdim=True)
            return x * coeff, (coeff,)
        if mode == "layer_norm":
            mu = x.mean(dim=-1, keepdim=True)
            xc = x - mu
            std = xc.std(dim=-1, keepdim=True)
            return xc / (std + 1e-5), (mu, std)
        return x, ()

    def _unnormalize(self, y: Float[Tensor, "... d_in"], state: tuple) -> Float[Tensor, "... d_in"]:
        mode = self.cfg.normalize_activations
        if mode == "constant_norm_rescale":
            return y / state[0]
        if mode == "layer_norm":
            return y * state[1] + state[0]
        return y

    def _activation(self, pre: Float[Tensor, "... d_sae"]) -> Float[Tensor, "... d_sae"]:
        arch = self.cfg.architecture
        if arch == "standard":
            return torch.relu(pre)
        if arch == "jumprelu":
            assert self.threshold is not None
            return torch.relu(pre) * (pre > self.threshold).to(pre.dtype)
        if arch == "topk":
            # Top-k of the pre-activations, then ReLU. (ReLU-then-top-k, as sparsify does it, gives the
            # same dense vector: the positive entries of the top k are the same either way.)
            top = pre.topk(int(self.cfg.k), dim=-1)  # type: ignore[arg-type]
            return torch.zeros_like(pre).scatter(-1, top.indices, torch.relu(top.values))
        if arch == "groupmax":
            k = int(self.cfg.k)  # type: ignore[arg-type]
            groups = torch.relu(pre).unflatten(-1, (k, self.cfg.d_sae // k))
            vals, idx = groups.max(dim=-1, keepdim=True)
            return torch.zeros_like(groups).scatter(-1, idx, vals).flatten(-2)
        raise InputError(f"Unknown architecture {arch!r}")  # pragma: no cover

    def encode_pre(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_sae"]:
        """Encoder pre-activations ``[..., d_sae]`` (no hooks, no normalisation state kept)."""
        xn, _ = self._normalize(x.to(self.dtype))
        return (xn - self.b_dec * float(self.cfg.apply_b_dec_to_input)) @ self.W_enc + self.b_enc

    def encode(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_sae"]:
        """Feature activations ``[..., d_sae]`` of an input ``[..., d_in]`` (no hooks)."""
        return self._activation(self.encode_pre(x))

    def decode(
        self, acts: Float[Tensor, "... d_sae"], x: Float[Tensor, "... d_in"] | None = None
    ) -> Float[Tensor, "... d_in"]:
        """Reconstruction ``acts @ W_dec + b_dec`` ``[..., d_in]`` (+ skip connection of ``x`` if any).

        ``x`` (the input) is needed only for run-time normalisation and the sparsify skip connection.
        """
        y = acts.to(self.dtype) @ self.W_dec + self.b_dec
        if self.cfg.normalize_activations != "none":
            if x is None:
                raise InputError("decode() of a run-time normalised SAE needs the input x to un-normalise.")
            _, state = self._normalize(x.to(self.dtype))
            y = self._unnormalize(y, state)
        if self.W_skip is not None:
            if x is None:
                raise InputError("decode() of an SAE with a skip connection needs the input x.")
            y = y + x.to(self.dtype) @ self.W_skip.T
        return y

    def forward(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_in"]:
        """Encode, (hook,) decode, optionally add the clean error term back; returns ``[..., d_in]``.

        The output is cast back to the input's dtype.
        """
        in_dtype = x.dtype
        x = self.hook_sae_input(x.to(self.dtype))
        xn, state = self._normalize(x)
        pre = self.hook_sae_acts_pre((xn - self.b_dec * float(self.cfg.apply_b_dec_to_input)) @ self.W_enc + self.b_enc)
        acts_clean = self._activation(pre)

        def _decode(a: Tensor) -> Tensor:
            y = self._unnormalize(a @ self.W_dec + self.b_dec, state)
            if self.W_skip is not None:
                y = y + x @ self.W_skip.T
            return y

        if self.use_error_term:
            # Error from the *clean* activations, before any hook can edit them: a constant w.r.t. edits.
            with torch.no_grad():
                error = x - _decode(acts_clean)
        # A copy goes to the hook, so in-place edits there cannot reach acts_clean or its autograd graph.
        acts = self.hook_sae_acts(acts_clean.clone())
        recons = self.hook_sae_recons(_decode(acts))
        out = recons + self.hook_sae_error(error) if self.use_error_term else recons
        return self.hook_sae_output(out).to(in_dtype)

    # ------------------------------------------------------------------ helpers
    @torch.no_grad()
    def fold_scaling_factor(self, scaling_factor: float) -> None:
        """Fold a dataset-level input scale ``s`` (the SAE was trained on ``s * x``) into the weights.

        After folding the SAE reads and writes unscaled activations: ``W_enc *= s``, ``W_dec /= s``,
        ``b_dec /= s``; the pre-activations (hence thresholds and feature activations) are unchanged.
        (Only valid without run-time normalisation, which would undo the scale anyway.)
        """
        s = float(scaling_factor)
        self.W_enc.mul_(s)
        self.W_dec.div_(s)
        self.b_dec.div_(s)
        # A skip connection needs no change: (s x) W_skip^T / s = x W_skip^T.

    def reconstruction_stats(self, x: Float[Tensor, "n d_in"]) -> dict[str, float]:
        """Mean squared error, fraction of variance unexplained and mean L0 on a batch ``[n, d_in]``."""
        with torch.no_grad():
            x = x.to(self.dtype)
            acts = self.encode(x)
            recons = self.decode(acts, x)
            mse = (recons - x).pow(2).sum(-1).mean()
            var = (x - x.mean(0)).pow(2).sum(-1).mean()
            return {
                "mse": float(mse),
                "fvu": float(mse / var.clamp_min(1e-12)),
                "l0": float((acts > 0).float().sum(-1).mean()),
            }

    def extra_repr(self) -> str:
        c = self.cfg
        return (
            f"architecture={c.architecture}, d_in={c.d_in}, d_sae={c.d_sae}, k={c.k}, "
            f"hook_name={c.hook_name!r}, source={c.source_format}"
        )
