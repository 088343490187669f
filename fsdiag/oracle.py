"""The test oracle: dense autograd versions of the FSR's quantities, written the way the paper's
code computes them (not "the reference": in the paper that word means the FSR itself).

It builds the full (batch x N x d) difference tensor and differentiates exact
log-densities with autograd. It is slow and memory-hungry on purpose: it is an
independent check of the streamed closed-form kernels, and the naive baseline of
benchmarks/bench_fsr.py. Do not use it for large problems.
"""
from __future__ import annotations

import math

import torch

from .likelihood import GaussianLikelihood

__all__ = ["log_marginal", "tweedie_mean", "likelihood_score", "sample_em"]


def log_marginal(x, atoms, log_weights, abar, log_lik=None):
    """log sum_i pi_i [p(y|x^(i))] N(x; a x^(i), b^2 I) via the full difference tensor."""
    a, b2 = math.sqrt(abar), 1.0 - abar
    diff = x[:, None, :] - a * atoms[None, :, :]                       # (B, N, d)
    logits = log_weights - (diff * diff).sum(-1) / (2 * b2)
    if log_lik is not None:
        logits = logits + log_lik
    return torch.logsumexp(logits, 1) - 0.5 * atoms.shape[1] * math.log(2 * math.pi * b2)


def tweedie_mean(x, atoms, log_weights, abar):
    """m(x_t) = (x_t + b^2 grad log p_t(x_t)) / a, with the score from autograd (keeps the graph)."""
    a, b2 = math.sqrt(abar), 1.0 - abar
    lp = log_marginal(x, atoms, log_weights, abar)
    (score,) = torch.autograd.grad(lp.sum(), x, create_graph=True)
    return (x + b2 * score) / a


def likelihood_score(method: str, x, atoms, log_weights, abar, lik: GaussianLikelihood, *,
                     zeta: float = 1.0, r2: str = "paper"):
    """grad log p(y | x_t) for `method` in fsr, sigma_dps, zeta_dps, pigdm, tmpd, by autograd."""
    x = x.detach().requires_grad_(True)
    a, b2 = math.sqrt(abar), 1.0 - abar
    nv = lik.noise_var.to(x)
    if method == "fsr":
        ll = lik.log_prob(atoms).to(x)
        lp = log_marginal(x, atoms, log_weights, abar, ll) - log_marginal(x, atoms, log_weights, abar)
        return torch.autograd.grad(lp.sum(), x)[0]
    m = tweedie_mean(x, atoms, log_weights, abar)
    md = m.detach()
    r = lik.residual(md)
    if method in ("sigma_dps", "zeta_dps"):
        v = lik.forward.vjp(md, r / nv)
        g = torch.autograd.grad(m, x, grad_outputs=v)[0]
        # At an exact fit (A(m) = y) g is 0 and the step must be 0, not 0/0 = NaN.
        return g if method == "sigma_dps" else 2 * zeta / r.norm(dim=1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny) * g
    A = lik.forward.matrix_for(atoms.shape[1], x.dtype, x.device)
    if method == "pigdm":
        rt2 = (1 - abar) / abar if r2 == "paper" else 1 - abar
        u = torch.linalg.solve(rt2 * A @ A.T + torch.diag(nv), r.T).T
        return torch.autograd.grad(m, x, grad_outputs=u @ A)[0]
    if method == "tmpd":
        h = m @ A.T
        rows = [torch.autograd.grad(h[:, j].sum(), x, retain_graph=True)[0] for j in range(h.shape[1])]
        jh = torch.stack(rows, 1)                                            # (B, m, d) = A dm/dx
        cov = torch.diag(nv) + (b2 / a) * jh @ A.T
        u = torch.linalg.solve(cov, r.unsqueeze(-1))
        return (jh.transpose(1, 2) @ u).squeeze(-1)
    raise ValueError(f"method: unknown reference method {method!r}")


def sample_em(method, atoms, lik, *, n_particles, n_steps, t_min, generator, schedule, log_weights=None, **kw):
    """The paper's reverse Euler-Maruyama loop with the reference scores (same RNG order as fsdiag.sample)."""
    N, d = atoms.shape
    lw = torch.full((N,), -math.log(N), dtype=atoms.dtype) if log_weights is None else log_weights
    grid = schedule.time_grid(n_steps, t_min)
    x = torch.randn(n_particles, d, generator=generator, dtype=atoms.dtype)
    for k in range(n_steps):
        t, s = float(grid[k]), float(grid[k + 1])
        abar = schedule.alpha_bar(t)
        xg = x.detach().requires_grad_(True)
        prior_score = torch.autograd.grad(log_marginal(xg, atoms, lw, abar).sum(), xg)[0]
        score = prior_score + likelihood_score(method, x, atoms, lw, abar, lik, **kw)
        beta, dt = schedule.beta(t), t - s
        z = torch.randn(x.shape, generator=generator, dtype=atoms.dtype)
        x = (x + (0.5 * beta * x + beta * score) * dt + math.sqrt(beta * dt) * z).detach()
    return x
