"""Chapter 1's bookkeeping: the three problems' references, the FSR's errors against them, the
fitted rates and the page's summary, metrics and verdict."""
from __future__ import annotations

import numpy as np

__all__ = ["cell_edges", "cell_masses", "references", "references_text", "fsr_errors", "fit_slope",
           "rates_text", "lens_metrics", "weight_panels", "ERROR_NAMES", "ERROR_LABELS"]

# The errors measured on each problem, and their names on the page.
ERROR_NAMES = {"gaussian_linear": ["mean_error", "cov_error"], "gmm_linear": ["mode_tv", "mean_error"],
               "nonlinear": ["mean_error", "hist_tv"]}
ERROR_LABELS = {"mean_error": "posterior mean error", "cov_error": "covariance error (Frobenius)",
                "mode_tv": "TV of mode masses", "hist_tv": "TV of histograms"}


def cell_edges(lo: float, hi: float, n_grid: int, n_bins: int) -> np.ndarray:
    """Edges of n_bins histogram cells per axis that fall midway between the points of an n_grid
    grid on [lo, hi], so that every grid point lies in one cell (the grid's cell masses are then
    midpoint-rule accurate)."""
    if not (isinstance(n_grid, int) and n_grid >= 2):
        raise ValueError(f"n_grid: expected an integer >= 2, got {n_grid!r}")
    if not (isinstance(n_bins, int) and n_bins >= 1):
        raise ValueError(f"n_bins: expected a positive integer, got {n_bins!r}")
    if not hi > lo:
        raise ValueError(f"hi: expected a number above lo={lo!r}, got {hi!r}")
    h = (hi - lo) / (n_grid - 1)
    return lo - h / 2 + h * np.round(np.arange(n_bins + 1) * n_grid / n_bins)


def cell_masses(points, weights, edges, lo: float, hi: float) -> np.ndarray:
    """Mass per cell of the 2-D histogram on `edges` x `edges` of weighted points (tensors; points
    outside [lo, hi] are clipped into the border cells), normalised and flattened."""
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"points: expected shape (n, 2), got {tuple(points.shape)}")
    p = np.clip(points.cpu().numpy(), lo, hi)
    h, _, _ = np.histogram2d(p[:, 0], p[:, 1], bins=[edges, edges], weights=weights.cpu().numpy())
    return (h / h.sum()).ravel()


def references(post_gauss, post_mix, prior_nl, lik_nl, *, lo, hi, n_grid, n_bins) -> dict:
    """The three problems' references: the Gaussian posterior's mean and covariance, the mixture
    posterior's component weights and mean, the nonlinear problem's grid mean and cell masses, and
    the grid's error (its mean against a grid half as fine's): grids of n_grid and n_grid // 2
    points per axis on [lo, hi] (testbeds.grid_posterior)."""
    from ..testbeds import grid_posterior
    grid_pts, grid_w = grid_posterior(prior_nl, lik_nl, lo, hi, n_grid)
    coarse_pts, coarse_w = grid_posterior(prior_nl, lik_nl, lo, hi, n_grid // 2)
    edges = cell_edges(lo, hi, n_grid, n_bins)
    mean_nl = grid_w @ grid_pts
    return {"mean_gauss": post_gauss.means[0], "cov_gauss": post_gauss.covs[0], "weights_mix": post_mix.weights,
            "mean_mix": post_mix.mean(), "n_components": int(post_mix.weights.shape[0]), "mean_nl": mean_nl,
            "grid_error": float((coarse_w @ coarse_pts - mean_nl).norm()), "edges": edges, "lo": lo, "hi": hi,
            "cells_nl": cell_masses(grid_pts, grid_w, edges, lo, hi), "n_bins": n_bins,
            "grid_pts": grid_pts, "grid_w": grid_w}


def _vec(v) -> str:
    return "(" + ", ".join(f"{float(x):.3f}" for x in np.ravel(v)) + ")"


def references_text(ref: dict, prior_weights) -> str:
    """The page's list of the three references (prior_weights: the mixture prior's)."""
    return (f"* (1) exact posterior mean {_vec(ref['mean_gauss'])}, covariance {_vec(ref['cov_gauss'])} (row by row)\n"
            f"* (2) exact posterior component weights {_vec(ref['weights_mix'])} (prior {_vec(prior_weights)})\n"
            f"* (3) grid posterior mean {_vec(ref['mean_nl'])}; grid error estimate {ref['grid_error']:.2e}; "
            f"{int((ref['cells_nl'] > 1e-3).sum())} of {ref['n_bins'] ** 2} cells hold mass > 10⁻³")


def fsr_errors(problem: str, prior, psi, ref: dict) -> dict:
    """The FSR posterior (prior's atoms weighted by psi) against `problem`'s reference (ref from
    references): mean and covariance error, mode-mass TV and mean error, or mean error and
    histogram TV."""
    import torch

    from ..diagnostics import total_variation
    if problem not in ERROR_NAMES:
        raise ValueError(f"problem: expected one of {list(ERROR_NAMES)}, got {problem!r}")
    m = psi @ prior.atoms
    if problem == "gaussian_linear":
        dev = prior.atoms - m
        c = (psi[:, None] * dev).T @ dev
        return {"mean_error": float((m.cpu() - ref["mean_gauss"]).norm()),
                "cov_error": float((c.cpu() - ref["cov_gauss"]).norm())}
    if problem == "gmm_linear":
        masses = torch.zeros(ref["n_components"], dtype=psi.dtype, device=psi.device).index_add_(0, prior.labels, psi)
        return {"mode_tv": total_variation(masses.cpu().numpy(), ref["weights_mix"].numpy()),
                "mean_error": float((m.cpu() - ref["mean_mix"]).norm())}
    return {"mean_error": float((m.cpu() - ref["mean_nl"]).norm()),
            "hist_tv": total_variation(cell_masses(prior.atoms, psi, ref["edges"], ref["lo"], ref["hi"]),
                                       ref["cells_nl"])}


def fit_slope(sizes, values) -> tuple[float, float]:
    """(slope, intercept) of the least-squares line through (log N, log mean over seeds) of
    values (one row per N in sizes, one column per seed)."""
    values = np.asarray(values, dtype=float)
    if values.ndim != 2 or values.shape[0] != len(sizes):
        raise ValueError(f"values: expected shape ({len(sizes)}, n_seeds), got {values.shape}")
    slope, intercept = np.polyfit(np.log(sizes), np.log(values.mean(1)), 1)
    return float(slope), float(intercept)


def _slopes(fits):
    return {f"{p}/{m}": fits[p][m][0] for p, ms in ERROR_NAMES.items() for m in ms}


def _shrink(errors):
    return {f"{p}/{m}": float(errors[p][m].mean(1)[0] / errors[p][m].mean(1)[-1])
            for p, ms in ERROR_NAMES.items() for m in ms}


def rates_text(sizes, n_seeds, errors, fits, ess_slopes, grid_error, nonlinear) -> str:
    """The page's paragraph and table of the fitted rates."""
    slopes, shrink = _slopes(fits), _shrink(errors)
    rows = "\n".join(f"| {k.split('/')[0].replace('_', ' ')} | {ERROR_LABELS[k.split('/')[1]]} | {v:+.3f} | "
                     f"{shrink[k]:.0f}× |" for k, v in slopes.items())
    return (f"Over N = {sizes[0]} … {sizes[-1]} ({n_seeds} seeds per N), every error falls like a power of N with a "
            f"fitted exponent between {min(slopes.values()):+.2f} and {max(slopes.values()):+.2f}. The Monte "
            f"Carlo rate is −0.5. The effective sample size grows like N^{np.mean(list(ess_slopes.values())):.2f}. "
            f"Linearity of the forward model makes no difference: the nonlinear ({nonlinear.replace('_', ' ')}) "
            f"problem converges at the same rate, and its grid reference is accurate to {grid_error:.1e}, far below "
            f"the FSR error at the largest N ({errors['nonlinear']['mean_error'].mean(1)[-1]:.1e}).\n\n"
            "| problem | error | fitted slope | error shrinks by |\n|---|---|---:|---:|\n" + rows)


def _summary(values):
    return {"mean": values.mean(1).tolist(), "q10": np.quantile(values, 0.1, axis=1).tolist(),
            "q90": np.quantile(values, 0.9, axis=1).tolist()}


def lens_metrics(params: dict, sizes, errors, fits, ess_slopes, ref: dict) -> dict:
    """metrics.json of chapter 1 with its verdict (shown on the page)."""
    from .pages import verdict
    slopes = _slopes(fits)
    metrics = {"params": params, "n_atoms": sizes, "slopes": slopes, "shrink_factor": _shrink(errors),
               "ess_slopes": ess_slopes, "grid_error": ref["grid_error"],
               "exact": {"gaussian_mean": ref["mean_gauss"].tolist(), "gaussian_cov": ref["cov_gauss"].tolist(),
                         "gmm_weights": ref["weights_mix"].tolist(), "gmm_mean": ref["mean_mix"].tolist(),
                         "nonlinear_mean": ref["mean_nl"].tolist()}}
    for p, ms in ERROR_NAMES.items():
        metrics[p] = {m: {**_summary(errors[p][m]), "slope": fits[p][m][0], "intercept": fits[p][m][1]} for m in ms}
        metrics[p]["ess"] = errors[p]["ess"].mean(1).tolist()
    nonlinear = params["nonlinear"].replace("_", " ")
    metrics["verdict"] = verdict(
        "The FSR converges to the true posterior as N grows, for linear and nonlinear forward models, "
        "at the Monte Carlo rate N^-1/2.",
        [(f"shallowest of the {len(slopes)} fitted error slopes vs N", max(slopes.values()), "<", -0.35),
         (f"steepest of the {len(slopes)} fitted error slopes vs N", min(slopes.values()), ">", -0.65),
         ("smallest fitted slope of the effective sample size vs N", min(ess_slopes.values()), ">", 0.85)],
        regime=f"Gaussian-linear, GMM-linear and nonlinear ({nonlinear}) problems, "
               f"N = {sizes[0]} … {sizes[-1]}, {params['n_seeds']} seeds per N; −0.5 ± 0.15 counts as the Monte "
               "Carlo rate.")
    return metrics


def weight_panels(priors: dict, psis: dict, posteriors, ref: dict, titles: dict, *, n_show: int = 300) -> list:
    """plots.fsr_weights_figure's panels: each problem's atoms and FSR weights over its exact
    density, the closed-form posteriors' (`posteriors`, of the two linear problems) on an n_show
    grid on [lo, hi] and the nonlinear problem's grid (ref)."""
    import torch
    if list(priors) != list(psis) or list(priors) != list(ERROR_NAMES):
        raise ValueError(f"priors: expected the problems {list(ERROR_NAMES)} in psis and priors, got {list(priors)}")
    axis = torch.linspace(ref["lo"], ref["hi"], n_show, dtype=torch.float64)
    mesh = torch.cartesian_prod(axis, axis)

    def as_grid(v, n):
        return v.reshape(n, n).cpu().numpy()
    densities = [(as_grid(mesh[:, 0], n_show), as_grid(mesh[:, 1], n_show), as_grid(post.log_prob(mesh).exp(), n_show))
                 for post in posteriors]
    n = int(round(ref["grid_w"].numel() ** 0.5))
    densities.append((as_grid(ref["grid_pts"][:, 0], n), as_grid(ref["grid_pts"][:, 1], n), as_grid(ref["grid_w"], n)))
    return [{"title": titles[p], "atoms": priors[p].atoms.cpu().numpy(), "psi": psis[p].cpu().numpy(), "density": d}
            for p, d in zip(priors, densities)]
