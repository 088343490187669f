"""Chapter 13's bookkeeping (imaging): the held-out problem, the Tweedie blur curve, each
problem's summary, the figures' inputs, tables, the growth sweep, the page's text, metrics and
verdict."""
from __future__ import annotations

import numpy as np

__all__ = ["NAMES", "OP_TITLES", "runnable", "ambiguous_likelihood", "blur_curve", "summarise", "coverage_text",
           "map_problems", "class_problems", "class_tables", "tweedie_panels", "add_sweep_size", "first_atoms", "problem_line", "sweep_metrics", "sweep_table",
           "imaging_summary", "imaging_text", "imaging_metrics"]

NAMES = {"exact": "exact sampler", "fsr": "FSR", "sigma_dps": "σ-DPS", "zeta_dps": "ζ-DPS", "pigdm": "ΠGDM",
         "tmpd": "TMPD"}
OP_TITLES = {"inpainting": "random-pixel inpainting", "box_inpainting": "box inpainting",
             "gaussian_blur": "Gaussian blur", "downsampling": "2× downsampling",
             "fourier_magnitude": "Fourier magnitude"}


def runnable(method: str, A) -> bool:
    """Whether `method` runs with forward model A: ΠGDM and TMPD need a linear A."""
    from .. import METHODS
    if method not in METHODS:
        raise ValueError(f"method: expected one of {sorted(METHODS)}, got {method!r}")
    return A.is_linear or not METHODS[method].linear_only


def ambiguous_likelihood(prior, A, held, k: int, *, noise_std: float, seed: int):
    """(lik, j): y_j = A(truth_j) + noise for every held-out candidate (noise drawn with `seed`),
    and the one whose exact class weights have the highest entropy (book.most_ambiguous)."""
    import torch

    from .. import GaussianLikelihood
    from .analysis import most_ambiguous
    g = torch.Generator().manual_seed(seed)
    liks = [GaussianLikelihood(A, A(t[None].double())[0] + noise_std * torch.randn(
        A.out_dim(t.numel()), generator=g, dtype=torch.float64), noise_std) for t in held.truths]
    j, _ = most_ambiguous(prior, liks, k)
    return liks[j], j


def blur_curve(run, prior, shape) -> list[float]:
    """Per recorded time: 1 - gradient energy of the Tweedie mean / the responsibility-weighted
    energy of the atoms it averages: 0 when one atom dominates, towards 1 when averaging cancels
    the atoms' detail (the energy is a convex quadratic, so the ratio is at most 1)."""
    from .. import imaging
    energy = imaging.gradient_energy(prior.atoms.cpu(), shape).to(prior.device, prior.dtype)
    step = max(1, (1 << 22) // prior.n_atoms)
    out = []
    for t, x, m in zip(run.times.tolist(), run.trajectory, run.tweedie):
        abar = run.schedule.alpha_bar(t)
        parts = float(sum((prior.responsibilities(x[s:s + step], abar) @ energy).sum() for s in range(0, len(x), step)))
        out.append(1.0 - float(imaging.gradient_energy(m.cpu(), shape).sum()) / max(parts, 1e-30))
    return out


def summarise(prior, lik, held, j: int, runs: dict, reports: dict, shape, k: int) -> dict:
    """One problem's results: the truth and observation, exact class weights and ESS, each
    sampler's class weights with intervals, TV and floor, ruled-out mass, mean-map error, spread,
    blur curve and Tweedie strip; "maps" holds the per-pixel mean and std maps."""
    from .. import imaging, posterior_weights
    from .analysis import class_weights
    psi = posterior_weights(prior, lik).double().cpu()
    ex_mean, ex_std = imaging.pixel_moments(prior.atoms.cpu().reshape(-1, *shape), psi)
    exact_cw = class_weights(prior, psi, k)
    maps = {"exact posterior": {"mean": ex_mean.tolist(), "std": ex_std.tolist()}}
    res = {"truth_label": int(held.truth_labels[j]), "exact_classes": exact_cw.tolist(),
           "ess": float(1 / (psi ** 2).sum()), "truth": held.truths[j].reshape(shape).tolist(),
           "observed": imaging.observed_image(lik.forward, lik.y).tolist(), "methods": {}}
    for name, run in runs.items():
        rep = reports[name]
        mean, std = imaging.pixel_moments(run.denoised.cpu().reshape(-1, *shape))
        maps[name] = {"mean": mean.tolist(), "std": std.tolist()}
        full = {key: np.zeros(k) for key in ("classes", "lower", "upper")}
        for key, src in (("classes", "sampler"), ("lower", "lower"), ("upper", "upper")):
            full[key][np.asarray(rep.modes["labels"])] = rep.modes[src]
        res["methods"][name] = {
            **{key: v.tolist() for key, v in full.items()}, "tv_modes": rep.tv_modes,
            "floor_mean": rep.floor["modes"]["mean"], "floor_q95": rep.floor["modes"]["q95"],
            "excluded_mass": float(full["classes"][exact_cw.numpy() < 1e-3].sum()),
            "mean_rmse": float((mean - ex_mean).pow(2).mean().sqrt()),
            "std_ratio": float(std.mean() / ex_std.mean().clamp_min(1e-12)),
            "times": run.times.tolist(), "blur": blur_curve(run, prior, shape),
            "tweedie_strip": [m[0].reshape(shape).tolist() for m in run.tweedie.cpu()]}
    res["maps"] = maps
    return res


def coverage_text(coverage: dict, pool: int, n_images: int) -> str:
    """The page's sentence on how densely the texture patches cover their images."""
    return (f"The texture pool has {coverage[pool]['positions']:,} window positions ({n_images} images). "
            + " ".join(f"At N = {n:,}, {c['repeat_fraction']:.2%} of the patches repeat another's position and each "
                       f"has {c['neighbours']:.2f} others one pixel away on average." for n, c in coverage.items())
            + (" Many held-out truths therefore have near-copies among the atoms, which the exact posterior can "
               "concentrate on." if coverage[pool]["neighbours"] >= 1 else ""))


def map_problems(results: dict, key: str, operators) -> list:
    """plots.images.posterior_maps_figure's problems of data set `key`, one per operator."""
    return [{"title": OP_TITLES[op], "truth": results[key, op]["truth"], "observed": results[key, op]["observed"],
             "maps": results[key, op]["maps"]} for op in operators]


def class_problems(results: dict, key: str, operators) -> list:
    """plots.images.operator_class_weights_figure's problems of data set `key`, one per operator."""
    return [{"title": OP_TITLES[op], "exact": results[key, op]["exact_classes"], "methods": results[key, op]["methods"]}
            for op in operators]


def class_tables(results: dict, keys) -> list:
    """[(data set, book.table)]: per operator and sampler, TV over classes with its floor,
    ruled-out mass, mean-map RMSE and std ratio (one table per data set, so that no row wraps)."""
    from .tables import table
    return [(key, table([{"operator": OP_TITLES[op], "sampler": name, "TV (classes)": r["tv_modes"],
                          "MC floor (95%)": r["floor_q95"], "ruled-out mass": r["excluded_mass"],
                          "mean-map RMSE": r["mean_rmse"], "std ratio": r["std_ratio"]}
                         for (key_, op), res in results.items() if key_ == key for name, r in res["methods"].items()]))
            for key in keys]


def tweedie_panels(results: dict, keys, op: str) -> tuple[list, list]:
    """plots.images.tweedie_blur_figure's (strips, curves) under operator `op`, one per data set."""
    strips = [{"title": f"{key}, {OP_TITLES[op]}", "times": next(iter(results[key, op]["methods"].values()))["times"],
               "rows": {n: r["tweedie_strip"] for n, r in results[key, op]["methods"].items()}} for key in keys]
    curves = [{"title": s["title"], "times": s["times"],
               "blur": {n: r["blur"] for n, r in results[key, op]["methods"].items()}} for key, s in zip(keys, strips)]
    return strips, curves


def sweep_metrics(sweep: dict, operator: str) -> dict:
    """The growth sweep for metrics.json: sizes, ESS, wall times and each sampler's TV, floor,
    excluded mass and TV above the floor per size (sweep["methods"]: {name: [reports]})."""
    return {"sizes": sweep["sizes"], "ess": sweep["ess"], "wall_s": sweep["wall_s"], "operator": operator,
            "methods": {name: {"tv_modes": [r.tv_modes for r in reps],
                               "floor_q95": [r.floor["modes"]["q95"] for r in reps],
                               "excluded": [r.excluded_mass for r in reps],
                               "tv_above_floor": [r.tv_modes - r.floor["modes"]["q95"] for r in reps]}
                        for name, reps in sweep["methods"].items()}}


def sweep_table(sweep_m: dict):
    """book.table of the sweep: per N the exact ESS, wall time and each sampler's TV."""
    from .tables import table
    return table([{"atoms N": n, "exact ESS": e, "wall time (s)": w,
                   **{f"{name} TV": m["tv_modes"][i] for name, m in sweep_m["methods"].items()}}
                  for i, (n, e, w) in enumerate(zip(sweep_m["sizes"], sweep_m["ess"], sweep_m["wall_s"]))])


def _blur_gain(res):
    # The exact sampler's blur at the recorded time nearest t = 0.3 minus its blur at t_min.
    r = res["methods"][NAMES["exact"]]
    i = int(np.argmin(np.abs(np.log(np.asarray(r["times"]) / 0.3))))
    return r["blur"][i] - r["blur"][-1], r["times"][i]


def imaging_summary(results: dict, keys, sweep_m: dict) -> dict:
    """The numbers the verdict reads: exact and FSR gaps to the floor, the largest ruled-out mass
    (and where), worst TV above the floor per data set, blur gains, the sweep's last TVs above the
    floor and each sampler's mean std ratio."""
    exact_, fsr = NAMES["exact"], NAMES["fsr"]

    def approx(res):
        return {n: r for n, r in res["methods"].items() if n not in (exact_, fsr)}
    worst = max(((r["excluded_mass"], n, key, op) for (key, op), res in results.items()
                 for n, r in approx(res).items()), default=(float("nan"), "", "", ""))
    gains = {f"{key}, {OP_TITLES[op]}": _blur_gain(res) for (key, op), res in results.items()}
    names = dict.fromkeys(n for res in results.values() for n in res["methods"])
    return {
        "exact_gap": max(res["methods"][exact_]["tv_modes"] - res["methods"][exact_]["floor_q95"]
                         for res in results.values()),
        "fsr_gap": max((res["methods"][fsr]["tv_modes"] - res["methods"][fsr]["floor_q95"]
                        for res in results.values() if fsr in res["methods"]), default=float("nan")),
        "max_excluded": worst[0], "max_excluded_where": list(worst[1:]),
        "worst_tv_above_floor": {key: max((r["tv_modes"] - r["floor_q95"] for (k2, _), res in results.items()
                                           if k2 == key for r in approx(res).values()), default=float("nan"))
                                 for key in keys},
        "blur_gain": {k: g for k, (g, _) in gains.items()},
        "sweep_last_tv_above_floor": {n: m["tv_above_floor"][-1] for n, m in sweep_m["methods"].items()
                                      if n not in (exact_, fsr)},
        "std_ratio": {n: np.mean([res["methods"][n]["std_ratio"] for res in results.values() if n in res["methods"]])
                      for n in names}}


def imaging_text(summary: dict, n_problems: int, n_steps: int, skipped: dict, sweep_m: dict) -> str:
    """The page's summary paragraphs."""
    where = summary["max_excluded_where"]
    gains = summary["blur_gain"].values()
    lines = [f"**Exact samplers.** Over the {n_problems} problems the exact sampler's TV over classes exceeds the 95% "
             f"Monte Carlo quantile by at most {summary['exact_gap']:.3f}; the FSR (the exact score, Euler-Maruyama "
             f"with {n_steps} steps) by at most {summary['fsr_gap']:.3f}.",
             f"**Ruled-out classes.** The largest mass an approximation puts on classes the exact posterior rules out "
             f"is {summary['max_excluded']:.2f} ({where[0]}, {where[1]}, {OP_TITLES.get(where[2], '')})."
             + " Worst TV above the floor per data set: "
             + ", ".join(f"{k} {v:.2f}" for k, v in summary["worst_tv_above_floor"].items()) + ".",
             "**Tweedie blur.** The exact sampler's blur at the recorded time nearest t = 0.3 exceeds its blur at "
             f"$t_{{\\min}}$ by {min(gains):.2f} to {max(gains):.2f}.",
             "**Spread.** Mean per-pixel standard deviation of each sampler's output over the exact posterior's, "
             "averaged over the problems: " + ", ".join(f"{n} {v:.2f}" for n, v in summary["std_ratio"].items()) + "."]
    skipped = {op: ms for op, ms in skipped.items() if ms}
    if skipped:
        lines.append("Not run (linear operators only): " + "; ".join(
            f"{', '.join(NAMES[m] for m in ms)} on {OP_TITLES[op]}" for op, ms in skipped.items()) + ".")
    if sweep_m["sizes"]:
        lines.append("**Growing N.** At N = " + ", ".join(f"{n:,}" for n in sweep_m["sizes"]) + " the exact "
                     "posterior's effective sample size is " + ", ".join(f"{e:.1f}" for e in sweep_m["ess"])
                     + " (it need not grow: it depends on how close the new atoms fall to y); at the largest N the "
                     "approximations' TV over classes above the floor is "
                     + ", ".join(f"{n} {v:.2f}" for n, v in summary["sweep_last_tv_above_floor"].items())
                     + f" (the sweep took {sum(sweep_m['wall_s']):.0f} s).")
    return "\n\n".join(lines)


def imaging_metrics(params: dict, results: dict, summary: dict, sweep_m: dict, *, class_names: dict,
                    coverage: dict, skipped: dict, n_digit_atoms: int) -> dict:
    """metrics.json of chapter 13 with its verdict (shown on the page)."""
    from .pages import verdict
    metrics = {"params": params, "class_names": class_names,
               "texture_coverage": {str(n): {kk: v for kk, v in c.items() if kk != "sources"}
                                    for n, c in coverage.items()},
               "problems": {f"{key}/{op}": {kk: v for kk, v in res.items() if kk != "maps"}
                            for (key, op), res in results.items()},
               "skipped": skipped, "sweep": sweep_m, "summary": summary}
    last = summary["sweep_last_tv_above_floor"]
    evidence = [("exact sampler: largest TV over classes above the 95% Monte Carlo quantile", summary["exact_gap"],
                 "<=", 0.05),
                ("largest mass an approximation puts on classes the exact posterior rules out",
                 summary["max_excluded"], ">", 0.05),
                *[(f"{k}: worst approximation's TV over classes above the floor", v, ">", 0.1)
                  for k, v in summary["worst_tv_above_floor"].items()],
                ("smallest Tweedie-mean blur gain of the exact sampler, t = 0.3 vs t_min",
                 min(summary["blur_gain"].values()), ">", 0.2)]
    if last:
        evidence.append((f"N = {sweep_m['sizes'][-1]}: worst approximation's TV over classes above the floor",
                         max(last.values()), ">", 0.05))
    p = params
    metrics["verdict"] = verdict(
        f"On images (8×8 digits and {p['patch_size']}×{p['patch_size']} texture patches, {len(p['operators'])} "
        "operators) approximate samplers put mass on classes the exact posterior rules out and get class weights "
        "wrong, the exact sampler does not, early-stopped Tweedie means are blurred, and the failures persist as N "
        "grows.",
        evidence,
        regime=f"noise {p['noise_std']:g}; {p['n_particles']} particles, {p['n_steps']} steps; {n_digit_atoms} digit "
               f"atoms, {p['n_patches']} texture atoms ({p['patch_size']}×{p['patch_size']}); "
               f"sweep N = {', '.join(map(str, p['sweep_sizes'])) or 'none'}.")
    return metrics


def add_sweep_size(sweep: dict, n: int, wall_s: float, psi) -> str:
    """Record one size of the growth sweep (its wall time and the exact posterior's ESS from its
    weights psi) and return the line the page prints for it."""
    if len(sweep["methods"]) and any(len(reps) != len(sweep["sizes"]) + 1 for reps in sweep["methods"].values()):
        raise ValueError("sweep: expected one new report per sampler before adding a size")
    sweep["sizes"].append(n)
    sweep["wall_s"].append(wall_s)
    sweep["ess"].append(float(1 / (psi.double() ** 2).sum()))
    return (f"N = {n}: exact ESS {sweep['ess'][-1]:.1f}, {sweep['wall_s'][-1]:.0f} s; "
            + "; ".join(f"{name} TV {reps[-1].tv_modes:.2f}" for name, reps in sweep["methods"].items()))


def first_atoms(held, n: int, device="auto"):
    """The empirical prior of the first n atoms of a held-out split (fsdiag.data.hold_out), with
    their labels: nested subsets of one pool as n grows (all of the pool when n is larger: the
    pool is n_patches less the held-out truths and their copies)."""
    from .. import EmpiricalPrior
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n: expected a positive number of atoms, got {n!r}")
    return EmpiricalPrior(held.atoms[:n], labels=held.labels[:n], device=device)


def problem_line(key: str, op: str, reports: dict) -> str:
    """The line printed after one imaging problem: each sampler's TV over classes."""
    return f"{key}, {OP_TITLES[op]}: " + "; ".join(f"{n} TV {r.tv_modes:.2f}" for n, r in reports.items())
