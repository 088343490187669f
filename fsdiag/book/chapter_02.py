"""Chapter 2's bookkeeping: histogram bins of the true posterior, the FSR and each sampler along
the reverse diffusion, their TV distances, the page's text and metrics with the verdict."""
from __future__ import annotations

import math

import numpy as np

__all__ = ["mixture_bins", "particle_bins", "true_posterior", "add_references", "references_text", "add_bins",
           "row_results", "rows_text", "headline_metrics"]


def mixture_bins(weights, means, stds, edges) -> np.ndarray:
    """Mass of sum_k w_k N(mean_k, std_k^2) (1-D tensors) in each bin of `edges` and in the two
    tails: shape (len(edges) + 1,), sums to 1."""
    import torch
    if not (weights.shape == means.shape == stds.shape and weights.ndim == 1):
        raise ValueError(f"weights: expected 1-D weights, means and stds of one shape, got "
                         f"{tuple(weights.shape)}, {tuple(means.shape)}, {tuple(stds.shape)}")
    e = torch.as_tensor(edges, dtype=means.dtype, device=means.device)
    cdf = torch.special.ndtr((e[None, :] - means[:, None]) / stds[:, None])
    cdf = torch.nn.functional.pad(cdf, (1, 0), value=0.0)
    cdf = torch.nn.functional.pad(cdf, (0, 1), value=1.0)
    return (weights @ torch.diff(cdf, dim=1)).cpu().numpy()


def particle_bins(x, edges) -> np.ndarray:
    """The same bins for particles (1-D array): index 0 is below edges[0], the last above edges[-1]."""
    x = np.asarray(x)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"x: expected a non-empty 1-D array of particles, got shape {x.shape}")
    idx = np.searchsorted(edges, x, side="right")
    return np.bincount(idx, minlength=len(edges) + 1) / x.size


def true_posterior(gmm, lik, edges, xq):
    """(at, above) of the true posterior of the 1-D mixture prior `gmm` given `lik`: at(alpha_bar)
    the bins of p_t(x_t | y), above(split) the exact mass of x_0 above split. A linear forward
    model conditions the mixture in closed form; otherwise the posterior is computed on the x_0
    quadrature grid xq (n, 1)."""
    import torch
    if lik.forward.is_linear:
        post = gmm.condition(lik)

        def at(abar):
            pt = post.diffuse(abar)
            return mixture_bins(pt.weights, pt.means[:, 0], pt.covs[:, 0, 0].sqrt(), edges)

        def above(split):
            z = (split - post.means[:, 0]) / post.covs[:, 0, 0].clamp_min(1e-300).sqrt()
            return float(post.weights @ (1 - torch.special.ndtr(z)))
        return at, above
    w = torch.softmax(gmm.log_prob(xq) + lik.log_prob(xq), 0)

    def at(abar):
        return mixture_bins(w, math.sqrt(abar) * xq[:, 0], torch.full_like(w, math.sqrt(1 - abar)), edges)

    def above(split):
        return float(w[xq[:, 0] > split].sum())
    return at, above


def add_references(rows: list, gmm, atoms, edges, *, x_lim: float, n_quad: int) -> None:
    """Give each row (a dict with "lik", "psi", "split") its true posterior's bins ("true_at") and
    the exact masses of x_0 above its split ("mass_above": true and FSR); the nonlinear rows'
    quadrature grid spans [-x_lim - 2, x_lim + 2] with n_quad points."""
    import torch
    xq = torch.linspace(-x_lim - 2.0, x_lim + 2.0, n_quad, dtype=torch.float64)[:, None]
    for row in rows:
        row["true_at"], true_above = true_posterior(gmm, row["lik"], edges, xq)
        row["mass_above"] = {"true": true_above(row["split"]),
                             "fsr_density": float(row["psi"][atoms > row["split"]].sum())}


def references_text(prior, rows: list) -> str:
    """The page's list of each row's effective sample size and masses above its split."""
    return (f"FSR prior: `{prior}`.\n\n"
            + "\n".join(f"* {row['title']}: effective sample size of ψ {row['ess']:.1f} atoms; exact mass of "
                        f"$x_0$ above {row['split']:g}: true {row['mass_above']['true']:.3f}, "
                        f"FSR {row['mass_above']['fsr_density']:.3f}" for row in rows))


def add_bins(rows: list, atoms, edges, schedule) -> None:
    """Give each row its recorded times and the bins ("bins": true, FSR density and every run's
    particles) at each of them."""
    import torch
    for row in rows:
        times = row["runs"]["exact"].times.numpy()
        row["times"] = times
        abars = [schedule.alpha_bar(t) for t in times]
        row["bins"] = {
            "true": np.stack([row["true_at"](ab) for ab in abars]),
            "fsr_density": np.stack([mixture_bins(row["psi"], math.sqrt(ab) * atoms,
                                                  torch.full_like(atoms, math.sqrt(1 - ab)), edges) for ab in abars])}
        for name, run in row["runs"].items():
            row["bins"][name] = np.stack([particle_bins(x[:, 0].cpu().numpy(), edges) for x in run.trajectory])


def _tv_series(a, b):
    from ..diagnostics import total_variation
    return [total_variation(p, q) for p, q in zip(a, b)]


def row_results(rows: list, methods) -> dict:
    """{row key: TV over time of each run against the FSR density and the truth, masses above
    the split, the Monte Carlo floor}: the rows' part of metrics.json."""
    results = {}
    for row in rows:
        ref = row["bins"]["fsr_density"]
        res = {"title": row["title"], "y": row["y"], "noise_std": row["noise_std"], "forward": row["forward"],
               "split": row["split"], "ess": row["ess"], "times": row["times"].tolist(), "methods": {},
               "not_applicable": [m for m in methods if m not in row["runs"]]}
        tv_true = _tv_series(ref, row["bins"]["true"])
        res["fsr_vs_true"] = {"tv": tv_true, "tv_final": tv_true[-1], "tv_mean": float(np.mean(tv_true))}
        res["exact_mass_above"] = row["mass_above"]
        for name, run in row["runs"].items():
            tv = _tv_series(row["bins"][name], ref)
            tv_t = _tv_series(row["bins"][name], row["bins"]["true"])
            res["methods"][name] = {"tv": tv, "tv_final": tv[-1], "tv_mean": float(np.mean(tv)),
                                    "tv_true_final": tv_t[-1], "tv_true_mean": float(np.mean(tv_t)),
                                    "mass_above": float((run.samples[:, 0] > row["split"]).double().mean())}
        res["tv_floor_final"] = res["methods"]["exact"]["tv_final"]
        res["tv_floor_mean"] = res["methods"]["exact"]["tv_mean"]
        results[row["key"]] = res
    return results


def rows_text(results: dict, methods, labels: dict) -> str:
    """The page's paragraph and table per row."""
    approx = [m for m in methods if m != "fsr"]
    lines = []
    for res in results.values():
        ms = res["methods"]
        table = ("| sampler | TV at $t_{\\min}$ | mean TV over $t$ | mass of $x_0$ above " + f"{res['split']:g}"
                 + " |\n|---|---:|---:|---:|\n")
        table += f"| true posterior | | | {res['exact_mass_above']['true']:.3f} |\n"
        table += (f"| FSR (exact) | {res['fsr_vs_true']['tv_final']:.3f} (vs true) | "
                  f"{res['fsr_vs_true']['tv_mean']:.3f} (vs true) | {res['exact_mass_above']['fsr_density']:.3f} |\n")
        for name, m in ms.items():
            table += f"| {labels[name]} | {m['tv_final']:.3f} | {m['tv_mean']:.3f} | {m['mass_above']:.3f} |\n"
        table += "".join(f"| {labels[m]} | n/a | n/a | n/a |\n" for m in res["not_applicable"])
        text = [f"**{res['title']}** (ψ has an effective sample size of {res['ess']:.0f} atoms). "
                f"The FSR is {res['fsr_vs_true']['tv_mean']:.3f} from the true posterior in TV on average over $t$ "
                f"({res['fsr_vs_true']['tv_final']:.3f} at $t_{{\\min}}$)."]
        if "fsr" in ms:
            text.append(f"Sampled with its exact score, the FSR's histogram is {ms['fsr']['tv_final']:.3f} from the "
                        f"exact bins at $t_{{\\min}}$; the Monte Carlo floor of the exact sampler is "
                        f"{res['tv_floor_final']:.3f}.")
        worse = [m for m in approx if m in ms]
        if worse:
            worst = max(worse, key=lambda m: ms[m]["tv_mean"])
            text.append(f"The farthest sampler is {labels[worst]}: mean TV {ms[worst]['tv_mean']:.3f}, "
                        f"{ms[worst]['tv_final']:.3f} at $t_{{\\min}}$, with mass {ms[worst]['mass_above']:.3f} "
                        f"above {res['split']:g} where the exact posterior has "
                        f"{res['exact_mass_above']['fsr_density']:.3f}.")
        lines.append(" ".join(text) + "\n\n" + table)
    return "\n\n".join(lines)


def headline_metrics(params: dict, gmm, results: dict) -> dict:
    """metrics.json of chapter 2 with its verdict (shown on the page)."""
    from .pages import verdict
    methods = params["methods"]
    metrics = {"params": params, "rows": results,
               "prior": {"weights": gmm.weights.tolist(), "means": gmm.means[:, 0].tolist(),
                         "variances": gmm.covs[:, 0, 0].tolist()}}
    approx = [m for m in methods if m not in ("fsr", "exact")]
    fsr_over_floor = max(r["methods"]["fsr"]["tv_mean"] / max(r["methods"]["exact"]["tv_mean"], 1e-300)
                         for r in results.values() if "fsr" in r["methods"]) if "fsr" in methods else float("nan")
    approx_excess = min((max((r["methods"][m]["tv_mean"] for m in approx if m in r["methods"]), default=float("nan"))
                         - r["methods"]["exact"]["tv_mean"]) for r in results.values())
    fsr_vs_true = max(r["fsr_vs_true"]["tv_mean"] for r in results.values())
    metrics["verdict"] = verdict(
        "Along the reverse diffusion the FSR follows the true posterior and its sampler sits at the Monte Carlo "
        "floor, while the approximate samplers' densities are clearly off.",
        [("FSR density vs true posterior: mean TV over t, worst row", fsr_vs_true, "<", 0.15),
         ("FSR sampler's mean TV over the exact sampler's (Monte Carlo floor), worst row", fsr_over_floor, "<", 1.3),
         ("farthest approximation's mean TV minus the floor, least separated row", approx_excess, ">", 0.1)],
        regime=f"{len(results)} rows ({'; '.join(r['title'] for r in results.values())}), {params['n_atoms']} "
               f"atoms, {params['n_particles']} particles, TV over {params['n_bins']} bins plus tails.")
    return metrics
