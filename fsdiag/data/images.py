"""The container of a data set (`ImageData`), the leave-out split of its truths (`hold_out`),
and how an array of images and labels becomes an `ImageData` (shared by the loaders)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from .._checks import check_int, make_generator
from .checks import one_line

__all__ = ["ImageData", "HeldOut", "hold_out"]


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
        from ..prior import EmpiricalPrior
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


def labels_and_names(labels, n: int, name: str = "labels", *, class_names: tuple[str, ...] | None = None,
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
        raise TypeError(f"{name}: {where}expected a sequence of integer or string labels ({one_line(err)})") from None
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


def images_to_data(images: np.ndarray, labels, class_names, image_shape, what: str, dtype, *,
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
    lab, names = labels_and_names(labels, n, labels_name, class_names=class_names, where=labels_where,
                                  names_name=names_name)
    return ImageData(atoms, lab, image_shape, rng, names, what)
