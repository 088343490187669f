"""DDNM: zero-shot restoration with the denoising diffusion null-space model (Wang et al. 2023, Algorithms 1 and 2).

For a linear y = A x0 + c + n, n ~ N(0, Sigma_n), at each level t of the reverse chain:
  1. x0|t = m(x_t), the Tweedie mean (docs/design.md §2.2);
  2. range-null decomposition: keep the null-space part of x0|t and replace its range-space part by A^+ y,
       x0_hat = A^+ (y - c) + (I - A^+ A) x0|t;
  3. a step to the next level s < t with x0_hat in place of x0: the DDPM posterior q(x_s | x_t, x0_hat)
     (Algorithm 1; `steps.bridge`), or, with eta, the DDIM-type step of the paper's code,
       x_s = a_s x0_hat + b_s (eta z + sqrt(1 - eta^2) eps_hat),  eps_hat = (x_t - a_t m(x_t)) / b_t.
The chain runs on the VP grid linspace(t_max, t_min, n_steps + 1) and a last step from t_min to t = 0,
whose DDPM posterior is the point x0_hat itself: the output, with A x0_hat = y - c exactly (A of full row rank).

The algebra is done in the SVD of the whitened operator Sigma_n^-1/2 A = U diag(s) V^T (rank r): x0_hat
replaces the coordinates V^T x0|t by y_bar = diag(1/s) U^T Sigma_n^-1/2 (y - c), each carrying noise of
standard deviation 1/s_i. Whitening changes nothing for a full-row-rank A (A^+ and the null space are the
same); for a rank-deficient A it makes A^+ y the weighted least-squares solution.

DDNM+ (noise_aware=True, Algorithm 2 without its time-travel trick): the range coordinates move only by
lambda_i (y_bar_i - V^T x0|t), and the DDPM step's noise there is shrunk so that the noise lambda_i c_0 / s_i
carried by y_bar plus the fresh noise make up the step's variance v:
  lambda_i = min(1, sqrt(v) s_i / c_0),   gamma_i = v - (c_0 lambda_i / s_i)^2,
with c_0, v the step's x0-coefficient and variance (the paper's a_t and sigma_t^2, its Sigma_t = lambda_t I
and Phi_t = gamma_t I per singular direction, as its appendix does for a general A). At the last step v = 0,
so DDNM+ returns the Tweedie mean of its last level.
"""
from __future__ import annotations

import math

import torch
from tqdm import tqdm

from .._checks import check_real
from .common import Recorder, check_particles, data_scale, linear_system, setup
from .registry import register_sampler
from .run import Run
from .steps import bridge

__all__ = ["ddnm", "range_null_split"]


def range_null_split(problem) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(V (d, r), s (r,), y_bar (r,)): the whitened operator's right singular vectors and singular values
    (rank r by the usual tolerance) and the range coordinates of A^+ y, A^+ (y - c) = V y_bar."""
    M, yc, nv = linear_system(problem, "ddnm")
    std = nv.sqrt()
    U, s, Vh = torch.linalg.svd(M / std[:, None], full_matrices=False)
    keep = s > s.max() * max(M.shape) * torch.finfo(s.dtype).eps
    U, s, V = U[:, keep], s[keep], Vh[keep].T
    return V, s, ((yc / std) @ U) / s


@register_sampler
def ddnm(prior, lik, *, n_particles: int = 1024, n_steps: int = 100, t_min: float = 1e-2, t_max: float = 1.0,
         schedule=None, seed: int | None = 0, generator: torch.Generator | None = None, record=25,
         progress: bool = True, noise_aware: bool = True, eta: float | None = None) -> Run:
    """DDNM (Wang et al. 2023, Algorithm 1; DDNM+ Algorithm 2 with noise_aware=True) on the paper's VP grid.

    n_steps reverse steps from t_max to t_min and a last one to t = 0 (module docstring); 100 steps as in
    the paper's experiments. eta=None (default) takes the DDPM posterior step of Algorithm 1; a number in
    [0, 1] takes the DDIM-type step of the paper's released code (its default eta = 0.85), which noise_aware
    does not support. noise_aware=True (default; DDNM+) accounts for the measurement noise, which fsdiag's
    likelihoods always have; False (DDNM) enforces A x0_hat = y - c at every level and suits noiseless y
    (for an invertible A its output is then A^-1 (y - c) for every seed). Needs a linear forward model.

    Returns an fsdiag.Run whose samples are the last x0_hat (clean, final time 0); the trajectory records
    x_t and its Tweedie mean at the recorded grid times.
    """
    if not isinstance(noise_aware, bool):
        raise TypeError(f"noise_aware: expected True or False, got {noise_aware!r}")
    if eta is not None:
        eta = check_real(eta, "eta")
        if not 0.0 <= eta <= 1.0:
            raise ValueError(f"eta: expected a number in [0, 1] or None, got {eta!r}")
        if noise_aware:
            raise ValueError("eta: DDNM+ (noise_aware=True) takes the DDPM posterior step; pass eta=None")
    n, n_steps, schedule, grid, problem, gen = setup(
        prior, lik, n_particles=n_particles, n_steps=n_steps, t_min=t_min, t_max=t_max, schedule=schedule,
        seed=seed, generator=generator, vp_only=True)
    V, s, y_bar = range_null_split(problem)
    times = torch.cat([grid, grid.new_zeros(1)])                # the last step goes to t = 0 (abar = 1)
    rec = Recorder(record, times)
    scale = data_scale(prior)
    dev, dt_ = prior.device, prior.dtype
    x = torch.randn(n, prior.dim, generator=gen, dtype=dt_, device=dev)
    x0_hat = x
    for k in tqdm(range(n_steps + 1), desc="ddnm", disable=not progress, leave=False):
        t = float(times[k])
        abar_t = schedule.alpha_bar(t)
        abar_s = 1.0 if k == n_steps else schedule.alpha_bar(float(times[k + 1]))
        m = prior.moments(x, abar_t).mean                       # 1. x0|t
        if rec.wants(k):
            rec.add(t, x, m)
        c_x, c_0, v = bridge(abar_t, abar_s)
        # 2. range-null decomposition (DDNM+: range coordinates move by lambda only).
        lam = (math.sqrt(v) * s / c_0).clamp(max=1.0) if noise_aware else torch.ones_like(s)
        x0_hat = m + (lam * (y_bar - m @ V)) @ V.T
        if k == n_steps:                                        # the step to t = 0 lands on x0_hat
            break
        # 3. step to the next level.
        z = torch.randn(x.shape, generator=gen, dtype=dt_, device=dev)
        if eta is not None:
            eps_hat = (x - math.sqrt(abar_t) * m) / math.sqrt(1.0 - abar_t)
            x = math.sqrt(abar_s) * x0_hat + math.sqrt(1.0 - abar_s) * (eta * z + math.sqrt(1.0 - eta * eta) * eps_hat)
        else:
            noise = math.sqrt(v) * z
            if noise_aware:                                     # per range direction: sqrt(gamma_i) instead of sqrt(v)
                gamma = (v - (c_0 * lam / s) ** 2).clamp(min=0.0)
                noise = noise + ((gamma.sqrt() - math.sqrt(v)) * (z @ V)) @ V.T
            x = c_x * x + c_0 * x0_hat + noise
        check_particles(x, "ddnm", float(times[k + 1]), k, n_steps, scale)
    rec.add(0.0, x0_hat, x0_hat)
    return rec.run(x0_hat, "ddnm", None, schedule, n_steps, seed, generator,
                   {"noise_aware": noise_aware, "eta": eta})
