"""PnP-DM: split Gibbs sampling with a diffusion prior (Wu et al. 2024, "Principled probabilistic imaging
using diffusion models as plug-and-play priors", Algorithm 1).

The target is the joint pi_rho(x, z) ∝ p(x) N(z; x, rho^2 I) p(y | z), whose x-marginal
p(x) N(y; A x + c, Sigma_n + rho^2 A A^T) (linear A) tends to the posterior p(x | y) as rho -> 0. Each
iteration k, at coupling rho_k:
  1. likelihood step, z ~ pi(z | x) ∝ p(y | z) N(z; x, rho^2 I): exact for a linear Gaussian likelihood, by
     Matheron's rule: z' = x + rho e, y' = A z' + c + Sigma_n^1/2 e',
     z = z' + rho^2 A^T (rho^2 A A^T + Sigma_n)^-1 (y - y');
  2. prior step, x ~ pi(x | z) ∝ p(x) N(z; x, rho^2 I): the posterior of a denoising problem at VE noise
     level rho, drawn by running the reverse diffusion from sigma = rho started at z (docs/design.md §3.1:
     the VP point a z at abar = 1 / (1 + rho^2)). Its steps are the DDPM posterior q(x_s | x_t, m(x_t))
     (`steps.bridge`; in VE form the Euler-ancestral step) on EDM's discretisation
     sigma_i = (rho^(1/7) + i / (N - 1) (sigma_min^(1/7) - rho^(1/7)))^7, i < N, then sigma_N = 0 (the last
     step returns the Tweedie mean at sigma_min).
Annealing: rho_k = max(rho_min, rho_start decay^k), by default with rho_start = sigma(t_max) and
rho_min = sigma(t_min), sigma(t) = sqrt((1 - abar(t)) / abar(t)) the schedule's VE noise level.

On an empirical prior the chain stops moving between atoms once rho falls well below their spacing, so
the atoms' masses are those of the rho-marginal where it froze, not of the posterior: on the three-atom
testbed with y = -0.9 the middle atom keeps ~0.33 of the mass (0.25 with the paper's rho_min = 0.3, which
is exactly its rho-marginal) where the posterior has 0.10, and slower annealing barely changes it.
"""
from __future__ import annotations

import math

import torch
from tqdm import tqdm

from .._checks import check_int, check_positive, check_real
from .common import Recorder, check_particles, data_scale, linear_system, setup
from .registry import register_sampler
from .run import Run
from .steps import bridge

__all__ = ["pnpdm", "likelihood_step", "prior_step", "edm_sigmas"]


def edm_sigmas(rho: float, n: int, sigma_min: float = 0.002, rho_edm: float = 7.0) -> list[float]:
    """EDM's noise levels from sigma_max = rho down to sigma_min (n of them), then 0 (rho alone when
    rho <= sigma_min)."""
    if n == 1 or rho <= sigma_min:
        return [rho, 0.0]
    hi_r, lo_r = rho ** (1 / rho_edm), sigma_min ** (1 / rho_edm)
    return [(hi_r + i / (n - 1) * (lo_r - hi_r)) ** rho_edm for i in range(n)] + [0.0]


def likelihood_step(x: torch.Tensor, rho: float, M: torch.Tensor, yc: torch.Tensor, noise_var: torch.Tensor,
                    generator: torch.Generator) -> torch.Tensor:
    """z ~ N(z; x, rho^2 I) p(y | z) for y - c = M z + N(0, diag(noise_var)), exactly (Matheron's rule)."""
    L = torch.linalg.cholesky(rho * rho * (M @ M.T) + torch.diag(noise_var))
    z = x + rho * torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    e = torch.randn((x.shape[0], M.shape[0]), generator=generator, dtype=x.dtype, device=x.device)
    r = yc - z @ M.T - noise_var.sqrt() * e
    return z + rho * rho * torch.cholesky_solve(r.T, L).T @ M


def prior_step(prior, z: torch.Tensor, rho: float, n_prior_steps: int, generator: torch.Generator,
               sigma_min: float = 0.002, rho_edm: float = 7.0) -> torch.Tensor:
    """x ~ p(x0 | x0 + rho e = z) by the reverse diffusion from sigma = rho (module docstring), in VP form."""
    sigmas = edm_sigmas(rho, n_prior_steps, sigma_min, rho_edm)
    abars = [1.0 / (1.0 + s * s) for s in sigmas]
    x = math.sqrt(abars[0]) * z
    for i in range(len(sigmas) - 1):
        m = prior.moments(x, abars[i]).mean
        c_x, c_0, v = bridge(abars[i], abars[i + 1])
        if v == 0.0:                                           # the step to sigma = 0 lands on m
            return m
        x = c_x * x + c_0 * m + math.sqrt(v) * torch.randn(x.shape, generator=generator, dtype=x.dtype,
                                                           device=x.device)
    return x


def _time_of_sigma(schedule, sigma: float) -> float:
    """The VP time t with sqrt((1 - abar(t)) / abar(t)) = sigma: -log abar = log(1 + sigma^2) solved for t."""
    L, b0, db = math.log1p(sigma * sigma), schedule.beta_min, schedule.beta_max - schedule.beta_min
    return L / b0 if db == 0 else (-b0 + math.sqrt(b0 * b0 + 2 * db * L)) / db


@register_sampler
def pnpdm(prior, lik, *, n_particles: int = 1024, n_steps: int = 100, t_min: float = 1e-2, t_max: float = 1.0,
          schedule=None, seed: int | None = 0, generator: torch.Generator | None = None, record=25,
          progress: bool = True, decay: float = 0.9, rho_start: float | None = None, rho_min: float | None = None,
          n_prior_steps: int = 50, sigma_min: float = 0.002, rho_edm: float = 7.0) -> Run:
    """PnP-DM (Wu et al. 2024, Algorithm 1): n_steps split Gibbs iterations, each a likelihood step and a prior step.

    rho_k = max(rho_min, rho_start decay^k), rho_start = sigma(t_max) and rho_min = sigma(t_min) unless given.
    The paper's values, for images in [-1, 1]: 100 iterations, rho_start = 10, decay = 0.9, rho_min = 0.3
    (it keeps the samples after 40 burn-in iterations; this returns the last one per chain). With the
    defaults here (t_max = 1: rho_start ≈ 149; t_min = 0.01: rho_min ≈ 0.033) rho reaches 10 after ~25
    iterations and rho_min after ~80. The prior step takes n_prior_steps = 50 reverse steps on EDM's grid
    (sigma_min = 0.002, rho_edm = 7, EDM's values); the step count is chosen here, not taken from the
    paper. Each ancestral step drops c_0^2 Cov(x0 | x_t)
    of variance, so the prior step is too narrow at few steps and the Gibbs chain compounds it: on the
    tests' Gaussian the x-covariance is ~11% low at 40 prior steps and ~2.5% low at 160. The chain starts
    from x ~ N(0, I). Needs a linear forward model (the paper's Langevin likelihood step for a nonlinear
    one is not implemented).

    Returns an fsdiag.Run whose samples are the last prior-step draws x (clean, final time 0); the
    trajectory records, at iteration k, the VP point a z of the likelihood step's z (at abar = 1 / (1 + rho_k^2),
    the time t with sigma(t) = rho_k) and its Tweedie mean; info["rho"] holds rho_k.
    """
    decay = check_positive(decay, "decay")
    if decay > 1:
        raise ValueError(f"decay: expected a factor in (0, 1], got {decay!r}")
    n_prior_steps = check_int(n_prior_steps, "n_prior_steps")
    sigma_min = check_positive(sigma_min, "sigma_min")
    rho_start = None if rho_start is None else check_positive(rho_start, "rho_start")
    rho_min = None if rho_min is None else check_positive(rho_min, "rho_min")
    rho_edm = check_real(rho_edm, "rho_edm")
    if rho_edm < 1:
        raise ValueError(f"rho_edm: expected a number >= 1, got {rho_edm!r}")
    n, n_steps, schedule, grid, problem, gen = setup(
        prior, lik, n_particles=n_particles, n_steps=n_steps, t_min=t_min, t_max=t_max, schedule=schedule,
        seed=seed, generator=generator, vp_only=True)
    M, yc, nv = linear_system(problem, "pnpdm")

    def sigma(t):
        abar = schedule.alpha_bar(t)
        return math.sqrt((1.0 - abar) / abar)

    rho_0 = sigma(float(grid[0])) if rho_start is None else rho_start
    rho_end = sigma(float(grid[-1])) if rho_min is None else rho_min
    if rho_end > rho_0:
        raise ValueError(f"rho_min: expected at most rho_start = {rho_0:g}, got {rho_end:g}")
    rhos = [max(rho_end, rho_0 * decay ** k) for k in range(n_steps)]
    times = torch.tensor([min(1.0, _time_of_sigma(schedule, r)) for r in rhos] + [0.0], dtype=torch.float64)
    rec = Recorder(record, times)
    scale = data_scale(prior)
    x = torch.randn(n, prior.dim, generator=gen, dtype=prior.dtype, device=prior.device)
    for k in tqdm(range(n_steps), desc="pnpdm", disable=not progress, leave=False):
        rho = rhos[k]
        z = likelihood_step(x, rho, M, yc, nv, gen)            # 1. z ~ pi(z | x)
        if rec.wants(k):
            abar = 1.0 / (1.0 + rho * rho)
            x_t = math.sqrt(abar) * z
            rec.add(float(times[k]), x_t, prior.moments(x_t, abar).mean)
        x = prior_step(prior, z, rho, n_prior_steps, gen, sigma_min, rho_edm)   # 2. x ~ pi(x | z)
        check_particles(x, "pnpdm", float(times[k]), k, n_steps, scale)
    rec.add(0.0, x, x)
    params = {"decay": decay, "rho_start": rho_start, "rho_min": rho_min, "n_prior_steps": n_prior_steps,
              "sigma_min": sigma_min, "rho_edm": rho_edm}
    return rec.run(x, "pnpdm", None, schedule, n_steps, seed, generator, params, {"rho": rhos})
