"""Other projects' samplers in the leaderboard, registered only where those projects are installed
(`pip install fsdiag` without extras has neither, and the leaderboard runs without them):

- "deepinv.<name>" (family "deepinv"): deepinv's posterior samplers (`fsdiag.adapters.deepinv`),
  run unchanged at deepinv's defaults except their length, which the budget calibration sets
  through each sampler's own step parameter (`DEEPINV_STEPS`); the operator is the problem's,
  as a deepinv physics (`fsdiag.adapters.deepinv.problem_physics`: deepinv's `Inpainting` for a
  pixel mask; for DDRM, which needs a singular value decomposition, the SVD of the operator's
  matrix elsewhere). Image problems with a linear operator only; clean samples.
- "diffusers.<name>" (family "diffusers"): diffusers' schedulers (`fsdiag.adapters.diffusers`)
  on the exact epsilon-model, guided by DPS's gradient at the likelihood's own scale
  (`dps_guidance`), clip_sample off; every problem (the DPS gradient exists for every forward
  model); clean samples.

Whether a project is installed is decided by `importlib.util.find_spec` (so that importing the
leaderboard does not import deepinv or diffusers, seconds each); they are imported by the first
cell that runs one of their samplers, and a broken installation fails those cells alone.
"""
from __future__ import annotations

import importlib.util
import warnings

import torch

from .entries import Entry

__all__ = ["DEEPINV_STEPS", "DIFFUSERS_SCHEDULERS", "deepinv_entry", "diffusers_entry", "thirdparty_entries"]

# The parameter that sets each deepinv sampler's number of steps (one denoiser evaluation each,
# SKRock's inner_iter per step) and where it is: the sampler's constructor, or the adapter's
# num_steps (PosteriorDiffusion's solver time grid; DDRM's sigmas = linspace(1, 0, num_steps)).
DEEPINV_STEPS = {"DPS": "num_steps", "DiffPIR": "max_iter", "DDRM": "num_steps", "PD-DPS": "num_steps",
                 "PD-PiGDM": "num_steps", "PD-MM": "num_steps", "ULA": "max_iter", "SKRock": "max_iter"}

DIFFUSERS_SCHEDULERS = ("DDIM", "DDPM", "DPMSolver", "Euler", "Heun")


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def deepinv_entry(name: str) -> Entry:
    """The leaderboard entry of deepinv's sampler `name` (a key of DEEPINV_STEPS)."""
    step_param = DEEPINV_STEPS[name]

    def run(problem, n_steps, n, seed):
        from ..adapters import deepinv as fdi
        from ..denoiser import ExactDenoiser

        fdi.import_deepinv()
        physics, y = fdi.problem_physics(problem, svd=(name == "DDRM"))
        settings = fdi.settings_for(name, "defaults", noise_std=problem.noise_std)
        settings[step_param] = int(n_steps)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)     # deepinv's legacy ULA / SKRock classes
            out = fdi.run(name, ExactDenoiser(problem.prior), physics, y, n=n, seed=seed, **settings)
        return out.samples

    return Entry(f"deepinv.{name}", "deepinv", run, linear_only=True, images_only=True, t_final=None,
                 note=f"deepinv's {name} at its defaults, {step_param} from the budget")


def diffusers_entry(name: str) -> Entry:
    """The leaderboard entry of diffusers' scheduler `name` guided by DPS (`dps_guidance`)."""
    def run(problem, n_steps, n, seed):
        from ..adapters import diffusers as fdf

        scheduler = fdf.make_scheduler(name)
        return fdf.sample(scheduler, problem.prior, n, num_inference_steps=int(n_steps),
                          generator=torch.Generator().manual_seed(seed), guidance=fdf.dps_guidance(problem))

    return Entry(f"diffusers.{name}", "diffusers", run, t_final=None,
                 note=f"diffusers' {name} scheduler (clip_sample off) + DPS at the likelihood's scale")


def thirdparty_entries(*, deepinv: bool | None = None, diffusers: bool | None = None) -> list[Entry]:
    """The entries of the installed projects (None: as installed; True/False forces either)."""
    out = []
    if _installed("deepinv") if deepinv is None else deepinv:
        out += [deepinv_entry(name) for name in DEEPINV_STEPS]
    if _installed("diffusers") if diffusers is None else diffusers:
        out += [diffusers_entry(name) for name in DIFFUSERS_SCHEDULERS]
    return out
