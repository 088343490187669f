"""The judge: samples from any code against the exact finite-sample posterior (docs/design.md §5).

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
from .assign import SUPPORT_FRACTION, atom_masses, atom_spacing, copies_of, sample_rows
from .diagnostics import (check_prior, check_run, early_stopping, mode_weights, monte_carlo_floor, score_agreement,
                          sliced_wasserstein, spread, support_set, total_variation)
from .methods import Approximation
from .posterior import posterior_weights
from .prior import EmpiricalPrior
from .schedules import VPSchedule

__all__ = ["Report", "evaluate", "diagnose", "hallucination"]


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


def hallucination(modes: dict, mass: torch.Tensor, psi: torch.Tensor, dist: torch.Tensor, x0: torch.Tensor, lik, *,
                  negligible: float, level: float, fit_level: float, radius: float, radius_rule: str) -> dict:
    """The one hallucination measure (docs/design.md §5.4), from an assignment (`fsdiag.assign`):
    mass on modes whose exact mass is below `negligible` (`prior_mode`); mass outside the smallest
    sets of atoms / modes holding `level` of the exact mass; samples farther than `radius` from
    their atom (`off_support`), and those of them whose clean estimate x0 still fits y (a
    chi-square test at `fit_level`: `likelihood_mode`). modes: `mode_weights`' dict with the
    modes' names; mass, psi (N,) float64: the sampler's and the exact mass per atom; dist (n,):
    each sample's distance to its atom."""
    exact_modes, sampler_modes = np.asarray(modes["exact"]), np.asarray(modes["sampler"])
    absent = exact_modes < negligible
    in_atoms, in_modes = support_set(psi.numpy(), level), support_set(exact_modes, level)
    off = dist > radius
    r = lik.residual(x0) / lik.noise_std.to(x0)
    fits = (r * r).sum(1) <= stats.chi2.ppf(fit_level, lik.obs_dim)
    return {"prior_mode": float(sampler_modes[absent].sum()),
            "absent_modes": [lab for lab, ab in zip(modes["labels"], absent) if ab],
            "level": level,
            "outside_support_atoms": float(1.0 - mass.numpy()[in_atoms].sum()),
            "outside_support_modes": float(1.0 - sampler_modes[in_modes].sum()),
            "support_atoms": int(in_atoms.size),
            "support_modes": [modes["labels"][i] for i in in_modes],
            "off_support": float(off.double().mean()),
            "likelihood_mode": float((off & fits.to(off.device)).double().mean()),
            "radius": float(radius),
            "radius_rule": radius_rule}


def evaluate(samples, prior: EmpiricalPrior, lik, *, trajectory=None, labels=None, t_final: float | None = None,
             schedule=None, negligible: float = 1e-3, level: float = 0.99, radius: float | None = None,
             fit_level: float = 0.99, method: str = "samples", seed: int = 0) -> Report:
    """Judge samples (n, d) or (n, C, H, W) from any sampler against the exact FSR posterior.

    Each sample is assigned to an atom: the nearest one (Euclidean) for clean samples, or with
    `t_final` (samples still carrying the noise of time t_final under `schedule`, default the
    paper's VP schedule) the most responsible one at that time. Modes are `labels` (one integer
    per atom), else the prior's labels, else the atoms themselves.

    Hallucination is measured against the exact posterior's support (`hallucination`): the mass on
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
    halluc = hallucination(modes, mass, w, dist, x0, lik, negligible=negligible, level=level,
                           fit_level=fit_level, radius=radius, radius_rule=rule)
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
    agreement of its approximation's likelihood score with the exact one (docs/design.md §5.5)."""
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
