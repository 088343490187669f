"""The chapters' bookkeeping moved out of the notebooks (fsdiag.book.chapter_NN and book.show /
book.run_params): each function on small inputs whose answer is known."""
import math

import numpy as np
import pytest
import torch

from fsdiag import book
from fsdiag.book import chapter_01


# ---------------------------------------------------------------- pages: run_params, show

def test_run_params_reads_the_spec_from_the_namespace():
    ns = dict(seed=3, n_atoms=10, n_particles=5, n_steps=7, t_min=0.01, n_record=4, zeta=0.3, methods=("fsr",),
              n_threads=2, device="cpu", out_dir=None, overwrite=False)
    got = book.run_params(ns, "04_early_stopping", extra_key=1.5)
    assert got == dict(seed=3, n_atoms=10, n_particles=5, n_steps=7, t_min=0.01, n_record=4, zeta=0.3,
                       methods=["fsr"], extra_key=1.5)
    assert book.run_params(ns, "04_early_stopping", drop=())["n_threads"] == 2
    with pytest.raises(ValueError, match="namespace"):
        book.run_params({"seed": 0}, "04_early_stopping")
    with pytest.raises(TypeError, match="namespace"):
        book.run_params([1], "04_early_stopping")


def test_show_takes_text_only():
    book.show("*fine*")                  # outside a notebook: nothing shown, no error
    with pytest.raises(TypeError, match="text"):
        book.show(3)


# ---------------------------------------------------------------- chapter 1

def test_cell_edges_fall_midway_between_grid_points():
    e = chapter_01.cell_edges(-1.0, 1.0, 5, 2)          # grid -1, -0.5, 0, 0.5, 1 (h = 0.5)
    assert np.allclose(e, [-1.25, -0.25, 1.25])          # round(2.5) = 2 → -1.25 + 0.5·2
    with pytest.raises(ValueError, match="n_grid"):
        chapter_01.cell_edges(-1.0, 1.0, 1, 2)
    with pytest.raises(ValueError, match="hi"):
        chapter_01.cell_edges(1.0, -1.0, 5, 2)


def test_cell_masses_normalises_and_clips_into_border_cells():
    edges = np.array([-1.0, 0.0, 1.0])
    pts = torch.tensor([[-0.5, -0.5], [0.5, 0.5], [5.0, 5.0]])
    m = chapter_01.cell_masses(pts, torch.tensor([1.0, 1.0, 2.0]), edges, -1.0, 1.0)
    assert np.allclose(m, [0.25, 0.0, 0.0, 0.75])
    with pytest.raises(ValueError, match="points"):
        chapter_01.cell_masses(torch.zeros(3), torch.ones(3), edges, -1.0, 1.0)


def test_fit_slope_recovers_a_power_law():
    sizes = [10, 100, 1000]
    values = np.array([[3.0 * n ** -0.5] * 2 for n in sizes])
    slope, intercept = chapter_01.fit_slope(sizes, values)
    assert slope == pytest.approx(-0.5) and intercept == pytest.approx(math.log(3.0))
    with pytest.raises(ValueError, match="values"):
        chapter_01.fit_slope(sizes, values[:2])


def test_fsr_errors_of_the_gaussian_problem_are_mean_and_covariance_errors():
    class Prior:
        atoms = torch.tensor([[0.0, 0.0], [2.0, 0.0]], dtype=torch.float64)
    psi = torch.tensor([0.5, 0.5], dtype=torch.float64)
    ref = {"mean_gauss": torch.tensor([1.0, 1.0], dtype=torch.float64),
           "cov_gauss": torch.zeros(2, 2, dtype=torch.float64)}
    e = chapter_01.fsr_errors("gaussian_linear", Prior(), psi, ref)
    assert e["mean_error"] == pytest.approx(1.0) and e["cov_error"] == pytest.approx(1.0)   # cov [[1,0],[0,0]]
    with pytest.raises(ValueError, match="problem"):
        chapter_01.fsr_errors("other", Prior(), psi, ref)


def test_lens_metrics_record_slopes_shrink_and_verdict():
    sizes = [10, 1000]
    errors, fits = {}, {}
    for p, ms in chapter_01.ERROR_NAMES.items():
        errors[p] = {m: np.array([[1.0, 1.0], [0.1, 0.1]]) for m in ms}
        errors[p]["ess"] = np.array([[5.0, 5.0], [500.0, 500.0]])
        fits[p] = {m: chapter_01.fit_slope(sizes, errors[p][m]) for m in ms}
    ess = {p: chapter_01.fit_slope(sizes, errors[p]["ess"])[0] for p in errors}
    t = torch.zeros(2, dtype=torch.float64)
    ref = {"grid_error": 1e-4, "mean_gauss": t, "cov_gauss": t, "weights_mix": t, "mean_mix": t, "mean_nl": t}
    m = chapter_01.lens_metrics({"nonlinear": "radial", "n_seeds": 2}, sizes, errors, fits, ess, ref)
    assert m["slopes"]["gmm_linear/mode_tv"] == pytest.approx(-0.5)
    assert m["shrink_factor"]["nonlinear/hist_tv"] == pytest.approx(10.0)
    assert m["gaussian_linear"]["ess"] == [5.0, 500.0] and m["verdict"]["status"] == "supported"
    assert "slope" in chapter_01.rates_text(sizes, 2, errors, fits, ess, 1e-4, "radial")
