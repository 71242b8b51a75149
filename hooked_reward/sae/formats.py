"""Load and save sparse autoencoders from local directories in the formats people publish.

Two on-disk formats are read (no third-party SAE library is needed or imported):

**SAE-Lens** (a directory with ``cfg.json`` + ``sae_weights.safetensors``)
    tensors ``W_enc [d_in, d_sae]``, ``b_enc [d_sae]``, ``W_dec [d_sae, d_in]``, ``b_dec [d_in]`` and, for
    ``jumprelu``, ``threshold [d_sae]`` (a training checkpoint's ``log_threshold`` is exponentiated). Config
    fields used: ``architecture`` (``standard`` | ``topk`` | ``jumprelu``; pre-6.0 configs with
    ``activation_fn_str: "topk"`` are TopK), ``d_in``, ``d_sae``, ``k`` (or ``activation_fn_kwargs.k``),
    ``hook_name`` (or pre-6.0 ``hook_point``, or ``metadata.hook_name`` / ``meta.hook_name``),
    ``apply_b_dec_to_input`` (default True), ``normalize_activations`` (``none``, ``constant_norm_rescale``,
    ``layer_norm``; ``expected_average_only_in`` needs the dataset scale, passed as
    ``norm_scaling_factor=``, which is folded into the weights), ``dtype``. An old-style
    ``scaling_factor``/``finetuning_scaling_factor`` tensor is folded into ``W_dec``.

**EleutherAI sparsify** (a directory with ``cfg.json`` + ``sae.safetensors``)
    tensors ``encoder.weight [d_sae, d_in]``, ``encoder.bias [d_sae]``, ``W_dec [d_sae, d_in]``,
    ``b_dec [d_in]`` and optionally ``W_skip [d_in, d_in]``. Config fields: ``k``, ``num_latents`` (0 means
    ``d_in * expansion_factor``), ``expansion_factor``, ``activation`` (``topk`` | ``groupmax``), ``d_in``,
    ``transcode`` (transcoders are refused: their input and output hooks differ). The encoder always
    subtracts ``b_dec`` first. sparsify names hook points by module (``layers.6``); the directory name is
    mapped to a TransformerLens name (``layers.6`` -> ``blocks.6.hook_resid_post``, ``layers.6.mlp`` ->
    ``blocks.6.hook_mlp_out``, ``layers.6.self_attn`` -> ``blocks.6.hook_attn_out``) unless ``hook_name``
    is given.

Anything else (a missing file, an unknown architecture, a tensor of the wrong shape, unexpected tensors,
a width that does not match the model at the hook) raises an error that names the problem.

:func:`save_sae` writes the SAE-Lens format (what SAE-Lens ``SAE.load_from_disk`` reads). :func:`from_sae_lens`
takes an in-memory SAE-Lens SAE (SAE-Lens itself pins transformer-lens < 4, so it cannot be installed beside us).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from safetensors.torch import load_file, save_file

from hooked_reward.names import act_name
from hooked_reward.sae.autoencoder import SAEConfig, SparseAutoencoder, dtype_from_name

if TYPE_CHECKING:
    from hooked_reward.model import HookedRewardModel

SAE_LENS_CFG = "cfg.json"
SAE_LENS_WEIGHTS = "sae_weights.safetensors"
SPARSIFY_WEIGHTS = "sae.safetensors"
SAE_LENS_VERSION_WRITTEN = "6.0.0"


class SAEFormatError(ValueError):
    """The files on disk are not an SAE this module can load (the message says why)."""


# ---------------------------------------------------------------------------------------------- helpers
def _read_cfg(path: Path) -> dict[str, Any]:
    cfg_path = path / SAE_LENS_CFG
    if not cfg_path.is_file():
        raise FileNotFoundError(f"No {SAE_LENS_CFG} in {path} (an SAE directory needs a config and weights).")
    try:
        return json.loads(cfg_path.read_text())
    except json.JSONDecodeError as e:
        raise SAEFormatError(f"{cfg_path} is not valid JSON: {e}") from e


def _check_shape(name: str, t: torch.Tensor, expected: tuple[int, ...], where: Path) -> None:
    if tuple(t.shape) != expected:
        raise SAEFormatError(
            f"{where}: tensor {name!r} has shape {tuple(t.shape)}, expected {expected} from the config."
        )


def _sparsify_hook_name(dirname: str) -> str | None:
    """Map a sparsify hook-point directory name (a module path) to a TransformerLens hook name."""
    m = re.search(r"(?:^|\.)(?:layers|h|blocks)\.(\d+)(?:\.(mlp|self_attn|attn|attention))?$", dirname)
    if m is None:
        return None
    layer, sub = m.group(1), m.group(2)
    if sub is None:
        return act_name("resid_post", layer)
    return act_name("mlp_out", layer) if sub == "mlp" else act_name("attn_out", layer)


def detect_format(path: str | Path) -> Literal["sae_lens", "sparsify"]:
    """Which format a directory holds, from its weight file's name (raises if neither)."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"SAE path {p} does not exist.")
    if not p.is_dir():
        raise SAEFormatError(f"SAE path {p} is a file; pass the directory holding cfg.json and the weights.")
    if (p / SAE_LENS_WEIGHTS).is_file():
        return "sae_lens"
    if (p / SPARSIFY_WEIGHTS).is_file():
        return "sparsify"
    subdirs = sorted(d.name for d in p.iterdir() if d.is_dir() and (d / SAE_LENS_CFG).is_file())
    hint = f" It has SAE subdirectories: {', '.join(subdirs[:8])}; pass one of them." if subdirs else ""
    raise FileNotFoundError(
        f"No SAE weights in {p}: expected {SAE_LENS_WEIGHTS} (SAE-Lens) or {SPARSIFY_WEIGHTS} (sparsify).{hint}"
    )


# ---------------------------------------------------------------------------------------------- loaders
def load_sae_lens(
    path: str | Path,
    *,
    hook_name: str | None = None,
    dtype: str | torch.dtype | None = None,
    device: str | torch.device = "cpu",
    norm_scaling_factor: float | None = None,
) -> SparseAutoencoder:
    """Load an SAE-Lens directory (``cfg.json`` + ``sae_weights.safetensors``); see the module docstring."""
    p = Path(path)
    cfg = _read_cfg(p)
    wpath = p / SAE_LENS_WEIGHTS
    if not wpath.is_file():
        raise FileNotFoundError(f"No {SAE_LENS_WEIGHTS} in {p}.")
    sd = load_file(str(wpath))
    return _sae_lens(cfg, sd, p, wpath, hook_name, dtype, device, norm_scaling_factor)


def from_sae_lens(
    sae: Any,
    *,
    model: HookedRewardModel | None = None,
    hook_name: str | None = None,
    dtype: str | torch.dtype | None = None,
    device: str | torch.device | None = None,
    norm_scaling_factor: float | None = None,
) -> SparseAutoencoder:
    """A `SparseAutoencoder` from an in-memory SAE-Lens SAE (or any object with the same fields), without importing
    SAE-Lens (which pins transformer-lens < 4, so it cannot be installed beside hooked_reward: load it in another
    environment, or build the object from its published weights).

    Reads `sae.cfg` (a dataclass or an object with `to_dict()`; SAE-Lens 6's `cfg.architecture()` method and
    `cfg.metadata.hook_name` are understood) and the tensors of `sae.state_dict()` (`W_enc [d_in, d_sae]`, `b_enc`,
    `W_dec [d_sae, d_in]`, `b_dec`, `threshold` for jumprelu), with the same rules and errors as `load_sae_lens`.
    `model`: check the hook and width against it and move the SAE to its device.
    """
    cfg_obj = getattr(sae, "cfg", None)
    if cfg_obj is None or not hasattr(sae, "state_dict"):
        raise SAEFormatError(
            f"Expected an SAE-Lens SAE (an object with .cfg and .state_dict()), got {type(sae).__name__}."
        )
    cfg = _as_dict(cfg_obj)
    arch = getattr(cfg_obj, "architecture", None)
    if callable(arch):
        cfg["architecture"] = arch()
    if "metadata" in cfg:
        cfg["metadata"] = _as_dict(cfg["metadata"])
    sd = {k: v.detach().cpu() for k, v in sae.state_dict().items()}
    where = Path(f"<in-memory {type(sae).__name__}>")
    if device is None:
        device = _model_device(model) if model is not None else "cpu"
    out = _sae_lens(cfg, sd, where, where, hook_name, dtype, device, norm_scaling_factor)
    if model is not None:
        from hooked_reward.sae.splice import check_sae_fits_model

        check_sae_fits_model(model, out)
    return out


def _as_dict(obj: Any) -> dict[str, Any]:
    if isinstance(obj, dict):
        return dict(obj)
    if hasattr(obj, "to_dict"):
        return dict(obj.to_dict())
    if hasattr(obj, "__dict__"):
        return dict(vars(obj))
    raise SAEFormatError(f"Cannot read an SAE config from a {type(obj).__name__}.")


def _sae_lens(
    cfg: dict[str, Any],
    sd: dict[str, torch.Tensor],
    p: Path,
    wpath: Path,
    hook_name: str | None,
    dtype: str | torch.dtype | None,
    device: str | torch.device,
    norm_scaling_factor: float | None,
) -> SparseAutoencoder:
    """An SAE from an SAE-Lens config dict and state dict (`p`, `wpath`: where they came from, for errors)."""
    arch = cfg.get("architecture") or "standard"
    act_fn = cfg.get("activation_fn_str", cfg.get("activation_fn", "relu")) or "relu"
    kwargs = cfg.get("activation_fn_kwargs") or {}
    if arch == "standard" and act_fn == "topk":
        arch = "topk"
    if arch not in ("standard", "topk", "jumprelu"):
        raise SAEFormatError(
            f"{p}: SAE-Lens architecture {arch!r} is not supported (supported: standard, topk, jumprelu)."
        )
    if arch == "standard" and act_fn not in ("relu",):
        raise SAEFormatError(f"{p}: activation function {act_fn!r} of a standard SAE is not supported (relu only).")
    k = cfg.get("k", kwargs.get("k"))
    if arch == "topk" and k is None:
        raise SAEFormatError(f"{p}: a topk SAE needs 'k' (or activation_fn_kwargs.k) in cfg.json.")

    meta = cfg.get("metadata") or cfg.get("meta") or {}
    cfg_hook = cfg.get("hook_name") or cfg.get("hook_point") or meta.get("hook_name")
    if cfg.get("hook_head_index", meta.get("hook_head_index")) is not None:
        raise SAEFormatError(f"{p}: per-head SAEs (hook_head_index set) are not supported.")

    norm = cfg.get("normalize_activations", "none")
    if norm is None or norm is False:
        norm = "none"
    elif norm is True:
        norm = "expected_average_only_in"
    fold_scale: float | None = None
    if norm == "expected_average_only_in":
        if norm_scaling_factor is None:
            raise SAEFormatError(
                f"{p}: normalize_activations='expected_average_only_in' scales inputs by a dataset constant "
                "that is not stored in the directory; pass load_sae(..., norm_scaling_factor=s) to fold it in."
            )
        fold_scale, norm = float(norm_scaling_factor), "none"

    for key in ("W_enc", "W_dec", "b_dec"):
        if key not in sd:
            raise SAEFormatError(f"{p}: {SAE_LENS_WEIGHTS} has no {key!r} tensor (has {sorted(sd)}).")
    d_in = int(cfg.get("d_in", sd["W_enc"].shape[0]))
    d_sae = int(cfg.get("d_sae", sd["W_enc"].shape[-1]))
    if "log_threshold" in sd and "threshold" not in sd:
        sd["threshold"] = sd.pop("log_threshold").exp()
    scale = sd.pop("scaling_factor", None)
    scale = sd.pop("finetuning_scaling_factor", scale)
    allowed = {"W_enc", "b_enc", "W_dec", "b_dec"} | ({"threshold"} if arch == "jumprelu" else set())
    extra = sorted(set(sd) - allowed)
    if extra:
        raise SAEFormatError(f"{p}: unexpected tensors {extra} for architecture {arch!r}.")
    if arch == "jumprelu" and "threshold" not in sd:
        raise SAEFormatError(f"{p}: a jumprelu SAE needs a 'threshold' tensor.")
    sd.setdefault("b_enc", torch.zeros(d_sae, dtype=sd["W_enc"].dtype))

    dt = dtype_from_name(dtype if dtype is not None else cfg.get("dtype", "float32"))
    sae_cfg = SAEConfig(
        architecture=arch,  # type: ignore[arg-type]
        d_in=d_in,
        d_sae=d_sae,
        k=k,
        hook_name=hook_name or cfg_hook,
        apply_b_dec_to_input=bool(cfg.get("apply_b_dec_to_input", True)),
        normalize_activations=norm,
        dtype=str(dt).removeprefix("torch."),
        source_format="sae_lens",
        metadata={k_: v for k_, v in meta.items() if isinstance(v, (str, int, float, bool, type(None)))},
    )
    sae = SparseAutoencoder(sae_cfg)
    expected = {
        "W_enc": (d_in, d_sae),
        "b_enc": (d_sae,),
        "W_dec": (d_sae, d_in),
        "b_dec": (d_in,),
        "threshold": (d_sae,),
    }
    with torch.no_grad():
        for name, t in sd.items():
            _check_shape(name, t, expected[name], wpath)
            getattr(sae, name).copy_(t.to(dt))
        if scale is not None:
            _check_shape("scaling_factor", scale, (d_sae,), wpath)
            sae.W_dec.mul_(scale.to(dt)[:, None])
    if fold_scale is not None:
        sae.fold_scaling_factor(fold_scale)
    return sae.to(device)


def load_sparsify(
    path: str | Path,
    *,
    hook_name: str | None = None,
    dtype: str | torch.dtype | None = None,
    device: str | torch.device = "cpu",
) -> SparseAutoencoder:
    """Load an EleutherAI sparsify directory (``cfg.json`` + ``sae.safetensors``); see the module docstring."""
    p = Path(path)
    cfg = _read_cfg(p)
    wpath = p / SPARSIFY_WEIGHTS
    if not wpath.is_file():
        raise FileNotFoundError(f"No {SPARSIFY_WEIGHTS} in {p}.")
    sd = load_file(str(wpath))
    if cfg.get("transcode", False):
        raise SAEFormatError(f"{p}: this is a sparsify transcoder (transcode=true), not an autoencoder.")
    for key in ("encoder.weight", "W_dec", "b_dec"):
        if key not in sd:
            raise SAEFormatError(f"{p}: {SPARSIFY_WEIGHTS} has no {key!r} tensor (has {sorted(sd)}).")
    d_in = int(cfg.get("d_in", sd["encoder.weight"].shape[1]))
    num_latents = int(cfg.get("num_latents", 0) or 0)
    d_sae = num_latents or d_in * int(cfg.get("expansion_factor", 32))
    activation = cfg.get("activation", "topk")
    if activation not in ("topk", "groupmax"):
        raise SAEFormatError(f"{p}: sparsify activation {activation!r} is not supported (topk, groupmax).")
    if "k" not in cfg:
        raise SAEFormatError(f"{p}: sparsify cfg.json has no 'k'.")
    extra = sorted(set(sd) - {"encoder.weight", "encoder.bias", "W_dec", "b_dec", "W_skip"})
    if extra:
        raise SAEFormatError(f"{p}: unexpected tensors {extra} in a sparsify SAE.")
    _check_shape("encoder.weight", sd["encoder.weight"], (d_sae, d_in), wpath)
    _check_shape("W_dec", sd["W_dec"], (d_sae, d_in), wpath)
    _check_shape("b_dec", sd["b_dec"], (d_in,), wpath)
    b_enc = sd.get("encoder.bias", torch.zeros(d_sae))
    _check_shape("encoder.bias", b_enc, (d_sae,), wpath)

    dt = dtype_from_name(dtype if dtype is not None else str(sd["W_dec"].dtype).removeprefix("torch."))
    sae_cfg = SAEConfig(
        architecture=activation,
        d_in=d_in,
        d_sae=d_sae,
        k=int(cfg["k"]),
        hook_name=hook_name or _sparsify_hook_name(p.name),
        apply_b_dec_to_input=True,
        dtype=str(dt).removeprefix("torch."),
        source_format="sparsify",
        metadata={"sparsify_hookpoint": p.name},
    )
    sae = SparseAutoencoder(sae_cfg)
    with torch.no_grad():
        sae.W_enc.copy_(sd["encoder.weight"].T.to(dt))
        sae.b_enc.copy_(b_enc.to(dt))
        sae.W_dec.copy_(sd["W_dec"].to(dt))
        sae.b_dec.copy_(sd["b_dec"].to(dt))
        if "W_skip" in sd:
            _check_shape("W_skip", sd["W_skip"], (d_in, d_in), wpath)
            sae.W_skip = torch.nn.Parameter(sd["W_skip"].to(dt))
    return sae.to(device)


def load_sae(
    path: str | Path,
    *,
    model: HookedRewardModel | None = None,
    hook_name: str | None = None,
    format: Literal["auto", "sae_lens", "sparsify"] = "auto",
    dtype: str | torch.dtype | None = None,
    device: str | torch.device | None = None,
    norm_scaling_factor: float | None = None,
) -> SparseAutoencoder:
    """Load an SAE from a local directory in SAE-Lens or sparsify format.

    Args:
        path: the directory (holding ``cfg.json`` and the weights).
        model: optional ``HookedRewardModel``; if given, the hook name must exist on it and the SAE width
            ``d_in`` must match the activation width there (else ``ValueError``), and the SAE is moved to the
            model's device.
        hook_name: TransformerLens hook name; overrides the one in the config (needed for sparsify SAEs
            whose directory name does not say it).
        format: ``"auto"`` detects from the weight file's name.
        dtype: parameter dtype (default: the file's).
        device: target device (default: the model's, else CPU).
        norm_scaling_factor: dataset scale for SAE-Lens ``expected_average_only_in`` SAEs (folded in).

    Returns:
        A :class:`SparseAutoencoder` with ``cfg.hook_name`` set when known.
    """
    fmt = detect_format(path) if format == "auto" else format
    if device is None:
        device = _model_device(model) if model is not None else "cpu"
    if fmt == "sae_lens":
        sae = load_sae_lens(
            path, hook_name=hook_name, dtype=dtype, device=device, norm_scaling_factor=norm_scaling_factor
        )
    elif fmt == "sparsify":
        sae = load_sparsify(path, hook_name=hook_name, dtype=dtype, device=device)
    else:
        raise SAEFormatError(f"Unknown SAE format {format!r}; expected 'auto', 'sae_lens' or 'sparsify'.")
    if model is not None:
        from hooked_reward.sae.splice import check_sae_fits_model

        check_sae_fits_model(model, sae)
    return sae


def _model_device(model: HookedRewardModel) -> torch.device:
    try:
        return next(model.parameters()).device
    except (StopIteration, AttributeError):
        return torch.device("cpu")


# ---------------------------------------------------------------------------------------------- saving
def save_sae(sae: SparseAutoencoder, path: str | Path) -> Path:
    """Write ``sae`` as an SAE-Lens directory (``cfg.json`` + ``sae_weights.safetensors``); returns the path.

    ``groupmax`` SAEs and SAEs with a skip connection have no SAE-Lens equivalent and are refused.
    """
    c = sae.cfg
    if c.architecture == "groupmax" or sae.W_skip is not None:
        raise SAEFormatError("SAE-Lens has no groupmax / skip-connection SAEs; this SAE cannot be saved in its format.")
    p = Path(path)
    p.mkdir(parents=True, exist_ok=True)
    tensors = {
        "W_enc": sae.W_enc.detach().cpu().contiguous(),
        "b_enc": sae.b_enc.detach().cpu().contiguous(),
        "W_dec": sae.W_dec.detach().cpu().contiguous(),
        "b_dec": sae.b_dec.detach().cpu().contiguous(),
    }
    if sae.threshold is not None:
        tensors["threshold"] = sae.threshold.detach().cpu().contiguous()
    save_file(tensors, str(p / SAE_LENS_WEIGHTS))
    metadata = {
        **c.metadata,
        "hook_name": c.hook_name,
        "sae_lens_version": SAE_LENS_VERSION_WRITTEN,
        "sae_lens_training_version": SAE_LENS_VERSION_WRITTEN,
        "written_by": "hooked_reward",
    }
    cfg: dict[str, Any] = {
        "architecture": c.architecture,
        "d_in": c.d_in,
        "d_sae": c.d_sae,
        "dtype": c.dtype,
        "device": "cpu",
        "apply_b_dec_to_input": c.apply_b_dec_to_input,
        "normalize_activations": c.normalize_activations,
        "reshape_activations": "none",
        "hook_name": c.hook_name,
        "metadata": metadata,
    }
    if c.architecture == "topk":
        cfg["k"] = c.k
    (p / SAE_LENS_CFG).write_text(json.dumps(cfg, indent=2))
    return p
