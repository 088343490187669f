"""A simplified MCGdiff (after Cardoso et al. 2023): SMC with Gaussian potentials on the observed SVD coordinates.

MCGdiff writes A = U S V^T and treats the observed coordinates of xbar_t = V^T x_t as noisy copies of
sqrt(abar_t) ybar (ybar = U^T y): potentials g_t(x_t) = prod_i N(sqrt(abar_t) ybar_i; s_i xbar_t,i, Gamma_t,i)
that need no denoiser, so the locally optimal proposal (prior reverse kernel x potential) and its
weight are Gaussian and exact. Simplification, clearly not the paper's noisy-case algorithm: instead
of MCGdiff's per-coordinate release time tau_i (where the diffusion noise meets sigma_y / s_i),
Gamma_t,i = (1 - abar_t) s_i^2 + abar_t sigma_y^2, the variance of sqrt(abar) y - A x_t given x_0.
A final correction by the true likelihood p(y | m(x_{t_min})) / g_{t_min}(x_{t_min}) makes the weighted
particles target p_{t_min}(x) p(y | m(x)) whatever the potentials, so it stays asymptotically exact
(as `tds`). Linear forward models with isotropic noise only; the prior enters only through its
Tweedie mean in the Euler-Maruyama reverse kernel.
"""
from __future__ import annotations

import math

import torch
from tqdm import tqdm

from ._checks import check_real
from .forward import LinearForwardModel
from .smc import (_SCHEMES, RunWithInfo, _check_finite, _setup, effective_sample_size, resample,
                  resample_if_degenerate)

__all__ = ["mcgdiff_lite"]


def _log_normal(x: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """sum_i log N(x_i; mean_i, var_i) over the last axis, in float64."""
    d = (x - mean).to(torch.float64)
    var = var.to(torch.float64)
    return (-0.5 * d * d / var - 0.5 * torch.log(2 * math.pi * var)).sum(-1)


def mcgdiff_lite(prior, lik, *, n_particles: int = 1024, n_steps: int = 500, t_min: float = 1e-2,
                 t_max: float = 1.0, schedule=None, seed: int | None = 0, generator: torch.Generator | None = None,
                 record=25, progress: bool = True, ess_threshold: float = 0.5,
                 resampling: str = "systematic") -> RunWithInfo:
    """Simplified MCGdiff on the paper's VP grid: optimal Gaussian proposals towards sqrt(abar) y on the
    observed SVD coordinates, ESS-triggered resampling, final correction by the true likelihood.
    Same signature and info as `fsdiag.smc.tds`."""
    threshold = check_real(ess_threshold, "ess_threshold")
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"ess_threshold: expected a fraction in [0, 1], got {ess_threshold!r}")
    if not isinstance(resampling, str) or resampling not in _SCHEMES:
        raise ValueError(f"resampling: expected one of {sorted(_SCHEMES)}, got {resampling!r}")
    if not isinstance(getattr(lik, "forward", None), LinearForwardModel):
        raise ValueError(f"forward: mcgdiff_lite needs a linear forward model, got {getattr(lik, 'forward', lik)!r}")
    n, n_steps, schedule, grid, problem, gen, rec_steps = _setup(
        prior, lik, n_particles=n_particles, n_steps=n_steps, t_min=t_min, t_max=t_max, schedule=schedule,
        seed=seed, generator=generator, record=record)
    if not bool((lik.noise_std == lik.noise_std[0]).all()):
        raise ValueError("noise_std: mcgdiff_lite needs isotropic measurement noise (one noise_std)")
    dev, dt_ = prior.device, prior.dtype
    A = problem.matrix().to(torch.float64)
    U, S, Vh = torch.linalg.svd(A, full_matrices=True)
    r = int((S > S.max() * 1e-10).sum())
    s, V = S[:r], Vh.T                                               # observed coordinates: the first r
    y_eff = lik.y.to(A) - lik.forward(torch.zeros(1, prior.dim, dtype=torch.float64, device=dev))[0]  # y - bias
    ybar = (U.T @ y_eff)[:r]
    s2y = float(lik.noise_var[0])

    def gamma(abar):
        return (1 - abar) * s * s + abar * s2y

    def log_potential(xbar, abar):
        return _log_normal(math.sqrt(abar) * ybar, s * xbar[:, :r], gamma(abar))

    x = torch.randn(n, prior.dim, generator=gen, dtype=dt_, device=dev)
    view_gen = torch.Generator(device=dev)
    view_gen.manual_seed(int(torch.randint(0, 2 ** 62, (1,), generator=gen, device=dev)))
    log_w = log_potential(x.to(torch.float64) @ V, schedule.alpha_bar(float(grid[0])))
    log_evidence = float(torch.logsumexp(log_w, 0) - math.log(n))
    ess, resampled, times, xs, ms = [], [], [], [], []
    for k in tqdm(range(n_steps), desc="mcgdiff_lite", disable=not progress, leave=False):
        t, t_next = float(grid[k]), float(grid[k + 1])
        abar, abar_s = schedule.alpha_bar(t), schedule.alpha_bar(t_next)
        m = prior.moments(x, abar).mean
        if k in rec_steps:
            view = resample(log_w, view_gen, resampling)
            times.append(t), xs.append(x[view].clone()), ms.append(m[view].clone())
        xbar = x.to(torch.float64) @ V
        beta, dt = schedule.beta(t), t - t_next
        v = beta * dt
        mu = (x + (0.5 * beta * x + beta * (math.sqrt(abar) * m - x) / (1 - abar)) * dt).to(torch.float64) @ V
        # Weight (fully adapted, before the move): int N(x_s; mu, v) g_s(x_s) dx_s / g_t(x_t)
        # = N(c; s mu_obs, Gamma_s + v s^2) / g_t(x_t).
        c, G = math.sqrt(abar_s) * ybar, gamma(abar_s)
        incr = _log_normal(c, s * mu[:, :r], G + v * s * s) - log_potential(xbar, abar)
        log_evidence += float(torch.logsumexp(log_w + incr, 0) - torch.logsumexp(log_w, 0))
        log_w = log_w + incr
        idx, ess_k = resample_if_degenerate(log_w, threshold, gen, resampling)
        ess.append(ess_k)
        if idx is not None:
            mu, log_w = mu[idx], torch.zeros_like(log_w)
            resampled.append(k)
        # Optimal proposal: observed coordinates from N(mu, v) x N(c; s x, G); the others from the prior kernel.
        prec = 1.0 / v + s * s / G
        z = torch.randn(x.shape, generator=gen, dtype=torch.float64, device=dev)
        new = mu + math.sqrt(v) * z
        new[:, :r] = (mu[:, :r] / v + s * c / G) / prec + z[:, :r] / prec.sqrt()
        x = (new @ V.T).to(dt_)
        _check_finite(x, "mcgdiff_lite", t_next)
    # Final correction with the true likelihood at the denoised particles.
    abar = schedule.alpha_bar(float(grid[-1]))
    m = prior.moments(x, abar).mean
    incr = lik.log_prob(m).to(torch.float64) - log_potential(x.to(torch.float64) @ V, abar)
    log_evidence += float(torch.logsumexp(log_w + incr, 0) - torch.logsumexp(log_w, 0))
    log_w = log_w + incr
    ess.append(effective_sample_size(log_w))
    idx = resample(log_w, gen, resampling)
    x_out, m_out = x[idx], m[idx]
    times.append(float(grid[-1])), xs.append(x_out.clone()), ms.append(m_out.clone())
    info = {"ess": ess, "resampled": resampled, "log_weights": log_w.cpu(), "log_evidence": log_evidence,
            "ess_threshold": threshold, "resampling": resampling, "observed_rank": r}
    return RunWithInfo(x_out, torch.tensor(times, dtype=torch.float64), torch.stack(xs), torch.stack(ms),
                       "mcgdiff_lite", None, schedule, n_steps, seed if generator is None else None,
                       {"ess_threshold": threshold, "resampling": resampling}, info)
