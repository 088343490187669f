"""What the finite-sample lens measures (docs/design.md §5).

With the FSR prior every sampler's output collapses onto atoms as t -> 0, so it is
compared with the exact posterior over atoms psi; along the trajectory the particle
cloud is compared with the exact p_t(x_t | y) = sum_i psi_i N(a x^(i), b^2 I).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ._checks import as_tensor, check_abar, check_generator, check_has_values, check_int, check_positive, check_real, make_generator
from .assign import atom_masses
from .methods import make_method
from .problems import Problem
from .prior import EmpiricalPrior

__all__ = ["total_variation", "wilson_interval",
           "wasserstein_1d", "sliced_wasserstein", "sample_posterior_t", "mode_weights",
           "atom_mass", "spread", "score_agreement", "early_stopping", "monte_carlo_floor", "support_set"]


def check_prior(prior) -> None:
    if not isinstance(prior, EmpiricalPrior):
        raise TypeError(f"prior: expected an fsdiag.EmpiricalPrior, got {type(prior).__name__}")


def _check_psi(psi, prior: EmpiricalPrior, name: str = "psi") -> torch.Tensor:
    """A probability vector over the prior's atoms, in the prior's dtype and device."""
    psi = as_tensor(psi, name, ndim=1, dtype=prior.dtype, device=prior.device)
    if psi.shape[0] != prior.n_atoms:
        raise ValueError(f"{name}: expected shape ({prior.n_atoms},) to match the atoms, got {tuple(psi.shape)}")
    if bool((psi < 0).any()) or not bool((psi > 0).any()):
        raise ValueError(f"{name}: expected non-negative weights with a positive sum")
    return psi / psi.sum()


def _numpy(value, name: str, **kw) -> np.ndarray:
    """A float64 numpy copy of an array-like (checked by as_tensor); a tensor that requires grad
    is read as its values (these diagnostics return numbers, not graphs)."""
    return np.asarray(as_tensor(value, name, dtype=torch.float64, **kw).detach().cpu())


def _check_weights(w, n: int, name: str) -> np.ndarray:
    """Non-negative finite sample weights of length n with a positive sum, normalised."""
    w = _numpy(w, name, ndim=1)
    if w.shape[0] != n:
        raise ValueError(f"{name}: expected {n} weights to match the sample, got {w.shape[0]}")
    if (w < 0).any() or not (w > 0).any():
        raise ValueError(f"{name}: expected non-negative weights with a positive sum")
    return w / w.max() / np.sum(w / w.max())      # divide by the max first: no overflow in the sum


def check_run(run, prior: EmpiricalPrior, needs=("trajectory", "tweedie", "times", "samples", "schedule")) -> None:
    """A Run, or any object with the attributes this diagnostic reads (duck typing)."""
    if not all(hasattr(run, k) for k in needs):
        raise TypeError(f"run: expected an fsdiag.Run, got {type(run).__name__}")
    x = run.samples if "samples" in needs else run.trajectory[-1]
    if x.ndim != 2 or x.shape[1] != prior.dim:
        raise ValueError(f"run: its particles have shape {tuple(x.shape)}, the prior d = {prior.dim}")
    if x.shape[0] < 1:
        raise ValueError("run: expected at least one particle")


# ------------------------------------------------------------------ statistics
def _collapse(freq: np.ndarray, ids: np.ndarray, k: int) -> np.ndarray:
    """Sum the columns of freq (R, N) that share an id in ids (N,): (R, k), no (N, k) one-hot."""
    flat = (ids[None, :] + k * np.arange(freq.shape[0])[:, None]).ravel()
    return np.bincount(flat, weights=freq.ravel(), minlength=k * freq.shape[0]).reshape(freq.shape[0], k)


def _compact(ids) -> tuple[np.ndarray, int]:
    inverse = np.unique(np.asarray(ids.cpu() if isinstance(ids, torch.Tensor) else ids), return_inverse=True)[1]
    inverse = inverse.ravel()
    return inverse, int(inverse.max()) + 1 if inverse.size else 0


def monte_carlo_floor(psi, n: int, *, groups=None, copies=None, repeats: int = 64, seed: int = 0) -> dict:
    """TV between the exact posterior psi and the empirical distribution of n exact draws
    (simulated `repeats` times): what a perfect sampler with n samples scores. With `groups`
    (one integer label per atom) the same over the labels. With `copies` (one id per atom, equal
    for exact copies of one atom) each draw is judged as `evaluate` judges a sample: it cannot
    tell copies apart, so its mass is split among them in proportion to psi. Returns mean and
    95% quantile."""
    check_int(n, "n")
    check_int(repeats, "repeats")
    p = np.asarray(psi.detach().cpu() if isinstance(psi, torch.Tensor) else psi, dtype=np.float64)
    p = p / p.sum()
    rng = np.random.default_rng(seed)
    freq = rng.multinomial(n, p, size=repeats) / n                      # (repeats, N)
    if copies is not None:
        inv, k = _compact(copies)
        pg = np.bincount(inv, weights=p, minlength=k)
        share = np.divide(p, pg[inv], out=np.zeros_like(p), where=pg[inv] > 0)
        freq = _collapse(freq, inv, k)[:, inv] * share
    if groups is not None:
        inv, k = _compact(groups)
        p, freq = _collapse(p[None], inv, k)[0], _collapse(freq, inv, k)
    tv = 0.5 * np.abs(freq - p).sum(1)
    return {"mean": float(tv.mean()), "q95": float(np.quantile(tv, 0.95)), "repeats": repeats}


def support_set(mass, level: float = 0.99) -> np.ndarray:
    """Indices of the smallest set of entries whose exact mass reaches `level` (largest first)."""
    m = np.asarray(mass, dtype=np.float64)
    order = np.argsort(-m, kind="stable")
    k = int(np.searchsorted(np.cumsum(m[order]), level * m.sum())) + 1
    return np.sort(order[:min(k, m.size)])


def total_variation(p, q) -> float:
    """TV(p, q) = sum |p - q| / 2 for two probability vectors."""
    p = _numpy(p, "p")
    q = _numpy(q, "q")
    if p.shape != q.shape:
        raise ValueError(f"q: expected the shape of p {p.shape}, got {q.shape}")
    return 0.5 * float(np.abs(p - q).sum())


def wilson_interval(k, n: int, z: float = 1.96):
    """Wilson score interval for a binomial proportion k / n (arrays allowed)."""
    n = check_int(n, "n")
    z = check_positive(z, "z")
    k = _numpy(k, "k")
    if ((k < 0) | (k > n)).any():
        raise ValueError(f"k: expected counts in [0, n = {n}], got {k.min()}..{k.max()}")
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    # The interval always contains k / n (rounding can otherwise put it a hair outside).
    return np.clip(np.minimum(centre - half, p), 0, 1), np.clip(np.maximum(centre + half, p), 0, 1)


def wasserstein_1d(u, v, u_weights=None, v_weights=None) -> float:
    """W1 between two weighted samples on the line: the integral of |F_u - F_v|."""
    u = _numpy(u, "u").ravel()
    v = _numpy(v, "v").ravel()
    for name, arr in (("u", u), ("v", v)):
        if arr.size == 0:
            raise ValueError(f"{name}: expected a non-empty sample")
    uw = np.full(u.size, 1.0 / u.size) if u_weights is None else _check_weights(u_weights, u.size, "u_weights")
    vw = np.full(v.size, 1.0 / v.size) if v_weights is None else _check_weights(v_weights, v.size, "v_weights")
    allx = np.concatenate([u, v])
    order = np.argsort(allx, kind="stable")
    signed = np.concatenate([uw, -vw])[order]
    cdf_gap = np.cumsum(signed)[:-1]
    return float(np.sum(np.abs(cdf_gap) * np.diff(allx[order])))


def _project(t: torch.Tensor, dirs: torch.Tensor | None, name: str) -> np.ndarray:
    """t (n, d) projected on dirs (d, k) (t itself when dirs is None), in float64 on the CPU,
    ~8 MB of rows at a time: no float64 copy of a large atom set (8 GB at 10^6 x 1024)."""
    rows = max(1, (1 << 20) // t.shape[1])
    out = np.concatenate([(blk if dirs is None else blk @ dirs).numpy() for blk in
                          (t[s:s + rows].detach().to("cpu", torch.float64) for s in range(0, t.shape[0], rows))])
    if not np.isfinite(out).all():
        raise ValueError(f"{name}: expected finite values, found NaN/Inf entries (or values too large)")
    return out


def sliced_wasserstein(x: torch.Tensor, y: torch.Tensor, *, y_weights=None, n_projections: int = 64,
                       seed: int = 0) -> float:
    """Mean 1-D W1 over random directions (exact W1 when d = 1). x (n, d), y (m, d)."""
    x = as_tensor(x, "x", ndim=2, finite=False)
    y = as_tensor(y, "y", ndim=2, finite=False)
    for name, t in (("x", x), ("y", y)):
        if t.shape[0] == 0 or t.shape[1] == 0:
            raise ValueError(f"{name}: expected a non-empty sample, got shape {tuple(t.shape)}")
    if y.shape[1] != x.shape[1]:
        raise ValueError(f"y: expected shape (m, {x.shape[1]}) to match x, got {tuple(y.shape)}")
    n_projections = check_int(n_projections, "n_projections")
    seed = check_int(seed, "seed", minimum=0, maximum=2 ** 63 - 1)
    if x.shape[1] == 1:
        return wasserstein_1d(_project(x, None, "x")[:, 0], _project(y, None, "y")[:, 0], None, y_weights)
    g = torch.Generator().manual_seed(seed)
    dirs = torch.randn(x.shape[1], n_projections, generator=g, dtype=torch.float64)
    dirs /= dirs.norm(dim=0, keepdim=True)
    px, py = _project(x, dirs, "x"), _project(y, dirs, "y")
    return float(np.mean([wasserstein_1d(px[:, j], py[:, j], None, y_weights) for j in range(n_projections)]))


# ------------------------------------------------------------------ exact references
def sample_posterior_t(prior: EmpiricalPrior, psi: torch.Tensor, abar: float, n: int,
                       generator: torch.Generator) -> torch.Tensor:
    """n exact draws from p_t(x_t | y) = sum_i psi_i N(a x^(i), b^2 I)."""
    check_prior(prior)
    psi = _check_psi(psi, prior)
    abar, _, _ = check_abar(abar)
    n = check_int(n, "n", minimum=0)
    check_generator(generator)
    if n == 0:
        return prior.atoms.new_zeros(0, prior.dim)
    idx = torch.multinomial(psi, n, replacement=True, generator=generator)
    z = torch.randn(n, prior.dim, generator=generator, dtype=prior.dtype, device=prior.device)
    return math.sqrt(abar) * prior.atoms[idx] + math.sqrt(1 - abar) * z


def _posterior_t_moments(prior, psi, abar):
    """Mean and total variance (trace of the covariance) of p_t(x_t | y)."""
    mean0 = psi @ prior.atoms
    dev = prior.atoms - mean0
    var0 = float(psi @ (dev * dev).sum(1))
    return math.sqrt(abar) * mean0, abar * var0 + (1 - abar) * prior.dim


def atom_mass(prior: EmpiricalPrior, x: torch.Tensor, abar: float) -> torch.Tensor:
    """Fraction of particles x (at alpha_bar abar) whose most responsible atom is each atom, (N,),
    float64 on the CPU: `fsdiag.assign.atom_masses` (exact copies of an atom share their mass)."""
    check_prior(prior)
    abar = check_real(abar, "abar")
    if not 0.0 < abar <= 1.0:
        raise ValueError(f"abar: expected alpha_bar in (0, 1], got {abar}")
    x = prior.query(x)
    if x.shape[0] == 0:
        raise ValueError("x: expected at least one particle (the mass of an empty sample is undefined)")
    return atom_masses(prior, x, abar)[0]


def mode_weights(mass: torch.Tensor, psi: torch.Tensor, labels: torch.Tensor, n: int, z: float = 1.96) -> dict:
    """Per label: sampler mass with Wilson intervals (n particles) next to the exact mass."""
    mass = as_tensor(mass, "mass", ndim=1, dtype=torch.float64).detach().cpu()
    psi = as_tensor(psi, "psi", ndim=1, dtype=torch.float64).detach().cpu()
    if isinstance(labels, torch.Tensor):
        check_has_values(labels, "labels")
    labels = torch.as_tensor(labels).cpu() if not isinstance(labels, torch.Tensor) else labels.detach().cpu()
    if labels.ndim != 1 or labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"labels: expected a 1-D integer array, got dtype {labels.dtype} shape {tuple(labels.shape)}")
    if not (mass.shape == psi.shape == labels.shape):
        raise ValueError(f"psi: expected mass, psi and labels of one shape, got {tuple(mass.shape)}, "
                         f"{tuple(psi.shape)}, {tuple(labels.shape)}")
    n = check_int(n, "n")
    modes = torch.unique(labels)
    onehot = (labels[:, None] == modes[None]).to(torch.float64)
    sampler = (mass.cpu().double() @ onehot).numpy()
    exact = (psi.cpu().double() @ onehot).numpy()
    lo, hi = wilson_interval(np.clip(np.round(sampler * n), 0, n), n, z)
    lo, hi = np.minimum(lo, sampler), np.maximum(hi, sampler)   # the interval holds the reported mass
    return {"labels": modes.tolist(), "sampler": sampler.tolist(), "lower": lo.tolist(),
            "upper": hi.tolist(), "exact": exact.tolist(), "tv": total_variation(sampler, exact)}


# ------------------------------------------------------------------ along the trajectory
def spread(run, prior: EmpiricalPrior, psi: torch.Tensor, *, seed: int = 0) -> dict:
    """Per recorded time: total variance of the particle cloud over that of the exact p_t(x_t|y)
    (>1 over-dispersed, <1 under-dispersed), mean error, and sliced W1 to exact draws."""
    check_prior(prior)
    check_run(run, prior, ("times", "trajectory", "schedule"))
    psi = _check_psi(psi, prior)
    gen = make_generator(seed, None, prior.device)
    out = {"times": [], "var_ratio": [], "mean_error": [], "wasserstein": []}
    for t, x in zip(run.times.tolist(), run.trajectory):
        abar = run.schedule.alpha_bar(t)
        if abar >= 1.0:
            continue
        mean_t, var_t = _posterior_t_moments(prior, psi, abar)
        cloud_var = float(((x - x.mean(0)) ** 2).sum(1).mean())
        ref = sample_posterior_t(prior, psi, abar, x.shape[0], gen)
        out["times"].append(t)
        out["var_ratio"].append(cloud_var / var_t)
        out["mean_error"].append(float((x.mean(0) - mean_t).norm()))
        out["wasserstein"].append(sliced_wasserstein(x, ref, seed=seed))
    return out


def score_agreement(prior: EmpiricalPrior, lik, method, times, *, schedule=None, n_points: int = 256,
                    seed: int = 0, **method_params) -> dict:
    """At exact draws from p_t(x_t | y): the method's likelihood score against the exact one.
    norm_ratio = median ||approx|| / ||exact|| (>1: likelihood over-weighted, <1: under-weighted);
    cosine = mean cosine similarity."""
    from .schedules import VPSchedule, check_time
    check_prior(prior)
    schedule = VPSchedule() if schedule is None else schedule
    n_points = check_int(n_points, "n_points")
    if isinstance(times, (str, bytes)) or not hasattr(times, "__iter__"):
        raise TypeError(f"times: expected a sequence of times in (0, 1], got {times!r}")
    times = [check_time(t, "times") for t in times]
    approx = make_method(method, **method_params)
    problem = Problem.build(prior, lik)
    approx.check(problem)
    psi = prior.log_posterior_weights(problem.log_lik).exp()
    gen = make_generator(seed, None, prior.device)
    out = {"times": [], "norm_ratio": [], "cosine": []}
    for t in times:
        abar = schedule.alpha_bar(t)
        if abar >= 1.0:
            continue
        x = sample_posterior_t(prior, psi, abar, n_points, gen)
        exact = prior.likelihood_score(x, abar, problem.log_lik)
        est = approx(problem, x, abar).likelihood_score
        ne, na = exact.norm(dim=1), est.norm(dim=1)
        ok = ne > 1e-12 * (1 + ne.max())
        out["times"].append(t)
        out["norm_ratio"].append(float((na[ok] / ne[ok]).median()) if bool(ok.any()) else float("nan"))
        cos = (est * exact).sum(1)[ok] / (na[ok] * ne[ok]).clamp_min(1e-300)
        out["cosine"].append(float(cos.mean()) if bool(ok.any()) else float("nan"))
    return out


def early_stopping(run, prior: EmpiricalPrior, psi: torch.Tensor, *, n_projections: int = 64, seed: int = 0) -> dict:
    """Stop at each recorded time and output the particle or its Tweedie mean: sliced W1 to the
    exact posterior over atoms (exact W1 for d = 1)."""
    check_prior(prior)
    check_run(run, prior, ("times", "trajectory", "tweedie"))
    psi = _check_psi(psi, prior)
    out = {"times": run.times.tolist(), "particle": [], "tweedie": []}
    atoms, w = prior.atoms, psi.detach().cpu().double().numpy()
    for x, m in zip(run.trajectory, run.tweedie):
        out["particle"].append(sliced_wasserstein(x, atoms, y_weights=w, n_projections=n_projections, seed=seed))
        out["tweedie"].append(sliced_wasserstein(m, atoms, y_weights=w, n_projections=n_projections, seed=seed))
    return out
