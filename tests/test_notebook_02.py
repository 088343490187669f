"""Chapter 2 (headline figure): (t, x_t) posterior densities. The FSR matches the true posterior
and its sampler sits at the Monte Carlo floor; the approximations do not."""
import math

import pytest

from conftest import assert_rejected, check_page_outputs, check_verdict, run_notebook

NB = "02_headline_heatmaps.ipynb"
TINY = dict(n_atoms=64, n_particles=512, n_steps=100, n_record=15, n_bins=40, n_quad=800,
            y_linear=[1.0], noise_linear=[0.5])
APPROX = ["sigma_dps", "zeta_dps", "pigdm", "tmpd"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    path = tmp_path_factory.mktemp("nb02")
    return path, run_notebook(NB, path, seed=0, **TINY)


@pytest.fixture(scope="module")
def metrics(run):
    return run[1]


@pytest.mark.notebooks
def test_rows_and_not_applicable_panels(metrics):
    rows = metrics["rows"]
    assert set(rows) == {"linear_1", "abs"}
    assert rows["linear_1"]["not_applicable"] == []
    assert rows["abs"]["not_applicable"] == ["pigdm", "tmpd"]
    assert set(rows["abs"]["methods"]) == {"exact", "fsr", "sigma_dps", "zeta_dps"}
    for row in rows.values():
        assert len(row["times"]) >= 10 and row["times"][0] == pytest.approx(1.0)


@pytest.mark.notebooks
def test_fsr_column_agrees_with_the_exact_posterior(metrics):
    for key, row in metrics["rows"].items():
        # The FSR density (64 atoms) is close to the true posterior on average over t.
        assert row["fsr_vs_true"]["tv_mean"] < 0.15, key
        # The FSR sampler's histograms sit near the Monte Carlo floor of exact draws (512 particles, 40 bins).
        fsr, floor = row["methods"]["fsr"], row["methods"]["exact"]
        assert fsr["tv_mean"] < 1.3 * floor["tv_mean"] + 0.02, key
        assert fsr["tv_final"] < floor["tv_final"] + 0.06, key
        # Its mass per posterior mode matches the exact one within binomial error.
        p = row["exact_mass_above"]["fsr_density"]
        assert abs(fsr["mass_above"] - p) < 3 * math.sqrt(p * (1 - p) / 512) + 0.02, key


@pytest.mark.notebooks
def test_approximations_are_clearly_farther_than_fsr(metrics):
    for key, row in metrics["rows"].items():
        ms = row["methods"]
        worst = max(ms[m]["tv_mean"] for m in APPROX if m in ms)
        assert worst > 2 * ms["fsr"]["tv_mean"], key
        assert worst > ms["exact"]["tv_mean"] + 0.1, key
    # On the nonlinear row the DPS variants lose the mode at +y almost entirely.
    abs_row = metrics["rows"]["abs"]
    assert abs_row["exact_mass_above"]["true"] > 0.3
    assert min(abs_row["methods"][m]["mass_above"] for m in ("sigma_dps", "zeta_dps")) < 0.1




@pytest.mark.notebooks
def test_verdict_is_supported(metrics):
    v = metrics["verdict"]
    check_verdict(v)
    assert v["status"] == "supported"
    values = [r["value"] for r in v["evidence"]]
    rows = metrics["rows"].values()
    assert values[0] == pytest.approx(max(r["fsr_vs_true"]["tv_mean"] for r in rows))
    ratios = [r["methods"]["fsr"]["tv_mean"] / r["methods"]["exact"]["tv_mean"] for r in rows]
    assert values[1] == pytest.approx(max(ratios))


@pytest.mark.notebooks
def test_page_shows_rounded_numbers_and_figures_of_legible_width(run):
    path, _ = run
    check_page_outputs(path, NB, ['final_densities_abs', 'final_densities_linear_1', 'headline_heatmaps_abs',
                                      'headline_heatmaps_linear_1', 'tv_over_time'])


@pytest.mark.notebooks
@pytest.mark.parametrize("bad, name, error", [
    (dict(noise_linear=[-1.0]), "noise_linear", "ValueError"),
    (dict(methods=["fsr", "bogus"]), "methods", "ValueError"),
    (dict(n_particle=10), "n_particle", "ValueError"),
    (dict(x_lim="4"), "x_lim", "TypeError"),
])
def test_bad_or_unknown_parameter_fails_in_the_validation_cell(tmp_path, bad, name, error):
    assert_rejected(NB, tmp_path, {**TINY, **bad}, name, error)
