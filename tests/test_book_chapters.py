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


# ---------------------------------------------------------------- chapter 2

from fsdiag.book import chapter_02   # noqa: E402


def test_mixture_bins_put_a_narrow_gaussian_in_its_bin_and_the_tails_outside():
    edges = np.array([-1.0, 0.0, 1.0])
    w = torch.tensor([0.25, 0.75], dtype=torch.float64)
    b = chapter_02.mixture_bins(w, torch.tensor([0.5, 5.0], dtype=torch.float64),
                                torch.tensor([1e-3, 1e-3], dtype=torch.float64), edges)
    assert np.allclose(b, [0.0, 0.0, 0.25, 0.75])
    half = chapter_02.mixture_bins(torch.ones(1), torch.zeros(1), torch.ones(1), edges)
    assert half[1] == pytest.approx(0.3413, abs=1e-4) and half.sum() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="weights"):
        chapter_02.mixture_bins(w, torch.zeros(3), torch.ones(2), edges)


def test_particle_bins_count_tails_and_bins():
    b = chapter_02.particle_bins(np.array([-2.0, -0.5, 0.5, 0.7, 3.0]), np.array([-1.0, 0.0, 1.0]))
    assert np.allclose(b, [0.2, 0.2, 0.4, 0.2])
    with pytest.raises(ValueError, match="x"):
        chapter_02.particle_bins(np.zeros((2, 2)), np.array([0.0, 1.0]))


def test_true_posterior_masses_of_a_symmetric_linear_and_abs_problem():
    import fsdiag
    from fsdiag import testbeds
    gmm = testbeds.GaussianMixture([0.5, 0.5], [[-2.0], [2.0]], [0.09, 0.09])
    edges = np.linspace(-4, 4, 9)
    xq = torch.linspace(-6.0, 6.0, 2001, dtype=torch.float64)[:, None]
    lin = fsdiag.GaussianLikelihood(fsdiag.forward.Identity(), [0.0], 1.0)
    at, above = chapter_02.true_posterior(gmm, lin, edges, xq)
    assert above(0.0) == pytest.approx(0.5) and at(0.99).sum() == pytest.approx(1.0)
    ab = fsdiag.GaussianLikelihood(fsdiag.forward.AbsoluteValue(), [2.0], 0.3)
    at, above = chapter_02.true_posterior(gmm, ab, edges, xq)
    assert above(0.0) == pytest.approx(0.5, abs=1e-6)
    assert np.allclose(at(0.99), at(0.99)[::-1], atol=1e-9)    # symmetric about 0


def _row(bins_exact, bins_fsr, mass_above_split=0.5):
    class Run:
        samples = torch.tensor([[1.0], [-1.0], [2.0], [3.0]])
    ref = np.array([[0.5, 0.5], [0.5, 0.5]])
    return {"key": "r", "title": "row", "y": 1.0, "noise_std": 0.5, "forward": "identity", "split": 0.0, "ess": 3.0,
            "times": np.array([0.5, 0.01]), "mass_above": {"true": 0.7, "fsr_density": 0.6},
            "runs": {"exact": Run(), "fsr": Run()},
            "bins": {"fsr_density": ref, "true": np.array([[0.5, 0.5], [0.6, 0.4]]),
                     "exact": bins_exact, "fsr": bins_fsr}}


def test_row_results_measure_tv_against_the_fsr_and_the_truth():
    row = _row(np.array([[0.5, 0.5], [0.4, 0.6]]), np.array([[0.7, 0.3], [0.5, 0.5]]))
    res = chapter_02.row_results([row], ["fsr", "tmpd"])["r"]
    assert res["not_applicable"] == ["tmpd"]
    assert res["fsr_vs_true"]["tv"] == pytest.approx([0.0, 0.1])
    assert res["methods"]["fsr"]["tv"] == pytest.approx([0.2, 0.0])
    assert res["methods"]["exact"]["tv_true_final"] == pytest.approx(0.2)
    assert res["methods"]["fsr"]["mass_above"] == pytest.approx(0.75) and res["tv_floor_final"] == pytest.approx(0.1)
    text = chapter_02.rows_text({"r": res}, ["fsr", "tmpd"], {"fsr": "FSR", "exact": "exact", "tmpd": "TMPD"})
    assert "| TMPD | n/a | n/a | n/a |" in text and "0.750" in text


def test_headline_metrics_verdict_from_the_rows():
    from fsdiag import testbeds
    row = _row(np.array([[0.5, 0.5], [0.5, 0.5]]), np.array([[0.5, 0.5], [0.5, 0.5]]))
    res = chapter_02.row_results([row], ["fsr"])
    gmm = testbeds.GaussianMixture([0.5, 0.5], [[-2.0], [2.0]], [0.09, 0.09])
    m = chapter_02.headline_metrics({"methods": ["fsr"], "n_atoms": 4, "n_particles": 4, "n_bins": 2}, gmm, res)
    assert m["prior"]["means"] == [-2.0, 2.0]
    ev = {e["label"].split(":")[0]: e["value"] for e in m["verdict"]["evidence"]}
    assert ev["FSR density vs true posterior"] == pytest.approx(0.05)


# ---------------------------------------------------------------- chapters 3 and 4

from fsdiag.book import chapter_03_04 as ch34   # noqa: E402


def test_spread_testbeds_are_three_atoms_and_a_seeded_mixture():
    gmm, tbs = ch34.spread_testbeds(16, 0, "cpu")
    assert list(tbs) == ["three_atoms", "gmm_atoms"]
    assert tbs["three_atoms"]["prior"].atoms[:, 0].tolist() == [-1.8, 0.2, 2.2]
    assert torch.equal(tbs["gmm_atoms"]["prior"].atoms, ch34.spread_testbeds(16, 0, "cpu")[1]["gmm_atoms"]["prior"].atoms)
    assert tbs["gmm_atoms"]["prior"].atoms.shape == (16, 1) and tbs["gmm_atoms"]["title"].startswith("16 GMM")
    with pytest.raises(ValueError, match="n_atoms"):
        ch34.spread_testbeds(0, 0)


def test_extreme_skips_non_finite_values():
    assert ch34.extreme([1, 2, 3], [np.nan, 5.0, 4.0], np.nanargmax) == (5.0, 2.0)
    assert ch34.extreme([1, 2, 3], [np.nan, 5.0, 4.0], np.nanargmin) == (4.0, 3.0)
    assert all(math.isnan(v) for v in ch34.extreme([1], [np.inf], np.nanargmax))
    with pytest.raises(ValueError, match="values"):
        ch34.extreme([1, 2], [1.0], np.nanargmax)


def test_summarise_spread_finds_the_worst_ratio_and_weighting_times():
    spread = {"times": [1.0, 0.5, 0.1], "var_ratio": [1.0, 0.25, 2.0]}
    agreement = {"times": [1.0, 0.1], "norm_ratio": [1.5, 0.5], "cosine": [1.0, 0.9]}
    s = ch34.summarise_spread(spread, agreement)
    assert (s["var_ratio_worst"], s["t_var_ratio_worst"]) == (0.25, 0.5)     # |log 0.25| > |log 2|
    assert s["var_ratio_final"] == 2.0 and s["var_ratio_max"] == 2.0
    assert s["over_weight_times"] == [1.0] and s["under_weight_times"] == [0.1] and s["cosine_min"] == 0.9
    assert "norm_ratio_min" not in ch34.summarise_spread(spread, None)


def _spread_results(ratio):
    r = lambda vr: {"spread": {"times": [1.0, 0.1], "var_ratio": vr},
                    "summary": ch34.summarise_spread({"times": [1.0, 0.1], "var_ratio": vr},
                                                     {"times": [0.1], "norm_ratio": [1.0], "cosine": [1.0]})}
    return {"tb": {"title": "tb", "methods": {"exact": r([1.0, 1.1]), "fsr": r([1.0, 0.9]), "pigdm": r([1.0, ratio])}}}


def test_spread_metrics_factor_and_table():
    res = _spread_results(3.0)
    m = ch34.spread_metrics({"n_particles": 200}, res)
    ev = [e["value"] for e in m["verdict"]["evidence"]]
    assert ev[0] == pytest.approx(3.0) and ev[1] == pytest.approx(1 / 0.9) and m["verdict"]["status"] == "supported"
    html = ch34.spread_table(res, {"pigdm": "ΠGDM"}).to_html()
    assert "ΠGDM" in html and "True" not in html
    assert "too wide by a variance ratio of 3" in ch34.spread_text(res, ["pigdm"], {"pigdm": "ΠGDM"})


def test_summarise_stopping_picks_the_latest_best_stop():
    es = {"times": [1.0, 0.5, 0.1, 0.01], "particle": [2.0, 0.5, 1.0, 1.0], "tweedie": [2.0, 1.0, 0.5, 0.5]}
    s = ch34.summarise_stopping(es)
    assert s["particle"]["t_best"] == 0.5 and s["particle"]["gain"] == 0.5 and s["particle"]["earlier_stop_helps"]
    assert s["tweedie"]["t_best"] == 0.01 and not s["tweedie"]["earlier_stop_helps"]
    assert s["tweedie"]["monotone_fraction"] == 1.0 and s["particle"]["monotone_fraction"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="es"):
        ch34.summarise_stopping({"times": [1.0], "particle": [1.0, 2.0], "tweedie": [1.0]})


def test_stopping_findings_text_and_metrics():
    flat = {"times": [1.0, 0.01], "particle": [1.0, 0.1], "tweedie": [1.0, 0.1]}
    early = {"times": [1.0, 0.5, 0.01], "particle": [1.0, 0.3, 0.6], "tweedie": [1.0, 0.8, 0.9]}
    res = {"tb": {"title": "tb", "posterior_std": 0.3, "methods": {
        n: {"summary": ch34.summarise_stopping(es)} for n, es in
        (("exact", flat), ("fsr", flat), ("pigdm", early))}}}
    ch34.stopping_findings(res, ["fsr", "pigdm"])
    assert res["tb"]["earlier_stop_helps"] == ["pigdm"] and res["tb"]["never_within_twice_fsr"] == ["pigdm"]
    labels = {"exact": "exact sampler", "fsr": "FSR", "pigdm": "ΠGDM"}
    assert "Stopping earlier than $t_{\\min}$ helps ΠGDM." in ch34.stopping_text(res, ["fsr", "pigdm"], labels)
    m = ch34.stopping_metrics({"t_min": 0.01, "n_particles": 8, "n_steps": 4}, res)
    assert m["verdict"]["evidence"][0]["value"] == pytest.approx(0.5) and m["verdict"]["status"] == "supported"
    html = ch34.stopping_table(res, labels).to_html()
    assert "particle W1 at tₘᵢₙ" in html and ">0.3<" in html and "True" not in html   # ΠGDM's best W1


# ---------------------------------------------------------------- chapter 5

from fsdiag.book import chapter_05 as ch05   # noqa: E402


class _Rep:
    def __init__(self, sampler, exact, lower, upper, tv, wrong=0.0):
        self.modes = {"sampler": sampler, "exact": exact, "lower": lower, "upper": upper, "tv": tv}
        self.tv_atoms, self.hallucination = tv, {"prior_mode": wrong}


def test_gmm_problem_draws_the_same_atoms_for_every_noise():
    kw = dict(mode_means=[-2.0, 2.0], mode_std=0.5, n_atoms=50, y=0.5, seed=0, device="cpu")
    gm, prior, lik = ch05.gmm_problem(0.3, 1.0, **kw)
    _, prior2, lik2 = ch05.gmm_problem(0.3, 2.0, **kw)
    assert torch.equal(prior.atoms, prior2.atoms) and gm.weights.tolist() == pytest.approx([0.3, 0.7])
    assert float(lik.noise_std) == 1.0 and float(lik2.noise_std) == 2.0
    with pytest.raises(ValueError, match="weight_1"):
        ch05.gmm_problem(1.0, 1.0, **kw)


def test_main_results_table_and_text():
    reports = {"exact": _Rep([0.6, 0.4], [0.62, 0.38], [0.55, 0.35], [0.65, 0.45], 0.02),
               "fsr": _Rep([0.61, 0.39], [0.62, 0.38], [0.56, 0.34], [0.66, 0.44], 0.01),
               "pigdm": _Rep([0.9, 0.1], [0.62, 0.38], [0.85, 0.05], [0.95, 0.15], 0.28)}
    params = dict(pi_1=0.5, noise_std=1.0, y=0.5, n_particles=100, n_steps=10, other=1)
    main = ch05.main_results(reports, np.array([0.63, 0.37]), params)
    assert main["methods"]["pigdm"]["exact_inside_ci"] is False and main["methods"]["fsr"]["exact_inside_ci"] is True
    assert "other" not in main and main["closed_form"] == [0.63, 0.37]
    names = ch05.method_names(0.3)
    assert "outside the 95% interval of: ΠGDM." in ch05.main_text(main, names, 400)
    html = ch05.main_table(reports, [0.63, 0.37], [-2.0, 2.0], names).to_html()
    assert "mode 2 (μ = 2)" in html and "[0.850, 0.950]" in html and "False" not in html


def test_sweep_rows_frame_summary_and_text():
    mw = lambda m, tv: {"exact": [0.5], "sampler": [m], "lower": [m - 0.05], "upper": [m + 0.05], "tv": tv}
    rows = [ch05.sweep_row(0.5, 1.0, "fsr", mw(0.52, 0.02), [0.5]), ch05.sweep_row(0.5, 1.0, "pigdm", mw(0.8, 0.3), [0.5]),
            ch05.sweep_row(0.2, 1.0, "fsr", mw(0.47, 0.03), [0.2]), ch05.sweep_row(0.2, 1.0, "pigdm", mw(0.6, 0.1), [0.2])]
    sweep = ch05.sweep_frame(rows)
    assert sweep["miss"].tolist() == [False, True, False, True]
    s = ch05.sweep_summary(sweep, ["fsr", "pigdm"])
    assert s["pigdm"]["max_abs_error"] == pytest.approx(0.3) and s["pigdm"]["misses"] == 2 and s["fsr"]["cells"] == 2
    assert s["fsr"]["mean_tv"] == pytest.approx(0.025)
    assert ch05.sweep_text(s, ch05.method_names(0.3)).endswith("The worst is ΠGDM.")
    assert "max TV" in ch05.sweep_table(s, ch05.method_names(0.3)).to_html()
    with pytest.raises(ValueError, match="masses"):
        ch05.sweep_row(0.5, 1.0, "fsr", {"tv": 0.1}, [0.5])
    with pytest.raises(ValueError, match="rows"):
        ch05.sweep_frame([{"mode1": 0.5}])
    main = {"methods": {"fsr": {"mass": [0.51], "tv": 0.01}}, "exact_fsr": [0.5]}
    config = dict(seed=0, n_atoms=4, mode_means=[-2, 2], mode_std=0.5, zeta=0.3, t_min=0.01, n_sweep_particles=400,
                  n_sweep_steps=10, y=0.5)
    m = ch05.mode_metrics(config, main, sweep, s, None, ch05.method_names(0.3), sweep_pi=[0.2, 0.5],
                          sweep_noise=[1.0], n_particles=400)
    assert "y" not in m["config"] and m["verdict"]["status"] == "supported" and len(m["sweep"]["rows"]) == 4
    assert m["verdict"]["evidence"][0]["threshold"] == pytest.approx(2 * 0.025 + 0.03)


def test_digit_problem_results_and_text():
    problem = ch05.digit_problem(6, 3, 0.4, 0, "cpu")
    assert problem["prior"].atoms.shape == (1797 - 6, 64) and int(problem["mask"].sum()) == 24
    assert len(problem["entropies"]) == 6 and problem["entropies"][problem["index"]] == max(problem["entropies"])
    with pytest.raises(ValueError, match="n_observed_rows"):
        ch05.digit_problem(6, 9, 0.4, 0)
    exact = [0.0] * 10
    exact[3], exact[5] = 0.7, 0.3
    reports = {"exact": _Rep(exact, exact, exact, exact, 0.0),
               "pigdm": _Rep([1.0] + [0.0] * 9, exact, [0.9] + [0.0] * 9, [1.0] + [0.01] * 9, 1.0, wrong=1.0)}
    d = ch05.digit_results(problem, reports, {"n_particles": 4, "n_steps": 2, "noise_std": 0.4})
    assert d["methods"]["pigdm"]["misses"] == 3 and d["methods"]["exact"]["misses"] == 0
    assert d["true_class"] == int(problem["classes"][problem["index"]]) and d["n_particles"] == 4
    assert ch05.digit_text(d, {"exact": "exact", "pigdm": "ΠGDM"}).startswith("Exact class weights: class 3: 0.700")

    class Run:
        samples = problem["prior"].atoms[:3]
    rows = ch05.digit_sample_rows(problem, {"exact": Run()}, {"exact": "exact"}, 0.99, n_show=3)
    assert rows[1][2] == [str(int(c)) for c in problem["prior"].labels[:3]]      # an atom's nearest atom is itself
    assert np.isnan(rows[0][1][1]).sum() == 64 - 24


# ---------------------------------------------------------------- chapter 6

from fsdiag.book import chapter_06 as ch06   # noqa: E402


def test_off_support_radius_is_at_least_the_diffusion_width():
    import fsdiag
    b = math.sqrt(1 - fsdiag.VPSchedule().alpha_bar(0.01))
    r2 = ch06.off_support_radius(2, n_steps=2000, t_min=0.01)
    assert r2 >= b * (math.sqrt(2) + 3) - 1e-12
    assert ch06.off_support_radius(2, n_steps=20, t_min=0.01) > r2          # a coarse grid widens it
    assert ch06.off_support_radius(3, n_steps=2000, t_min=0.01) / r2 == pytest.approx((math.sqrt(3) + 3) / (math.sqrt(2) + 3))
    with pytest.raises(ValueError, match="d"):
        ch06.off_support_radius(0, n_steps=10, t_min=0.01)


def test_rates_carry_wilson_intervals():
    class Rep:
        hallucination = {"prior_mode": 0.5, "off_support": 0.0, "likelihood_mode": 0.1}
        modes, wasserstein = {"tv": 0.2}, 0.3
    r = ch06.rates(Rep(), 100)
    assert r["prior_mode_ci"][0] < 0.5 < r["prior_mode_ci"][1] and r["off_support_ci"][0] == 0.0
    assert r["tv_modes"] == 0.2 and r["wasserstein"] == 0.3


def test_ring_prior_and_manifold_problems():
    prior = ch06.ring_prior(4, 2.0, 0.01, 200, 0, "cpu")
    assert prior.atoms.norm(dim=1).mean().item() == pytest.approx(2.0, abs=0.02)
    assert sorted(set(prior.labels.tolist())) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="n_modes"):
        ch06.ring_prior(1, 2.0, 0.1, 10, 0)
    x, lab = ch06.manifold("sphere", 50, torch.Generator().manual_seed(0), 4)
    assert x.norm(dim=1).tolist() == pytest.approx([1.0] * 50) and 0 <= int(lab.min()) and int(lab.max()) <= 3
    with pytest.raises(ValueError, match="name"):
        ch06.manifold("cube", 5, torch.Generator(), 4)
    with pytest.raises(ValueError, match="name"):
        ch06.operator("square", 2, mlp_hidden=4, seed=0)
    prior_m, lik, x_star = ch06.manifold_problem("swiss_roll", "radial", 0.05, n_atoms=30, n_segments=4,
                                                 mlp_hidden=4, seed=0, device="cpu")
    assert prior_m.atoms.shape == (30, 2) and float(lik.y[0]) == pytest.approx(float(x_star.norm()), abs=0.3)
    assert "Swiss roll, polar angle" in ch06.sweep_title("swiss_roll", "polar_angle")


def test_manifold_tables_use_readable_names_and_note_absent_methods():
    rates = {"swiss_roll": {"polar_angle": {"fsr": {"off_support": 0.0, "likelihood_mode": 0.0, "prior_mode": 0.0},
                                            "pigdm": None}}}
    tables, note = ch06.manifold_tables(rates, {"fsr": "FSR", "pigdm": "ΠGDM"})
    html = tables[0][1].to_html()
    assert "Swiss roll" in html and "polar angle" in html and "swiss_roll" not in html and "ΠGDM" not in html
    assert note.startswith("ΠGDM has no column") and tables[0][0] == "**off-support rate**"


def test_hallucination_metrics_and_text():
    import pandas as pd
    ring = pd.DataFrame([{"noise_std": 0.1, "method": m, "prior_mode": p, "prior_mode_ci": [0, 1],
                          "exact_absent_mass": 1e-9} for m, p in (("fsr", 0.0), ("sigma_dps", 0.2))])
    rates = {"torus": {"radial": {"fsr": {"off_support": 0.01}, "sigma_dps": {"off_support": 0.4},
                                  "zeta_dps": {"off_support": 0.1}, "pigdm": None}}}
    noise = pd.DataFrame([{"noise_std": 0.01, "method": m, "off_support": v}
                          for m, v in (("fsr", 0.0), ("sigma_dps", 0.5), ("zeta_dps", 0.3))])
    names = {"fsr": "FSR", "sigma_dps": "σ-DPS", "zeta_dps": "ζ-DPS", "pigdm": "ΠGDM"}
    m = ch06.hallucination_metrics({"n_particles": 10}, {"y": 2.0, "table": ring, "ring_modes": 6, "ring_noise": [0.1]},
                                   {"noise_std": 0.05, "rates": rates},
                                   {"dataset": "torus", "operator": "radial", "table": noise, "noise_sweep": [0.01]},
                                   {k: v for k, v in names.items() if k != "pigdm"})
    assert m["manifold"]["not_applicable"] == ["pigdm"] and m["summary"]["fsr_max_off_support"] == pytest.approx(0.01)
    ev = [e["value"] for e in m["verdict"]["evidence"]]
    assert ev == pytest.approx([0.2, 0.0, 0.5, 0.01]) and m["verdict"]["status"] == "supported"
    text = ch06.hallucination_text(rates, noise, names, manifold_noise=0.05, sweep_dataset="torus",
                                   sweep_operator="radial")
    assert "σ-DPS on torus / radial (norm of x) with **0.400**" in text
    assert "worst method, σ-DPS at σ = 0.1, puts **0.200**" in ch06.ring_text(ring, names)


# ---------------------------------------------------------------- chapter 7 and plots.minimal

from fsdiag.book import chapter_07 as ch07   # noqa: E402
from fsdiag import plots                     # noqa: E402


def test_supported_is_the_smallest_set_carrying_the_level():
    psi = torch.tensor([0.0005, 0.9, 0.0995], dtype=torch.float64)
    assert ch07.supported(psi).tolist() == [False, True, True]
    assert ch07.supported(psi, level=0.5).tolist() == [False, True, False]
    with pytest.raises(ValueError, match="level"):
        ch07.supported(psi, level=0)
    html = ch07.support_table([-1.8, 0.2, 2.2], psi, ch07.supported(psi)).to_html()
    assert "yes" in html and "True" not in html


def _minimal_results():
    res = {}
    for n, un in (("exact", 0.0), ("fsr", 0.001), ("sigma_dps", 0.0), ("zeta_dps", 0.0), ("pigdm", 0.1), ("tmpd", 0.0)):
        res[n] = {"mass": [1 - un, un, 0.0], "lower": [1 - un - 0.01, max(un - 0.01, 0), 0.0],
                  "upper": [1.0, un + 0.01, 0.001], "tv": un, "unsupported_mass": un,
                  "unsupported_lower": max(un - 0.01, 0.0), "unsupported_upper": un + 0.01,
                  "spread": {"times": [1.0, 0.5, 0.2, 0.01], "var_ratio": [1.0, 2.0 if n == "pigdm" else 1.0, 1.0, 1.0]}}
    return res


def test_multimodal_text_atom_table_and_metrics():
    res = _minimal_results()
    for n in res:
        res[n]["var_ratio_range"] = ch07.var_ratio_range(res[n])
    assert res["pigdm"]["var_ratio_range"] == (1.0, 2.0)
    with pytest.raises(ValueError, match="result"):
        ch07.var_ratio_range(res["fsr"], lo=0.6, hi=0.7)
    names, methods = ch07.method_names(0.3), ["fsr", "sigma_dps", "zeta_dps", "pigdm", "tmpd"]
    psi = torch.tensor([1 - 1e-6, 1e-6, 0.0], dtype=torch.float64)
    keep = ch07.supported(psi)
    text = ch07.multimodal_text(res, methods, names, psi, keep, 100)
    assert "**ΠGDM hallucinates prior modes**" in text and "exceeds 1.25 for ΠGDM" in text
    html = ch07.atom_table(res, [-1.8, 0.2, 2.2], psi, names).to_html()
    assert "0.9000 [0.8900, 1.0000]" in html and "1.0000" in html
    control = {n: {"tv": 0.05 if n != "tmpd" else 0.3, "unsupported_mass": 0.0, "std_ratio": 0.5} for n in res}
    assert "TMPD stays off (TV 0.300): it under-disperses" in ch07.control_text(control, res, methods, names)
    params = {"atoms": [-1.8, 0.2, 2.2], "noise_std": 0.3, "y": -1.8, "n_particles": 100}
    m = ch07.minimal_metrics(params, psi, keep, res, control, {"mean": 0.0, "std": 1.0}, -1.8, methods, names)
    assert m["supported_atoms"] == [-1.8] and m["hallucinating_methods"] == ["pigdm"]
    assert m["control"]["close_methods"] == ["fsr", "sigma_dps", "zeta_dps", "pigdm"] and m["control"]["tv_tolerance"] == 0.1
    assert m["verdict"]["status"] == "supported"
    for fig in (plots.atom_mass_figure(res, [-1.8, 0.2, 2.2], psi.numpy(), keep.tolist(), names=names, colors=dict.fromkeys(names, "C0")),
                plots.spread_over_time_figure(res, names=names, colors=dict.fromkeys(names, "C0")),
                plots.multimodal_vs_control_figure(res, {n: {**res[n], "tv": 0.1} for n in res}, names=names)):
        assert len(fig.axes) >= 1
    fig = plots.atom_mass_figure(res, [-1.8, 0.2, 2.2], psi.numpy(), keep.tolist(), names=names,
                                 colors=dict.fromkeys(names, "C0"))
    assert fig.axes[1].get_ylim()[1] == pytest.approx(1.15 * 0.11 + 1e-3)     # zoom on pigdm's upper bound
    with pytest.raises(ValueError, match="results"):
        plots.spread_over_time_figure({"fsr": res["fsr"]}, names=names, colors={})


def test_control_reference_results_and_histograms():
    import fsdiag
    prior = fsdiag.EmpiricalPrior(torch.tensor([[-1.0], [1.0]], dtype=torch.float64), device="cpu")
    psi = torch.tensor([0.5, 0.5], dtype=torch.float64)
    ref = ch07.control_reference(prior, psi, 0.01)
    assert ref["mean"] == pytest.approx(0.0) and ref["std"] == pytest.approx(1.0) and len(ref["edges"]) == 25
    assert ref["exact_hist"].sum() == pytest.approx(1.0) and ref["exact_hist"][0] == pytest.approx(ref["exact_hist"][-1])
    assert ch07.binned(np.array([-10.0, 0.1, 10.0]), np.array([-1.0, 0.0, 1.0])).tolist() == pytest.approx([1 / 3, 2 / 3])

    class Run:
        samples = torch.tensor([[-0.99], [0.99], [-1.0], [1.0]], dtype=torch.float64)
    c = ch07.control_results({"exact": Run()}, prior, torch.tensor([True, True]), ref, 4)["exact"]
    assert c["unsupported_mass"] == 0.0 and c["mean_error"] == pytest.approx(0.0) and c["w1"] < 0.02
    names = {"exact": "exact sampler"}
    assert "W₁" in ch07.control_table({"exact": c}, names).to_html()
    fig = plots.control_histograms_figure({"exact": ch07.binned(Run.samples[:, 0].numpy(), ref["edges"])},
                                          ref["exact_hist"], ref["edges"], {"exact": c["tv"]}, names=names,
                                          colors={"exact": "C0"})
    assert fig.axes[0].get_title() == f"exact sampler: TV {c['tv']:.3f}"
    with pytest.raises(ValueError, match="exact_hist"):
        plots.control_histograms_figure({"exact": [1.0]}, [1.0], [0, 1, 2], {"exact": 0.0}, names=names, colors={})
    fig = plots.final_histograms_figure({"exact": Run.samples[:, 0].numpy()}, [-1.0, 1.0], names=names, colors={"exact": "C0"})
    assert sum(p.get_height() for p in fig.axes[0].patches) == 4


# ---------------------------------------------------------------- chapter 10

from fsdiag.book import chapter_10 as ch10   # noqa: E402


def _exactness_results():
    def run(method, family, n, ev, wall, tv, q95=0.1, excluded=0.0, **kw):
        return {"method": method, "family": family, "label": ch10.LABELS.get(method, method), "n_particles": n,
                "n_steps": 10, "evaluations": ev, "wall_s": wall, "tv_modes": tv, "floor_q95": q95,
                "excluded": excluded, **kw}
    runs = [run("tds", "smc", 64, 640, 2.0, 0.3), run("tds", "smc", 256, 2560, 8.0, 0.05),
            run("sigma_dps", "guidance", 64, 320, 0.5, 0.4, excluded=0.2),
            run("sigma_dps", "guidance", 256, 1280, 1.0, 0.35, excluded=0.3),
            run("daps", "daps", 32, 100, 1.0, 0.5, lr=3e-3), run("daps", "daps", 32, 100, 1.0, 0.8, lr=1e-4)]
    res = {"p": {"title": "problem", "runs": runs, "budget": 2560}}
    res["p"]["summary"] = ch10.summarise(res["p"], smc=["tds"], guidance=["sigma_dps"], particles=[64, 256],
                                         daps_lr=3e-3)
    return res


def test_exactness_summary_cost_and_metrics_keep_wall_time_out_of_the_claim():
    res = _exactness_results()
    s = res["p"]["summary"]
    assert s["best_smc"]["ratio"] == pytest.approx(0.5) and s["best_guidance"]["ratio"] == pytest.approx(3.5)
    assert s["cost"]["tds"] == {"n_particles": 256, "evaluations": 2.0, "wall": 8.0}
    assert (s["daps_paper"], s["daps_best"], s["excluded_guidance"]) == (0.8, 0.5, 0.3)
    assert ch10.cost_ranges(res) == ((2.0, 2.0), (8.0, 8.0))
    params = {"smc": ["tds"], "guidance": ["sigma_dps"], "particles": [64, 256], "n_steps": 10}
    m = ch10.exactness_metrics(params, res)
    assert "2.00–2.00× the denoiser evaluations of σ-DPS" in m["verdict"]["claim"]
    assert "wall" not in m["verdict"]["claim"] and "8.0–8.0× the wall time" in m["timing"]
    assert m["verdict"]["status"] == "supported" and m["counting"].endswith("x k vectors)")
    assert "TDS costs 2.00× the denoiser evaluations" in ch10.summary_text(res, 3e-3)
    html = ch10.runs_table(res).to_html()
    assert "denoiser evaluations" in html and ">2560<" in html


def test_run_and_judge_counts_evaluations():
    import fsdiag
    prior = fsdiag.EmpiricalPrior(torch.tensor([[-1.0], [1.0]], dtype=torch.float64), device="cpu")
    lik = fsdiag.GaussianLikelihood(fsdiag.forward.Identity(), [1.0], 0.3)
    counter = fsdiag.CountingPrior(prior)
    r = ch10.run_and_judge(fsdiag.sample, prior, lik, counter, seed=0, method="sigma_dps", n_particles=8, n_steps=5)
    assert r["evaluations"] > 0 and r["evaluations"] % 8 == 0 and r["n_samples"] == 8
    with pytest.raises(TypeError, match="counter"):
        ch10.run_and_judge(fsdiag.sample, prior, lik, prior, seed=0)
    with pytest.raises(ValueError, match="digits_atoms"):
        ch10.exactness_problems(0, -0.9, -1)


# ---------------------------------------------------------------- chapter 8

from fsdiag.book import chapter_08 as ch08   # noqa: E402


def test_off_support_radius_of_vp_and_ddpm_runs():
    import fsdiag

    class Run:
        def __init__(self, schedule, n_steps):
            self.schedule, self.n_steps = schedule, n_steps
    vp = ch08.off_support_radius(Run(fsdiag.VPSchedule(), 2000), 0.01, 2)
    assert vp == pytest.approx(math.sqrt(1 - fsdiag.VPSchedule().alpha_bar(0.01)) * (math.sqrt(2) + 3), rel=1e-3)
    ddpm = fsdiag.DDPMSchedule()
    grid = ddpm.time_grid(250)
    assert ch08.off_support_radius(Run(ddpm, 250), 0.01, 2) == pytest.approx(
        math.sqrt(1 - ddpm.alpha_bar(float(grid[-2]))) * (math.sqrt(2) + 3))
    with pytest.raises(ValueError, match="dim"):
        ch08.off_support_radius(Run(ddpm, 250), 0.01, 0)


def test_finite_walks_nested_reports():
    assert ch08.finite({"a": [1.0, {"b": 2}], "c": None, "d": "x", "e": True})
    assert not ch08.finite({"a": [1.0, {"b": float("nan")}]})


def test_run_cli_refuses_what_is_not_a_function():
    with pytest.raises(TypeError, match="sampler"):
        ch08.run_cli("dps_ode", problem="gmm2d", n_samples=4, seed=0, max_tv=0.2)


def test_tempered_check_of_identical_runs_is_zero():
    import fsdiag
    prior = fsdiag.EmpiricalPrior(torch.tensor([[-1.0, 0.0], [1.0, 0.0]], dtype=torch.float64), device="cpu")

    class Run:
        samples = torch.tensor([[-1.0, 0.0], [1.0, 0.0], [1.0, 0.1]], dtype=torch.float64)

    class Other:
        samples = torch.tensor([[-1.0, 0.0], [-1.0, 0.0], [1.0, 0.1]], dtype=torch.float64)
    assert ch08.tempered_check(prior, Run(), Run(), 0.01) == {"tv_between": 0.0, "max_abs_sample_difference": 0.0,
                                                              "n_particles": 3}
    c = ch08.tempered_check(prior, Run(), Other(), 0.01)
    assert c["tv_between"] == pytest.approx(1 / 3) and c["max_abs_sample_difference"] == pytest.approx(2.0)


def test_diagnose_metrics_text_and_verdict_from_real_reports():
    import fsdiag
    prior = fsdiag.EmpiricalPrior(torch.tensor([[-1.0], [1.0]], dtype=torch.float64),
                                  labels=torch.tensor([0, 1]), device="cpu")
    lik = fsdiag.GaussianLikelihood(fsdiag.forward.Identity(), [1.0], 0.3)
    reports = {}
    for m in ("fsr", "sigma_dps"):
        run = fsdiag.sample(prior, lik, method=m, n_particles=64, n_steps=20, seed=0, record=4, progress=False)
        reports[m] = fsdiag.diagnose(run, prior, lik, seed=0)
    scores, modes = ch08.report_tables(reports, {"fsr": "FSR", "sigma_dps": "σ-DPS"})
    assert "W₁ Tweedie" in scores.to_html() and "exact" in modes.to_html()

    class Cli:
        returncode = 1
    lens = fsdiag.evaluate(run.samples, prior, lik)          # the last run: σ-DPS
    cli_report = {"passed": False, "report": {"tv_modes": 0.5, "tv_floor_modes": 0.1, "excluded_mass": 0.2}}
    check = {"tv_between": 0.01, "max_abs_sample_difference": 0.0, "n_particles": 64}
    m = ch08.diagnose_metrics({"seed": 0}, reports, worst=1e-12, check=check, closed=[0.1, 0.9],
                              new=["sigma_dps", "sigma_dps"], lens_report=lens, cli=Cli(), cli_report=cli_report,
                              max_tv=0.2, registered={"tempered_dps": True})
    assert m["lens"]["cli"] == {"exit_code": 1, "passed": False, "max_tv": 0.2, "tv_modes": 0.5,
                                "tv_floor_modes": 0.1, "excluded_mass": 0.2}
    assert m["methods"]["fsr"]["finite"] and m["closed_form_modes"] == [0.1, 0.9]
    assert "exits 1 at --max-tv 0.2" in ch08.diagnose_text(m)
    v = ch08.diagnose_verdict(m, n_atoms=2, noise_std=0.3, n_particles=64, n_lens_samples=64)
    assert v["evidence"][0]["holds"] and v["evidence"][1]["threshold"] == pytest.approx(3 / 8)


# ---------------------------------------------------------------- chapter 9 (no deepinv needed) and plots

from fsdiag.book import chapter_09 as ch09   # noqa: E402


class _ModesRep:
    def __init__(self, tv, floor, excluded, off=0.0):
        self.tv_modes, self.tv_floor_modes, self.tv_atoms, self.tv_floor_atoms = tv, floor, tv, floor
        self.excluded_mass, self.hallucination = excluded, {"off_support": off}
        self.modes = {"labels": [0, 1], "sampler": [0.5, 0.5], "lower": [0.4, 0.4], "upper": [0.6, 0.6],
                      "exact": [1.0, 0.0]}


class _WallRun:
    def __init__(self, wall):
        self.wall_s, self.settings = wall, {"eta": 1.0}


def test_judging_results_text_and_verdict():
    reports = {("DPS", "defaults"): _ModesRep(0.9, 0.05, 0.6), ("DPS", "paper"): _ModesRep(0.3, 0.05, 0.1),
               ("ULA", "defaults"): _ModesRep(0.5, 0.05, 0.2, off=0.7), ("ULA", "paper"): _ModesRep(0.2, 0.05, 0.01)}
    runs = {k: _WallRun(w) for k, w in zip(reports, (1.0, 2.0, 0.5, 8.0))}
    res = ch09.sampler_results(reports, runs)
    assert res["ULA"]["paper"]["wall_s"] == 8.0 and res["DPS"]["defaults"]["excluded_mass"] == 0.6
    text = ch09.judging_text(res, 64, 0.4)
    assert "TV 0.20–0.90" in text and "3 of the 4 runs" in text and "by DPS (defaults)" in text
    assert "ULA 0.70 of their samples" in text and "took 0.50 s, the slowest 8.0 s" in text
    v = ch09.judging_verdict(res, {}, settings=["defaults", "paper"], shown_setting="paper", noise_std=0.2,
                             n_samples=64, n_extra_samples=32, samplers=["DPS", "ULA"])
    assert [e["value"] for e in v["evidence"]] == pytest.approx([10.0, 4.0]) and v["status"] == "supported"
    frame = ch09.runs_frame(reports, runs)
    assert frame["time (s)"].tolist() == [1.0, 2.0, 0.5, 8.0]
    fig = plots.tv_excluded_time_figure(frame, colors={"DPS": "C0", "ULA": "C1"})
    ticks = dict(zip(fig.axes[0].get_yticks(), (t.get_text() for t in fig.axes[0].get_yticklabels())))
    assert ticks[0] == "ULA (paper)" and ticks[3] == "DPS (defaults)"      # the first run on top
    with pytest.raises(ValueError, match="table"):
        plots.tv_excluded_time_figure(frame.drop(columns=["floor"]), colors={})


def test_extra_results_problem_summary_and_sample_rows():
    import fsdiag
    prior = fsdiag.EmpiricalPrior(torch.eye(64)[:4], labels=torch.tensor([0, 0, 1, 2]), device="cpu")
    s = ch09.problem_summary(prior, torch.tensor([0.5, 0.5, 0.0, 0.0]), [0.9, 0.1, 0.0])
    assert s["ess"] == pytest.approx(2.0) and s["prior_classes"].tolist() == [0.5, 0.25, 0.25]
    assert s["prior_excluded"] == pytest.approx(0.25)
    assert ch09.problem_text(3, 1, 4, [0.9, 0.1, 0.0], 2.0).endswith("exact class weights 0: 0.900, 1: 0.100; "
                                                                    "posterior ESS over atoms 2.0.")
    extra = {"blur": {"lik": "L", "physics": "P", "runs": {"DPS": (_WallRun(1.0), _ModesRep(0.4, 0.1, 0.2))}}}
    m, rows, lines = ch09.extra_results(extra, ["DPS", "DDRM"], lambda lik: [0.0, 1.0], lambda s, ph: s != "DDRM")
    assert m["blur"]["unsupported"] == ["DDRM"] and rows[0]["TV classes"] == 0.4 and lines == ["blur: exact class weights 1: 1.000."]
    rows = ch09.sample_rows(torch.zeros(64), torch.zeros(8, 8), 3, prior, torch.tensor([0.0, 0.0, 1.0, 0.0]),
                            {"DPS": prior.atoms[[3, 1]]}, n_show=2, seed=0)
    assert rows[1][2] == ["1", "1"] and rows[2][2] == ["2", "0"]
    with pytest.raises(ValueError, match="name"):
        ch09.chapter_settings("nope", "paper", noise_std=0.2, pd_num_steps=10, langevin_max_iter=10)
    with pytest.raises(ValueError, match="kind"):
        ch09.extra_physics(None, "rotation", noise_std=0.2, seed=0, device="cpu")


# ---------------------------------------------------------------- chapter 11

from fsdiag.book import chapter_11 as ch11   # noqa: E402


def _conventions_results():
    conventions = [("ΠGDM", "paper"), ("ΠGDM", "song"), ("DPS", "zeta"), ("DPS", "sigma")]
    mass = {"paper": 0.1, "song": 0.0, "zeta": 0.0, "sigma": 0.0}
    tv = {"paper": 0.2, "song": 0.01, "zeta": 0.3, "sigma": 0.1}
    results = [{"y": y, "family": f, "convention": c, "schedule": s, "n_steps": n, "atom_mass": [0.9, 0.1, 0.0],
                "tv": tv[c], "excluded_mass": mass[c], "excluded_lower": mass[c] / 2, "excluded_upper": mass[c] + 0.01,
                "tv_floor": 0.01}
               for y in (-1.8, -0.9) for f, c in conventions for s in ("VP-SDE Euler–Maruyama", "DDPM ancestral")
               for n in (50, 100)]
    exact = {-1.8: {"posterior": [1.0, 0.0, 0.0], "tv": 0.01, "floor": {"mean": 0.01, "q95": 0.02}},
             -0.9: {"posterior": [0.6, 0.4, 0.0], "tv": 0.01, "floor": {"mean": 0.01, "q95": 0.02}}}
    return conventions, results, exact


def test_findings_say_where_a_failure_depends_on_the_convention():
    conventions, results, exact = _conventions_results()
    f = ch11.findings_of(results, exact, conventions, ["VP-SDE Euler–Maruyama", "DDPM ancestral"], [50, 100],
                         n_steps=100)
    conv = [g for g in f if g["y"] == -1.8 and g["family"] == "ΠGDM" and g["axis"] == "convention"]
    assert len(conv) == 1 and conv[0]["status"] == "depends" and conv[0]["values"] == {"paper": 0.1, "song": 0.0}
    assert {g["kind"] for g in f if g["y"] == -0.9} == {"hallucination", "mode weights"}
    text = ch11.findings_text(f)
    assert text.startswith("**Depend on a convention**: ΠGDM hallucination at y = -1.8 (along the convention)")
    assert "**paper: 10.00%**" in text
    with pytest.raises(ValueError, match="results"):
        ch11.pick(results, conventions, 5.0, "DPS", n_steps=100)
    params = {"observations": [-1.8, -0.9], "n_steps": 100, "noise_std": 0.3, "n_particles": 4096}
    m = ch11.conventions_metrics(params, exact, results, f, conventions, [50, 100])
    assert [e["value"] for e in m["verdict"]["evidence"]] == pytest.approx([0.1, 0.0, 0.1, 0.1, 3.0])
    assert m["verdict"]["status"] == "supported" and m["thresholds"] == {"hallucination": 0.005, "tv_margin": 0.02}


def test_run_row_and_comparison_tables():
    class Rep:
        atom_mass, tv_atoms, excluded_mass, tv_floor_atoms = [0.5, 0.5, 0.0], 0.1, 0.5, 0.01
    row = ch11.run_row(Rep(), y=1.0, family="DPS", convention="c", schedule="s", n_steps=10, n_particles=100)
    assert row["excluded_lower"] < 0.5 < row["excluded_upper"] and row["tv_floor"] == 0.01
    _, results, exact = _conventions_results()
    (head, table), _ = ch11.comparison_tables(results, exact, ["-1.8", "0.2", "2.2"], n_steps=100, n_particles=100)
    assert head.startswith("**y = -1.8**: exact posterior -1.8: 100.00%")
    assert "90.00% [" in table.to_html()


# ---------------------------------------------------------------- chapter 12

from fsdiag.book import chapter_12 as ch12   # noqa: E402


def _whose_results():
    rec = lambda tv, floor=0.05, ex=0.0: {"tv_modes": tv, "floor": floor, "excluded_mass": ex, "mass": [], "exact": []}
    return {"gmm2d": {"fsr": {"exact denoiser": rec(0.04)},
                      "pigdm": {"exact denoiser": rec(0.6, ex=0.3), "network": rec(0.5, ex=0.2)},
                      "sigma_dps": {"exact denoiser": rec(0.06), "network": rec(0.3)}}}


def test_share_rows_summary_findings_and_metrics():
    r = ch12.share_row(_whose_results()["gmm2d"]["pigdm"])
    assert r["share"] == pytest.approx(1.2) and r["share_above_floor"] == pytest.approx(0.55 / 0.45)
    low = ch12.share_row({"exact denoiser": {"tv_modes": 0.05, "excluded_mass": 0}, "network": {"tv_modes": 0.08,
                                                                                                "floor": 0.05,
                                                                                                "excluded_mass": 0}})
    assert low["share_above_floor"] is None
    with pytest.raises(ValueError, match="r"):
        ch12.share_row({"network": {}})
    prior_reports = {"gmm2d": {"network": {"tv_modes": 0.04, "tv_floor_modes": 0.02, "relative_distance": 0.8,
                                           "modes": [1]},
                               "exact denoiser": {"tv_modes": 0.02, "tv_floor_modes": 0.02, "relative_distance": 0.0},
                               "samples": {}}}
    s = ch12.share_summary(_whose_results(), prior_reports, {"gmm2d": "2-D mixture"})
    ch12.add_findings(s)
    assert s["gmm2d"]["network_adds"] == ["sigma_dps"] and s["gmm2d"]["errors_cancel"] == ["pigdm"]
    assert s["gmm2d"]["median_share"] == pytest.approx((1.2 + 0.2) / 2)
    names = ch12.method_names(0.3)
    text = ch12.whose_text(s, prior_reports, names)
    assert "ΠGDM: 0.600 with the exact denoiser, 0.500 with the network" in text and "partly cancel" in text
    assert "TV, network" in ch12.share_table(s, names).to_html()

    class Net:
        trained, seconds, key, losses = True, 1.5, "abc", [0.3, 0.2]
    params = {"n_particles": 8, "n_digit_particles": 4, "mlp_steps": 10, "conv_steps": 5}
    m = ch12.whose_metrics(params, {"gmm2d": Net()}, prior_reports, s, _whose_results(), names)
    assert m["training"]["gmm2d"] == {"trained": True, "seconds": 1.5, "key": "abc", "final_loss": 0.2}
    assert "modes" not in m["prior"]["gmm2d"]["network"] and "samples" not in m["prior"]["gmm2d"]
    ev = [e["value"] for e in m["verdict"]["evidence"]]
    assert ev == pytest.approx([0.04, 1.2, 0.2]) and m["verdict"]["status"] == "supported"


def test_network_settings_lines_and_record():
    s = ch12.network_settings(mlp=(128, 3, 2000), conv=(16, 2, 1200))
    assert s["gmm2d"] == {"arch": "mlp", "width": 128, "depth": 3, "steps": 2000}
    assert s["digits_inpainting"]["image_shape"] == (1, 8, 8) and s["digits_inpainting"]["width"] == 16
    with pytest.raises(ValueError, match="mlp"):
        ch12.network_settings(mlp=(1, 2), conv=(1, 2, 3))

    class Tr:
        trained, seconds, losses = False, 0.0, []

        class path:
            name = "w.pt"
    assert ch12.training_line("gmm2d", Tr()) == "gmm2d: loaded (w.pt), final loss nan"
    lines = ch12.prior_lines("gmm2d", {"network": {"tv_modes": 0.1, "tv_floor_modes": 0.05, "relative_distance": 0.5},
                                       "samples": {}})
    assert lines.count("\n") == 0 and "TV over modes to the prior 0.100 (floor 0.050)" in lines

    class Rep:
        tv_modes, tv_floor_modes, excluded_mass, modes = 0.2, 0.1, 0.05, {"sampler": [1.0], "exact": [0.9]}
    assert ch12.run_record(Rep()) == {"tv_modes": 0.2, "floor": 0.1, "excluded_mass": 0.05, "mass": [1.0],
                                      "exact": [0.9]}


# ---------------------------------------------------------------- chapter 13

from fsdiag.book import chapter_13 as ch13   # noqa: E402


def _imaging_results():
    def m(tv, q95, excluded, std_ratio, blur=(0.5, 0.1)):
        return {"tv_modes": tv, "floor_q95": q95, "excluded_mass": excluded, "std_ratio": std_ratio,
                "mean_rmse": 0.1, "times": [0.3, 0.01], "blur": list(blur), "tweedie_strip": [[0.0]],
                "classes": [1.0, 0.0], "lower": [0.9, 0.0], "upper": [1.0, 0.1]}
    res = {("digits", "inpainting"): {"truth": [[0.0]], "observed": [[0.0]], "exact_classes": [1.0, 0.0],
                                      "maps": {"exact posterior": {}},
                                      "methods": {"exact sampler": m(0.05, 0.06, 0.0, 1.0),
                                                  "FSR": m(0.07, 0.06, 0.0, 1.0),
                                                  "ΠGDM": m(0.6, 0.06, 0.4, 2.0)}}}
    return res


def test_imaging_summary_text_and_metrics():
    res = _imaging_results()
    sweep_m = {"sizes": [10, 100], "ess": [2.0, 3.0], "wall_s": [1.0, 2.0],
               "methods": {"ΠGDM": {"tv_above_floor": [0.3, 0.4]}, "exact sampler": {"tv_above_floor": [0.0, 0.0]}}}
    s = ch13.imaging_summary(res, ["digits"], sweep_m)
    assert s["exact_gap"] == pytest.approx(-0.01) and s["fsr_gap"] == pytest.approx(0.01)
    assert s["max_excluded"] == 0.4 and s["max_excluded_where"] == ["ΠGDM", "digits", "inpainting"]
    assert s["worst_tv_above_floor"] == {"digits": pytest.approx(0.54)}
    assert s["blur_gain"] == {"digits, random-pixel inpainting": pytest.approx(0.4)}
    assert s["sweep_last_tv_above_floor"] == {"ΠGDM": 0.4} and s["std_ratio"]["ΠGDM"] == 2.0
    text = ch13.imaging_text(s, 1, 60, {"inpainting": [], "fourier_magnitude": ["pigdm"]}, sweep_m)
    assert "(ΠGDM, digits, random-pixel inpainting)" in text and "ΠGDM on Fourier magnitude" in text
    assert "N = 10, 100" in text and "the sweep took 3 s" in text
    params = {"patch_size": 8, "operators": ["inpainting"], "noise_std": 0.1, "n_particles": 4, "n_steps": 60,
              "n_patches": 10, "sweep_sizes": [10, 100]}
    m = ch13.imaging_metrics(params, res, s, sweep_m, class_names={"digits": ["0", "1"]},
                             coverage={10: {"positions": 5, "sources": ["x"]}}, skipped={}, n_digit_atoms=100)
    assert "maps" not in m["problems"]["digits/inpainting"] and m["texture_coverage"] == {"10": {"positions": 5}}
    assert [e["value"] for e in m["verdict"]["evidence"]] == pytest.approx([-0.01, 0.4, 0.54, 0.4, 0.4])
    assert m["verdict"]["status"] == "supported"
    strips, curves = ch13.tweedie_panels(res, ["digits"], "inpainting")
    assert strips[0]["times"] == [0.3, 0.01] and curves[0]["blur"]["ΠGDM"] == [0.5, 0.1]
    assert ch13.map_problems(res, "digits", ["inpainting"])[0]["title"] == "random-pixel inpainting"
    assert ch13.class_problems(res, "digits", ["inpainting"])[0]["exact"] == [1.0, 0.0]
    (key, table), = ch13.class_tables(res, ["digits"])
    assert key == "digits" and "ruled-out mass" in table.to_html()


def test_sweep_bookkeeping_and_runnable():
    import fsdiag

    class Rep:
        def __init__(self, tv):
            self.tv_modes, self.floor, self.excluded_mass = tv, {"modes": {"q95": 0.1}}, 0.2
    sweep = {"sizes": [], "ess": [], "wall_s": [], "methods": {"σ-DPS": [Rep(0.5)]}}
    line = ch13.add_sweep_size(sweep, 100, 2.0, torch.tensor([0.5, 0.5]))
    assert line == "N = 100: exact ESS 2.0, 2 s; σ-DPS TV 0.50" and sweep["ess"] == [2.0]
    with pytest.raises(ValueError, match="sweep"):
        ch13.add_sweep_size(sweep, 1000, 2.0, torch.tensor([1.0]))
    sm = ch13.sweep_metrics(sweep, "box_inpainting")
    assert sm["methods"]["σ-DPS"]["tv_above_floor"] == [pytest.approx(0.4)] and sm["operator"] == "box_inpainting"
    assert "σ-DPS TV" in ch13.sweep_table(sm).to_html()
    assert ch13.runnable("pigdm", fsdiag.forward.Identity()) and not ch13.runnable("pigdm", fsdiag.forward.Radial())
    with pytest.raises(ValueError, match="method"):
        ch13.runnable("nope", fsdiag.forward.Identity())
    text = ch13.coverage_text({10: {"positions": 5000, "repeat_fraction": 0.1, "neighbours": 2.0}}, 10, 5)
    assert text.startswith("The texture pool has 5,000 window positions (5 images).") and "near-copies" in text


def test_judged_rows_carry_the_row_the_sizes_and_the_judgement():
    import fsdiag
    prior = fsdiag.EmpiricalPrior(torch.tensor([[-1.0], [1.0]], dtype=torch.float64), device="cpu")
    lik = fsdiag.GaussianLikelihood(fsdiag.forward.Identity(), [1.0], 0.3)
    counter = fsdiag.CountingPrior(prior)
    r = ch10.judged(fsdiag.sample, prior, lik, counter, {"method": "sigma_dps", "family": "guidance", "lr": 0.1},
                    seed=0, n_particles=8, n_steps=5, method="sigma_dps")
    assert (r["label"], r["family"], r["n_particles"], r["n_steps"], r["lr"]) == ("σ-DPS", "guidance", 8, 5, 0.1)
    assert r["evaluations"] > 0 and 0 <= r["tv_modes"] <= 1
    with pytest.raises(ValueError, match="row"):
        ch10.judged(fsdiag.sample, prior, lik, counter, {"family": "x"}, seed=0, n_particles=8, n_steps=5)


def test_first_atoms_nest_and_problem_line():
    class Held:
        atoms = torch.arange(12, dtype=torch.float64).reshape(6, 2)
        labels = torch.tensor([0, 1, 0, 1, 2, 2])
    p3 = ch13.first_atoms(Held(), 3, "cpu")
    assert p3.atoms.tolist() == [[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]] and p3.labels.tolist() == [0, 1, 0]
    assert ch13.first_atoms(Held(), 7, "cpu").n_atoms == 6       # larger than the pool: all of it, as sliced
    with pytest.raises(ValueError, match="n"):
        ch13.first_atoms(Held(), 0)

    class Rep:
        tv_modes = 0.256
    assert ch13.problem_line("digits", "box_inpainting", {"ΠGDM": Rep()}) == "digits, box inpainting: ΠGDM TV 0.26"
