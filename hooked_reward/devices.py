"""Device strings, checked where they enter: `check_device("cuda")` on a CPU-only torch, `"cuda:3"` on a one-GPU
machine, or `"potato"` is a one-line `InputError` naming the torch build and the fix, before any weight is read
(torch's own errors are an `AssertionError` "Torch not compiled with CUDA enabled" or a list of twenty backends)."""

from __future__ import annotations

from typing import Any

import torch

from hooked_reward.errors import InputError

__all__ = ["DEVICE_MAP_STRATEGIES", "check_device"]

#: device_map strings accelerate reads as placement strategies, not devices.
DEVICE_MAP_STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")

_CUDA_WHEEL = "pip install torch --index-url https://download.pytorch.org/whl/cu126"


def check_device(device: Any, *, flag: str = "--device") -> None:
    """Raise `InputError` unless `device` names a device this torch can use: None, a `device_map` dict or
    strategy (left to accelerate), `cpu`, `meta`, `cuda[:N]` with a CUDA build and that GPU visible, `mps` where
    available, or another type torch knows and reports available. `flag` is the option named in the message."""
    if device is None or isinstance(device, dict) or device in DEVICE_MAP_STRATEGIES:
        return
    if isinstance(device, int) and not isinstance(device, bool):
        device = f"cuda:{device}"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise InputError(
            f"{flag} {device!r} is not a device: use cpu, cuda, cuda:N (one GPU) or mps; {flag} cpu runs anywhere."
        ) from None
    if dev.type == "cuda":
        if torch.version.cuda is None and torch.version.hip is None:
            raise InputError(
                f"{flag} {device!r} asks for a GPU, but the installed torch {torch.__version__} is a CPU-only build. "
                f"Install a CUDA build (e.g. `{_CUDA_WHEEL}`, matching your driver) or run with {flag} cpu."
            )
        count = torch.cuda.device_count()
        if count == 0:
            raise InputError(
                f"{flag} {device!r}: torch {torch.__version__} is built for CUDA {torch.version.cuda}, but no GPU is "
                f"visible (driver, CUDA_VISIBLE_DEVICES). Check `nvidia-smi`, or run with {flag} cpu."
            )
        if dev.index is not None and dev.index >= count:
            raise InputError(
                f"{flag} {device!r}: this machine shows {count} GPU(s), cuda:0 to cuda:{count - 1}. Pick one of them."
            )
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise InputError(f"{flag} {device!r}: this torch or machine has no MPS (Apple GPU) support; use {flag} cpu.")
    elif dev.type not in ("cpu", "meta", "cuda", "mps"):
        module = getattr(torch, dev.type, None)
        available = getattr(module, "is_available", None)
        if available is None or not available():
            raise InputError(
                f"{flag} {device!r}: torch {torch.__version__} has no usable {dev.type!r} device here; use {flag} cpu "
                "or cuda."
            )
