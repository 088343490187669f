"""Image data sets as FSR atoms: rows (N, d) with d = C H W, integer labels, the image shape.

Every loader returns an `ImageData` and states its pixel range. Bundled data need no
download: scikit-learn's 8x8 digits, scikit-image's LFW subset and its bundled photos and
textures (cut into patches), and procedurally generated shapes. A user's own data come from
.npy/.npz arrays, a folder of PNGs, MNIST idx files or CIFAR-10 python batches on disk.

The ground truth of an experiment must not be an atom (then the exact posterior is a Dirac
on it for any noise level): `hold_out` / `ImageData.split` take the truths out of the prior,
duplicates of them included.
"""
from __future__ import annotations

import gzip
import math
import os
import pickle
import struct
import zipfile
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from ._checks import check_int, make_generator

__all__ = ["ImageData", "HeldOut", "hold_out", "digits", "lfw_subset", "patches", "patch_coverage",
           "PATCH_SOURCES", "shapes", "SHAPES", "from_array", "from_png_folder", "mnist", "read_idx", "cifar10"]

_DTYPES = (torch.float32, torch.float64)


def _check_dtype(dtype) -> torch.dtype:
    if dtype not in _DTYPES:
        raise ValueError(f"dtype: expected torch.float32 or torch.float64, got {dtype!r}")
    return dtype


def _require(module: str, package: str):
    """Import an optional dependency (the `book` extra) or say how to install it."""
    import importlib
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(f"this loader needs {package}: pip install {package} (or fsdiag[book])") from err


def _check_path(path, *, folder: bool | None = None, name: str = "path") -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name}: expected a file or folder path, got {type(path).__name__}")
    try:
        p = Path(path)
        exists, is_dir, is_file = p.exists(), p.is_dir(), p.is_file()
    except (OSError, ValueError, TypeError) as err:        # a NUL byte, a bytes path, a name too long
        raise ValueError(f"{name}: cannot use {path!r} as a path ({_one_line(err)})") from None
    if not exists:
        raise ValueError(f"{name}: {str(p)!r} does not exist")
    if folder is True and not is_dir:
        raise ValueError(f"{name}: expected a folder, got the file {str(p)!r}")
    if folder is False and not is_file:
        raise ValueError(f"{name}: expected a file, got the folder {str(p)!r}")
    return p


def _one_line(err: BaseException, limit: int = 200) -> str:
    """A library's error as one short line, for a message of our own that names the argument."""
    text = " ".join(str(err).split())
    text = f"{type(err).__name__}: {text}" if text else type(err).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."


# ------------------------------------------------------------------ the container
@dataclass(frozen=True, repr=False, eq=False)
class ImageData:
    """atoms (N, C*H*W) floating, rows in (C, H, W) order; labels (N,) int64 indexing
    class_names; pixel_range (lo, hi): [0, 1] for every bundled loader and 8/16-bit files (the
    range the pixels were scaled to, not their observed min/max); for float arrays that
    `from_array` keeps as they are, their observed (min, max)."""

    atoms: torch.Tensor
    labels: torch.Tensor
    image_shape: tuple[int, int, int]
    pixel_range: tuple[float, float]
    class_names: tuple[str, ...]
    description: str = ""

    def __post_init__(self):
        if self.atoms.ndim != 2 or not self.atoms.is_floating_point():
            raise ValueError(f"atoms: expected a floating (N, d) tensor, got {self.atoms.dtype} "
                             f"{tuple(self.atoms.shape)}")
        if math.prod(self.image_shape) != self.atoms.shape[1]:
            raise ValueError(f"image_shape: {self.image_shape} has {math.prod(self.image_shape)} pixels, "
                             f"the atoms have d = {self.atoms.shape[1]}")
        if self.labels.shape != (self.atoms.shape[0],) or self.labels.dtype != torch.long:
            raise ValueError(f"labels: expected int64 of shape ({self.atoms.shape[0]},), "
                             f"got {self.labels.dtype} {tuple(self.labels.shape)}")

    @property
    def n_atoms(self) -> int:
        return self.atoms.shape[0]

    @property
    def dim(self) -> int:
        return self.atoms.shape[1]

    def __len__(self) -> int:
        return self.n_atoms

    def images(self) -> torch.Tensor:
        """The atoms as images (N, C, H, W) (a view)."""
        return self.atoms.reshape(-1, *self.image_shape)

    def subset(self, index) -> "ImageData":
        """The rows at `index` (indices or a boolean mask)."""
        index = torch.as_tensor(index)
        return ImageData(self.atoms[index], self.labels[index], self.image_shape, self.pixel_range,
                         self.class_names, self.description)

    def split(self, n: int = 1, *, seed: int | None = None, generator: torch.Generator | None = None) -> "HeldOut":
        """`hold_out(self, n, seed=seed)`: the prior without n held-out truths, and the truths."""
        return hold_out(self, n, seed=seed, generator=generator)

    def __repr__(self) -> str:
        return (f"ImageData(N={self.n_atoms}, image_shape={self.image_shape}, pixel_range={self.pixel_range}, "
                f"classes={len(self.class_names)}, dtype={self.atoms.dtype})")


class HeldOut(NamedTuple):
    """A leave-out split: prior atoms and labels, and the held-out truths and their labels."""

    atoms: torch.Tensor
    labels: torch.Tensor
    truths: torch.Tensor
    truth_labels: torch.Tensor

    def prior(self, **kwargs):
        """The FSR prior on the remaining atoms (keyword arguments go to EmpiricalPrior)."""
        from .prior import EmpiricalPrior
        return EmpiricalPrior(self.atoms, labels=self.labels, **kwargs)


def hold_out(data: ImageData, n: int = 1, *, seed: int | None = None,
             generator: torch.Generator | None = None) -> HeldOut:
    """Draw n truths uniformly without replacement and remove them from the atoms, together with
    every atom exactly equal to one of them (data sets hold duplicates), so no truth is an atom."""
    if not isinstance(data, ImageData):
        raise TypeError(f"data: expected an fsdiag.data.ImageData, got {type(data).__name__}")
    n = check_int(n, "n", maximum=max(data.n_atoms - 1, 1))
    if n >= data.n_atoms:
        raise ValueError(f"n: holding out {n} of {data.n_atoms} atoms leaves no prior")
    g = make_generator(seed, generator, torch.device("cpu"))
    held = torch.randperm(data.n_atoms, generator=g)[:n]
    truths = data.atoms[held.to(data.atoms.device)]
    keep = torch.ones(data.n_atoms, dtype=torch.bool)
    keep[held] = False
    keep &= ~_equals_any(data.atoms, truths)
    if not bool(keep.any()):
        raise ValueError("n: every atom equals a held-out truth; nothing is left for the prior")
    keep = keep.to(data.atoms.device)
    return HeldOut(data.atoms[keep], data.labels[keep], truths, data.labels[held.to(data.labels.device)])


def _equals_any(atoms: torch.Tensor, truths: torch.Tensor, max_values: int = 1 << 22) -> torch.Tensor:
    """(N,) bool: rows of atoms exactly equal to some truth, in O(N d + N log n). A random
    projection sorts the (distinct) truths; each atom is compared exactly with the truths whose
    projection is nearest to its own (a tolerance: two matmul calls need not round alike).
    Atoms are projected `max_values` values at a time (a float64 copy of ~32 MB, not of all atoms:
    at 10^6 32x32 patches a block of 2^18 rows was a 2 GB temporary)."""
    chunk = max(1, max_values // max(atoms.shape[1], 1))
    truths = torch.unique(truths, dim=0)
    r = torch.randn(atoms.shape[1], dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    r = r.to(atoms.device)
    keys, order = torch.sort(truths.double() @ r)
    truths, tol = truths[order], 1e-9 * (1.0 + keys.abs())
    out = torch.zeros(atoms.shape[0], dtype=torch.bool, device=atoms.device)
    for s in range(0, atoms.shape[0], chunk):
        block = atoms[s:s + chunk]
        k = block.double() @ r
        pos = torch.searchsorted(keys, k)
        for c in ((pos - 1).clamp_min(0), pos.clamp_max(len(keys) - 1)):
            i = torch.nonzero((k - keys[c]).abs() <= tol[c]).flatten()
            out[s + i] |= (block[i] == truths[c[i]]).all(1)
    return out.cpu()


def _from_uint8(arr: np.ndarray, dtype) -> torch.Tensor:
    return torch.from_numpy(np.asarray(arr, dtype=np.float64) / 255.0).to(dtype)


# ------------------------------------------------------------------ bundled data
def digits(*, dtype=torch.float32) -> ImageData:
    """scikit-learn's 8x8 digits: 1797 images (1, 8, 8), 10 classes '0'..'9'; pixels in [0, 1]
    (the 0..16 counts divided by 16)."""
    d = _require("sklearn.datasets", "scikit-learn").load_digits()
    atoms = torch.from_numpy(d.data / 16.0).to(_check_dtype(dtype))
    return ImageData(atoms, torch.from_numpy(d.target).long(), (1, 8, 8), (0.0, 1.0),
                     tuple(str(i) for i in range(10)), "scikit-learn 8x8 digits, pixels in [0, 1]")


def lfw_subset(*, dtype=torch.float32) -> ImageData:
    """scikit-image's LFW subset: 200 gray images (1, 25, 25); the first 100 are faces (label 0,
    'face'), the last 100 non-faces cut from the photos' backgrounds (label 1); pixels in [0, 1]."""
    imgs = np.asarray(_require("skimage.data", "scikit-image").lfw_subset(), dtype=np.float64)
    if imgs.max() > 1.0:       # documented as uint8 in some versions: scale to [0, 1] either way
        imgs = imgs / 255.0
    atoms = torch.from_numpy(imgs.reshape(len(imgs), -1)).to(_check_dtype(dtype))
    labels = torch.cat([torch.zeros(100), torch.ones(len(imgs) - 100)]).long()
    return ImageData(atoms, labels, (1, 25, 25), (0.0, 1.0), ("face", "non-face"),
                     "scikit-image LFW subset: 100 faces then 100 non-faces, 25x25, pixels in [0, 1]")


# The scikit-image images that ship inside its wheel (no download); gray: (H, W), color: (H, W, 3).
PATCH_SOURCES = ("brick", "grass", "gravel", "camera", "astronaut", "coffee", "coins", "moon",
                 "page", "text", "clock", "cell", "chelsea", "rocket", "immunohistochemistry",
                 "hubble_deep_field", "retina")
_DEFAULT_SOURCES = ("brick", "grass", "gravel", "camera", "astronaut", "coffee")
_PATCH_BLOCK = 1 << 24          # values (not patches) per copied block


@lru_cache(maxsize=None)
def _source_image(name: str, color: bool) -> np.ndarray:
    """(H, W, C) float32 in [0, 1]; gray from color with scikit-image's luminance weights."""
    img = getattr(_require("skimage.data", "scikit-image"), name)()
    if img.ndim == 3 and img.shape[2] == 4:
        img = img[..., :3]
    img = np.asarray(img, dtype=np.float64) / (255.0 if img.dtype == np.uint8 else 1.0)
    if color:
        if img.ndim != 3:
            raise ValueError(f"sources: {name!r} is a gray image; color=True needs color sources")
        return img.astype(np.float32)
    if img.ndim == 3:
        img = _require("skimage.color", "scikit-image").rgb2gray(img)
    return img.astype(np.float32)[..., None]


def _check_sources(sources) -> tuple[str, ...]:
    if isinstance(sources, str) or not hasattr(sources, "__iter__"):
        raise TypeError(f"sources: expected a sequence of names from PATCH_SOURCES, got {sources!r}")
    sources = tuple(sources)
    bad = [s for s in sources if s not in PATCH_SOURCES]
    if not sources or bad:
        raise ValueError(f"sources: expected names from {PATCH_SOURCES}, got {sources!r}")
    return sources


def patches(n: int, size: int = 8, *, sources=_DEFAULT_SOURCES, color: bool = False,
            seed: int | None = None, generator: torch.Generator | None = None, dtype=torch.float32) -> ImageData:
    """n size x size patches cut at uniformly random positions from scikit-image's bundled
    images (`PATCH_SOURCES`); label = the source's index in `sources`; the classes are balanced
    (n // len(sources), the first n % len(sources) sources one more) and shuffled.
    Gray (1, size, size) by default, color=True (3, size, size) needs color sources.
    Pixels in [0, 1]. Memory: the result (n C size^2 floats) plus one block of ~64 MB."""
    n = check_int(n, "n", maximum=10 ** 8)
    size = check_int(size, "size", maximum=4096)
    sources = _check_sources(sources)
    if not isinstance(color, bool):
        raise TypeError(f"color: expected True or False, got {color!r}")
    dtype = _check_dtype(dtype)
    g = make_generator(seed, generator, torch.device("cpu"))
    c = 3 if color else 1
    labels = torch.arange(n) % len(sources)
    labels = labels[torch.randperm(n, generator=g)]
    out = torch.empty(n, c, size, size, dtype=dtype)
    block = max(1, _PATCH_BLOCK // (c * size * size))       # patches copied per block (~64 MB)
    for k, name in enumerate(sources):
        img = torch.from_numpy(_source_image(name, color))
        h, w = img.shape[:2]
        if size > min(h, w):
            raise ValueError(f"size: {size} exceeds the {h}x{w} source image {name!r}")
        # a strided view of every window (no copy), (h', w', C, size, size): indexing copies
        # only the chosen windows, a block of rows at a time
        windows = img.unfold(0, size, 1).unfold(1, size, 1)
        rows = torch.nonzero(labels == k).flatten()
        top = torch.randint(0, h - size + 1, (len(rows),), generator=g)
        left = torch.randint(0, w - size + 1, (len(rows),), generator=g)
        for s in range(0, len(rows), block):
            out[rows[s:s + block]] = windows[top[s:s + block], left[s:s + block]].to(dtype)
    atoms = out.reshape(n, c * size * size)                             # rows in (C, H, W) order
    return ImageData(atoms, labels.long(), (c, size, size), (0.0, 1.0), sources,
                     f"{n} {size}x{size} {'color' if color else 'gray'} patches of scikit-image's "
                     f"{', '.join(sources)}; pixels in [0, 1]")


def patch_coverage(n: int, size: int = 8, *, sources=_DEFAULT_SOURCES) -> dict:
    """How much `patches(n, size, sources=sources)` repeats itself, in closed form (no patch is cut).

    Source k (h x w pixels) has P = (h - size + 1)(w - size + 1) window positions and gets n_k of
    the n patches (the balanced split of `patches`), at positions drawn uniformly with replacement.
    Per source, and over all patches (weighted by n_k): `positions` P; `patches` n_k;
    `repeat_fraction`, the expected fraction of the patches that repeat another's position,
    1 - P (1 - (1 - 1/P)^n_k) / n_k (one minus the expected distinct positions per patch);
    `neighbours`, the expected number of other patches whose position is one pixel away (in rows,
    columns or both; the same position not counted), (n_k - 1) 2 U / P^2 with U the pairs of
    8-neighbouring positions. A patch and its one-pixel neighbour share most of their pixels."""
    n = check_int(n, "n", maximum=10 ** 8)
    size = check_int(size, "size", maximum=4096)
    sources = _check_sources(sources)
    per = {}
    for k, name in enumerate(sources):
        img = _source_image(name, False)            # (h, w, 1); a color source has the same h, w
        h, w = img.shape[:2]
        if size > min(h, w):
            raise ValueError(f"size: {size} exceeds the {h}x{w} source image {name!r}")
        rows, cols = h - size + 1, w - size + 1
        p = rows * cols
        n_k = n // len(sources) + (k < n % len(sources))
        pairs = rows * (cols - 1) + (rows - 1) * cols + 2 * (rows - 1) * (cols - 1)
        distinct = p * -math.expm1(n_k * math.log1p(-1.0 / p)) if p > 1 else float(n_k > 0)
        per[name] = {"positions": p, "patches": n_k,
                     "repeat_fraction": 1.0 - distinct / n_k if n_k else 0.0,
                     "neighbours": max(n_k - 1, 0) * 2 * pairs / p ** 2}
    mean = {key: sum(v["patches"] * v[key] for v in per.values()) / n for key in ("repeat_fraction", "neighbours")}
    return {"n": n, "size": size, "positions": sum(v["positions"] for v in per.values()), **mean, "sources": per}


# ------------------------------------------------------------------ procedural shapes
SHAPES = ("disc", "square", "triangle", "ring", "bar", "cross")
_DEFAULT_SHAPES = ("disc", "square", "triangle", "ring", "bar")


def _signed_distance(kind: str, u: torch.Tensor, v: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Approximate signed distance (pixels, < 0 inside) to a shape of size r at the origin,
    in coordinates (u, v) already rotated into the shape's frame."""
    if kind == "disc":
        return torch.hypot(u, v) - r
    if kind == "square":
        return torch.maximum(u.abs(), v.abs()) - 0.75 * r
    if kind == "triangle":     # equilateral, circumradius r: three half-planes at inradius r/2
        out = v - 0.5 * r
        for ang in (math.pi / 6 + math.pi, -math.pi / 6):
            out = torch.maximum(out, u * math.cos(ang) + v * math.sin(ang) - 0.5 * r)
        return out
    if kind == "ring":
        return (torch.hypot(u, v) - 0.75 * r).abs() - torch.clamp(0.2 * r, min=0.6)
    half_w = torch.clamp(0.22 * r, min=0.6)
    bar = torch.maximum(u.abs() - r, v.abs() - half_w)
    if kind == "bar":
        return bar
    return torch.minimum(bar, torch.maximum(v.abs() - r, u.abs() - half_w))   # cross


def shapes(n: int, size: int = 16, *, classes=_DEFAULT_SHAPES, seed: int | None = None,
           generator: torch.Generator | None = None, dtype=torch.float32, device=None) -> ImageData:
    """n procedurally drawn shapes (1, size, size), label = the shape's index in `classes`
    (from SHAPES: disc, square, triangle, ring, bar, cross), balanced and shuffled; random size
    (radius 0.2-0.4 of the image), position (inside the image), rotation and brightness
    (0.6-1 on a 0 background), anti-aliased over one pixel. Pixels in [0, 1].
    The random parameters are drawn on the CPU, so a seed gives the same images on any device."""
    from ._checks import resolve_device

    n = check_int(n, "n", maximum=10 ** 8)
    size = check_int(size, "size", minimum=4, maximum=4096)
    if isinstance(classes, str) or not hasattr(classes, "__iter__"):
        raise TypeError(f"classes: expected a sequence of names from SHAPES, got {classes!r}")
    classes = tuple(classes)
    if not classes or any(c not in SHAPES for c in classes) or len(set(classes)) != len(classes):
        raise ValueError(f"classes: expected distinct names from {SHAPES}, got {classes!r}")
    dtype, device = _check_dtype(dtype), resolve_device("cpu" if device is None else device)
    g = make_generator(seed, generator, torch.device("cpu"))
    labels = (torch.arange(n) % len(classes))[torch.randperm(n, generator=g)]
    p = torch.rand(n, 5, generator=g, dtype=torch.float64)
    radius = size * (0.2 + 0.2 * p[:, 0])
    cx = radius + (size - 1 - 2 * radius).clamp_min(0) * p[:, 1]    # keep the shape inside
    cy = radius + (size - 1 - 2 * radius).clamp_min(0) * p[:, 2]
    theta = 2 * math.pi * p[:, 3]
    bright = 0.6 + 0.4 * p[:, 4]
    grid = torch.arange(size, dtype=dtype, device=device)
    out = torch.empty(n, size, size, dtype=dtype, device=device)
    rows_per_chunk = max(1, (1 << 22) // (size * size))                # ~4M pixels of temporaries
    params = [t.to(dtype=dtype, device=device) for t in (radius, cx, cy, theta, bright)]
    labels_dev = labels.to(device)
    for s in range(0, n, rows_per_chunk):
        r, x0, y0, th, br = (t[s:s + rows_per_chunk, None, None] for t in params)
        lab = labels_dev[s:s + rows_per_chunk]
        dx, dy = grid[None, None, :] - x0, grid[None, :, None] - y0
        u = dx * torch.cos(th) + dy * torch.sin(th)
        v = -dx * torch.sin(th) + dy * torch.cos(th)
        sdf = torch.empty_like(u)
        for k, kind in enumerate(classes):
            sel = lab == k
            if bool(sel.any()):
                sdf[sel] = _signed_distance(kind, u[sel], v[sel], r[sel])
        # coverage of a pixel by the shape, linear over one pixel across the edge
        out[s:s + rows_per_chunk] = br * (0.5 - sdf).clamp(0.0, 1.0)
    return ImageData(out.reshape(n, size * size), labels.long().to(device), (1, size, size), (0.0, 1.0),
                     classes, f"{n} procedural {size}x{size} shapes ({', '.join(classes)}); pixels in [0, 1]")


# ------------------------------------------------------------------ a user's own data
def _integer_objects(arr: np.ndarray, name: str, where: str) -> list[int] | None:
    """The Python ints of an object array (labels beyond int64/uint64, e.g. [0, 10**20]), or None
    when it holds anything else (bools are not labels)."""
    vals = arr.tolist()
    if all(isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) for v in vals):
        return [int(v) for v in vals]
    if all(isinstance(v, (str, bytes)) for v in vals):
        return None
    kinds = sorted({type(v).__name__ for v in vals})
    raise TypeError(f"{name}: {where}expected integer or string labels, got {', '.join(kinds)}")


def _labels_and_names(labels, n: int, name: str = "labels", *, class_names: tuple[str, ...] | None = None,
                      where: str = "", names_name: str | None = None) -> tuple[torch.Tensor, tuple[str, ...]]:
    """(labels (n,) int64, class names).

    Without class_names, each distinct label value present is a class, in sorted order, named by
    its value: integer labels (any size: 10**9, uint64 beyond int64, Python ints beyond both) and
    strings alike; the labels become indices 0..K-1 into those names. Integer labels 0..K-1 that
    all occur keep their values. Negative integers are refused (a "missing" marker is no class).
    With class_names (MNIST, CIFAR-10): the labels are indices into them and must lie in
    0..len(class_names)-1. Memory: O(n), whatever the values."""
    if labels is None:
        return torch.zeros(n, dtype=torch.long), (("unlabelled",) if class_names is None else class_names)
    try:
        if isinstance(labels, torch.Tensor):
            arr = labels.detach().cpu().numpy()
        elif isinstance(labels, np.ndarray):
            arr = labels
        else:       # a list: np.asarray([0, 2**63]) would be float64, so keep Python's exact ints
            arr = np.array(labels, dtype=object)
    except Exception as err:  # noqa: BLE001 - ragged lists, odd tensors: re-raised with the name
        raise TypeError(f"{name}: {where}expected a sequence of integer or string labels ({_one_line(err)})") from None
    if arr.shape != (n,):
        raise ValueError(f"{name}: {where}expected shape ({n},) to match the images, got {arr.shape}")
    ints = None
    if arr.dtype == object:
        ints = _integer_objects(arr, name, where)
        if ints is None:
            arr = np.array([v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in arr.tolist()],
                           dtype=str).reshape(n)
    if ints is not None or arr.dtype.kind in "iu":
        if not n:
            low = high = 0
        elif ints is not None:
            low, high = min(ints), max(ints)
        else:
            low, high = int(arr.min()), int(arr.max())
        if low < 0:
            raise ValueError(f"{name}: {where}expected non-negative integer labels, got min {low}")
        if class_names is not None:
            if high >= len(class_names):
                who = f"{name}, {names_name}" if names_name else name
                raise ValueError(f"{who}: {where}labels run up to "
                                 f"{high}, beyond the {len(class_names)} class names")
            values = np.asarray(ints, dtype=np.int64) if ints is not None else arr.astype(np.int64)
            return torch.from_numpy(values.reshape(n)), class_names
        if ints is not None:                 # beyond uint64: distinct values by Python's own sort
            distinct = sorted(set(ints))
            code = {v: k for k, v in enumerate(distinct)}
            codes = np.fromiter((code[v] for v in ints), dtype=np.int64, count=n)
            return torch.from_numpy(codes), tuple(str(v) for v in distinct)
        values, codes = np.unique(arr, return_inverse=True)
        return torch.from_numpy(codes.astype(np.int64).reshape(n)), tuple(str(int(v)) for v in values)
    if arr.dtype.kind in "US":
        if class_names is not None:
            raise TypeError(f"{name}: {where}expected integer labels indexing the class names, got dtype {arr.dtype}")
        if arr.dtype.kind == "S":
            arr = np.char.decode(arr, "utf-8", "replace")
        names, codes = np.unique(arr.astype(str), return_inverse=True)
        return torch.from_numpy(codes.astype(np.int64).reshape(n)), tuple(names.tolist())
    raise TypeError(f"{name}: {where}expected integer or string labels, got dtype {arr.dtype}")


def _images_to_data(images: np.ndarray, labels, class_names, image_shape, what: str, dtype, *,
                    name: str = "path_or_array", labels_name: str = "labels", labels_where: str = "",
                    names_name: str | None = None) -> ImageData:
    """(N, ...) uint8 or other real images to ImageData: uint8 scaled to [0, 1], anything else kept
    as it is (pixel_range its observed (min, max)). Values must be finite and must fit `dtype`:
    float64 data beyond float32's range are refused, not turned into inf atoms."""
    n = len(images)
    if n < 1 or images.size == 0:
        raise ValueError(f"{name}: {what} holds no pixels: images of shape {images.shape}")
    flat = images.reshape(n, -1)
    if images.dtype == np.uint8:
        atoms, rng = _from_uint8(flat, dtype), (0.0, 1.0)
    elif images.dtype.kind in "fiub":
        if images.dtype.kind == "f" and not bool(np.isfinite(flat).all()):
            bad = int((~np.isfinite(flat)).sum())
            raise ValueError(f"{name}: expected finite pixel values, found {bad} NaN/Inf in {what}")
        values = flat.astype(np.float64)             # exact for every integer and float type but longdouble
        atoms = torch.from_numpy(values).to(dtype)
        if not bool(torch.isfinite(atoms).all()) or not bool(np.isfinite(values).all()):
            big = float(np.abs(flat).max())
            raise ValueError(f"{name}: pixel values up to {big:.4g} in {what} overflow {dtype} (largest "
                             f"{torch.finfo(dtype).max:.4g}); pass dtype=torch.float64 or rescale them")
        rng = (float(atoms.min()), float(atoms.max()))
    else:
        raise TypeError(f"{name}: expected numeric images, got dtype {images.dtype} in {what}")
    lab, names = _labels_and_names(labels, n, labels_name, class_names=class_names, where=labels_where,
                                   names_name=names_name)
    return ImageData(atoms, lab, image_shape, rng, names, what)


_NPY_VERSIONS = ((1, 0), (2, 0), (3, 0))
_READ_CHUNK = 1 << 24           # bytes read per call from a file whose size a header promised


def _read_at_most(stream, size: int) -> bytearray:
    """Up to `size` bytes from a binary stream, a chunk at a time: memory follows what the stream
    holds, not what a (possibly corrupt) header promised."""
    buf = bytearray()
    while len(buf) < size:
        chunk = stream.read(min(size - len(buf), _READ_CHUNK))
        if not chunk:
            break
        buf += chunk
    return buf


def _read_npy(fp, size: int, what: str, name: str) -> np.ndarray:
    """The array of one .npy stream of `size` bytes. Its header is checked against the bytes that
    follow it before any array is allocated (a header may promise terabytes); object arrays
    (pickles) are refused. numpy's own reader would allocate first and pickle on request."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(fp)
        if version not in _NPY_VERSIONS:
            raise ValueError(f"format version {version} is not one of {_NPY_VERSIONS}")
        # a (3, 0) header is a (2, 0) header in utf-8: shape and item size read alike in latin-1
        read_header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        shape, fortran, dt = read_header(fp)
        start = fp.tell()
    except Exception as err:  # noqa: BLE001 - numpy raises ValueError, SyntaxError, EOF...: one message
        raise ValueError(f"{name}: {what} is not a .npy array ({_one_line(err)})") from None
    if dt.hasobject:
        raise ValueError(f"{name}: {what} holds Python objects (a pickle, dtype {dt}); only plain arrays are read")
    if dt.itemsize == 0:
        raise ValueError(f"{name}: {what} holds items of dtype {dt}, of size 0")
    count = math.prod(shape)
    need = count * dt.itemsize
    if size - start < need:
        raise ValueError(f"{name}: {what} is cut short: its header promises {shape} x {dt} = {need} bytes "
                         f"of data, the file holds {max(size - start, 0)}")
    try:
        raw = _read_at_most(fp, need)
    except Exception as err:  # noqa: BLE001 - a corrupt zip member (bad CRC, bad deflate stream)
        raise ValueError(f"{name}: {what} cannot be read ({_one_line(err)})") from None
    if len(raw) != need:
        raise ValueError(f"{name}: {what} is cut short: {len(raw)} of the {need} bytes its header promises")
    try:
        flat = np.frombuffer(raw, dtype=dt, count=count) if count else np.empty(0, dtype=dt)
        return flat.reshape(shape, order="F" if fortran else "C")
    except (ValueError, TypeError) as err:     # a shape numpy cannot hold (over 64 dimensions)
        raise ValueError(f"{name}: {what} has an unusable shape {shape} ({_one_line(err)})") from None


_NPZ_KEYS = ("images", "x", "data", "atoms", "arr_0")


def _read_npz(p: Path, images_key: str | None, labels_key: str, want_labels: bool):
    """(images, labels or None) from a .npz (a zip of .npy members), each member read by _read_npy."""
    what = repr(str(p))
    try:
        zf = zipfile.ZipFile(p)
    except Exception as err:  # noqa: BLE001 - not a zip, a cut zip: BadZipFile, OSError, EOFError...
        raise ValueError(f"path_or_array: {what} is not a readable .npz file ({_one_line(err)})") from None
    with zf:
        members = {m.filename[:-4]: m for m in zf.infolist() if m.filename.endswith(".npy")}
        keys = [images_key] if images_key else [k for k in _NPZ_KEYS if k in members]
        if not keys or keys[0] not in members:
            raise ValueError(f"images_key: {what} holds {sorted(members)}, none of them "
                             f"{images_key or 'images/x/data/atoms/arr_0'!r}")
        out = []
        for key in [keys[0]] + ([labels_key] if want_labels and labels_key in members else []):
            member = f"member {key!r} of {what}"
            try:
                fp = zf.open(members[key])
            except Exception as err:  # noqa: BLE001 - a bad local header, an encrypted member...
                raise ValueError(f"path_or_array: {member} cannot be opened ({_one_line(err)})") from None
            with fp:                  # _read_npy turns every read error into one ValueError
                out.append(_read_npy(fp, members[key].file_size, member, "path_or_array"))
    return out[0], (out[1] if len(out) > 1 else None)


def _tensor_to_numpy(t: torch.Tensor) -> np.ndarray:
    """A tensor's values as numpy; bfloat16 and other floats numpy lacks go through float32."""
    try:
        t = t.detach()
        if t.layout != torch.strided:
            t = t.to_dense()
        if t.is_floating_point() and t.dtype not in (torch.float16, torch.float32, torch.float64):
            t = t.to(torch.float32)
        return t.cpu().numpy()
    except Exception as err:  # noqa: BLE001 - meta tensors, quantized tensors...
        raise TypeError(f"path_or_array: cannot read a {t.dtype} tensor on {t.device} ({_one_line(err)})") from None


def from_array(path_or_array, *, labels=None, image_shape=None, images_key: str | None = None,
               labels_key: str = "labels", dtype=torch.float32) -> ImageData:
    """Images from an array, a .npy file or a .npz file (images under `images_key`, default
    the first of 'images', 'x', 'data', 'atoms', 'arr_0'; labels under `labels_key` if present).
    Shapes: (N, C, H, W), (N, H, W) (one channel) or (N, d) with `image_shape` (or d a square).
    Pixel range: uint8 is scaled to [0, 1]; anything else is kept as it is and pixel_range is
    its observed (min, max). Values must be finite and fit `dtype` (float64 data beyond
    float32's range need dtype=torch.float64).
    Labels: integers (any size) or strings; each distinct value is a class, class_names its
    value as a string in sorted order, and labels index class_names (so labels 0..K-1 that all
    occur keep their values, and labels [0, 10**9] become [0, 1] with names ('0', '1000000000')).
    Files are read without unpickling, and a header is checked against the file's size first."""
    from .imaging import as_image_shape

    dtype = _check_dtype(dtype)
    if images_key is not None and not isinstance(images_key, str):
        raise TypeError(f"images_key: expected a name or None, got {type(images_key).__name__}")
    if not isinstance(labels_key, str):
        raise TypeError(f"labels_key: expected a name, got {type(labels_key).__name__}")
    what, labels_name, labels_where = "an array", "labels", ""
    if isinstance(path_or_array, (str, os.PathLike)):
        p = _check_path(path_or_array, folder=False, name="path_or_array")
        what = repr(str(p))
        suffix = p.suffix.lower()
        if suffix == ".npy":
            try:
                size = p.stat().st_size
                with open(p, "rb") as fp:
                    images = _read_npy(fp, size, what, "path_or_array")
            except OSError as err:
                raise ValueError(f"path_or_array: cannot read {what} ({_one_line(err)})") from None
        elif suffix == ".npz":
            images, stored = _read_npz(p, images_key, labels_key, labels is None)
            if stored is not None:
                labels, labels_name, labels_where = stored, "path_or_array", f"the labels {labels_key!r} in {what}: "
        else:
            raise ValueError(f"path_or_array: expected a .npy or .npz file, got {what}")
    elif isinstance(path_or_array, torch.Tensor):
        images = _tensor_to_numpy(path_or_array)
    elif isinstance(path_or_array, np.ndarray):
        images = path_or_array
    else:
        raise TypeError(f"path_or_array: expected a path or an array, got {type(path_or_array).__name__}")
    if images.ndim not in (2, 3, 4) or images.shape[0] < 1:
        raise ValueError(f"path_or_array: expected images of shape (N, C, H, W), (N, H, W) or (N, d) "
                         f"with N >= 1, got {images.shape}")
    if image_shape is not None:
        shape = as_image_shape(image_shape)
    elif images.ndim == 2:
        side = math.isqrt(images.shape[1])
        if side * side != images.shape[1]:
            raise ValueError(f"image_shape: rows of d = {images.shape[1]} are not square images; pass image_shape")
        shape = (1, side, side)
    else:
        shape = (1, *images.shape[1:]) if images.ndim == 3 else tuple(images.shape[1:])
    if math.prod(shape) != math.prod(images.shape[1:]):
        raise ValueError(f"image_shape: {shape} does not match images of shape {images.shape[1:]}")
    return _images_to_data(images, labels, None, shape, f"images from {what}", dtype,
                           labels_name=labels_name, labels_where=labels_where)


_GRAY16 = ("I;16", "I;16B", "I;16L", "I;16N", "I")      # PIL's modes for a 16-bit gray PNG


def _open_image(path: Path, read):
    """read(img) on the opened image; any failure to decode the file becomes one ValueError."""
    image = _require("PIL.Image", "pillow")
    try:
        with image.open(path) as img:
            return read(img)
    except Exception as err:  # noqa: BLE001 - PIL raises OSError, SyntaxError, zlib, struct errors...
        raise ValueError(f"path: {str(path)!r} is not a readable image ({_one_line(err)})") from None


def _png_array(path: Path, mode: str) -> np.ndarray:
    """One PNG as (H, W, C) float64 in [0, 1], C = 1 for mode 'L', 3 for 'RGB'. 8-bit values are
    divided by 255; 16-bit gray by 65535 in either mode (for 'RGB' the channel is repeated:
    converting it with PIL would clip it to 255 first)."""
    def read(img):
        if img.mode in _GRAY16:
            return True, np.asarray(img, dtype=np.float64)
        return False, np.asarray(img.convert(mode), dtype=np.float64).reshape(img.height, img.width, -1)

    deep, arr = _open_image(path, read)
    if not deep:
        return arr / 255.0
    if arr.ndim != 2 or arr.size == 0 or arr.min() < 0 or arr.max() > 65535:
        raise ValueError(f"path: {str(path)!r} is not a 16-bit gray image (values or shape out of range)")
    arr = arr[..., None] / 65535.0
    return np.repeat(arr, 3, axis=2) if mode == "RGB" else arr


def _is_gray(path: Path) -> bool:
    return _open_image(path, lambda img: img.mode in ("1", "L", "LA", *_GRAY16))


def from_png_folder(path, *, mode: str = "auto", dtype=torch.float32) -> ImageData:
    """The PNGs of a folder, all of one size: labels from subfolder names (sorted; one subfolder
    per class) or, if the PNGs lie flat in the folder, unlabelled (label 0). mode: 'L' gray,
    'RGB' color, 'auto' gray when every file is gray. Pixels in [0, 1]: 8-bit / 255, 16-bit
    gray / 65535 (repeated over three channels for 'RGB'). A file that cannot be decoded is a
    ValueError naming it."""
    p = _check_path(path, folder=True)
    if mode not in ("auto", "L", "RGB"):
        raise ValueError(f"mode: expected 'auto', 'L' or 'RGB', got {mode!r}")
    dtype = _check_dtype(dtype)

    def pngs(folder):
        return sorted(f for f in folder.iterdir() if f.is_file() and f.suffix.lower() == ".png")

    flat = pngs(p)
    subs = sorted(d for d in p.iterdir() if d.is_dir() and pngs(d))
    if flat and subs:
        raise ValueError(f"path: {str(p)!r} holds PNGs both at the top and in subfolders; use one layout")
    files = flat or [f for d in subs for f in pngs(d)]
    if not files:
        raise ValueError(f"path: no .png files in {str(p)!r} or its subfolders")
    labels = None if flat else np.concatenate([np.full(len(pngs(d)), i) for i, d in enumerate(subs)])
    if mode == "auto":
        mode = "L" if all(_is_gray(f) for f in files) else "RGB"
    arrays = [_png_array(f, mode) for f in files]
    if len({a.shape for a in arrays}) > 1:
        odd = next(f for f, a in zip(files, arrays) if a.shape != arrays[0].shape)
        raise ValueError(f"path: images differ in size: {files[0].name!r} is {arrays[0].shape[:2]}, "
                         f"{odd.name!r} is {arrays[files.index(odd)].shape[:2]}")
    h, w, c = arrays[0].shape
    atoms = torch.from_numpy(np.stack(arrays).transpose(0, 3, 1, 2).reshape(len(files), -1)).to(dtype)
    names = tuple(d.name for d in subs) if subs else ("unlabelled",)
    lab, _ = _labels_and_names(labels, len(files), "path", class_names=names)
    return ImageData(atoms, lab, (c, h, w), (0.0, 1.0), names, f"{len(files)} PNGs from {str(p)!r}")


_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path) -> np.ndarray:
    """An array from an idx file (the MNIST format), gzip-compressed or not, with the values and
    dtype its type code states (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32,
    0x0E float64; native byte order). The data must be exactly the size the header states; a
    compressed file is decompressed a chunk at a time up to that size (no gzip bomb, no
    allocation of what a corrupt header promises)."""
    p = _check_path(path, folder=False)
    what = repr(str(p))
    try:
        f = open(p, "rb")
    except OSError as err:
        raise ValueError(f"path: cannot read {what} ({_one_line(err)})") from None
    with f:
        compressed = f.read(2) == b"\x1f\x8b"
        f.seek(0)
        stream = gzip.GzipFile(fileobj=f, mode="rb") if compressed else f

        def read(size: int) -> bytearray:
            try:
                return _read_at_most(stream, size)
            except (OSError, EOFError, zlib.error) as err:    # BadGzipFile is an OSError
                kind = "a broken gzip file" if compressed else "unreadable"
                raise ValueError(f"path: {what} is {kind} ({_one_line(err)})") from None

        head = read(4)
        if len(head) < 4 or head[:2] != b"\x00\x00" or head[2] not in _IDX_DTYPES:
            raise ValueError(f"path: {what} is not an idx file (bad magic number)")
        ndim = head[3]
        raw_dims = read(4 * ndim)
        if len(raw_dims) < 4 * ndim:
            raise ValueError(f"path: {what} is cut short in its header: it names {ndim} dimensions, "
                             f"the file ends after {len(raw_dims) // 4}")
        dims = struct.unpack(f">{ndim}I", bytes(raw_dims))
        dt = np.dtype(_IDX_DTYPES[head[2]])
        need = math.prod(dims) * dt.itemsize
        body = read(need + 1)       # one byte more: a file longer than its header says is wrong too
    if len(body) != need:
        held = f"more than {need}" if len(body) > need else str(len(body))
        raise ValueError(f"path: {what} holds {held} bytes of data, its header says {dims} x {dt.itemsize} = {need}")
    try:
        return np.frombuffer(body, dt).reshape(dims).astype(dt.newbyteorder("="))
    except ValueError as err:       # a shape numpy cannot hold (over 64 dimensions)
        raise ValueError(f"path: {what} has an unusable shape {dims} ({_one_line(err)})") from None


def _find(folder: Path, names: list[str], what: str) -> Path:
    for sub in ("", "raw", "MNIST/raw"):
        for name in names:
            if (folder / sub / name).is_file():
                return folder / sub / name
    raise ValueError(f"path: no {what} in {str(folder)!r} (looked for {names[0]}[.gz], also under raw/)")


def _check_class_names(class_names) -> tuple[str, ...]:
    if isinstance(class_names, (str, bytes)) or not hasattr(class_names, "__iter__"):
        raise TypeError(f"class_names: expected a sequence of names, got {type(class_names).__name__}")
    names = tuple(str(c) for c in class_names)
    if not names:
        raise ValueError("class_names: expected at least one name")
    return names


def mnist(path, *, split: str = "train", dtype=torch.float32,
          class_names=tuple(str(i) for i in range(10))) -> ImageData:
    """MNIST from its idx files already on disk (`path`: the folder holding
    train-images-idx3-ubyte[.gz] etc., or torchvision's MNIST/raw). split: 'train' (60000)
    or 'test' (10000). Images (1, H, W) ((1, 28, 28) for MNIST). Pixels: unsigned bytes (type
    0x08, MNIST's own) are scaled to [0, 1] (bytes / 255); any other idx type (int8, int16,
    int32, float32, float64) is kept with its stored values, as `from_array` keeps non-uint8
    arrays, and pixel_range is their observed (min, max); they must be finite and fit `dtype`.
    Labels index class_names and must lie below len(class_names). Fashion-MNIST uses the same
    files: pass its class_names."""
    p = _check_path(path, folder=True)
    if split not in ("train", "test"):
        raise ValueError(f"split: expected 'train' or 'test', got {split!r}")
    dtype = _check_dtype(dtype)
    class_names = _check_class_names(class_names)
    stem = "train" if split == "train" else "t10k"
    image_file = _find(p, [f"{stem}-images-idx3-ubyte", f"{stem}-images-idx3-ubyte.gz",
                           f"{stem}-images.idx3-ubyte"], f"{split} images")
    label_file = _find(p, [f"{stem}-labels-idx1-ubyte", f"{stem}-labels-idx1-ubyte.gz",
                           f"{stem}-labels.idx1-ubyte"], f"{split} labels")
    images, labels = read_idx(image_file), read_idx(label_file)
    if images.ndim != 3 or labels.shape != (images.shape[0],):
        raise ValueError(f"path: images {images.shape} and labels {labels.shape} do not match")
    pixels = "pixels in [0, 1]" if images.dtype == np.uint8 else f"{images.dtype} values as stored"
    return _images_to_data(images, labels, class_names, (1, *images.shape[1:]),
                           f"MNIST {split} from {str(p)!r}, {pixels}", dtype, name="path",
                           labels_name="path", labels_where=f"the labels in {str(label_file)!r}: ",
                           names_name="class_names")


_PICKLE_ALLOWED = {(mod, name) for mod in ("numpy", "numpy.core.multiarray", "numpy._core.multiarray",
                                            "numpy.core.numeric", "numpy._core.numeric")
                   for name in ("_reconstruct", "ndarray", "dtype", "_frombuffer", "scalar")}
_PICKLE_ALLOWED.add(("_codecs", "encode"))     # how protocol 2 stores bytes from Python 3


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickle plain containers and numpy arrays only: a pickle can run any code it names."""

    def find_class(self, module, name):
        if (module, name) in _PICKLE_ALLOWED:
            import importlib
            return getattr(importlib.import_module(module), name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR batch")


def _load_batch(path: Path) -> dict:
    """A CIFAR pickle as a dict with str keys; anything else, or a corrupt file, is a ValueError."""
    try:
        with open(path, "rb") as f:
            batch = _ArrayUnpickler(f, encoding="bytes").load()
    except Exception as err:  # noqa: BLE001 - a corrupt pickle raises nearly anything; only numpy is built
        raise ValueError(f"path: {str(path)!r} is not a CIFAR-10 python batch ({_one_line(err)})") from None
    if not isinstance(batch, dict):
        raise ValueError(f"path: {str(path)!r} is not a CIFAR-10 python batch (it holds a "
                         f"{type(batch).__name__}, not a dict)")
    return {(k.decode("utf-8", "replace") if isinstance(k, bytes) else k): v for k, v in batch.items()}


def _batch_entry(batch: dict, key: str, path: Path):
    if key not in batch:
        raise ValueError(f"path: {str(path)!r} has no {key!r} entry (it has {sorted(map(str, batch))})")
    return batch[key]


def _batch_pixels(batch: dict, path: Path) -> np.ndarray:
    """A batch's (N, 3072) bytes: integers in 0..255, refused otherwise (a cast would wrap them)."""
    try:
        data = np.asarray(_batch_entry(batch, "data", path))
    except ValueError:
        raise
    except Exception as err:  # noqa: BLE001 - ragged lists, odd objects
        raise ValueError(f"path: 'data' in {str(path)!r} is not an array ({_one_line(err)})") from None
    if data.ndim != 2 or data.shape[1] != 3072:
        raise ValueError(f"path: 'data' in {str(path)!r} has shape {data.shape}, expected (N, 3072)")
    if data.dtype.kind not in "iu":
        raise ValueError(f"path: 'data' in {str(path)!r} has dtype {data.dtype}, expected bytes 0..255")
    if data.size and (int(data.min()) < 0 or int(data.max()) > 255):
        raise ValueError(f"path: 'data' in {str(path)!r} holds values in [{int(data.min())}, {int(data.max())}], "
                         f"expected bytes 0..255")
    return data.astype(np.uint8)


def _meta_names(p: Path) -> tuple[str, ...] | None:
    """The label_names of batches.meta, or None without the file (or the entry)."""
    if not (p / "batches.meta").is_file():
        return None
    meta = _load_batch(p / "batches.meta").get("label_names")
    if meta is None:
        return None
    if isinstance(meta, (str, bytes)) or not isinstance(meta, (list, tuple, np.ndarray)) or len(meta) == 0:
        raise ValueError(f"path: label_names in {str(p / 'batches.meta')!r} is not a list of names")
    return tuple(n.decode("utf-8", "replace") if isinstance(n, bytes) else str(n) for n in meta)


def cifar10(path, *, split: str = "train", dtype=torch.float32) -> ImageData:
    """CIFAR-10 from its python pickle batches already on disk (`path`: cifar-10-batches-py, or
    the folder holding it). split: 'train' (data_batch_1..5, 50000) or 'test' (test_batch, 10000).
    Images (3, 32, 32), pixels in [0, 1] (bytes / 255; a value outside 0..255 is refused).
    Labels index the class names of batches.meta (else '0'..'9'). Only numpy arrays are
    unpickled; a corrupt or malformed batch is a ValueError naming it."""
    p = _check_path(path, folder=True)
    if (p / "cifar-10-batches-py").is_dir():
        p = p / "cifar-10-batches-py"
    if split not in ("train", "test"):
        raise ValueError(f"split: expected 'train' or 'test', got {split!r}")
    dtype = _check_dtype(dtype)
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    files = [p / n for n in names if (p / n).is_file()]
    if not files:
        raise ValueError(f"path: no {' / '.join(names[:1])}... CIFAR-10 batches in {str(p)!r}")
    class_names = _meta_names(p) or tuple(str(i) for i in range(10))
    images, labels = [], []
    for f in files:
        batch = _load_batch(f)
        data = _batch_pixels(batch, f)
        lab, _ = _labels_and_names(_batch_entry(batch, "labels", f), len(data), "path", class_names=class_names,
                                   where=f"the labels in {str(f)!r}: ")
        images.append(data)
        labels.append(lab)
    images = np.concatenate(images)
    # a CIFAR row is the R plane, then G, then B, each row-major: already (C, H, W) order
    return _images_to_data(images, torch.cat(labels), class_names, (3, 32, 32),
                           f"CIFAR-10 {split} ({len(files)} batches) from {str(p)!r}, pixels in [0, 1]", dtype,
                           name="path", labels_name="path")
