"""Bundled data, no download: scikit-learn's digits, scikit-image's LFW subset, patches cut
from scikit-image's bundled photos and textures, and procedurally drawn shapes."""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch

from .._checks import check_int, make_generator
from .checks import check_dtype, require
from .images import ImageData

__all__ = ["digits", "lfw_subset", "patches", "patch_coverage", "PATCH_SOURCES", "shapes", "SHAPES"]


# ------------------------------------------------------------------ bundled data
def digits(*, dtype=torch.float32) -> ImageData:
    """scikit-learn's 8x8 digits: 1797 images (1, 8, 8), 10 classes '0'..'9'; pixels in [0, 1]
    (the 0..16 counts divided by 16)."""
    d = require("sklearn.datasets", "scikit-learn").load_digits()
    atoms = torch.from_numpy(d.data / 16.0).to(check_dtype(dtype))
    return ImageData(atoms, torch.from_numpy(d.target).long(), (1, 8, 8), (0.0, 1.0),
                     tuple(str(i) for i in range(10)), "scikit-learn 8x8 digits, pixels in [0, 1]")


def lfw_subset(*, dtype=torch.float32) -> ImageData:
    """scikit-image's LFW subset: 200 gray images (1, 25, 25); the first 100 are faces (label 0,
    'face'), the last 100 non-faces cut from the photos' backgrounds (label 1); pixels in [0, 1]."""
    imgs = np.asarray(require("skimage.data", "scikit-image").lfw_subset(), dtype=np.float64)
    if imgs.max() > 1.0:       # documented as uint8 in some versions: scale to [0, 1] either way
        imgs = imgs / 255.0
    atoms = torch.from_numpy(imgs.reshape(len(imgs), -1)).to(check_dtype(dtype))
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
    img = getattr(require("skimage.data", "scikit-image"), name)()
    if img.ndim == 3 and img.shape[2] == 4:
        img = img[..., :3]
    img = np.asarray(img, dtype=np.float64) / (255.0 if img.dtype == np.uint8 else 1.0)
    if color:
        if img.ndim != 3:
            raise ValueError(f"sources: {name!r} is a gray image; color=True needs color sources")
        return img.astype(np.float32)
    if img.ndim == 3:
        img = require("skimage.color", "scikit-image").rgb2gray(img)
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
    dtype = check_dtype(dtype)
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
    from .._checks import resolve_device

    n = check_int(n, "n", maximum=10 ** 8)
    size = check_int(size, "size", minimum=4, maximum=4096)
    if isinstance(classes, str) or not hasattr(classes, "__iter__"):
        raise TypeError(f"classes: expected a sequence of names from SHAPES, got {classes!r}")
    classes = tuple(classes)
    if not classes or any(c not in SHAPES for c in classes) or len(set(classes)) != len(classes):
        raise ValueError(f"classes: expected distinct names from {SHAPES}, got {classes!r}")
    dtype, device = check_dtype(dtype), resolve_device("cpu" if device is None else device)
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
