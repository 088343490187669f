"""The figure of `fsdiag diagnose`'s report: the problem (truth, y, samples) above the verdict
(mass per mode against the exact posterior, TV beside its Monte Carlo floor band)."""
from __future__ import annotations

import numpy as np

from ._common import LEGEND_FONT

__all__ = ["report_figure"]

_MAX_MODES = 24


def _mosaic(rows: np.ndarray, shape, ncols: int = 8) -> np.ndarray:
    """Images (k, C*H*W) as one grey or colour canvas with 1-pixel gaps (NaN)."""
    c, h, w = shape
    k = rows.shape[0]
    nr = -(-k // ncols)
    canvas = np.full((nr * (h + 1) - 1, min(k, ncols) * (w + 1) - 1, c), np.nan)
    for i in range(k):
        r, q = divmod(i, ncols)
        canvas[r * (h + 1):r * (h + 1) + h, q * (w + 1):q * (w + 1) + w] = rows[i].reshape(c, h, w).transpose(1, 2, 0)
    return canvas[..., 0] if c == 1 else canvas


def _show(ax, img, title, vmin=None, vmax=None):
    import matplotlib as mpl
    cmap = mpl.colormaps["gray"].with_extremes(bad="#d9e6f2")     # unobserved pixels / gaps: light blue
    if img.ndim == 3:
        img = np.clip(np.nan_to_num((img - vmin) / max(vmax - vmin, 1e-12), nan=1.0), 0, 1)
        ax.imshow(img)
    else:
        ax.imshow(np.ma.masked_invalid(img), cmap=cmap, vmin=vmin, vmax=vmax)
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def _problem_panels(fig, spec, report, problem, x):
    """Truth / y / samples for images; the atoms, their exact weights and the samples otherwise."""
    atoms = problem.prior.atoms.detach().double().cpu().numpy()
    xs = x.detach().double().cpu().numpy()
    psi = np.asarray(report.exact_weights)
    if problem.image_shape is not None:
        lo, hi = float(atoms.min()), float(atoms.max())
        sub = spec.subgridspec(1, 3, width_ratios=[1, 1, 2.4])
        if problem.truth is not None:
            _show(fig.add_subplot(sub[0]), _mosaic(problem.truth.double().cpu().numpy(), problem.image_shape, 1),
                  "held-out truth", lo, hi)
        else:
            ax = fig.add_subplot(sub[0])
            ax.axis("off")
            ax.text(0.5, 0.5, "no ground truth\ngiven", ha="center", va="center", fontsize=9)
        ax = fig.add_subplot(sub[1])
        try:
            from ..imaging import observed_image
            seen = observed_image(problem.forward, problem.y).numpy()
            _show(ax, seen.transpose(1, 2, 0)[..., 0] if seen.shape[0] == 1 else seen.transpose(1, 2, 0),
                  f"y: {type(problem.forward).__name__}", *((lo, hi) if seen.shape[0] > 1 else (None, None)))
        except (TypeError, ValueError):
            ax.plot(problem.y.double().cpu().numpy(), lw=0.8)
            ax.set_title(f"y ({problem.lik.obs_dim} values)", fontsize=9)
            ax.tick_params(labelsize=7)
        k = min(16, xs.shape[0])
        _show(fig.add_subplot(sub[2]), _mosaic(xs[:k], problem.image_shape), f"first {k} samples", lo, hi)
        return
    ax = fig.add_subplot(spec)
    if atoms.shape[1] == 1:
        ax.hist(xs[:, 0], bins=60, density=True, color="C0", alpha=0.5, label="samples")
        ax2 = ax.twinx()
        ax2.vlines(atoms[:, 0], 0, psi, color="k", lw=1.5, label="exact posterior mass per atom")
        ax2.set_ylim(0, 1.05)
        ax2.set_ylabel("exact mass", fontsize=8)
        ax.set_xlabel("x", fontsize=8)
        ax.legend(loc="upper left", fontsize=LEGEND_FONT, frameon=False)
        ax2.legend(loc="upper right", fontsize=LEGEND_FONT, frameon=False)
    else:
        j = (0, 1)
        ax.scatter(atoms[:, j[0]], atoms[:, j[1]], s=6 + 200 * psi / max(psi.max(), 1e-300), c=psi, cmap="Greys",
                   edgecolors="0.6", linewidths=0.3, label="atoms (size, shade: exact mass)")
        ax.scatter(xs[:, j[0]], xs[:, j[1]], s=4, color="C0", alpha=0.5, label="samples")
        ax.set_xlabel("x[0]", fontsize=8)
        ax.set_ylabel("x[1]", fontsize=8)
        ax.legend(fontsize=LEGEND_FONT, frameon=False)
        if atoms.shape[1] > 2:
            ax.set_title(f"the first two of {atoms.shape[1]} coordinates", fontsize=9)
    ax.tick_params(labelsize=7)


def _modes_panel(ax, report):
    m = report.modes
    labels = [str(v) for v in m["labels"]]
    s, lo, hi, e = (np.asarray(m[k], dtype=float) for k in ("sampler", "lower", "upper", "exact"))
    absent = set(map(str, report.hallucination["absent_modes"]))
    order = np.arange(len(labels))
    if len(labels) > _MAX_MODES:                  # the modes that matter: largest exact or sampler mass
        order = np.sort(np.argsort(-np.maximum(s, e), kind="stable")[:_MAX_MODES])
    pos = np.arange(order.size)
    colors = ["C3" if labels[i] in absent else "C0" for i in order]
    ax.bar(pos, s[order], 0.7, color=colors)
    ax.errorbar(pos, s[order], yerr=[np.maximum(s[order] - lo[order], 0), np.maximum(hi[order] - s[order], 0)],
                fmt="none", ecolor="k", lw=0.8)
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    handles = [Patch(color="C0", label="sampler (95% interval)"),
               Line2D([], [], color="k", marker="_", ms=14, ls="none", label="exact posterior")]
    if any(labels[i] in absent for i in order):
        handles.insert(1, Patch(color="C3", label="sampler, on an excluded mode"))
    ax.scatter(pos, e[order], marker="_", s=300, color="k", zorder=5)
    ax.set_xticks(pos, [labels[i] for i in order], fontsize=7)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("posterior mass", fontsize=8)
    shown = "" if order.size == len(labels) else f" ({order.size} of {len(labels)} shown)"
    ax.set_title(f"mass per mode{shown}: TV {report.tv_modes:.3f}", fontsize=9)
    ax.legend(handles=handles, fontsize=LEGEND_FONT, frameon=False)
    ax.tick_params(labelsize=7)


def _floor_panel(ax, report):
    rows = [("modes", report.tv_modes, report.floor["modes"]), ("atoms", report.tv_atoms, report.floor["atoms"])]
    for i, (name, tv, floor) in enumerate(rows):
        ax.barh(i, floor["q95"], height=0.5, color="0.85", label="exact draws: mean to 95%" if i == 0 else None)
        ax.barh(i, floor["mean"], height=0.5, color="0.65", label="exact draws: mean" if i == 0 else None)
        ax.plot([tv], [i], "o", color="C3" if tv > floor["q95"] else "C2", ms=8,
                label="sampler" if i == 0 else None)
        ax.annotate(f"{tv:.3f}", (tv, i), xytext=(6, 6), textcoords="offset points", fontsize=8)
    ax.set_yticks(range(len(rows)), [f"TV over {n}" for n, _, _ in rows], fontsize=8)
    top = max(max(tv, f["q95"]) for _, tv, f in rows)
    ax.set_xlim(0, min(1.0, 1.25 * top + 1e-3))
    ax.set_ylim(-0.6, len(rows) - 0.2)
    ax.set_xlabel("total variation to the exact posterior", fontsize=8)
    ax.set_title("TV beside the Monte Carlo floor (as many exact draws)", fontsize=9)
    ax.legend(fontsize=LEGEND_FONT, frameon=False, loc="lower right")
    ax.tick_params(labelsize=7)


def report_figure(report, problem, x):
    """The report's figure. report: an fsdiag.Report; problem: the fsdiag.Problem; x: the samples (n, d)."""
    import matplotlib
    if matplotlib.get_backend().lower() not in ("agg", "module://matplotlib_inline.backend_inline"):
        matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(11, 6.4), layout="constrained")
    grid = fig.add_gridspec(2, 2, height_ratios=[1, 1.1])
    _problem_panels(fig, grid[0, :], report, problem, x)
    _modes_panel(fig.add_subplot(grid[1, 0]), report)
    _floor_panel(fig.add_subplot(grid[1, 1]), report)
    fig.suptitle(f"{problem.name}: {report.method}", fontsize=10)
    return fig
