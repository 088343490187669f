"""The figures of chapters 1–4 (fsdiag.plots.trajectories), from small synthetic inputs: each returns
a Figure with the expected panels and lines, no wider than 12 in, with no text under 9 pt."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.text import Text  # noqa: E402

import fsdiag.plots  # noqa: E402
from fsdiag.plots import trajectories as tr  # noqa: E402

RNG = np.random.default_rng(0)
TIMES = list(np.geomspace(1.0, 0.01, 6))          # decreasing, as recorded by a sampler
METHODS = ["exact", "fsr", "sigma_dps", "pigdm"]


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def visible_axes(fig, with_colorbar=False):
    return [ax for ax in fig.axes if ax.get_visible() and (with_colorbar or ax.get_label() != "<colorbar>")]


def check_legible(fig):
    """Width <= 12 in, at most three panels per row, every visible text at least 9 pt."""
    assert isinstance(fig, Figure)
    assert fig.get_figwidth() <= 12.0
    fig.canvas.draw()
    small = [(t.get_text(), t.get_fontsize()) for t in fig.findobj(Text)
             if t.get_visible() and t.get_text().strip() and t.get_fontsize() < 9]
    assert not small, small
    axes = visible_axes(fig)
    rows = {}
    for ax in axes:
        y = round(ax.get_position().y0, 3)
        rows[y] = rows.get(y, 0) + 1
    assert max(rows.values()) <= 3, rows


def data_lines(ax):
    # Lines that carry data (not axhline/axvline, whose x data are in axes coordinates [0, 1]).
    return [ln for ln in ax.get_lines() if len(ln.get_xdata()) > 0 and ln.get_transform() == ax.transData]


def test_exports_are_listed_and_reexported():
    for name in tr.__all__:
        assert getattr(fsdiag.plots, name) is getattr(tr, name)


def test_method_colors_fixed_and_distinct():
    a = tr.method_colors(["pigdm", "fsr"])
    b = tr.method_colors(["fsr", "pigdm", "mine"])
    assert a["pigdm"] == b["pigdm"] and a["fsr"] == b["fsr"]
    assert len({tuple(c) for c in b.values()}) == len(b)
    assert "mine" in b


def test_hdr_levels_hold_the_requested_mass():
    z = RNG.random((50, 50))
    levels = tr._hdr_levels(z, masses=(0.9, 0.5))
    assert levels == sorted(levels) and len(levels) == 2
    for lev, mass in zip(levels, (0.9, 0.5)):
        held = z[z >= lev].sum() / z.sum()
        assert held == pytest.approx(mass, abs=0.02)


def test_fsr_weights_figure():
    X, Y = np.meshgrid(np.linspace(-4, 4, 40), np.linspace(-4, 4, 40))
    panels = [{"title": f"problem {k}", "atoms": RNG.normal(size=(200, 2)), "psi": RNG.dirichlet(np.ones(200)),
               "density": (X, Y, np.exp(-(X - k) ** 2 - Y ** 2))} for k in range(3)]
    fig = tr.fsr_weights_figure(panels)
    check_legible(fig)
    axes = visible_axes(fig)
    assert len(axes) == 3 and len(fig.axes) == 4          # three panels and a colour bar
    assert [ax.get_title() for ax in axes] == ["problem 0", "problem 1", "problem 2"]
    for ax in axes:
        assert len(ax.collections) >= 3                     # all atoms, heavy atoms, contours


def test_convergence_figure_lines_per_error():
    sizes = [100, 1000, 10000]
    errors = {"a": {"e1": RNG.random((3, 4)), "e2": RNG.random((3, 4)), "ess": RNG.random((3, 4))},
              "b": {"e1": RNG.random((3, 4))}}
    fits = {"a": {"e1": (-0.5, 0.0), "e2": (-0.4, 0.1)}, "b": {"e1": (-0.6, 0.2)}}
    fig = tr.convergence_figure(sizes, errors, fits, titles={"a": "A", "b": "B"}, labels={"e1": "one", "e2": "two"})
    check_legible(fig)
    axes = visible_axes(fig)
    assert len(axes) == 2
    # per error: dots and fitted line; plus one N^-1/2 reference line
    assert [len(data_lines(ax)) for ax in axes] == [2 * 2 + 1, 2 * 1 + 1]
    assert "slope -0.50" in axes[0].get_legend().get_texts()[0].get_text()


def synthetic_bins(columns, n_bins=20):
    out = {}
    for c in columns:
        m = RNG.random((len(TIMES), n_bins + 2))
        out[c] = m / m.sum(1, keepdims=True)
    return out


@pytest.mark.parametrize("n_columns, rows", [(7, 3), (5, 2), (2, 1)])
def test_density_heatmaps_wrap_into_rows_of_three(n_columns, rows):
    cols = ["true", "fsr_density", "exact", "fsr", "sigma_dps", "zeta_dps", "pigdm"][:n_columns]
    bins = synthetic_bins(cols)
    edges = np.linspace(-4, 4, 21)
    fig = tr.density_heatmaps_figure(bins, TIMES, edges, columns=cols + ["tmpd"], title="a long problem title, "
                                     "never cut: y = -1.8, σ = 0.3")
    check_legible(fig)
    axes = visible_axes(fig)
    assert len(axes) == n_columns                     # "tmpd" has no bins: no panel
    assert len({round(ax.get_position().y0, 3) for ax in axes}) == rows
    assert fig.get_suptitle().endswith("σ = 0.3")
    ax = axes[0]
    lo, hi = ax.get_ylim()
    assert lo < hi and hi > 1.0 and lo < 0.01          # t_min at the bottom, t = 1 at the top
    mesh = ax.collections[0]
    arr = np.asarray(mesh.get_array()).reshape(len(TIMES), 20)
    # rows scaled to their maximum, ascending time: the last row is t = 1 (TIMES[0]).
    assert np.allclose(arr.max(1), 1.0)
    expected = bins[cols[0]][0, 1:-1] / bins[cols[0]][0, 1:-1].max()
    assert np.allclose(arr[-1], expected)


def test_tv_over_time_figure():
    rows = {k: {"title": f"row {k}", "times": TIMES,
                "methods": {m: {"tv": list(RNG.random(len(TIMES)))} for m in METHODS[: 2 + k]},
                "fsr_vs_true": {"tv": list(RNG.random(len(TIMES)))}} for k in range(3)}
    fig = tr.tv_over_time_figure(rows, labels={"sigma_dps": "σ-DPS (custom)"})
    check_legible(fig)
    axes = visible_axes(fig)
    assert len(axes) == 3
    assert [len(data_lines(ax)) for ax in axes] == [3, 4, 5]
    assert "σ-DPS (custom)" not in [t.get_text() for t in axes[0].get_legend().get_texts()]
    assert axes[0].get_xlim()[0] > axes[0].get_xlim()[1]          # t decreases to the right


def test_final_densities_figure():
    bins = synthetic_bins(["true", "fsr_density", "fsr", "sigma_dps", "zeta_dps", "pigdm"])
    edges = np.linspace(-4, 4, 21)
    fig = tr.final_densities_figure(bins, edges, samplers=["fsr", "sigma_dps", "zeta_dps", "pigdm", "tmpd"],
                                    t_min=0.01, title="row")
    check_legible(fig)
    axes = visible_axes(fig)
    assert len(axes) == 4                              # tmpd missing from bins
    for ax in axes:
        assert len(data_lines(ax)) == 2 and len(ax.patches) == 1
    # densities: the filled histogram integrates to the interior mass at t_min
    heights = axes[1].patches[0].get_path().vertices
    assert heights[:, 1].max() == pytest.approx((bins["sigma_dps"][-1, 1:-1] / 0.4).max())


def spread_testbeds(n=2):
    out = {}
    for k in range(n):
        methods = {}
        for m in METHODS:
            sa = None if m == "exact" else {"times": TIMES, "norm_ratio": list(np.r_[RNG.random(5), np.nan]),
                                           "cosine": list(RNG.uniform(-1, 1, 6))}
            methods[m] = {"spread": {"times": TIMES, "var_ratio": list(RNG.uniform(0.5, 2, 6))},
                          "score_agreement": sa}
        out[f"tb{k}"] = {"title": f"testbed {k}", "methods": methods}
    return out


def test_variance_ratio_figure():
    fig = tr.variance_ratio_figure(spread_testbeds(), t_min=0.01)
    check_legible(fig)
    axes = visible_axes(fig)
    assert len(axes) == 2
    assert [len(data_lines(ax)) for ax in axes] == [len(METHODS)] * 2


def test_score_agreement_figure_leaves_out_samplers_without_one():
    fig = tr.score_agreement_figure(spread_testbeds(), t_min=0.01, floor=1e-3)
    check_legible(fig)
    axes = visible_axes(fig)
    assert len(axes) == 4
    assert [len(data_lines(ax)) for ax in axes] == [len(METHODS) - 1] * 4
    assert all(np.nanmin(ln.get_ydata()) >= 1e-3 for ln in data_lines(axes[0]))


def test_early_stopping_figure():
    testbeds = {}
    for k in range(2):
        methods = {}
        for m in METHODS:
            p, w = RNG.random(6), RNG.random(6)
            methods[m] = {"times": TIMES, "particle": list(p), "tweedie": list(w),
                          "summary": {"particle": {"t_best": TIMES[int(p.argmin())], "best": float(p.min())},
                                      "tweedie": {"t_best": TIMES[int(w.argmin())], "best": float(w.min())}}}
        testbeds[f"tb{k}"] = {"title": f"three atoms, y = -1.8, σ = 0.3 (testbed {k})", "methods": methods}
    fig = tr.early_stopping_figure(testbeds, t_min=0.01)
    check_legible(fig)
    axes = visible_axes(fig)
    assert len(axes) == 4
    assert [len(data_lines(ax)) for ax in axes] == [2 * len(METHODS)] * 4     # curve + best-stop dot each
    assert "three atoms, y = -1.8, σ = 0.3 (testbed 0)" in axes[0].get_title()      # whole, never cut


# --------------------------------------------------------------------------------------------
# The chapters that use these figures read as narrative (issues 8 and 10): checked on their source.

CHAPTERS = ["01_finite_sample_lens", "02_headline_heatmaps", "03_posterior_spread", "04_early_stopping"]
NOTEBOOKS = __import__("pathlib").Path(__file__).resolve().parent.parent / "notebooks"


def code_cells(chapter):
    import json
    nb = json.loads((NOTEBOOKS / f"{chapter}.ipynb").read_text())
    for c in nb["cells"]:
        if c["cell_type"] == "code":
            tags = c.get("metadata", {}).get("tags", [])
            yield "".join(c["source"]), tags, any(t == "parameters" or t.startswith(("hide-", "remove-")) for t in tags)


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_shows_at_most_60_lines_of_code_and_plots_out_of_sight(chapter):
    cells = list(code_cells(chapter))
    visible = [src for src, _, hidden in cells if not hidden]
    assert sum(len(src.splitlines()) for src in visible) <= 60
    # the visible cells teach the library; figures and their styling live in fsdiag.plots, in hidden cells
    for src in visible:
        assert "save_figure" not in src and "plt." not in src and "fontsize" not in src, src[:200]
    assert any("fsdiag.sample" in src for src in visible) or chapter == "01_finite_sample_lens"
    assert any("posterior_weights" in src for src in visible)
    # the validation cell follows the parameters cell, collapsed
    assert cells[0][1] == ["parameters"] and cells[1][1] == ["hide-input"] and "book.check_chapter(globals()" in cells[1][0]


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_never_cuts_labels_nor_references_undefined_claims(chapter):
    import json
    import re
    nb = json.loads((NOTEBOOKS / f"{chapter}.ipynb").read_text())
    text = "\n".join("".join(c["source"]) for c in nb["cells"])
    assert not re.search(r"\[:\s*\d+\s*\]", text)                    # e.g. res['title'][:20]
    for n in re.findall(r"claim (\d+)", text):                         # the book's claims are chapters 1-6's titles
        assert 1 <= int(n) <= 6, n
    assert not re.search(r"fontsize=[1-8]\b", text)
