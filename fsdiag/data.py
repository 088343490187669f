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
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from ._checks import as_tensor, check_int, make_generator

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


def _check_path(path, *, folder: bool | None = None) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path: expected a file or folder path, got {type(path).__name__}")
    p = Path(path)
    if not p.exists():
        raise ValueError(f"path: {str(p)!r} does not exist")
    if folder is True and not p.is_dir():
        raise ValueError(f"path: expected a folder, got the file {str(p)!r}")
    if folder is False and not p.is_file():
        raise ValueError(f"path: expected a file, got the folder {str(p)!r}")
    return p


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
def _labels_and_names(labels, n: int, name: str = "labels") -> tuple[torch.Tensor, tuple[str, ...]]:
    """Integer labels are kept (class names '0'..'max'); strings become codes in sorted order."""
    if labels is None:
        return torch.zeros(n, dtype=torch.long), ("unlabelled",)
    arr = np.asarray(labels)
    if arr.shape != (n,):
        raise ValueError(f"{name}: expected shape ({n},) to match the images, got {arr.shape}")
    if arr.dtype.kind in "iu":
        if n and arr.min() < 0:
            raise ValueError(f"{name}: expected non-negative integer labels, got min {arr.min()}")
        top = int(arr.max()) + 1 if n else 0
        return torch.from_numpy(arr.astype(np.int64)), tuple(str(i) for i in range(top))
    if arr.dtype.kind in "USO":
        names, codes = np.unique(arr.astype(str), return_inverse=True)
        return torch.from_numpy(codes.astype(np.int64).reshape(n)), tuple(names.tolist())
    raise TypeError(f"{name}: expected integer or string labels, got dtype {arr.dtype}")


def _images_to_data(images: np.ndarray, labels, class_names, image_shape, what: str, dtype) -> ImageData:
    """(N, ...) uint8 or float images to ImageData: uint8 scaled to [0, 1], floats kept."""
    if images.dtype == np.uint8:
        atoms, rng = _from_uint8(images.reshape(len(images), -1), dtype), (0.0, 1.0)
    elif images.dtype.kind in "fiub":
        atoms = as_tensor(images.reshape(len(images), -1).astype(np.float64), "path_or_array").to(dtype)
        rng = (float(atoms.min()), float(atoms.max())) if atoms.numel() else (0.0, 0.0)
    else:
        raise TypeError(f"path_or_array: expected numeric images, got dtype {images.dtype}")
    lab, names = _labels_and_names(labels, len(images))
    return ImageData(atoms, lab, image_shape, rng, tuple(class_names or names), what)


def from_array(path_or_array, *, labels=None, image_shape=None, images_key: str | None = None,
               labels_key: str = "labels", dtype=torch.float32) -> ImageData:
    """Images from an array, a .npy file or a .npz file (images under `images_key`, default
    the first of 'images', 'x', 'data', 'atoms', 'arr_0'; labels under `labels_key` if present).
    Shapes: (N, C, H, W), (N, H, W) (one channel) or (N, d) with `image_shape` (or d a square).
    Pixel range: uint8 is scaled to [0, 1]; anything else is kept as it is and pixel_range is
    its observed (min, max)."""
    from .imaging import as_image_shape

    dtype = _check_dtype(dtype)
    what = "an array"
    if isinstance(path_or_array, (str, os.PathLike)):
        p = _check_path(path_or_array, folder=False)
        what = str(p)
        if p.suffix == ".npy":
            images = np.load(p, allow_pickle=False)
        elif p.suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                keys = [images_key] if images_key else [k for k in ("images", "x", "data", "atoms", "arr_0") if k in z]
                if not keys or keys[0] not in z:
                    raise ValueError(f"images_key: {str(p)!r} holds {sorted(z.files)}, none of them "
                                     f"{images_key or 'images/x/data/atoms/arr_0'!r}")
                images = z[keys[0]]
                if labels is None and labels_key in z:
                    labels = z[labels_key]
        else:
            raise ValueError(f"path_or_array: expected a .npy or .npz file, got {str(p)!r}")
    elif isinstance(path_or_array, torch.Tensor):
        images = path_or_array.detach().cpu().numpy()
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
    return _images_to_data(images, labels, None, shape, f"images from {what}", dtype)


def _png_array(path: Path, mode: str) -> np.ndarray:
    """One PNG as (H, W, C) float64 in [0, 1] (8- and 16-bit), C = 1 for mode 'L', 3 for 'RGB'."""
    with _require("PIL.Image", "pillow").open(path) as img:
        if img.mode in ("I;16", "I;16B", "I") and mode == "L":
            return np.asarray(img, dtype=np.float64)[..., None] / 65535.0
        return np.asarray(img.convert(mode), dtype=np.float64).reshape(img.height, img.width, -1) / 255.0


def _is_gray(path: Path) -> bool:
    with _require("PIL.Image", "pillow").open(path) as img:
        return img.mode in ("1", "L", "LA", "I", "I;16", "I;16B")


def from_png_folder(path, *, mode: str = "auto", dtype=torch.float32) -> ImageData:
    """The PNGs of a folder, all of one size: labels from subfolder names (sorted; one subfolder
    per class) or, if the PNGs lie flat in the folder, unlabelled (label 0). mode: 'L' gray,
    'RGB' color, 'auto' gray when every file is gray. Pixels in [0, 1] (8- or 16-bit)."""
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
        raise ValueError(f"path: images differ in size: {files[0].name} is {arrays[0].shape[:2]}, "
                         f"{odd.name} is {arrays[files.index(odd)].shape[:2]}")
    h, w, c = arrays[0].shape
    atoms = torch.from_numpy(np.stack(arrays).transpose(0, 3, 1, 2).reshape(len(files), -1)).to(dtype)
    lab, _ = _labels_and_names(labels, len(files))
    names = tuple(d.name for d in subs) if subs else ("unlabelled",)
    return ImageData(atoms, lab, (c, h, w), (0.0, 1.0), names, f"{len(files)} PNGs from {str(p)!r}")


_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path) -> np.ndarray:
    """An array from an idx file (the MNIST format), gzip-compressed or not."""
    p = _check_path(path, folder=False)
    with open(p, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"path: {str(p)!r} is not an idx file (bad magic number)")
    ndim = raw[3]
    dims = tuple(int(v) for v in np.frombuffer(raw, ">u4", ndim, 4))
    dt = np.dtype(_IDX_DTYPES[raw[2]])
    start = 4 + 4 * ndim
    if len(raw) - start != math.prod(dims) * dt.itemsize:
        raise ValueError(f"path: {str(p)!r} holds {len(raw) - start} bytes of data, its header says "
                         f"{dims} x {dt.itemsize}")
    return np.frombuffer(raw, dt, offset=start).reshape(dims).astype(dt.newbyteorder("="))


def _find(folder: Path, names: list[str], what: str) -> Path:
    for sub in ("", "raw", "MNIST/raw"):
        for name in names:
            if (folder / sub / name).is_file():
                return folder / sub / name
    raise ValueError(f"path: no {what} in {str(folder)!r} (looked for {names[0]}[.gz], also under raw/)")


def mnist(path, *, split: str = "train", dtype=torch.float32,
          class_names=tuple(str(i) for i in range(10))) -> ImageData:
    """MNIST from its idx files already on disk (`path`: the folder holding
    train-images-idx3-ubyte[.gz] etc., or torchvision's MNIST/raw). split: 'train' (60000)
    or 'test' (10000). Images (1, 28, 28), pixels in [0, 1] (bytes / 255). Fashion-MNIST uses
    the same files: pass its class_names."""
    p = _check_path(path, folder=True)
    if split not in ("train", "test"):
        raise ValueError(f"split: expected 'train' or 'test', got {split!r}")
    stem = "train" if split == "train" else "t10k"
    images = read_idx(_find(p, [f"{stem}-images-idx3-ubyte", f"{stem}-images-idx3-ubyte.gz",
                                f"{stem}-images.idx3-ubyte"], f"{split} images"))
    labels = read_idx(_find(p, [f"{stem}-labels-idx1-ubyte", f"{stem}-labels-idx1-ubyte.gz",
                                f"{stem}-labels.idx1-ubyte"], f"{split} labels"))
    if images.ndim != 3 or labels.shape != (images.shape[0],):
        raise ValueError(f"path: images {images.shape} and labels {labels.shape} do not match")
    return _images_to_data(images.astype(np.uint8), labels.astype(np.int64), tuple(class_names),
                           (1, *images.shape[1:]), f"MNIST {split} from {str(p)!r}, pixels in [0, 1]", dtype)


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
    with open(path, "rb") as f:
        try:
            batch = _ArrayUnpickler(f, encoding="bytes").load()
        except (pickle.UnpicklingError, EOFError, ValueError) as err:
            raise ValueError(f"path: {str(path)!r} is not a CIFAR-10 python batch ({err})") from None
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in batch.items()}


def cifar10(path, *, split: str = "train", dtype=torch.float32) -> ImageData:
    """CIFAR-10 from its python pickle batches already on disk (`path`: cifar-10-batches-py, or
    the folder holding it). split: 'train' (data_batch_1..5, 50000) or 'test' (test_batch, 10000).
    Images (3, 32, 32), pixels in [0, 1] (bytes / 255). Only numpy arrays are unpickled."""
    p = _check_path(path, folder=True)
    if (p / "cifar-10-batches-py").is_dir():
        p = p / "cifar-10-batches-py"
    if split not in ("train", "test"):
        raise ValueError(f"split: expected 'train' or 'test', got {split!r}")
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    files = [p / n for n in names if (p / n).is_file()]
    if not files:
        raise ValueError(f"path: no {' / '.join(names[:1])}... CIFAR-10 batches in {str(p)!r}")
    batches = [_load_batch(f) for f in files]
    images = np.concatenate([np.asarray(b["data"], dtype=np.uint8) for b in batches])
    labels = np.concatenate([np.asarray(b["labels"], dtype=np.int64) for b in batches])
    if images.ndim != 2 or images.shape[1] != 3072 or labels.shape != (images.shape[0],):
        raise ValueError(f"path: expected data (N, 3072) and N labels, got {images.shape} and {labels.shape}")
    class_names = tuple(str(i) for i in range(10))
    if (p / "batches.meta").is_file():
        meta = _load_batch(p / "batches.meta").get("label_names")
        if meta is not None:
            class_names = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in meta)
    # a CIFAR row is the R plane, then G, then B, each row-major: already (C, H, W) order
    return _images_to_data(images, labels, class_names, (3, 32, 32),
                           f"CIFAR-10 {split} ({len(files)} batches) from {str(p)!r}, pixels in [0, 1]", dtype)
