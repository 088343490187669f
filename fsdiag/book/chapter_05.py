"""Chapter 5's bookkeeping: the two-mode problem, each sampler's mass per mode against the exact
one (single problem, sweep, digits), the page's tables and text, metrics and verdict."""
from __future__ import annotations

import numpy as np

__all__ = ["method_names", "gmm_problem", "mode_masses", "main_results", "main_table", "main_text", "sweep_row", "sweep_frame",
           "sweep_summary", "sweep_table", "sweep_text", "digit_problem", "digit_sample_rows", "digit_results",
           "digit_text", "mode_metrics"]


def method_names(zeta: float) -> dict:
    """{sampler key: name on the page}, ζ-DPS with its weight."""
    return {"exact": "exact sampler", "fsr": "FSR", "sigma_dps": "σ-DPS", "zeta_dps": f"ζ-DPS (ζ={zeta:g})",
            "pigdm": "ΠGDM", "tmpd": "TMPD"}


def gmm_problem(weight_1: float, sigma: float, *, mode_means, mode_std: float, n_atoms: int, y: float, seed: int,
                device="auto"):
    """(gmm, prior, lik): the two-component 1-D mixture with weights (weight_1, 1 - weight_1), its
    FSR (n_atoms atoms labelled by component, the same draw for every sigma) and the identity
    likelihood of y with noise sigma."""
    import torch

    from .. import GaussianLikelihood, forward, testbeds
    if not 0 < weight_1 < 1:
        raise ValueError(f"weight_1: expected a prior weight in (0, 1), got {weight_1!r}")
    gm = testbeds.GaussianMixture([weight_1, 1 - weight_1], [[float(m)] for m in mode_means], [mode_std ** 2] * 2)
    prior = gm.to_empirical(n_atoms, torch.Generator().manual_seed(seed), device=device)
    return gm, prior, GaussianLikelihood(forward.Identity(), [y], sigma)


def mode_masses(run, prior, psi, abar_min: float) -> dict:
    """diagnostics.mode_weights of a run's samples (each assigned to its nearest atom at abar_min)."""
    from ..diagnostics import atom_mass, mode_weights
    return mode_weights(atom_mass(prior, run.samples, abar_min), psi, prior.labels, run.samples.shape[0])


def _inside(md) -> list[bool]:
    return [lo <= e <= hi for lo, e, hi in zip(md["lower"], md["exact"], md["upper"])]


def main_results(reports: dict, closed, params: dict) -> dict:
    """metrics.json's "main": each sampler's mass per mode, interval, TV and whether the exact mass
    lies in its interval (params: pi_1, noise_std, y, n_particles, n_steps)."""
    main = {**{k: params[k] for k in ("pi_1", "noise_std", "y", "n_particles", "n_steps")},
            "exact_fsr": reports["fsr"].modes["exact"], "closed_form": np.asarray(closed).tolist(), "methods": {}}
    for name, rep in reports.items():
        md = rep.modes
        main["methods"][name] = {"mass": md["sampler"], "lower": md["lower"], "upper": md["upper"], "tv": md["tv"],
                                 "tv_atoms": rep.tv_atoms, "exact_inside_ci": all(_inside(md))}
    return main


def main_table(reports: dict, closed, mode_means, names: dict):
    """book.table of each sampler's mass per mode with its 95% interval."""
    from .tables import table
    rows = []
    for name, rep in reports.items():
        md = rep.modes
        for k in range(len(mode_means)):
            rows.append({"method": names[name], "mode": f"mode {k + 1} (μ = {mode_means[k]:g})",
                         "sampler": md["sampler"][k], "95% CI": f"[{md['lower'][k]:.3f}, {md['upper'][k]:.3f}]",
                         "exact (FSR)": md["exact"][k], "closed form": float(closed[k]),
                         "exact inside CI": _inside(md)[k]})
    return table(rows)


def main_text(main: dict, names: dict, n_atoms: int) -> str:
    """The page's sentence on the single problem."""
    approx = [m for m in main["methods"] if m not in ("exact", "fsr")]
    outside = [names[m] for m in approx if not main["methods"][m]["exact_inside_ci"]]
    return (f"The exact posterior puts **{main['exact_fsr'][0]:.3f}** of its mass on mode 1 "
            f"(closed form {main['closed_form'][0]:.3f}; the gap is the FSR's finite-N error with {n_atoms} atoms). "
            f"The exact sampler puts {main['methods']['exact']['mass'][0]:.3f} there and the FSR sampler "
            f"{main['methods']['fsr']['mass'][0]:.3f}. The approximations put "
            + ", ".join(f"{names[m]} {main['methods'][m]['mass'][0]:.3f}" for m in approx)
            + ". The exact mass lies outside the 95% interval of: " + (", ".join(outside) or "none of them") + ".")


def sweep_row(pi_1: float, noise_std: float, method: str, masses: dict, closed) -> dict:
    """One cell of the sweep: the exact, closed-form and sampled mass on mode 1 with the interval
    and TV (masses from mode_masses, closed the mixture posterior's weights)."""
    if not {"exact", "sampler", "lower", "upper", "tv"} <= set(masses):
        raise ValueError(f"masses: expected mode_masses' dict, got keys {sorted(masses)}")
    return {"pi_1": float(pi_1), "noise_std": float(noise_std), "method": method, "exact_mode1": masses["exact"][0],
            "closed_mode1": float(closed[0]), "mode1": masses["sampler"][0], "lower": masses["lower"][0],
            "upper": masses["upper"][0], "tv": masses["tv"]}


def sweep_frame(rows: list):
    """The sweep's rows as a DataFrame with each cell's error in the mass on mode 1 and whether the
    exact mass misses the interval."""
    import pandas as pd
    sweep = pd.DataFrame(rows)
    missing = {"mode1", "exact_mode1", "lower", "upper"} - set(sweep.columns)
    if missing:
        raise ValueError(f"rows: expected the keys mode1, exact_mode1, lower, upper; missing {sorted(missing)}")
    sweep["error"] = sweep["mode1"] - sweep["exact_mode1"]
    sweep["miss"] = (sweep["exact_mode1"] < sweep["lower"]) | (sweep["exact_mode1"] > sweep["upper"])
    return sweep


def sweep_summary(sweep, methods) -> dict:
    """{method: mean and largest error, misses, cells, mean and largest TV} over the sweep."""
    summary = {}
    for name in methods:
        sub = sweep[sweep.method == name]
        summary[name] = {"mean_abs_error": float(sub.error.abs().mean()), "max_abs_error": float(sub.error.abs().max()),
                         "misses": int(sub.miss.sum()), "cells": int(len(sub)), "mean_tv": float(sub.tv.mean()),
                         "max_tv": float(sub.tv.max())}
    return summary


def sweep_table(summary: dict, names: dict):
    """book.table of the sweep's summary, one row per method."""
    import pandas as pd

    from .tables import table
    return table(pd.DataFrame(summary).T.rename(index=names).rename_axis("method"),
                 names={"mean_tv": "mean TV", "max_tv": "max TV"})


def sweep_text(summary: dict, names: dict) -> str:
    """The page's sentence on the sweep."""
    approx = [m for m in summary if m != "fsr"]
    worst = max(approx, key=lambda m: summary[m]["max_abs_error"])
    return (f"Across the {summary['fsr']['cells']} cells the FSR sampler's mass on mode 1 is off by at most "
            f"**{summary['fsr']['max_abs_error']:.3f}**, and the exact mass lies outside its 95% interval in "
            f"{summary['fsr']['misses']} of them (chance alone gives about 5% of the cells). For the approximations: "
            + "; ".join(f"{names[m]} off by up to {summary[m]['max_abs_error']:.3f}, exact outside the interval in "
                        f"{summary[m]['misses']} cells" for m in approx)
            + f". The worst is {names[worst]}.")


def digit_problem(n_candidates: int, n_observed_rows: int, noise: float, seed: int, device="auto") -> dict:
    """scikit-learn's 8x8 digits (pixels scaled to [-1, 1]) past the first n_candidates as labelled
    atoms; each candidate's top n_observed_rows rows observed with Gaussian noise; the candidate
    whose exact class weights are the most uncertain (book.most_ambiguous) is the problem. Returns
    images, classes, prior, mask, lik, index, entropies."""
    import torch
    from sklearn.datasets import load_digits

    from .. import EmpiricalPrior, GaussianLikelihood, forward
    from .analysis import most_ambiguous
    if not 1 <= n_observed_rows <= 8:
        raise ValueError(f"n_observed_rows: expected 1 to 8, got {n_observed_rows!r}")
    data = load_digits()
    images = torch.tensor(data.data / 8.0 - 1.0, dtype=torch.float32)
    classes = torch.tensor(data.target)
    prior = EmpiricalPrior(images[n_candidates:], labels=classes[n_candidates:], device=device)
    mask = torch.arange(64) < 8 * n_observed_rows
    op = forward.Mask(mask)
    eps = torch.randn(n_candidates, int(mask.sum()), generator=torch.Generator().manual_seed(seed), dtype=torch.float32)
    candidates = (GaussianLikelihood(op, images[j][mask] + noise * eps[j], noise) for j in range(n_candidates))
    j_star, entropies = most_ambiguous(prior, candidates, 10)
    lik = GaussianLikelihood(op, images[j_star][mask] + noise * eps[j_star], noise)
    return {"images": images, "classes": classes, "prior": prior, "mask": mask, "lik": lik, "index": j_star,
            "entropies": entropies}


def digit_sample_rows(problem: dict, runs: dict, names: dict, abar_min: float, n_show: int = 8) -> list:
    """plots.image_rows_figure's rows: the truth and what is observed, then n_show samples of each
    run titled by the class of their nearest atom."""
    import torch
    j, mask, prior = problem["index"], problem["mask"], problem["prior"]
    observed = torch.full((64,), float("nan"))
    observed[mask] = problem["lik"].y.float()
    rows = [("", torch.stack([problem["images"][j], observed]).reshape(2, 8, 8).numpy(),
             [f"truth (class {int(problem['classes'][j])})", "observed"])]
    labels = prior.labels.cpu()
    for name, run in runs.items():
        x = run.samples[:n_show]
        nearest = prior.nearest_atoms(x, abar_min).cpu()
        rows.append((names[name], x.cpu().clamp(-1, 1).reshape(-1, 8, 8).numpy(), [str(int(labels[i])) for i in nearest]))
    return rows


def digit_results(problem: dict, reports: dict, params: dict) -> dict:
    """metrics.json's "digits": each sampler's class weights, TV, wrong-class mass and the classes
    whose exact weight misses its interval (params: n_particles, n_steps, noise_std)."""
    j = problem["index"]
    out = {"held_out_index": j, "true_class": int(problem["classes"][j]), "class_entropy": problem["entropies"][j],
           **params, "exact_classes": np.asarray(reports["exact"].modes["exact"]).tolist(), "methods": {}}
    for name, rep in reports.items():
        md = rep.modes
        out["methods"][name] = {"classes": md["sampler"], "lower": md["lower"], "upper": md["upper"], "tv": md["tv"],
                                "wrong_class_mass": rep.hallucination["prior_mode"],
                                "misses": int(sum(not ok for ok in _inside(md)))}
    return out


def digit_text(digits: dict, names: dict) -> str:
    """The page's sentence on the digits: the top exact classes, TVs and wrong-class masses."""
    exact, dm = np.asarray(digits["exact_classes"]), digits["methods"]
    top = np.argsort(exact)[::-1][:3]
    return ("Exact class weights: " + ", ".join(f"class {k}: {exact[k]:.3f}" for k in top)
            + ". TV between each sampler's class weights and the exact ones: "
            + ", ".join(f"{names[m]} {dm[m]['tv']:.3f}" for m in dm)
            + ". Mass on classes the exact posterior rules out (below 10⁻³): "
            + ", ".join(f"{names[m]} {dm[m]['wrong_class_mass']:.3f}" for m in dm) + ".")


def mode_metrics(config: dict, main: dict, sweep, summary: dict, digits, names: dict, *, sweep_pi, sweep_noise,
                 n_particles: int) -> dict:
    """metrics.json of chapter 5 with its verdict (shown on the page); config: seed, n_atoms,
    mode_means, mode_std, zeta, t_min, n_sweep_particles, n_sweep_steps, and y."""
    from .pages import verdict
    config = dict(config)
    y = config.pop("y")
    approx = [m for m in summary if m != "fsr"]
    metrics = {"config": config, "main": main, "sweep_summary": summary, "digits": digits,
               "sweep": {"n_particles": config["n_sweep_particles"],
                         "rows": sweep.drop(columns=["miss"]).to_dict(orient="records")},
               "tv": {"main": {m: main["methods"][m]["tv"] for m in main["methods"]},
                      "sweep_mean": {m: summary[m]["mean_tv"] for m in summary}}}
    worst_tv = max(approx, key=lambda m: summary[m]["mean_tv"])
    mc_sweep = 3 * 0.5 / np.sqrt(config["n_sweep_particles"]) + 0.02   # ~3 binomial sigma at p = 1/2, plus slack
    mc_main = 3 * 0.5 / np.sqrt(n_particles) + 0.02
    metrics["verdict"] = verdict(
        "The likelihood approximations get the relative weights of posterior modes wrong; the FSR sampler gets "
        "them right within Monte Carlo error.",
        [(f"sweep: mean TV over modes of the worst approximation ({names[worst_tv]}), vs 2 × FSR's + 0.03",
          summary[worst_tv]["mean_tv"], ">", 2 * summary["fsr"]["mean_tv"] + 0.03),
         ("sweep: FSR's largest error in the mass on mode 1, vs 3 binomial σ + 0.02",
          summary["fsr"]["max_abs_error"], "<", mc_sweep),
         ("single problem: FSR's error in the mass on mode 1, vs 3 binomial σ + 0.02",
          abs(main["methods"]["fsr"]["mass"][0] - main["exact_fsr"][0]), "<", mc_main)],
        regime=f"Two-component GMM prior ({config['n_atoms']} atoms), identity forward model, y = {y:g}; sweep over "
               f"π₁ ∈ {list(sweep_pi)} and σ ∈ {list(sweep_noise)} with {config['n_sweep_particles']} particles.")
    return metrics
