"""LGD-MC: loss-guided diffusion with a Monte Carlo likelihood (Song et al. 2023, "Loss-guided diffusion
models for plug-and-play controllable generation", LGD-MC).

DPS replaces p(x0 | x_t) by the point m(x_t). LGD-MC replaces it by N(m(x_t), r_t^2 I) and estimates
    p(y | x_t) ≈ (1/n) sum_j p(y | x0_j),   x0_j = m(x_t) + r_t e_j,  e_j ~ N(0, I)   (fresh draws per step),
whose gradient, with the draws held fixed (reparameterised), is
    grad_x log p^(y | x_t) = J^T sum_j w_j grad log p(y | x0_j),   w_j = softmax_j log p(y | x0_j),
J = dm/dx_t: one denoiser VJP per particle (docs/design.md §2.2), no autograd. Two limits (the tests):
  - n = 1 and r_t -> 0: the sigma-DPS likelihood score J^T J_A^T Sigma_n^-1 (y - A(m)) (`fsdiag.METHODS`'s sigma_dps);
  - n -> infinity, linear A: the gradient of log N(y; A m + c, Sigma_n + r_t^2 A A^T), i.e. ΠGDM's score
    J^T A^T (r_t^2 A A^T + Sigma_n)^-1 (y - A(m)) with the same r_t (`pigdm`).
The sampler is `sample`'s loop (docs/design.md §3.3) with this guidance: Euler-Maruyama steps of the reverse
VP-SDE (or ancestral DDPM steps) with score = prior score + scale x the LGD-MC likelihood score.
"""
from __future__ import annotations

import math

import torch
from tqdm import tqdm

from .._checks import check_int, check_real
from ..methods import Guidance
from ..schedules import DDPMSchedule
from .common import Recorder, check_particles, data_scale, final_tweedie, setup
from .registry import register_sampler
from .run import Run
from .steps import ddpm_ancestral, score_from_mean, vp_euler_maruyama

__all__ = ["lgd_mc", "lgd_guidance"]

_R2 = ("song", "paper")


def lgd_r2(abar: float, r2: str) -> float:
    """r_t^2: "song" 1 - abar (the LGD paper's r_t = sigma_t / sqrt(1 + sigma_t^2), sigma_t the VE noise),
    "paper" (1 - abar) / abar (= sigma_t^2, as fsdiag's pigdm default)."""
    return 1.0 - abar if r2 == "song" else (1.0 - abar) / abar


def lgd_guidance(prior, lik, x: torch.Tensor, abar: float, *, n_mc: int, r2: str = "song", r_scale: float = 1.0,
                 generator: torch.Generator) -> Guidance:
    """The LGD-MC likelihood score at x (module docstring) with its Tweedie mean, from n_mc draws per particle."""
    mo = prior.moments(x, abar)
    r = r_scale * math.sqrt(lgd_r2(abar, r2))
    if r == 0.0:                                                           # every draw is m: DPS, no draws taken
        return Guidance(prior.denoiser_vjp(x, abar, lik.grad_log_prob(mo.mean), moments=mo), mo.mean)
    e = torch.randn((n_mc, *x.shape), generator=generator, dtype=x.dtype, device=x.device)
    x0 = (mo.mean + r * e).reshape(-1, x.shape[1])                        # (n_mc * B, d)
    logp = lik.log_prob(x0).reshape(n_mc, x.shape[0]).to(torch.float64)
    w = torch.softmax(logp, 0).to(x.dtype)                                 # self-normalised MC weights
    g = lik.grad_log_prob(x0).reshape(n_mc, *x.shape)
    seed = (w[..., None] * g).sum(0)
    return Guidance(prior.denoiser_vjp(x, abar, seed, moments=mo), mo.mean)


@register_sampler
def lgd_mc(prior, lik, *, n_particles: int = 1024, n_steps: int = 500, t_min: float = 1e-2, t_max: float = 1.0,
           schedule=None, seed: int | None = 0, generator: torch.Generator | None = None, record=25,
           progress: bool = True, n_mc: int = 10, r2: str = "song", r_scale: float = 1.0,
           scale: float = 1.0) -> Run:
    """LGD-MC (Song et al. 2023): the reverse VP-SDE (or DDPM) guided by the Monte Carlo likelihood score.

    n_mc draws x0_j ~ N(m(x_t), r_t^2 I) per particle and step (10 by default); r_t^2 = r_scale^2 x (1 - abar)
    (r2="song", the paper's r_t = sigma_t / sqrt(1 + sigma_t^2)) or r_scale^2 (1 - abar) / abar (r2="paper");
    r_scale = 0 is DPS (sigma_dps, draw for draw the same run as `sample`'s). scale multiplies the guidance (the paper tunes a guidance weight per task; 1 is the
    likelihood score itself, as fsdiag's other approximations use it). Grid, steps and record as `sample`
    (500 Euler-Maruyama steps by default on the paper's VP grid).
    """
    n_mc = check_int(n_mc, "n_mc")
    if not isinstance(r2, str) or r2 not in _R2:
        raise ValueError(f"r2: expected one of {list(_R2)}, got {r2!r}")
    r_scale = check_real(r_scale, "r_scale")
    if r_scale < 0:
        raise ValueError(f"r_scale: expected a number >= 0, got {r_scale!r}")
    scale = check_real(scale, "scale")
    if scale < 0:
        raise ValueError(f"scale: expected a number >= 0, got {scale!r}")
    n, n_steps, schedule, grid, problem, gen = setup(
        prior, lik, n_particles=n_particles, n_steps=n_steps, t_min=t_min, t_max=t_max, schedule=schedule,
        seed=seed, generator=generator, needs_vjp=True)
    ddpm = isinstance(schedule, DDPMSchedule)
    rec = Recorder(record, grid)
    data = data_scale(prior)
    dev, dt_ = prior.device, prior.dtype
    x = torch.randn(n, prior.dim, generator=gen, dtype=dt_, device=dev)
    for k in tqdm(range(n_steps), desc="lgd_mc", disable=not progress, leave=False):
        t, s = float(grid[k]), float(grid[k + 1])
        abar_t, abar_s = schedule.alpha_bar(t), schedule.alpha_bar(s)
        g = lgd_guidance(prior, lik, x, abar_t, n_mc=n_mc, r2=r2, r_scale=r_scale, generator=gen)
        if rec.wants(k):
            rec.add(t, x, g.tweedie)
        score = score_from_mean(x, g.tweedie, abar_t) + scale * g.likelihood_score
        z = torch.randn(x.shape, generator=gen, dtype=dt_, device=dev)
        mean, var = ddpm_ancestral(x, score, abar_t, abar_s) if ddpm else vp_euler_maruyama(schedule, x, score, t, s)
        x = mean + math.sqrt(var) * z
        check_particles(x, "lgd_mc", s, k, n_steps, data)
    rec.add(float(grid[-1]), x, final_tweedie(prior, x, schedule.alpha_bar(float(grid[-1]))))
    params = {"n_mc": n_mc, "r2": r2, "r_scale": r_scale, "scale": scale}
    return rec.run(x, "lgd_mc", None, schedule, n_steps, seed, generator, params)
