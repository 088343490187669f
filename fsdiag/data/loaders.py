"""A user's image files and data set folders: a folder of PNGs, idx files (MNIST), CIFAR-10's
python batches."""
from __future__ import annotations

import gzip
import math
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from .arrays import read_at_most
from .checks import check_dtype, check_path, one_line, require
from .images import ImageData, images_to_data, labels_and_names

__all__ = ["from_png_folder", "mnist", "read_idx", "cifar10"]

_GRAY16 = ("I;16", "I;16B", "I;16L", "I;16N", "I")      # PIL's modes for a 16-bit gray PNG


def _open_image(path: Path, read):
    """read(img) on the opened image; any failure to decode the file becomes one ValueError."""
    image = require("PIL.Image", "pillow")
    try:
        with image.open(path) as img:
            return read(img)
    except Exception as err:  # noqa: BLE001 - PIL raises OSError, SyntaxError, zlib, struct errors...
        raise ValueError(f"path: {str(path)!r} is not a readable image ({one_line(err)})") from None


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
    p = check_path(path, folder=True)
    if mode not in ("auto", "L", "RGB"):
        raise ValueError(f"mode: expected 'auto', 'L' or 'RGB', got {mode!r}")
    dtype = check_dtype(dtype)

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
    lab, _ = labels_and_names(labels, len(files), "path", class_names=names)
    return ImageData(atoms, lab, (c, h, w), (0.0, 1.0), names, f"{len(files)} PNGs from {str(p)!r}")


_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path) -> np.ndarray:
    """An array from an idx file (the MNIST format), gzip-compressed or not, with the values and
    dtype its type code states (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32,
    0x0E float64; native byte order). The data must be exactly the size the header states; a
    compressed file is decompressed a chunk at a time up to that size (no gzip bomb, no
    allocation of what a corrupt header promises)."""
    p = check_path(path, folder=False)
    what = repr(str(p))
    try:
        f = open(p, "rb")
    except OSError as err:
        raise ValueError(f"path: cannot read {what} ({one_line(err)})") from None
    with f:
        compressed = f.read(2) == b"\x1f\x8b"
        f.seek(0)
        stream = gzip.GzipFile(fileobj=f, mode="rb") if compressed else f

        def read(size: int) -> bytearray:
            try:
                return read_at_most(stream, size)
            except (OSError, EOFError, zlib.error) as err:    # BadGzipFile is an OSError
                kind = "a broken gzip file" if compressed else "unreadable"
                raise ValueError(f"path: {what} is {kind} ({one_line(err)})") from None

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
        raise ValueError(f"path: {what} has an unusable shape {dims} ({one_line(err)})") from None


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
    p = check_path(path, folder=True)
    if split not in ("train", "test"):
        raise ValueError(f"split: expected 'train' or 'test', got {split!r}")
    dtype = check_dtype(dtype)
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
    return images_to_data(images, labels, class_names, (1, *images.shape[1:]),
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
        raise ValueError(f"path: {str(path)!r} is not a CIFAR-10 python batch ({one_line(err)})") from None
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
        raise ValueError(f"path: 'data' in {str(path)!r} is not an array ({one_line(err)})") from None
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
    p = check_path(path, folder=True)
    if (p / "cifar-10-batches-py").is_dir():
        p = p / "cifar-10-batches-py"
    if split not in ("train", "test"):
        raise ValueError(f"split: expected 'train' or 'test', got {split!r}")
    dtype = check_dtype(dtype)
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    files = [p / n for n in names if (p / n).is_file()]
    if not files:
        raise ValueError(f"path: no {' / '.join(names[:1])}... CIFAR-10 batches in {str(p)!r}")
    class_names = _meta_names(p) or tuple(str(i) for i in range(10))
    images, labels = [], []
    for f in files:
        batch = _load_batch(f)
        data = _batch_pixels(batch, f)
        lab, _ = labels_and_names(_batch_entry(batch, "labels", f), len(data), "path", class_names=class_names,
                                  where=f"the labels in {str(f)!r}: ")
        images.append(data)
        labels.append(lab)
    images = np.concatenate(images)
    # a CIFAR row is the R plane, then G, then B, each row-major: already (C, H, W) order
    return images_to_data(images, torch.cat(labels), class_names, (3, 32, 32),
                          f"CIFAR-10 {split} ({len(files)} batches) from {str(p)!r}, pixels in [0, 1]", dtype,
                          name="path", labels_name="path")
