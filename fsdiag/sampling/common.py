"""What every sampler shares: argument checks and set-up, the one `record` rule and its recorder,
and the particle checks.

A sampler's loop reads: `setup(...)` once, then per grid index k a step (`fsdiag.sampling.steps`),
`recorder.wants(k)` / `recorder.add(t, x, m)` and `check_particles`; `recorder.run(...)` builds
the `Run` at the end.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch

from .._checks import check_int, check_real, make_generator
from ..problems import Problem
from ..schedules import VPSchedule, check_time
from .run import Run

__all__ = ["Setup", "setup", "record_steps", "Recorder", "check_particles", "data_scale", "final_tweedie",
           "linear_system", "BLOW_UP"]


class Setup(NamedTuple):
    n_particles: int
    n_steps: int
    schedule: object
    grid: torch.Tensor          # (n_steps + 1,) times, t_max down to t_min
    problem: Problem
    generator: torch.Generator


def setup(prior, lik, *, n_particles, n_steps, t_min, t_max, schedule, seed, generator,
          vp_only: bool = False, needs_vjp: bool = False) -> Setup:
    """Checked arguments of a sampler, its time grid, the (prior, likelihood) problem and the
    generator (from `seed`, or the caller's `generator`). vp_only: the sampler runs on the VP-SDE
    (a VPSchedule); needs_vjp: it calls the prior's denoiser VJP."""
    if not hasattr(prior, "moments") or (needs_vjp and not hasattr(prior, "denoiser_vjp")):
        raise TypeError(f"prior: expected an fsdiag.EmpiricalPrior or a testbed prior, got {type(prior).__name__}")
    n_particles = check_int(n_particles, "n_particles")
    n_steps = check_int(n_steps, "n_steps")
    t_min = check_time(t_min, "t_min")
    if t_min >= 1.0:
        raise ValueError(f"t_min: expected a time in (0, 1), got {t_min}")
    t_max = check_time(t_max, "t_max")
    schedule = VPSchedule() if schedule is None else schedule
    if vp_only and not isinstance(schedule, VPSchedule):
        raise TypeError(f"schedule: expected an fsdiag.VPSchedule (this sampler runs on the VP-SDE), "
                        f"got {type(schedule).__name__}")
    if not hasattr(schedule, "alpha_bar") or not hasattr(schedule, "time_grid"):
        raise TypeError(f"schedule: expected a VPSchedule or DDPMSchedule, got {type(schedule).__name__}")
    grid = schedule.time_grid(n_steps, t_min, t_max)
    problem = Problem.build(prior, lik)
    return Setup(n_particles, n_steps, schedule, grid, problem, make_generator(seed, generator, prior.device))


def record_steps(record, grid: torch.Tensor) -> set[int]:
    """Grid indices to record: an int (that many, evenly spaced), times (nearest grid points),
    or None / 0 (the final time only). The final index is always recorded."""
    last = grid.shape[0] - 1
    if record is None:
        return {last}
    if isinstance(record, (str, bytes, bool, np.bool_)):
        raise TypeError(f"record: expected an int or a sequence of times, got {record!r}")
    if isinstance(record, (int, np.integer)):
        record = check_int(record, "record", minimum=0)
        if record == 0:
            return {last}
        return {round(i) for i in torch.linspace(0, last, min(record, last + 1)).tolist()} | {last}
    try:
        times = [check_real(t, "record") for t in record]
    except TypeError as err:
        raise TypeError(f"record: expected an int or a sequence of times, got {record!r}") from err
    return {int((grid - t).abs().argmin()) for t in times} | {last}


class Recorder:
    """The recorded particles and their Tweedie means at the grid indices `record_steps` picks."""

    def __init__(self, record, grid: torch.Tensor):
        self.steps = record_steps(record, grid)
        self.times, self.xs, self.ms = [], [], []

    def wants(self, k: int) -> bool:
        return k in self.steps

    def add(self, t: float, x: torch.Tensor, m: torch.Tensor) -> None:
        self.times.append(float(t))
        self.xs.append(x.detach().clone())
        self.ms.append(m.detach().clone())

    def run(self, samples, method, approximation, schedule, n_steps, seed, generator, params=None,
            info=None) -> Run:
        """The `Run` of these records (the seed is kept only when no generator was passed)."""
        return Run(samples, torch.tensor(self.times, dtype=torch.float64), torch.stack(self.xs),
                   torch.stack(self.ms), method, approximation, schedule, n_steps,
                   seed if generator is None else None, dict(params or {}), dict(info or {}))


# Particles of a stable sampler stay within a few noise scales of the data: |x_t| <= a |x_0| + b |z|
# with a, b <= 1, and the largest of n Gaussian draws is below ~9 for any feasible n, so ~10 x
# (1 + the data's scale). Approximations that hallucinate likelihood modes go further (up to
# ~400 x in the book: zeta_dps, polar angle, noise 0.01) and must still run; an unstable step
# grows geometrically (1e13 x after one step at noise_std 1e-8). 1e4 x separates the two.
BLOW_UP = 1e4
_ADVICE = ("try more n_steps or a larger t_min (smaller steps), a larger noise_std, float64 atoms, "
           "or gentler method parameters (e.g. a smaller zeta for zeta_dps)")


def final_tweedie(prior, x: torch.Tensor, abar: float) -> torch.Tensor:
    """The Tweedie means recorded with the final particles (the particles themselves at abar = 1)."""
    return x if abar >= 1.0 else prior.moments(x, abar).mean


def data_scale(prior) -> float:
    """max |x_0| coordinate of the prior's support (atoms; a mixture's means + 6 sd; else inf)."""
    scale = getattr(prior, "scale", None)
    if isinstance(scale, float):
        return scale
    if hasattr(prior, "means") and hasattr(prior, "covs"):
        sd = torch.diagonal(prior.covs, dim1=1, dim2=2).clamp_min(0).sqrt()
        return float((prior.means.abs() + 6 * sd).max())
    return math.inf


def check_particles(x: torch.Tensor, who: str, s: float, k: int, n_steps: int,
                    scale: float = math.inf) -> None:
    """One reduction per step: NaN propagates through max, and so does a blow-up beyond
    BLOW_UP x (1 + scale), the data's scale (not checked with scale = inf)."""
    peak = float(x.abs().max()) if x.numel() else 0.0
    where = f"at t = {s:g} (step {k + 1} of {n_steps})"
    if not math.isfinite(peak):
        raise FloatingPointError(f"{who}: non-finite particles {where}; {_ADVICE}")
    if peak > BLOW_UP * (1.0 + scale):
        raise FloatingPointError(f"{who}: diverged {where}: max |x| = {peak:.3g}, more than {BLOW_UP:g} x "
                                 f"(1 + {scale:.3g}), the data's scale (max |atom|); {_ADVICE}")


def linear_system(problem: Problem, who: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(M, y - c, noise variances) of y = M x + c + N(0, diag(noise_var)) in the prior's dtype and
    device, for samplers that need the operator as a matrix (DDNM's pseudo-inverse, PnP-DM's
    Gaussian likelihood step); a nonlinear forward model is refused, naming `lik`."""
    fwd = problem.lik.forward
    if not getattr(fwd, "is_linear", False) or not hasattr(fwd, "dense"):
        raise TypeError(f"lik: {who} needs a linear forward model (an fsdiag.forward.LinearForwardModel), "
                        f"got {fwd!r}")
    d, dt_, dev = problem.dim, problem.dtype, problem.device
    M = fwd.dense(d, dt_, dev)
    c = fwd.offset(d, dt_, dev)
    y = problem.y.to(dtype=dt_, device=dev)
    return M, (y if c is None else y - c), problem.noise_var()
