"""The problem bundle (`Problem`), the built-in problems for judging any sampler (`fsdiag
diagnose`, `fsdiag.evaluate`) and users' own (`custom`, `held_out`, `load_atoms`).

A `Problem` carries what a sampler needs besides the denoiser: y, the forward model, the noise
level, the image shape and the schedule helpers. Its prior is an FSR prior, so
`fsdiag.ExactDenoiser(problem.prior)` is the exact denoiser and `evaluate` the judge.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ._checks import as_tensor, check_int
from .forward import Affine, ForwardModel, Mask
from .likelihood import GaussianLikelihood
from .operators import blur_matrix, load_array, operator
from .prior import EmpiricalPrior
from .registry import Registry
from .schedules import VPSchedule
from .testbeds import GaussianMixture, three_atoms

__all__ = ["Problem", "PROBLEMS", "make_problem", "as_samples", "custom", "held_out", "load_atoms"]


@dataclass
class Problem:
    """The one problem bundle: a prior, a likelihood y = A(x0) + N(0, noise_std^2 I), and what is
    worth computing once for both. Samplers build one per run (`Problem.build`), the built-in
    problems (`make_problem`) and users' (`custom`, `held_out`) return one with a name, the
    images' shape and the held-out truth. Samples are rows (n, d) or, for images,
    (n, *image_shape); `to_rows` / `to_images` convert. Times follow `schedule` (the paper's VP
    schedule); `sigma(t)` is the matching variance-exploding noise level sqrt((1 - abar)/abar).
    The operator's algebra (A w, A^T z, its rows, A A^T) is the forward model's
    (`fsdiag.forward.LinearForwardModel`)."""

    prior: object
    lik: GaussianLikelihood
    name: str = "problem"
    image_shape: tuple | None = None
    truth: torch.Tensor | None = None
    description: str = ""
    schedule: VPSchedule = field(default_factory=VPSchedule)
    _log_lik: torch.Tensor | None = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        if not isinstance(self.lik, GaussianLikelihood):
            raise TypeError(f"lik: expected an fsdiag.GaussianLikelihood, got {type(self.lik).__name__}")
        self.lik.check_dim(self.prior.dim)

    @classmethod
    def build(cls, prior, lik, **fields) -> "Problem":
        """The problem of (prior, lik), with the per-atom log-likelihoods computed now (so that a
        noise level too small for the data fails here, naming noise_std)."""
        problem = cls(prior, lik, **fields)
        problem.log_lik
        return problem

    @property
    def log_lik(self) -> torch.Tensor | None:
        """(N,) float64 l_i = log p(y | x^(i)) for an EmpiricalPrior (None for other priors),
        computed once. float64 whatever the atoms' dtype: the posterior over atoms is a softmax of
        l_i, and float32 l_i lose the differences that decide near ties (the engine centres l_i
        before casting to the kernels' dtype: `AtomStore.shifted_log_lik`)."""
        if self._log_lik is None and isinstance(self.prior, EmpiricalPrior):
            log_lik = self.prior.log_likelihoods(self.lik)
            if not bool(torch.isfinite(log_lik).all()):
                bad = int((~torch.isfinite(log_lik)).sum())
                raise ValueError(f"noise_std: log p(y | x^(i)) overflows float64 for {bad} of "
                                 f"{self.prior.n_atoms} atoms: noise_std ({float(self.lik.noise_std.min()):.3g}) "
                                 "is too small for the residuals y - A(x^(i)); use a larger noise_std")
            self._log_lik = log_lik
        return self._log_lik

    @property
    def dtype(self):
        return self.prior.dtype

    @property
    def device(self):
        return self.prior.device

    @property
    def dim(self) -> int:
        return self.prior.dim

    @property
    def y(self) -> torch.Tensor:
        return self.lik.y.to(self.prior.dtype)

    @property
    def forward(self):
        return self.lik.forward

    @property
    def noise_std(self) -> float:
        return float(self.lik.noise_std.max())

    @property
    def labels(self) -> torch.Tensor | None:
        return getattr(self.prior, "labels", None)

    def noise_var(self) -> torch.Tensor:
        """The measurement noise variance per observation (m,), in the prior's dtype and device."""
        return self.lik.noise_var.to(self.dtype).to(self.device)

    def to_rows(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], self.dim)

    def to_images(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], *(self.image_shape or (self.dim,)))

    def A(self, x: torch.Tensor) -> torch.Tensor:
        """The forward model on rows or images, (n, m); differentiable with torch autograd."""
        return self.forward(self.to_rows(x))

    def A_vjp(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """J_A(x)^T v, in the shape of x."""
        return self.forward.vjp(self.to_rows(x), v).reshape(x.shape)

    def log_likelihood(self, x: torch.Tensor) -> torch.Tensor:
        """log p(y | x0) for each sample, (n,)."""
        return self.lik.log_prob(self.to_rows(x))

    def grad_log_likelihood(self, x: torch.Tensor) -> torch.Tensor:
        """grad log p(y | x0) = J_A^T (y - A(x0)) / noise_std^2, in the shape of x."""
        return self.lik.grad_log_prob(self.to_rows(x)).reshape(x.shape)

    def alpha_bar(self, t: float) -> float:
        return self.schedule.alpha_bar(t)

    def sigma(self, t: float) -> float:
        ab = self.alpha_bar(t)
        return math.sqrt((1.0 - ab) / ab)

    def time_grid(self, n_steps: int, t_min: float = 1e-2) -> torch.Tensor:
        """The paper's reverse grid linspace(1, t_min, n_steps + 1)."""
        return self.schedule.time_grid(n_steps, t_min)

    def sigma_grid(self, n_steps: int, t_min: float = 1e-2) -> torch.Tensor:
        """VE noise levels of that grid, decreasing, float64."""
        return torch.tensor([self.sigma(float(t)) for t in self.time_grid(n_steps, t_min)], dtype=torch.float64)

    def __repr__(self) -> str:
        shape = f", image_shape={self.image_shape}" if self.image_shape else ""
        n = getattr(self.prior, "n_atoms", None)
        atoms = f"N={n}, " if n is not None else ""
        return (f"Problem({self.name!r}, {atoms}d={self.dim}, m={self.lik.obs_dim}, "
                f"noise_std={self.noise_std:g}{shape})")


# ------------------------------------------------------------------ built-in problems
def _three_atoms(seed: int) -> Problem:
    prior, lik = three_atoms()
    return Problem(prior, lik, name="three_atoms", truth=torch.tensor([[-1.8]], dtype=torch.float64),
                          description="the paper's three-atom testbed: atoms {-1.8, 0.2, 2.2}, identity, "
                                      "noise 0.3, y = -1.8")


def _gmm2d(seed: int) -> Problem:
    gm = GaussianMixture([0.4, 0.3, 0.2, 0.1], [[1.5, 1.5], [1.5, -1.5], [-1.5, 1.5], [-1.5, -1.5]], [0.3 ** 2] * 4)
    prior = gm.to_empirical(500, torch.Generator().manual_seed(seed), device="cpu")
    lik = GaussianLikelihood(Affine(torch.tensor([[1.0, 1.0]], dtype=torch.float64)), [0.0], 0.3)
    return Problem(prior, lik, name="gmm2d",
                          description="a 4-mode 2-D Gaussian mixture (500 atoms), y = x1 + x2 + noise = 0, "
                                      "noise 0.3: two modes kept, two excluded")


def _image_operator(kind: str, shape: tuple):
    """(forward model, noise_std, what it observes) of the built-in image problems."""
    from . import imaging

    d = math.prod(shape)
    if kind == "inpainting":
        mask = torch.zeros(d, dtype=torch.bool)
        mask[:d // 2] = True                                            # the top half is observed
        return Mask(mask), 0.5, "the top half observed"
    if kind == "blur":
        return Affine(blur_matrix(shape[1], shape[2], 1.0)), 0.3, "a Gaussian blur (std 1 pixel)"
    if kind == "box_inpainting":
        return imaging.BoxInpainting(shape), 0.1, "everything but a central box observed"
    if kind == "downsampling":
        return imaging.Downsampling(shape, 2), 0.1, "2x2 averages observed (2x downsampling)"
    if kind == "fourier_magnitude":
        return imaging.FourierMagnitude(shape), 0.1, "the magnitude of the 2-D Fourier transform observed"
    if kind == "pixels":
        return imaging.Inpainting(shape, 0.5, seed=0), 0.05, "half of the pixels observed (random, fixed)"
    raise KeyError(kind)


def _image_problem(seed: int, name: str, kind: str, atoms, labels, shape, what_data: str) -> Problem:
    """Leave one atom out as the truth (with its exact copies: the truth is no atom), observe it."""
    x = atoms.to(torch.float64)
    g = torch.Generator().manual_seed(seed)
    held = int(torch.randint(0, x.shape[0], (1,), generator=g))
    keep = (x != x[held]).any(1)                                       # leave-one-out: truth is no atom
    prior = EmpiricalPrior(x[keep], labels=labels[keep], device="cpu")
    truth = x[held:held + 1]
    fwd, noise, what = _image_operator(kind, shape)
    y = fwd(truth)[0] + noise * torch.randn(fwd.out_dim(x.shape[1]), generator=g, dtype=torch.float64)
    lik = GaussianLikelihood(fwd, y, noise)
    return Problem(prior, lik, name=name, image_shape=shape, truth=truth,
                   description=f"{what_data} ({prior.n_atoms} atoms, one held-out truth of class "
                               f"{int(labels[held])}), {what}, noise {noise}")


def _digits(seed: int, kind: str) -> Problem:
    from sklearn.datasets import load_digits   # the 8x8 digits that ship with scikit-learn

    data = load_digits()
    x = torch.tensor(data.data / 16.0, dtype=torch.float64)            # pixels in [0, 1]
    labels = torch.tensor(data.target, dtype=torch.long)
    return _image_problem(seed, f"digits_{kind}", kind, x, labels, (1, 8, 8), "8x8 digits in [0, 1]")


def _textures(seed: int) -> Problem:
    from .data import patches

    data = patches(1200, 8, seed=0, dtype=torch.float64)                 # 6 textures and photos, 200 each
    return _image_problem(seed, "textures_inpainting", "pixels", data.atoms, data.labels, (1, 8, 8),
                          "8x8 patches of scikit-image's textures and photos in [0, 1], labelled by source")


PROBLEMS = Registry("problem", {
    "three_atoms": _three_atoms,
    "gmm2d": _gmm2d,
    "digits_inpainting": lambda seed: _digits(seed, "inpainting"),
    "digits_blur": lambda seed: _digits(seed, "blur"),
    "digits_box_inpainting": lambda seed: _digits(seed, "box_inpainting"),
    "digits_downsampling": lambda seed: _digits(seed, "downsampling"),
    "digits_fourier_magnitude": lambda seed: _digits(seed, "fourier_magnitude"),
    "textures_inpainting": _textures,
})


def make_problem(name: str, *, seed: int = 0) -> Problem:
    """A built-in problem by name (see PROBLEMS); `seed` picks atoms, held-out truth and noise."""
    if not isinstance(name, str) or name not in PROBLEMS:
        raise ValueError(f"problem: expected one of {sorted(PROBLEMS)}, got {name!r}")
    return PROBLEMS[name](check_int(seed, "seed", minimum=0))


def as_samples(samples, problem: Problem) -> torch.Tensor:
    """A sampler's output as (n, d) rows in the prior's dtype, or a ValueError naming `samples`."""
    x = as_tensor(samples, "samples", dtype=problem.prior.dtype)
    if x.ndim < 2 or x.shape[0] < 1 or math.prod(x.shape[1:]) != problem.dim:
        want = f"(n, {problem.dim})" + (f" or (n, {', '.join(map(str, problem.image_shape))})"
                                        if problem.image_shape else "")
        raise ValueError(f"samples: expected shape {want}, got {tuple(x.shape)}")
    return problem.to_rows(x)


# ------------------------------------------------------------------ your own problem
def _rows(value, name: str, dim: int, dtype=torch.float64) -> torch.Tensor:
    t = as_tensor(value, name, dtype=dtype)
    if t.numel() != dim:
        raise ValueError(f"{name}: expected {dim} values, got shape {tuple(t.shape)}")
    return t.reshape(1, dim)


def _atom_rows(atoms, labels, image_shape):
    """(atoms as float (N, d) rows, labels, image shape): an ImageData gives its labels (when it
    has more than one class) and image shape unless given; (N, C, H, W) arrays give their shape."""
    from .data import ImageData
    from .imaging import as_image_shape

    if isinstance(atoms, ImageData):
        if labels is None and int(atoms.labels.unique().numel()) > 1:
            labels = atoms.labels
        image_shape = atoms.image_shape if image_shape is None else image_shape
        atoms = atoms.atoms
    x = as_tensor(atoms, "atoms")
    if x.ndim < 2 or x.shape[0] < 1:
        raise ValueError(f"atoms: expected shape (N, d) or (N, C, H, W), got {tuple(x.shape)}")
    if image_shape is None and x.ndim == 4:
        image_shape = tuple(x.shape[1:])
    x = x.reshape(x.shape[0], -1)
    if x.dtype not in (torch.float32, torch.float64):
        x = x.to(torch.float64)
    if image_shape is not None:
        image_shape = as_image_shape(image_shape)
        if math.prod(image_shape) != x.shape[1]:
            raise ValueError(f"image_shape: {image_shape} has {math.prod(image_shape)} values, the atoms have "
                             f"d = {x.shape[1]}")
    return x, labels, image_shape


def custom(atoms, forward, y, noise_std, *, labels=None, image_shape=None, truth=None, weights=None,
           name: str | None = None, description: str = "", device="cpu") -> Problem:
    """Your own problem: y = A(x0) + N(0, noise_std^2 I) with the FSR prior on `atoms`.

    atoms: (N, d) or (N, C, H, W) tensor/array, or an `fsdiag.data.ImageData` (any loader: npy/npz,
    PNG folders, MNIST idx, CIFAR batches), whose labels and image shape are used unless given;
    forward: an fsdiag forward model, an operator SPEC string (see `operator`) or an (m, d) matrix;
    y: m values (any shape); noise_std: a positive scalar or m values; labels: one integer per atom
    (modes; else each atom is its own mode); truth: the ground truth x0 when known.
    Returns the same Problem as the built-ins (`make_problem`)."""
    x, labels, image_shape = _atom_rows(atoms, labels, image_shape)
    d = x.shape[1]
    prior = EmpiricalPrior(x, weights=weights, labels=labels, device=device)
    if isinstance(forward, str):
        forward = operator(forward, d, image_shape)
    elif not isinstance(forward, ForwardModel):
        matrix = as_tensor(forward, "forward", ndim=2, dtype=torch.float64)
        if matrix.shape[1] != d:
            raise ValueError(f"forward: expected a matrix with d = {d} columns, got {tuple(matrix.shape)}")
        forward = Affine(matrix)
    m = forward.out_dim(d)
    y = _rows(y, "y", m)[0]
    lik = GaussianLikelihood(forward, y, noise_std)
    if truth is not None:
        truth = _rows(truth, "truth", d)
    if name is not None and not isinstance(name, str):
        raise TypeError(f"name: expected a string, got {type(name).__name__}")
    name = name or "custom"
    description = description or (f"{name}: {prior.n_atoms} atoms in d = {d}"
                                  + (f" ({'x'.join(map(str, image_shape))} images)" if image_shape else "")
                                  + f", {forward!r}, m = {m}, noise {float(lik.noise_std.max()):g}")
    return Problem(prior, lik, name=name, image_shape=image_shape, truth=truth, description=description)


def held_out(atoms, forward, noise_std, *, index: int, seed: int = 0, labels=None, image_shape=None,
             name: str | None = None, device="cpu") -> Problem:
    """`custom` with atom `index` held out as the ground truth (no longer an atom) and
    y = A(truth) + noise simulated with `seed`."""
    x, labels, image_shape = _atom_rows(atoms, labels, image_shape)
    n = x.shape[0]
    index = check_int(index, "truth_index", minimum=0)
    if n < 2 or index >= n:
        raise ValueError(f"truth_index: expected an atom index in [0, {n - 1}] with at least one atom left, got {index}")
    seed = check_int(seed, "seed", minimum=0)
    keep = torch.arange(n) != index
    truth = x[index:index + 1].reshape(1, -1).to(torch.float64)
    lab = None if labels is None else np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
    if lab is not None and lab.shape != (n,):
        raise ValueError(f"labels: expected one label per atom, shape ({n},), got {lab.shape}")
    rest_labels = None if lab is None else lab[keep.numpy()]
    d = truth.shape[1]
    if isinstance(forward, str):
        forward = operator(forward, d, image_shape)
    std = as_tensor(noise_std, "noise_std", ndim=(0, 1), dtype=torch.float64)
    g = torch.Generator().manual_seed(seed)
    clean = forward(truth)[0]
    y = clean + std * torch.randn(clean.shape[0], generator=g, dtype=torch.float64)
    what = "" if lab is None else f" of class {lab[index]}"
    return custom(x[keep], forward, y, noise_std, labels=rest_labels, image_shape=image_shape, truth=truth,
                  name=name, device=device,
                  description=f"{name or 'custom'}: atom {index}{what} held out as the truth, y simulated with "
                              f"seed {seed}; {n - 1} atoms, {forward!r}, noise {float(std.max()):g}")


def load_atoms(path, *, image_shape=None, dtype=torch.float32):
    """Atoms from a file or folder, as `fsdiag.data.ImageData` (images), or as a tensor (N, d)
    for a 2-D array given without `image_shape` (rows): .npy/.npz,
    an idx file (MNIST's format, .gz too), a folder of PNGs (class subfolders give labels), a
    folder with MNIST's idx files or CIFAR-10's python batches. Errors name `path`."""
    from . import data
    from .imaging import as_image_shape

    p = Path(path)
    if not p.exists():
        raise ValueError(f"path: no file or folder {str(path)!r}")
    shape = None if image_shape is None else as_image_shape(image_shape)
    if p.is_dir():
        names = [q.name for q in p.rglob("*") if q.is_file()]
        if any("idx" in nm for nm in names):
            return data.mnist(p, dtype=dtype)
        if any(nm.startswith(("data_batch", "test_batch")) for nm in names):
            return data.cifar10(p, dtype=dtype)
        return data.from_png_folder(p, dtype=dtype)
    if "idx" in p.name:
        arr = data.read_idx(p)
        return data.from_array(arr, image_shape=shape, dtype=dtype)
    if shape is None:
        arr = load_array(p, "path")
        if arr.ndim == 2 and arr.dtype.kind in "fiu":      # rows (N, d): not images unless told
            return data.from_array(arr, image_shape=(1, 1, arr.shape[1]), dtype=dtype).atoms
    return data.from_array(p, image_shape=shape, dtype=dtype)
