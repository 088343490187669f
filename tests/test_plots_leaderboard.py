"""The leaderboard's figures, on a hand-made ranking: what each draws, and bad arguments named."""
import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from fsdiag.plots.leaderboard import budget_figure, leaderboard_map, pareto_figure, pareto_front  # noqa: E402


def entry(name, ratio, wall, status="done"):
    return {"sampler": name, "status": status, "ratio": (ratio, ratio * 0.8, ratio * 1.2), "wall_s": wall}


RANKING = {"three_atoms": {50: [entry("exact", 1.0, 0.1), entry("sigma_dps", 8.0, 0.05), entry("tmpd", 0, 0, "n/a")],
                           250: [entry("exact", 1.1, 0.4), entry("sigma_dps", 4.0, 0.2), entry("tmpd", 2.0, 3.0)]},
           "gmm2d": {50: [entry("exact", 0.9, 0.2), entry("sigma_dps", 3.0, 0.1), entry("tmpd", 1.5, 1.0)],
                     250: [entry("exact", 1.0, 0.8), entry("sigma_dps", 2.0, 0.4), entry("tmpd", 1.2, 4.0)]}}


def test_pareto_front_keeps_only_points_no_other_beats_on_both():
    pts = [(1.0, 5.0), (2.0, 6.0), (3.0, 2.0), (0.5, 9.0), (4.0, 2.0), (5.0, 1.0)]
    assert pareto_front(pts) == [(0.5, 9.0), (1.0, 5.0), (3.0, 2.0), (5.0, 1.0)]


def test_budget_figure_draws_one_line_per_judged_sampler_and_problem():
    fig = budget_figure(RANKING)
    axes = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in axes] == ["three atoms", "gmm2d"]
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["exact", "sigma_dps", "tmpd"]   # every sampler once
    lines = {ln.get_label() for ln in axes[0].lines if not ln.get_label().startswith("_")}
    assert {"exact", "sigma_dps", "tmpd"} <= lines | {c.get_label() for c in axes[0].containers}
    tmpd = next(c for c in axes[0].containers if c.get_label() == "tmpd")
    assert len(tmpd.lines[0].get_xdata()) == 1                 # n/a at 50: only its 250 point


def test_leaderboard_map_writes_each_ratio_and_leaves_na_blank():
    fig = leaderboard_map(RANKING, budget=50)
    texts = sorted(t.get_text() for t in fig.axes[0].texts)
    assert texts == sorted(["1.0", "8.0", "0.9", "3.0", "1.5"])          # 5 judged cells, tmpd's n/a blank
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels[0] == "exact"                                            # sorted: closest to exact first
    with pytest.raises(ValueError, match="budget"):
        leaderboard_map(RANKING, budget=99)


def test_pareto_figure_and_bad_rankings():
    fig = pareto_figure(RANKING, problems=["gmm2d"])
    ax = fig.axes[0]
    assert sum(len(c.get_offsets()) for c in ax.collections) == 6
    with pytest.raises(ValueError, match="problems"):
        pareto_figure(RANKING, problems=["digits"])
    with pytest.raises(ValueError, match="ranking"):
        budget_figure({})
    assert np.isfinite(ax.get_xlim()).all()
