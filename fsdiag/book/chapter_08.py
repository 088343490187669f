"""Chapter 8's bookkeeping: the off-support radius of a run, the tables of the judged samplers,
the command-line run of a user's sampler, each report's summary, the page's text, metrics and
verdict."""
from __future__ import annotations

import math

import numpy as np

__all__ = ["off_support_radius", "report_tables", "run_cli", "finite", "report_summary", "tempered_check",
           "diagnose_metrics", "diagnose_text", "diagnose_verdict"]


def off_support_radius(run, t_min: float, dim: int) -> float:
    """b (sqrt(dim) + 3), with b the noise the run's last step leaves: sqrt(1 - abar) of the last
    DDPM step, or the larger of sqrt(1 - abar(t_min)) and the last Euler-Maruyama step's noise."""
    from .. import DDPMSchedule, VPSchedule
    if not isinstance(dim, int) or dim < 1:
        raise ValueError(f"dim: expected a positive dimension, got {dim!r}")
    vp = VPSchedule()
    grid = run.schedule.time_grid(run.n_steps, t_min)
    t_last, t_end = float(grid[-2]), float(grid[-1])
    if isinstance(run.schedule, DDPMSchedule):
        b2 = 1 - run.schedule.alpha_bar(t_last)
    else:
        b2 = max(1 - vp.alpha_bar(t_end), vp.beta(t_last) * (t_last - t_end))
    return math.sqrt(b2) * (math.sqrt(dim) + 3)


def report_tables(reports: dict, names: dict):
    """(book.table of each report's TVs, W1s and hallucination rates, book.table of its mass per
    mode with the exact masses as the last row)."""
    import pandas as pd

    from .tables import table
    scores = pd.DataFrame({label: {"TV atoms": rep.tv_atoms, "TV modes": rep.modes["tv"], "W₁": rep.wasserstein,
                                   "W₁ Tweedie": rep.wasserstein_tweedie,
                                   "prior-mode": rep.hallucination["prior_mode"],
                                   "off-support": rep.hallucination["off_support"]}
                           for label, rep in reports.items()}).T
    modes = pd.DataFrame({label: dict(zip((f"mode {k}" for k in rep.modes["labels"]), rep.modes["sampler"]))
                          for label, rep in reports.items()}).T
    ref = next(iter(reports.values())).modes
    modes.loc["exact"] = dict(zip((f"mode {k}" for k in ref["labels"]), ref["exact"]))
    return table(scores.rename_axis("sampler"), names=names), table(modes.rename_axis("sampler"), names=names)


def run_cli(sampler, *, problem: str, n_samples: int, seed: int, max_tv: float):
    """Write `sampler`'s source into a temporary my_sampler.py and judge it with `fsdiag diagnose`
    (a subprocess): (the completed process, its report.json as a dict)."""
    import inspect
    import json
    import subprocess
    import sys
    import tempfile
    from pathlib import Path
    if not callable(sampler):
        raise TypeError(f"sampler: expected a function, got {type(sampler).__name__}")
    with tempfile.TemporaryDirectory(prefix="fsdiag-cli-") as tmp:
        workdir = Path(tmp)
        (workdir / "my_sampler.py").write_text("import torch\n\n\n" + inspect.getsource(sampler))
        cli = subprocess.run([sys.executable, "-m", "fsdiag", "diagnose", f"{workdir / 'my_sampler.py'}:{sampler.__name__}",
                              "--problem", problem, "--n-samples", str(n_samples), "--seed", str(seed),
                              "--max-tv", str(max_tv), "--out", str(workdir / "report")],
                             capture_output=True, text=True)
        path = workdir / "report" / "report.json"
        if not path.exists():
            raise RuntimeError(f"fsdiag diagnose wrote no report (exit {cli.returncode}): {cli.stderr[-2000:]}")
        return cli, json.loads(path.read_text())


def finite(obj) -> bool:
    """True when every number in a nested report is finite (None and strings are skipped)."""
    if isinstance(obj, dict):
        return all(finite(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return all(finite(v) for v in obj)
    if isinstance(obj, (int, float)) and not isinstance(obj, bool):
        return math.isfinite(obj)
    return True


def report_summary(rep) -> dict:
    """What metrics.json keeps of one fsdiag.diagnose report."""
    d = rep.to_dict()
    return {"tv_atoms": rep.tv_atoms, "tv_modes": rep.modes["tv"], "wasserstein": rep.wasserstein,
            "wasserstein_tweedie": rep.wasserstein_tweedie, "modes": rep.modes["sampler"],
            "modes_lower": rep.modes["lower"], "modes_upper": rep.modes["upper"],
            "hallucination": {k: rep.hallucination[k] for k in ("prior_mode", "off_support", "likelihood_mode")},
            "max_var_ratio": max(rep.spread["var_ratio"]), "min_var_ratio": min(rep.spread["var_ratio"]),
            "score_norm_ratio_median": float(np.nanmedian(rep.score_agreement["norm_ratio"])),
            "score_cosine_mean": float(np.nanmean(rep.score_agreement["cosine"])),
            "finite": finite({k: d[k] for k in ("atom_mass", "modes", "hallucination", "spread", "early_stopping",
                                                "score_agreement", "tv_atoms", "wasserstein", "wasserstein_tweedie")})}


def tempered_check(prior, run_a, run_b, t_min: float) -> dict:
    """How close two runs are: TV between their masses per atom (at abar(t_min)) and the largest
    difference between their particles."""
    from .. import VPSchedule
    from ..diagnostics import atom_mass, total_variation
    abar = VPSchedule().alpha_bar(t_min)
    a = atom_mass(prior, run_a.samples, abar).cpu().numpy()
    b = atom_mass(prior, run_b.samples, abar).cpu().numpy()
    return {"tv_between": total_variation(a, b),
            "max_abs_sample_difference": float((run_a.samples - run_b.samples).abs().max()),
            "n_particles": int(run_a.samples.shape[0])}


def diagnose_metrics(config: dict, reports: dict, *, worst: float, check: dict, closed, new, lens_report, cli,
                     cli_report, max_tv: float, registered: dict) -> dict:
    """metrics.json of chapter 8 (without the verdict)."""
    lens = lens_report.to_dict()
    return {"config": config, "registered": registered, "one_step_check": worst,
            "exact_modes": reports["fsr"].modes["exact"], "closed_form_modes": list(closed),
            "tempered_vs_sigma_dps": check, "methods": {label: report_summary(rep) for label, rep in reports.items()},
            "new_methods": list(new),
            "lens": {"gmm2d": {k: lens[k] for k in ("tv_modes", "tv_floor_modes", "tv_atoms", "tv_floor_atoms",
                                                     "excluded_mass")},
                     "cli": {"exit_code": cli.returncode, "passed": cli_report["passed"], "max_tv": max_tv,
                             **{k: cli_report["report"][k] for k in ("tv_modes", "tv_floor_modes", "excluded_mass")}}}}


def diagnose_text(metrics: dict) -> str:
    """The page's summary of the new methods, the FSR and the user's sampler."""
    m, lens, check = metrics["methods"], metrics["lens"], metrics["tempered_vs_sigma_dps"]
    return (f"At T = 1 the tempered DPS reproduces σ-DPS: TV between their masses per atom "
            f"{check['tv_between']:.4f}, largest difference between particles {check['max_abs_sample_difference']:.1e}. "
            + " ".join(f"**{label}**: TV over modes {m[label]['tv_modes']:.3f}, prior-mode hallucination "
                       f"{m[label]['hallucination']['prior_mode']:.3f}, off-support "
                       f"{m[label]['hallucination']['off_support']:.3f}, median score-norm ratio "
                       f"{m[label]['score_norm_ratio_median']:.2f}." for label in metrics["new_methods"][1:])
            + f" For comparison the FSR: TV over modes {m['fsr']['tv_modes']:.3f}, prior-mode hallucination "
            f"{m['fsr']['hallucination']['prior_mode']:.3f}."
            + f" The DPS-style sampler of section 3 on the 2-D mixture: TV over modes {lens['gmm2d']['tv_modes']:.3f} "
            f"(floor {lens['gmm2d']['tv_floor_modes']:.3f}), over atoms {lens['gmm2d']['tv_atoms']:.3f} "
            f"(floor {lens['gmm2d']['tv_floor_atoms']:.3f}); on digits, TV over classes {lens['cli']['tv_modes']:.3f} "
            f"(floor {lens['cli']['tv_floor_modes']:.3f}), so `fsdiag diagnose` exits {lens['cli']['exit_code']} "
            f"at --max-tv {lens['cli']['max_tv']:g}.")


def diagnose_verdict(metrics: dict, *, n_atoms: int, noise_std: float, n_particles: int, n_lens_samples: int) -> dict:
    """Chapter 8's verdict (shown on the page)."""
    from .pages import verdict
    m, lens = metrics["methods"], metrics["lens"]
    lens_ratio = lens["gmm2d"]["tv_atoms"] / max(lens["gmm2d"]["tv_floor_atoms"], 1e-12)
    return verdict(
        "Any sampler can be judged against the exact posterior: a new approximation plugs in and reproduces what it "
        "should, the FSR is the reference, and a sampler that only calls the exact denoiser is told apart from the "
        "Monte Carlo floor.",
        [("original DPS: largest relative difference to its update, over three steps", metrics["one_step_check"],
          "<", 1e-8),
         ("tempered DPS at T = 1 vs σ-DPS: TV between masses per atom, vs 3 / √N",
          metrics["tempered_vs_sigma_dps"]["tv_between"], "<=", 3 / math.sqrt(n_particles)),
         ("FSR: prior-mode hallucination", m["fsr"]["hallucination"]["prior_mode"], "<=", 0.02),
         ("DPS-style sampler on the exact denoiser (gmm2d): TV over atoms / Monte Carlo floor", lens_ratio, ">", 1.0)],
        regime=f"Four-mode 2-D GMM prior ({n_atoms} atoms), y = x₁ + x₂ = 0, noise {noise_std:g}; "
               f"{n_particles} particles, {n_lens_samples} samples of the DPS-style sampler.")
