"""Sequential Monte Carlo posterior sampling: the twisted diffusion sampler (TDS, Wu et al. 2023).

Particles move with the DPS-guided reverse kernel q(x_s | x_t, y) = N(mu + v grad log p~_t(y | x_t), v)
(mu, v the paper's Euler-Maruyama step of the prior's reverse VP-SDE, docs/design.md §3.3), and are reweighted by
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

import math

import torch
from tqdm import tqdm

from ..forward import LinearForwardModel
from ..problems import Problem
from .common import Recorder, check_particles, setup
from .registry import register_sampler
from .resampling import check_smc_args, effective_sample_size, resample, resample_if_degenerate
from .run import Run
from .steps import score_from_mean, vp_euler_maruyama

__all__ = ["tds"]

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
            self.A = problem.forward.dense(problem.dim, problem.dtype, problem.device)

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


@register_sampler
def tds(prior, lik, *, n_particles: int = 1024, n_steps: int = 500, t_min: float = 1e-2, t_max: float = 1.0,
        schedule=None, seed: int | None = 0, generator: torch.Generator | None = None, record=25,
        progress: bool = True, r2: str = "paper", ess_threshold: float = 0.5,
        resampling: str = "systematic") -> Run:
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
    threshold = check_smc_args(ess_threshold, resampling)
    n, n_steps, schedule, grid, problem, gen = setup(
        prior, lik, n_particles=n_particles, n_steps=n_steps, t_min=t_min, t_max=t_max, schedule=schedule,
        seed=seed, generator=generator, vp_only=True, needs_vjp=True)
    rec = Recorder(record, grid)
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
    ess, resampled = [], []
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
        if rec.wants(k):
            view = resample(log_w, view_gen, resampling)
            rec.add(t, x[view], m[view])
        idx, ess_k = resample_if_degenerate(log_w, threshold, gen, resampling)
        ess.append(ess_k)
        if idx is not None:
            x, g, m, log_twist = x[idx], g[idx], m[idx], log_twist[idx]
            log_w = torch.zeros_like(log_w)
            resampled.append(k)
        # Propose with the guided Euler-Maruyama step; the prior step has the same variance v.
        s = float(grid[k + 1])
        prior_mean, v = vp_euler_maruyama(schedule, x, score_from_mean(x, m, abar), t, s)
        z = torch.randn(x.shape, generator=gen, dtype=dt_, device=dev)
        x = prior_mean + v * g + math.sqrt(v) * z
        # log p(x_s | x_t) - log q(x_s | x_t, y) for x_s = mu + v g + sqrt(v) z.
        log_incr = (-(math.sqrt(v) * (z * g).sum(1)) - 0.5 * v * (g * g).sum(1)).to(torch.float64)
        log_twist_prev = log_twist
        check_particles(x, "tds", s, k, n_steps)
    # Final correction with the true likelihood at the denoised particles.
    log_true = lik.log_prob(m).to(torch.float64)
    log_evidence += float(torch.logsumexp(log_w + log_true - log_twist, 0) - torch.logsumexp(log_w, 0))
    log_w = log_w + log_true - log_twist
    ess.append(effective_sample_size(log_w))
    idx = resample(log_w, gen, resampling)
    x_out, m_out = x[idx], m[idx]
    rec.add(float(grid[-1]), x_out, m_out)
    info = {"ess": ess, "resampled": resampled, "log_weights": log_w.cpu(), "log_evidence": log_evidence,
            "ess_threshold": threshold, "resampling": resampling}
    return rec.run(x_out, "tds", None, schedule, n_steps, seed, generator,
                   {"r2": r2, "ess_threshold": threshold, "resampling": resampling}, info)
