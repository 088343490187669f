"""RED-diff: variational posterior sampling by regularisation by denoising (Mardani et al. 2023, Algorithm 1).

Each particle is the mean mu of a variational q(x0) = N(mu, sigma_x0^2 I), fitted by stochastic gradient
steps on
    L(mu) = obs_weight (-log p(y | x0)) + lam E_t,eps[ w_t || eps_hat(x_t, t) - eps ||^2 ],
    x0 = mu + sigma_x0 e,  x_t = a_t x0 + b_t eps (docs/design.md §2.1),
over a descending sequence of noise levels, one level per step. As in the paper the denoiser's
Jacobian is dropped (a stop-gradient), so the regulariser's gradient is lam w_t (eps_hat - eps), and
with the paper's weighting w_t = b_t / a_t (the inverse square root of the SNR) this is exactly
    lam w_t (eps_hat - eps) = lam (x0 - m(x_t)),   since eps_hat = (x_t - a_t m(x_t)) / b_t:
the residual of one denoising pass. The data term's gradient is -grad log p(y | x0) = J_A^T Sigma_n^-1 (A(x0) - y).

Fixed point (for the tests). For a Gaussian prior N(mu0, S), a linear A and one level t held fixed,
E[x0 - m(x_t)] = (I + SNR_t S)^-1 (mu - mu0) with SNR_t = a_t^2 / b_t^2, so the expected gradient vanishes at
    mu* = (lam W_t + obs_weight A^T Sigma_n^-1 A)^-1 (lam W_t mu0 + obs_weight A^T Sigma_n^-1 (y - c)),
    W_t = (I + SNR_t S)^-1,
the MAP point under the prior N(mu0, (I + SNR_t S) / lam) — a prior that weakens as the levels descend.
"""
from __future__ import annotations

import math

import torch
from tqdm import tqdm

from .._checks import check_positive, check_real
from .common import Recorder, check_particles, data_scale, linear_system, setup
from .registry import register_sampler
from .run import Run

__all__ = ["reddiff", "reddiff_gradient"]

_OPTIMIZERS = ("adam", "sgd")
_INITS = ("pinv", "zeros")


def reddiff_gradient(prior, lik, x0: torch.Tensor, abar: float, eps: torch.Tensor, lam: float,
                     obs_weight: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(gradient of L at x0 for one level and noise draw, x_t, m(x_t)):
    lam (x0 - m(x_t)) - obs_weight grad log p(y | x0)."""
    x_t = math.sqrt(abar) * x0 + math.sqrt(1.0 - abar) * eps
    m = prior.moments(x_t, abar).mean
    return lam * (x0 - m) - obs_weight * lik.grad_log_prob(x0), x_t, m


def _initial_mean(problem, init: str | None) -> torch.Tensor:
    """The paper's start A^+ (y - c) (linear A; zeros otherwise, or when asked)."""
    linear = getattr(problem.lik.forward, "is_linear", False)
    if init is None:
        init = "pinv" if linear else "zeros"
    if init == "zeros":
        return torch.zeros(problem.dim, dtype=problem.dtype, device=problem.device)
    if not linear:
        raise ValueError(f"init: 'pinv' needs a linear forward model, got {problem.lik.forward!r}; use init='zeros'")
    M, yc, _ = linear_system(problem, "reddiff")
    return torch.linalg.pinv(M) @ yc


@register_sampler
def reddiff(prior, lik, *, n_particles: int = 1024, n_steps: int = 1000, t_min: float = 1e-2, t_max: float = 1.0,
            schedule=None, seed: int | None = 0, generator: torch.Generator | None = None, record=25,
            progress: bool = True, lam: float = 0.25, lr: float = 0.25, obs_weight: float = 1.0,
            sigma_x0: float = 0.0, optimizer: str = "adam", betas: tuple[float, float] = (0.9, 0.99),
            init: str | None = None) -> Run:
    """RED-diff (Mardani et al. 2023, Algorithm 1): n_steps optimiser steps per particle, levels t_1 > ... > t_min.

    The levels are the paper's VP grid linspace(t_max, t_min, n_steps + 1) without its first time (descending,
    as the paper's t = T, ..., 1). At each level: draw eps (and e when sigma_x0 > 0), one denoiser pass m(x_t),
    then one optimiser step on mu with the gradient lam (x0 - m(x_t)) - obs_weight grad log p(y | x0)
    (module docstring). Defaults are the paper's: 1000 steps, lam = 0.25 (its grad_term_weight), Adam with
    lr = 0.25 and betas (0.9, 0.99) (eps 1e-8), sigma_x0 = 0 (the deterministic variant the paper
    recommends), mu started at A^+ (y - c) (init="pinv"; "zeros", the default for a nonlinear A).
    obs_weight multiplies -log p(y | x0), which includes Sigma_n^-1; the paper's code weights the plain
    squared error 0.5 ||y - A(x0)||^2 instead, i.e. obs_weight = noise_std^2 here. optimizer="sgd" takes
    plain steps mu <- mu - lr grad (whose mean follows a linear recursion for a Gaussian prior; the tests).

    Returns an fsdiag.Run whose samples are the optimised means mu (clean, final time 0); the trajectory
    records the noisy x_t = a x0 + b eps drawn at recorded levels and their Tweedie means.
    """
    lam = check_positive(lam, "lam")
    lr = check_positive(lr, "lr")
    obs_weight = check_positive(obs_weight, "obs_weight")
    sigma_x0 = check_real(sigma_x0, "sigma_x0")
    if sigma_x0 < 0:
        raise ValueError(f"sigma_x0: expected a standard deviation >= 0, got {sigma_x0!r}")
    if not isinstance(optimizer, str) or optimizer not in _OPTIMIZERS:
        raise ValueError(f"optimizer: expected one of {list(_OPTIMIZERS)}, got {optimizer!r}")
    if init is not None and (not isinstance(init, str) or init not in _INITS):
        raise ValueError(f"init: expected one of {list(_INITS)} or None, got {init!r}")
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise TypeError(f"betas: expected a pair of numbers in [0, 1), got {betas!r}")
    b1, b2 = (check_real(b, "betas") for b in betas)
    if not (0 <= b1 < 1 and 0 <= b2 < 1):
        raise ValueError(f"betas: expected a pair of numbers in [0, 1), got {betas!r}")
    n, n_steps, schedule, grid, problem, gen = setup(
        prior, lik, n_particles=n_particles, n_steps=n_steps, t_min=t_min, t_max=t_max, schedule=schedule,
        seed=seed, generator=generator, vp_only=True)
    levels = grid[1:]
    rec = Recorder(record, torch.cat([levels, levels.new_zeros(1)]))
    scale = data_scale(prior)
    dev, dt_ = prior.device, prior.dtype
    mu = _initial_mean(problem, init).expand(n, prior.dim).clone()
    m1, m2 = torch.zeros_like(mu), torch.zeros_like(mu)            # Adam's moment estimates
    for k in tqdm(range(n_steps), desc="reddiff", disable=not progress, leave=False):
        t = float(levels[k])
        abar = schedule.alpha_bar(t)
        # x0 ~ q(x0) = N(mu, sigma_x0^2 I) by reparameterisation; then the level's noise eps.
        x0 = mu if sigma_x0 == 0 else mu + sigma_x0 * torch.randn(mu.shape, generator=gen, dtype=dt_, device=dev)
        eps = torch.randn(mu.shape, generator=gen, dtype=dt_, device=dev)
        grad, x_t, m = reddiff_gradient(prior, lik, x0, abar, eps, lam, obs_weight)
        if rec.wants(k):
            rec.add(t, x_t, m)
        if optimizer == "sgd":
            mu = mu - lr * grad
        else:                                                      # Adam (Kingma & Ba 2015), bias-corrected
            m1 = b1 * m1 + (1 - b1) * grad
            m2 = b2 * m2 + (1 - b2) * grad * grad
            step = (m1 / (1 - b1 ** (k + 1))) / ((m2 / (1 - b2 ** (k + 1))).sqrt() + 1e-8)
            mu = mu - lr * step
        check_particles(mu, "reddiff", t, k, n_steps, scale)
    rec.add(0.0, mu, mu)
    params = {"lam": lam, "lr": lr, "obs_weight": obs_weight, "sigma_x0": sigma_x0, "optimizer": optimizer,
              "betas": (b1, b2), "init": init}
    return rec.run(mu, "reddiff", None, schedule, n_steps, seed, generator, params)
