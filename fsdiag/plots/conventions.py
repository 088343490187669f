"""Figures for the book's chapters (see fsdiag.plots). Functions take diagnostics outputs and return figures.

Chapter 11 (conventions decide failures): one method under the conventions found in the wild."""
from __future__ import annotations

import numpy as np

from ._common import LEGEND_FONT

__all__ = ["conventions_figure"]

_LINESTYLES = ("-", "--", ":", "-.")


def conventions_figure(results: list, *, n_steps: int, floors: dict | None = None, title_fmt: str = "y = {y:g}"):
    """One row per observation y, two panels: the mass on excluded atoms of every convention at
    `n_steps` steps (horizontal bars, one per schedule, Wilson 95% intervals, value printed), and the
    TV to the exact posterior against the step count (one colour per convention, one line style per
    schedule; `floors` {y: Monte Carlo floor} as a grey line).

    results: dicts with keys y, family, convention, schedule, n_steps, excluded_mass, excluded_lower,
    excluded_upper, tv (as chapter 11 writes them to metrics.json)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    if not results:
        raise ValueError("results: expected at least one result")
    ys = list(dict.fromkeys(r["y"] for r in results))
    convs = list(dict.fromkeys((r["family"], r["convention"]) for r in results))
    scheds = list(dict.fromkeys(r["schedule"] for r in results))
    colors = dict(zip(convs, sns.color_palette("colorblind", len(convs))))
    fig, axes = plt.subplots(len(ys), 2, figsize=(11.5, (0.32 * len(convs) * len(scheds) + 1.4) * len(ys)),
                             squeeze=False, layout="constrained", width_ratios=[1.25, 1])
    for row, y in enumerate(ys):
        ax_bar, ax_line = axes[row]
        mine = [r for r in results if r["y"] == y]
        height = 0.8 / len(scheds)
        for j, sched in enumerate(scheds):
            for i, conv in enumerate(convs):
                hit = [r for r in mine if (r["family"], r["convention"]) == conv and r["schedule"] == sched
                       and r["n_steps"] == n_steps]
                if not hit:
                    continue
                r = hit[0]
                pos = i - 0.4 + (j + 0.5) * height
                v = 100 * r["excluded_mass"]
                err = [[max(v - 100 * r["excluded_lower"], 0)], [max(100 * r["excluded_upper"] - v, 0)]]
                ax_bar.barh(pos, v, height, color=colors[conv], hatch=None if j == 0 else "//",
                            edgecolor="white" if j == 0 else "k", linewidth=0.3,
                            label=sched if i == 0 else None)
                ax_bar.errorbar(v, pos, xerr=err, fmt="none", ecolor="k", lw=0.8)
                ax_bar.text(100 * r["excluded_upper"], pos, f"  {v:.2f}%", va="center", fontsize=9)
        ax_bar.set_yticks(range(len(convs)), [f"{fam}: {conv}" for fam, conv in convs], fontsize=9)
        for lab, conv in zip(ax_bar.get_yticklabels(), convs):
            lab.set_color(colors[conv])
        ax_bar.invert_yaxis()
        ax_bar.set_xlabel(f"mass on excluded atoms (%), {n_steps} steps")
        right = max([100 * r["excluded_upper"] for r in mine] + [1.0])
        ax_bar.set_xlim(0, 1.3 * right)
        ax_bar.legend(fontsize=LEGEND_FONT, frameon=True, loc="best")
        ax_bar.set_title(title_fmt.format(y=y) + ": excluded atoms", fontsize=10)
        for conv in convs:
            for j, sched in enumerate(scheds):
                pts = sorted((r["n_steps"], r["tv"]) for r in mine
                             if (r["family"], r["convention"]) == conv and r["schedule"] == sched)
                if pts:
                    n, tv = zip(*pts)
                    ax_line.plot(n, tv, _LINESTYLES[j % len(_LINESTYLES)], marker="o", ms=3, color=colors[conv])
        # Colours name the conventions (as the bar panel's labels); the legend names the line styles.
        for j, sched in enumerate(scheds):
            ax_line.plot([], [], _LINESTYLES[j % len(_LINESTYLES)], color="k", label=sched)
        if floors and y in floors:
            ax_line.axhline(floors[y], color="0.5", lw=1.5, ls=(0, (1, 1)), label="Monte Carlo floor")
        ax_line.legend(fontsize=LEGEND_FONT, frameon=False)
        ax_line.set_xscale("log")
        steps = sorted({r["n_steps"] for r in mine})
        ax_line.set_xticks(steps, [str(n) for n in steps])
        ax_line.minorticks_off()
        ax_line.set_xlabel("steps")
        ax_line.set_ylabel("TV to the exact posterior")
        ax_line.set_ylim(bottom=0)
        ax_line.set_title(title_fmt.format(y=y) + ": TV against the step count", fontsize=10)
        for ax in (ax_bar, ax_line):
            ax.tick_params(labelsize=9)
    return fig
