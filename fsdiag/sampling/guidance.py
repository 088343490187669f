"""Guided sampling: the reverse VP-SDE (or DDPM) with a likelihood approximation's score added to
the prior's (docs/design.md §3.3, §4). Every approximation in `fsdiag.METHODS` runs through this loop."""
from __future__ import annotations

import math

import torch
from tqdm import tqdm

from .._threads import threads_for
from ..methods import FSR, METHODS, make_method
from ..prior import EmpiricalPrior
from ..schedules import DDPMSchedule
from .common import Recorder, check_particles, data_scale, final_tweedie, setup
from .run import Run
from .steps import ddpm_ancestral, score_from_mean, vp_euler_maruyama

__all__ = ["sample"]


def sample(prior, lik, *, method="fsr", n_particles: int = 4096, n_steps: int = 500,
           t_min: float = 1e-2, t_max: float = 1.0, schedule=None, seed: int | None = 0,
           generator: torch.Generator | None = None, record=25, progress: bool = True,
           **method_params) -> Run:
    """Posterior sampling with a likelihood approximation (docs/design.md §3.3, §4).

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
    n_particles, n_steps, schedule, grid, problem, gen = setup(
        prior, lik, n_particles=n_particles, n_steps=n_steps, t_min=t_min, t_max=t_max,
        schedule=schedule, seed=seed, generator=generator)
    approx.check(problem)
    scale = data_scale(prior)
    ddpm = isinstance(schedule, DDPMSchedule)
    rec = Recorder(record, grid)
    # The FSR itself (not a subclass that may change its guidance) on an empirical prior: the
    # prior Tweedie mean is computed only at recorded steps.
    exact_fsr = type(approx) is FSR and isinstance(prior, EmpiricalPrior)
    dev, dt_ = prior.device, prior.dtype
    x = torch.randn(n_particles, prior.dim, generator=gen, dtype=dt_, device=dev)
    for k in tqdm(range(n_steps), desc=approx.name, disable=not progress, leave=False):
        t, s = float(grid[k]), float(grid[k + 1])
        abar_t, abar_s = schedule.alpha_bar(t), schedule.alpha_bar(s)
        if exact_fsr and not rec.wants(k):
            # prior score + likelihood score = (a E[x_0 | x_t, y] - x_t) / b^2 (docs/design.md §2.3):
            # the conditional Tweedie mean alone, one head, half the work of prior + conditional.
            # Its (B, d) ops at one intra-op thread; the reduction over the atoms gets the
            # caller's threads back (fsdiag._threads.threads_for).
            with threads_for(x.numel(), dev):
                score = prior.posterior_score(x, abar_t, problem.log_lik)
        else:
            g = approx(problem, x, abar_t)
            if rec.wants(k):
                rec.add(t, x, g.tweedie)
            score = score_from_mean(x, g.tweedie, abar_t) + g.likelihood_score
        with threads_for(x.numel(), dev):     # the step's (B, d) updates: small ops
            z = torch.randn(x.shape, generator=gen, dtype=dt_, device=dev)
            mean, var = (ddpm_ancestral(x, score, abar_t, abar_s) if ddpm
                         else vp_euler_maruyama(schedule, x, score, t, s))
            x = mean + math.sqrt(var) * z
            check_particles(x, f"sample: method {approx.name!r}", s, k, n_steps, scale)
    rec.add(float(grid[-1]), x, final_tweedie(prior, x, schedule.alpha_bar(float(grid[-1]))))
    return rec.run(x, approx.name, approx, schedule, n_steps, seed, generator, approx.params)
