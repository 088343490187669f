"""The leaderboard's figures (`fsdiag leaderboard`, the chapter "Leaderboard"): TV / floor
against the budget of denoiser evaluations, against wall time (Pareto fronts), and one map of
every sampler on every problem. Each takes the ranking `fsdiag.leaderboard` writes
(leaderboard.json's "ranking": {problem: {budget: [entries]}}) and returns a figure."""
from __future__ import annotations

import math

import numpy as np

from ._common import FONT, LEGEND_FONT

__all__ = ["sampler_colors", "budget_figure", "pareto_figure", "pareto_front", "leaderboard_map"]


def sampler_colors(names) -> dict:
    """One colour per sampler, stable across figures (sorted names over tab20, tab20b and tab20c:
    60 distinct colours; the exact sampler black)."""
    import matplotlib

    palette = [matplotlib.colormaps[m](k) for m in ("tab20", "tab20b", "tab20c") for k in range(20)]
    others = sorted(n for n in set(names) if n != "exact")
    colors = {n: palette[k % len(palette)] for k, n in enumerate(others)}
    colors["exact"] = (0.0, 0.0, 0.0, 1.0)
    return colors


def _entries(ranking: dict, problem: str):
    """{sampler: [(budget, entry)]} of the sampler's judged cells on `problem`."""
    out: dict = {}
    for budget, entries in ranking[problem].items():
        for e in entries:
            if e["status"] == "done":
                out.setdefault(e["sampler"], []).append((int(budget), e))
    return out


def _check(ranking, problems):
    if not isinstance(ranking, dict) or not ranking:
        raise ValueError("ranking: expected the leaderboard's {problem: {budget: [entries]}}, got nothing")
    problems = list(ranking) if problems is None else list(problems)
    unknown = [p for p in problems if p not in ranking]
    if unknown:
        raise ValueError(f"problems: {unknown} are not in the ranking ({', '.join(ranking)})")
    return problems


def _panels(ranking: dict, problems, ncols: int):
    """(figure, one axis per problem, colours) for a per-problem grid of log-log panels."""
    import matplotlib.pyplot as plt

    names = {e["sampler"] for p in problems for es in ranking[p].values() for e in es}
    ncols = min(ncols, len(problems))
    nrows = math.ceil(len(problems) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.3 * ncols, 2.8 * nrows + 0.6), squeeze=False,
                             layout="constrained")
    for ax in list(axes.flat)[len(problems):]:
        ax.axis("off")
    return fig, list(axes.flat)[:len(problems)], sampler_colors(names)


def _finish(fig, axes, problems, xlabel: str, xticks=None):
    """Log axes, titles, the exact sampler's level (1) and one legend of every sampler under the grid."""
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    legend = {}
    for ax, problem in zip(axes, problems):
        ax.axhline(1.0, color="0.5", lw=0.8, ls="--")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())          # no crowded 2x10^-1, 3x10^-1, ... labels
        if xticks is not None:
            ax.set_xticks(xticks)
            ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.set_title(problem.replace("_", " "), fontsize=FONT + 1)
        ax.set_xlabel(xlabel, fontsize=FONT)
        ax.set_ylabel("TV / floor", fontsize=FONT)
        ax.tick_params(labelsize=FONT)
        for h, label in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(label, h)
    labels = sorted(legend, key=lambda n: (n != "exact", n))
    # three legend columns: as wide as two panels (the default grid), however many samplers
    fig.legend([legend[n] for n in labels], labels, loc="outside lower center", ncols=min(3, len(labels)),
               fontsize=LEGEND_FONT, frameon=False)
    return fig


def budget_figure(ranking: dict, *, problems=None, ncols: int = 2):
    """Per problem, TV over modes / its Monte Carlo floor (log scale, 95% intervals across seeds)
    against denoiser evaluations per particle, one line per sampler; 1 is exact sampling."""
    problems = _check(ranking, problems)
    fig, axes, colors = _panels(ranking, problems, ncols)
    for ax, problem in zip(axes, problems):
        for name, pts in sorted(_entries(ranking, problem).items()):
            pts.sort(key=lambda p: p[0])
            b = np.array([p[0] for p in pts], dtype=float)
            m, lo, hi = (np.maximum(np.array([p[1]["ratio"][i] for p in pts], dtype=float), 1e-2) for i in range(3))
            ax.errorbar(b, m, yerr=[m - lo, hi - m], color=colors[name], marker="o", ms=3,
                        lw=2.0 if name == "exact" else 1.2, capsize=2, label=name)
    budgets = sorted({int(b) for p in problems for b in ranking[p]})
    return _finish(fig, axes, problems, "evaluations per particle", xticks=budgets)


def pareto_figure(ranking: dict, *, problems=None, ncols: int = 2):
    """Per problem, TV / floor against wall time of every (sampler, budget), with the Pareto front
    (no other point both faster and closer to exact) drawn through the points that make it."""
    problems = _check(ranking, problems)
    fig, axes, colors = _panels(ranking, problems, ncols)
    for ax, problem in zip(axes, problems):
        points = []
        for name, pts in sorted(_entries(ranking, problem).items()):
            w = np.array([max(p[1]["wall_s"], 1e-3) for p in pts])
            r = np.array([max(p[1]["ratio"][0], 1e-2) for p in pts])
            ax.scatter(w, r, color=colors[name], s=14, label=name, zorder=3)
            points += list(zip(w, r))
        front = pareto_front(points)
        if front:
            fw, fr = zip(*front)
            ax.step(fw, fr, where="post", color="0.3", lw=0.9, zorder=2)
    return _finish(fig, axes, problems, "wall time (s)")


def pareto_front(points) -> list[tuple[float, float]]:
    """The points (cost, error) that no other point beats on both, sorted by cost."""
    front, best = [], math.inf
    for cost, err in sorted(points):
        if err < best:
            front.append((cost, err))
            best = err
    return front


def leaderboard_map(ranking: dict, *, budget: int, problems=None):
    """Every sampler (rows) on every problem (columns) at one budget: log10 of TV / floor as colour,
    the number written in each cell; n/a (a linear operator needed, or over budget) left blank."""
    import matplotlib.pyplot as plt

    problems = _check(ranking, problems)
    missing = [p for p in problems if budget not in ranking[p] and str(budget) not in ranking[p]]
    if missing:
        raise ValueError(f"budget: {budget} is not a budget of {missing}")
    names = sorted({e["sampler"] for p in problems for e in (ranking[p].get(budget) or ranking[p][str(budget)])})
    grid = np.full((len(names), len(problems)), np.nan)
    for j, p in enumerate(problems):
        for e in ranking[p].get(budget) or ranking[p][str(budget)]:
            if e["status"] == "done":
                grid[names.index(e["sampler"]), j] = e["ratio"][0]
    order = np.argsort(np.nanmean(np.where(np.isnan(grid), np.nanmax(grid) * 10, grid), axis=1), kind="stable")
    grid, names = grid[order], [names[i] for i in order]
    fig, ax = plt.subplots(figsize=(1.0 * len(problems) + 2.2, 0.34 * len(names) + 1.6), layout="constrained")
    im = ax.imshow(np.log10(np.maximum(grid, 1e-2)), cmap="magma_r", vmin=0.0, aspect="auto")
    ax.grid(False)
    for i in range(len(names)):
        for j in range(len(problems)):
            if not np.isnan(grid[i, j]):
                v = grid[i, j]
                ax.text(j, i, f"{v:.1f}" if v < 100 else f"{v:.0f}", ha="center", va="center", fontsize=FONT - 1,
                        color="white" if np.log10(max(v, 1e-2)) > 0.6 * np.nanmax(np.log10(np.maximum(grid, 1e-2)))
                        else "black")
    ax.set_xticks(range(len(problems)), [p.replace("_", " ") for p in problems], rotation=30, ha="right",
                  fontsize=FONT)
    ax.set_yticks(range(len(names)), names, fontsize=FONT)
    fig.colorbar(im, ax=ax, label="log10(TV / floor)", shrink=0.8)
    ax.set_title(f"TV over modes / Monte Carlo floor at {budget} evaluations per particle", fontsize=FONT + 1)
    return fig
