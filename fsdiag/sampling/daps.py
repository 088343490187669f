"""DAPS: decoupled annealing posterior sampling (Zhang et al. 2025, Algorithm 1).

At each noise level of the annealing, with sigma_t = b / a the VE noise of the VP time t (docs/design.md §3.1):
  1. x0_hat = probability-flow ODE from x_t down to sigma = 0, n_ode_steps Euler steps on
     dx/dsigma = (x - D(x, sigma)) / sigma over sigma_i = sigma_t (1 - i / n_ode_steps)^rho;
  2. n_langevin_steps of Langevin dynamics on x0 targeting N(x0; x0_hat, r_t^2 I) p(y | x0), r_t = sigma_t:
     x0 <- x0 + eta (grad log p(y | x0) - (x0 - x0_hat) / r_t^2) + sqrt(2 eta) eps, from x0 = x0_hat;
  3. re-noise to the next level, x_{t'} = a' x0 + b' z (x0 + sigma' z in VE form).
The annealing levels are the paper's VP grid linspace(t_max, t_min, n_steps + 1) (sigma from ~150 at
t = 1 to ~0.03 at t_min = 0.01, close to DAPS's 100 -> 0.1). Langevin step size decays linearly over
the annealing, eta_k = lr (1 + (k / n_steps)(lr_min_ratio - 1)). Defaults are the paper's
(200 annealing steps, 5 ODE steps, 100 Langevin steps, lr 1e-4, lr_min_ratio 0.01, r_t = sigma_t); lr is
in units of x^2, set for images in [-1, 1]: on the toy testbeds a larger lr is needed to mix (see tests).
"""
from __future__ import annotations

import math

import torch
from tqdm import tqdm

from .._checks import check_int, check_positive, check_real
from .common import Recorder, check_particles, setup
from .registry import register_sampler
from .run import Run

__all__ = ["daps"]


def _denoise_ve(prior, x: torch.Tensor, sigma: float) -> torch.Tensor:
    """D(x, sigma) = m(a x, abar) with abar = 1 / (1 + sigma^2), a = sqrt(abar) (docs/design.md §3.1)."""
    abar = 1.0 / (1.0 + sigma * sigma)
    return prior.moments(math.sqrt(abar) * x, abar).mean


def ode_to_x0(prior, x_ve: torch.Tensor, sigma: float, n_ode_steps: int, rho: float = 7.0) -> torch.Tensor:
    """Euler steps of the probability-flow ODE dx/dsigma = (x - D(x, sigma)) / sigma from sigma to 0
    on sigma_i = sigma (1 - i / n)^rho; the last step (to sigma = 0) returns D(x, sigma_{n-1})."""
    x = x_ve
    for i in range(n_ode_steps):
        s_i = sigma * (1 - i / n_ode_steps) ** rho
        s_next = sigma * (1 - (i + 1) / n_ode_steps) ** rho
        d = _denoise_ve(prior, x, s_i)
        x = d if s_next == 0.0 else x + (s_next - s_i) * (x - d) / s_i
    return x


def langevin_x0(lik, x0_hat: torch.Tensor, r2: float, lr: float, n_steps: int,
                generator: torch.Generator) -> torch.Tensor:
    """Unadjusted Langevin on x0 targeting N(x0; x0_hat, r2 I) p(y | x0), started at x0_hat."""
    x0 = x0_hat
    for _ in range(n_steps):
        grad = lik.grad_log_prob(x0) - (x0 - x0_hat) / r2
        eps = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
        x0 = x0 + lr * grad + math.sqrt(2 * lr) * eps
    return x0


@register_sampler
def daps(prior, lik, *, n_particles: int = 1024, n_steps: int = 200, t_min: float = 1e-2, t_max: float = 1.0,
         schedule=None, seed: int | None = 0, generator: torch.Generator | None = None, record=25,
         progress: bool = True, n_ode_steps: int = 5, n_langevin_steps: int = 100, lr: float = 1e-4,
         lr_min_ratio: float = 0.01, r_scale: float = 1.0, rho: float = 7.0) -> Run:
    """DAPS (Zhang et al. 2025) over the paper's VP grid; n_steps annealing levels (the last at t_min).

    r_t = r_scale sigma_t. Returns an fsdiag.Run whose samples are the particles x_{t_min} = a x0 + b z
    re-noised from the last annealing step, like the other samplers; info["x0"] holds DAPS's own
    clean output (the last Langevin state), info["lr"] the step size per annealing step.
    The prior is used only through its denoiser (`moments`), the likelihood through its gradient.
    """
    n_ode_steps = check_int(n_ode_steps, "n_ode_steps")
    n_langevin_steps = check_int(n_langevin_steps, "n_langevin_steps", minimum=0)
    lr = check_positive(lr, "lr")
    lr_min_ratio = check_positive(lr_min_ratio, "lr_min_ratio")
    if lr_min_ratio > 1:
        raise ValueError(f"lr_min_ratio: expected a ratio in (0, 1], got {lr_min_ratio!r}")
    r_scale = check_positive(r_scale, "r_scale")
    rho = check_real(rho, "rho")
    if rho < 1:
        raise ValueError(f"rho: expected a number >= 1, got {rho!r}")
    n, n_steps, schedule, grid, problem, gen = setup(
        prior, lik, n_particles=n_particles, n_steps=n_steps, t_min=t_min, t_max=t_max, schedule=schedule,
        seed=seed, generator=generator, vp_only=True, needs_vjp=True)
    rec = Recorder(record, grid)
    dev, dt_ = prior.device, prior.dtype
    x = torch.randn(n, prior.dim, generator=gen, dtype=dt_, device=dev)
    lrs = []
    x0 = x
    for k in tqdm(range(n_steps), desc="daps", disable=not progress, leave=False):
        t, s = float(grid[k]), float(grid[k + 1])
        abar = schedule.alpha_bar(t)
        a, sigma = math.sqrt(abar), math.sqrt((1.0 - abar) / abar)
        x_ve = x / a
        if rec.wants(k):                                     # D(x_t / a, sigma_t) = m(x_t): the Tweedie mean
            rec.add(t, x, _denoise_ve(prior, x_ve, sigma))
        x0_hat = ode_to_x0(prior, x_ve, sigma, n_ode_steps, rho)
        eta = lr * (1.0 + (k / n_steps) * (lr_min_ratio - 1.0))
        lrs.append(eta)
        x0 = langevin_x0(lik, x0_hat, (r_scale * sigma) ** 2, eta, n_langevin_steps, gen)
        abar_s = schedule.alpha_bar(s)
        z = torch.randn(x.shape, generator=gen, dtype=dt_, device=dev)
        x = math.sqrt(abar_s) * x0 + math.sqrt(1.0 - abar_s) * z
        check_particles(x, "daps", s, k, n_steps)
    abar = schedule.alpha_bar(float(grid[-1]))
    rec.add(float(grid[-1]), x, prior.moments(x, abar).mean)
    info = {"x0": x0, "lr": lrs}
    params = {"n_ode_steps": n_ode_steps, "n_langevin_steps": n_langevin_steps, "lr": lr,
              "lr_min_ratio": lr_min_ratio, "r_scale": r_scale, "rho": rho}
    return rec.run(x, "daps", None, schedule, n_steps, seed, generator, params, info)
