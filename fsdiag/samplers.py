"""Samplers over a schedule's time grid, with a per-step record of the particles.

`sample` runs the paper's reverse Euler-Maruyama on the VP-SDE (or ancestral DDPM
steps on a DDPMSchedule) with any registered likelihood approximation;
`sample_exact` is the exact ancestral reference for the FSR (DESIGN §2).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from ._checks import check_int, check_real, make_generator
from .methods import FSR, METHODS, Approximation, Problem, make_method
from .prior import EmpiricalPrior
from .schedules import DDPMSchedule, VPSchedule, bridge, check_time

__all__ = ["Run", "sample", "sample_exact"]


@dataclass
class Run:
    """A sampler's output. `times[r]` is the r-th recorded time (descending, the last is the
    final time); `trajectory[r]` the particles there and `tweedie[r]` their prior Tweedie means."""

    samples: torch.Tensor          # (n_particles, d) particles at the final time
    times: torch.Tensor            # (R,) float64
    trajectory: torch.Tensor       # (R, n_particles, d)
    tweedie: torch.Tensor          # (R, n_particles, d)
    method: str
    approximation: Approximation | None
    schedule: object
    n_steps: int
    seed: int | None
    params: dict = field(default_factory=dict)

    @property
    def t_final(self) -> float:
        return float(self.times[-1])

    @property
    def denoised(self) -> torch.Tensor:
        """Tweedie means of the final particles."""
        return self.tweedie[-1]

    def __repr__(self) -> str:
        n, d = self.samples.shape
        return (f"Run(method={self.method!r}, n_particles={n}, d={d}, n_steps={self.n_steps}, "
                f"t_final={self.t_final:g}, recorded={len(self.times)} times, seed={self.seed})")


def _record_steps(record, grid: torch.Tensor) -> set[int]:
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


def _setup(prior, lik, *, n_particles, n_steps, t_min, t_max, schedule, seed, generator):
    if not hasattr(prior, "moments"):
        raise TypeError(f"prior: expected an fsdiag.EmpiricalPrior or a testbed prior, got {type(prior).__name__}")
    n_particles = check_int(n_particles, "n_particles")
    n_steps = check_int(n_steps, "n_steps")
    t_min = check_time(t_min, "t_min")
    if t_min >= 1.0:
        raise ValueError(f"t_min: expected a time in (0, 1), got {t_min}")
    t_max = check_time(t_max, "t_max")
    schedule = VPSchedule() if schedule is None else schedule
    if not hasattr(schedule, "alpha_bar") or not hasattr(schedule, "time_grid"):
        raise TypeError(f"schedule: expected a VPSchedule or DDPMSchedule, got {type(schedule).__name__}")
    grid = schedule.time_grid(n_steps, t_min, t_max)
    problem = Problem.build(prior, lik)
    gen = make_generator(seed, generator, prior.device)
    return n_particles, n_steps, schedule, grid, problem, gen


# Particles of a stable sampler stay within a few noise scales of the data: |x_t| <= a |x_0| + b |z|
# with a, b <= 1, and the largest of n Gaussian draws is below ~9 for any feasible n, so ~10 x
# (1 + the data's scale). Approximations that hallucinate likelihood modes go further (up to
# ~400 x in the book: zeta_dps, polar angle, noise 0.01) and must still run; an unstable step
# grows geometrically (1e13 x after one step at noise_std 1e-8). 1e4 x separates the two.
_BLOW_UP = 1e4


def _data_scale(prior) -> float:
    """max |x_0| coordinate of the prior's support (atoms; a mixture's means + 6 sd)."""
    if isinstance(prior, EmpiricalPrior):
        return prior.scale
    if hasattr(prior, "means") and hasattr(prior, "covs"):
        sd = torch.diagonal(prior.covs, dim1=1, dim2=2).clamp_min(0).sqrt()
        return float((prior.means.abs() + 6 * sd).max())
    return math.inf


def _check_particles(x, method, s, k, n_steps, scale):
    """One reduction per step: NaN propagates through max, and so does a blow-up."""
    peak = float(x.abs().max()) if x.numel() else 0.0
    where = f"at t = {s:g} (step {k + 1} of {n_steps})"
    advice = ("try more n_steps or a larger t_min (smaller steps), a larger noise_std, float64 atoms, "
              "or gentler method parameters (e.g. a smaller zeta for zeta_dps)")
    if not math.isfinite(peak):
        raise FloatingPointError(f"sample: method {method!r} produced non-finite particles {where}; {advice}")
    if peak > _BLOW_UP * (1.0 + scale):
        raise FloatingPointError(f"sample: method {method!r} diverged {where}: max |x| = {peak:.3g}, "
                                 f"more than {_BLOW_UP:g} x (1 + {scale:.3g}), the data's scale "
                                 f"(max |atom|); {advice}")


class _Recorder:
    def __init__(self, steps, grid):
        self.steps, self.grid = steps, grid
        self.times, self.xs, self.ms = [], [], []

    def __call__(self, k, x, m):
        if k in self.steps:
            self.times.append(float(self.grid[k]))
            self.xs.append(x.detach().clone())
            self.ms.append(m.detach().clone())

    def stack(self):
        return (torch.tensor(self.times, dtype=torch.float64), torch.stack(self.xs), torch.stack(self.ms))


def _final_tweedie(prior, x, abar):
    return x if abar >= 1.0 else prior.moments(x, abar).mean


def sample(prior, lik, *, method="fsr", n_particles: int = 4096, n_steps: int = 500,
           t_min: float = 1e-2, t_max: float = 1.0, schedule=None, seed: int | None = 0,
           generator: torch.Generator | None = None, record=25, progress: bool = True,
           **method_params) -> Run:
    """Posterior sampling with a likelihood approximation (DESIGN §3).

    VPSchedule (default): start from N(0, I) at t_max and take Euler-Maruyama steps of the
    reverse VP-SDE, x <- x + (beta x / 2 + beta score) dt + sqrt(beta dt) z, on
    linspace(t_max, t_min, n_steps + 1). DDPMSchedule: ancestral DDPM steps
    x <- (x + beta_k score) / sqrt(alpha_k) + sigma_k z down to t = 0.
    score = prior score + the method's likelihood score. Extra keywords go to the method.

    Raises FloatingPointError, naming the method, time and step, when the particles become
    non-finite or leave 1e4 x (1 + max |atom|) — the data's scale, which a stable sampler's
    particles never exceed by more than a few noise scales: an unstable guidance step
    (too large a step, too small a noise_std, float32, or too strong a method parameter).
    """
    if isinstance(method, str) and hasattr(METHODS.get(method), "run_defaults"):
        # A method tied to the run's grid (original_dps: zeta per DDPM step) takes this run's
        # n_steps (and DDPM schedule) from its class's run_defaults.
        method_params = {**METHODS[method].run_defaults(schedule=schedule, n_steps=n_steps), **method_params}
    approx = make_method(method, **method_params)
    n_particles, n_steps, schedule, grid, problem, gen = _setup(
        prior, lik, n_particles=n_particles, n_steps=n_steps, t_min=t_min, t_max=t_max,
        schedule=schedule, seed=seed, generator=generator)
    approx.check(problem)
    scale = _data_scale(prior)
    ddpm = isinstance(schedule, DDPMSchedule)
    rec = _Recorder(_record_steps(record, grid), grid)
    # The FSR itself (not a subclass that may change its guidance) on an empirical prior: the
    # prior Tweedie mean is computed only at recorded steps.
    exact_fsr = type(approx) is FSR and isinstance(prior, EmpiricalPrior)
    dev, dt_ = prior.device, prior.dtype
    x = torch.randn(n_particles, prior.dim, generator=gen, dtype=dt_, device=dev)
    for k in tqdm(range(n_steps), desc=approx.name, disable=not progress, leave=False):
        t, s = float(grid[k]), float(grid[k + 1])
        abar_t, abar_s = schedule.alpha_bar(t), schedule.alpha_bar(s)
        a, b2 = math.sqrt(abar_t), 1.0 - abar_t
        if exact_fsr and k not in rec.steps:
            # prior score + likelihood score = (a E[x_0 | x_t, y] - x_t) / b^2 (DESIGN §8): the
            # conditional Tweedie mean alone, one head, half the work of prior + conditional.
            score = prior.posterior_score(x, abar_t, problem.log_lik)
        else:
            g = approx(problem, x, abar_t)
            rec(k, x, g.tweedie)
            score = (a * g.tweedie - x) / b2 + g.likelihood_score
        z = torch.randn(x.shape, generator=gen, dtype=dt_, device=dev)
        if ddpm:
            alpha = abar_t / abar_s                      # one (possibly strided) DDPM step
            beta = 1.0 - alpha
            sigma2 = (1.0 - abar_s) / (1.0 - abar_t) * beta
            x = (x + beta * score) / math.sqrt(alpha) + math.sqrt(sigma2) * z
        else:
            beta, dt = schedule.beta(t), t - s
            x = x + (0.5 * beta * x + beta * score) * dt + math.sqrt(beta * dt) * z
        _check_particles(x, approx.name, s, k, n_steps, scale)
    rec(n_steps, x, _final_tweedie(prior, x, schedule.alpha_bar(float(grid[-1]))))
    times, traj, tw = rec.stack()
    return Run(x, times, traj, tw, approx.name, approx, schedule, n_steps,
               seed if generator is None else None, dict(approx.params))


def sample_exact(prior: EmpiricalPrior, lik, *, n_particles: int = 4096, n_steps: int = 500,
                 t_min: float = 1e-2, t_max: float = 1.0, schedule=None, seed: int | None = 0,
                 generator: torch.Generator | None = None, record=25, progress: bool = True) -> Run:
    """Exact ancestral reference for the FSR: x_{t_max} ~ p(x_{t_max} | y) exactly, then at each
    step draw i ~ w~(x_t, y) and x_s from the forward bridge q(x_s | x_t, x^(i)).
    Exact at any step size; the same grid and record as `sample`."""
    if not isinstance(prior, EmpiricalPrior):
        raise TypeError(f"prior: sample_exact needs an fsdiag.EmpiricalPrior, got {type(prior).__name__}")
    n_particles, n_steps, schedule, grid, problem, gen = _setup(
        prior, lik, n_particles=n_particles, n_steps=n_steps, t_min=t_min, t_max=t_max,
        schedule=schedule, seed=seed, generator=generator)
    rec = _Recorder(_record_steps(record, grid), grid)
    dev, dt_ = prior.device, prior.dtype
    psi = prior.engine.log_posterior_weights(problem.log_lik).exp()   # exact, float64
    idx = torch.multinomial(psi, n_particles, replacement=True, generator=gen)
    ab = schedule.alpha_bar(float(grid[0]))
    z = torch.randn(n_particles, prior.dim, generator=gen, dtype=dt_, device=dev)
    x = math.sqrt(ab) * prior.atoms_at(idx) + math.sqrt(1 - ab) * z
    for k in tqdm(range(n_steps), desc="exact", disable=not progress, leave=False):
        t, s = float(grid[k]), float(grid[k + 1])
        abar_t, abar_s = schedule.alpha_bar(t), schedule.alpha_bar(s)
        if k in rec.steps:
            rec(k, x, prior.moments(x, abar_t).mean)
        x0 = prior.atoms_at(prior.sample_atoms(x, abar_t, gen, problem.log_lik))
        c_x, c_0, v = bridge(abar_t, abar_s)                  # q(x_s | x_t, x_0) of the VP process
        mean = c_x * x + c_0 * x0
        z = torch.randn(x.shape, generator=gen, dtype=dt_, device=dev)
        x = mean + math.sqrt(v) * z
    rec(n_steps, x, _final_tweedie(prior, x, schedule.alpha_bar(float(grid[-1]))))
    times, traj, tw = rec.stack()
    return Run(x, times, traj, tw, "exact", None, schedule, n_steps,
               seed if generator is None else None, {})
