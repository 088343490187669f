"""Figures for the chapter "Imaging inverse problems". Each function takes the numbers the chapter
stores in metrics.json (lists, no tensors needed) and returns a matplotlib figure; nothing here runs
a sampler. Images are (C, H, W) nested lists or arrays; C = 3 is shown in colour for means and as
the channel average for standard deviations."""
from __future__ import annotations

import numpy as np

from ._common import FONT, LEGEND_FONT

__all__ = ["posterior_maps_figure", "operator_class_weights_figure", "tweedie_blur_figure", "growth_figure"]

PAGE = 8.4          # width of the book's page, inches: figures are drawn at it so text keeps its size
TITLE = 10          # panel titles
PAD = 8             # points between a panel's title and what is under it


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


def _text_width(text: str) -> float:
    """Width in points of `text` at FONT points."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import TextToPath
    return TextToPath().get_text_width_height_descent(text, FontProperties(size=FONT), ismath=False)[0]


def _wrap_label(name: str, room: float) -> str:
    """`name` broken at spaces into lines of at most `room` points where it can be; a single word
    still too wide is shortened to fit, ending in '.'."""
    lines, cur = [], ""
    for word in name.split(" "):
        trial = f"{cur} {word}" if cur else word
        if cur and _text_width(trial) > room:
            lines.append(cur)
            cur = word
        else:
            cur = trial
    lines.append(cur)
    out = []
    for line in lines:
        while " " not in line and len(line) > 2 and _text_width(line) > room:
            line = line[:-2].rstrip() + "."
        out.append(line)
    return "\n".join(out)


def _horizontal_labels(ax, positions, names, *, width: float) -> None:
    """Horizontal x tick labels for a panel about `width` inches wide, at FONT points: the full
    names where they fit side by side; else every other label dropped (twice the room), names of
    several words broken onto lines and a single word too wide shortened, ending in '.'."""
    names = [str(n) for n in names]
    room = width * 72 / max(len(names), 1)                  # points between neighbouring labels
    ax.set_xticks(positions, names, fontsize=FONT, rotation=0)
    if max((_text_width(n) for n in names), default=0.0) <= 0.85 * room:
        return
    fit = [_wrap_label(n, 1.7 * room) for n in names]
    ax.set_xticks(positions, fit, fontsize=FONT, rotation=0)
    depth = max(f.count("\n") + 1 for f in fit)
    for tick in ax.xaxis.get_major_ticks()[1::2]:
        tick.set_pad(tick.get_pad() + 1.25 * FONT * depth)


def _plain(v, _pos=None) -> str:
    return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:g}"


def _few_log_ticks(ax, which: str, values, *, at_values: bool = False) -> None:
    """A log axis with a few plainly written major ticks and no minor labels: at the values
    themselves (at_values, when there are at most 5 of them), else at 1, 2, 5 x 10^k over a
    range up to 20, 1, 3 x 10^k up to 200, some powers of 10 beyond."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullFormatter, NullLocator
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v) & (v > 0)]
    (ax.set_xscale if which == "x" else ax.set_yscale)("log")
    axis = ax.xaxis if which == "x" else ax.yaxis
    if v.size == 0:
        return
    if at_values and len(set(v.tolist())) <= 5:
        axis.set_major_locator(FixedLocator(sorted(set(v.tolist()))))
    else:
        ratio = v.max() / v.min()
        subs = (1.0, 2.0, 5.0) if ratio <= 20 else (1.0, 3.0) if ratio <= 200 else (1.0,)
        axis.set_major_locator(LogLocator(base=10, subs=subs, numticks=6))
    axis.set_major_formatter(FuncFormatter(_plain))
    axis.set_minor_locator(NullLocator())
    axis.set_minor_formatter(NullFormatter())


def _show_mosaic(ax, images, labels, *, vmin, vmax, cmap, gray=False, width: float = PAGE / 2):
    import matplotlib.pyplot as plt
    m = _mosaic(images, gray=gray)
    cm = plt.get_cmap(cmap).with_extremes(bad="white")
    if m.ndim == 3:                                     # colour: NaN gaps to white, values clipped
        m = np.where(np.isnan(m), 1.0, np.clip(m, vmin, vmax))
    im = ax.imshow(m, cmap=cm, vmin=vmin, vmax=vmax, interpolation="nearest")
    w = np.asarray(_image(images[0], gray=True)).shape[1]
    _horizontal_labels(ax, [k * (w + 1) + (w - 1) / 2 for k in range(len(images))], labels, width=width)
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
    fig, axes = plt.subplots(n, 2, figsize=(PAGE, 0.8 + 1.35 * n), squeeze=False, layout="constrained",
                             gridspec_kw={"width_ratios": [1.3, 1.0]})
    for row, p in zip(axes, problems):
        names = list(p["maps"])
        obs = p.get("observed")
        first = [p["truth"]] + ([obs] if obs is not None else [])
        labels = ["truth"] + (["observed"] if obs is not None else [])
        vmax = max(1.0, float(np.nanmax(np.asarray(p["truth"], dtype=float))))
        im = _show_mosaic(row[0], first + [p["maps"][k]["mean"] for k in names], labels + names,
                          vmin=0.0, vmax=vmax, cmap="gray_r", width=PAGE * 1.3 / 2.3 - 0.2)
        row[0].set_title(f"{p['title']}: per-pixel mean", fontsize=TITLE, pad=PAD)
        stds = [p["maps"][k]["std"] for k in names]
        top = max(float(np.nanmax(np.asarray(s, dtype=float))) for s in stds) or 1.0
        im = _show_mosaic(row[1], stds, names, vmin=0.0, vmax=top, cmap="magma", gray=True,
                          width=PAGE * 1.0 / 2.3 - 0.6)
        row[1].set_title(f"{p['title']}: per-pixel std", fontsize=TITLE, pad=PAD)
        fig.colorbar(im, ax=row[1], shrink=0.8, pad=0.01).ax.tick_params(labelsize=FONT)
    if title:
        fig.suptitle(title, fontsize=TITLE + 1)
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
    fig, axes = plt.subplots(nrows, ncols, figsize=(PAGE if ncols > 1 else PAGE / 2 + 0.5, 3.0 * nrows),
                             squeeze=False, layout="constrained", sharey=True)
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
        _horizontal_labels(ax, pos, class_names, width=fig.get_size_inches()[0] / ncols - 0.7)
        ax.tick_params(axis="y", labelsize=FONT)
        ax.set_ylim(0, 1.02)
        ax.set_title(p["title"], fontsize=TITLE, pad=PAD)
    for ax in axes.flat[len(problems):]:
        ax.set_axis_off()
    for ax in axes[:, 0]:
        ax.set_ylabel("posterior mass")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside upper center", ncols=len(labels), fontsize=LEGEND_FONT, frameon=False)
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
    fig, axes = plt.subplots(nrows, ncols, figsize=(PAGE, 2.9 * nrows + 0.6), squeeze=False, layout="constrained",
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
            ax.set_yticks([i * (h[0] + 1) + (h[0] - 1) / 2 for i in range(len(names))], names, fontsize=FONT)
            ax.set_xticks([i * (h[1] + 1) + (h[1] - 1) / 2 for i in range(len(s["times"]))],
                          [f"{t:.2g}" for t in s["times"]], fontsize=FONT)
            ax.set_xlabel("stopping time t", fontsize=FONT)
            ax.grid(False)
            ax.set_title(f"{s['title']}:\nTweedie mean of one particle", fontsize=TITLE, pad=PAD)
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
            ax.set_xlabel("stopping time t (log scale, runs left to right)", fontsize=FONT)
            ax.set_ylabel("blur of Tweedie means", fontsize=FONT)
            ax.tick_params(labelsize=FONT)
            ax.set_title(c["title"], fontsize=TITLE, pad=PAD)
        axes[r][0].legend(fontsize=LEGEND_FONT, frameon=False)
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
    fig, axes = plt.subplots(1, 3, figsize=(PAGE, 3.2), layout="constrained")
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
    _few_log_ticks(axes[2], "y", sweep["ess"])
    for ax, t in zip(axes, ("distance to the exact\nclass weights", "ruled-out classes", "exact posterior")):
        _few_log_ticks(ax, "x", sizes, at_values=True)
        ax.set_xlabel("atoms N", fontsize=FONT)
        ax.yaxis.label.set_fontsize(FONT)
        ax.tick_params(labelsize=FONT)
        ax.set_title(t, fontsize=TITLE, pad=PAD)
    axes[0].legend(fontsize=LEGEND_FONT, frameon=False)
    if title:
        fig.suptitle(title, fontsize=TITLE + 1)
    return fig
