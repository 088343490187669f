"""Built-in inverse problems for judging any sampler (`fsdiag diagnose`, `fsdiag.evaluate`).

An `InverseProblem` carries what a sampler needs besides the denoiser: y, the forward model,
the noise level, the image shape and the schedule helpers. Its prior is an FSR prior, so
`fsdiag.ExactDenoiser(problem.prior)` is the exact denoiser and `evaluate` the judge.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ._checks import as_tensor, check_int
from .forward import Affine, Mask
from .likelihood import GaussianLikelihood
from .prior import EmpiricalPrior
from .schedules import VPSchedule
from .testbeds import GaussianMixture, three_atoms

__all__ = ["InverseProblem", "PROBLEMS", "make_problem", "blur_matrix"]


@dataclass
class InverseProblem:
    """y = A(x0) + N(0, noise_std^2 I) with an FSR prior. Samples are rows (n, d) or, for
    images, (n, *image_shape); `to_rows` / `to_images` convert. Times follow the paper's VP
    schedule; `sigma(t)` is the matching variance-exploding noise level sqrt((1 - abar)/abar)."""

    name: str
    prior: EmpiricalPrior
    lik: GaussianLikelihood
    image_shape: tuple | None = None
    truth: torch.Tensor | None = None
    description: str = ""
    schedule: VPSchedule = field(default_factory=VPSchedule)

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
    def dim(self) -> int:
        return self.prior.dim

    @property
    def labels(self) -> torch.Tensor | None:
        return self.prior.labels

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
        return (f"InverseProblem({self.name!r}, N={self.prior.n_atoms}, d={self.dim}, m={self.lik.obs_dim}, "
                f"noise_std={self.noise_std:g}{shape})")


# ------------------------------------------------------------------ operators
def blur_matrix(height: int, width: int, std: float = 1.0) -> torch.Tensor:
    """(H W, H W) matrix of a Gaussian blur with zero padding (kernel truncated at 3 std)."""
    check_int(height, "height")
    check_int(width, "width")
    r = max(1, math.ceil(3 * std))
    k1 = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=torch.float64) / std) ** 2)
    k1 = k1 / k1.sum()

    def conv1d(n):  # (n, n) 1-D convolution with zero padding
        idx = torch.arange(n)
        off = idx[None, :] - idx[:, None]
        return torch.where(off.abs() <= r, k1[(off + r).clamp(0, 2 * r)], torch.zeros(()))

    return torch.kron(conv1d(height), conv1d(width))


# ------------------------------------------------------------------ built-in problems
def _three_atoms(seed: int) -> InverseProblem:
    prior, lik = three_atoms()
    return InverseProblem("three_atoms", prior, lik, truth=torch.tensor([[-1.8]], dtype=torch.float64),
                          description="the paper's three-atom testbed: atoms {-1.8, 0.2, 2.2}, identity, "
                                      "noise 0.3, y = -1.8")


def _gmm2d(seed: int) -> InverseProblem:
    gm = GaussianMixture([0.4, 0.3, 0.2, 0.1], [[1.5, 1.5], [1.5, -1.5], [-1.5, 1.5], [-1.5, -1.5]], [0.3 ** 2] * 4)
    prior = gm.to_empirical(500, torch.Generator().manual_seed(seed), device="cpu")
    lik = GaussianLikelihood(Affine(torch.tensor([[1.0, 1.0]], dtype=torch.float64)), [0.0], 0.3)
    return InverseProblem("gmm2d", prior, lik,
                          description="a 4-mode 2-D Gaussian mixture (500 atoms), y = x1 + x2 + noise = 0, "
                                      "noise 0.3: two modes kept, two excluded")


def _digits(seed: int, kind: str) -> InverseProblem:
    from sklearn.datasets import load_digits   # the 8x8 digits that ship with scikit-learn

    data = load_digits()
    x = torch.tensor(data.data / 16.0, dtype=torch.float64)            # pixels in [0, 1]
    labels = torch.tensor(data.target, dtype=torch.long)
    g = torch.Generator().manual_seed(seed)
    held = int(torch.randint(0, x.shape[0], (1,), generator=g))
    keep = torch.arange(x.shape[0]) != held                            # leave-one-out: truth is no atom
    prior = EmpiricalPrior(x[keep], labels=labels[keep], device="cpu")
    truth = x[held:held + 1]
    if kind == "inpainting":
        mask = torch.zeros(64, dtype=torch.bool)
        mask[:32] = True                                               # the top half is observed
        fwd, noise, what = Mask(mask), 0.5, "the top half observed"
    else:
        fwd, noise, what = Affine(blur_matrix(8, 8, 1.0)), 0.3, "a Gaussian blur (std 1 pixel)"
    y = fwd(truth)[0] + noise * torch.randn(fwd.out_dim(64), generator=g, dtype=torch.float64)
    lik = GaussianLikelihood(fwd, y, noise)
    return InverseProblem(f"digits_{kind}", prior, lik, image_shape=(1, 8, 8), truth=truth,
                          description=f"8x8 digits in [0, 1] ({prior.n_atoms} atoms, one held-out truth of "
                                      f"class {int(labels[held])}), {what}, noise {noise}")


PROBLEMS = {
    "three_atoms": _three_atoms,
    "gmm2d": _gmm2d,
    "digits_inpainting": lambda seed: _digits(seed, "inpainting"),
    "digits_blur": lambda seed: _digits(seed, "blur"),
}


def make_problem(name: str, *, seed: int = 0) -> InverseProblem:
    """A built-in problem by name (see PROBLEMS); `seed` picks atoms, held-out truth and noise."""
    if not isinstance(name, str) or name not in PROBLEMS:
        raise ValueError(f"problem: expected one of {sorted(PROBLEMS)}, got {name!r}")
    return PROBLEMS[name](check_int(seed, "seed", minimum=0))


def as_samples(samples, problem: InverseProblem) -> torch.Tensor:
    """A sampler's output as (n, d) rows in the prior's dtype, or a ValueError naming `samples`."""
    x = as_tensor(samples, "samples", dtype=problem.prior.dtype)
    if x.ndim < 2 or x.shape[0] < 1 or math.prod(x.shape[1:]) != problem.dim:
        want = f"(n, {problem.dim})" + (f" or (n, {', '.join(map(str, problem.image_shape))})"
                                        if problem.image_shape else "")
        raise ValueError(f"samples: expected shape {want}, got {tuple(x.shape)}")
    return problem.to_rows(x)
