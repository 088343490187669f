"""fsdiag.plots.images: each figure function returns a page-sized Figure (width <= 12 in, at most
3 panels per row, fonts >= 9 pt) from small synthetic inputs, and draws the numbers it is given."""
import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.container import BarContainer  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from fsdiag import plots  # noqa: E402
from fsdiag.plots import images  # noqa: E402

RNG = np.random.default_rng(0)


def panels(fig):
    return [ax for ax in fig.axes if ax.get_label() != "<colorbar>" and ax.axison]


def check(fig, n_axes):
    assert isinstance(fig, Figure)
    axes = panels(fig)
    assert len(axes) == n_axes
    assert fig.get_size_inches()[0] <= 12.0
    fig.canvas.draw()
    assert len({round(ax.get_position().x0, 2) for ax in axes}) <= 3
    for text in fig.findobj(matplotlib.text.Text):
        if text.get_text():
            assert text.get_fontsize() >= 9, text.get_text()


def img(c=1, h=4, w=4):
    return RNG.random((c, h, w)).tolist()


def test_everything_is_exported():
    assert images.__all__
    for name in images.__all__:
        assert getattr(plots, name) is getattr(images, name)


def test_posterior_maps_figure_draws_each_map_in_place():
    truth, obs = img(), np.asarray(img())
    obs[0, 0, 0] = np.nan                                     # a missing pixel
    maps = {"exact posterior": {"mean": img(), "std": img()}, "σ-DPS": {"mean": img(), "std": img()}}
    probs = [{"title": "inpainting", "truth": truth, "observed": obs.tolist(), "maps": maps},
             {"title": "blur", "truth": truth, "observed": None, "maps": maps}]
    fig = images.posterior_maps_figure(probs, title="digits")
    check(fig, 4)
    mean_ax, std_ax = panels(fig)[:2]
    m = mean_ax.get_images()[0].get_array()
    # tiles of width 4 separated by one blank column: truth, observed, exact mean, σ-DPS mean
    np.testing.assert_allclose(m[:, 0:4], np.asarray(truth)[0])
    assert np.ma.is_masked(m[0, 5]) or np.isnan(m[0, 5])
    np.testing.assert_allclose(m[:, 15:19], np.asarray(maps["σ-DPS"]["mean"])[0])
    assert [t.get_text() for t in mean_ax.get_xticklabels()] == ["truth", "observed", "exact posterior", "σ-DPS"]
    s = std_ax.get_images()[0].get_array()
    np.testing.assert_allclose(s[:, 5:9], np.asarray(maps["σ-DPS"]["std"])[0])
    assert [t.get_text() for t in panels(fig)[2].get_xticklabels()] == ["truth", "exact posterior", "σ-DPS"]
    plt.close(fig)
    # colour images: the mean in colour, the standard deviation as the channel average
    cmaps = {"exact posterior": {"mean": img(3), "std": img(3)}}
    fig = images.posterior_maps_figure([{"title": "c", "truth": img(3), "observed": None, "maps": cmaps}])
    assert panels(fig)[0].get_images()[0].get_array().shape == (4, 9, 3)
    np.testing.assert_allclose(panels(fig)[1].get_images()[0].get_array(),
                               np.asarray(cmaps["exact posterior"]["std"]).mean(0))
    plt.close(fig)
    with pytest.raises(ValueError, match="problems"):
        images.posterior_maps_figure([])


def test_operator_class_weights_figure_plots_masses_intervals_and_exact():
    methods = {"exact sampler": {"classes": [0.5, 0.5, 0.0], "lower": [0.4, 0.4, 0.0], "upper": [0.6, 0.6, 0.05]},
               "ΠGDM": {"classes": [0.2, 0.3, 0.5], "lower": [0.1, 0.2, 0.4], "upper": [0.3, 0.4, 0.6]}}
    probs = [{"title": f"op {i}", "exact": [0.45, 0.55, 0.0], "methods": methods} for i in range(3)]
    fig = images.operator_class_weights_figure(probs, class_names=["brick", "grass", "gravel"])
    check(fig, 3)
    ax = panels(fig)[0]
    bars = [c for c in ax.containers if isinstance(c, BarContainer)]
    heights = [p.get_height() for c in bars for p in c]
    np.testing.assert_allclose(heights, [0.5, 0.5, 0.0, 0.2, 0.3, 0.5])
    np.testing.assert_allclose(ax.collections[-1].get_offsets()[:, 1], [0.45, 0.55, 0.0])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["brick", "grass", "gravel"]
    assert len(ax.patches) >= 7                                # six bars plus the ruled-out class's shading
    plt.close(fig)
    # four problems wrap onto two rows of two
    fig = images.operator_class_weights_figure(probs + probs[:1], class_names=["a", "b", "c"])
    check(fig, 4)
    plt.close(fig)


def test_tweedie_blur_figure_draws_strips_and_curves():
    times = [1.0, 0.3, 0.01]
    rows = {"exact sampler": [img() for _ in times], "σ-DPS": [img() for _ in times]}
    strips = [{"title": "digits", "times": times, "rows": rows}, {"title": "textures", "times": times, "rows": rows}]
    curves = [{"title": "digits", "times": times,
               "blur": {"exact sampler": [0.9, 0.5, 0.0], "σ-DPS": [0.9, 0.2, 0.1]}}]
    fig = images.tweedie_blur_figure(strips, curves)
    check(fig, 3)
    strip_ax, _, curve_ax = panels(fig)
    a = strip_ax.get_images()[0].get_array()
    assert a.shape == (4 * 2 + 1, 4 * 3 + 2)
    np.testing.assert_allclose(a[5:9, 5:9], np.asarray(rows["σ-DPS"][1])[0])
    assert [t.get_text() for t in strip_ax.get_yticklabels()] == ["exact sampler", "σ-DPS"]
    np.testing.assert_allclose(curve_ax.get_lines()[0].get_ydata(), [0.9, 0.5, 0.0])
    plt.close(fig)
    with pytest.raises(ValueError, match="strips"):
        images.tweedie_blur_figure([], [])


def test_growth_figure_plots_each_failure_against_n():
    sweep = {"sizes": [1000, 10000, 100000], "ess": [3.0, 20.0, 150.0],
             "methods": {"σ-DPS": {"tv_above_floor": [0.5, 0.6, 0.7], "excluded": [0.2, 0.3, 0.4]},
                         "exact sampler": {"tv_above_floor": [0.0, -0.1, 0.01], "excluded": [0.0, 0.0, 0.0]}}}
    fig = images.growth_figure(sweep, title="textures")
    check(fig, 3)
    a, b, c = panels(fig)
    np.testing.assert_allclose(a.get_lines()[0].get_xdata(), sweep["sizes"])
    np.testing.assert_allclose(a.get_lines()[0].get_ydata(), [0.5, 0.6, 0.7])
    np.testing.assert_allclose(b.get_lines()[1].get_ydata(), [0.0, 0.0, 0.0])
    np.testing.assert_allclose(c.get_lines()[0].get_ydata(), sweep["ess"])
    assert a.get_xscale() == "log" and a.get_yscale() == "linear" and c.get_yscale() == "log"
    plt.close(fig)
    with pytest.raises(ValueError, match="sweep"):
        images.growth_figure({"sizes": [], "ess": [], "methods": {}})


# ------------------------------------------------------------------ chapter 13's page rules

CIFAR = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _labels(axis, minor=False):
    """The tick labels drawn: visible, not empty, within the axis's view."""
    lo, hi = sorted(axis.get_view_interval())
    ticks = axis.get_minor_ticks() if minor else axis.get_major_ticks()
    eps = 1e-9 * (hi - lo)
    return [t.label1 for t in ticks if t.label1.get_visible() and t.label1.get_text().strip()
            and lo - eps <= t.get_loc() <= hi + eps]


def page_rules(fig):
    """Text >= 8 pt once the figure is shown at the page's width (8.4 in); no two tick labels on
    one axis overlap; no panel title touches that panel's tick labels."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    scale = min(1.0, 8.4 / fig.get_size_inches()[0])
    for text in fig.findobj(matplotlib.text.Text):
        if text.get_visible() and text.get_text().strip():
            assert text.get_fontsize() * scale >= 8, text.get_text()
    for ax in fig.axes:
        ticks = []
        for axis in (ax.xaxis, ax.yaxis):
            boxes = [t.get_window_extent(renderer) for t in _labels(axis) + _labels(axis, minor=True)]
            assert not [1 for i, a in enumerate(boxes) for b in boxes[i + 1:] if a.overlaps(b)], ax.get_title()
            ticks += boxes
        if ax.get_title():
            title = ax.title.get_window_extent(renderer)
            assert not [b for b in ticks if b.overlaps(title)], ax.get_title()
    # no two panel titles run into each other; every axis label lies inside the figure
    titles = [(ax.get_title(), ax.title.get_window_extent(renderer)) for ax in fig.axes if ax.get_title()]
    assert not [(a, b) for i, (a, ba) in enumerate(titles) for b, bb in titles[i + 1:] if ba.overlaps(bb)]
    for ax in fig.axes:
        for label in (ax.xaxis.label, ax.yaxis.label):
            if label.get_text():
                box = label.get_window_extent(renderer)
                assert box.x0 >= -1 and box.y0 >= -1 and box.x1 <= fig.bbox.width + 1 and \
                    box.y1 <= fig.bbox.height + 1, label.get_text()


def test_class_weights_labels_are_horizontal_and_readable_for_long_class_names():
    k = len(CIFAR)
    m = {"classes": np.full(k, 0.1), "lower": np.full(k, 0.05), "upper": np.full(k, 0.2)}
    probs = [{"title": t, "exact": np.full(k, 0.1), "methods": {"exact sampler": m, "σ-DPS": m, "ΠGDM": m}}
             for t in ("random-pixel inpainting", "Fourier magnitude", "box inpainting")]
    fig = images.operator_class_weights_figure(probs, class_names=CIFAR)
    page_rules(fig)
    for ax in panels(fig):
        labels = ax.get_xticklabels()
        assert all(t.get_rotation() == 0 for t in labels)
        # each label is its class name, or a prefix of it ending in '.'
        for t, name in zip(labels, CIFAR):
            text = t.get_text().strip()
            assert text == name or (text.endswith(".") and name.startswith(text[:-1]))
    plt.close(fig)


@pytest.mark.parametrize("ess", [[24.97, 2.08, 21.84], [3.0, 20.0, 150.0], [1.5, 400.0, 2e5]])
def test_growth_figure_log_axes_have_few_plain_ticks(ess):
    sweep = {"sizes": [1000, 10000, 100000], "ess": ess,
             "methods": {"σ-DPS": {"tv_above_floor": [0.5, 0.6, 0.7], "excluded": [0.2, 0.3, 0.4]}}}
    fig = images.growth_figure(sweep, title="textures, random-pixel inpainting")
    page_rules(fig)
    a, _, c = panels(fig)
    shown = [t.get_text() for t in _labels(c.yaxis)]
    assert 2 <= len(shown) <= 7 and not _labels(c.yaxis, minor=True)
    assert not any("times" in s or "^" in s for s in shown)              # plain numbers, no 2×10⁰
    assert [t.get_text() for t in _labels(a.xaxis)] == ["1,000", "10,000", "100,000"]
    plt.close(fig)


def test_maps_and_tweedie_figures_keep_page_rules():
    maps = {n: {"mean": img(), "std": img()} for n in ("exact posterior", "exact sampler", "σ-DPS", "ΠGDM", "DAPS")}
    fig = images.posterior_maps_figure([{"title": "random-pixel inpainting", "truth": img(), "observed": img(),
                                         "maps": maps}] * 2, title="digits")
    page_rules(fig)
    plt.close(fig)
    times = [1.0, 0.3, 0.1, 0.03, 0.01]
    rows = {"exact sampler": [img() for _ in times], "σ-DPS": [img() for _ in times]}
    titles = ("digits, random-pixel inpainting", "textures, random-pixel inpainting")    # the chapter's
    strips = [{"title": t, "times": times, "rows": rows} for t in titles]
    curves = [{"title": t, "times": times, "blur": {"exact sampler": [0.9, 0.5, 0.3, 0.1, 0.0]}} for t in titles]
    fig = images.tweedie_blur_figure(strips, curves)
    page_rules(fig)
    plt.close(fig)


def test_long_map_labels_are_wrapped_whole_not_shortened():
    truth = np.zeros((8, 8))
    maps = {n: {"mean": truth, "std": truth} for n in ("exact posterior", "exact sampler", "FSR", "σ-DPS", "ΠGDM",
                                                        "TMPD")}
    fig = images.posterior_maps_figure([{"title": "box inpainting", "truth": truth, "observed": truth,
                                         "maps": maps}])
    std_panel = fig.axes[1]
    texts = [t.get_text() for t in std_panel.get_xticklabels()]
    assert [t.replace("\n", " ") for t in texts] == list(maps)            # every label whole
    assert "exact\nposterior" in texts and not any(t.endswith(".") for t in texts)
    assert images._wrap_label("exact posterior", 1000.0) == "exact posterior"
    assert images._wrap_label("automobile", 5.0).endswith(".")
    plt.close(fig)
