"""The leaderboard's work: profiles, one cell per sampler x problem x budget x seed, and running a
cell (`run_cell`, which never raises: a failing sampler fails its own cell alone)."""
from __future__ import annotations

import hashlib
import json
import math
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

__all__ = ["PROFILES", "Cell", "expand", "run_cell", "ROW_FIELDS", "spread_error"]

# A profile: problems, budgets (denoiser evaluations per particle), seeds, particles per run.
PROFILES = {
    "ci": {"problems": ["three_atoms", "gmm2d", "digits_inpainting"], "budgets": [24], "seeds": [0],
           "n_particles": 128, "description": "tiny: every sampler on three problems, one budget and seed (the tests)"},
    "cpu": {"problems": ["three_atoms", "gmm2d", "digits_inpainting", "digits_fourier_magnitude"],
            "budgets": [50, 250], "seeds": [0, 1, 2], "n_particles": 128,
            "description": "two toy and two image problems (one nonlinear), budgets 50 and 250, 3 seeds, "
                           "128 particles (a 2-core laptop: about an hour)"},
    "gpu": {"problems": ["three_atoms", "gmm2d", "digits_inpainting", "digits_box_inpainting", "digits_blur",
                         "digits_downsampling", "digits_fourier_magnitude", "textures_inpainting"],
            "budgets": [50, 100, 250, 1000], "seeds": [0, 1, 2], "n_particles": 1024,
            "description": "every problem and budget, 3 seeds, 1024 particles"},
    "paper": {"problems": ["three_atoms", "gmm2d", "digits_inpainting", "digits_box_inpainting", "digits_blur",
                           "digits_downsampling", "digits_fourier_magnitude", "textures_inpainting"],
              "budgets": [50, 100, 250, 1000], "seeds": [0, 1, 2, 3, 4], "n_particles": 4096,
              "description": "every problem and budget, 5 seeds, 4096 particles (GPU-sized)"},
}

# TV / floor divides by the floor, or by half of one sample's mass where the floor is smaller (an
# exact posterior on one mode has floor 0: n exact draws match it exactly, and no sampler can do
# better than one sample's resolution).
RESOLUTION = 0.5

ROW_FIELDS = ("sampler", "family", "problem", "nfe", "seed", "nfe_used", "n_steps", "n_particles", "tv_modes",
              "tv_floor", "tv_floor_q95", "tv_ratio", "excluded_mass", "off_support", "spread_error", "wall_s",
              "status", "error")


@dataclass
class Cell:
    """One sampler on one problem at one budget and seed. `add`: the user's 'file.py:fn' (or an
    installed entry point's name, with `entry_point` True) when the sampler is not built in."""

    sampler: str
    problem: str
    budget: int
    seed: int
    n_particles: int
    add: str | None = None
    entry_point: bool = False
    out: str = ""                       # the folder of cells/<key>.json
    key: str = field(default="")

    def __post_init__(self):
        if not self.key:
            from .. import __version__
            h = hashlib.sha256(json.dumps([self.sampler, self.problem, self.budget, self.seed, self.n_particles,
                                           self.add, __version__]).encode())
            if self.add and not self.entry_point and ":" in self.add:
                path = Path(self.add.rsplit(":", 1)[0])
                if path.is_file():
                    h.update(path.read_bytes())        # an edited sampler file is a new cell
            self.key = h.hexdigest()[:16]

    @property
    def path(self) -> Path:
        return Path(self.out) / "cells" / f"{self.key}.json"


def expand(profile: str, *, samplers, problems=None, adds=(), out: str = "") -> list[Cell]:
    """The cells of a profile for these sampler names (built-in) and added ones ((name, spec,
    is_entry_point)), in a stable order."""
    spec = PROFILES[profile]
    problems = spec["problems"] if problems is None else problems
    cells = []
    for problem in problems:
        for budget in spec["budgets"]:
            for seed in spec["seeds"]:
                for name in samplers:
                    cells.append(Cell(name, problem, budget, seed, spec["n_particles"], out=out))
                for name, where, is_ep in adds:
                    cells.append(Cell(name, problem, budget, seed, spec["n_particles"], add=where,
                                      entry_point=is_ep, out=out))
    return cells


class _OverBudget(Exception):
    """The sampler cannot take a single step within the budget."""


def _entry(cell: Cell):
    from .entries import ENTRIES, installed_entries, user_entry

    if cell.add is None:
        return ENTRIES[cell.sampler]
    if cell.entry_point:
        return next(e for e in installed_entries() if e.name == cell.sampler)
    from ..cli_diagnose import load_function
    return user_entry(load_function(cell.add, "--add"), cell.sampler)


def spread_error(samples: torch.Tensor, prior, psi: torch.Tensor) -> float:
    """Per-pixel spread error: mean over coordinates of |sd of the samples - sd of the exact
    posterior|, relative to the exact posterior's mean sd (0: the right spread everywhere)."""
    x = prior.atoms.to(torch.float64)
    w = psi.to(torch.float64)
    mean = w @ x
    sd_exact = (w @ (x - mean) ** 2).clamp_min(0).sqrt()
    sd = samples.to(torch.float64).std(0, unbiased=True)
    return float((sd - sd_exact).abs().mean() / sd_exact.mean().clamp_min(1e-12))


def run_cell(cell: Cell) -> dict:
    """Run and judge one cell; write cells/<key>.json atomically; return its row. Never raises."""
    from .. import evaluate
    from ..outputs import atomic_write
    from ..problems import as_samples, make_problem
    from ..sampling import count_evaluations
    from .entries import steps_for_budget

    row = dict.fromkeys(ROW_FIELDS)
    row.update(sampler=cell.sampler, problem=cell.problem, nfe=cell.budget, seed=cell.seed,
               n_particles=cell.n_particles, status="failed", key=cell.key)
    try:
        entry = _entry(cell)
        row["family"] = entry.family
        problem = make_problem(cell.problem, seed=0)
        if entry.linear_only and not getattr(problem.forward, "is_linear", False):
            row.update(status="n/a", error=f"{cell.sampler} needs a linear forward model")
        elif entry.images_only and problem.image_shape is None:
            row.update(status="n/a", error=f"{cell.sampler} needs an image problem")
        else:
            n_steps, per_step = steps_for_budget(entry, problem, cell.budget) if entry.calibrated else (None, 0)
            if n_steps == 0:
                raise _OverBudget(f"one step costs {per_step:.0f} evaluations per particle, more than the budget")
            start = time.perf_counter()
            with count_evaluations(problem.prior) as counter:
                out = (entry.run(problem, n_steps, cell.n_particles, cell.seed) if entry.calibrated
                       else entry.run(problem, None, cell.n_particles, cell.seed, budget=cell.budget))
            wall = time.perf_counter() - start
            x = as_samples(out, problem)
            report = evaluate(x, problem.prior, problem.lik, method=cell.sampler, seed=cell.seed,
                              t_final=entry.t_final)
            floor, q95 = report.tv_floor_modes, report.floor["modes"]["q95"]
            psi = torch.tensor(report.exact_weights, dtype=torch.float64)
            row.update(status="done", n_steps=n_steps, nfe_used=counter.total / cell.n_particles,
                       tv_modes=report.tv_modes, tv_floor=floor, tv_floor_q95=q95,
                       tv_ratio=report.tv_modes / max(floor, RESOLUTION / cell.n_particles),
                       excluded_mass=report.excluded_mass,
                       off_support=report.hallucination["off_support"], wall_s=wall,
                       spread_error=spread_error(x, problem.prior, psi) if problem.image_shape else math.nan)
    except _OverBudget as err:
        row.update(status="n/a", error=str(err))
    except Exception as err:  # noqa: BLE001 - a failing cell is reported, never raised
        last = traceback.extract_tb(err.__traceback__)[-1] if err.__traceback__ else None
        where = f" ({Path(last.filename).name}:{last.lineno})" if last else ""
        row["error"] = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}{where}"
    if cell.out:
        cell.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(cell.path, json.dumps({"cell": asdict(cell), "row": row}, indent=1, default=str))
    return row
