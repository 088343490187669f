"""Figures of the chapter "Do exact-in-the-limit samplers fix it?": error against compute.

Each function takes the chapter's results, {problem: {"title", "runs": [row, ...]}} where a row is a dict
with "method", "family" ("smc", "guidance" or "daps"), "label", "evaluations", "wall_s", "tv_modes",
"floor_q95", "excluded" (and any other keys), and returns a matplotlib figure; nothing here runs a sampler.
"""
from __future__ import annotations

import numpy as np

from ._common import LEGEND_FONT

__all__ = ["compute_sweep_figure", "floor_crossings", "tv_excluded_time_figure"]

_STYLE = {"smc": dict(ls="-", marker="o"), "guidance": dict(ls="--", marker="s"), "daps": dict(ls=":", marker="^")}
_X = {"evaluations": "denoiser evaluations (particles × passes)", "wall_s": "wall time (s)"}
_Y = {"tv_ratio": "TV over modes / Monte Carlo floor (95%)", "excluded": "mass on excluded modes"}


def _series(runs):
    """Rows grouped by label, in order of first appearance, each sorted by compute."""
    out = {}
    for r in runs:
        out.setdefault(r["label"], []).append(r)
    return {k: sorted(v, key=lambda r: r["evaluations"]) for k, v in out.items()}


def _value(r, y):
    if y == "tv_ratio":
        return r["tv_modes"] / max(r["floor_q95"], 1e-12)
    return r["excluded"]


def floor_crossings(runs) -> dict:
    """{label: the smallest denoiser evaluations from which on every run of that sampler has TV over modes
    <= the floor's 95% quantile at its own sample size (None when its largest run is above the floor)}.
    The floor falls as samples grow, so a biased sampler can be "at the floor" at small sizes only."""
    out = {}
    for label, rows in _series(runs).items():
        at = [r["tv_modes"] <= r["floor_q95"] for r in rows]
        k = len(at)
        while k > 0 and at[k - 1]:
            k -= 1
        out[label] = rows[k]["evaluations"] if k < len(rows) else None
    return out


def compute_sweep_figure(results: dict, *, x: str = "evaluations", y: str = "tv_ratio", ncols: int = 3):
    """One panel per problem: each sampler's error against its compute (log-log). y="tv_ratio": TV over
    modes divided by the 95% quantile of the TV of as many exact draws (below the line at 1: as good as
    exact sampling); y="excluded": mass on modes the exact posterior excludes. x: "evaluations" or "wall_s".
    Solid: SMC (particles grow), dashed: guidance (particles grow), dotted: DAPS (annealing steps grow)."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    if x not in _X:
        raise ValueError(f"x: expected one of {sorted(_X)}, got {x!r}")
    if y not in _Y:
        raise ValueError(f"y: expected one of {sorted(_Y)}, got {y!r}")
    keys = list(results)
    ncols = max(1, min(ncols, len(keys)))
    nrows = int(np.ceil(len(keys) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(min(11.0, 3.7 * ncols), 3.6 * nrows + 0.6), squeeze=False,
                             layout="constrained")
    handles = {}
    labels = list(_series([r for key in keys for r in results[key]["runs"]]))
    colors = {lab: plt.get_cmap("tab10")(i % 10) for i, lab in enumerate(labels)}   # one colour per sampler
    for ax, key in zip(axes.flat, keys):
        for label, rows in _series(results[key]["runs"]).items():
            xs = [r[x] for r in rows]
            ys = [_value(r, y) for r in rows]
            style = _STYLE.get(rows[0]["family"], {})
            if len(rows) == 1 and rows[0]["family"] == "daps":          # DAPS at its paper defaults: one run
                style = {**style, "marker": "*", "ms": 12}
            (h,) = ax.plot(xs, ys, label=label, color=colors[label], **style)
            handles.setdefault(label, h)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}" if x == "evaluations" else f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        if y == "tv_ratio":
            ax.set_yscale("log")
            handles.setdefault("Monte Carlo floor (95% of exact draws)", ax.axhline(1.0, color="k", lw=1.2))
            ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.yaxis.set_minor_formatter(NullFormatter())
        else:
            ax.set_ylim(-0.02, max(0.1, ax.get_ylim()[1]))
        ax.set_title(results[key]["title"], fontsize=10)
        ax.set_xlabel(_X[x], fontsize=10)
        ax.set_ylabel(_Y[y], fontsize=10)
        ax.tick_params(labelsize=9)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncol=min(4, len(handles)),
               fontsize=LEGEND_FONT, frameon=False)
    return fig


def tv_excluded_time_figure(table, *, colors: dict, faded: str = "defaults"):
    """Three bar panels, one bar per run (table: rows with "sampler", "settings", "TV classes",
    "floor", "excluded", "time (s)"): the TV over classes with the run's Monte Carlo floor as a
    grey tick, the mass on excluded classes and the wall time (log scale); runs at the `faded`
    settings drawn lighter."""
    import matplotlib.pyplot as plt
    need = {"sampler", "settings", "TV classes", "floor", "excluded", "time (s)"}
    if not need <= set(table.columns):
        raise ValueError(f"table: expected columns {sorted(need)}, missing {sorted(need - set(table.columns))}")
    n = len(table)
    fig, axes = plt.subplots(1, 3, figsize=(8.4, 0.45 * n + 1.4), layout="constrained", sharey=True)
    labels = [f"{s} ({w})" for s, w in zip(table["sampler"], table["settings"])]
    pos = np.arange(n)[::-1]
    cols = [colors[s] for s in table["sampler"]]
    alphas = [0.45 if w == faded else 1.0 for w in table["settings"]]
    names = {"TV classes": "TV over classes", "excluded": "mass on excluded classes", "time (s)": "wall time (s)"}
    for ax, key in zip(axes, names):
        for p, v, c, a in zip(pos, table[key], cols, alphas):
            ax.barh(p, v, color=c, alpha=a)
        ax.set_xlabel(names[key])
    for p, f in zip(pos, table["floor"]):
        axes[0].plot([f, f], [p - 0.4, p + 0.4], color="0.3", lw=2)
    axes[0].set_xlim(0, 1)
    axes[0].set_yticks(pos, labels, fontsize=9)
    axes[2].set_xscale("log")
    return fig
