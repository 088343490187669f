"""Image data sets as FSR atoms: rows (N, d) with d = C H W, integer labels, the image shape.

Every loader returns an `ImageData` and states its pixel range. Bundled data need no
download: scikit-learn's 8x8 digits, scikit-image's LFW subset and its bundled photos and
textures (cut into patches), and procedurally generated shapes. A user's own data come from
.npy/.npz arrays, a folder of PNGs, MNIST idx files or CIFAR-10 python batches on disk.

The ground truth of an experiment must not be an atom (then the exact posterior is a Dirac
on it for any noise level): `hold_out` / `ImageData.split` take the truths out of the prior,
duplicates of them included.

The modules: `images` (ImageData, hold_out, and how images and labels become an ImageData),
`datasets` (the bundled data), `arrays` (`from_array`: arrays, .npy, .npz), `loaders` (PNG
folders, idx files and MNIST, CIFAR-10), `checks` (the argument checks they share).
"""
from __future__ import annotations

from .arrays import from_array
from .datasets import PATCH_SOURCES, SHAPES, digits, lfw_subset, patch_coverage, patches, shapes
from .images import HeldOut, ImageData, hold_out
from .loaders import cifar10, from_png_folder, mnist, read_idx

__all__ = ["ImageData", "HeldOut", "hold_out", "digits", "lfw_subset", "patches", "patch_coverage",
           "PATCH_SOURCES", "shapes", "SHAPES", "from_array", "from_png_folder", "mnist", "read_idx", "cifar10"]
