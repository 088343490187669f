"""Chapter 1 (claim 1): the FSR converges to the true posterior at the Monte Carlo rate N^-1/2,
for linear and nonlinear forward models."""

import pytest

from conftest import assert_rejected, check_page_outputs, check_verdict, run_notebook

NB = "01_finite_sample_lens.ipynb"
TINY = dict(n_atoms_max=5000, n_sizes=5, n_seeds=8, n_grid=100, n_bins=10)
ERRORS = {"gaussian_linear": ["mean_error", "cov_error"], "gmm_linear": ["mode_tv", "mean_error"],
          "nonlinear": ["mean_error", "hist_tv"]}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    path = tmp_path_factory.mktemp("nb01")
    return path, run_notebook(NB, path, seed=0, **TINY)


@pytest.fixture(scope="module")
def metrics(run):
    return run[1]


@pytest.mark.notebooks
def test_fitted_slopes_are_near_minus_one_half(metrics):
    assert len(metrics["slopes"]) == 6
    for problem, names in ERRORS.items():
        for name in names:
            slope = metrics[problem][name]["slope"]
            assert slope == metrics["slopes"][f"{problem}/{name}"]
            assert -0.8 < slope < -0.25, (problem, name, slope)


@pytest.mark.notebooks
def test_errors_shrink_from_smallest_to_largest_n(metrics):
    assert metrics["n_atoms"][0] == 100 and metrics["n_atoms"][-1] == 5000
    for problem, names in ERRORS.items():
        for name in names:
            mean = metrics[problem][name]["mean"]
            assert len(mean) == len(metrics["n_atoms"])
            # 50x more atoms: sqrt(50) ~ 7x smaller error expected; require at least 3x.
            assert mean[-1] < mean[0] / 3, (problem, name, mean)


@pytest.mark.notebooks
def test_effective_sample_size_grows_linearly(metrics):
    for problem in ERRORS:
        assert 0.85 < metrics["ess_slopes"][problem] < 1.15
        ess = metrics[problem]["ess"]
        assert 1 <= ess[0] < ess[-1] <= metrics["n_atoms"][-1]


@pytest.mark.notebooks
def test_references_are_right(metrics):
    ex = metrics["exact"]
    assert sum(ex["gmm_weights"]) == pytest.approx(1.0)
    # Gaussian posterior under y = x1 + x2 / 2 + noise: a symmetric positive-definite covariance.
    c = ex["gaussian_cov"]
    assert c[0][1] == pytest.approx(c[1][0]) and c[0][0] > 0 and c[0][0] * c[1][1] > c[0][1] ** 2
    # The grid reference is far more accurate than the FSR error at the largest N.
    assert metrics["grid_error"] < 0.1 * metrics["nonlinear"]["mean_error"]["mean"][-1]




@pytest.mark.notebooks
def test_verdict_is_supported_with_thresholds_around_minus_one_half(metrics):
    v = metrics["verdict"]
    check_verdict(v)
    assert v["status"] == "supported"
    slopes = metrics["slopes"].values()
    values = [r["value"] for r in v["evidence"]]
    assert values[:2] == [pytest.approx(max(slopes)), pytest.approx(min(slopes))]
    assert values[2] == pytest.approx(min(metrics["ess_slopes"].values()))


@pytest.mark.notebooks
def test_page_shows_rounded_numbers_and_figures_of_legible_width(run):
    path, _ = run
    check_page_outputs(path, NB, ['convergence', 'problems'])


@pytest.mark.notebooks
@pytest.mark.parametrize("bad, name, error", [
    (dict(n_atoms_max=50), "n_atoms_max", "ValueError"),
    (dict(nonlinear="polar"), "nonlinear", "ValueError"),
    (dict(n_sizse=5), "n_sizse", "ValueError"),
    (dict(n_sizes=2.5), "n_sizes", "TypeError"),
])
def test_bad_or_unknown_parameter_fails_in_the_validation_cell(tmp_path, bad, name, error):
    assert_rejected(NB, tmp_path, {**TINY, **bad}, name, error)
