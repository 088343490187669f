"""DPS as in its original DDPM code (Chung et al. 2023, Algorithm 1 and the released code).

The published update is an ancestral DDPM step followed by a fixed step down the residual norm,
x_{k-1} = x'_{k-1} - zeta grad_{x_k} ||y - A(m(x_k))|| (no Sigma_n^-1, no square: DESIGN §3).
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
    noise level is that of the DDPM run. Through `fsdiag.sample(method="original_dps")` the
    defaults apply (n_steps=1000); for a strided DDPM run pass an instance,
    `method=OriginalDPS(zeta=1.0, n_steps=250), schedule=DDPMSchedule(), n_steps=250`.
    """

    name = "original_dps"

    def __init__(self, *, zeta: float = 1.0, n_steps: int = 1000, schedule=None):
        schedule = DDPMSchedule() if schedule is None else schedule
        if not isinstance(schedule, DDPMSchedule):
            raise TypeError(f"schedule: expected an fsdiag.DDPMSchedule (the DDPM code's), got "
                            f"{type(schedule).__name__}")
        self.zeta = check_positive(zeta, "zeta")
        self.n_steps = check_int(n_steps, "n_steps")
        if schedule.n_timesteps % self.n_steps:
            raise ValueError(f"n_steps: expected a divisor of n_timesteps={schedule.n_timesteps}, "
                             f"got {self.n_steps}")
        self.schedule = schedule
        stride = schedule.n_timesteps // self.n_steps
        log_ab = torch.cat([torch.zeros(1, dtype=torch.float64),
                            torch.cumsum(torch.log1p(-schedule.betas), 0)])
        self._neg_log_abar = -log_ab[::stride].contiguous()     # node j: timestep j * stride, increasing

    def step(self, abar: float) -> tuple[float, float]:
        """(alpha_k, beta_k) of the DDPM step from node k to k - 1 at this noise level."""
        neg = -math.log(abar)
        j = int(torch.searchsorted(self._neg_log_abar, torch.tensor([neg - 1e-9], dtype=torch.float64)))
        j = min(max(j, 1), self.n_steps)
        alpha = math.exp(float(self._neg_log_abar[j - 1] - self._neg_log_abar[j]))
        return alpha, -math.expm1(float(self._neg_log_abar[j - 1] - self._neg_log_abar[j]))

    def __call__(self, problem, x, abar):
        alpha, beta = self.step(abar)
        mo = problem.prior.moments(x, abar)
        r = problem.lik.residual(mo.mean)                                            # y - A(m)
        unit = r / r.norm(dim=1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)
        # -grad_x ||y - A(m(x))|| = J^T J_A^T (y - A(m)) / ||y - A(m)||
        descent = problem.prior.denoiser_vjp(x, abar, problem.lik.forward.vjp(mo.mean, unit), moments=mo)
        return Guidance((self.zeta * math.sqrt(alpha) / beta) * descent, mo.mean)
