"""Figures for the chapter "Whose error is it?" (a trained denoiser's share of the error).
Functions take metrics and arrays and return figures; nothing here trains or samples."""
from __future__ import annotations

import numpy as np

from ._common import LEGEND_FONT

__all__ = ["training_loss_figure", "prior_samples_figure", "whose_error_figure"]


def training_loss_figure(losses: dict, *, title: str = "Training loss (EDM-weighted, per 1% of the steps)"):
    """losses: {name: list of losses}. One curve per network, log scale."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2), layout="constrained")
    for name, ls in losses.items():
        ls = np.asarray(ls, dtype=float)
        if ls.size:
            ax.plot(np.linspace(0, 100, ls.size), ls, label=name)
    ax.set_yscale("log")
    ax.set_xlabel("training progress (%)")
    ax.set_ylabel("loss")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=LEGEND_FONT, frameon=False)
    return fig


def prior_samples_figure(atoms, samples: dict, *, labels=None, title: str = ""):
    """2-D atoms (grey, coloured by label when given) and unconditional samples of each denoiser,
    one panel per entry of samples ({name: (n, 2) array}), at most three panels per row."""
    import matplotlib.pyplot as plt

    atoms = np.asarray(atoms)
    names = list(samples)
    ncols = min(3, len(names))
    nrows = int(np.ceil(len(names) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.8 * ncols, 3.6 * nrows), squeeze=False,
                             sharex=True, sharey=True, layout="constrained")
    lo, hi = atoms.min(0) - 1.0, atoms.max(0) + 1.0
    for ax, name in zip(axes.flat, names):
        x = np.asarray(samples[name])
        ax.scatter(x[:, 0], x[:, 1], s=3, alpha=0.3, color="0.25", label="samples", rasterized=True)
        ax.scatter(atoms[:, 0], atoms[:, 1], s=4, c="k" if labels is None else np.asarray(labels), cmap="tab10",
                   marker="x", linewidths=0.6, label="atoms")
        ax.set_xlim(lo[0], hi[0])
        ax.set_ylim(lo[1], hi[1])
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("$x_1$")
    for ax in axes[:, 0]:
        ax.set_ylabel("$x_2$")
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=LEGEND_FONT, loc="upper left", markerscale=3)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


def whose_error_figure(problems: dict, *, names: dict | None = None):
    """TV over modes to the exact posterior of each method with the exact denoiser and with the
    network, next to the Monte Carlo floor, one panel per problem (at most three per row).
    problems: {title: {"methods": {method: {"tv_exact_denoiser", "tv_network", "floor"}},
    "prior_tv_network": float, "prior_floor": float}}."""
    import matplotlib.pyplot as plt

    names = names or {}
    titles = list(problems)
    ncols = min(3, len(titles))
    nrows = int(np.ceil(len(titles) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.5 * ncols, 3.8 * nrows), squeeze=False, layout="constrained")
    for ax, title in zip(axes.flat, titles):
        ms = problems[title]["methods"]
        keys = list(ms)
        pos = np.arange(len(keys))
        exact = np.array([ms[k]["tv_exact_denoiser"] for k in keys])
        net = np.array([ms[k]["tv_network"] for k in keys])
        floor = np.array([ms[k]["floor"] for k in keys])
        ax.bar(pos - 0.2, exact, 0.4, color="C0", label="exact denoiser: likelihood approximation alone")
        ax.bar(pos + 0.2, net, 0.4, color="C1", label="network: approximation + network")
        ax.scatter(pos, floor, marker="_", s=600, color="k", zorder=5, label="Monte Carlo floor")
        if "prior_tv_network" in problems[title]:
            ax.axhline(problems[title]["prior_tv_network"], color="C1", ls=":", lw=1.2,
                       label="network's unconditional samples vs the prior")
        ax.set_xticks(pos, [names.get(k, k) for k in keys])
        ax.set_ylabel("TV over modes to the exact posterior")
        ax.set_title(title, fontsize=10)
    for ax in list(axes.flat)[len(titles):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=2, fontsize=LEGEND_FONT, frameon=False)
    return fig
