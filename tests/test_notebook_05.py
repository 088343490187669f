"""Chapter 5 (claim 4): the FSR sampler gets the relative weights of posterior modes right, within
Monte Carlo error; the likelihood approximations do not."""
import math

import pytest

from conftest import assert_rejected, check_verdict, run_notebook
from fsdiag.diagnostics import wilson_interval

NB = "05_mode_reweighting.ipynb"
TINY = dict(n_atoms=200, n_particles=512, n_steps=100, n_record=4, sweep_pi=[0.2, 0.8], sweep_noise=[1.0],
            n_sweep_particles=400, n_sweep_steps=100, run_digits=False)
APPROX = ["sigma_dps", "zeta_dps", "pigdm", "tmpd"]


def widened(mass, n, z=3.0, slack=0.02):
    # A Wilson interval at ~3 sigma, plus a little room for the Euler-Maruyama discretisation error.
    lo, hi = wilson_interval(round(mass * n), n, z)
    return float(lo) - slack, float(hi) + slack


@pytest.fixture(scope="module")
def metrics(tmp_path_factory):
    return run_notebook(NB, tmp_path_factory.mktemp("nb05"), seed=0, **TINY)


@pytest.mark.notebooks
def test_exact_fsr_weights_are_close_to_the_closed_form(metrics):
    main = metrics["main"]
    assert sum(main["exact_fsr"]) == pytest.approx(1.0)
    # The FSR's own error (self-normalised importance sampling over N atoms) is O(1 / sqrt(N)).
    tol = 3 / math.sqrt(TINY["n_atoms"])
    assert abs(main["exact_fsr"][0] - main["closed_form"][0]) < tol
    for row in metrics["sweep"]["rows"]:
        assert abs(row["exact_mode1"] - row["closed_mode1"]) < tol


@pytest.mark.notebooks
def test_fsr_mode_masses_are_within_monte_carlo_error(metrics):
    main = metrics["main"]
    n = main["n_particles"]
    for name in ("exact", "fsr"):
        for k in range(2):
            lo, hi = widened(main["methods"][name]["mass"][k], n)
            assert lo <= main["exact_fsr"][k] <= hi, (name, k)
    n = metrics["sweep"]["n_particles"]
    for row in metrics["sweep"]["rows"]:
        if row["method"] == "fsr":
            lo, hi = widened(row["mode1"], n)
            assert lo <= row["exact_mode1"] <= hi, row


@pytest.mark.notebooks
def test_an_approximation_misweights_the_modes_beyond_its_interval(metrics):
    main = metrics["main"]
    n = main["n_particles"]
    missed = [m for m in APPROX if not widened(main["methods"][m]["mass"][0], n, slack=0.0)[0]
              <= main["exact_fsr"][0] <= widened(main["methods"][m]["mass"][0], n, slack=0.0)[1]]
    assert missed, {m: main["methods"][m]["mass"] for m in APPROX}
    n = metrics["sweep"]["n_particles"]
    sweep_missed = {row["method"] for row in metrics["sweep"]["rows"] if row["method"] in APPROX
                    and not widened(row["mode1"], n, slack=0.0)[0] <= row["exact_mode1"]
                    <= widened(row["mode1"], n, slack=0.0)[1]}
    assert sweep_missed
    # The TV over modes says the same: the worst approximation is far worse than the FSR.
    tv = metrics["tv"]["sweep_mean"]
    assert max(tv[m] for m in APPROX) > 2 * tv["fsr"] + 0.03
    assert all(math.isfinite(v) for v in tv.values())


@pytest.mark.notebooks
def test_digits_class_weights(tmp_path):
    m = run_notebook(NB, tmp_path, seed=0, n_atoms=100, n_particles=128, n_steps=50, n_record=2, sweep_pi=[0.5],
                     sweep_noise=[1.0], n_sweep_particles=64, n_sweep_steps=50, run_digits=True, n_candidates=40,
                     digit_methods=["fsr", "pigdm"], n_digit_particles=128, n_digit_steps=50)
    d = m["digits"]
    assert sum(d["exact_classes"]) == pytest.approx(1.0)
    assert set(d["methods"]) == {"exact", "fsr", "pigdm"}
    for name, rec in d["methods"].items():
        assert sum(rec["classes"]) == pytest.approx(1.0)
        assert 0.0 <= rec["tv"] <= 1.0 and 0.0 <= rec["wrong_class_mass"] <= 1.0
    # Exact sampling puts nothing on classes the exact posterior rules out.
    assert d["methods"]["exact"]["wrong_class_mass"] < 0.02


@pytest.mark.notebooks
@pytest.mark.parametrize("bad, name, error", [
    ({"noise_std": -1.0}, "noise_std", "ValueError"),
    ({"pi_1": 1.0}, "pi_1", "ValueError"),
    ({"n_partcles": 10}, "n_partcles", "ValueError"),
    ({"digit_methods": "fsr"}, "digit_methods", "TypeError"),
])
def test_bad_or_unknown_parameter_fails_in_the_validation_cell(tmp_path, bad, name, error):
    assert_rejected(NB, tmp_path, bad, name, error)



@pytest.mark.notebooks
def test_verdict_supported_at_tiny_sizes(metrics):
    v = metrics["verdict"]
    check_verdict(v, {"supported"})
    assert len(v["evidence"]) == 3
    tv = metrics["sweep_summary"]
    assert v["evidence"][0]["threshold"] == pytest.approx(2 * tv["fsr"]["mean_tv"] + 0.03)
