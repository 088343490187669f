"""The samplers the leaderboard ranks (`ENTRIES`), each run through one harness at a budget of
denoiser evaluations per particle.

An `Entry` runs a sampler on a `fsdiag.Problem`: `run(problem, n_steps, n, seed) -> samples (n, d)`.
Its step count is calibrated to the budget (`steps_for_budget`: evaluations counted at the
engine, `fsdiag.sampling.count_evaluations`, for two short runs, then solved for the step count
that spends the budget). A user's sampler (`--add file.py:fn` or the `fsdiag.samplers` entry-point
group) has the signature of `fsdiag diagnose`'s, fn(denoiser, problem, n_samples, generator), plus
an optional `budget` keyword; it spends the budget itself, and the evaluations it used are counted.
"""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass

import torch

from ..registry import Registry
from ..sampling import SAMPLERS, count_evaluations, sample

__all__ = ["Entry", "ENTRIES", "user_entry", "installed_entries", "steps_for_budget", "ENTRY_POINT_GROUP"]

ENTRY_POINT_GROUP = "fsdiag.samplers"


@dataclass(frozen=True)
class Entry:
    """name; family ("control", "fsdiag", "paper", "user", "deepinv", "diffusers"); run(problem,
    n_steps, n, seed) -> (n, d) samples; linear_only: it needs a linear forward model;
    calibrated: n_steps is solved from the budget (else run gets n_steps=None and `budget` is
    passed to the user's function); t_final: the time its samples are at (fsdiag's samplers stop
    at t_min = 0.01; the judge assigns them at that time), None for clean samples (a user's
    sampler run down to sigma = 0); images_only: it needs an image problem (image_shape set;
    deepinv's samplers take (B, C, H, W) images)."""

    name: str
    family: str
    run: object
    linear_only: bool = False
    calibrated: bool = True
    note: str = ""
    t_final: float | None = 1e-2
    images_only: bool = False


def _guided(method: str, **params):
    def run(problem, n_steps, n, seed):
        return sample(problem.prior, problem.lik, method=method, n_particles=n, n_steps=n_steps, seed=seed,
                      record=0, progress=False, **params).samples
    return run


def _registered(name: str, **params):
    def run(problem, n_steps, n, seed):
        return SAMPLERS[name](problem.prior, problem.lik, n_particles=n, n_steps=n_steps, seed=seed,
                              record=0, progress=False, **params).samples
    return run


ENTRIES = Registry("leaderboard sampler")
for _entry in (
        Entry("exact", "control", _registered("exact"), note="the exact ancestral sampler: must sit at the floor"),
        Entry("sigma_dps", "fsdiag", _guided("sigma_dps"), note="DPS with the likelihood's Sigma_n^-1 (fsdiag)"),
        Entry("zeta_dps", "fsdiag", _guided("zeta_dps"), note="DPS as published: step 2 zeta / ||y - A(m)||"),
        Entry("original_dps", "fsdiag", _guided("original_dps"), note="DPS as in its original DDPM code"),
        Entry("pigdm", "fsdiag", _guided("pigdm", r2="paper"), linear_only=True,
              note="PiGDM, r_t^2 = (1 - abar) / abar (the paper's code)"),
        Entry("pigdm_song", "fsdiag", _guided("pigdm", r2="song"), linear_only=True,
              note="PiGDM, r_t^2 = 1 - abar (Song et al.)"),
        Entry("tmpd", "fsdiag", _guided("tmpd"), linear_only=True, note="TMPD: the denoiser covariance"),
        Entry("tds", "fsdiag", _registered("tds"), note="twisted diffusion sampler (SMC)"),
        Entry("mcgdiff", "fsdiag", _registered("mcgdiff"), linear_only=True, note="MCGdiff (SMC, linear)"),
        Entry("daps", "fsdiag", _registered("daps"), note="DAPS at its paper defaults"),
        Entry("reddiff", "papers", _registered("reddiff"), t_final=None,
              note="RED-diff (Mardani et al. 2023): variational x0, the denoiser as regulariser"),
        Entry("ddnm", "papers", _registered("ddnm"), linear_only=True, t_final=None,
              note="DDNM+ (Wang et al. 2023): range-null-space decomposition, noise-aware"),
        Entry("pnpdm", "papers", _registered("pnpdm", n_prior_steps=10), linear_only=True, t_final=None,
              note="PnP-DM (Wu et al. 2024): split Gibbs, 10 diffusion steps per prior step (the budget "
                   "buys Gibbs iterations)"),
        Entry("lgd_mc", "papers", _registered("lgd_mc"),
              note="LGD-MC (Song et al. 2023): Monte Carlo loss guidance"),
):
    ENTRIES.register(_entry, name=_entry.name)


def _register_thirdparty():
    # deepinv's samplers and diffusers' schedulers, when those packages are installed (thirdparty).
    from .thirdparty import thirdparty_entries

    for entry in thirdparty_entries():
        ENTRIES.register(entry, name=entry.name)


def user_entry(fn, name: str) -> Entry:
    """An entry for a user's sampler fn(denoiser, problem, n_samples, generator[, budget])."""
    from ..denoiser import ExactDenoiser

    try:
        takes_budget = "budget" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        takes_budget = False

    def run(problem, n_steps, n, seed, budget=None):
        gen = torch.Generator().manual_seed(seed)
        kwargs = {"budget": budget} if takes_budget else {}
        out = fn(ExactDenoiser(problem.prior), problem, n, gen, **kwargs)
        return out.detach() if isinstance(out, torch.Tensor) else out

    return Entry(name, "user", run, calibrated=False, t_final=None,
                 note="your sampler" + ("" if takes_budget else " (takes no budget: run as it is)"))


def installed_entries() -> list[Entry]:
    """Entries of installed packages that declare samplers in the `fsdiag.samplers` group."""
    from importlib.metadata import entry_points

    out = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        out.append(user_entry(ep.load(), ep.name))
    return out


def steps_for_budget(entry: Entry, problem, budget: int) -> tuple[int, float]:
    """(n_steps, evaluations per particle per step) that spend at most `budget` evaluations per
    particle: two probe runs (2 and 4 steps, 2 particles) give the cost's constant and slope;
    n_steps = 0 when even one step costs more than the budget (TMPD's m covariance products)."""
    def cost(n_steps):
        with count_evaluations(problem.prior) as c:
            entry.run(problem, n_steps, 2, 0)
        return c.total / 2
    c2, c4 = cost(2), cost(4)
    per_step = max((c4 - c2) / 2, 1e-9)
    fixed = max(c2 - 2 * per_step, 0.0)
    return max(0, math.floor((budget - fixed) / per_step + 1e-9)), per_step


_register_thirdparty()
