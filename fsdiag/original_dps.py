"""DPS as in its original DDPM code (Chung et al. 2023, Algorithm 1 and the released code).

The published update is an ancestral DDPM step followed by a fixed step down the residual norm,
x_{k-1} = x'_{k-1} - zeta grad_{x_k} ||y - A(m(x_k))|| (no Sigma_n^-1, no square: docs/design.md §4.2).
As a likelihood score for fsdiag's samplers: the DDPM step adds beta_k score / sqrt(alpha_k), so
score = (zeta sqrt(alpha_k) / beta_k) (-grad ||y - A(m)||) reproduces the update exactly.
"""
from __future__ import annotations

import math

import torch

from ._checks import check_int, check_positive
from .methods import Approximation, Guidance, register
from .schedules import DDPMSchedule

__all__ = ["OriginalDPS"]


@register
class OriginalDPS(Approximation):
    """DPS as published in its DDPM code: zeta per step of an n_steps DDPM run on `schedule`.

    The step k is found by the noise level: abar on the DDPM grid (k = T, T - T/n_steps, ..., 0)
    gives that step exactly; any other abar (a VPSchedule run, the diagnostics' score checks)
    uses the DDPM step whose interval of log abar contains it, so the guidance per unit of
    noise level is that of the DDPM run. n_steps need not divide T (a VP run of any length):
    node j then sits at timestep j T / n_steps, with log abar interpolated between timesteps. `fsdiag.sample(method="original_dps", n_steps=250)`
    forwards the run's step count (and its schedule when that is a DDPMSchedule) through
    `run_defaults`, so zeta is applied per step of the run; an instance keeps its own n_steps.
    """

    name = "original_dps"

    def __init__(self, *, zeta: float = 1.0, n_steps: int = 1000, schedule=None):
        schedule = DDPMSchedule() if schedule is None else schedule
        if not isinstance(schedule, DDPMSchedule):
            raise TypeError(f"schedule: expected an fsdiag.DDPMSchedule (the DDPM code's), got "
                            f"{type(schedule).__name__}")
        self.zeta = check_positive(zeta, "zeta")
        self.n_steps = check_int(n_steps, "n_steps")
        self.schedule = schedule
        # -log abar at timesteps 0..T (increasing); node j of the run sits at timestep j T / n_steps
        # (an integer when n_steps divides T, as on a DDPM run; else log abar is interpolated
        # linearly between timesteps, as DDPMSchedule.alpha_bar does, for VP runs of any length).
        self._neg_log_ab = -torch.cat([torch.zeros(1, dtype=torch.float64),
                                       torch.cumsum(torch.log1p(-schedule.betas), 0)])

    @classmethod
    def run_defaults(cls, *, schedule, n_steps) -> dict:
        """The parameters `fsdiag.sample` forwards from its run when the method is named by string:
        its step count, and its schedule when that is the DDPM one (a VP run keeps the default DDPM)."""
        params = {"n_steps": n_steps}
        if isinstance(schedule, DDPMSchedule):
            params["schedule"] = schedule
        return params

    def _node(self, j: int) -> float:
        """-log abar at node j (timestep j T / n_steps)."""
        T, n = self.schedule.n_timesteps, self.n_steps
        k, rem = divmod(j * T, n)
        if rem == 0:
            return float(self._neg_log_ab[k])
        lo, hi = float(self._neg_log_ab[k]), float(self._neg_log_ab[k + 1])
        return lo + (rem / n) * (hi - lo)

    def step(self, abar: float) -> tuple[float, float]:
        """(alpha_k, beta_k) of the run's step from node k to k - 1 that contains this noise level
        (a noise level on node k belongs to the step that leaves it)."""
        T, n = self.schedule.n_timesteps, self.n_steps
        neg = -math.log(abar)
        k = int(torch.searchsorted(self._neg_log_ab, torch.tensor([neg], dtype=torch.float64), right=True)) - 1
        k = min(max(k, 0), T - 1)
        lo, hi = float(self._neg_log_ab[k]), float(self._neg_log_ab[k + 1])
        position = k + min(max((neg - lo) / (hi - lo), 0.0), 1.0)               # timestep, continuous
        j = min(max(math.ceil(position * n / T - 1e-6), 1), n)
        gap = self._node(j) - self._node(j - 1)                                  # -log alpha_k
        return math.exp(-gap), -math.expm1(-gap)

    def __call__(self, problem, x, abar):
        alpha, beta = self.step(abar)
        mo = problem.prior.moments(x, abar)
        r = problem.lik.residual(mo.mean)                                            # y - A(m)
        unit = r / r.norm(dim=1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)
        # -grad_x ||y - A(m(x))|| = J^T J_A^T (y - A(m)) / ||y - A(m)||
        descent = problem.prior.denoiser_vjp(x, abar, problem.lik.forward.vjp(mo.mean, unit), moments=mo)
        return Guidance((self.zeta * math.sqrt(alpha) / beta) * descent, mo.mean)
