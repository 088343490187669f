"""fsdiag.data: every loader's shapes, dtypes, pixel ranges and labels; seeded generators are
deterministic; the hold-out never leaves a truth among the atoms; the user-data loaders read
small files that the tests write."""
import gzip
import pickle
import struct

import numpy as np
import pytest
import torch

from fsdiag import data as D
from fsdiag.data import datasets, images, loaders


def check(data, n, shape, n_classes, lo=0.0, hi=1.0):
    assert isinstance(data, D.ImageData)
    assert data.atoms.shape == (n, int(np.prod(shape))) and data.image_shape == shape
    assert data.atoms.dtype == torch.float32 and data.labels.dtype == torch.long
    assert data.pixel_range == (lo, hi)
    assert float(data.atoms.min()) >= lo and float(data.atoms.max()) <= hi
    assert len(data.class_names) == n_classes and 0 <= int(data.labels.min()) <= int(data.labels.max()) < n_classes
    assert data.images().shape == (n, *shape)
    assert "ImageData(N=" in repr(data) and len(data) == n


# ------------------------------------------------------------------ bundled
def test_digits():
    data = D.digits()
    check(data, 1797, (1, 8, 8), 10)
    assert float(data.atoms.max()) == 1.0 and torch.bincount(data.labels).min() >= 170
    assert D.digits(dtype=torch.float64).atoms.dtype == torch.float64


def test_lfw_subset_faces_then_non_faces():
    data = D.lfw_subset()
    check(data, 200, (1, 25, 25), 2)
    assert data.class_names == ("face", "non-face")
    assert data.labels[:100].eq(0).all() and data.labels[100:].eq(1).all()


def test_patches_are_windows_of_their_sources():
    data = D.patches(60, 8, seed=0)
    check(data, 60, (1, 8, 8), 6)
    assert data.class_names == datasets._DEFAULT_SOURCES and torch.bincount(data.labels).tolist() == [10] * 6
    for i in (0, 17):           # each patch is a window of its source image
        assert is_window(data.atoms[i], datasets._source_image(data.class_names[data.labels[i]], False), 8)
    color = D.patches(9, 5, sources=("astronaut", "coffee", "chelsea"), color=True, seed=1)
    check(color, 9, (3, 5, 5), 3)
    assert is_window(color.atoms[0], datasets._source_image(color.class_names[color.labels[0]], True), 5)


def is_window(row, src, size):
    """row (C size size,) equals the (C, H, W)-ordered window of src (H, W, C) at some position."""
    chw = np.transpose(src, (2, 0, 1))
    win = np.lib.stride_tricks.sliding_window_view(chw, (size, size), axis=(1, 2))   # (C, h', w', s, s)
    win = np.moveaxis(win, 0, 2).reshape(-1, row.numel())                          # (h' w', C s s)
    return bool((win == row.numpy()).all(1).any())


def test_patches_are_seeded():
    a, b = D.patches(24, 6, seed=3), D.patches(24, 6, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.atoms, b.atoms) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.atoms, D.patches(24, 6, seed=4).atoms)


def test_patches_copy_blocks_do_not_change_them(monkeypatch):
    # the windows are copied a bounded block at a time (~64 MB): a block of a few patches gives
    # the same atoms as one block for all
    ref = D.patches(50, 8, seed=5)
    monkeypatch.setattr(datasets, "_PATCH_BLOCK", 3 * 64)
    small = D.patches(50, 8, seed=5)
    assert torch.equal(ref.atoms, small.atoms) and torch.equal(ref.labels, small.labels)


def test_patch_coverage_repeats_match_the_patches_cut():
    # camera is 512 x 512: 508 x 508 windows have 5 x 5 = 25 positions; 20 patches drawn with
    # replacement repeat a position with probability 1 - 25 (1 - (24/25)^20) / 20 = 0.3025
    cov = D.patch_coverage(20, 508, sources=("camera",))
    assert cov["positions"] == 25 and cov["sources"]["camera"]["patches"] == 20
    p_distinct = 25 * (1 - (24 / 25) ** 20) / 20
    assert cov["repeat_fraction"] == pytest.approx(1 - p_distinct, rel=1e-12)
    r = torch.randn(508 * 508, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    # windows at distinct positions differ, so distinct projections count distinct positions
    seen = [1 - torch.unique(D.patches(20, 508, sources=("camera",), seed=s).atoms.double() @ r).numel() / 20
            for s in range(60)]
    se = np.std(seen) / np.sqrt(len(seen))
    assert abs(np.mean(seen) - cov["repeat_fraction"]) < 4 * se + 1e-3, (np.mean(seen), cov)


def test_patch_coverage_neighbours_match_a_simulation():
    # coffee is 400 x 600 (rows != columns): 398 x 398 windows have 3 x 203 positions
    n = 50
    cov = D.patch_coverage(2 * n, 398, sources=("coffee", "coffee"))["sources"]["coffee"]
    rows, cols = 3, 203
    assert cov["positions"] == rows * cols and cov["patches"] == n
    rng = np.random.default_rng(0)
    r, c = rng.integers(0, rows, (4000, n)), rng.integers(0, cols, (4000, n))
    cheb = np.maximum(np.abs(r[:, :, None] - r[:, None]), np.abs(c[:, :, None] - c[:, None]))
    per_patch = (cheb == 1).sum(-1)                     # other patches one pixel away
    assert cov["neighbours"] == pytest.approx(per_patch.mean(), rel=0.05)
    same = (cheb == 0).sum(-1) - 1                      # others at the same position
    distinct = np.array([len(set(zip(a, b))) for a, b in zip(r, c)])
    assert cov["repeat_fraction"] == pytest.approx(1 - distinct.mean() / n, abs=0.01)
    assert same.mean() > 0 and cov["neighbours"] > 0


def test_patch_coverage_grows_with_n_and_validates():
    small, big = (D.patch_coverage(n, 32, sources=("brick", "moon")) for n in (1000, 100000))
    assert 0 < small["repeat_fraction"] < big["repeat_fraction"] < 1
    assert small["neighbours"] < big["neighbours"]
    assert big["positions"] == 2 * 481 ** 2
    # the balanced split of `patches`: 3 patches over 2 sources gives 2 and 1
    odd = D.patch_coverage(3, 8, sources=("brick", "moon"))["sources"]
    assert (odd["brick"]["patches"], odd["moon"]["patches"]) == (2, 1)
    assert odd["moon"]["repeat_fraction"] == 0.0 and odd["moon"]["neighbours"] == 0.0
    for bad, name in [(lambda: D.patch_coverage(0), "n"), (lambda: D.patch_coverage(5, 600, sources=("brick",)), "size"),
                      (lambda: D.patch_coverage(5, sources=("lena",)), "sources"),
                      (lambda: D.patch_coverage(5, sources="brick"), "sources")]:
        with pytest.raises((ValueError, TypeError), match=f"^{name}: "):
            bad()


def test_shapes():
    data = D.shapes(50, 12, seed=0)
    check(data, 50, (1, 12, 12), 5)
    assert torch.bincount(data.labels).tolist() == [10] * 5
    assert bool((data.atoms.amax(1) >= 0.6 * 0.99).all())           # every shape is visible
    assert bool((data.atoms[:, 0] < 1).any())
    same = D.shapes(50, 12, seed=0)
    assert torch.equal(same.atoms, data.atoms) and torch.equal(same.labels, data.labels)
    assert not torch.equal(D.shapes(50, 12, seed=1).atoms, data.atoms)
    all_six = D.shapes(12, 32, classes=D.SHAPES, seed=2)
    check(all_six, 12, (1, 32, 32), 6)
    # the classes look different: discs fill more of their bounding box than bars
    by = {all_six.class_names[k]: all_six.atoms[all_six.labels == k] for k in range(6)}
    assert float((by["disc"] > 0.5).float().mean()) > float((by["bar"] > 0.5).float().mean())


def test_shapes_on_every_device_agree(device):
    cpu = D.shapes(10, 8, seed=5)
    dev = D.shapes(10, 8, seed=5, device=device)
    assert dev.atoms.device.type == device
    torch.testing.assert_close(dev.atoms.cpu(), cpu.atoms, rtol=1e-5, atol=1e-5)


def test_bundled_loaders_validate():
    bad = [(lambda: D.shapes(0, seed=0), "n"), (lambda: D.shapes(5, 2, seed=0), "size"),
           (lambda: D.shapes(5), "seed"), (lambda: D.shapes(5, seed="1"), "seed"),
           (lambda: D.shapes(5, classes=("blob",), seed=0), "classes"),
           (lambda: D.shapes(5, classes="disc", seed=0), "classes"),
           (lambda: D.shapes(5, seed=0, dtype=torch.float16), "dtype"),
           (lambda: D.patches(5, seed=0, sources=("lena",)), "sources"),
           (lambda: D.patches(5, seed=0, sources=()), "sources"),
           (lambda: D.patches(5, 1000, seed=0), "size"), (lambda: D.patches(-1, seed=0), "n"),
           (lambda: D.patches(5, 4, seed=0, sources=("camera",), color=True), "sources"),
           (lambda: D.patches(5, seed=0, color="yes"), "color"), (lambda: D.digits(dtype="float32"), "dtype")]
    for make, name in bad:
        with pytest.raises((ValueError, TypeError), match=f"^{name}: "):
            make()


# ------------------------------------------------------------------ hold-out
def test_hold_out_never_returns_a_truth_among_the_atoms():
    rows = np.arange(24, dtype=np.float32).reshape(6, 4)
    rows = np.concatenate([rows, rows[:3], rows[:2]])                 # duplicates of the first rows
    data = D.from_array(rows, labels=np.arange(11) % 3, image_shape=(1, 2, 2))
    for seed in range(8):
        atoms, labels, truths, truth_labels = D.hold_out(data, 2, seed=seed)
        assert truths.shape == (2, 4) and truth_labels.shape == (2,)
        assert not bool((atoms[:, None] == truths[None]).all(-1).any()), "a truth is still an atom"
        assert len(atoms) == len(labels) >= 11 - 2 - 2 * 2
        # the truths' labels are their own
        for t, lab in zip(truths, truth_labels):
            i = int(np.nonzero((rows == t.numpy()).all(1))[0][0])
            assert int(lab) == i % 3


def test_hold_out_projects_atoms_in_bounded_blocks():
    # _equals_any projects a block of atoms at a time: blocks of one row or of all rows agree
    data = D.patches(300, 8, sources=("brick",), seed=2)          # ~ 1% repeated positions
    truths = data.atoms[:7]
    ref = images._equals_any(data.atoms, truths)
    assert torch.equal(ref, images._equals_any(data.atoms, truths, max_values=64))
    assert torch.equal(ref, images._equals_any(data.atoms, truths, max_values=1))
    assert bool(ref[:7].all())
    assert torch.equal(ref, (data.atoms[:, None] == truths[None]).all(-1).any(1))


def test_split_is_seeded_and_builds_a_prior():
    data = D.shapes(40, 8, seed=0)
    a, b = data.split(3, seed=1), D.hold_out(data, 3, generator=torch.Generator().manual_seed(1))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a.truths, data.split(3, seed=2).truths)
    assert a.atoms.shape[0] + 3 <= 40
    prior = a.prior(device="cpu")
    assert prior.n_atoms == a.atoms.shape[0] and torch.equal(prior.labels.cpu(), a.labels)
    for bad, name in [(lambda: data.split(40, seed=0), "n"), (lambda: data.split(0, seed=0), "n"),
                      (lambda: data.split(2), "seed"), (lambda: D.hold_out(data.atoms, 2, seed=0), "data")]:
        with pytest.raises((ValueError, TypeError), match=f"^{name}: "):
            bad()


def test_subset():
    data = D.digits()
    sub = data.subset(data.labels == 3)
    assert sub.n_atoms == int((data.labels == 3).sum()) and bool((sub.labels == 3).all())
    assert sub.class_names == data.class_names


# ------------------------------------------------------------------ a user's own data
def test_from_array(tmp_path):
    rng = np.random.default_rng(0)
    u8 = rng.integers(0, 256, (5, 3, 4, 6), dtype=np.uint8)
    data = D.from_array(u8, labels=[0, 1, 2, 1, 0])
    check(data, 5, (3, 4, 6), 3)
    torch.testing.assert_close(data.atoms, torch.from_numpy(u8.reshape(5, -1) / 255.0).float())
    gray = D.from_array(rng.random((4, 5, 7)))
    assert gray.image_shape == (1, 5, 7) and gray.class_names == ("unlabelled",) and gray.labels.eq(0).all()
    lo, hi = gray.pixel_range                                           # floats kept, range observed
    assert lo == float(gray.atoms.min()) and hi == float(gray.atoms.max())
    assert D.from_array(torch.zeros(3, 16)).image_shape == (1, 4, 4)
    assert D.from_array(np.zeros((3, 12)), image_shape=(3, 2, 2)).image_shape == (3, 2, 2)
    np.save(tmp_path / "a.npy", u8)
    assert torch.equal(D.from_array(tmp_path / "a.npy").atoms, data.atoms)
    np.savez(tmp_path / "b.npz", images=u8, labels=np.array(["cat", "dog", "cat", "emu", "dog"]))
    named = D.from_array(str(tmp_path / "b.npz"))
    assert named.class_names == ("cat", "dog", "emu") and named.labels.tolist() == [0, 1, 0, 2, 1]
    np.savez(tmp_path / "c.npz", pics=u8, y=np.arange(5))
    assert D.from_array(tmp_path / "c.npz", images_key="pics", labels_key="y").labels.tolist() == list(range(5))
    bad = [(lambda: D.from_array(tmp_path / "nope.npy"), "path_or_array"),
           (lambda: D.from_array(tmp_path), "path_or_array"),
           (lambda: D.from_array(tmp_path / "c.npz"), "images_key"), (lambda: D.from_array(3), "path_or_array"),
           (lambda: D.from_array(u8, labels=[0, 1]), "labels"),
           (lambda: D.from_array(u8, labels=[0, 1, 2, 1, -1]), "labels"),
           (lambda: D.from_array(np.zeros((3, 12))), "image_shape"),
           (lambda: D.from_array(np.zeros((3, 12)), image_shape=(2, 2)), "image_shape"),
           (lambda: D.from_array(np.zeros((0, 4, 4))), "path_or_array"),
           (lambda: D.from_array(np.full((2, 4), np.nan)), "path_or_array")]
    (tmp_path / "x.txt").write_text("1 2 3")
    bad.append((lambda: D.from_array(tmp_path / "x.txt"), "path_or_array"))
    for make, name in bad:
        with pytest.raises((ValueError, TypeError), match=f"^{name}: "):
            make()


def test_from_png_folder(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(1)
    imgs = {"cat": [rng.integers(0, 256, (6, 5), dtype=np.uint8) for _ in range(2)],
            "dog": [rng.integers(0, 256, (6, 5), dtype=np.uint8) for _ in range(3)]}
    for label, arrays in imgs.items():
        (tmp_path / "labelled" / label).mkdir(parents=True)
        for i, a in enumerate(arrays):
            Image.fromarray(a, mode="L").save(tmp_path / "labelled" / label / f"{i}.png")
    data = D.from_png_folder(tmp_path / "labelled")
    check(data, 5, (1, 6, 5), 2)
    assert data.class_names == ("cat", "dog") and data.labels.tolist() == [0, 0, 1, 1, 1]
    want = np.stack(imgs["cat"] + imgs["dog"]).reshape(5, -1) / 255.0
    torch.testing.assert_close(data.atoms, torch.from_numpy(want).float())
    # flat folder of color images (with one gray file: auto turns it to RGB), no labels
    flat = tmp_path / "flat"
    flat.mkdir()
    rgb = rng.integers(0, 256, (3, 4, 3), dtype=np.uint8)
    Image.fromarray(rgb, mode="RGB").save(flat / "a.png")
    Image.fromarray(rgb[..., 0], mode="L").save(flat / "b.PNG")
    (flat / "notes.txt").write_text("ignored")
    color = D.from_png_folder(flat)
    check(color, 2, (3, 3, 4), 1)
    torch.testing.assert_close(color.images()[0], torch.from_numpy(rgb.transpose(2, 0, 1) / 255.0).float())
    assert torch.equal(color.images()[1][0], color.images()[1][2])   # gray -> three equal channels
    assert D.from_png_folder(flat, mode="L").image_shape == (1, 3, 4)
    # 16-bit gray
    deep = tmp_path / "deep"
    deep.mkdir()
    Image.fromarray(np.full((2, 2), 65535, dtype=np.uint16)).save(deep / "x.png")
    assert float(D.from_png_folder(deep).atoms.max()) == pytest.approx(1.0)
    # bad layouts
    (tmp_path / "empty").mkdir()
    mixed = tmp_path / "labelled" / "dog" / "big.png"
    for make, name in [(lambda: D.from_png_folder(tmp_path / "empty"), "path"),
                       (lambda: D.from_png_folder(flat / "a.png"), "path"), (lambda: D.from_png_folder(None), "path"),
                       (lambda: D.from_png_folder(flat, mode="CMYK"), "mode")]:
        with pytest.raises((ValueError, TypeError), match=f"^{name}: "):
            make()
    Image.fromarray(np.zeros((7, 7), dtype=np.uint8)).save(mixed)
    with pytest.raises(ValueError, match="^path: images differ in size"):
        D.from_png_folder(tmp_path / "labelled")
    Image.fromarray(np.zeros((7, 7), dtype=np.uint8)).save(tmp_path / "labelled" / "top.png")
    with pytest.raises(ValueError, match="^path: .*both"):
        D.from_png_folder(tmp_path / "labelled")


def write_idx(path, arr, compress=False):
    code = {np.uint8: 0x08, np.int32: 0x0C}[arr.dtype.type]
    raw = struct.pack(">BBBB", 0, 0, code, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    raw += arr.astype(arr.dtype.newbyteorder(">")).tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)


def test_mnist_reads_idx_files(tmp_path):
    rng = np.random.default_rng(2)
    train = rng.integers(0, 256, (7, 28, 28), dtype=np.uint8)
    test = rng.integers(0, 256, (3, 28, 28), dtype=np.uint8)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", train, compress=True)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.arange(7, dtype=np.uint8), compress=True)
    (tmp_path / "raw").mkdir()
    write_idx(tmp_path / "raw" / "t10k-images-idx3-ubyte", test)
    write_idx(tmp_path / "raw" / "t10k-labels-idx1-ubyte", np.array([9, 0, 4], dtype=np.uint8))
    data = D.mnist(tmp_path)
    check(data, 7, (1, 28, 28), 10)
    torch.testing.assert_close(data.atoms, torch.from_numpy(train.reshape(7, -1) / 255.0).float())
    assert data.labels.tolist() == list(range(7))
    t = D.mnist(str(tmp_path), split="test")
    assert t.labels.tolist() == [9, 0, 4] and t.atoms.shape == (3, 784)
    write_idx(tmp_path / "ints", np.arange(6, dtype=np.int32).reshape(2, 3))
    assert D.read_idx(tmp_path / "ints").tolist() == [[0, 1, 2], [3, 4, 5]]
    (tmp_path / "junk").write_bytes(b"\x01\x02\x03\x04\x05")
    (tmp_path / "short").write_bytes(struct.pack(">BBBBI", 0, 0, 8, 1, 10) + b"\x00" * 3)
    for make, name in [(lambda: D.mnist(tmp_path, split="val"), "split"), (lambda: D.mnist(tmp_path / "nope"), "path"),
                       (lambda: D.mnist(tmp_path / "raw" / "t10k-images-idx3-ubyte"), "path"),
                       (lambda: D.read_idx(tmp_path / "junk"), "path"),
                       (lambda: D.read_idx(tmp_path / "short"), "path")]:
        with pytest.raises((ValueError, TypeError), match=f"^{name}: "):
            make()
    (tmp_path / "raw" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(ValueError, match="^path: no test labels"):
        D.mnist(tmp_path, split="test")


def test_cifar10_reads_python_batches(tmp_path):
    rng = np.random.default_rng(3)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    batches = []
    for i, protocol in zip((1, 2), (2, pickle.HIGHEST_PROTOCOL)):   # the original files are protocol 2
        batch = {b"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), b"labels": [i, 0, 9, 3],
                 b"batch_label": b"training batch"}
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps(batch, protocol=protocol))
        batches.append(batch)
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [5, 6]}))
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": names}))
    data = D.cifar10(tmp_path)
    check(data, 8, (3, 32, 32), 10)
    assert data.class_names[0] == "airplane" and data.labels.tolist() == [1, 0, 9, 3, 2, 0, 9, 3]
    first = batches[0][b"data"][0]
    # a CIFAR row is R plane, G plane, B plane: image [c, h, w] = row[c * 1024 + h * 32 + w]
    assert float(data.images()[0, 1, 2, 3]) == pytest.approx(first[1024 + 2 * 32 + 3] / 255.0)
    test = D.cifar10(folder, split="test")
    assert test.labels.tolist() == [5, 6] and float(test.atoms.max()) == 0.0

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": Evil(), b"labels": [0]}))
    for make, name in [(lambda: D.cifar10(folder, split="test"), "path"), (lambda: D.cifar10(tmp_path / "x"), "path"),
                       (lambda: D.cifar10(folder, split="all"), "split"),
                       (lambda: D.cifar10(tmp_path / "empty"), "path")]:
        (tmp_path / "empty").mkdir(exist_ok=True)
        with pytest.raises((ValueError, TypeError), match=f"^{name}: "):
            make()


def test_importing_fsdiag_loads_no_image_library():
    import subprocess
    import sys
    code = ("import sys, fsdiag; heavy = [m for m in ('sklearn', 'skimage', 'PIL') if m in sys.modules]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True)


# ------------------------------------------------------------------ regressions: loaders and bad files
def assert_named(make, name):
    """make() raises ValueError or TypeError, one line, starting with 'name: '."""
    with pytest.raises((ValueError, TypeError), match=f"^{name}: ") as info:
        make()
    assert "\n" not in str(info.value), str(info.value)


def run_bounded(code):
    """Run `code` in a child Python with 3 GiB of address space and 2 minutes: a loader that
    allocates per possible label value fails there instead of hanging the test session."""
    import resource
    import subprocess
    import sys

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
    out = subprocess.run([sys.executable, "-c", code], preexec_fn=limit, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def test_png_16bit_gray_is_scaled_in_every_mode(tmp_path):
    # 16-bit gray read as 1.0 everywhere with mode='RGB' (or 'auto' beside a colour file): its
    # values went through convert('RGB'), which clips them to 255
    from PIL import Image

    deep = np.array([[0, 1000], [30000, 65535]], dtype=np.uint16)
    want = torch.from_numpy(deep.reshape(-1) / 65535.0).float()
    folder = tmp_path / "deep"
    folder.mkdir()
    img = Image.fromarray(deep)
    assert img.mode == "I;16"
    img.save(folder / "a.png")
    for mode in ("auto", "L"):
        gray = D.from_png_folder(folder, mode=mode)
        assert gray.image_shape == (1, 2, 2)
        torch.testing.assert_close(gray.atoms[0], want)
    rgb = D.from_png_folder(folder, mode="RGB")
    assert rgb.image_shape == (3, 2, 2)
    for c in range(3):                                           # gray -> three equal channels
        torch.testing.assert_close(rgb.images()[0, c].reshape(-1), want)
    colour = np.zeros((2, 2, 3), dtype=np.uint8)
    colour[0, 1] = (255, 128, 0)
    Image.fromarray(colour, mode="RGB").save(folder / "b.png")
    mixed = D.from_png_folder(folder)                            # auto: one colour file -> RGB
    assert mixed.image_shape == (3, 2, 2)
    torch.testing.assert_close(mixed.images()[0, 1].reshape(-1), want)
    torch.testing.assert_close(mixed.images()[1], torch.from_numpy(colour.transpose(2, 0, 1) / 255.0).float())


def test_from_array_refuses_values_float32_cannot_hold(tmp_path):
    # float64 values beyond float32's range became inf atoms
    big = np.full((2, 4), 1e300)
    assert_named(lambda: D.from_array(big), "path_or_array")
    with pytest.raises(ValueError, match="dtype=torch.float64"):
        D.from_array(big)
    np.save(tmp_path / "big.npy", big)
    assert_named(lambda: D.from_array(tmp_path / "big.npy"), "path_or_array")
    kept = D.from_array(big, dtype=torch.float64)                # float64 holds them
    assert bool(torch.isfinite(kept.atoms).all()) and kept.pixel_range == (1e300, 1e300)
    for bad in (np.array([[0.0, np.inf, 1.0, 2.0]]), np.array([[0.0, -np.inf, 1.0, 2.0]], np.float16),
                np.array([[np.nan, 0, 0, 0]], np.float32), torch.tensor([[0.0, 1.0, float("inf"), 0.0]])):
        assert_named(lambda: D.from_array(bad), "path_or_array")
        assert_named(lambda: D.from_array(bad, dtype=torch.float64), "path_or_array")


def test_from_array_labels_are_the_distinct_values_present():
    # labels [0, 10**9, 1] built 10**9 class names; uint64 labels >= 2**63 never finished
    out = run_bounded(
        "import numpy as np\n"
        "from fsdiag import data as D\n"
        "d = D.from_array(np.zeros((3, 4)), labels=[0, 10**9, 1])\n"
        "assert d.class_names == ('0', '1', '1000000000'), d.class_names\n"
        "assert d.labels.tolist() == [0, 2, 1]\n"
        "u = np.array([2**64 - 1, 0, 2**63, 0], dtype=np.uint64)\n"
        "d = D.from_array(np.zeros((4, 4)), labels=u)\n"
        "assert d.class_names == ('0', str(2**63), str(2**64 - 1)), d.class_names\n"
        "assert d.labels.tolist() == [2, 0, 1, 0]\n"
        "d = D.from_array(np.zeros((3, 4)), labels=[0, 2**63, 5])\n"       # a list numpy would make float64
        "assert d.class_names == ('0', '5', str(2**63)) and d.labels.tolist() == [0, 2, 1], d.class_names\n"
        "d = D.from_array(np.zeros((2, 4)), labels=[10**30, 7])\n"
        "assert d.class_names == ('7', str(10**30)) and d.labels.tolist() == [1, 0]\n"
        "print('ok')\n")
    assert out.strip() == "ok"
    # dense labels 0..K-1 keep their values; a gap is closed, the names say which value is which
    data = D.from_array(np.zeros((4, 4)), labels=np.array([3, 0, 3, 7], dtype=np.int16))
    assert data.class_names == ("0", "3", "7") and data.labels.tolist() == [1, 0, 1, 2]
    assert [data.class_names[k] for k in data.labels] == ["3", "0", "3", "7"]
    assert D.from_array(np.zeros((3, 4)), labels=torch.tensor([2, 0, 1])).labels.tolist() == [2, 0, 1]
    for bad in ([0, -1, 2], np.array([0, -5, 1], np.int8), [0.5, 1.0, 2.0], [1, None, 2], [[0], [1], [2]]):
        assert_named(lambda: D.from_array(np.zeros((3, 4)), labels=bad), "labels")


def write_idx_typed(path, arr, code):
    raw = struct.pack(">BBBB", 0, 0, code, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    path.write_bytes(raw + arr.astype(arr.dtype.newbyteorder(">")).tobytes())


def test_mnist_keeps_the_values_of_non_byte_idx_data(tmp_path):
    # float and int16 idx images were cast to uint8: 0.5 became 0, 300 became 44
    labels = np.array([1, 0, 2], dtype=np.uint8)
    cases = [(0x0D, np.float32, [0.5, 0.25, -1.5]), (0x0E, np.float64, [0.5, 1e-3, 2.0]),
             (0x0B, np.int16, [300, -7, 1]), (0x0C, np.int32, [70000, 5, 0]), (0x09, np.int8, [-3, 4, 100])]
    for code, dt, vals in cases:
        imgs = np.zeros((3, 4, 5), dtype=dt)
        imgs[:, 0, 0] = vals
        write_idx_typed(tmp_path / "train-images-idx3-ubyte", imgs, code)
        write_idx_typed(tmp_path / "train-labels-idx1-ubyte", labels, 0x08)
        data = D.mnist(tmp_path, dtype=torch.float64)
        assert data.image_shape == (1, 4, 5) and data.labels.tolist() == [1, 0, 2]
        assert data.atoms[:, 0].tolist() == [float(dt(v)) for v in vals], dt     # values as stored
        assert data.pixel_range == (float(min(0, *data.atoms[:, 0])), float(max(0, *data.atoms[:, 0])))
    # the bytes of MNIST itself are still pixels / 255
    write_idx_typed(tmp_path / "train-images-idx3-ubyte", np.full((3, 4, 5), 51, np.uint8), 0x08)
    data = D.mnist(tmp_path)
    assert data.pixel_range == (0.0, 1.0) and float(data.atoms.max()) == pytest.approx(0.2)
    # stored values that are not finite, or beyond float32, are refused by name
    for dt, code, v in ((np.float32, 0x0D, np.nan), (np.float64, 0x0E, 1e300)):
        write_idx_typed(tmp_path / "train-images-idx3-ubyte", np.full((3, 4, 5), v, dt), code)
        assert_named(lambda: D.mnist(tmp_path), "path")


def write_cifar(folder, data, labels, name="data_batch_1"):
    folder.mkdir(exist_ok=True)
    (folder / name).write_bytes(pickle.dumps({b"data": data, b"labels": labels}))


def test_cifar10_refuses_values_outside_a_byte(tmp_path):
    # a batch with values over 255 (or negative) wrapped modulo 256
    folder = tmp_path / "cifar"
    for data in (np.full((2, 3072), 300, dtype=np.int64), np.full((2, 3072), -1, dtype=np.int16),
                 np.full((2, 3072), 0.5), [[256] * 3072, [0] * 3072]):
        write_cifar(folder, data, [0, 1])
        assert_named(lambda: D.cifar10(folder), "path")
    write_cifar(folder, np.full((2, 3072), 255, dtype=np.int64), [0, 1])     # in range: read
    assert float(D.cifar10(folder).atoms.min()) == 1.0


def test_from_array_bad_files_raise_one_line_value_errors(tmp_path):
    # truncated or garbage .npy / .npz leaked numpy's and zipfile's own errors (and types)
    good = np.arange(40, dtype=np.float64).reshape(10, 4)
    np.save(tmp_path / "good.npy", good)
    np.savez(tmp_path / "good.npz", images=good, labels=np.arange(10))
    npy, npz = (tmp_path / "good.npy").read_bytes(), (tmp_path / "good.npz").read_bytes()
    bad = {"empty.npy": b"", "cut_header.npy": npy[:20], "cut_data.npy": npy[:-8], "garbage.npy": b"hello world" * 9,
           "empty.npz": b"", "cut.npz": npz[: len(npz) // 2], "garbage.npz": b"PK\x03\x04 nonsense",
           "zip.npy": npz, "npy.npz": npy}
    for name, raw in bad.items():
        (tmp_path / name).write_bytes(raw)
        assert_named(lambda: D.from_array(tmp_path / name), "path_or_array")
    # a header promising far more data than the file holds must not allocate it
    with open(tmp_path / "huge.npy", "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f8", "fortran_order": False, "shape": (10 ** 12, 4)})
        f.write(b"\x00" * 64)
    assert_named(lambda: D.from_array(tmp_path / "huge.npy"), "path_or_array")
    np.save(tmp_path / "objects.npy", np.array([[1, "a"], [None, 2.0]], dtype=object), allow_pickle=True)
    assert_named(lambda: D.from_array(tmp_path / "objects.npy"), "path_or_array")
    assert_named(lambda: D.from_array(tmp_path / "missing.npy"), "path_or_array")
    assert_named(lambda: D.from_array(torch.zeros(2, 4, dtype=torch.bfloat16), images_key=3), "images_key")
    # bfloat16 tensors are read (numpy has no bfloat16)
    assert D.from_array(torch.ones(2, 4, dtype=torch.bfloat16)).atoms.eq(1).all()


def test_from_png_folder_corrupt_files_raise_one_line_value_errors(tmp_path):
    from PIL import Image

    good = tmp_path / "good.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32), dtype=np.uint8)).save(good)
    raw = good.read_bytes()                          # noise: the pixel data fill most of the file
    for i, junk in enumerate([b"", b"not a png at all", raw[:40], raw[:len(raw) // 2], raw[:8] + b"\x00" * 60]):
        folder = tmp_path / f"bad{i}"
        folder.mkdir()
        (folder / "a.png").write_bytes(raw)
        (folder / "b.png").write_bytes(junk)
        for mode in ("auto", "L", "RGB"):
            assert_named(lambda: D.from_png_folder(folder, mode=mode), "path")


def test_read_idx_bad_headers_and_broken_gzip(tmp_path):
    good = struct.pack(">BBBB", 0, 0, 8, 2) + struct.pack(">2I", 2, 3) + bytes(range(6))
    cases = {"short_dims": struct.pack(">BBBB", 0, 0, 8, 3) + b"\x00\x00",      # 3 dims named, 0.5 given
             "too_few": good[:-1], "too_many": good + b"\x00", "three": b"\x00\x00\x08",
             "bad_code": b"\x00\x00\x07\x01\x00\x00\x00\x01\x00",
             "huge": struct.pack(">BBBB", 0, 0, 0x0E, 3) + struct.pack(">3I", 2 ** 32 - 1, 2 ** 32 - 1, 9),
             "cut.gz": gzip.compress(good)[:-6], "garbage.gz": b"\x1f\x8b" + b"\x00" * 30,
             "trailing.gz": gzip.compress(good) + b"junk!", "short.gz": gzip.compress(good[:6])}
    for name, raw in cases.items():
        (tmp_path / name).write_bytes(raw)
        assert_named(lambda: D.read_idx(tmp_path / name), "path")
    (tmp_path / "ok.gz").write_bytes(gzip.compress(good))
    assert D.read_idx(tmp_path / "ok.gz").tolist() == [[0, 1, 2], [3, 4, 5]]
    (tmp_path / "ok").write_bytes(good)
    assert D.read_idx(tmp_path / "ok").tolist() == [[0, 1, 2], [3, 4, 5]]


def test_mnist_validates_labels_dtype_and_class_names(tmp_path):
    write_idx_typed(tmp_path / "train-images-idx3-ubyte", np.zeros((3, 4, 4), np.uint8), 0x08)
    write_idx_typed(tmp_path / "train-labels-idx1-ubyte", np.array([0, 12, 1], np.uint8), 0x08)
    assert_named(lambda: D.mnist(tmp_path), "path, class_names")            # label 12 of 10 names
    assert D.mnist(tmp_path, class_names=[str(i) for i in range(13)]).labels.tolist() == [0, 12, 1]
    assert_named(lambda: D.mnist(tmp_path, dtype="float32"), "dtype")
    assert_named(lambda: D.mnist(tmp_path, class_names=5), "class_names")
    assert_named(lambda: D.mnist(tmp_path, class_names="abc"), "class_names")
    write_idx_typed(tmp_path / "train-labels-idx1-ubyte", np.array([0.0, 1.0, 1.0]), 0x0E)
    assert_named(lambda: D.mnist(tmp_path), "path")
    write_idx_typed(tmp_path / "train-images-idx3-ubyte", np.zeros((0, 4, 4), np.uint8), 0x08)
    write_idx_typed(tmp_path / "train-labels-idx1-ubyte", np.zeros(0, np.uint8), 0x08)
    assert_named(lambda: D.mnist(tmp_path), "path")                         # no images


def test_cifar10_malformed_batches_raise_one_line_value_errors(tmp_path):
    folder = tmp_path / "cifar"
    folder.mkdir()
    ok = {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]}
    good = pickle.dumps(ok)
    cases = [b"", b"not a pickle", good[: len(good) // 2], pickle.dumps([1, 2, 3]),
             pickle.dumps({b"labels": [0, 1]}), pickle.dumps({b"data": ok[b"data"]}),
             pickle.dumps({b"data": np.zeros((2, 3000), np.uint8), b"labels": [0, 1]}),
             pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1, 2]}),
             pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}),
             pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, -1]}),
             pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": ["a", "b"]}),
             pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [[0], [1, 2]]}),
             pickle.dumps({b"data": "pixels", b"labels": [0, 1]}),
             pickle.dumps({b"data": np.zeros((0, 3072), np.uint8), b"labels": []})]
    for raw in cases:
        (folder / "data_batch_1").write_bytes(raw)
        assert_named(lambda: D.cifar10(folder), "path")
    (folder / "data_batch_1").write_bytes(good)
    # a second batch of another width used to reach np.concatenate's own error
    (folder / "data_batch_2").write_bytes(pickle.dumps({b"data": np.zeros((1, 10), np.uint8), b"labels": [0]}))
    assert_named(lambda: D.cifar10(folder), "path")
    (folder / "data_batch_2").unlink()
    for meta in (b"junk", pickle.dumps({b"label_names": 5}), pickle.dumps({b"label_names": [b"a"]}), pickle.dumps(7)):
        (folder / "batches.meta").write_bytes(meta)
        assert_named(lambda: D.cifar10(folder), "path")
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"a", "b\xe9".encode("latin-1")]}))
    assert D.cifar10(folder).class_names[0] == "a"
    assert_named(lambda: D.cifar10(folder, dtype=torch.int64), "dtype")


def test_loader_messages_stay_one_line_and_name_unreadable_files(tmp_path, monkeypatch):
    # a file name holding a newline made the "images differ in size" message two lines; an idx
    # file that could not be opened raised the OSError itself
    from PIL import Image

    folder = tmp_path / "odd"
    folder.mkdir()
    Image.fromarray(np.zeros((2, 2), np.uint8)).save(folder / "a.png")
    Image.fromarray(np.zeros((3, 3), np.uint8)).save(folder / "b\nc.png")
    assert_named(lambda: D.from_png_folder(folder), "path")
    (tmp_path / "x-idx1-ubyte").write_bytes(struct.pack(">BBBBI", 0, 0, 8, 1, 1) + b"\x05")
    assert D.read_idx(tmp_path / "x-idx1-ubyte").tolist() == [5]

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(loaders, "open", refuse, raising=False)      # the module's own name, not builtins'
    assert_named(lambda: D.read_idx(tmp_path / "x-idx1-ubyte"), "path")
