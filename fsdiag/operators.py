"""Operators by name: `operator("blur:std=1.5", d, image_shape)` builds the forward model a
SPEC names (`fsdiag diagnose --operator SPEC`), from `OPERATORS`; `load_array` reads a user's
.npy/.npz array (an operator's matrix or mask, atoms, y) without pickles."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from ._checks import check_int, did_you_mean
from .forward import AbsoluteValue, Affine, ForwardModel, Identity, Mask, PolarAngle, Radial

__all__ = ["OPERATORS", "operator", "load_array", "blur_matrix"]


def blur_matrix(height: int, width: int, std: float = 1.0) -> torch.Tensor:
    """(H W, H W) matrix of a Gaussian blur with zero padding (kernel truncated at 3 std)."""
    check_int(height, "height")
    check_int(width, "width")
    r = max(1, math.ceil(3 * std))
    k1 = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=torch.float64) / std) ** 2)
    k1 = k1 / k1.sum()

    def conv1d(n):  # (n, n) 1-D convolution with zero padding
        idx = torch.arange(n)
        off = idx[None, :] - idx[:, None]
        return torch.where(off.abs() <= r, k1[(off + r).clamp(0, 2 * r)], torch.zeros(()))

    return torch.kron(conv1d(height), conv1d(width))


def load_array(path, what: str) -> np.ndarray:
    """A .npy array (or the only / first array of a .npz) without pickles; ValueError naming `what`."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"{what}: no file {str(path)!r}")
    try:
        if p.suffix != ".npz":
            # memory-mapped first: a header that promises more than the file holds fails here,
            # before anything of that size is allocated
            return np.array(np.load(p, mmap_mode="r", allow_pickle=False))
        with np.load(p, allow_pickle=False) as obj:
            if not obj.files:
                raise ValueError("an empty .npz archive")
            return np.asarray(obj[obj.files[0]])
    except Exception as err:  # noqa: BLE001 - any reading error is the file's, named by the option
        raise ValueError(f"{what}: {p} is not a readable .npy/.npz array ({type(err).__name__}: "
                         f"{str(err).splitlines()[0] if str(err) else 'corrupt'})") from None



def _image_ops():
    from . import imaging
    return imaging


# name -> (builder(image_shape, d, **options), {option: default}, needs a real image shape, takes a file)
OPERATORS = {
    "identity": (lambda shape, d: Identity(), {}, False, False),
    "inpaint": (lambda shape, d, keep=0.5, seed=0: _image_ops().Inpainting(shape, keep, seed=seed),
                {"keep": 0.5, "seed": 0}, False, False),
    "box_inpaint": (lambda shape, d: _image_ops().BoxInpainting(shape), {}, True, False),
    "blur": (lambda shape, d, std=1.0: _image_ops().GaussianBlur(shape, std), {"std": 1.0}, True, False),
    "downsample": (lambda shape, d, factor=2: _image_ops().Downsampling(shape, factor), {"factor": 2}, True, False),
    "fourier_magnitude": (lambda shape, d, oversampling=1: _image_ops().FourierMagnitude(shape, oversampling=oversampling),
                          {"oversampling": 1}, True, False),
    "radial": (lambda shape, d: Radial(), {}, False, False),
    "polar_angle": (lambda shape, d: PolarAngle(), {}, False, False),
    "absolute_value": (lambda shape, d: AbsoluteValue(), {}, False, False),
    "matrix": (lambda shape, d, path: Affine(torch.as_tensor(load_array(path, "operator"), dtype=torch.float64)),
               {}, False, True),
    "mask": (lambda shape, d, path: Mask(torch.as_tensor(load_array(path, "operator")).reshape(-1).bool()),
             {}, False, True),
}


def _option(text: str, default, spec: str):
    try:
        value = type(default)(float(text)) if isinstance(default, int) and float(text).is_integer() else type(default)(text)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"operator: {spec!r}: expected a {type(default).__name__}, got {text!r}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"operator: {spec!r}: expected a finite number, got {text!r}")
    return value


def operator(spec: str, dim: int, image_shape=None) -> ForwardModel:
    """The forward model named by SPEC: 'name' or 'name:option=value,...' (see OPERATORS), or
    'matrix:A.npy' / 'mask:M.npy' (a file). Image operators need `image_shape` (C, H, W) with
    C*H*W = dim; inpainting alone works on rows too (each value a pixel)."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"operator: expected a name such as {', '.join(sorted(OPERATORS))}, got {spec!r}")
    name, _, rest = spec.strip().partition(":")
    if name not in OPERATORS:
        raise ValueError(f"operator: unknown operator {name!r}{did_you_mean(name, OPERATORS)}; "
                         f"known: {', '.join(sorted(OPERATORS))}")
    build, defaults, needs_image, takes_file = OPERATORS[name]
    if takes_file:
        if not rest:
            raise ValueError(f"operator: {name} takes a file: '{name}:FILE.npy'")
        fwd = build(image_shape, dim, rest)
    else:
        options = {}
        for item in filter(None, (t.strip() for t in rest.split(","))):
            key, eq, value = item.partition("=")
            if not eq or key not in defaults:
                known = ", ".join(defaults) if defaults else "none"
                raise ValueError(f"operator: {name} has no option {key!r}{did_you_mean(key, defaults)}; "
                                 f"its options: {known}")
            options[key] = _option(value, defaults[key], spec)
        if image_shape is None and needs_image:
            raise ValueError(f"operator: {name} needs the images' shape (--image-shape C,H,W)")
        shape = tuple(image_shape) if image_shape is not None else (1, 1, dim)
        try:
            fwd = build(shape, dim, **options)
        except (TypeError, ValueError) as err:
            raise ValueError(f"operator: {spec!r}: {err}") from None
    try:
        fwd.out_dim(dim)
    except (TypeError, ValueError) as err:
        raise ValueError(f"operator: {spec!r} does not act on d = {dim}: {err}") from None
    return fwd
