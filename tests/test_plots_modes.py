"""fsdiag.plots.modes: each figure function returns a page-sized Figure (width <= 12 in, at most
3 panels per row) with the expected panels, from small synthetic inputs, and plots the numbers given."""
from types import SimpleNamespace

import matplotlib
import numpy as np
import pytest
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from fsdiag import plots  # noqa: E402
from fsdiag.plots import modes  # noqa: E402


def report(mass, exact, labels=None, n_times=5):
    mass, exact = np.asarray(mass, float), np.asarray(exact, float)
    labels = list(range(len(mass))) if labels is None else labels
    times = np.linspace(1.0, 0.01, n_times)
    return SimpleNamespace(
        modes={"labels": labels, "sampler": mass.tolist(), "exact": exact.tolist(), "lower": (mass - 0.05).tolist(),
               "upper": (mass + 0.05).tolist(), "tv": 0.5 * float(np.abs(mass - exact).sum())},
        spread={"times": times.tolist(), "var_ratio": np.linspace(2, 1, n_times).tolist()},
        score_agreement={"times": times.tolist(), "norm_ratio": np.linspace(0.5, 1, n_times).tolist(),
                         "cosine": np.linspace(0.9, 1, n_times).tolist()},
        early_stopping={"times": times.tolist(), "particle": np.linspace(1, 0.1, n_times).tolist(),
                        "tweedie": np.linspace(0.8, 0.05, n_times).tolist()})


def check(fig, n_axes):
    assert isinstance(fig, Figure)
    axes = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert len(axes) == n_axes
    assert fig.get_size_inches()[0] <= 12.0
    # At most three panels side by side: no more than 3 distinct left edges among the panels.
    fig.canvas.draw()
    lefts = {round(ax.get_position().x0, 2) for ax in axes}
    assert len(lefts) <= 3 or n_axes > 12          # image grids are exempt (checked separately)
    for text in fig.findobj(matplotlib.text.Text):
        if text.get_text():
            assert text.get_fontsize() >= 9, text.get_text()
    plt.close(fig)


def bar_heights(ax):
    return [p.get_height() for p in ax.patches]


def test_everything_is_exported():
    for name in modes.__all__:
        assert getattr(plots, name) is getattr(modes, name)


def test_mode_masses_figure_plots_the_masses():
    reps = {"a": report([0.3, 0.7], [0.4, 0.6]), "b": report([0.5, 0.5], [0.4, 0.6])}
    fig = modes.mode_masses_figure(reps, closed=[0.41, 0.59], mode_names=["left", "right"])
    assert np.allclose(bar_heights(fig.axes[0]), [0.3, 0.7, 0.5, 0.5])
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["left", "right"]
    check(fig, 1)
    grid = np.linspace(-3, 3, 50)
    fig = modes.mode_masses_figure(reps, closed=[0.41, 0.59], density=(grid, np.exp(-grid ** 2)),
                                   samples={"a": np.random.default_rng(0).normal(size=100)})
    check(fig, 2)


def test_mode_weight_sweep_figure_wraps_into_rows():
    rows = [{"method": m, "noise_std": s, "exact_mode1": 0.2 * k, "mode1": 0.2 * k + 0.01, "lower": 0.2 * k - 0.02,
             "upper": 0.2 * k + 0.03} for m in "abcde" for k, s in enumerate([0.5, 1.0, 2.0])]
    fig = modes.mode_weight_sweep_figure(rows, names={m: m.upper() for m in "abcde"})
    assert [ax.get_title() for ax in fig.axes] == list("ABCDE")
    line = fig.axes[0].lines[1]                                  # the first noise level's marker
    assert np.allclose(line.get_xdata(), [0.0]) and np.allclose(line.get_ydata(), [0.01])
    check(fig, 5)


def test_class_weights_figure():
    reps = {n: report(np.full(10, 0.1), np.full(10, 0.1)) for n in ("exact", "fsr", "dps")}
    fig = modes.class_weights_figure(reps, title="t")
    assert len(bar_heights(fig.axes[0])) == 30
    check(fig, 1)


def test_image_rows_figure_shapes_and_nan():
    img = np.random.default_rng(0).random((4, 64))
    img[0, :8] = np.nan
    fig = modes.image_rows_figure([("truth", img[:2], ["a", "b"]), ("fsr", img, None)], n_show=4)
    assert fig.get_size_inches()[0] <= 12
    assert len(fig.axes) == 8
    assert np.ma.is_masked(fig.axes[0].images[0].get_array())
    plt.close(fig)
    fig = modes.image_rows_figure([("x", np.zeros((30, 8, 8)), None)], n_show=30)
    assert fig.get_size_inches()[0] <= 12
    plt.close(fig)


def test_particles_figure_exact_panel_and_flags():
    rng = np.random.default_rng(0)
    atoms = rng.normal(size=(20, 2))
    samples = {f"m{k}": rng.normal(size=(30, 2)) for k in range(5)}
    flagged = {"m1": np.arange(30) < 4}
    fig = modes.particles_figure(atoms, samples, psi=rng.random(20), flagged=flagged, vline=1.0)
    crosses = [c for c in fig.axes[2].collections if c.get_offsets().shape[0] == 4]
    assert len(crosses) == 1
    check(fig, 6)
    check(modes.particles_figure(atoms, samples, line=((-3, 3), (3, -3))), 5)


def test_prior_mode_vs_noise_figure():
    rows = [{"method": m, "noise_std": s, "prior_mode": 0.1, "prior_mode_ci": [0.05, 0.2]}
            for m in ("fsr", "dps") for s in (0.3, 0.1)]
    fig = modes.prior_mode_vs_noise_figure(rows)
    assert np.allclose(fig.axes[0].lines[0].get_xdata(), [0.1, 0.3])
    check(fig, 1)


def test_manifold_samples_figure_counts_off_support():
    rng = np.random.default_rng(0)
    atoms = rng.normal(size=(20, 2))
    row = {"label": "radial", "atoms": atoms, "psi": rng.random(20), "x_star": atoms[:1],
           "forward": lambda x: x.norm(dim=1, keepdim=True), "y": 1.0,
           "samples": {"FSR": atoms[:10], "DPS": rng.normal(size=(10, 2))},
           "flagged": {"DPS": np.arange(10) < 3}}
    fig = modes.manifold_samples_figure([row, {**row, "label": "mlp"}])
    assert "30% off support" in fig.axes[1].get_title()
    check(fig, 4)


def test_noise_stressor_figure():
    rows = [{"method": m, "noise_std": s, "off_support": 0.1, "likelihood_mode": 0.05, "wasserstein": 0.2}
            for m in ("fsr", "dps") for s in (0.3, 0.1, 0.03)]
    check(modes.noise_stressor_figure(rows), 3)
    fig = modes.noise_stressor_figure(rows, atoms=np.zeros((5, 2)), samples={"dps": np.array([[0.0, 0.0], [9, 9]])})
    assert "1 outside the view" in fig.axes[3].get_title()
    check(fig, 4)


def test_sampler_diagnostics_figure():
    reps = {"a": report([1.0], [1.0]), "b": report([1.0], [1.0])}
    fig = modes.sampler_diagnostics_figure(reps, {k: (lambda t: float(np.exp(-5 * t))) for k in reps},
                                           emphasize=["b"])
    x = fig.axes[0].lines[0].get_xdata()
    t = np.linspace(1.0, 0.01, 5)
    assert np.allclose(x, np.sqrt((1 - np.exp(-5 * t)) / np.exp(-5 * t)))
    check(fig, 4)


def test_class_weights_grid_figure_fills_missing_classes():
    rep = report([0.5, 0.5], [0.5, 0.5], labels=[3, 7])
    reps = {n: {"defaults": rep, "paper": rep} for n in ("DPS", "DDRM", "ULA", "SKRock")}
    fig = modes.class_weights_grid_figure(reps, np.full(10, 0.1), faded=["defaults"])
    heights = bar_heights(fig.axes[0])
    assert len(heights) == 30 and heights[13] == pytest.approx(0.5) and heights[10] == 0.0
    check(fig, 4)


def test_plots_do_not_need_torch_tensors():
    # The manifold figure calls `forward` on a float64 torch tensor of grid points.
    seen = {}

    def forward(x):
        seen["dtype"] = x.dtype
        return x[:, :1]

    row = {"label": "l", "atoms": np.zeros((3, 2)), "psi": np.ones(3), "x_star": np.zeros(2), "forward": forward,
           "y": 0.0, "samples": {"s": np.zeros((2, 2))}}
    plt.close(modes.manifold_samples_figure([row]))
    assert seen["dtype"] == torch.float64


def overlapping_tick_labels(fig):
    """Pairs of visible, non-empty tick labels on one axis whose drawn boxes overlap."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    clashes = []
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            labels = [t for t in axis.get_ticklabels(minor=False) + axis.get_ticklabels(minor=True)
                      if t.get_visible() and t.get_text().strip()]
            boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in labels]
            clashes += [(a, b) for i, (a, ba) in enumerate(boxes) for b, bb in boxes[i + 1:] if ba.overlaps(bb)]
    return clashes


@pytest.mark.parametrize("levels", [(0.01,), (0.03,), (0.03, 0.04), (0.03, 0.3), (0.3, 0.1, 0.03), (0.3, 0.1, 0.03, 0.01),
                                    (1e-3, 0.5, 2.0)])
def test_noise_axes_have_no_overlapping_tick_labels(levels):
    # Chapter 6: a log noise axis over one or a few close levels drew minor labels "3×10⁻²4×10⁻²".
    rows = [{"method": m, "noise_std": s, "off_support": 0.1, "likelihood_mode": 0.05, "wasserstein": 0.2,
             "prior_mode": 0.1, "prior_mode_ci": [0.05, 0.2]} for m in ("fsr", "dps") for s in levels]
    for fig in (modes.noise_stressor_figure(rows, atoms=np.zeros((5, 2)), samples={"dps": np.zeros((3, 2))}),
                modes.prior_mode_vs_noise_figure(rows)):
        assert overlapping_tick_labels(fig) == []
        ax = fig.axes[0]
        shown = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
        assert shown == [f"{v:g}" for v in sorted(levels)]      # ticks at the swept levels, plain numbers
        assert not [t for t in ax.get_xticklabels(minor=True) if t.get_text()]
        plt.close(fig)


def test_class_weights_grid_legend_covers_all_panels():
    # Chapter 9: the legend telling deepinv's defaults from the paper's settings was in one panel
    # only; it is now one figure-level legend, above the panels, naming exact and every setting.
    rep = report([0.5, 0.5], [0.5, 0.5], labels=[3, 7])
    reps = {n: {"defaults": rep, "paper": rep} for n in ("DPS", "DDRM", "ULA", "SKRock")}
    fig = modes.class_weights_grid_figure(reps, np.full(10, 0.1), faded=["defaults"])
    assert all(ax.get_legend() is None for ax in fig.axes)
    assert len(fig.legends) == 1
    legend = fig.legends[0]
    assert [t.get_text() for t in legend.get_texts()] == ["exact", "defaults", "paper"]
    fig.canvas.draw()
    box = legend.get_window_extent()
    panels = [ax.get_tightbbox() for ax in fig.axes]       # titles included
    assert all(box.y0 >= p.y1 - 1 for p in panels)          # above every panel, overlapping none
    assert box.x0 >= 0 and box.x1 <= fig.bbox.width
    assert overlapping_tick_labels(fig) == []
