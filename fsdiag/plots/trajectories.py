"""Figures of chapters 1–4: the FSR's convergence in N, the (t, x_t) posterior-density heatmaps,
the posterior spread along the trajectory and the early-stopping curves.

Every function takes arrays, results or metrics (never a sampler) and returns a matplotlib figure
no wider than 12 in, with at most three panels per row and no text smaller than 9 pt, so that it
stays legible at the book's page width. matplotlib is imported when a function is called."""
from __future__ import annotations

import math

import numpy as np

from ._common import LEGEND_FONT

__all__ = ["METHOD_LABELS", "method_colors", "fsr_weights_figure", "convergence_figure",
           "density_heatmaps_figure", "tv_over_time_figure", "final_densities_figure",
           "variance_ratio_figure", "score_agreement_figure", "early_stopping_figure"]

MAX_WIDTH = 12.0    # widest figure (in)

# Labels of the columns and samplers the chapters compare; a chapter may override some (e.g. ζ's value).
METHOD_LABELS = {"true": "true", "fsr_density": "FSR (exact)", "exact": "exact sampler", "fsr": "FSR",
                 "sigma_dps": "σ-DPS", "zeta_dps": "ζ-DPS", "pigdm": "ΠGDM", "tmpd": "TMPD"}
_COLOR_ORDER = ["exact", "fsr", "sigma_dps", "zeta_dps", "pigdm", "tmpd"]


def method_colors(names) -> dict:
    """A fixed colour per sampler name (seaborn's colourblind palette), the same in every chapter;
    names outside the built-in ones get the palette's later colours."""
    import seaborn as sns

    extra = [n for n in names if n not in _COLOR_ORDER]
    palette = sns.color_palette("colorblind", len(_COLOR_ORDER) + len(extra))
    return dict(zip(_COLOR_ORDER + extra, palette))


def _labels(labels) -> dict:
    return {**METHOD_LABELS, **(labels or {})}


def _panels(n: int, *, ncols: int, panel_w: float, panel_h: float, extra_w: float = 0.0, extra_h: float = 0.0,
            **kw):
    # n panels wrapped into rows of at most ncols; unused slots of the last row are hidden.
    import matplotlib.pyplot as plt

    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    width = min(MAX_WIDTH, panel_w * ncols + extra_w)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width, panel_h * nrows + extra_h), squeeze=False,
                             layout="constrained", **kw)
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.set_visible(False)
    for k, ax in enumerate(flat[:n]):
        if _bottom(k, n, ncols):      # the lowest panel of its column shows its x tick labels, shared or not
            ax.tick_params(labelbottom=True)
    return fig, flat[:n]


def _bottom(k: int, n: int, ncols: int) -> bool:
    # Is panel k (of n, filled row by row, ncols per row) the lowest of its column?
    return k + min(ncols, n) >= n


def _log_time_axis(ax, t_min: float) -> None:
    # Diffusion time on a log axis running from t = 1 (left) to t_min (right), as the sampler does.
    ax.set_xscale("log")
    ax.set_xlim(1.15, t_min / 1.15)


# --------------------------------------------------------------------------------------------
# Chapter 1: the FSR converges to the true posterior.

def _hdr_levels(density, masses=(0.99, 0.9, 0.5)) -> list:
    # Density thresholds whose super-level sets hold the given masses (ascending, for contour()).
    d = np.sort(np.asarray(density, dtype=float).ravel())[::-1]
    cum = np.cumsum(d) / d.sum()
    return sorted({float(d[min(np.searchsorted(cum, m), d.size - 1)]) for m in masses})


def fsr_weights_figure(panels, *, lim: float = 4.0):
    """What the FSR sees on 2-D problems, one panel each: all atoms in grey, those with a posterior
    weight ψ_i above 1% of the largest coloured and sized by ψ_i / max ψ, and the exact posterior's
    50/90/99% highest-density regions in black.

    panels: list of dicts with "title", "atoms" (N, 2), "psi" (N,) and "density" = (X, Y, Z), the
    exact posterior density Z on the 2-D grid X, Y (any normalisation)."""
    fig, axes = _panels(len(panels), ncols=3, panel_w=3.6, panel_h=3.9, extra_w=0.8)
    sc = None
    for ax, p in zip(axes, panels):
        x, psi = np.asarray(p["atoms"], dtype=float), np.asarray(p["psi"], dtype=float)
        ax.scatter(x[:, 0], x[:, 1], s=2, color="0.75")
        rel = psi / psi.max()
        order = np.argsort(rel)
        top = order[rel[order] > 0.01]            # ascending, so the heaviest atoms are drawn last
        sc = ax.scatter(x[top, 0], x[top, 1], c=rel[top], s=2 + 30 * rel[top], cmap="viridis", vmin=0, vmax=1)
        X, Y, Z = (np.asarray(a, dtype=float) for a in p["density"])
        ax.contour(X, Y, Z, levels=_hdr_levels(Z), colors="black", linewidths=0.8)
        ax.set(xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal", xlabel="$x_1$", ylabel="$x_2$")
        ax.set_title(p["title"], fontsize=11)
    fig.colorbar(sc, ax=axes, shrink=0.8, label=r"$\psi_i\,/\,\max\,\psi$")
    return fig


def convergence_figure(sizes, errors: dict, fits: dict, *, titles: dict, labels: dict):
    """Errors of the FSR against N on log-log axes, one panel per problem: mean over seeds (dots),
    10–90% band over seeds, the fitted power law (line) and the N^-1/2 reference (dotted).

    errors: {problem: {error name: array (len(sizes), n_seeds)}}; fits: {problem: {error name:
    (slope, intercept)}} of log(mean error) against log N; titles: {problem: panel title};
    labels: {error name: legend label}. Extra error names (e.g. "ess") that fits lacks are ignored."""
    nn = np.asarray(sizes, dtype=float)
    problems = list(fits)
    fig, axes = _panels(len(problems), ncols=3, panel_w=3.9, panel_h=4.2, sharey=True)
    for ax, p in zip(axes, problems):
        for j, m in enumerate(fits[p]):
            v = np.asarray(errors[p][m], dtype=float)
            slope, icpt = fits[p][m]
            ax.fill_between(nn, np.quantile(v, 0.1, axis=1), np.quantile(v, 0.9, axis=1), color=f"C{j}", alpha=0.2)
            ax.plot(nn, v.mean(1), "o", color=f"C{j}", label=f"{labels[m]} (slope {slope:+.2f})")
            ax.plot(nn, np.exp(icpt) * nn ** slope, "-", color=f"C{j}", lw=1)
        anchor = np.asarray(errors[p][next(iter(fits[p]))], dtype=float).mean(1)[0] * math.sqrt(nn[0])
        ax.plot(nn, anchor / np.sqrt(nn), "k:", lw=1.2, label=r"$\propto N^{-1/2}$")
        ax.set(xscale="log", yscale="log", xlabel="number of atoms $N$")
        ax.set_title(titles[p], fontsize=11)
        ax.legend(fontsize=LEGEND_FONT, loc="lower left")
    axes[0].set_ylabel("error (mean over seeds;\nband: 10–90%)")
    return fig


# --------------------------------------------------------------------------------------------
# Chapter 2: the headline figure, (t, x_t) densities.

def _time_edges(times):
    # Cell edges on a log axis around recorded times (given in any order); ascending.
    t_log = np.log(np.sort(np.asarray(times, dtype=float)))
    if t_log.size == 1:
        return np.exp(t_log[0] + np.array([-0.5, 0.5]))
    first, last = t_log[0] - (t_log[1] - t_log[0]) / 2, t_log[-1] + (t_log[-1] - t_log[-2]) / 2
    return np.exp(np.concatenate([[first], (t_log[1:] + t_log[:-1]) / 2, [last]]))


def density_heatmaps_figure(bins: dict, times, edges, *, columns=None, labels=None, title: str = "",
                            ncols: int = 3):
    """The headline figure for one problem: one heatmap over (x_t, t) per column, t from 1 (top) to
    t_min (bottom) on a log axis. Each row of a heatmap (one time) is scaled to its maximum and
    coloured on a square-root scale, so that small masses on a wrong mode stay visible.

    bins: {column: array (n_times, n_bins + 2)}, the mass per bin at each recorded time (index 0 and
    -1: the tails outside `edges`), times in decreasing order as recorded; edges: the n_bins + 1
    bin edges; columns: which keys of bins to show, in order (default: all); labels: {column:
    panel title} on top of METHOD_LABELS."""
    from matplotlib.colors import PowerNorm

    names = _labels(labels)
    columns = [c for c in (columns or list(bins)) if c in bins]
    times = np.asarray(times, dtype=float)
    t_edges = _time_edges(times)
    fig, axes = _panels(len(columns), ncols=ncols, panel_w=3.0, panel_h=2.6, extra_w=1.0,
                        extra_h=0.4 if title else 0.0, sharex=True, sharey=True)
    norm = PowerNorm(0.5, vmin=0.0, vmax=1.0)
    mesh = None
    flip = times[0] > times[-1]           # recorded from t = 1 downwards: reverse to ascending t
    for k, (ax, col) in enumerate(zip(axes, columns)):
        ax.grid(False)
        dens = np.asarray(bins[col], dtype=float)[:, 1:-1]
        dens = dens[::-1] if flip else dens
        dens = dens / np.maximum(dens.max(1, keepdims=True), 1e-300)
        mesh = ax.pcolormesh(edges, t_edges, dens, cmap="rocket", norm=norm, shading="flat", rasterized=True)
        ax.set_title(names.get(col, col), fontsize=11)
        if _bottom(k, len(columns), ncols):
            ax.set_xlabel("$x_t$")
        if k % ncols == 0:
            ax.set_ylabel("diffusion time $t$")
    axes[0].set_yscale("log")
    axes[0].set_ylim(t_edges[0], t_edges[-1])     # t_min at the bottom, t = 1 at the top
    fig.colorbar(mesh, ax=axes, shrink=0.8, label="density / row maximum")
    if title:
        fig.suptitle(title, fontsize=12)
    return fig


def tv_over_time_figure(rows: dict, *, labels=None, colors=None):
    """Total variation to the exact FSR p_t(x_t | y) against t, one panel per problem: each sampler
    (the exact sampler dotted: the Monte Carlo floor) and the FSR density against the true
    posterior (black, dashed).

    rows: chapter 2's metrics["rows"], {key: {"title", "times", "methods": {name: {"tv": [...]}},
    "fsr_vs_true": {"tv": [...]}}}."""
    names = _labels(labels)
    colors = colors or method_colors([m for r in rows.values() for m in r["methods"]])
    fig, axes = _panels(len(rows), ncols=3, panel_w=3.9, panel_h=3.8, sharey=True)
    for ax, res in zip(axes, rows.values()):
        for name, m in res["methods"].items():
            ax.plot(res["times"], m["tv"], color=colors[name], label=names.get(name, name),
                    ls=":" if name == "exact" else "-")
        ax.plot(res["times"], res["fsr_vs_true"]["tv"], color="black", ls="--", label="FSR (exact) vs true")
        ax.set_xscale("log")
        ax.invert_xaxis()
        ax.set_xlabel("diffusion time $t$")
        ax.set_title(res["title"], fontsize=11)
    axes[0].set_ylabel("TV to the exact FSR $p_t(x_t \\mid y)$")
    axes[0].legend(fontsize=LEGEND_FONT)
    return fig


def final_densities_figure(bins: dict, edges, *, samplers, t_min: float, labels=None, colors=None,
                           title: str = "", ncols: int = 3):
    """The output at t_min for one problem, one panel per sampler: its histogram (filled) against the
    true posterior (black) and the exact FSR density (grey, dashed).

    bins: {column: array (n_times, n_bins + 2)} as in density_heatmaps_figure, with "true" and
    "fsr_density"; the last time is t_min. samplers: which columns to show (those missing from
    bins are skipped)."""
    names = _labels(labels)
    samplers = [s for s in samplers if s in bins]
    colors = colors or method_colors(samplers)
    edges = np.asarray(edges, dtype=float)
    width, centres = np.diff(edges), 0.5 * (edges[1:] + edges[:-1])
    fig, axes = _panels(len(samplers), ncols=ncols, panel_w=3.4, panel_h=2.5, extra_h=0.4 if title else 0.0,
                        sharex=True)
    for k, (ax, name) in enumerate(zip(axes, samplers)):
        ax.stairs(np.asarray(bins[name])[-1, 1:-1] / width, edges, fill=True, color=colors[name], alpha=0.7)
        ax.plot(centres, np.asarray(bins["fsr_density"])[-1, 1:-1] / width, color="0.45", lw=1.0, ls="--",
                label="FSR (exact)")
        ax.plot(centres, np.asarray(bins["true"])[-1, 1:-1] / width, color="black", lw=1.2, label="true")
        ax.set_title(names.get(name, name), fontsize=11)
        if _bottom(k, len(samplers), ncols):
            ax.set_xlabel(f"$x_t$ at $t = {t_min:g}$")
        if k % ncols == 0:
            ax.set_ylabel("density")
    axes[0].legend(fontsize=LEGEND_FONT)
    if title:
        fig.suptitle(title, fontsize=12)
    return fig


# --------------------------------------------------------------------------------------------
# Chapter 3: posterior spread along the trajectory.

def variance_ratio_figure(testbeds: dict, *, t_min: float, band=(0.8, 1.25), labels=None, colors=None):
    """Variance of each sampler's particle cloud over the exact p_t(x_t | y)'s against t, one panel
    per testbed (log axes; black line: 1, grey band: `band`).

    testbeds: chapter 3's metrics["testbeds"], {key: {"title", "methods": {name: {"spread":
    {"times", "var_ratio"}}}}}."""
    names = _labels(labels)
    colors = colors or method_colors([m for r in testbeds.values() for m in r["methods"]])
    fig, axes = _panels(len(testbeds), ncols=3, panel_w=5.0, panel_h=4.0)
    for ax, res in zip(axes, testbeds.values()):
        ax.axhspan(*band, color="0.9", zorder=0)
        ax.axhline(1.0, color="black", lw=0.8)
        for name, r in res["methods"].items():
            sp = r["spread"]
            ax.plot(sp["times"], sp["var_ratio"], color=colors[name], label=names.get(name, name), marker=".", ms=3,
                    ls=":" if name == "exact" else "-", lw=1.8 if name == "exact" else 1.2)
        _log_time_axis(ax, t_min)
        ax.set_yscale("log")
        ax.set_xlabel("diffusion time $t$")
        ax.set_title(res["title"], fontsize=11)
    axes[0].set_ylabel("variance ratio (particles / exact $p_t$)")
    axes[0].legend(fontsize=LEGEND_FONT)
    return fig


def score_agreement_figure(testbeds: dict, *, t_min: float, band=(0.8, 1.25), floor: float = 1e-3,
                           labels=None, colors=None):
    """Approximate against exact likelihood score at exact posterior draws, one column per testbed:
    top, the median norm ratio (log axis; ratios below `floor` drawn at `floor`); bottom, the mean
    cosine. Samplers without a score agreement (the exact sampler) are left out.

    testbeds: chapter 3's metrics["testbeds"], with "score_agreement": {"times", "norm_ratio",
    "cosine"} (or None) per method."""
    names = _labels(labels)
    colors = colors or method_colors([m for r in testbeds.values() for m in r["methods"]])
    n = len(testbeds)
    fig, axes = _panels(2 * n, ncols=n, panel_w=5.0, panel_h=3.2, sharex=True)
    top, bottom = axes[:n], axes[n:]
    for j, res in enumerate(testbeds.values()):
        for name, r in res["methods"].items():
            sa = r.get("score_agreement")
            if sa is None:
                continue
            style = dict(color=colors[name], label=names.get(name, name), marker=".", ms=4, lw=1.2)
            nr = np.asarray(sa["norm_ratio"], dtype=float)
            top[j].plot(sa["times"], np.clip(nr, floor, None), **style)
            bottom[j].plot(sa["times"], sa["cosine"], **style)
        top[j].axhspan(*band, color="0.9", zorder=0)
        top[j].axhline(1.0, color="black", lw=0.8)
        top[j].set_yscale("log")
        top[j].set_title(res["title"], fontsize=11)
        bottom[j].axhline(1.0, color="black", lw=0.8)
        bottom[j].set_ylim(-1.05, 1.05)
        _log_time_axis(bottom[j], t_min)
        bottom[j].set_xlabel("diffusion time $t$")
    top[0].set_ylabel("norm ratio (approx / exact)")
    bottom[0].set_ylabel("mean cosine")
    top[0].legend(fontsize=LEGEND_FONT)
    return fig


# --------------------------------------------------------------------------------------------
# Chapter 4: early stopping.

EARLY_STOPPING_OUTPUTS = {"particle": "particle $x_{t_\\mathrm{stop}}$",
                          "tweedie": "Tweedie mean $m(x_{t_\\mathrm{stop}})$"}


def early_stopping_figure(testbeds: dict, *, t_min: float, labels=None, colors=None):
    """W1 distance to the exact posterior against the stopping time, one row per testbed and one
    column per output (the particle, its Tweedie mean); a dot marks each sampler's best stop.

    testbeds: chapter 4's metrics["testbeds"], {key: {"title", "methods": {name: {"times",
    "particle", "tweedie", "summary": {output: {"t_best", "best"}}}}}}."""
    names = _labels(labels)
    colors = colors or method_colors([m for r in testbeds.values() for m in r["methods"]])
    kinds = list(EARLY_STOPPING_OUTPUTS)
    fig, axes = _panels(len(kinds) * len(testbeds), ncols=len(kinds), panel_w=5.5, panel_h=3.6, sharex=True)
    for i, res in enumerate(testbeds.values()):
        for j, kind in enumerate(kinds):
            ax = axes[i * len(kinds) + j]
            for name, r in res["methods"].items():
                s = r["summary"][kind]
                ax.plot(r["times"], r[kind], color=colors[name], label=names.get(name, name),
                        ls=":" if name == "exact" else "-", lw=1.8 if name == "exact" else 1.2)
                ax.plot([s["t_best"]], [s["best"]], "o", color=colors[name], ms=5)
            _log_time_axis(ax, t_min)
            ax.set_yscale("log")
            ax.set_title(f"{res['title']}:\n{EARLY_STOPPING_OUTPUTS[kind]}", fontsize=11)
            ax.set_ylabel("W1 to the exact posterior")
    for ax in axes[-len(kinds):]:
        ax.set_xlabel("stopping time $t_\\mathrm{stop}$")
    axes[0].legend(fontsize=LEGEND_FONT)
    return fig
