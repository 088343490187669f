"""Noise schedules: the paper's continuous VP schedule and the discrete DDPM one.

Both map a time t in (0, 1] to abar(t); every kernel in fsdiag works from
a = sqrt(abar) and b^2 = 1 - abar, so any schedule with these methods plugs in.
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass

import torch

from ._checks import check_int, check_positive, check_real

__all__ = ["VPSchedule", "DDPMSchedule"]


@dataclass(frozen=True)
class VPSchedule:
    """Continuous VP-SDE: beta(t) = beta_min + (beta_max - beta_min) t (docs/design.md §2.1)."""

    beta_min: float = 0.01
    beta_max: float = 20.0

    def __post_init__(self):
        # Store Python floats: a str or numpy value would fail (or wrap) on first use instead.
        beta_max = check_positive(self.beta_max, "beta_max")
        beta_min = check_real(self.beta_min, "beta_min")
        if not (0.0 <= beta_min <= beta_max):
            raise ValueError(f"beta_min, beta_max: expected 0 <= beta_min <= beta_max, got "
                             f"beta_min = {self.beta_min}, beta_max = {self.beta_max}")
        object.__setattr__(self, "beta_min", beta_min)
        object.__setattr__(self, "beta_max", beta_max)

    def beta(self, t: float) -> float:
        return self.beta_min + (self.beta_max - self.beta_min) * _check_t(t)

    def alpha_bar(self, t: float) -> float:
        """abar(t) = exp(-beta_min t - (beta_max - beta_min) t^2 / 2)."""
        t = _check_t(t)
        return _positive(math.exp(-self.beta_min * t - 0.5 * (self.beta_max - self.beta_min) * t * t))

    def time_grid(self, n_steps: int, t_min: float, t_max: float = 1.0) -> torch.Tensor:
        """The paper's uniform reverse grid linspace(t_max, t_min, n_steps + 1) (float64)."""
        check_int(n_steps, "n_steps")
        check_time(t_min, "t_min")
        check_time(t_max, "t_max")
        if not t_min < t_max:
            raise ValueError(f"t_min: expected t_min < t_max, got t_min={t_min}, t_max={t_max}")
        return torch.linspace(float(t_max), float(t_min), n_steps + 1, dtype=torch.float64)


@dataclass(frozen=True)
class DDPMSchedule:
    """Discrete DDPM (Ho et al. 2020): linear beta_1..beta_T, abar_k = prod_{j<=k} (1 - beta_j).

    Time t = k / T names step k; `alpha_bar` interpolates log abar linearly between steps.
    """

    beta_start: float = 1e-4
    beta_end: float = 0.02
    n_timesteps: int = 1000

    def __post_init__(self):
        # Store Python numbers: a numpy uint8 n_timesteps would wrap in arithmetic.
        beta_start = check_positive(self.beta_start, "beta_start")
        beta_end = check_positive(self.beta_end, "beta_end")
        n_timesteps = check_int(self.n_timesteps, "n_timesteps")
        if not beta_end < 1:
            raise ValueError(f"beta_end: expected a value below 1, got {self.beta_end}")
        if not beta_start <= beta_end:
            raise ValueError(f"beta_start, beta_end: expected beta_start <= beta_end, got "
                             f"beta_start = {self.beta_start} > beta_end = {self.beta_end}")
        object.__setattr__(self, "beta_start", beta_start)
        object.__setattr__(self, "beta_end", beta_end)
        object.__setattr__(self, "n_timesteps", n_timesteps)

    @property
    def betas(self) -> torch.Tensor:
        return torch.linspace(self.beta_start, self.beta_end, self.n_timesteps, dtype=torch.float64)

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        return torch.cumprod(1.0 - self.betas, dim=0)

    def alpha_bar(self, t: float) -> float:
        pos = _check_t(t) * self.n_timesteps  # step index, 1-based (k = 1..T)
        if pos <= 0:
            return 1.0
        # log abar as a sum of logs: the product underflows to 0 (log -inf) for large betas.
        log_ab = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(torch.log1p(-self.betas), 0)])
        k = min(int(math.floor(pos)), self.n_timesteps - 1)
        frac = min(pos - k, 1.0)
        return _positive(math.exp(float(log_ab[k] * (1 - frac) + log_ab[k + 1] * frac)))

    def beta(self, t: float) -> float:
        """Continuous-time rate: beta_k * T at the step containing t."""
        k = min(max(int(math.ceil(_check_t(t) * self.n_timesteps)), 1), self.n_timesteps)
        return float(self.betas[k - 1]) * self.n_timesteps

    def time_grid(self, n_steps: int | None = None, t_min: float | None = None,
                  t_max: float = 1.0) -> torch.Tensor:
        """Times k/T of the DDPM steps, from T down to 1, then 0 (`n_steps` must divide T)."""
        n_steps = self.n_timesteps if n_steps is None else check_int(n_steps, "n_steps")
        if self.n_timesteps % n_steps:
            raise ValueError(f"n_steps: expected a divisor of n_timesteps={self.n_timesteps}, got {n_steps}")
        ks = torch.arange(self.n_timesteps, 0, -self.n_timesteps // n_steps, dtype=torch.float64)
        grid = torch.cat([ks, torch.zeros(1, dtype=torch.float64)]) / self.n_timesteps
        return grid


def _positive(abar: float) -> float:
    """abar underflows to 0 for very noisy schedules; the smallest positive float keeps
    a = sqrt(abar) > 0 for the kernels (the data is invisible at that noise either way)."""
    return max(abar, sys.float_info.min)


def check_time(t: float, name: str) -> float:
    """A time in (0, 1], returned as a float."""
    t = check_real(t, name)
    if not (0.0 < t <= 1.0):
        raise ValueError(f"{name}: expected a time in (0, 1], got {t}")
    return t


def bridge(abar_t: float, abar_s: float) -> tuple[float, float, float]:
    """(c_x, c_0, v): the VP forward process's bridge q(x_s | x_t, x_0) = N(c_x x_t + c_0 x_0, v I)
    for s < t (abar_s > abar_t); the exact sampler's and DDPM ancestral step."""
    var_ts, b2_t, b2_s = 1.0 - abar_t / abar_s, 1.0 - abar_t, 1.0 - abar_s    # var_ts = Var(x_t | x_s)
    return math.sqrt(abar_t / abar_s) * b2_s / b2_t, math.sqrt(abar_s) * var_ts / b2_t, var_ts * b2_s / b2_t


def _check_t(t) -> float:
    """A time at which a schedule is evaluated: finite and >= 0 (t = 0 is the data)."""
    t = check_real(t, "t")
    if t < 0:
        raise ValueError(f"t: expected a time >= 0, got {t}")
    return t
