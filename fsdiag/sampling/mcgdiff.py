"""MCGdiff (Cardoso et al. 2023, "Monte Carlo guided diffusion for Bayesian linear inverse problems").

SVD of the operator: A = U S V^T; observed coordinates xbar = V^T x (the first r), ybar = U^T y. With
isotropic noise sigma_y, coordinate i sees ytilde_i = ybar_i / s_i = xbar_0,i + (sigma_y / s_i) eps.
The VP forward process gives xbar_t,i = sqrt(abar_t) xbar_0,i + b_t eps, so at the *release time*
tau_i where the diffusion's VE noise (1 - abar)/abar equals sigma_i^2 = sigma_y^2 / s_i^2,
sqrt(abar_tau) ytilde_i is distributed exactly as xbar_tau,i: the noisy observation of x_0 is a noiseless
observation of the diffused state. The posterior is the prior diffusion path conditioned on
xbar_tau_i,i = c_i := sqrt(abar_tau_i) ytilde_i. On a fixed grid we release at tau'_i, the first grid time
at or after tau_i (going down), where the identity still holds exactly with a residual observation noise
delta_i = abar' sigma_i^2 - (1 - abar') >= 0: p(y_i | x_0) is proportional to
int q(xbar_tau' | x_0) N(c_i; xbar_tau', delta_i) dxbar_tau' (delta_i = 0 pins the coordinate, as the paper).

Twisted SMC over the paper's VP grid with a Gaussian reverse kernel N(mu(x_t), v I) of the prior (DDPM by
default, or Euler-Maruyama; kernel="exact": a mixture of such Gaussians over the atoms, see below):
- while grid time t >= tau'_i, coordinate i carries the potential g_t,i(xbar) = N(xbar; sqrt(abar_t)
  ytilde_i, 1 - abar_t / abar' + (abar_t / abar') delta_i), the observation pushed forward from tau';
- the proposal is the locally optimal one, N(mu, v) x g on the guided coordinates (Gaussian, exact),
  the prior kernel on the others; the weight int N(x; mu, v) g_s(x) dx / g_t(x_t) is known before the move;
- at tau'_i the potential N(c_i; xbar, delta_i) stays in the weights (the conditioning) and coordinate i
  is released: it then follows the prior kernel, as do the unobserved coordinates.
Coordinates whose tau_i falls below t_min (sigma_i^2 smaller than the last grid time's VE noise) are
never released: their potential uses abar' = 1 (delta = sigma_i^2, "release at t = 0") and is replaced at
the end by the true likelihood at the Tweedie mean, N(ybar_i; s_i (V^T m(x_{t_min}))_i, sigma_y^2), as TDS
does. release=False treats every coordinate so: `mcgdiff_lite`, the simplified variant.
The prior enters only through its Tweedie mean; one denoiser pass per step.

Exact in the limit of particles *for the prior chain it runs* (tests/test_mcgdiff.py: against quadrature of
the chain in 1-D, and against plain importance sampling of the chain in 3-D with released, never-released and
unobserved coordinates): conditioning at tau' weighs particles by the chain's marginal density there, so the
discretised chain's error passes into the answer. Three atoms, y = -0.9 (in the tails of both modes), sigma_y
= 0.3, mass on the atom -1.8: exact 0.902; the DDPM chain conditioned as above 0.686 / 0.778 / 0.831 at
10 / 30 / 60 steps (quadrature), MCGdiff 0.680 / 0.774 / 0.828 (4 x 4096-8192 particles); with
kernel="exact", the FSR's own reverse kernel sum_i w_i(x_t) q(x_s | x_t, x^(i)) (exact marginals at any step
size; dense responsibilities, small N only), 0.904 / 0.905. The weights are right; the chain is not.

A second, different failure on chapter 10's digits (top half observed, sigma_y = 0.5, 100 steps): Monte Carlo
error, not bias. TV over classes (seed 0) 0.17 / 0.18 / 0.15 at 256 / 1024 / 4096 particles against floors
0.07 / 0.04 / 0.02; seeds 0-5 at 1024: 0.18-0.68, at 16384: 0.14 and 0.49; kernel="exact", whose target is the
posterior itself, does no better (0.37 / 0.51 / 0.22 at 256 / 1024 / 4096, 20 lineages at t = 0.3 of 4096).
The potentials g_t are the observation pushed through the forward process as if the prior were flat, while the
reverse kernel contracts toward the data (near t = 1, where p_t and g_t are both ~ N(0, 1), a step adds ~
xbar_i^2 (1 - alpha) / (2 - alpha) to log w per observed coordinate, alpha = abar_t / abar_s: 0.15 xbar_i^2 at
100 steps). The weights must undo that pull coordinate by coordinate, and more steps do not help: with ONE
atom (exact chain, trivial posterior) and 32 observed pixels the log p(y) estimate is 3-6 nats low at 16384
particles and 100 steps, 5-9 at 500 steps, against 0.2-0.6 with 4 observed pixels at 4096. On the digits
almost every step loses 30-60% of the ESS, ~35 resamplings in the 86 guided steps leave the returned particles
descended from 7 / 72 / 178 particles at t = 0.3, where the digit's class is being decided (info["lineages"]),
and the class weights carry the error of that many draws (the log p(y) estimate is 9 nats below the exact one
at 1024 particles, 6-9 at 4096). TDS, whose twist N(y; A m(x_t), ...) contains the prior's denoiser, resamples
twice and reaches the floor (TV 0.03 at 1024).
"""
from __future__ import annotations

import math

import torch
from tqdm import tqdm

from ..forward import LinearForwardModel
from .common import Recorder, check_particles, setup
from .registry import register_sampler
from .resampling import check_smc_args, effective_sample_size, resample, resample_if_degenerate
from .run import Run
from .steps import bridge, score_from_mean, vp_euler_maruyama

__all__ = ["mcgdiff", "mcgdiff_lite", "release_indices"]


def _log_normal(x: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """Elementwise log N(x; mean, var), in float64."""
    d = (x - mean).to(torch.float64)
    var = var.to(torch.float64)
    return -0.5 * d * d / var - 0.5 * torch.log(2 * math.pi * var)


def release_indices(obs_var: torch.Tensor, schedule, grid: torch.Tensor) -> torch.Tensor:
    """Grid index of each coordinate's release time tau'_i: the first grid time (grid descending) whose
    VE noise (1 - abar)/abar is at most obs_var_i = sigma_y^2 / s_i^2; len(grid) where there is none
    (the observation is sharper than the last grid time: never released)."""
    ve = torch.tensor([(1 - schedule.alpha_bar(float(t))) / schedule.alpha_bar(float(t)) for t in grid],
                      dtype=torch.float64)
    below = ve[None, :] <= obs_var.to(torch.float64)[:, None] * (1 + 1e-12)       # (r, K+1), monotone in k
    first = torch.where(below.any(1), below.to(torch.int64).argmax(1), torch.full_like(below[:, 0], grid.shape[0],
                                                                                       dtype=torch.int64))
    return first


_KERNELS = ("ddpm", "euler", "exact")


def _prior_kernel(kernel, schedule, x, m, t, s, abar_t, abar_s):
    """Mean and variance of the prior's reverse kernel N(mu, v I) from time t to s < t.
    "ddpm": the forward bridge q(x_s | x_t, x_0) at x_0 = m(x_t) (DDPM ancestral / DDIM eta = 1, MCGdiff's
    kernel; exact marginals for a single atom at any step size). "euler": the paper's Euler-Maruyama step."""
    if kernel == "euler":
        return vp_euler_maruyama(schedule, x, score_from_mean(x, m, abar_t), t, s)
    c_x, c_0, v = bridge(abar_t, abar_s)
    return c_x * x + c_0 * m, v


def _lineages(ancestry: list, final: torch.Tensor) -> list[int]:
    """Number of distinct particles at each grid index from which the returned samples descend;
    ancestry[k] = the ancestor indices drawn at grid index k (None: no resampling there)."""
    anc, out = final, [int(torch.unique(final).numel())]
    for idx in reversed(ancestry):
        if idx is not None:
            anc = idx[anc]
        out.append(int(torch.unique(anc).numel()))
    return out[::-1]


@register_sampler
def mcgdiff(prior, lik, *, n_particles: int = 1024, n_steps: int = 500, t_min: float = 1e-2, t_max: float = 1.0,
            schedule=None, seed: int | None = 0, generator: torch.Generator | None = None, record=25,
            progress: bool = True, release: bool = True, kernel: str = "ddpm", ess_threshold: float = 0.5,
            resampling: str = "systematic") -> Run:
    """MCGdiff (Cardoso et al. 2023) on the paper's VP grid linspace(t_max, t_min, n_steps + 1): per-coordinate
    release times, optimal Gaussian proposals, resampling when ESS < ess_threshold * n (the paper resamples
    at every step: ess_threshold=1). Linear forward models with isotropic noise only. kernel: "ddpm" (the
    forward bridge at x_0 = m(x_t), MCGdiff's), "euler" (the paper's Euler-Maruyama step) or "exact" (the FSR's
    exact reverse kernel, a mixture over atoms: the chain's marginals are exact, so the only error left is
    Monte Carlo; needs an fsdiag.EmpiricalPrior, dense responsibilities, small N).

    Same signature and info as `fsdiag.sampling.tds`, plus info["release_index"] (grid index of each observed
    coordinate's release, n_steps + 1 = never), info["release_time"] (its grid time, nan = never),
    info["observed_rank"] r, info["lineages"] (per grid index, how many distinct particles there the returned
    samples descend from: a small number means the answer rests on that many draws). release=False: no
    coordinate is released (`mcgdiff_lite`).
    """
    threshold = check_smc_args(ess_threshold, resampling)
    if not isinstance(release, bool):
        raise TypeError(f"release: expected True or False, got {release!r}")
    if not isinstance(kernel, str) or kernel not in _KERNELS:
        raise ValueError(f"kernel: expected one of {list(_KERNELS)}, got {kernel!r}")
    if not isinstance(getattr(lik, "forward", None), LinearForwardModel):
        raise ValueError(f"forward: mcgdiff needs a linear forward model, got {getattr(lik, 'forward', lik)!r}")
    if kernel == "exact" and not (hasattr(prior, "responsibilities") and hasattr(prior, "atoms")):
        raise TypeError(f"prior: kernel='exact' needs the atoms of an fsdiag.EmpiricalPrior, "
                        f"got {type(prior).__name__}")
    n, n_steps, schedule, grid, problem, gen = setup(
        prior, lik, n_particles=n_particles, n_steps=n_steps, t_min=t_min, t_max=t_max, schedule=schedule,
        seed=seed, generator=generator, vp_only=True, needs_vjp=True)
    rec = Recorder(record, grid)
    if not bool((lik.noise_std == lik.noise_std[0]).all()):
        raise ValueError("noise_std: mcgdiff needs isotropic measurement noise (one noise_std)")
    name = "mcgdiff" if release else "mcgdiff_lite"
    dev, dt_, f64 = prior.device, prior.dtype, torch.float64
    A = problem.forward.dense(problem.dim, problem.dtype, problem.device).to(f64)
    U, S, Vh = torch.linalg.svd(A, full_matrices=True)
    r = int((S > S.max() * 1e-10).sum())
    s, V = S[:r], Vh.T                                               # observed coordinates: the first r of V^T x
    y_eff = lik.y.to(A) - lik.forward(torch.zeros(1, prior.dim, dtype=f64, device=dev))[0]   # y - bias
    ybar_all = U.T @ y_eff
    ybar, s2y = ybar_all[:r], float(lik.noise_var[0])
    ytil, obs_var = ybar / s, s2y / (s * s)                          # ytilde_i = xbar_0,i + N(0, obs_var_i)
    abars = torch.tensor([schedule.alpha_bar(float(t)) for t in grid], dtype=f64, device=dev)
    k_rel = (release_indices(obs_var.cpu(), schedule, grid) if release
             else torch.full((r,), n_steps + 1, dtype=torch.int64)).to(dev)
    k_rel = torch.where(k_rel > n_steps, torch.full_like(k_rel, n_steps + 1), k_rel)
    released = k_rel <= n_steps
    ab_rel = torch.where(released, abars[k_rel.clamp(max=n_steps)], torch.ones_like(ytil))     # abar'_i
    delta = (ab_rel * obs_var - (1 - ab_rel)).clamp_min(0.0)         # residual observation noise at tau'_i

    def potential(k):
        """(active mask, mean, variance) of the potentials g_k,i at grid index k."""
        ab = abars[k]
        ratio = ab / ab_rel
        return k <= k_rel, ab.sqrt() * ytil, (1 - ratio + ratio * delta).clamp_min(0.0)

    def log_potential(xbar_obs, k):
        active, mean, var = potential(k)
        return (_log_normal(xbar_obs[:, active], mean[active], var[active])).sum(1)

    def optimal(mu, v, k):
        """Draw from N(mu, v) x g_k on the active coordinates (posterior of a Gaussian 'observation' of x);
        returns (new xbar, log int N(x; mu, v) g_k(x) dx)."""
        active, mean, var = potential(k)
        z = torch.randn(mu.shape, generator=gen, dtype=f64, device=dev)
        new = mu + math.sqrt(v) * z
        idx = torch.nonzero(active).flatten()
        m_a, g_a, mu_a = mean[idx], var[idx], mu[:, idx]
        new[:, idx] = (g_a * mu_a + v * m_a) / (v + g_a) + torch.sqrt(v * g_a / (v + g_a)) * z[:, idx]
        return new, _log_normal(m_a, mu_a, v + g_a).sum(1)

    # Start: x_{t_max} ~ N(0, I) x g_0, drawn exactly (optimal proposal from a unit-variance "prior kernel").
    xbar, log_w = optimal(torch.zeros(n, prior.dim, dtype=f64, device=dev), 1.0, 0)
    x = (xbar @ V.T).to(dt_)
    view_gen = torch.Generator(device=dev)
    view_gen.manual_seed(int(torch.randint(0, 2 ** 62, (1,), generator=gen, device=dev)))
    # log p(y) = log E[weights] + sum over released (log sqrt(abar') - log s) + the unobserved rows of U^T y.
    const = float((0.5 * torch.log(ab_rel[released]) - torch.log(s[released])).sum())
    const += float(_log_normal(ybar_all[r:], torch.zeros_like(ybar_all[r:]), torch.full_like(ybar_all[r:], s2y)).sum())
    log_evidence = float(torch.logsumexp(log_w, 0) - math.log(n)) + const
    if kernel == "exact":                                            # the atoms in SVD coordinates
        atoms_bar = prior.atoms_at(torch.arange(prior.n_atoms, device=dev)).to(f64) @ V
    ess, resampled, ancestry = [], [], []
    for k in tqdm(range(n_steps), desc=name, disable=not progress, leave=False):
        t, t_next = float(grid[k]), float(grid[k + 1])
        abar = float(abars[k])
        m = prior.moments(x, abar).mean if kernel != "exact" or rec.wants(k) else None
        if rec.wants(k):
            view = resample(log_w, view_gen, resampling)
            rec.add(t, x[view], m[view])
        # Draw x_{k+1} from N(mu, v) x g_{k+1}; its weight int N(x; mu, v) g_{k+1}(x) dx / g_k(x_k) is
        # known before the move (fully adapted), so resampling comes first. Coordinates released at k
        # keep their factor N(c_i; xbar_k,i, delta_i) (they are not divided out: the conditioning).
        active_next, mean_s, var_s = potential(k + 1)
        _, mean_k, var_k = potential(k)
        on = torch.nonzero(active_next).flatten()                 # active at k + 1, hence at k (var_k > 0)
        if kernel == "exact":
            # Mixture over atoms: sum_i w_i(x_t) N(c_x x_t + c_0 x^(i), v); the component of each particle is
            # drawn from w_i int N(x; mu_i, v) g_{k+1}(x) dx after resampling, then x from that component x g.
            c_x, c_0, v = bridge(abar, float(abars[k + 1]))
            base = c_x * xbar
            comp = torch.log(prior.responsibilities(x, abar).to(f64).clamp_min(1e-300))          # (n, N)
            if on.numel():
                sd = torch.sqrt(v + var_s[on])
                u, a_ = (mean_s[on] - base[:, on]) / sd, c_0 * atoms_bar[:, on] / sd
                comp = comp - 0.5 * ((u * u).sum(1, keepdim=True) - 2 * u @ a_.T + (a_ * a_).sum(1)) \
                    - float(torch.log(sd).sum() + 0.5 * on.numel() * math.log(2 * math.pi))
            incr = torch.logsumexp(comp, 1) - _log_normal(xbar[:, on], mean_k[on], var_k[on]).sum(1)
        else:
            mu, v = _prior_kernel(kernel, schedule, x, m, t, t_next, abar, float(abars[k + 1]))
            mu = mu.to(f64) @ V
            incr = (_log_normal(mean_s[on], mu[:, on], v + var_s[on]).sum(1)
                    - _log_normal(xbar[:, on], mean_k[on], var_k[on]).sum(1))
        log_evidence += float(torch.logsumexp(log_w + incr, 0) - torch.logsumexp(log_w, 0))
        log_w = log_w + incr
        idx, ess_k = resample_if_degenerate(log_w, threshold, gen, resampling)
        ess.append(ess_k)
        ancestry.append(idx)
        if idx is not None:
            log_w = torch.zeros_like(log_w)
            resampled.append(k)
            if kernel == "exact":
                base, comp = base[idx], comp[idx]
            else:
                mu = mu[idx]
        if kernel == "exact":
            pick = torch.multinomial(torch.softmax(comp, 1), 1, generator=gen)[:, 0]
            mu = base + c_0 * atoms_bar[pick]
        xbar, _ = optimal(mu, v, k + 1)
        x = (xbar @ V.T).to(dt_)
        check_particles(x, name, t_next, k, n_steps)
    # Final correction of the never-released coordinates by the true likelihood at the Tweedie mean.
    abar = float(abars[-1])
    m = prior.moments(x, abar).mean
    never = ~released
    mbar = m.to(f64) @ V
    incr = (_log_normal(ybar[never], s[never] * mbar[:, :r][:, never], torch.full_like(ybar[never], s2y)).sum(1)
            - _log_normal(xbar[:, :r][:, never], *[p[never] for p in potential(n_steps)[1:]]).sum(1))
    log_evidence += float(torch.logsumexp(log_w + incr, 0) - torch.logsumexp(log_w, 0))
    log_w = log_w + incr
    ess.append(effective_sample_size(log_w))
    idx = resample(log_w, gen, resampling)
    x_out, m_out = x[idx], m[idx]
    rec.add(float(grid[-1]), x_out, m_out)
    rel_time = [float(grid[k]) if k <= n_steps else math.nan for k in k_rel.tolist()]
    info = {"ess": ess, "resampled": resampled, "log_weights": log_w.cpu(), "log_evidence": log_evidence,
            "ess_threshold": threshold, "resampling": resampling, "observed_rank": r,
            "release_index": k_rel.cpu().tolist(), "release_time": rel_time,
            "lineages": _lineages(ancestry, idx)}
    return rec.run(x_out, name, None, schedule, n_steps, seed, generator,
                   {"release": release, "kernel": kernel, "ess_threshold": threshold, "resampling": resampling},
                   info)


@register_sampler
def mcgdiff_lite(prior, lik, *, n_particles: int = 1024, n_steps: int = 500, t_min: float = 1e-2,
                 t_max: float = 1.0, schedule=None, seed: int | None = 0, generator: torch.Generator | None = None,
                 record=25, progress: bool = True, kernel: str = "ddpm", ess_threshold: float = 0.5,
                 resampling: str = "systematic") -> Run:
    """MCGdiff without release times (`mcgdiff(..., release=False)`): every observed coordinate keeps the
    potential N(sqrt(abar_t) ytilde_i; xbar_t,i, 1 - abar_t + abar_t sigma_i^2) down to t_min, then the true
    likelihood at the Tweedie mean corrects the weights. Asymptotically exact too, but far slower to converge."""
    return mcgdiff(prior, lik, n_particles=n_particles, n_steps=n_steps, t_min=t_min, t_max=t_max,
                   schedule=schedule, seed=seed, generator=generator, record=record, progress=progress,
                   release=False, kernel=kernel, ess_threshold=ess_threshold, resampling=resampling)
