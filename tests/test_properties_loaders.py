"""Property-based tests of fsdiag.data's loaders of a user's files (from_array, from_png_folder,
read_idx, mnist, cifar10) on corrupt input: random bytes, valid files cut at random offsets,
valid headers with the wrong amount of data, random label arrays (huge, negative, uint64,
beyond uint64, strings, floats) and random dtypes and values (NaN, inf, beyond float32).

Every call either returns an ImageData whose atoms are finite and shaped (N, C H W), whose
labels index its class names, or raises ValueError / TypeError with a one-line message that
starts with the caller's argument name ("name: ..." or "a, b: ..."). The files are written
into a fresh temporary folder per example; nothing is downloaded.
"""
import gzip
import io
import math
import pickle
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fsdiag import data as D

CI = settings(derandomize=True, deadline=None, print_blob=True, max_examples=30,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# ------------------------------------------------------------------ the property
def call(fn, *names):
    """fn() or None when it raised an allowed error: ValueError / TypeError, one line, naming one of `names`."""
    try:
        return fn()
    except (ValueError, TypeError) as err:
        msg = str(err)
        named = msg.split(":")[0].split(", ")          # "a: ..." or "a, b: ..." (a relation between two)
        assert any(n in named for n in names), f"error does not name any of {names}: {type(err).__name__}: {msg}"
        assert "\n" not in msg, f"a message of several lines: {msg!r}"
        return None


def valid(data, n=None, image_shape=None):
    """data is a well-formed ImageData: finite atoms (N, C H W), labels indexing its class names."""
    assert isinstance(data, D.ImageData)
    assert data.atoms.ndim == 2 and data.atoms.shape[1] == math.prod(data.image_shape) > 0
    assert data.atoms.is_floating_point() and bool(torch.isfinite(data.atoms).all())
    assert all(math.isfinite(v) for v in data.pixel_range)
    assert data.labels.dtype == torch.long and data.labels.shape == (data.n_atoms,)
    assert data.n_atoms >= 1 and len(data.class_names) >= 1
    assert 0 <= int(data.labels.min()) and int(data.labels.max()) < len(data.class_names)
    if n is not None:
        assert data.n_atoms == n
    if image_shape is not None:
        assert data.image_shape == image_shape
    return data


def folder():
    return tempfile.TemporaryDirectory(prefix="fsdiag-loaders-")


def cut(raw: bytes, frac: float) -> bytes:
    """raw cut short at a fraction of its length (never whole)."""
    return raw[:min(int(len(raw) * frac), len(raw) - 1)]


# ------------------------------------------------------------------ strategies
EXTREME = [0.0, -0.0, 1.0, 255.0, 256.0, -1.0, 1e-320, 3.4e38, 3.5e38, 1e300, -1e300, 2.0 ** 63, 2.0 ** 64,
           math.nan, math.inf, -math.inf]
IMAGE_DTYPES = [np.uint8, np.int8, np.int16, np.uint16, np.int32, np.int64, np.uint64, np.float16, np.float32,
                np.float64, np.bool_, np.complex64]


@st.composite
def images(draw):
    """(N, ...) images of a random dtype; values from a moderate range or the extremes."""
    n = draw(st.integers(1, 4))
    shape = draw(st.sampled_from([(n, 4), (n, 2, 3), (n, 3, 2, 2), (n, 1, 1)]))
    dt = np.dtype(draw(st.sampled_from(IMAGE_DTYPES)))
    size = math.prod(shape)
    vals = np.array(draw(st.lists(st.one_of(st.floats(-300, 300), st.sampled_from(EXTREME)),
                                  min_size=size, max_size=size)))
    if dt.kind in "iub":
        info = np.iinfo(dt) if dt.kind in "iu" else None
        vals = np.nan_to_num(vals, nan=0.0, posinf=0.0, neginf=0.0)
        if info is not None:
            vals = np.clip(vals, info.min, min(info.max, 2.0 ** 62))
    with np.errstate(all="ignore"):
        return vals.astype(dt).reshape(shape)


LABEL_VALUES = st.one_of(st.integers(0, 12), st.sampled_from([10 ** 9, 2 ** 31, 2 ** 63 - 1, -1, -(2 ** 63)]))


@st.composite
def labels_for(draw, n):
    """None, or labels for n images (sometimes of the wrong length): ints of every size and sign,
    uint64 beyond int64, Python ints beyond uint64, strings, bytes, floats, bools, None."""
    m = n if draw(st.integers(0, 5)) else draw(st.integers(0, n + 2))
    kind = draw(st.sampled_from(["none", "ints", "uint64", "huge", "strings", "bytes", "floats", "bools",
                                 "mixed", "tensor", "nested"]))
    if kind == "none":
        return None
    if kind == "ints":
        return draw(st.lists(LABEL_VALUES, min_size=m, max_size=m))
    if kind == "uint64":
        return np.array(draw(st.lists(st.sampled_from([0, 1, 2 ** 63, 2 ** 64 - 1, 10 ** 19]),
                                      min_size=m, max_size=m)), dtype=np.uint64)
    if kind == "huge":
        return draw(st.lists(st.sampled_from([0, 3, 10 ** 20, 2 ** 64, 10 ** 40, -(10 ** 20)]), min_size=m, max_size=m))
    if kind == "strings":
        return draw(st.lists(st.sampled_from(["cat", "dog", "", "émeu", "0"]), min_size=m, max_size=m))
    if kind == "bytes":
        return np.array(draw(st.lists(st.sampled_from([b"a", b"b", b"\xff\xfe"]), min_size=m, max_size=m)), dtype="S")
    if kind == "floats":
        return draw(st.lists(st.sampled_from([0.0, 1.0, 0.5, math.nan]), min_size=m, max_size=m))
    if kind == "bools":
        return [bool(i % 2) for i in range(m)]
    if kind == "mixed":
        return draw(st.lists(st.sampled_from([0, "a", None, 1.5]), min_size=m, max_size=m))
    if kind == "tensor":
        return torch.tensor(draw(st.lists(st.integers(0, 2 ** 40), min_size=m, max_size=m)), dtype=torch.long)
    return [[i] for i in range(m)]


def check_label_names(data, labels):
    """Integer or string labels come back as class names naming each atom's original value."""
    if labels is None:
        return
    arr = labels.numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels, dtype=object)
    originals = [str(int(v)) if isinstance(v, (int, np.integer)) else v for v in arr.tolist()]
    if all(isinstance(v, str) for v in originals):
        assert [data.class_names[k] for k in data.labels.tolist()] == originals


# ------------------------------------------------------------------ from_array
@CI
@given(images(), st.data(), st.sampled_from(["numpy", "tensor", "npy", "npz"]),
       st.sampled_from([torch.float32, torch.float64]))
def test_from_array_returns_finite_atoms_or_names_the_argument(imgs, draw, container, dtype):
    labels = draw.draw(labels_for(len(imgs)))
    with folder() as tmp:
        if container == "tensor":
            if imgs.dtype in (np.uint16, np.uint64):
                imgs = imgs.astype(np.int64)
            source = torch.from_numpy(imgs)
        elif container == "npy":
            source = Path(tmp) / "a.npy"
            np.save(source, imgs)
        elif container == "npz":
            source = Path(tmp) / "a.npz"
            np.savez(source, images=imgs)
        else:
            source = imgs
        data = call(lambda: D.from_array(source, labels=labels, dtype=dtype), "path_or_array", "labels", "image_shape")
        clean = imgs.dtype.kind != "c" and (imgs.dtype.kind != "f" or bool(np.isfinite(imgs).all()))
        if data is None:
            assert not clean or labels is not None, "clean images without labels must load"
            return
        valid(data, len(imgs))
        assert clean and data.atoms.dtype == dtype
        if imgs.dtype == np.uint8:
            assert data.pixel_range == (0.0, 1.0)
            torch.testing.assert_close(data.atoms.double(), torch.from_numpy(imgs.reshape(len(imgs), -1) / 255.0),
                                       rtol=1e-6, atol=1e-7)
        else:                                           # kept as they are (to the dtype's rounding)
            want = torch.from_numpy(imgs.reshape(len(imgs), -1).astype(np.float64)).to(dtype)
            assert torch.equal(data.atoms, want)
        check_label_names(data, labels)


@CI
@given(st.lists(st.one_of(LABEL_VALUES, st.sampled_from([2 ** 63, 2 ** 64 - 1, 10 ** 19])), min_size=1, max_size=40),
       st.booleans())
def test_from_array_integer_labels_are_compact_and_named_by_their_value(values, as_uint64):
    # any size of integer label: K class names for the K distinct values, never one per possible value
    if as_uint64:
        values = [v for v in values if v >= 0] or [0]
        labels = np.array(values, dtype=np.uint64)
    else:
        labels = values
    data = call(lambda: D.from_array(np.zeros((len(values), 4), np.uint8), labels=labels), "labels")
    if data is None:
        assert min(values) < 0                          # only negative labels are refused
        return
    valid(data, len(values), (1, 2, 2))
    distinct = sorted(set(values))
    assert data.class_names == tuple(str(v) for v in distinct)
    assert [data.class_names[k] for k in data.labels.tolist()] == [str(v) for v in values]


@CI
@given(st.binary(max_size=400), st.sampled_from([".npy", ".npz"]))
def test_from_array_random_bytes(raw, suffix):
    with folder() as tmp:
        path = Path(tmp) / f"x{suffix}"
        path.write_bytes(raw)
        data = call(lambda: D.from_array(path), "path_or_array", "images_key", "image_shape")
        if data is not None:
            valid(data)


@CI
@given(images(), st.floats(0, 1), st.sampled_from([".npy", ".npz"]), st.booleans())
def test_from_array_cut_files_are_refused(imgs, frac, suffix, with_labels):
    # a .npy or .npz cut short anywhere is an error naming the argument, never a partial array
    with folder() as tmp:
        path = Path(tmp) / f"x{suffix}"
        if suffix == ".npy":
            np.save(path, imgs)
        else:
            extra = {"labels": np.arange(len(imgs))} if with_labels else {}
            (np.savez_compressed if with_labels else np.savez)(path, images=imgs, **extra)
        path.write_bytes(cut(path.read_bytes(), frac))
        assert call(lambda: D.from_array(path), "path_or_array", "images_key") is None


@CI
@given(st.lists(st.one_of(st.integers(1, 4), st.integers(0, 4), st.just(2 ** 40)), min_size=2, max_size=4),
       st.sampled_from(["<f8", ">i2", "|u1", "<f4", "|b1"]), st.integers(-8, 8), st.booleans())
def test_from_array_headers_that_promise_other_sizes(shape, descr, extra, fortran):
    # a valid header with too little data is refused before numpy allocates what it promises;
    # with enough data the array is read
    n_bytes = max(0, min(math.prod(shape) * np.dtype(descr).itemsize, 4096) + extra)
    with folder() as tmp:
        path = Path(tmp) / "x.npy"
        with open(path, "wb") as f:
            np.lib.format.write_array_header_1_0(f, {"descr": descr, "fortran_order": fortran, "shape": tuple(shape)})
            f.write(bytes(range(256)) * (n_bytes // 256) + bytes(range(n_bytes % 256)))
        data = call(lambda: D.from_array(path), "path_or_array", "image_shape")
        need = math.prod(shape) * np.dtype(descr).itemsize
        if need > n_bytes:
            assert data is None
        if data is not None:
            valid(data, shape[0])


# ------------------------------------------------------------------ from_png_folder
def png_bytes(arr, **kw):
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(arr, **kw).save(buf, format="PNG")
    return buf.getvalue()


@st.composite
def pngs(draw):
    """(bytes of a valid PNG of a random kind, its (H, W, C) values in [0, 1])."""
    h, w = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    kind = draw(st.sampled_from(["L", "RGB", "I;16", "RGBA"]))
    seed = draw(st.integers(0, 2 ** 16))
    rng = np.random.default_rng(seed)
    if kind == "I;16":
        arr = rng.integers(0, 65536, (h, w), dtype=np.uint16)
        return png_bytes(arr), arr[..., None] / 65535.0
    c = {"L": 1, "RGB": 3, "RGBA": 4}[kind]
    arr = rng.integers(0, 256, (h, w, c), dtype=np.uint8)
    return png_bytes(arr[..., 0] if c == 1 else arr), arr[..., :3] / 255.0


@CI
@given(st.lists(pngs(), min_size=1, max_size=3), st.sampled_from(["auto", "L", "RGB"]))
def test_png_folders_of_valid_files_keep_their_values(files, mode):
    # 8-bit / 255 and 16-bit / 65535 in every mode; gray repeated over channels for RGB
    with folder() as tmp:
        shapes = {v.shape[:2] for _, v in files}
        for i, (raw, _) in enumerate(files):
            (Path(tmp) / f"{i}.png").write_bytes(raw)
        data = call(lambda: D.from_png_folder(tmp, mode=mode), "path")
        if len(shapes) > 1:
            assert data is None                         # images differ in size
            return
        valid(data, len(files))
        gray = mode == "L" or (mode == "auto" and all(v.shape[2] == 1 for _, v in files))
        for k, (_, v) in enumerate(files):
            img = data.images()[k].double().permute(1, 2, 0).numpy()
            if gray and v.shape[2] == 1:
                np.testing.assert_allclose(img[..., 0], v[..., 0], atol=1e-6)
            elif not gray:
                want = np.repeat(v, 3, axis=2) if v.shape[2] == 1 else v
                np.testing.assert_allclose(img, want, atol=1e-6)
            # gray of a colour file: PIL's luminance, checked only to lie in [0, 1]
            assert img.min() >= 0 and img.max() <= 1


@CI
@given(pngs(), st.one_of(st.floats(0, 1), st.binary(max_size=200)), st.sampled_from(["auto", "L", "RGB"]))
def test_png_folders_with_corrupt_files(good, junk, mode):
    # a cut or garbage PNG beside a good one: read (PIL may decode a file missing its last chunks)
    # or refused by name, never another exception
    raw, _ = good
    with folder() as tmp:
        (Path(tmp) / "a.png").write_bytes(raw)
        (Path(tmp) / "b.png").write_bytes(cut(raw, junk) if isinstance(junk, float) else junk)
        data = call(lambda: D.from_png_folder(tmp, mode=mode), "path")
        if data is not None:
            valid(data, 2)


# ------------------------------------------------------------------ read_idx and mnist
IDX = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def idx_bytes(code, dims, data: bytes) -> bytes:
    return struct.pack(">BBBB", 0, 0, code, len(dims)) + struct.pack(f">{len(dims)}I", *dims) + data


@CI
@given(st.sampled_from(sorted(IDX)), st.lists(st.integers(0, 5), max_size=4), st.integers(-3, 3), st.booleans(),
       st.sampled_from([None, 2 ** 32 - 1]))
def test_read_idx_reads_exactly_what_its_header_states(code, dims, extra, compress, huge):
    if huge is not None and dims:
        dims[0] = huge                                  # a header promising ~4e9 x ... items
    dt = np.dtype(IDX[code])
    need = math.prod(dims) * dt.itemsize
    n = max(0, min(need, 4096) + extra)
    rng = np.random.default_rng(len(dims) + 7 * code)
    raw = idx_bytes(code, dims, rng.integers(0, 256, n, dtype=np.uint8).tobytes())
    with folder() as tmp:
        path = Path(tmp) / ("x.gz" if compress else "x")
        path.write_bytes(gzip.compress(raw) if compress else raw)
        arr = call(lambda: D.read_idx(path), "path")
        if n != need:
            assert arr is None
        else:
            assert arr.shape == tuple(dims) and arr.dtype == dt.newbyteorder("=")
            assert arr.tobytes() == np.frombuffer(raw, dt, offset=4 + 4 * len(dims)).astype(arr.dtype).tobytes()


@CI
@given(st.binary(max_size=120), st.floats(0, 1), st.booleans())
def test_read_idx_garbage_and_cut_gzip(junk, frac, gz_junk):
    good = idx_bytes(0x08, (3, 4), bytes(range(12)))
    with folder() as tmp:
        for name, raw in [("junk", junk), ("cut.gz", cut(gzip.compress(good), frac)),
                          ("cut", cut(good, frac)), ("gzjunk", (b"\x1f\x8b" + junk) if gz_junk else junk)]:
            path = Path(tmp) / name
            path.write_bytes(raw)
            arr = call(lambda: D.read_idx(path), "path")
            if name.startswith("cut"):
                assert arr is None
            elif arr is not None:
                assert isinstance(arr, np.ndarray)


MNIST_FAULTS = ["none"] * 2 + ["no images", "empty image", "flat images", "label count", "label range",
                                 "float labels", "non-finite", "beyond float32"]


@CI
@given(st.sampled_from(sorted(IDX)), st.sampled_from([0x08, 0x08, 0x09, 0x0B, 0x0C]), st.integers(1, 3),
       st.sampled_from(MNIST_FAULTS), st.integers(0, 2 ** 16), st.sampled_from([torch.float32, torch.float64]))
def test_mnist_of_any_idx_types(image_code, label_code, n, fault, seed, dtype):
    rng = np.random.default_rng(seed)
    idt, ldt = np.dtype(IDX[image_code]), np.dtype(IDX[label_code])
    n = 0 if fault == "no images" else n
    hw = {"empty image": (0, 3), "flat images": (5,)}.get(fault, (4, 3))
    if fault == "float labels":
        ldt, label_code = np.dtype(">f4"), 0x0D
    if fault == "non-finite" and idt.kind != "f" or fault == "beyond float32" and idt.itemsize < 8:
        fault = "none"                       # only float (float64) images can hold such values
    if idt.kind == "f":
        special = {"non-finite": [np.nan, np.inf, -np.inf], "beyond float32": [1e300, 0.5]}
        imgs = rng.choice(np.array(special.get(fault, [0.5, -2.0, 1e30, 0.0])), (n, *hw))
    else:
        imgs = rng.integers(np.iinfo(idt).min, int(np.iinfo(idt).max) + 1, (n, *hw))
    high = 12 if fault == "label range" else 10
    labels = rng.integers(0, high, n + (fault == "label count"))
    if fault == "label range" and n:
        labels[0] = 11
    with folder() as tmp, np.errstate(all="ignore"):
        imgs, labels = imgs.astype(idt), labels.astype(ldt)
        (Path(tmp) / "train-images-idx3-ubyte").write_bytes(idx_bytes(image_code, imgs.shape, imgs.tobytes()))
        (Path(tmp) / "train-labels-idx1-ubyte").write_bytes(idx_bytes(label_code, labels.shape, labels.tobytes()))
        data = call(lambda: D.mnist(tmp, dtype=dtype), "path", "class_names")
        if data is None:
            assert fault != "none" and (fault != "beyond float32" or dtype == torch.float32)
            return
        assert fault == "none" or fault == "beyond float32" and dtype == torch.float64
        valid(data, n, (1, *hw))
        flat = imgs.reshape(n, -1).astype(np.float64)
        want = flat / 255.0 if idt == np.uint8 else flat            # only bytes are scaled
        np.testing.assert_allclose(data.atoms.double().numpy(), want, rtol=1e-6)
        assert data.labels.tolist() == labels.astype(np.int64).tolist()


# ------------------------------------------------------------------ cifar10
CIFAR_FAULTS = ["none"] * 3 + ["width", "float data", "over 255", "negative", "no data", "no labels",
                                 "odd labels", "no rows"]


@st.composite
def batches(draw):
    """(a CIFAR batch dict, its fault): well formed ("none": uint8, int64 or uint16 bytes, as an
    array or a list, labels 0..9) or with one fault."""
    fault = draw(st.sampled_from(CIFAR_FAULTS))
    n = 0 if fault == "no rows" else draw(st.integers(1, 3))
    width = 3071 if fault == "width" else 3072
    dt = np.float64 if fault == "float data" else draw(st.sampled_from([np.uint8, np.int64, np.uint16]))
    lo, hi = {"over 255": (0, 300), "negative": (-5, 256)}.get(fault, (0, 256))
    data = np.random.default_rng(n + hi).integers(lo, hi, (n, width))
    if fault == "over 255":
        data[0, 0] = 256
    if fault == "negative":
        data[0, 0] = -1
    data = data.astype(np.int64 if fault in ("over 255", "negative") else dt)
    labels = draw(labels_for(n)) if fault == "odd labels" else draw(st.lists(st.integers(0, 9), min_size=n, max_size=n))
    if isinstance(labels, torch.Tensor):
        labels = labels.tolist()
    batch = {b"data": data if draw(st.integers(0, 3)) else data.tolist(), b"labels": labels,
             b"batch_label": b"training batch 1 of 5"}
    if fault == "no data" or (fault == "odd labels" and labels is None):
        batch.pop(b"data" if fault == "no data" else b"labels")
    if fault == "no labels":
        del batch[b"labels"]
    return batch, fault


@CI
@given(batches(), st.one_of(st.none(), st.floats(0, 1), st.binary(max_size=60)), st.sampled_from([2, 4]))
def test_cifar10_of_any_batch(batch_fault, damage, protocol):
    batch, fault = batch_fault
    raw = pickle.dumps(batch, protocol=protocol)
    if isinstance(damage, float):
        raw = cut(raw, damage)
    elif isinstance(damage, bytes):
        raw = damage
    with folder() as tmp:
        (Path(tmp) / "data_batch_1").write_bytes(raw)
        data = call(lambda: D.cifar10(tmp), "path")
        if data is None:
            assert damage is not None or fault != "none"
            return
        assert damage is None and fault in ("none", "odd labels")
        valid(data, image_shape=(3, 32, 32))
        pixels = np.asarray(batch[b"data"])
        assert pixels.min() >= 0 and pixels.max() <= 255 and pixels.dtype.kind in "iu"
        np.testing.assert_allclose(data.atoms.double().numpy(), pixels / 255.0, rtol=1e-6)
        assert data.labels.tolist() == [int(v) for v in batch[b"labels"]]


@CI
@given(st.one_of(st.binary(max_size=80), st.lists(st.one_of(st.text(max_size=5), st.binary(max_size=5),
                                                             st.integers()), min_size=8, max_size=12)))
def test_cifar10_batches_meta(meta):
    # the class names come from batches.meta: garbage, too few names, or names of odd types
    raw = meta if isinstance(meta, bytes) else pickle.dumps({b"label_names": meta})
    with folder() as tmp:
        labels = [0, 9, 3]
        (Path(tmp) / "data_batch_1").write_bytes(pickle.dumps({b"data": np.zeros((3, 3072), np.uint8),
                                                               b"labels": labels}))
        (Path(tmp) / "batches.meta").write_bytes(raw)
        data = call(lambda: D.cifar10(tmp), "path")
        if data is None:
            assert isinstance(meta, bytes) or len(meta) < 10
        else:
            valid(data, 3, (3, 32, 32))
            assert data.labels.tolist() == labels and len(data.class_names) >= 10


def test_properties_name_only_real_arguments():
    # the names the properties accept are the loaders' own parameters
    import inspect
    for fn, names in [(D.from_array, ("path_or_array", "labels", "image_shape", "images_key")),
                      (D.from_png_folder, ("path",)), (D.read_idx, ("path",)),
                      (D.mnist, ("path", "class_names")), (D.cifar10, ("path",))]:
        params = inspect.signature(fn).parameters
        assert all(n in params for n in names), (fn.__name__, names)


@pytest.mark.parametrize("loader", ["from_png_folder", "mnist", "cifar10"])
@pytest.mark.parametrize("dtype", [torch.int64, torch.float16, "float32", None])
def test_loaders_refuse_a_bad_dtype_by_name(loader, dtype, tmp_path):
    # valid files, a dtype that is not float32 / float64: refused by name (mnist and cifar10 passed
    # it on to torch, which raised its own TypeError)
    if loader == "from_png_folder":
        (tmp_path / "a.png").write_bytes(png_bytes(np.zeros((2, 2), np.uint8)))
    elif loader == "mnist":
        (tmp_path / "train-images-idx3-ubyte").write_bytes(idx_bytes(0x08, (1, 2, 2), bytes(4)))
        (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(0x08, (1,), bytes(1)))
    else:
        (tmp_path / "data_batch_1").write_bytes(pickle.dumps({b"data": np.zeros((1, 3072), np.uint8), b"labels": [0]}))
    valid(getattr(D, loader)(tmp_path), 1)
    with pytest.raises((ValueError, TypeError), match="^dtype: "):
        getattr(D, loader)(tmp_path, dtype=dtype)
