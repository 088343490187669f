"""diffusers' schedulers on the exact denoiser: the only module that imports diffusers.

diffusers' schedulers (DDIM, DDPM, DPM-Solver++, Euler, Heun) integrate the reverse process of a
model that predicts the noise. Here that model is exact:

- `EpsilonModel(prior, scheduler)`: eps(x_t, t) = (x_t - sqrt(abar_t) D_vp(x_t, abar_t)) /
  sqrt(1 - abar_t), with D_vp the exact denoiser (`fsdiag.ExactDenoiser.vp`) and abar_t read from
  the scheduler's `alphas_cumprod` (fractional timesteps, as Euler's and Heun's, interpolate the
  noise level sqrt((1 - abar) / abar) linearly in t, as those schedulers do). The sigma-space
  schedulers (Euler, Heun) keep x in VE form and hand the model `scale_model_input(x, t)`, the VP
  form, so the same model serves all of them.
- `sample(scheduler, prior, n, ...)`: diffusers' own loop (`set_timesteps`, `init_noise_sigma`,
  `scale_model_input`, `step`), unconditional, or guided: `guidance(x_t, abar, denoised)` returns
  an estimate of grad_x log p(y | x_t) and is added to the score (eps - sqrt(1 - abar) g), for
  schedulers that have no posterior mode of their own. `dps_guidance(problem)` is DPS's.
- `make_scheduler(name)`: the scheduler at diffusers' defaults except `clip_sample=False`:
  DDIM's and DDPM's default `clip_sample=True` silently clips the predicted x0 to [-1, 1], which
  is wrong for any prior whose atoms leave [-1, 1] (`solver_baseline(..., clip_sample=True)`
  measures it).
- `solver_baseline(problem_or_prior, n, budgets)`: the unconditional error, TV to the exact prior
  over modes per scheduler and budget of denoiser evaluations: the error a guided run inherits
  from the solver alone.

`import fsdiag` never imports diffusers (`pip install "fsdiag[diffusers]"`).
"""
from __future__ import annotations

import inspect
import math
import warnings

import torch

from ..denoiser import ExactDenoiser
from ..prior import EmpiricalPrior

__all__ = ["SCHEDULERS", "import_diffusers", "make_scheduler", "EpsilonModel", "dps_guidance", "sample",
           "tv_to_prior", "steps_for_budget", "solver_baseline"]

SCHEDULERS = {"DDIM": "DDIMScheduler", "DDPM": "DDPMScheduler", "DPMSolver": "DPMSolverMultistepScheduler",
              "Euler": "EulerDiscreteScheduler", "Heun": "HeunDiscreteScheduler"}


def import_diffusers():
    """`import diffusers`, with the extra's name in the error when it is missing. Its import pulls
    in tqdm.auto, which in a Jupyter kernel without ipywidgets warns once on stderr (a book page
    would show it): that warning is silenced here."""
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="IProgress not found")
            import diffusers
    except ImportError as err:
        raise ImportError('fsdiag.adapters.diffusers needs diffusers: pip install "fsdiag[diffusers]"') from err
    return diffusers


def make_scheduler(name: str, *, clip_sample: bool = False, **config):
    """diffusers' scheduler `name` (a key of SCHEDULERS) at its defaults, except clip_sample=False
    where the scheduler has that option (DDIM, DDPM); `config` overrides any setting."""
    if name not in SCHEDULERS:
        raise ValueError(f"name: expected one of {list(SCHEDULERS)}, got {name!r}")
    cls = getattr(import_diffusers(), SCHEDULERS[name])
    if "clip_sample" in inspect.signature(cls.__init__).parameters:
        config.setdefault("clip_sample", clip_sample)
    return cls(**config)


class EpsilonModel:
    """The exact noise prediction of an EmpiricalPrior under a diffusers scheduler's schedule."""

    def __init__(self, prior: EmpiricalPrior, scheduler):
        self.denoiser = ExactDenoiser(prior)
        abar = scheduler.alphas_cumprod.to(torch.float64)
        self._sigmas = ((1 - abar) / abar).sqrt()          # VE noise level per training timestep

    def abar(self, t) -> float:
        """abar at timestep t (an integer index, or fractional: sigma interpolated linearly in t)."""
        t = float(t)
        n = self._sigmas.shape[0]
        t = min(max(t, 0.0), n - 1.0)
        lo = int(math.floor(t))
        hi = min(lo + 1, n - 1)
        sigma = float(self._sigmas[lo] + (t - lo) * (self._sigmas[hi] - self._sigmas[lo]))
        return 1.0 / (1.0 + sigma * sigma)

    def eps(self, x_t: torch.Tensor, abar: float, denoised: torch.Tensor) -> torch.Tensor:
        return (x_t - math.sqrt(abar) * denoised) / math.sqrt(1.0 - abar)

    def __call__(self, x_t: torch.Tensor, t) -> torch.Tensor:
        abar = self.abar(t)
        return self.eps(x_t, abar, self.denoiser.vp(x_t, abar))


def dps_guidance(problem, zeta: float | None = None):
    """DPS's estimate of grad_{x_t} log p(y | x_t) through the exact denoiser's VJP:
    -zeta grad ||y - A(D(x_t))|| per sample. zeta=None takes zeta = ||y - A(D)|| / noise_std^2 per
    sample, i.e. the Gaussian likelihood's own gradient -grad ||y - A(D)||^2 / (2 noise_std^2)
    (DPS with Sigma_n^-1); a number is DPS's fixed step. Returns guidance(x_t, abar, denoised)
    for `sample` (denoised = D(x_t), differentiable in x_t)."""
    lik = problem.lik if hasattr(problem, "lik") else problem

    def guidance(x_t, abar, denoised):
        d0 = denoised.detach()
        r = lik.residual(d0)                                               # y - A(D), (B, m)
        if zeta is None:
            v = r / lik.noise_var.to(dtype=r.dtype, device=r.device)
        else:
            v = zeta * r / r.norm(dim=1, keepdim=True).clamp_min(1e-30)
        v = lik.forward.vjp(d0, v)                                         # J_A^T v
        (g,) = torch.autograd.grad(denoised, x_t, grad_outputs=v)          # J_D^T J_A^T v
        return g
    return guidance


def _step_kwargs(scheduler, generator) -> dict:
    return {"generator": generator} if "generator" in inspect.signature(scheduler.step).parameters else {}


def sample(scheduler, prior: EmpiricalPrior, n: int, *, num_inference_steps: int, generator=None, guidance=None,
           dtype=torch.float64) -> torch.Tensor:
    """n samples (n, d) of `scheduler`'s reverse loop on the exact epsilon-model of `prior`, clean
    (the loop runs to the end of the scheduler's grid); with `guidance(x_t, abar, denoised)` (an
    estimate of grad log p(y | x_t), e.g. `dps_guidance`) added to the score."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n: expected a positive integer, got {n!r}")
    model = EpsilonModel(prior, scheduler)
    scheduler.set_timesteps(num_inference_steps)
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    x = torch.randn(n, prior.dim, generator=gen, dtype=dtype) * float(scheduler.init_noise_sigma)
    step_kwargs = _step_kwargs(scheduler, gen)
    for t in scheduler.timesteps:
        x_in = scheduler.scale_model_input(x, t)
        abar = model.abar(t)
        if guidance is None:
            with torch.no_grad():
                eps = model.eps(x_in, abar, model.denoiser.vp(x_in, abar))
        else:
            x_req = x_in.detach().requires_grad_(True)
            denoised = model.denoiser.vp(x_req, abar)
            g = guidance(x_req, abar, denoised)
            eps = model.eps(x_in, abar, denoised.detach()) - math.sqrt(1.0 - abar) * g
        x = scheduler.step(eps.detach(), t, x, **step_kwargs).prev_sample
    return x.detach()


def tv_to_prior(samples: torch.Tensor, prior: EmpiricalPrior) -> float:
    """TV between the samples' modes (nearest atom's label, else the atom) and the prior's."""
    x = samples.reshape(samples.shape[0], prior.dim).to(dtype=prior.dtype, device=prior.device)
    idx = prior.nearest_atoms(x).cpu()
    w = prior.weights.to(torch.float64).cpu()
    labels = prior.labels.cpu() if getattr(prior, "labels", None) is not None else torch.arange(prior.n_atoms)
    _, modes = torch.unique(labels, return_inverse=True)
    k = int(modes.max()) + 1
    exact = torch.zeros(k, dtype=torch.float64).index_add_(0, modes, w)
    got = torch.bincount(modes[idx], minlength=k).to(torch.float64) / x.shape[0]
    return float(0.5 * (got - exact / exact.sum()).abs().sum())


def steps_for_budget(name: str, prior: EmpiricalPrior, budget: int, **config) -> int:
    """num_inference_steps whose unconditional run spends at most `budget` denoiser evaluations
    per particle (counted at the engine for 2 and 4 steps; Heun takes two per step)."""
    from ..sampling import count_evaluations

    def cost(steps):
        with count_evaluations(prior) as c:
            sample(make_scheduler(name, **config), prior, 2, num_inference_steps=steps)
        return c.total / 2
    c2, c4 = cost(2), cost(4)
    per_step = max((c4 - c2) / 2, 1e-9)
    return max(1, math.floor((budget - max(c2 - 2 * per_step, 0.0)) / per_step + 1e-9))


def solver_baseline(problem_or_prior, n: int, budgets, *, schedulers=None, seed: int = 0, **config) -> dict:
    """The solver's own error: {scheduler: {budget: TV to the exact PRIOR over modes}} of n
    unconditional samples at each budget of denoiser evaluations per particle. `config` goes to
    every scheduler (e.g. clip_sample=True to see what diffusers' default costs)."""
    prior = getattr(problem_or_prior, "prior", problem_or_prior)
    if not isinstance(prior, EmpiricalPrior):
        raise TypeError(f"problem_or_prior: expected an fsdiag.Problem or EmpiricalPrior, got "
                        f"{type(problem_or_prior).__name__}")
    out = {}
    for name in (list(SCHEDULERS) if schedulers is None else schedulers):
        out[name] = {}
        for budget in budgets:
            steps = steps_for_budget(name, prior, budget, **config)
            x = sample(make_scheduler(name, **config), prior, n, num_inference_steps=steps,
                       generator=torch.Generator().manual_seed(seed))
            out[name][budget] = tv_to_prior(x, prior)
    return out
