"""A user's arrays: in memory, or in .npy / .npz files read without unpickling (`from_array`)."""
from __future__ import annotations

import math
import os
import zipfile
from pathlib import Path

import numpy as np
import torch

from .checks import check_dtype, check_path, one_line
from .images import ImageData, images_to_data

__all__ = ["from_array"]

_NPY_VERSIONS = ((1, 0), (2, 0), (3, 0))
_READ_CHUNK = 1 << 24           # bytes read per call from a file whose size a header promised


def read_at_most(stream, size: int) -> bytearray:
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
        raise ValueError(f"{name}: {what} is not a .npy array ({one_line(err)})") from None
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
        raw = read_at_most(fp, need)
    except Exception as err:  # noqa: BLE001 - a corrupt zip member (bad CRC, bad deflate stream)
        raise ValueError(f"{name}: {what} cannot be read ({one_line(err)})") from None
    if len(raw) != need:
        raise ValueError(f"{name}: {what} is cut short: {len(raw)} of the {need} bytes its header promises")
    try:
        flat = np.frombuffer(raw, dtype=dt, count=count) if count else np.empty(0, dtype=dt)
        return flat.reshape(shape, order="F" if fortran else "C")
    except (ValueError, TypeError) as err:     # a shape numpy cannot hold (over 64 dimensions)
        raise ValueError(f"{name}: {what} has an unusable shape {shape} ({one_line(err)})") from None


_NPZ_KEYS = ("images", "x", "data", "atoms", "arr_0")


def _read_npz(p: Path, images_key: str | None, labels_key: str, want_labels: bool):
    """(images, labels or None) from a .npz (a zip of .npy members), each member read by _read_npy."""
    what = repr(str(p))
    try:
        zf = zipfile.ZipFile(p)
    except Exception as err:  # noqa: BLE001 - not a zip, a cut zip: BadZipFile, OSError, EOFError...
        raise ValueError(f"path_or_array: {what} is not a readable .npz file ({one_line(err)})") from None
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
                raise ValueError(f"path_or_array: {member} cannot be opened ({one_line(err)})") from None
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
        raise TypeError(f"path_or_array: cannot read a {t.dtype} tensor on {t.device} ({one_line(err)})") from None


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
    from ..imaging import as_image_shape

    dtype = check_dtype(dtype)
    if images_key is not None and not isinstance(images_key, str):
        raise TypeError(f"images_key: expected a name or None, got {type(images_key).__name__}")
    if not isinstance(labels_key, str):
        raise TypeError(f"labels_key: expected a name, got {type(labels_key).__name__}")
    what, labels_name, labels_where = "an array", "labels", ""
    if isinstance(path_or_array, (str, os.PathLike)):
        p = check_path(path_or_array, folder=False, name="path_or_array")
        what = repr(str(p))
        suffix = p.suffix.lower()
        if suffix == ".npy":
            try:
                size = p.stat().st_size
                with open(p, "rb") as fp:
                    images = _read_npy(fp, size, what, "path_or_array")
            except OSError as err:
                raise ValueError(f"path_or_array: cannot read {what} ({one_line(err)})") from None
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
    return images_to_data(images, labels, None, shape, f"images from {what}", dtype,
                          labels_name=labels_name, labels_where=labels_where)
