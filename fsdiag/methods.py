"""Likelihood approximations: each replaces p(x_0 | x_t) inside p(y | x_t) (docs/design.md §4).

An approximation maps (problem, x_t, abar) to a `Guidance`: its likelihood score
grad log p(y | x_t) and the prior Tweedie mean m(x_t) it computed on the way (the
sampler reuses m for the prior score). A new method is a subclass plus `@register`;
the test-suite picks it up from `METHODS`.
"""
from __future__ import annotations

import inspect
import math
from typing import ClassVar, NamedTuple

import torch

from ._checks import check_int, check_positive
from .forward import LinearForwardModel
from .problems import Problem
from .registry import Registry

__all__ = ["Approximation", "Guidance", "METHODS", "register", "make_method",
           "FSR", "SigmaDPS", "ZetaDPS", "PiGDM", "TMPD", "CGResult"]

METHODS = Registry("method", check=lambda cls: None if isinstance(cls, type) and issubclass(cls, Approximation)
                   else "expected a subclass of fsdiag.methods.Approximation")


def register(cls):
    """Add a likelihood approximation (an `Approximation` subclass) to METHODS under `cls.name`."""
    return METHODS.register(cls)


class Guidance(NamedTuple):
    likelihood_score: torch.Tensor   # (B, d) approximate grad log p(y | x_t)
    tweedie: torch.Tensor            # (B, d) prior Tweedie mean m(x_t)


def _scales(abar: float) -> tuple[float, float]:
    return math.sqrt(abar), 1.0 - abar


class Approximation:
    """Base class: subclasses set `name`, take their parameters as keyword-only
    arguments, and implement `__call__(problem, x, abar) -> Guidance`."""

    name: ClassVar[str] = "base"
    linear_only: ClassVar[bool] = False

    def check(self, problem: Problem) -> None:
        if self.linear_only and not isinstance(problem.lik.forward, LinearForwardModel):
            raise ValueError(f"method: '{self.name}' needs a linear forward model, got "
                             f"{problem.lik.forward!r}; use 'fsr', 'sigma_dps' or 'zeta_dps'")

    @property
    def params(self) -> dict:
        return {k: getattr(self, k) for k in inspect.signature(type(self).__init__).parameters
                if k != "self" and hasattr(self, k)}

    def __call__(self, problem: Problem, x: torch.Tensor, abar: float) -> Guidance:
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}({args})"


def make_method(method, **params) -> Approximation:
    """An `Approximation` from a registered name (with its keyword parameters) or an instance."""
    if isinstance(method, Approximation):
        if params:
            raise TypeError(f"unexpected keyword argument(s) {sorted(params)}: pass parameters "
                            "to the approximation's constructor instead")
        return method
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"method: expected one of {sorted(METHODS)} (or an Approximation), got {method!r}")
    cls = METHODS[method]
    accepted = [k for k in inspect.signature(cls.__init__).parameters if k != "self"]
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise TypeError(f"unexpected keyword argument {unknown[0]!r} for method {method!r}; "
                        f"it accepts {accepted or 'no parameters'}")
    return cls(**params)


@register
class FSR(Approximation):
    """Exact: p(x_0 | x_t) is the Dirac mixture over atoms (docs/design.md §2.3)."""

    name = "fsr"

    def check(self, problem):
        if problem.log_lik is None:
            raise TypeError("prior: the 'fsr' method needs an fsdiag.EmpiricalPrior")

    def __call__(self, problem, x, abar):
        a, b2 = _scales(abar)
        mo = problem.prior.moments(x, abar, problem.log_lik)
        return Guidance((a / b2) * (mo.mean_cond - mo.mean), mo.mean)


@register
class SigmaDPS(Approximation):
    """Chung et al. 2023, textbook: Dirac at m; score J^T J_A^T Sigma_n^-1 (y - A(m))."""

    name = "sigma_dps"

    def __call__(self, problem, x, abar):
        mo = problem.prior.moments(x, abar)
        seed = problem.lik.grad_log_prob(mo.mean)
        return Guidance(problem.prior.denoiser_vjp(x, abar, seed, moments=mo), mo.mean)


@register
class ZetaDPS(Approximation):
    """DPS as published: (2 zeta / ||y - A(m)||) times the sigma_dps score."""

    name = "zeta_dps"

    def __init__(self, *, zeta: float = 1.0):
        self.zeta = check_positive(zeta, "zeta")

    def __call__(self, problem, x, abar):
        mo = problem.prior.moments(x, abar)
        r = problem.lik.residual(mo.mean)
        seed = problem.lik.forward.vjp(mo.mean, r / problem.noise_var())
        step = 2 * self.zeta / r.norm(dim=1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)
        return Guidance(step * problem.prior.denoiser_vjp(x, abar, seed, moments=mo), mo.mean)


@register
class PiGDM(Approximation):
    """Song et al. 2023: N(m, r_t^2 I); score J^T A^T (r_t^2 A A^T + Sigma_n)^-1 (y - A m).

    r2="paper" uses r_t^2 = (1 - abar)/abar (the paper's code); r2="song" uses 1 - abar.
    solver: "dense" factors r_t^2 A A^T + Sigma_n (Cholesky, m x m) every step from the (m, d)
    matrix; "cg" solves the same system by conjugate gradients (at most cg_iters iterations, to
    a relative residual cg_tol) with only the products A w and A^T z, matrix-free, O(d) per
    product for image operators; "auto" is "dense" while d and m are at most DENSE_MAX_DIM
    (every problem whose matrix an image operator builds: the same path and numbers as before
    "cg" existed), else "cg". The system is SPD, so CG converges (in exact arithmetic, within m
    iterations; an ill-conditioned blur at early times may stop at cg_iters first); `last_cg`
    holds the last call's iterations and largest relative residual.
    """

    name = "pigdm"
    linear_only = True
    # The dense path stores M (m x d) and factors an m x m matrix every step: at most 4096^2
    # entries (128 MiB in float64) and m^3 / 3 <= 23 GFLOP per step, whatever the number of
    # particles. CG costs up to cg_iters x (A + A^T) per particle: 1 iteration for a mask, but
    # 65-100 for a blur, where the dense path stays faster up to d = 4096 (measured, float32, one
    # thread, 32x32x3 blur, per call: 16 particles 0.48 s dense vs 0.67 s CG, 64 particles 0.51 s
    # vs 3.3 s). d <= 4096 is also what an image operator's matrix_for accepts, so "auto" keeps
    # every earlier result on its path.
    DENSE_MAX_DIM: ClassVar[int] = 4096

    def __init__(self, *, r2: str = "paper", solver: str = "auto", cg_iters: int = 100, cg_tol: float = 1e-6):
        if not isinstance(r2, str) or r2 not in ("paper", "song"):
            raise ValueError(f"r2: expected 'paper' or 'song', got {r2!r}")
        if not isinstance(solver, str) or solver not in ("auto", "dense", "cg"):
            raise ValueError(f"solver: expected 'auto', 'dense' or 'cg', got {solver!r}")
        self.r2, self.solver = r2, solver
        self.cg_iters = check_int(cg_iters, "cg_iters", minimum=1)
        self.cg_tol = check_positive(cg_tol, "cg_tol")
        self.last_cg: CGResult | None = None

    def uses_dense(self, problem: Problem) -> bool:
        """Whether this problem takes the dense (Cholesky) path."""
        if self.solver != "auto":
            return self.solver == "dense"
        d = problem.prior.dim
        return d <= self.DENSE_MAX_DIM and problem.forward.out_dim(problem.dim) <= self.DENSE_MAX_DIM

    def __call__(self, problem, x, abar):
        r2 = (1 - abar) / abar if self.r2 == "paper" else 1 - abar
        mo = problem.prior.moments(x, abar)
        nv = problem.noise_var()
        r = problem.lik.residual(mo.mean)
        fwd, d, dt, dev = problem.forward, problem.dim, problem.dtype, problem.device
        if self.uses_dense(problem):
            cov_y = r2 * fwd.gram(d, dt, dev) + torch.diag(nv)
            u = torch.cholesky_solve(r.T, torch.linalg.cholesky(cov_y)).T
            seed = u @ fwd.dense(d, dt, dev)
        else:
            res = _batched_cg(lambda z: r2 * fwd.apply_A(fwd.apply_At(z, d)) + nv * z, r, self.cg_iters, self.cg_tol)
            self.last_cg = res
            seed = fwd.apply_At(res.solution, d)
        return Guidance(problem.prior.denoiser_vjp(x, abar, seed, moments=mo), mo.mean)


@register
class TMPD(Approximation):
    """Boys et al. 2024: N(m, Cov), Cov = ((1 - abar)/sqrt(abar)) J = C(x_t);
    score J^T A^T (A Cov A^T + Sigma_n)^-1 (y - A m).

    m <= dense_max: the m x m system is built from C A^T (m covariance products per particle,
    A's rows from m adjoint products, no limit on d) and solved directly. Otherwise conjugate
    gradients, at most cg_iters iterations (each one covariance product) to a relative residual
    cg_tol, with A and A^T applied matrix-free; `last_cg` holds the last call's iterations and
    largest relative residual (cg_iters = 0 gives zero guidance)."""

    name = "tmpd"
    linear_only = True

    def __init__(self, *, dense_max: int = 32, cg_iters: int = 50, cg_tol: float = 1e-6):
        self.dense_max = check_int(dense_max, "dense_max", minimum=0)
        self.cg_iters = check_int(cg_iters, "cg_iters", minimum=0)
        self.cg_tol = check_positive(cg_tol, "cg_tol")
        self.last_cg: CGResult | None = None

    def __call__(self, problem, x, abar):
        a, b2 = _scales(abar)
        prior = problem.prior
        mo = prior.moments(x, abar)
        nv = problem.noise_var()
        r = problem.lik.residual(mo.mean)
        B, m = r.shape
        fwd, d = problem.forward, problem.dim
        if m <= self.dense_max:
            A = fwd.rows(d, problem.dtype, problem.device)
            CA = prior.cov_matvec(x, abar, A.expand(B, m, A.shape[1]), moments=mo)   # (B, m, d): C A^T
            S = torch.einsum("jd,bkd->bjk", A, CA) + torch.diag(nv)
            u = torch.linalg.solve(S, r.unsqueeze(-1)).squeeze(-1)
            return Guidance((a / b2) * torch.einsum("bk,bkd->bd", u, CA), mo.mean)
        res = _batched_cg(lambda z: fwd.apply_A(prior.cov_matvec(x, abar, fwd.apply_At(z, d), moments=mo)) + nv * z,
                          r, self.cg_iters, self.cg_tol)
        self.last_cg = res
        return Guidance(prior.denoiser_vjp(x, abar, fwd.apply_At(res.solution, d), moments=mo), mo.mean)


class CGResult(NamedTuple):
    solution: torch.Tensor   # (B, m)
    iterations: int          # iterations taken (the same for every row)
    residual: float          # largest relative residual ||rhs - S u|| / ||rhs|| over the rows (CG's recursion)


def _batched_cg(matvec, rhs: torch.Tensor, iters: int, tol: float) -> CGResult:
    """Conjugate gradients for a batch of SPD systems S u = rhs, one per row of rhs; stops when
    every row's relative residual is at most tol or after iters iterations. A row whose
    curvature p.Sp is not positive (a converged row at rounding level) takes no step."""
    tiny = torch.finfo(rhs.dtype).tiny
    u = torch.zeros_like(rhs)
    res = rhs.clone()
    p = res.clone()
    rs = (res * res).sum(1, keepdim=True)
    rs0 = rs.clamp_min(tiny)
    stop = tol * tol * rs0
    k = 0
    for k in range(1, iters + 1):
        if bool((rs <= stop).all()):
            k -= 1
            break
        Ap = matvec(p)
        pAp = (p * Ap).sum(1, keepdim=True)
        alpha = torch.where(pAp > 0, rs / pAp.clamp_min(tiny), torch.zeros_like(pAp))
        u = u + alpha * p
        res = res - alpha * Ap
        rs_new = (res * res).sum(1, keepdim=True)
        p = res + (rs_new / rs.clamp_min(tiny)) * p
        rs = rs_new
    return CGResult(u, k, float((rs / rs0).sqrt().max()) if rs.numel() else 0.0)
