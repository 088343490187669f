"""Sequential Monte Carlo posterior sampling: the twisted diffusion sampler (TDS, Wu et al. 2023).

Particles move with the DPS-guided reverse kernel q(x_s | x_t, y) = N(mu + v grad log p~_t(y | x_t), v)
(mu, v the paper's Euler-Maruyama step of the prior's reverse VP-SDE, DESIGN §3), and are reweighted by
  w <- w p(x_s | x_t) p~_s(y | x_s) / (q(x_s | x_t, y) p~_t(y | x_t)),
with the twisting function p~_t(y | x_t) = N(y; A(m(x_t)), Sigma_n + r_t^2 J_A J_A^T),
r_t^2 = (1 - abar)/abar by default (TDS's plug-in p(y | m(x_t)) for r2="none"), started from
w = p~_1(y | x_1) at x_1 ~ N(0, I) and finished with the true likelihood,
w <- w p(y | m(x_{t_min})) / p~_{t_min}(y | x_{t_min}). Resampling (systematic or multinomial) when the effective sample size falls below ess_threshold * n. As n grows the weighted
particles converge to the target p_{t_min}(x) p(y | m(x)) of the discretised prior chain, which for a
small t_min puts the exact posterior mass on each atom. The prior is used only through its denoiser
(`moments`) and denoiser VJP; the returned particles are resampled to equal weights.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from ._checks import check_int, check_real, make_generator
from ._threads import threads_for
from .forward import LinearForwardModel
from .methods import Problem
from .samplers import Run
from .schedules import VPSchedule, check_time

__all__ = ["RunWithInfo", "tds", "effective_sample_size", "normalise", "resample", "resample_if_degenerate",
           "systematic_resample", "multinomial_resample", "SAMPLERS", "register_sampler", "CountingPrior"]

# Samplers beyond fsdiag.sample's Euler-Maruyama loop (SMC, DAPS), by name; each is a function
# f(prior, lik, *, n_particles, n_steps, t_min, t_max, schedule, seed, generator, record, progress, ...)
# returning a RunWithInfo. The test-suite runs every registered one (tests/test_smc.py).
SAMPLERS: dict = {}


def register_sampler(fn):
    """Add a sampler function to `SAMPLERS` under its __name__; it runs on one intra-op thread when the
    problem is small (fsdiag._threads: per-call overhead dominates there, and extra threads only add
    synchronisation — a 1024-particle logsumexp took ~25 ms with 2 threads on a loaded machine)."""
    if not callable(fn):
        raise TypeError("register_sampler: expected a function")

    @functools.wraps(fn)
    def run(prior, lik, *args, **kwargs):
        n = kwargs.get("n_particles", 1024)
        work = (n if isinstance(n, int) else 1) * getattr(prior, "dim", 1) * getattr(prior, "n_atoms", 1)
        with threads_for(work):
            return fn(prior, lik, *args, **kwargs)

    SAMPLERS[fn.__name__] = run
    return run


@dataclass
class RunWithInfo(Run):
    """An fsdiag.Run with per-step diagnostics in `info` (ESS history, resampling steps, ...)."""

    info: dict = field(default_factory=dict)


def _rows(name: str, out) -> int:
    """Particles through one pass, read off a kernel's result: rows of the Tweedie mean (`moments`
    returns Moments) or of the product, times k for `cov_matvec` with k vectors per row (B, k, d)."""
    t = out.mean if hasattr(out, "mean") and isinstance(getattr(out, "mean"), torch.Tensor) else out
    rows = int(t.shape[0])
    if name == "cov_matvec" and t.ndim == 3:
        rows *= int(t.shape[1])                      # k products per particle (TMPD's C A^T)
    return rows


class CountingPrior:
    """A prior that counts its denoiser passes: every attribute is the wrapped prior's, but calls to
    `moments`/`denoise` (a Tweedie mean) and `denoiser_vjp`/`cov_matvec` (a Jacobian pass) add the
    number of query rows to `counts` (times k for a covariance product with k vectors per row). For
    equal-compute comparisons: a denoiser *evaluation* is one particle through one pass (a network's
    forward, or one backward for a VJP)."""

    _COUNTED = ("moments", "denoise", "denoiser_vjp", "cov_matvec")

    def __init__(self, prior):
        if not hasattr(prior, "moments"):
            raise TypeError(f"prior: expected an fsdiag.EmpiricalPrior or a testbed prior, got {type(prior).__name__}")
        self.prior = prior
        self.counts = dict.fromkeys(self._COUNTED, 0)

    def __getattr__(self, name):
        attr = getattr(self.prior, name)
        if name in CountingPrior._COUNTED:
            def counted(x, *args, **kwargs):
                # Counted from the answer, not the arguments: the wrapped prior accepts lists, numpy
                # arrays, ... (which have no .shape), and a call it refuses is no denoiser pass.
                out = attr(x, *args, **kwargs)
                self.counts[name] += _rows(name, out)
                return out
            return counted
        return attr

    @property
    def tweedie_evaluations(self) -> int:
        """Particles x Tweedie-mean passes."""
        return self.counts["moments"] + self.counts["denoise"]

    @property
    def evaluations(self) -> int:
        """Particles x all denoiser passes (Tweedie means and Jacobian products)."""
        return sum(self.counts.values())

    def reset(self) -> None:
        self.counts = dict.fromkeys(self._COUNTED, 0)


# ------------------------------------------------------------------ weights and resampling
def normalise(log_w: torch.Tensor) -> torch.Tensor:
    """Normalised weights exp(log_w) / sum exp(log_w), in float64."""
    return torch.softmax(log_w.to(torch.float64), 0)


def effective_sample_size(log_w: torch.Tensor) -> float:
    """ESS = 1 / sum_i w_i^2 of the normalised weights (n for equal weights, 1 for one particle)."""
    w = normalise(log_w)
    return float(1.0 / (w * w).sum())


def systematic_resample(weights: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """n ancestor indices by systematic resampling: one uniform u, positions (u + k) / n, k < n.
    Unbiased: E[count_i] = n w_i, and |count_i - n w_i| < 1."""
    w = weights.to(torch.float64)
    cum = torch.cumsum(w / w.sum(), 0)
    cum[-1] = 1.0
    u = torch.rand((), generator=generator, dtype=torch.float64, device=w.device)
    pos = (u + torch.arange(n, dtype=torch.float64, device=w.device)) / n
    return torch.searchsorted(cum, pos, right=True).clamp_(max=w.shape[0] - 1)


def multinomial_resample(weights: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """n ancestor indices drawn independently from the weights."""
    return torch.multinomial(weights.to(torch.float64), n, replacement=True, generator=generator)


RESAMPLING_SCHEMES = {"systematic": systematic_resample, "multinomial": multinomial_resample}


def resample(log_w: torch.Tensor, generator: torch.Generator, scheme: str = "systematic") -> torch.Tensor:
    """Ancestor indices, as many as particles, from log-weights."""
    if scheme not in RESAMPLING_SCHEMES:
        raise ValueError(f"resampling: expected one of {sorted(RESAMPLING_SCHEMES)}, got {scheme!r}")
    return RESAMPLING_SCHEMES[scheme](normalise(log_w), log_w.shape[0], generator)


def resample_if_degenerate(log_w: torch.Tensor, threshold: float, generator: torch.Generator,
                           scheme: str = "systematic") -> tuple[torch.Tensor | None, float]:
    """(ancestor indices, ESS) when ESS < threshold * n, else (None, ESS)."""
    ess = effective_sample_size(log_w)
    if ess < threshold * log_w.shape[0]:
        return resample(log_w, generator, scheme), ess
    return None, ess


# ------------------------------------------------------------------ shared sampler plumbing
def _record_steps(record, n_steps: int) -> set[int]:
    """As fsdiag.sample: an int (that many grid points, evenly spaced), times are not supported
    here; None / 0 records the final time only. The final index is always recorded."""
    if record is None:
        return {n_steps}
    if isinstance(record, (bool, np.bool_)) or not isinstance(record, (int, np.integer)):
        raise TypeError(f"record: expected an int (the number of recorded times), got {record!r}")
    record = check_int(record, "record", minimum=0)
    if record == 0:
        return {n_steps}
    return {round(i) for i in torch.linspace(0, n_steps, min(record, n_steps + 1)).tolist()} | {n_steps}


def setup_sampler(prior, lik, *, n_particles, n_steps, t_min, t_max, schedule, seed, generator, record):
    """Validated arguments of a VP-schedule sampler: (n, n_steps, schedule, grid, problem, gen, steps)."""
    if not (hasattr(prior, "moments") and hasattr(prior, "denoiser_vjp")):
        raise TypeError(f"prior: expected an fsdiag.EmpiricalPrior or a testbed prior, got {type(prior).__name__}")
    n_particles = check_int(n_particles, "n_particles")
    n_steps = check_int(n_steps, "n_steps")
    t_min, t_max = check_time(t_min, "t_min"), check_time(t_max, "t_max")
    schedule = VPSchedule() if schedule is None else schedule
    if not isinstance(schedule, VPSchedule):
        raise TypeError(f"schedule: expected an fsdiag.VPSchedule (this sampler runs on the VP-SDE), "
                        f"got {type(schedule).__name__}")
    grid = schedule.time_grid(n_steps, t_min, t_max)
    problem = Problem.build(prior, lik)
    gen = make_generator(seed, generator, prior.device)
    return n_particles, n_steps, schedule, grid, problem, gen, _record_steps(record, n_steps)


def check_particles(x: torch.Tensor, who: str, t: float) -> None:
    if not bool(torch.isfinite(x).all()):
        raise FloatingPointError(f"{who}: non-finite particles at t = {t:g}; try more n_steps, a larger "
                                 "t_min or float64")


# ------------------------------------------------------------------ the twisting function
_R2 = ("none", "paper", "song")


class _Twist:
    """log p~_t(y | x_t) and its gradient (the DPS guidance of the proposal) for a batch.

    p~_t(y | x_t) = N(y; A(m), Sigma_n + r_t^2 J_A J_A^T), J_A the Jacobian of A at m (A itself for a
    linear model). The guidance ignores the derivative of the covariance: any proposal is valid,
    the weights use p~ exactly as defined."""

    def __init__(self, problem: Problem, r2: str):
        self.problem, self.r2 = problem, r2
        self.nv = problem.noise_var()
        self.linear = isinstance(problem.lik.forward, LinearForwardModel)
        if r2 != "none" and self.linear:
            self.A = problem.matrix()

    def __call__(self, x: torch.Tensor, abar: float):
        """(log p~_t(y | x), grad_x log p~_t(y | x), m(x))."""
        prior, lik = self.problem.prior, self.problem.lik
        mo = prior.moments(x, abar)
        r = lik.residual(mo.mean)                                            # y - A(m), (n, k)
        k = r.shape[1]
        if self.r2 == "none":                                                # p(y | m(x_t)): TDS's plug-in
            u = r / self.nv
            logdet = torch.log(self.nv).sum()
            seed = lik.forward.vjp(mo.mean, u)
        else:
            r2 = (1 - abar) / abar if self.r2 == "paper" else 1 - abar
            if self.linear:
                L = torch.linalg.cholesky(r2 * (self.A @ self.A.T) + torch.diag(self.nv))
                u = torch.cholesky_solve(r.T, L).T
                logdet = 2 * torch.log(torch.diagonal(L)).sum()
                seed = u @ self.A
            else:
                J = lik.forward.jacobian(mo.mean)                            # (n, k, d)
                L = torch.linalg.cholesky(r2 * J @ J.transpose(1, 2) + torch.diag(self.nv))
                u = torch.cholesky_solve(r.unsqueeze(-1), L).squeeze(-1)
                logdet = 2 * torch.log(torch.diagonal(L, dim1=1, dim2=2)).sum(1)
                seed = lik.forward.vjp(mo.mean, u)
        logp = -0.5 * (r * u).sum(1) - 0.5 * logdet - 0.5 * k * math.log(2 * math.pi)
        return logp.to(torch.float64), prior.denoiser_vjp(x, abar, seed, moments=mo), mo.mean


# ------------------------------------------------------------------ the sampler
@register_sampler
def tds(prior, lik, *, n_particles: int = 1024, n_steps: int = 500, t_min: float = 1e-2, t_max: float = 1.0,
        schedule=None, seed: int | None = 0, generator: torch.Generator | None = None, record=25,
        progress: bool = True, r2: str = "paper", ess_threshold: float = 0.5,
        resampling: str = "systematic") -> RunWithInfo:
    """Twisted diffusion sampler (Wu et al. 2023) on the paper's VP grid linspace(t_max, t_min, n_steps + 1).

    r2: the twisting function's extra variance r_t^2 J_A J_A^T: "paper" ((1 - abar)/abar, default),
    "song" (1 - abar) or "none" (the plug-in p(y | m(x_t)): valid, but its overconfidence at high
    noise makes the weights degenerate — log p(y) estimates ~3 nats low at 512 particles on
    chapter 8's mixture, against ~0.05 for "paper"). Resamples when
    ESS < ess_threshold * n_particles ("systematic" or "multinomial"), and once at the end so that the
    samples carry equal weights. info: "ess" (before each resampling decision, one per grid time, and
    after the final correction), "resampled" (grid indices where it resampled), "log_weights" (final,
    before the last resampling), "log_evidence" (the SMC estimate of log p(y), up to the EM chain).
    trajectory[r] holds the particles at recorded times, resampled by their weights at that time.
    """
    if not isinstance(r2, str) or r2 not in _R2:
        raise ValueError(f"r2: expected one of {list(_R2)}, got {r2!r}")
    threshold = check_real(ess_threshold, "ess_threshold")
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"ess_threshold: expected a fraction in [0, 1], got {ess_threshold!r}")
    if not isinstance(resampling, str) or resampling not in RESAMPLING_SCHEMES:
        raise ValueError(f"resampling: expected one of {sorted(RESAMPLING_SCHEMES)}, got {resampling!r}")
    n, n_steps, schedule, grid, problem, gen, rec_steps = setup_sampler(
        prior, lik, n_particles=n_particles, n_steps=n_steps, t_min=t_min, t_max=t_max, schedule=schedule,
        seed=seed, generator=generator, record=record)
    twist = _Twist(problem, r2)
    dev, dt_ = prior.device, prior.dtype
    x = torch.randn(n, prior.dim, generator=gen, dtype=dt_, device=dev)
    # The recorded views draw from their own generator, so `record` never changes the samples.
    view_gen = torch.Generator(device=dev)
    view_gen.manual_seed(int(torch.randint(0, 2 ** 62, (1,), generator=gen, device=dev)))
    log_w = torch.zeros(n, dtype=torch.float64, device=dev)
    log_incr = torch.zeros(n, dtype=torch.float64, device=dev)   # log p/q of the last move
    log_twist_prev = torch.zeros(n, dtype=torch.float64, device=dev)
    log_evidence = 0.0
    ess, resampled, times, xs, ms = [], [], [], [], []
    for k in tqdm(range(n_steps + 1), desc="tds", disable=not progress, leave=False):
        t = float(grid[k])
        abar = schedule.alpha_bar(t)
        log_twist, g, m = twist(x, abar)
        # Incremental weight p(x_t | x_prev) p~_t(y | x_t) / (q(x_t | x_prev, y) p~_prev(y | x_prev)).
        incr = log_incr + log_twist - log_twist_prev
        log_evidence += float(torch.logsumexp(log_w + incr, 0) - torch.logsumexp(log_w, 0))
        log_w = log_w + incr
        if k == n_steps:
            break
        if k in rec_steps:
            view = resample(log_w, view_gen, resampling)
            times.append(t), xs.append(x[view].clone()), ms.append(m[view].clone())
        idx, ess_k = resample_if_degenerate(log_w, threshold, gen, resampling)
        ess.append(ess_k)
        if idx is not None:
            x, g, m, log_twist = x[idx], g[idx], m[idx], log_twist[idx]
            log_w = torch.zeros_like(log_w)
            resampled.append(k)
        # Propose with the guided Euler-Maruyama step; the prior step has the same variance v.
        s = float(grid[k + 1])
        beta, dt = schedule.beta(t), t - s
        a, b2 = math.sqrt(abar), 1.0 - abar
        v = beta * dt
        prior_mean = x + (0.5 * beta * x + beta * (a * m - x) / b2) * dt
        z = torch.randn(x.shape, generator=gen, dtype=dt_, device=dev)
        x = prior_mean + v * g + math.sqrt(v) * z
        # log p(x_s | x_t) - log q(x_s | x_t, y) for x_s = mu + v g + sqrt(v) z.
        log_incr = (-(math.sqrt(v) * (z * g).sum(1)) - 0.5 * v * (g * g).sum(1)).to(torch.float64)
        log_twist_prev = log_twist
        check_particles(x, "tds", s)
    # Final correction with the true likelihood at the denoised particles.
    log_true = lik.log_prob(m).to(torch.float64)
    log_evidence += float(torch.logsumexp(log_w + log_true - log_twist, 0) - torch.logsumexp(log_w, 0))
    log_w = log_w + log_true - log_twist
    ess.append(effective_sample_size(log_w))
    idx = resample(log_w, gen, resampling)
    x_out, m_out = x[idx], m[idx]
    times.append(float(grid[-1])), xs.append(x_out.clone()), ms.append(m_out.clone())
    info = {"ess": ess, "resampled": resampled, "log_weights": log_w.cpu(), "log_evidence": log_evidence,
            "ess_threshold": threshold, "resampling": resampling}
    return RunWithInfo(x_out, torch.tensor(times, dtype=torch.float64), torch.stack(xs), torch.stack(ms),
                       "tds", None, schedule, n_steps, seed if generator is None else None,
                       {"r2": r2, "ess_threshold": threshold, "resampling": resampling}, info)
