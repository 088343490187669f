"""One step function per discretisation of the reverse process (docs/design.md §2.5, §3.3).

Each takes the current particles x at time t (alpha_bar abar_t), the score there and returns the
mean and variance of the Gaussian step to the next time s < t; a sampler adds sqrt(var) z. The
samplers (`guidance`, `exact`, `tds`, `mcgdiff`) call these, never their own copies.
"""
from __future__ import annotations

import math

import torch

__all__ = ["score_from_mean", "vp_euler_maruyama", "ddpm_ancestral", "bridge"]


def score_from_mean(x: torch.Tensor, mean: torch.Tensor, abar: float) -> torch.Tensor:
    """Tweedie's formula inverted: grad log p_t(x) = (sqrt(abar) E[x_0 | x_t] - x_t) / (1 - abar)."""
    return (math.sqrt(abar) * mean - x) / (1.0 - abar)


def vp_euler_maruyama(schedule, x: torch.Tensor, score: torch.Tensor, t: float, s: float):
    """(mean, var) of the paper's Euler-Maruyama step of the reverse VP-SDE from t to s:
    x + (beta x / 2 + beta score) dt and beta dt, dt = t - s, beta = schedule.beta(t)."""
    beta, dt = schedule.beta(t), t - s
    return x + (0.5 * beta * x + beta * score) * dt, beta * dt


def ddpm_ancestral(x: torch.Tensor, score: torch.Tensor, abar_t: float, abar_s: float):
    """(mean, var) of one (possibly strided) ancestral DDPM step: alpha = abar_t / abar_s,
    mean (x + (1 - alpha) score) / sqrt(alpha), var (1 - abar_s) / (1 - abar_t) (1 - alpha)."""
    alpha = abar_t / abar_s
    beta = 1.0 - alpha
    return (x + beta * score) / math.sqrt(alpha), (1.0 - abar_s) / (1.0 - abar_t) * beta


def bridge(abar_t: float, abar_s: float) -> tuple[float, float, float]:
    """(c_x, c_0, v): the VP forward process's bridge q(x_s | x_t, x_0) = N(c_x x_t + c_0 x_0, v I)
    for s < t (abar_s > abar_t); the exact sampler's step and DDPM's with x_0 = m(x_t)."""
    var_ts, b2_t, b2_s = 1.0 - abar_t / abar_s, 1.0 - abar_t, 1.0 - abar_s    # var_ts = Var(x_t | x_s)
    return math.sqrt(abar_t / abar_s) * b2_s / b2_t, math.sqrt(abar_s) * var_ts / b2_t, var_ts * b2_s / b2_t
