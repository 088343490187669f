"""Figures from diagnostics' outputs. Functions here take reports and arrays and return a
matplotlib figure; nothing here runs a sampler. matplotlib is imported when a function is called."""
from __future__ import annotations

import numpy as np

__all__ = ["mode_weights_figure", "image_grid", "FONT", "LEGEND_FONT"]

FONT = 9            # smallest text on a figure, in points
LEGEND_FONT = 10    # legend text, in points


def mode_weights_figure(reports: dict, *, title: str = "", ax=None):
    """Mass per mode of each report (bars, Wilson 95% intervals) next to the exact mass (black
    ticks). reports: {name: fsdiag.Report}; every report must be for the same problem."""
    import matplotlib.pyplot as plt

    names = list(reports)
    first = reports[names[0]].modes
    labels, exact = first["labels"], np.asarray(first["exact"])
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(max(4.0, 0.6 * len(labels) * (len(names) + 1)), 3.2),
                               layout="constrained")
    width = 0.8 / len(names)
    pos = np.arange(len(labels))
    for j, name in enumerate(names):
        m = reports[name].modes
        s, lo, hi = (np.asarray(m[k]) for k in ("sampler", "lower", "upper"))
        x = pos - 0.4 + (j + 0.5) * width
        ax.bar(x, s, width, label=f"{name} (TV {m['tv']:.2f})")
        ax.errorbar(x, s, yerr=[np.maximum(s - lo, 0), np.maximum(hi - s, 0)], fmt="none", ecolor="k", lw=0.8)
    ax.scatter(pos, exact, marker="_", s=400, color="k", zorder=5, label="exact posterior")
    ax.set_xticks(pos, [str(lab) for lab in labels])
    ax.set_xlabel("mode")
    ax.set_ylabel("posterior mass")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=LEGEND_FONT, frameon=False)
    if title:
        ax.set_title(title, fontsize=10)
    return fig if fig is not None else ax.figure


def image_grid(images, *, ncols: int = 8, titles=None, title: str = "", vmin=0.0, vmax=1.0, scale: float = 0.9):
    """Grayscale images (n, H, W) or (n, 1, H, W) in a grid."""
    import matplotlib.pyplot as plt

    imgs = np.asarray(images)
    imgs = imgs.reshape(imgs.shape[0], imgs.shape[-2], imgs.shape[-1])
    n = imgs.shape[0]
    ncols = max(1, min(ncols, n))
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(scale * ncols, scale * nrows + (0.3 if title else 0)),
                             squeeze=False, layout="constrained")
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k < n:
            ax.imshow(imgs[k], cmap="gray_r", vmin=vmin, vmax=vmax)
            if titles is not None:
                ax.set_title(str(titles[k]), fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig
