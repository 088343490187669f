"""The exact ancestral sampler of the finite-sample reference (docs/design.md §2.5)."""
from __future__ import annotations

import math

import torch
from tqdm import tqdm

from ..prior import EmpiricalPrior
from .common import Recorder, final_tweedie, setup
from .run import Run
from .steps import bridge

__all__ = ["sample_exact"]


def sample_exact(prior: EmpiricalPrior, lik, *, n_particles: int = 4096, n_steps: int = 500,
                 t_min: float = 1e-2, t_max: float = 1.0, schedule=None, seed: int | None = 0,
                 generator: torch.Generator | None = None, record=25, progress: bool = True) -> Run:
    """Exact ancestral reference for the FSR: x_{t_max} ~ p(x_{t_max} | y) exactly, then at each
    step draw i ~ w~(x_t, y) and x_s from the forward bridge q(x_s | x_t, x^(i)).
    Exact at any step size; the same grid and record as `sample`."""
    if not isinstance(prior, EmpiricalPrior):
        raise TypeError(f"prior: sample_exact needs an fsdiag.EmpiricalPrior, got {type(prior).__name__}")
    n_particles, n_steps, schedule, grid, problem, gen = setup(
        prior, lik, n_particles=n_particles, n_steps=n_steps, t_min=t_min, t_max=t_max,
        schedule=schedule, seed=seed, generator=generator)
    rec = Recorder(record, grid)
    dev, dt_ = prior.device, prior.dtype
    psi = prior.engine.log_posterior_weights(problem.log_lik).exp()   # exact, float64
    idx = torch.multinomial(psi, n_particles, replacement=True, generator=gen)
    ab = schedule.alpha_bar(float(grid[0]))
    z = torch.randn(n_particles, prior.dim, generator=gen, dtype=dt_, device=dev)
    x = math.sqrt(ab) * prior.atoms_at(idx) + math.sqrt(1 - ab) * z
    for k in tqdm(range(n_steps), desc="exact", disable=not progress, leave=False):
        t, s = float(grid[k]), float(grid[k + 1])
        abar_t, abar_s = schedule.alpha_bar(t), schedule.alpha_bar(s)
        if rec.wants(k):
            rec.add(t, x, prior.moments(x, abar_t).mean)
        x0 = prior.atoms_at(prior.sample_atoms(x, abar_t, gen, problem.log_lik))
        c_x, c_0, v = bridge(abar_t, abar_s)                  # q(x_s | x_t, x_0) of the VP process
        mean = c_x * x + c_0 * x0
        z = torch.randn(x.shape, generator=gen, dtype=dt_, device=dev)
        x = mean + math.sqrt(v) * z
    rec.add(float(grid[-1]), x, final_tweedie(prior, x, schedule.alpha_bar(float(grid[-1]))))
    return rec.run(x, "exact", None, schedule, n_steps, seed, generator)
