"""Closed-form testbeds (ground truth) and manifold data.

`GaussianMixture` covers the discrete (zero covariances), Gaussian (one component)
and GMM priors: its diffused marginals, scores, Tweedie moments and posteriors under
an affine forward model with Gaussian noise are all closed form. It satisfies the
same denoiser interface as `EmpiricalPrior` (moments, cov_matvec, denoiser_vjp,
score), so every likelihood approximation runs on it unchanged.
"""
from __future__ import annotations

import math

import torch

from ._checks import as_tensor, check_abar, check_generator, check_int, check_positive, check_real, resolve_device
from .forward import Identity, LinearForwardModel
from .likelihood import GaussianLikelihood
from .kernels import check_result
from .prior import EmpiricalPrior, Moments

__all__ = ["GaussianMixture", "DiscretePrior", "GaussianPrior", "grid_posterior",
           "swiss_roll", "torus", "sphere", "three_atoms", "PAPER_METHOD_PARAMS"]

# The method parameters the paper's code uses on its testbeds.
PAPER_METHOD_PARAMS = {"zeta_dps": {"zeta": 0.3}}


def three_atoms(*, device="cpu", dtype=torch.float64) -> tuple[EmpiricalPrior, GaussianLikelihood]:
    """The paper's minimal testbed (docs/design.md §6, claim 6): atoms {-1.8, 0.2, 2.2} with equal
    weights, the identity forward model, noise std 0.3 and y = -1.8."""
    prior = EmpiricalPrior(torch.tensor([[-1.8], [0.2], [2.2]], dtype=dtype), device=device)
    return prior, GaussianLikelihood(Identity(), torch.tensor([-1.8], dtype=dtype), 0.3)


class GaussianMixture:
    """sum_k pi_k N(mu_k, Sigma_k); covs (K, d, d), or (K,) isotropic variances; zero is allowed."""

    def __init__(self, weights, means, covs, *, dtype=torch.float64, device="cpu"):
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"dtype: expected torch.float32 or torch.float64, got {dtype!r}")
        device = resolve_device(device)
        means = as_tensor(means, "means", ndim=2, dtype=dtype, device=device)
        K, d = means.shape
        if K < 1 or d < 1:
            raise ValueError(f"means: expected shape (K, d) with K, d >= 1, got {(K, d)}")
        w = as_tensor(weights, "weights", ndim=1, dtype=torch.float64, device=device)
        if w.shape[0] != K or bool((w < 0).any()) or not bool((w > 0).any()):
            raise ValueError(f"weights: expected {K} non-negative weights with a positive sum, got {w.tolist()}")
        if not bool(torch.isfinite(w.sum())):  # weights near 1e308: the sum overflows
            w = w / w.max()
        covs = as_tensor(covs, "covs", ndim=(1, 3), dtype=dtype, device=device)
        if covs.ndim == 1:
            if covs.shape[0] != K or bool((covs < 0).any()):
                raise ValueError(f"covs: expected {K} non-negative variances, got {covs.tolist()}")
            covs = covs[:, None, None] * torch.eye(d, dtype=dtype, device=device)
        if covs.shape != (K, d, d):
            raise ValueError(f"covs: expected shape ({K}, {d}, {d}), got {tuple(covs.shape)}")
        _check_covariances(covs)
        self._set((w / w.sum()).to(dtype), means, covs)

    def _set(self, weights, means, covs):
        # Covariances computed here (diffuse, condition) skip the user-facing check: they are
        # symmetric PSD up to rounding, which `sample` clamps.
        self.weights, self.means, self.covs = weights, means, 0.5 * (covs + covs.transpose(1, 2))
        self.dtype, self.device = means.dtype, means.device
        return self

    @classmethod
    def _from_parts(cls, weights, means, covs) -> "GaussianMixture":
        return cls.__new__(cls)._set(weights, means, covs)

    # --------------------------------------------------------------- basics
    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def n_components(self) -> int:
        return self.means.shape[0]

    def __repr__(self):
        return f"GaussianMixture(K={self.n_components}, d={self.dim})"

    def mean(self) -> torch.Tensor:
        return self.weights @ self.means

    def cov(self) -> torch.Tensor:
        mu = self.mean()
        dev = self.means - mu
        return torch.einsum("k,kij->ij", self.weights, self.covs) + torch.einsum("k,ki,kj->ij", self.weights, dev, dev)

    def diffuse(self, abar) -> "GaussianMixture":
        """The marginal p_t = sum_k pi_k N(a mu_k, a^2 Sigma_k + b^2 I)."""
        abar, a, b2 = check_abar(abar)
        eye = torch.eye(self.dim, dtype=self.dtype, device=self.device)
        return GaussianMixture._from_parts(self.weights, a * self.means, abar * self.covs + b2 * eye)

    def _component_log_prob(self, x):
        x = self._query(x)
        L, info = torch.linalg.cholesky_ex(self.covs)                          # (K, d, d)
        if bool((info != 0).any()):
            raise ValueError("covs: the density needs positive-definite covariances; diffuse a "
                             "discrete (zero-covariance) prior first")
        diff = (x[None] - self.means[:, None]).transpose(1, 2)                 # (K, d, B)
        sol = torch.linalg.solve_triangular(L, diff, upper=False)              # (K, d, B)
        logdet = 2 * torch.log(torch.diagonal(L, dim1=1, dim2=2)).sum(1)       # (K,)
        lp = -0.5 * (sol * sol).sum(1) - 0.5 * logdet[:, None] - 0.5 * self.dim * math.log(2 * math.pi)
        return lp.T + torch.log(self.weights)                                  # (B, K)

    def log_prob(self, x) -> torch.Tensor:
        """log density (needs positive-definite covariances: diffuse a discrete prior first)."""
        return torch.logsumexp(self._component_log_prob(x), 1)

    def component_posteriors(self, x) -> torch.Tensor:
        return torch.softmax(self._component_log_prob(x), 1)

    def sample(self, n: int, generator: torch.Generator, *, return_labels: bool = False):
        n = check_int(n, "n")
        check_generator(generator)
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        L = _psd_sqrt(self.covs)   # works for singular (e.g. zero) covariances too
        z = torch.randn(n, self.dim, generator=generator, dtype=self.dtype, device=self.device)
        x = self.means[k] + torch.einsum("nij,nj->ni", L[k], z)
        return (x, k) if return_labels else x

    def to_empirical(self, n: int, generator: torch.Generator, **kwargs) -> EmpiricalPrior:
        """n atoms drawn from this mixture, labelled by component: the FSR prior of this testbed."""
        x, k = self.sample(n, generator, return_labels=True)
        return EmpiricalPrior(x, labels=k, **kwargs)

    # --------------------------------------------------------------- denoiser interface
    def _query(self, x) -> torch.Tensor:
        x = as_tensor(x, "x", ndim=2, dtype=self.dtype, device=self.device)
        if x.shape[1] != self.dim:
            raise ValueError(f"x: expected shape (batch, {self.dim}), got {tuple(x.shape)}")
        return x

    def _denoiser_parts(self, x, abar):
        abar, a, b2 = check_abar(abar)
        x = self._query(x)
        eye = torch.eye(self.dim, dtype=self.dtype, device=self.device)
        S = abar * self.covs + b2 * eye                                         # Cov(x_t | k)
        gain = a * torch.linalg.solve(S, self.covs)                             # (S^-1 a Sigma) = gain^T
        diff = x[None] - a * self.means[:, None]                                # (K, B, d)
        means = self.means[:, None] + torch.einsum("kij,kbi->kbj", gain, diff)  # E[x0 | x_t, k]
        covs = self.covs - a * torch.einsum("kij,kjl->kil", self.covs, gain)    # Cov(x0 | x_t, k)
        resp = self.diffuse(abar).component_posteriors(x)                       # (B, K)
        # x so far from every component that each squared distance overflows: every log-density is
        # -inf and the softmax 0 / 0 (the EmpiricalPrior kernels raise the same way)
        check_result("x", resp, means)
        return x, resp, means, 0.5 * (covs + covs.transpose(1, 2))

    def moments(self, x, abar, log_lik=None) -> Moments:
        if log_lik is not None:
            raise TypeError("log_lik: closed-form testbeds condition with .condition(lik) instead")
        x, resp, means, _ = self._denoiser_parts(x, abar)
        mean = torch.einsum("bk,kbd->bd", resp, means)
        check_result("x", mean)
        return Moments(self.diffuse(abar).log_prob(x), mean)

    def denoise(self, x, abar) -> torch.Tensor:
        return self.moments(x, abar).mean

    def denoiser_cov(self, x, abar) -> torch.Tensor:
        """Cov(x_0 | x_t), (B, d, d)."""
        x, resp, means, covs = self._denoiser_parts(x, abar)
        m = torch.einsum("bk,kbd->bd", resp, means)
        second = torch.einsum("bk,kij->bij", resp, covs) + torch.einsum("bk,kbi,kbj->bij", resp, means, means)
        out = second - m[:, :, None] * m[:, None, :]
        check_result("x", out)
        return out

    def cov_matvec(self, x, abar, v, *, moments=None) -> torch.Tensor:
        v = as_tensor(v, "v", ndim=(2, 3), dtype=self.dtype, device=self.device)
        C = self.denoiser_cov(x, abar)
        if v.shape[0] != C.shape[0] or v.shape[-1] != self.dim:
            raise ValueError(f"v: expected shape ({C.shape[0]}, {self.dim}) or ({C.shape[0]}, k, {self.dim}), "
                             f"got {tuple(v.shape)}")
        out = torch.einsum("bij,bj->bi", C, v) if v.ndim == 2 else torch.einsum("bij,bkj->bki", C, v)
        check_result("v", out)
        return out

    def denoiser_vjp(self, x, abar, v, *, moments=None) -> torch.Tensor:
        _, a, b2 = check_abar(abar)
        return (a / b2) * self.cov_matvec(x, abar, v)

    def score(self, x, abar) -> torch.Tensor:
        _, a, b2 = check_abar(abar)
        x = self._query(x)
        out = (a * self.denoise(x, abar) - x) / b2
        check_result("x", out)
        return out

    # --------------------------------------------------------------- posteriors
    def condition(self, lik: GaussianLikelihood) -> "GaussianMixture":
        """Exact posterior p(x_0 | y) under y = M x + c + N(0, diag(noise_std^2))."""
        if not isinstance(lik, GaussianLikelihood):
            raise TypeError(f"lik: expected an fsdiag.GaussianLikelihood, got {type(lik).__name__}")
        fwd = lik.forward
        if not isinstance(fwd, LinearForwardModel):
            raise ValueError(f"lik: closed-form conditioning needs a linear forward model, got {fwd!r}")
        lik.check_dim(self.dim)
        M = fwd.matrix_for(self.dim, self.dtype, self.device)
        c = torch.zeros(M.shape[0], dtype=self.dtype) if fwd.bias is None else fwd.bias.to(self.dtype)
        y = lik.y.to(self.dtype)
        S = torch.einsum("ij,kjl,ml->kim", M, self.covs, M) + torch.diag(lik.noise_var.to(self.dtype))
        pred = self.means @ M.T + c                                           # (K, m)
        gain = torch.linalg.solve(S, torch.einsum("ij,kjl->kil", M, self.covs)).transpose(1, 2)  # (K, d, m)
        means = self.means + torch.einsum("kdm,km->kd", gain, y - pred)
        covs = self.covs - torch.einsum("kdm,mj,kjl->kdl", gain, M, self.covs)
        evidence = GaussianMixture._from_parts(self.weights, pred, S)._component_log_prob(y[None])[0]
        return GaussianMixture._from_parts(torch.softmax(evidence, 0), means, covs)

    def likelihood_score(self, x, abar, lik: GaussianLikelihood) -> torch.Tensor:
        """Exact grad log p(y | x_t) = grad log p_t(x_t | y) - grad log p_t(x_t)."""
        return self.condition(lik).score(x, abar) - self.score(x, abar)


def _check_covariances(covs: torch.Tensor) -> None:
    """Symmetric positive semi-definite up to rounding (relative tolerance 1e-6 of each
    component's largest entry / eigenvalue), else `sample` would silently clamp."""
    scale = covs.abs().amax(dim=(1, 2)).clamp_min(torch.finfo(covs.dtype).tiny)
    asym = (covs - covs.transpose(1, 2)).abs().amax(dim=(1, 2))
    if bool((asym > 1e-6 * scale).any()):
        raise ValueError(f"covs: expected symmetric matrices, max |C - C^T| = {float(asym.max()):.3g}")
    evals = torch.linalg.eigvalsh(0.5 * (covs + covs.transpose(1, 2)).to(torch.float64))
    if bool((evals[:, 0] < -1e-6 * evals.abs().amax(1).clamp_min(torch.finfo(torch.float64).tiny)).any()):
        raise ValueError(f"covs: expected positive semi-definite matrices, smallest eigenvalue "
                         f"{float(evals[:, 0].min()):.3g}")


def _psd_sqrt(covs: torch.Tensor) -> torch.Tensor:
    evals, evecs = torch.linalg.eigh(covs)
    return evecs * evals.clamp_min(0).sqrt()[:, None, :]


def DiscretePrior(points, weights=None, **kwargs) -> GaussianMixture:
    """Finitely many points (K, d) with weights: a mixture of zero-covariance components."""
    pts = as_tensor(points, "points", ndim=2, dtype=kwargs.get("dtype", torch.float64))
    K = pts.shape[0]
    w = torch.ones(K, dtype=pts.dtype) if weights is None else weights
    return GaussianMixture(w, pts, torch.zeros(K, dtype=pts.dtype), **kwargs)


def GaussianPrior(mean, cov, **kwargs) -> GaussianMixture:
    """N(mean, cov); cov a (d, d) matrix or a scalar variance."""
    mu = as_tensor(mean, "mean", ndim=1, dtype=kwargs.get("dtype", torch.float64))
    cov = as_tensor(cov, "cov", ndim=(0, 2), dtype=mu.dtype)
    cov = cov * torch.eye(mu.shape[0], dtype=mu.dtype) if cov.ndim == 0 else cov
    return GaussianMixture(torch.ones(1, dtype=mu.dtype), mu[None], cov[None], **kwargs)


def grid_posterior(prior: GaussianMixture, lik: GaussianLikelihood, lo, hi, n: int = 400):
    """Posterior of a 2-D GMM prior under any forward model on an n x n grid over [lo, hi]^2:
    returns grid points (n*n, 2) and their normalised posterior weights (n*n,)."""
    if not isinstance(prior, GaussianMixture):
        raise TypeError(f"prior: expected a testbeds.GaussianMixture, got {type(prior).__name__}")
    if not isinstance(lik, GaussianLikelihood):
        raise TypeError(f"lik: expected an fsdiag.GaussianLikelihood, got {type(lik).__name__}")
    if prior.dim != 2:
        raise ValueError(f"prior: grid_posterior needs a 2-D prior, got d = {prior.dim}")
    n = check_int(n, "n", minimum=2)
    lo, hi = check_real(lo, "lo"), check_real(hi, "hi")
    if not lo < hi:
        raise ValueError(f"hi: expected lo < hi, got lo = {lo}, hi = {hi}")
    axis = torch.linspace(lo, hi, n, dtype=prior.dtype)
    pts = torch.cartesian_prod(axis, axis)
    logw = prior.log_prob(pts) + lik.log_prob(pts).to(prior.dtype)
    return pts, torch.softmax(logw, 0)


# ------------------------------------------------------------------- manifold data
def _noisy(x, noise, generator):
    noise = check_real(noise, "noise")
    if noise < 0:
        raise ValueError(f"noise: expected a non-negative number, got {noise}")
    if noise:
        x = x + noise * torch.randn(x.shape, generator=generator, dtype=x.dtype)
    return x


def swiss_roll(n: int, generator: torch.Generator, *, noise: float = 0.0, turns: float = 1.5):
    """2-D Swiss roll: x = s (cos s, sin s) / (3 pi), s ~ U[pi, pi (1 + 2 turns)].
    Returns points (n, 2) and the intrinsic coordinate s (n,)."""
    n = check_int(n, "n")
    check_generator(generator)
    turns = check_positive(turns, "turns")
    s = math.pi * (1 + 2 * turns * torch.rand(n, generator=generator, dtype=torch.float64))
    x = torch.stack([s * torch.cos(s), s * torch.sin(s)], 1) / (3 * math.pi)
    return _noisy(x, noise, generator), s


def torus(n: int, generator: torch.Generator, *, major: float = 1.0, minor: float = 0.4, noise: float = 0.0):
    """Points on a torus in R^3 (uniform angles). Returns points (n, 3) and angles (n, 2)."""
    n = check_int(n, "n")
    check_generator(generator)
    major, minor = check_positive(major, "major"), check_positive(minor, "minor")
    ang = 2 * math.pi * torch.rand(n, 2, generator=generator, dtype=torch.float64)
    u, v = ang[:, 0], ang[:, 1]
    r = major + minor * torch.cos(v)
    x = torch.stack([r * torch.cos(u), r * torch.sin(u), minor * torch.sin(v)], 1)
    return _noisy(x, noise, generator), ang


def sphere(n: int, generator: torch.Generator, *, dim: int = 3, radius: float = 1.0, noise: float = 0.0):
    """Uniform points on the sphere of `radius` in R^dim. Returns points (n, dim)."""
    n = check_int(n, "n")
    check_generator(generator)
    dim = check_int(dim, "dim", minimum=2)
    radius = check_positive(radius, "radius")
    z = torch.randn(n, dim, generator=generator, dtype=torch.float64)
    return _noisy(radius * z / z.norm(dim=1, keepdim=True), noise, generator)
