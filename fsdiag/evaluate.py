"""The judge: samples from any code against the exact finite-sample posterior (DESIGN §4, §8).

`evaluate` looks only at samples (and, when given, a trajectory), so it judges a sampler
written anywhere — deepinv, k-diffusion, a user's script — as long as it ran on the FSR
prior (e.g. through `fsdiag.ExactDenoiser`). `diagnose` is `evaluate` for an `fsdiag.Run`,
plus the pointwise likelihood-score agreement of its approximation.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from types import SimpleNamespace

import numpy as np
import torch
from scipy import stats

from ._checks import as_tensor, check_int, check_positive
from .diagnostics import (check_prior, check_run, early_stopping, mode_weights, posterior_weights, score_agreement,
                          sliced_wasserstein, spread, total_variation)
from .methods import Approximation
from .kernels import group_shares
from .prior import EmpiricalPrior
from .schedules import VPSchedule

__all__ = ["Report", "evaluate", "diagnose", "monte_carlo_floor", "support_set", "copies_of", "atom_masses", "atom_spacing", "sample_rows",
           "SUPPORT_FRACTION"]


# ------------------------------------------------------------------ pieces
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


def copies_of(prior: EmpiricalPrior) -> torch.Tensor:
    """One id per atom, equal for exact copies of one atom (N,): no sample can tell them apart."""
    return torch.unique(prior.atoms, dim=0, return_inverse=True)[1].reshape(-1).cpu()


def atom_masses(prior: EmpiricalPrior, x: torch.Tensor, abar: float = 1.0,
                copies: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The sampler's mass per atom (N,) float64 on the CPU, and each sample's distance to its atom:
    every sample x (n, d) goes to its nearest atom (the most responsible one at alpha_bar < 1), exactly
    (`prior.nearest`), and is split among exact copies of that atom in proportion to pi (no sample
    can tell copies apart, and the exact posterior splits them so too: they share one likelihood)."""
    copies = copies_of(prior) if copies is None else copies
    nn = prior.nearest(x, abar)
    share = group_shares(prior.log_weights.detach().cpu(), copies)
    hits = torch.bincount(copies[nn.index.cpu()], minlength=int(copies.max()) + 1).to(torch.float64)
    return hits[copies] * share / x.shape[0], nn.distance


def atom_spacing(prior: EmpiricalPrior, copies: torch.Tensor | None = None, n_probe: int = 512) -> float:
    """Median distance from an atom to its nearest distinct atom (exact copies skipped), on up
    to n_probe atoms (fixed, evenly spread); 0 when all atoms are copies of one."""
    copies = copies_of(prior) if copies is None else copies
    if int(copies.max()) == 0:
        return 0.0
    probe = torch.linspace(0, prior.n_atoms - 1, min(n_probe, prior.n_atoms)).round().long()
    c = prior.center.to(torch.float64)
    xc = prior.atoms[probe.to(prior.device)].to(torch.float64) - c
    best = torch.full((probe.shape[0],), math.inf, dtype=torch.float64)
    step = max(16, (1 << 21) // max(1, probe.shape[0]))
    for s in range(0, prior.n_atoms, step):
        ac = prior.atoms[s:s + step].to(torch.float64) - c
        d2 = ((xc * xc).sum(1)[:, None] - 2 * xc @ ac.T + (ac * ac).sum(1)[None]).clamp_min(0).cpu()
        d2[copies[probe][:, None] == copies[s:s + step][None]] = math.inf     # itself and its copies
        best = torch.minimum(best, d2.min(1).values)
    best = best[torch.isfinite(best)]
    return float(best.median().sqrt()) if best.numel() else 0.0


# A clean sample is off the prior's support when it is farther from every atom than this fraction
# of the typical distance between neighbouring atoms: near enough to be unmistakably that atom.
SUPPORT_FRACTION = 0.1


def sample_rows(samples, prior: EmpiricalPrior, name: str) -> torch.Tensor:
    """(n, d) or (n, C, H, W) with C*H*W = d, as (n, d) rows in the prior's dtype/device."""
    x = as_tensor(samples, name, dtype=prior.dtype, device=prior.device)
    if x.ndim < 2 or x.shape[0] < 1 or math.prod(x.shape[1:]) != prior.dim:
        raise ValueError(f"{name}: expected shape (n, {prior.dim}) or (n, ...) with {prior.dim} values per "
                         f"sample and n >= 1, got {tuple(x.shape)}")
    return x.reshape(x.shape[0], prior.dim)


def _trajectory(trajectory, prior: EmpiricalPrior, schedule):
    """A Run, or (times, states[, tweedie]) / {"times", "states"[, "tweedie"]}: a run-like object."""
    if hasattr(trajectory, "trajectory") and hasattr(trajectory, "times"):
        return trajectory
    if isinstance(trajectory, dict):
        parts = [trajectory.get("times"), trajectory.get("states"), trajectory.get("tweedie")]
    elif isinstance(trajectory, (tuple, list)) and len(trajectory) in (2, 3):
        parts = list(trajectory) + [None] * (3 - len(trajectory))
    else:
        raise TypeError("trajectory: expected an fsdiag.Run, (times, states[, tweedie]) or a dict with "
                        f"'times' and 'states', got {type(trajectory).__name__}")
    if parts[0] is None or parts[1] is None:
        raise ValueError("trajectory: expected 'times' and 'states'")
    times = as_tensor(parts[0], "trajectory", ndim=1, dtype=torch.float64)
    states = as_tensor(parts[1], "trajectory", dtype=prior.dtype, device=prior.device)
    if times.shape[0] < 1:
        raise ValueError("trajectory: expected at least one recorded time, got none")
    if states.ndim < 3 or states.shape[0] != times.shape[0] or math.prod(states.shape[2:]) != prior.dim:
        raise ValueError(f"trajectory: expected states of shape ({times.shape[0]}, n, {prior.dim}) to match "
                         f"{times.shape[0]} times, got {tuple(states.shape)}")
    if states.shape[1] < 1:
        raise ValueError("trajectory: expected at least one particle per recorded time, got 0")
    if bool(((times <= 0) | (times > 1)).any()):
        raise ValueError("trajectory: expected times in (0, 1]")
    states = states.reshape(states.shape[0], states.shape[1], prior.dim)
    if parts[2] is None:
        tweedie = torch.stack([prior.denoise(x, schedule.alpha_bar(float(t))) for t, x in zip(times, states)])
    else:
        tweedie = as_tensor(parts[2], "trajectory", dtype=prior.dtype, device=prior.device)
        if tweedie.ndim < 3 or tweedie.shape[:2] != states.shape[:2] or math.prod(tweedie.shape[2:]) != prior.dim:
            raise ValueError(f"trajectory: expected Tweedie means of the states' shape {tuple(states.shape)}, "
                             f"got {tuple(tweedie.shape)}")
        tweedie = tweedie.reshape(states.shape)
    return SimpleNamespace(times=times, trajectory=states, tweedie=tweedie, schedule=schedule)


# ------------------------------------------------------------------ the report
@dataclass
class Report:
    """What the lens measures for one set of samples; `to_dict()` is JSON-ready.

    tv_atoms / tv_modes: TV to the exact posterior over atoms / modes, next to
    tv_floor_atoms / tv_floor_modes, the mean TV that as many exact draws give.
    excluded_mass: mass on modes whose exact mass is below `negligible`.
    hallucination: that (`prior_mode`), mass outside the smallest sets of atoms / modes
    holding `level` of the exact mass, off-support samples and likelihood-mode hallucination.
    """

    method: str
    n_particles: int
    t_final: float
    exact_weights: list
    atom_mass: list
    tv_atoms: float
    modes: dict
    hallucination: dict
    wasserstein: float
    wasserstein_tweedie: float
    spread: dict | None = None
    early_stopping: dict | None = None
    score_agreement: dict | None = None
    params: dict = field(default_factory=dict)
    tv_floor_atoms: float = 0.0
    tv_floor_modes: float = 0.0
    floor: dict = field(default_factory=dict)

    @property
    def tv_modes(self) -> float:
        return self.modes["tv"]

    @property
    def excluded_mass(self) -> float:
        return self.hallucination["prior_mode"]

    def to_dict(self) -> dict:
        return {**asdict(self), "tv_modes": self.tv_modes, "excluded_mass": self.excluded_mass}

    def summary(self) -> str:
        m, h = self.modes, self.hallucination
        who = ("samples from an unnamed sampler (evaluate(..., method=NAME) names it)" if self.method == "samples"
               else f"method {self.method!r}")
        lines = [f"{who}: {self.n_particles} samples at t = {self.t_final:g}",
                 f"  TV to the exact posterior over atoms: {self.tv_atoms:.4f} (Monte Carlo floor "
                 f"{self.tv_floor_atoms:.4f}); over modes: {m['tv']:.4f} (floor {self.tv_floor_modes:.4f})",
                 f"  W1 to the exact posterior: {self.wasserstein:.4f} (Tweedie means: {self.wasserstein_tweedie:.4f})",
                 f"  hallucination: excluded modes {h['prior_mode']:.4f}, outside the {h['level']:.0%} support "
                 f"{h['outside_support_modes']:.4f} (modes) / {h['outside_support_atoms']:.4f} (atoms), "
                 f"off-support {h['off_support']:.4f}, likelihood modes {h['likelihood_mode']:.4f}",
                 "  mode   sampler [95% CI]            exact"]
        for lab, s, lo, hi, e in zip(m["labels"], m["sampler"], m["lower"], m["upper"], m["exact"]):
            lines.append(f"  {lab!s:>5}  {s:.4f} [{lo:.4f}, {hi:.4f}]   {e:.4f}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


def evaluate(samples, prior: EmpiricalPrior, lik, *, trajectory=None, labels=None, t_final: float | None = None,
             schedule=None, negligible: float = 1e-3, level: float = 0.99, radius: float | None = None,
             fit_level: float = 0.99, method: str = "samples", seed: int = 0) -> Report:
    """Judge samples (n, d) or (n, C, H, W) from any sampler against the exact FSR posterior.

    Each sample is assigned to an atom: the nearest one (Euclidean) for clean samples, or with
    `t_final` (samples still carrying the noise of time t_final under `schedule`, default the
    paper's VP schedule) the most responsible one at that time. Modes are `labels` (one integer
    per atom), else the prior's labels, else the atoms themselves.

    Hallucination is measured against the exact posterior's support (DESIGN §8): the mass on
    modes whose exact mass is below `negligible`, and outside the smallest sets of atoms / modes
    holding `level` of the exact mass. A sample is off-support when farther than `radius` from
    every atom (default b (sqrt(d) + 3) at t_final, or half the median atom spacing for clean
    samples) and a likelihood mode when it is off-support yet fits y (chi-square at `fit_level`).

    `trajectory` (an fsdiag.Run, or (times, states[, tweedie]) with states (R, n, d)) adds the
    spread and early-stopping diagnostics; Tweedie means are computed when not given.

    Returns a `Report`: `tv_modes` / `tv_atoms` (TV to the exact posterior over modes / atoms)
    beside `tv_floor_modes` / `tv_floor_atoms` and `floor` (the TV of as many exact draws: mean
    and 95% quantile); `modes` (per mode: labels, sampler mass with its 95% Wilson interval
    `lower`/`upper`, exact mass); `atom_mass` and `exact_weights` (per atom); `hallucination`
    (`prior_mode` = `excluded_mass`, `absent_modes`, mass outside the `level` support of atoms and
    of modes, `off_support`, `likelihood_mode`, the `radius` used and `radius_rule`, why);
    `wasserstein` / `wasserstein_tweedie` (sliced W1 to the exact posterior); `spread` and
    `early_stopping` with a trajectory; `method`, the name given (default "samples": any sampler's
    output); `to_dict()` is JSON-ready and `print(report)` a summary.
    """
    if not isinstance(prior, EmpiricalPrior):
        raise TypeError(f"prior: expected an fsdiag.EmpiricalPrior, got {type(prior).__name__}")
    x = sample_rows(samples, prior, "samples")
    for name, value in (("negligible", negligible), ("level", level), ("fit_level", fit_level)):
        if not 0 < check_positive(value, name) < 1:
            raise ValueError(f"{name}: expected a number in (0, 1), got {value!r}")
    if not isinstance(method, str):
        raise TypeError(f"method: expected a name (str), got {type(method).__name__}")
    seed = check_int(seed, "seed", minimum=0)
    schedule = VPSchedule() if schedule is None else schedule
    if not hasattr(schedule, "alpha_bar"):
        raise TypeError(f"schedule: expected a VPSchedule or DDPMSchedule, got {type(schedule).__name__}")
    groups, names = _groups(labels, prior)
    psi = posterior_weights(prior, lik)
    n = x.shape[0]
    copies = copies_of(prior)

    # Assign every sample to an atom (exactly, in float64), and find its distance to the support.
    abar = 1.0 if t_final is None else schedule.alpha_bar(_time(t_final))
    mass, dist = atom_masses(prior, x, abar, copies)
    if abar < 1.0:
        a, b = math.sqrt(abar), math.sqrt(1.0 - abar)
        default_radius = b * (math.sqrt(prior.dim) + 3.0)
        rule = (f"b (sqrt(d) + 3) = {default_radius:.3g}: the noise of t_final = {_time(t_final):g} "
                f"(b = {b:.3g}) rarely carries a sample this far from its atom")
        x0, tweedie = x / a, prior.denoise(x, abar)
    else:
        spacing = atom_spacing(prior, copies)
        default_radius = SUPPORT_FRACTION * spacing if spacing > 0 else 1e-6 * max(prior.scale, 1.0)
        rule = (f"{SUPPORT_FRACTION:g} x the median distance between neighbouring distinct atoms "
                f"({spacing:.3g}): a sample this close is unmistakably its atom")
        x0, tweedie = x, x
    if radius is None:
        radius = default_radius
    else:
        radius = check_positive(radius, "radius")
        rule = "given by the caller"

    w = psi.detach().cpu().double()
    modes = mode_weights(mass, w, groups, n)
    modes["labels"] = [names[int(k)] for k in modes["labels"]]
    exact_modes, sampler_modes = np.asarray(modes["exact"]), np.asarray(modes["sampler"])
    absent = exact_modes < negligible
    in_atoms, in_modes = support_set(w.numpy(), level), support_set(exact_modes, level)
    off = dist > radius
    r = lik.residual(x0) / lik.noise_std.to(x0)
    fits = (r * r).sum(1) <= stats.chi2.ppf(fit_level, lik.obs_dim)
    halluc = {"prior_mode": float(sampler_modes[absent].sum()),
              "absent_modes": [lab for lab, ab in zip(modes["labels"], absent) if ab],
              "level": level,
              "outside_support_atoms": float(1.0 - mass.numpy()[in_atoms].sum()),
              "outside_support_modes": float(1.0 - sampler_modes[in_modes].sum()),
              "support_atoms": int(in_atoms.size),
              "support_modes": [modes["labels"][i] for i in in_modes],
              "off_support": float(off.double().mean()),
              "likelihood_mode": float((off & fits.to(off.device)).double().mean()),
              "radius": float(radius),
              "radius_rule": rule}
    floor_atoms = monte_carlo_floor(w, n, copies=copies, seed=seed)
    floor_modes = monte_carlo_floor(w, n, groups=groups, copies=copies, seed=seed)

    traj = None if trajectory is None else _trajectory(trajectory, prior, schedule)
    return Report(
        method=method, n_particles=n, t_final=0.0 if t_final is None else _time(t_final),
        exact_weights=w.tolist(), atom_mass=mass.tolist(),
        tv_atoms=total_variation(mass.numpy(), w.numpy()), modes=modes, hallucination=halluc,
        wasserstein=sliced_wasserstein(x, prior.atoms, y_weights=w.numpy(), seed=seed),
        wasserstein_tweedie=sliced_wasserstein(tweedie, prior.atoms, y_weights=w.numpy(), seed=seed),
        spread=None if traj is None else spread(traj, prior, psi, seed=seed),
        early_stopping=None if traj is None else early_stopping(traj, prior, psi, seed=seed),
        tv_floor_atoms=floor_atoms["mean"], tv_floor_modes=floor_modes["mean"],
        floor={"atoms": floor_atoms, "modes": floor_modes})


def _time(t) -> float:
    t = check_positive(t, "t_final")
    if t > 1:
        raise ValueError(f"t_final: expected a time in (0, 1], got {t}")
    return t


def _groups(labels, prior: EmpiricalPrior) -> tuple[torch.Tensor, list]:
    """Compact mode ids 0..K-1 per atom and the K mode names (the labels' own values, as Python ints)."""
    if labels is None:
        if prior.labels is None:
            return torch.arange(prior.n_atoms), list(range(prior.n_atoms))
        lab = prior.labels.cpu().numpy()
    else:
        lab = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
        if lab.shape != (prior.n_atoms,) or not np.issubdtype(lab.dtype, np.integer):
            raise ValueError(f"labels: expected an integer array of shape ({prior.n_atoms},), got "
                             f"{lab.dtype} array of shape {lab.shape}")
    values, inverse = np.unique(lab, return_inverse=True)
    return torch.as_tensor(inverse.ravel(), dtype=torch.long), [int(v) for v in values]


def diagnose(run, prior: EmpiricalPrior, lik, *, score_times=None, n_score_points: int = 256,
             negligible: float = 1e-3, radius: float | None = None, seed: int = 0) -> Report:
    """`evaluate` for an fsdiag.Run (its final particles at t_final, its trajectory), plus the
    agreement of its approximation's likelihood score with the exact one (DESIGN §4)."""
    check_prior(prior)
    check_run(run, prior)
    n_score_points = check_int(n_score_points, "n_score_points")
    t_final = run.t_final
    if run.schedule.alpha_bar(t_final) >= 1.0:   # a run that ends at t = 0 (DDPM): the last positive-noise time
        t_final = 1.0 / getattr(run.schedule, "n_timesteps", 1000)
    rep = evaluate(run.samples, prior, lik, trajectory=run, t_final=t_final, schedule=run.schedule,
                   negligible=negligible, radius=radius, method=run.method, seed=seed)
    rep.t_final = run.t_final
    rep.params = dict(run.params)
    if isinstance(run.approximation, Approximation):
        times = run.times[:-1].tolist() if score_times is None else score_times
        rep.score_agreement = score_agreement(prior, lik, run.approximation, times, schedule=run.schedule,
                                              n_points=n_score_points, seed=seed)
    return rep
