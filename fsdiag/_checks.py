"""Input validation shared by the public API: every error names the caller's argument.

One helper per kind of input, so that every entry point accepts the same things:
`check_real` (a real number), `check_int` (an integer), `as_tensor` (an array of real
numbers), `check_generator`, `resolve_device`.
"""
from __future__ import annotations

import difflib
import math
from typing import Any

import numpy as np
import torch

__all__ = ["as_tensor", "check_finite", "check_has_values", "check_positive", "check_real", "check_int",
           "check_generator", "resolve_device", "make_generator", "did_you_mean"]

def did_you_mean(name, options) -> str:
    """' (did you mean 'x'?)' for the option closest to an unknown name, or '' when none is close."""
    close = difflib.get_close_matches(str(name), [str(o) for o in options], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


# torch.Generator.manual_seed takes a signed 64-bit seed.
_SEED_LIMIT = 2 ** 63


def resolve_device(device: str | torch.device | None) -> torch.device:
    """`"auto"` (or None) picks CUDA when present, else the CPU. Only cpu and cuda are
    accepted: torch parses "meta", "mps", "xpu", ... but fsdiag's kernels cannot run there."""
    if device is None or (isinstance(device, str) and device == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not isinstance(device, (str, torch.device)):
        raise TypeError(f"device: expected 'auto', 'cpu', 'cuda' or a torch.device, got {type(device).__name__}")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as err:
        raise ValueError(f"device: expected 'auto', 'cpu', 'cuda' or a torch.device, got {device!r}") from err
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device: fsdiag runs on 'cpu' or 'cuda', got {device!r}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: 'cuda' was requested but no CUDA device is available")
    return dev


def as_tensor(value: Any, name: str, *, ndim: int | tuple[int, ...] | None = None,
              dtype: torch.dtype | None = None, device: torch.device | None = None,
              finite: bool = True) -> torch.Tensor:
    """Convert an array-like of real numbers (bool and integers become floating point) to a
    floating tensor, checking rank and finiteness. Complex input is refused: silently
    dropping the imaginary part would compute the wrong thing."""
    if isinstance(value, torch.Tensor):
        out = value
    else:
        try:
            arr = np.asarray(value)
        except Exception as err:  # noqa: BLE001 - re-raised with the argument's name
            raise TypeError(f"{name}: expected an array or tensor, got {type(value).__name__}") from err
        if np.iscomplexobj(arr):
            raise TypeError(f"{name}: expected real numbers, got complex dtype {arr.dtype}")
        if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
            raise TypeError(f"{name}: expected numbers, got an array of dtype {arr.dtype}")
        try:
            out = torch.as_tensor(arr)
        except (TypeError, RuntimeError) as err:
            raise TypeError(f"{name}: cannot convert an array of dtype {arr.dtype} to a tensor") from err
    if out.is_complex():
        raise TypeError(f"{name}: expected real numbers, got complex dtype {out.dtype}")
    check_has_values(out, name)
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


def check_has_values(x: torch.Tensor, name: str) -> None:
    """Refuse a tensor without data (the meta device: shapes only), which would otherwise pass
    shape checks and fail deep inside a kernel ("Cannot copy out of meta tensor")."""
    if x.device.type == "meta":
        raise ValueError(f"{name}: a tensor on the meta device has no values")


def check_finite(x: torch.Tensor, name: str) -> None:
    # One reduction first: a finite sum means every entry is finite (a NaN or an infinity in
    # x makes the sum NaN or infinite); only a non-finite sum (a bad entry, or finite values
    # whose sum overflows) pays for the exact test. isfinite(x).all() is 4 passes over x (==,
    # abs, !=, all): at MNIST size the per-atom log-likelihoods' blocks spent 0.16 s there.
    if x.is_floating_point() and x.numel() >= 1024:
        with torch.no_grad():
            if bool(torch.isfinite(x.sum())):
                return
    if not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{name}: expected finite values, found {bad} NaN/Inf entries "
                         f"(or values too large for {x.dtype})")


def check_real(value: Any, name: str, *, finite: bool = True) -> float:
    """A real number: int, float, a numpy real scalar or a 0-dim real tensor. bool, str and
    complex are refused (True is not a step size; "0.5" is a typo, not a number)."""
    if isinstance(value, torch.Tensor):
        if value.ndim != 0 or value.dtype == torch.bool or value.is_complex():
            raise TypeError(f"{name}: expected a real number, got a tensor of dtype {value.dtype} "
                            f"and shape {tuple(value.shape)}")
        check_has_values(value, name)
        value = value.item()
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name}: expected a real number, got {value!r}")
    try:
        v = float(value)
    except OverflowError as err:   # ints beyond float range
        raise ValueError(f"{name}: expected a finite number, got {value!r}") from err
    if finite and not math.isfinite(v):
        raise ValueError(f"{name}: expected a finite number, got {value!r}")
    return v


def check_abar(abar) -> tuple[float, float, float]:
    """(abar, a, b^2) = (abar, sqrt(abar), 1 - abar) for alpha_bar in (0, 1), naming the argument."""
    abar = check_real(abar, "abar")
    if not (0.0 < abar < 1.0):
        raise ValueError(f"abar: expected alpha_bar in (0, 1), got {abar}")
    return abar, math.sqrt(abar), 1.0 - abar


def check_positive(value: Any, name: str) -> float:
    """A positive finite real scalar."""
    v = check_real(value, name)
    if v <= 0:
        raise ValueError(f"{name}: expected a positive finite number, got {value!r}")
    return v


def check_int(value: Any, name: str, *, minimum: int = 1, maximum: int = _SEED_LIMIT - 1) -> int:
    """An integer (Python or numpy; bool refused), returned as a Python int. At most
    2**63 - 1 by default: torch takes sizes and seeds as signed 64-bit integers."""
    if isinstance(value, torch.Tensor) and value.ndim == 0 and not value.is_floating_point() \
            and not value.is_complex() and value.dtype != torch.bool:
        check_has_values(value, name)
        value = int(value.item())
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected an integer, got {value!r}")
    value = int(value)
    if value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value}")
    if value > maximum:
        raise ValueError(f"{name}: expected an integer <= {maximum}, got {value}")
    return value


def check_generator(generator: Any, name: str = "generator") -> torch.Generator:
    """Randomness is explicit in fsdiag: a torch.Generator, never the global RNG."""
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"{name}: expected a torch.Generator (e.g. torch.Generator().manual_seed(0)), "
                        f"got {type(generator).__name__}; fsdiag never draws from the global random state")
    return generator


def make_generator(seed: int | None, generator: torch.Generator | None,
                   device: torch.device) -> torch.Generator:
    """Every random draw in fsdiag comes from an explicit generator."""
    if generator is not None:
        return check_generator(generator)
    if seed is None:
        raise ValueError("seed: pass an integer seed (or a torch.Generator as generator=); "
                         "fsdiag never draws from the global random state")
    seed = check_int(seed, "seed", minimum=0, maximum=_SEED_LIMIT - 1)
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    return gen
