"""Figures for chapters 5-9 (mode weights, hallucination, diagnosing a sampler, deepinv).

Every function takes diagnostics' outputs (reports, tables of rates, samples as arrays) and
returns a matplotlib figure sized for the book's page (at most 3 panels per row, width <= 12 in,
text >= 9 pt); nothing here runs a sampler."""
from __future__ import annotations

import math

import numpy as np

from ._common import FONT, LEGEND_FONT, mode_weights_figure

__all__ = ["mode_masses_figure", "mode_weight_sweep_figure", "class_weights_figure", "image_rows_figure",
           "particles_figure", "prior_mode_vs_noise_figure", "manifold_samples_figure",
           "noise_stressor_figure", "sampler_diagnostics_figure", "class_weights_grid_figure"]

PANEL = 2.8         # width of one panel, inches: three fit the page's ~8.4 in


def _plt():
    # matplotlib's default text is 10 pt; nothing here sets a size below FONT.
    import matplotlib.pyplot as plt
    return plt


def _grid(n: int, ncols: int = 3, *, height: float = PANEL, sharex=False, sharey=False):
    """A figure of n panels in rows of at most ncols; unused cells removed. Returns (fig, axes list)."""
    plt = _plt()
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(min(12.0, PANEL * ncols), height * nrows), squeeze=False,
                             layout="constrained", sharex=sharex, sharey=sharey)
    flat = list(axes.flat)
    for ax in flat[n:]:
        fig.delaxes(ax)
    return fig, flat[:n]


def _rows(rows):
    """A table as a list of dicts (accepts a pandas DataFrame or any iterable of mappings)."""
    if hasattr(rows, "to_dict"):
        return rows.to_dict(orient="records")
    return [dict(r) for r in rows]


def _colors(names, colors=None):
    import matplotlib as mpl
    cycle = mpl.rcParams["axes.prop_cycle"].by_key()["color"]
    colors = dict(colors or {})
    return {n: colors.get(n, cycle[k % len(cycle)]) for k, n in enumerate(names)}


def _log_noise_axis(ax, values) -> None:
    """A log x axis with major ticks only at the swept noise levels, in plain numbers (0.03, not
    3×10⁻²), and no minor tick labels, so labels of close levels cannot run into each other."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter, NullLocator
    levels = sorted({float(v) for v in values if np.isfinite(v) and v > 0})
    ax.set_xscale("log")
    if not levels:
        return
    ax.xaxis.set_major_locator(FixedLocator(levels))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())
    lo, hi = levels[0], levels[-1]
    pad = 1.25 if hi / lo < 1.5 else (hi / lo) ** 0.08
    ax.set_xlim(lo / pad, hi * pad)


def mode_masses_figure(reports: dict, *, closed=None, density=None, samples=None, mode_names=None,
                       title: str = ""):
    """Mass per mode of each report (bars with Wilson intervals, exact mass as black ticks, the
    closed-form mass as dotted lines) above, when `density` = (grid, values) is given, the
    exact posterior density with a histogram of each entry of `samples` ({name: 1-D array}, in
    the colour of the report of that name). mode_names: tick labels of the modes."""
    plt = _plt()
    cols = _colors(list(reports))
    two = density is not None
    fig, axes = plt.subplots(2 if two else 1, 1, figsize=(8.0, 6.4 if two else 3.4), layout="constrained",
                             squeeze=False)
    ax = axes[0, 0]
    mode_weights_figure(reports, ax=ax, title=title)
    if closed is not None:
        for k, c in enumerate(np.asarray(closed, dtype=float)):
            ax.hlines(c, k - 0.45, k + 0.45, colors="k", lw=1, linestyles=":", label="closed form" if k == 0 else None)
    ax.legend(fontsize=LEGEND_FONT, ncol=2, frameon=False, loc="upper left")
    if mode_names is not None:
        ax.set_xticks(range(len(mode_names)), [str(m) for m in mode_names])
    if two:
        ax = axes[1, 0]
        grid, values = (np.asarray(v, dtype=float) for v in density)
        ax.fill_between(grid, values, color="0.85", label="exact posterior")
        for name, x in (samples or {}).items():
            ax.hist(np.asarray(x, dtype=float).ravel(), bins=np.linspace(grid[0], grid[-1], 80), density=True,
                    histtype="step", lw=1.4, label=name, color=cols.get(name))
        ax.set_xlabel("$x_0$")
        ax.set_ylabel("density")
        ax.set_title("final particles")
        ax.legend(fontsize=LEGEND_FONT, frameon=False)
    return fig


def mode_weight_sweep_figure(rows, *, names=None, colors=None, ncols: int = 3):
    """One panel per method: its mass on mode 1 (with Wilson interval) against the exact mass,
    one marker per noise level. rows: records with method, noise_std, exact_mode1, mode1,
    lower, upper; names: {method: display name} (also fixes the order)."""
    rows = _rows(rows)
    methods = list(names) if names else list(dict.fromkeys(r["method"] for r in rows))
    names = names or {m: m for m in methods}
    cols = _colors(methods, colors)
    noises = sorted({r["noise_std"] for r in rows})
    markers = dict(zip(noises, "osD^v<>ph*"))
    fig, axes = _grid(len(methods), ncols, sharex=True, sharey=True)
    for ax, m in zip(axes, methods):
        ax.plot([0, 1], [0, 1], color="0.5", lw=1, ls="--")
        for s in noises:
            sub = [r for r in rows if r["method"] == m and r["noise_std"] == s]
            if not sub:
                continue
            ex, v, lo, hi = (np.array([r[k] for r in sub], dtype=float)
                             for k in ("exact_mode1", "mode1", "lower", "upper"))
            ax.errorbar(ex, v, yerr=[np.maximum(v - lo, 0), np.maximum(hi - v, 0)], fmt=markers[s], color=cols[m],
                        ms=5, capsize=2, label=f"σ = {s:g}")
        ax.set_title(names[m])
        ax.set_xlim(-0.03, 1.03)
        ax.set_ylim(-0.03, 1.03)
        ax.set_xlabel("exact mass on mode 1")
        ax.set_ylabel("sampler mass on mode 1")
    axes[0].legend(fontsize=LEGEND_FONT, loc="upper left", frameon=False)
    return fig


def class_weights_figure(reports: dict, *, title: str = "", xlabel: str = "digit class"):
    """Class (mode) weights of several reports of one problem, bars with Wilson intervals
    against the exact weights, on a page-wide axis."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8.4, 3.6), layout="constrained")
    mode_weights_figure(reports, ax=ax, title=title)
    ax.set_xlabel(xlabel)
    ax.legend(fontsize=LEGEND_FONT, ncol=3, frameon=False, loc="upper left")
    return fig


def image_rows_figure(rows, *, n_show: int = 8, vmin: float = 0.0, vmax: float = 1.0, title: str = ""):
    """Rows of small grayscale images, each row labelled on its left. rows: list of
    (label, images (k, H, W) or (k, H*W) square, titles or None); NaN pixels (unobserved) in blue."""
    plt = _plt()
    cmap = plt.get_cmap("gray_r").with_extremes(bad="#9ecae1")     # unobserved pixels in blue
    size = min(0.95, 11.0 / (n_show + 1))
    fig, axes = plt.subplots(len(rows), n_show, figsize=(size * n_show + 1.0, (size + 0.25) * len(rows)),
                             squeeze=False, layout="constrained")
    for r, (label, images, titles) in enumerate(rows):
        imgs = np.asarray(images, dtype=float)
        if imgs.ndim == 2:
            side = int(round(math.sqrt(imgs.shape[1])))
            imgs = imgs.reshape(imgs.shape[0], side, side)
        imgs = imgs.reshape(imgs.shape[0], imgs.shape[-2], imgs.shape[-1])
        for c in range(n_show):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            for sp in ax.spines.values():
                sp.set_visible(False)
            if c < imgs.shape[0]:
                ax.imshow(np.ma.masked_invalid(imgs[c]), cmap=cmap, vmin=vmin, vmax=vmax)
                if titles is not None:
                    ax.set_title(str(titles[c]), fontsize=FONT)
            if c == 0:
                ax.set_ylabel(label, fontsize=FONT, rotation=0, ha="right", va="center")
    if title:
        fig.suptitle(title, fontsize=FONT + 1)
    return fig


def particles_figure(atoms, samples: dict, *, psi=None, flagged=None, flag_label: str = "flagged", colors=None,
                     line=None, vline=None, ncols: int = 3, title: str = ""):
    """2-D particles over the atoms (grey), one panel per entry of samples ({title: (n, 2)}),
    in rows of ncols; with psi, a first panel shows the exact posterior (atoms sized by psi).
    flagged: {title: bool mask} drawn as red crosses; line: ((x0, x1), (y0, y1)); vline: x."""
    atoms = np.asarray(atoms, dtype=float)
    names = list(samples)
    cols = _colors(names, colors)
    fig, axes = _grid(len(names) + (psi is not None), ncols, sharex=True, sharey=True)
    it = iter(axes)
    if psi is not None:
        ax = next(it)
        p = np.asarray(psi, dtype=float)
        keep = p > 1e-3 * p.max()
        ax.scatter(atoms[:, 0], atoms[:, 1], s=4, c="0.8")
        ax.scatter(atoms[keep, 0], atoms[keep, 1], s=200 * p[keep] / p.max(), color="k", alpha=0.5)
        ax.set_title("exact posterior")
    for ax, name in zip(it, names):
        x = np.asarray(samples[name], dtype=float)
        bad = np.zeros(len(x), bool) if not flagged or name not in flagged else np.asarray(flagged[name], bool)
        ax.scatter(atoms[:, 0], atoms[:, 1], s=4, c="0.8")
        ax.scatter(x[~bad, 0], x[~bad, 1], s=6, color=cols[name], alpha=0.5)
        if bad.any():
            ax.scatter(x[bad, 0], x[bad, 1], s=14, color="crimson", marker="x", label=flag_label)
            ax.legend(fontsize=LEGEND_FONT, loc="lower left", frameon=False)
        ax.set_title(name)
    for ax in axes:
        if line is not None:
            ax.plot(*line, color="k", lw=0.7, ls=":")
        if vline is not None:
            ax.axvline(vline, color="k", lw=0.8, ls=":")
        ax.set_aspect("equal")
    if title:
        fig.suptitle(title, fontsize=FONT + 1)
    return fig


def prior_mode_vs_noise_figure(rows, *, names=None, colors=None):
    """Mass on excluded prior modes against the noise level, one line per method (Wilson
    intervals). rows: records with method, noise_std, prior_mode, prior_mode_ci = [lo, hi]."""
    plt = _plt()
    rows = _rows(rows)
    methods = list(names) if names else list(dict.fromkeys(r["method"] for r in rows))
    names = names or {m: m for m in methods}
    cols = _colors(methods, colors)
    fig, ax = plt.subplots(figsize=(6.0, 3.6), layout="constrained")
    for m in methods:
        sub = sorted((r for r in rows if r["method"] == m), key=lambda r: r["noise_std"])
        s = np.array([r["noise_std"] for r in sub], dtype=float)
        v = np.array([r["prior_mode"] for r in sub], dtype=float)
        lo, hi = (np.array([r["prior_mode_ci"][k] for r in sub], dtype=float) for k in (0, 1))
        ax.errorbar(s, v, yerr=[np.maximum(v - lo, 0), np.maximum(hi - v, 0)], marker="o", capsize=3, color=cols[m],
                    label=names[m])
    _log_noise_axis(ax, [r["noise_std"] for r in rows])
    ax.set_xlabel("measurement noise σ")
    ax.set_ylabel("mass on excluded prior modes")
    ax.legend(fontsize=LEGEND_FONT, frameon=False)
    return fig


def manifold_samples_figure(rows, *, colors=None, lim: float = 1.6):
    """2-D manifold problems, one row each, one column per sampler: the sampler's particles
    over the atoms (off-support ones as red crosses), the exact posterior (atoms sized by psi,
    black), the held-out point and the level set A(x) = y (dashed). rows: list of dicts with
    label, atoms, psi, x_star, forward (callable on (n, 2) arrays of torch), y, samples
    ({title: (n, 2)}), flagged ({title: bool mask})."""
    import torch
    plt = _plt()
    ncols = max(len(r["samples"]) for r in rows)
    fig, axes = plt.subplots(len(rows), ncols, figsize=(min(12.0, PANEL * ncols), PANEL * len(rows)),
                             squeeze=False, layout="constrained", sharex=True, sharey=True)
    axis = np.linspace(-lim, lim, 200)
    gx, gy = np.meshgrid(axis, axis, indexing="xy")
    for r, row in enumerate(rows):
        atoms = np.asarray(row["atoms"], dtype=float)
        p = np.asarray(row["psi"], dtype=float)
        keep = p > 1e-3 * p.max()
        pts = torch.tensor(np.stack([gx.ravel(), gy.ravel()], 1), dtype=torch.float64)
        level = np.asarray(row["forward"](pts), dtype=float).reshape(gx.shape)
        for c, (name, x) in enumerate(row["samples"].items()):
            ax = axes[r, c]
            x = np.asarray(x, dtype=float)
            bad = np.asarray(row.get("flagged", {}).get(name, np.zeros(len(x), bool)), bool)
            ax.scatter(atoms[:, 0], atoms[:, 1], s=3, c="0.8")
            ax.contour(gx, gy, level, levels=[float(row["y"])], colors="k", linewidths=0.8, linestyles="--")
            ax.scatter(atoms[keep, 0], atoms[keep, 1], s=120 * p[keep] / p.max(), color="k", alpha=0.35)
            ax.scatter(x[~bad, 0], x[~bad, 1], s=6, color=_colors([name], colors)[name], alpha=0.6)
            ax.scatter(x[bad, 0], x[bad, 1], s=12, color="crimson", marker="x")
            ax.scatter(*np.asarray(row["x_star"], dtype=float).reshape(-1, 2).T, marker="*", s=110, c="gold",
                       edgecolors="k", zorder=5)
            ax.set_title(f"{row['label']}: {name}\n{bad.mean():.0%} off support")
            ax.set_xlim(-lim, lim)
            ax.set_ylim(-lim, lim)
            ax.set_aspect("equal")
    return fig


def noise_stressor_figure(rows, *, atoms=None, samples=None, names=None, colors=None, view: float = 2.5):
    """Hallucination as the noise falls: off-support rate, likelihood-mode rate and W1 against
    σ (one line per method), and, with atoms and samples ({name: (n, 2)}), the particles at the
    lowest σ. rows: records with method, noise_std, off_support, likelihood_mode, wasserstein."""
    rows = _rows(rows)
    methods = list(names) if names else list(dict.fromkeys(r["method"] for r in rows))
    names = names or {m: m for m in methods}
    cols = _colors(methods, colors)
    keys = {"off_support": "off-support rate", "likelihood_mode": "likelihood-mode rate",
            "wasserstein": "W₁ to the exact posterior"}
    fig, axes = _grid(len(keys) + (samples is not None), 2, height=3.2)
    fig.set_size_inches(8.0, fig.get_size_inches()[1])
    for ax, (key, label) in zip(axes, keys.items()):
        for m in methods:
            sub = sorted((r for r in rows if r["method"] == m), key=lambda r: r["noise_std"])
            ax.plot([r["noise_std"] for r in sub], [r[key] for r in sub], marker="o", color=cols[m], label=names[m])
        _log_noise_axis(ax, [r["noise_std"] for r in rows])
        ax.set_xlabel("measurement noise σ")
        ax.set_title(label)
    axes[0].legend(fontsize=LEGEND_FONT, frameon=False)
    if samples is not None:
        ax = axes[-1]
        a = np.asarray(atoms, dtype=float)
        ax.scatter(a[:, 0], a[:, 1], s=3, c="0.6", label="atoms")
        outside = 0
        for m, x in samples.items():
            x = np.asarray(x, dtype=float)
            outside += int((np.abs(x[:, :2]) > view).any(1).sum())
            ax.scatter(x[:, 0], x[:, 1], s=6, alpha=0.5, color=cols.get(m, None), label=names.get(m, m))
        ax.set_xlim(-view, view)
        ax.set_ylim(-view, view)
        ax.set_aspect("equal")
        low = min(r["noise_std"] for r in rows)
        ax.set_title(f"samples at σ = {low:g}\n({outside} outside the view)")
        ax.legend(fontsize=LEGEND_FONT, frameon=False, loc="upper left", bbox_to_anchor=(1.02, 1.0), markerscale=2)
    return fig


def _noise_to_signal(alpha_bar, times):
    ab = np.array([alpha_bar(float(t)) for t in times], dtype=float)
    return np.sqrt((1 - ab) / np.maximum(ab, 1e-300))


def sampler_diagnostics_figure(reports: dict, alpha_bar: dict, *, colors=None, emphasize=()):
    """Spread, score agreement (norm ratio, cosine) and early stopping of several reports
    against the noise-to-signal ratio sqrt((1 - abar) / abar) of each time (2 x 2 panels).
    alpha_bar: {label: t -> abar} of each report's schedule; emphasize: labels drawn thicker."""
    names = list(reports)
    cols = _colors(names, colors)
    fig, axes = _grid(4, 2, height=3.1)
    fig.set_size_inches(8.4, fig.get_size_inches()[1])
    for name in names:
        rep, ab, c = reports[name], alpha_bar[name], cols[name]
        lw = 2.2 if name in emphasize else 1.2
        axes[0].plot(_noise_to_signal(ab, rep.spread["times"]), rep.spread["var_ratio"], color=c, lw=lw, label=name)
        sa = rep.score_agreement
        axes[1].plot(_noise_to_signal(ab, sa["times"]), sa["norm_ratio"], color=c, lw=lw)
        axes[2].plot(_noise_to_signal(ab, sa["times"]), sa["cosine"], color=c, lw=lw)
        es = rep.early_stopping
        keep = np.array([ab(float(t)) < 1 for t in es["times"]])
        lev = _noise_to_signal(ab, np.asarray(es["times"])[keep])
        axes[3].plot(lev, np.asarray(es["tweedie"])[keep], color=c, lw=lw)
        axes[3].plot(lev, np.asarray(es["particle"])[keep], color=c, lw=lw * 0.7, ls="--")
    titles = ["spread: variance ratio", "score: norm ratio (approx / exact)", "score: cosine",
              "early stopping: W₁\n(solid Tweedie, dashed particle)"]
    for ax, t in zip(axes, titles):
        ax.set_xscale("log")
        ax.set_xlabel("noise level √((1-ᾱ)/ᾱ)")
        ax.set_title(t)
    for ax in axes[:2]:
        ax.axhline(1, color="k", lw=0.6, ls=":")
    axes[1].set_yscale("log")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncol=2, fontsize=LEGEND_FONT,
               frameon=False)
    return fig


def class_weights_grid_figure(reports: dict, exact, *, colors=None, ncols: int = 3, faded=()):
    """One panel per sampler: its class weights per setting (bars, Wilson intervals) against
    the exact class weights (black). reports: {sampler: {setting: Report}}; settings listed in
    `faded` are drawn lighter."""
    exact = np.asarray(exact, dtype=float)
    k = len(exact)
    names = list(reports)
    cols = _colors(names, colors)
    fig, axes = _grid(len(names), ncols, height=2.6, sharey=True)
    for ax, name in zip(axes, names):
        settings = list(reports[name])
        width = 0.8 / (len(settings) + 1)
        ax.bar(np.arange(k) - 0.4 + width / 2, exact, width, color="k", label="exact")
        for j, which in enumerate(settings):
            m = reports[name][which].modes
            full = np.zeros((3, k))
            idx = np.asarray(m["labels"], dtype=int)
            for row, key in enumerate(("sampler", "lower", "upper")):
                full[row, idx] = np.asarray(m[key], dtype=float)
            s, lo, hi = full
            ax.bar(np.arange(k) - 0.4 + (j + 1.5) * width, s, width, yerr=np.clip([s - lo, hi - s], 0, None),
                   capsize=1.5, color=cols[name], alpha=0.45 if which in faded else 1.0, label=which)
        ax.set_title(name)
        ax.set_xticks(range(k))
        ax.set_xlabel("digit class")
        ax.set_ylabel("posterior mass")
    # One legend for the whole figure (above the panels): bar colour is the panel's sampler, so
    # the settings are told apart by shade, drawn here in neutral grey.
    from matplotlib.patches import Patch
    settings = list(dict.fromkeys(w for name in names for w in reports[name]))
    handles = [Patch(color="k", label="exact")] + [
        Patch(color="0.35", alpha=0.45 if which in faded else 1.0, label=which) for which in settings]
    fig.legend(handles=handles, loc="outside upper center", ncols=len(handles), fontsize=LEGEND_FONT, frameon=False)
    return fig
