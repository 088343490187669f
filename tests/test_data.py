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
    assert data.class_names == D._DEFAULT_SOURCES and torch.bincount(data.labels).tolist() == [10] * 6
    for i in (0, 17):           # each patch is a window of its source image
        assert is_window(data.atoms[i], D._source_image(data.class_names[data.labels[i]], False), 8)
    color = D.patches(9, 5, sources=("astronaut", "coffee", "chelsea"), color=True, seed=1)
    check(color, 9, (3, 5, 5), 3)
    assert is_window(color.atoms[0], D._source_image(color.class_names[color.labels[0]], True), 5)


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
    monkeypatch.setattr(D, "_PATCH_BLOCK", 3 * 64)
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
    ref = D._equals_any(data.atoms, truths)
    assert torch.equal(ref, D._equals_any(data.atoms, truths, max_values=64))
    assert torch.equal(ref, D._equals_any(data.atoms, truths, max_values=1))
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
    bad = [(lambda: D.from_array(tmp_path / "nope.npy"), "path"), (lambda: D.from_array(tmp_path), "path"),
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
