"""Figures for the chapter "Imaging inverse problems". Each function takes the numbers the chapter
stores in metrics.json (lists, no tensors needed) and returns a matplotlib figure; nothing here runs
a sampler. Images are (C, H, W) nested lists or arrays; C = 3 is shown in colour for means and as
the channel average for standard deviations."""
from __future__ import annotations

import numpy as np

__all__ = ["posterior_maps_figure", "operator_class_weights_figure", "tweedie_blur_figure", "growth_figure"]


def _colors(names):
    import seaborn as sns
    return dict(zip(names, sns.color_palette("colorblind", max(len(names), 1))))


def _image(img, *, gray: bool) -> np.ndarray:
    """(H, W) or (H, W, 3) float array from a (C, H, W) / (H, W) image."""
    a = np.asarray(img, dtype=float)
    if a.ndim == 2:
        return a
    if a.ndim != 3:
        raise ValueError(f"images: expected (C, H, W) or (H, W), got shape {a.shape}")
    if a.shape[0] == 1 or gray:
        return a.mean(0)
    return np.moveaxis(a, 0, -1)


def _mosaic(images, *, gray: bool, gap: int = 1) -> np.ndarray:
    """Images side by side, separated by `gap` columns of NaN (drawn as the background)."""
    tiles = [_image(im, gray=gray) for im in images]
    h = tiles[0].shape[0]
    sep = np.full((h, gap, *tiles[0].shape[2:]), np.nan)
    parts = []
    for k, t in enumerate(tiles):
        if t.shape != tiles[0].shape:
            raise ValueError(f"images: expected one shape, got {tiles[0].shape} and {t.shape}")
        parts += [sep, t] if k else [t]
    return np.concatenate(parts, axis=1)


def _show_mosaic(ax, images, labels, *, vmin, vmax, cmap, gray=False):
    import matplotlib.pyplot as plt
    m = _mosaic(images, gray=gray)
    cm = plt.get_cmap(cmap).with_extremes(bad="white")
    if m.ndim == 3:                                     # colour: NaN gaps to white, values clipped
        m = np.where(np.isnan(m), 1.0, np.clip(m, vmin, vmax))
    im = ax.imshow(m, cmap=cm, vmin=vmin, vmax=vmax, interpolation="nearest")
    w = np.asarray(_image(images[0], gray=True)).shape[1]
    ax.set_xticks([k * (w + 1) + (w - 1) / 2 for k in range(len(images))], labels, fontsize=9,
                  rotation=30, ha="right")
    ax.set_yticks([])
    ax.grid(False)
    return im


def posterior_maps_figure(problems, *, title: str = ""):
    """One row per problem: the truth, what is observed, then the per-pixel mean of the exact
    posterior and of each sampler (left); the per-pixel standard deviations (right).
    problems: [{"title", "truth", "observed" (or None), "maps": {name: {"mean", "std"}}}], the
    first name of "maps" being the exact posterior. Missing pixels of "observed" are NaN."""
    import matplotlib.pyplot as plt

    if not problems:
        raise ValueError("problems: expected at least one problem")
    n = len(problems)
    fig, axes = plt.subplots(n, 2, figsize=(11.5, 1.25 + 1.75 * n), squeeze=False, layout="constrained",
                             gridspec_kw={"width_ratios": [1.3, 1.0]})
    for row, p in zip(axes, problems):
        names = list(p["maps"])
        obs = p.get("observed")
        first = [p["truth"]] + ([obs] if obs is not None else [])
        labels = ["truth"] + (["observed"] if obs is not None else [])
        vmax = max(1.0, float(np.nanmax(np.asarray(p["truth"], dtype=float))))
        im = _show_mosaic(row[0], first + [p["maps"][k]["mean"] for k in names], labels + names,
                          vmin=0.0, vmax=vmax, cmap="gray_r")
        row[0].set_title(f"{p['title']}: per-pixel mean", fontsize=10)
        stds = [p["maps"][k]["std"] for k in names]
        top = max(float(np.nanmax(np.asarray(s, dtype=float))) for s in stds) or 1.0
        im = _show_mosaic(row[1], stds, names, vmin=0.0, vmax=top, cmap="magma", gray=True)
        row[1].set_title(f"{p['title']}: per-pixel standard deviation", fontsize=10)
        fig.colorbar(im, ax=row[1], shrink=0.8, pad=0.01)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


def operator_class_weights_figure(problems, *, class_names, ncols: int = 2):
    """One panel per problem: each sampler's mass per class with Wilson 95% intervals (bars),
    the exact posterior's (black ticks), and the classes the exact posterior rules out shaded.
    problems: [{"title", "exact": (K,), "methods": {name: {"classes", "lower", "upper"}}}],
    every vector over all K classes in the order of class_names."""
    import matplotlib.pyplot as plt

    if not problems:
        raise ValueError("problems: expected at least one problem")
    k = len(class_names)
    ncols = max(1, min(ncols, 3, len(problems)))
    nrows = -(-len(problems) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(min(11.5, 5.75 * ncols), 2.9 * nrows), squeeze=False,
                             layout="constrained", sharey=True)
    pos = np.arange(k)
    for ax, p in zip(axes.flat, problems):
        names = list(p["methods"])
        colors = _colors(names)
        width = 0.8 / max(len(names), 1)
        exact = np.asarray(p["exact"], dtype=float)
        for j in np.flatnonzero(exact < 1e-3):
            ax.axvspan(j - 0.5, j + 0.5, color="0.92", zorder=0)
        for j, name in enumerate(names):
            m = p["methods"][name]
            s, lo, hi = (np.asarray(m[key], dtype=float) for key in ("classes", "lower", "upper"))
            x = pos - 0.4 + (j + 0.5) * width
            ax.bar(x, s, width, color=colors[name], label=name)
            ax.errorbar(x, s, yerr=[np.maximum(s - lo, 0), np.maximum(hi - s, 0)], fmt="none", ecolor="k", lw=0.7)
        ax.scatter(pos, exact, marker="_", s=300, color="k", zorder=5, label="exact posterior")
        ax.set_xticks(pos, [str(c) for c in class_names], fontsize=9, rotation=30 if k > 6 else 0)
        ax.set_ylim(0, 1.02)
        ax.set_title(p["title"], fontsize=10)
    for ax in axes.flat[len(problems):]:
        ax.set_axis_off()
    for ax in axes[:, 0]:
        ax.set_ylabel("posterior mass")
    axes.flat[0].legend(fontsize=9, frameon=False, ncol=2)
    return fig


def tweedie_blur_figure(strips, curves):
    """Early-stopped Tweedie means. Top: for each strip, one particle's Tweedie mean m(x_t) at
    each recorded time t per sampler (rows), from t = 1 to t_min. Bottom: the blur of each
    sampler's Tweedie means (1 - gradient energy / that of the atoms averaged), against t.
    strips: [{"title", "times", "rows": {name: [image per time]}}];
    curves: [{"title", "times", "blur": {name: [value per time]}}]."""
    import matplotlib.pyplot as plt

    if not strips and not curves:
        raise ValueError("strips, curves: expected something to plot")
    ncols = max(len(strips), len(curves), 1)
    if ncols > 3:
        raise ValueError(f"strips: expected at most 3 strips and curves (one per data set), got {ncols}")
    nrows = int(bool(strips)) + int(bool(curves))
    heights = ([1.4] if strips else []) + ([1.0] if curves else [])
    fig, axes = plt.subplots(nrows, ncols, figsize=(11.5, 3.0 * nrows + 0.6), squeeze=False, layout="constrained",
                             gridspec_kw={"height_ratios": heights})
    r = 0
    if strips:
        for ax, s in zip(axes[0], strips):
            names = list(s["rows"])
            grid = [_mosaic(s["rows"][n], gray=True) for n in names]
            gap = np.full((1, grid[0].shape[1]), np.nan)
            m = np.concatenate([x for g in grid for x in (g, gap)][:-1], axis=0)
            cm = plt.get_cmap("gray_r").with_extremes(bad="white")
            ax.imshow(m, cmap=cm, vmin=0, vmax=max(1.0, float(np.nanmax(m))), interpolation="nearest")
            h = np.asarray(_image(s["rows"][names[0]][0], gray=True)).shape
            ax.set_yticks([i * (h[0] + 1) + (h[0] - 1) / 2 for i in range(len(names))], names, fontsize=9)
            ax.set_xticks([i * (h[1] + 1) + (h[1] - 1) / 2 for i in range(len(s["times"]))],
                          [f"{t:.2g}" for t in s["times"]], fontsize=9)
            ax.set_xlabel("stopping time t", fontsize=9)
            ax.grid(False)
            ax.set_title(f"{s['title']}: Tweedie mean of one particle", fontsize=10)
        for ax in axes[0][len(strips):]:
            ax.set_axis_off()
        r = 1
    if curves:
        for ax, c in zip(axes[r], curves):
            names = list(c["blur"])
            colors = _colors(names)
            for n in names:
                ax.plot(c["times"], c["blur"][n], "o-", ms=3, color=colors[n], label=n)
            ax.set_xscale("log")
            ax.set_xlim(1.15, min(c["times"]) / 1.15)
            ax.set_xlabel("stopping time t (log scale, time runs left to right)")
            ax.set_ylabel("blur of the Tweedie means")
            ax.set_title(c["title"], fontsize=10)
        axes[r][0].legend(fontsize=9, frameon=False)
        for ax in axes[r][len(curves):]:
            ax.set_axis_off()
    return fig


def growth_figure(sweep, *, title: str = ""):
    """How the failures move as the number of atoms N grows: each sampler's TV over classes above
    the 95% quantile of its Monte Carlo floor (<= 0: as close as exact draws), its mass on
    ruled-out classes, and the exact posterior's effective sample size over atoms.
    sweep: {"sizes", "ess", "methods": {name: {"tv_above_floor", "excluded"}}}, lists over sizes."""
    import matplotlib.pyplot as plt

    sizes = np.asarray(sweep["sizes"], dtype=float)
    if sizes.size < 1:
        raise ValueError("sweep: expected at least one size")
    names = list(sweep["methods"])
    colors = _colors(names)
    fig, axes = plt.subplots(1, 3, figsize=(11.5, 3.4), layout="constrained")
    for n in names:
        m = sweep["methods"][n]
        axes[0].plot(sizes, m["tv_above_floor"], "o-", color=colors[n], label=n)
        axes[1].plot(sizes, m["excluded"], "o-", color=colors[n], label=n)
    axes[0].axhline(0.0, color="0.4", ls=":", lw=1)
    axes[0].set_ylabel("TV over classes - floor (95%)")
    axes[1].set_ylabel("mass on ruled-out classes")
    axes[1].set_ylim(-0.02, 1.02)
    axes[2].plot(sizes, sweep["ess"], "o-", color="k")
    axes[2].set_ylabel("exact posterior ESS over atoms")
    axes[2].set_yscale("log")
    for ax, t in zip(axes, ("distance to the exact class weights", "ruled-out classes", "exact posterior")):
        ax.set_xscale("log")
        ax.set_xlabel("atoms N")
        ax.set_title(t, fontsize=10)
    axes[0].legend(fontsize=9, frameon=False)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig
