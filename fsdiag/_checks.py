"""Input validation shared by the public API: every error names the argument."""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

__all__ = ["as_tensor", "check_finite", "check_positive", "resolve_device", "make_generator"]


def resolve_device(device: str | torch.device | None) -> torch.device:
    """`"auto"` (or None) picks CUDA when present, else the CPU."""
    if device is None or (isinstance(device, str) and device == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device: expected 'auto', 'cpu', 'cuda' or a torch.device, got {device!r}") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: 'cuda' was requested but no CUDA device is available")
    return dev


def as_tensor(value: Any, name: str, *, ndim: int | tuple[int, ...] | None = None,
              dtype: torch.dtype | None = None, device: torch.device | None = None,
              finite: bool = True) -> torch.Tensor:
    """Convert an array-like to a floating tensor, checking rank and finiteness."""
    if isinstance(value, torch.Tensor):
        out = value
    else:
        try:
            arr = np.asarray(value)
        except Exception as err:  # noqa: BLE001 - re-raised with the argument's name
            raise TypeError(f"{name}: expected an array or tensor, got {type(value).__name__}") from err
        if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
            raise TypeError(f"{name}: expected numbers, got an array of dtype {arr.dtype}")
        out = torch.as_tensor(arr)
    if not out.is_floating_point():
        out = out.to(torch.get_default_dtype() if dtype is None else dtype)
    if dtype is not None or device is not None:
        out = out.to(dtype=dtype or out.dtype, device=device or out.device)
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else ndim
        if out.ndim not in allowed:
            raise ValueError(f"{name}: expected a tensor with {' or '.join(map(str, allowed))} "
                             f"dimension(s), got shape {tuple(out.shape)}")
    if finite:
        check_finite(out, name)
    return out


def check_finite(x: torch.Tensor, name: str) -> None:
    if not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{name}: expected finite values, found {bad} NaN/Inf entries")


def check_positive(value: Any, name: str) -> float:
    """A positive finite real scalar."""
    try:
        v = float(value)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name}: expected a positive number, got {value!r}") from err
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"{name}: expected a positive finite number, got {value!r}")
    return v


def check_int(value: Any, name: str, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value}")
    return int(value)


def make_generator(seed: int | None, generator: torch.Generator | None,
                   device: torch.device) -> torch.Generator:
    """Every random draw in fsdiag comes from an explicit generator."""
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator: expected a torch.Generator, got {type(generator).__name__}")
        return generator
    if seed is None:
        raise ValueError("seed: pass an integer seed (or a torch.Generator as generator=); "
                         "fsdiag never draws from the global random state")
    check_int(seed, "seed", minimum=0)
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed))
    return gen
