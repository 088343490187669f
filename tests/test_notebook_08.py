"""Chapter 8 (tutorial): a new likelihood approximation is registered and diagnosed; at temperature 1
the tempered DPS is sigma-DPS; the score form of the original DPS update reproduces it exactly."""
import math

import pytest

from conftest import assert_rejected, check_verdict, run_notebook
from fsdiag.diagnostics import wilson_interval

NB = "08_diagnose_your_sampler.ipynb"
TINY = dict(n_atoms=150, n_particles=256, n_steps=100, n_ddpm_steps=100, n_record=8, n_lens_samples=64, lens_steps=40)


@pytest.fixture(scope="module")
def metrics(tmp_path_factory):
    return run_notebook(NB, tmp_path_factory.mktemp("nb08"), seed=0, **TINY)


@pytest.mark.notebooks
def test_new_methods_are_registered_and_diagnosed(metrics):
    assert metrics["registered"] == {"tempered_dps": True, "original_dps": True}
    assert len(metrics["new_methods"]) == 3
    for label in metrics["new_methods"]:
        rec = metrics["methods"][label]
        assert rec["finite"], label
        assert sum(rec["modes"]) == pytest.approx(1.0)
        for key in ("tv_atoms", "tv_modes", "wasserstein", "score_norm_ratio_median", "score_cosine_mean"):
            assert math.isfinite(rec[key]), (label, key)
        for rate in rec["hallucination"].values():
            assert 0.0 <= rate <= 1.0


@pytest.mark.notebooks
def test_a_sampler_on_the_exact_denoiser_is_judged_and_the_cli_guards_it(metrics):
    lens = metrics["lens"]
    # The DPS-style sampler of section 3 snaps onto atoms but spreads its mass over them wrongly:
    # its TV over atoms stays above what as many exact draws give, on the mixture and on digits.
    assert lens["gmm2d"]["tv_atoms"] > lens["gmm2d"]["tv_floor_atoms"]
    assert lens["cli"]["tv_modes"] > lens["cli"]["tv_floor_modes"]
    # The command line's exit code is its --max-tv verdict.
    assert lens["cli"]["passed"] == (lens["cli"]["tv_modes"] <= lens["cli"]["max_tv"])
    assert lens["cli"]["exit_code"] == (0 if lens["cli"]["passed"] else 1)


@pytest.mark.notebooks
def test_original_dps_score_reproduces_the_dps_update(metrics):
    assert metrics["one_step_check"] < 1e-8


@pytest.mark.notebooks
def test_tempered_dps_at_temperature_one_is_sigma_dps(metrics):
    n = metrics["tempered_vs_sigma_dps"]["n_particles"]
    # Mass per atom: the same within Monte Carlo error (here even the same particles: same seed, same maths).
    assert metrics["tempered_vs_sigma_dps"]["tv_between"] <= 3 / math.sqrt(n)
    t1, sigma = metrics["methods"]["tempered_dps (T=1)"], metrics["methods"]["sigma_dps"]
    for a, b in zip(t1["modes"], sigma["modes"]):
        lo, hi = wilson_interval(round(b * n), n, 3.0)
        assert lo <= a <= hi


@pytest.mark.notebooks
def test_fsr_is_the_reference(metrics):
    fsr = metrics["methods"]["fsr"]
    assert fsr["score_cosine_mean"] == pytest.approx(1.0, abs=1e-6)
    assert fsr["score_norm_ratio_median"] == pytest.approx(1.0, abs=1e-6)
    assert fsr["hallucination"]["prior_mode"] <= 0.02 and fsr["hallucination"]["off_support"] <= 0.02


@pytest.mark.notebooks
@pytest.mark.parametrize("bad, name, error", [
    ({"n_ddpm_steps": 3}, "n_ddpm_steps", "ValueError"),
    ({"temperature": -1.0}, "temperature", "ValueError"),
    ({"temprature": 2.0}, "temprature", "ValueError"),
    ({"seed": 1.5}, "seed", "TypeError"),
])
def test_bad_or_unknown_parameter_fails_in_the_validation_cell(tmp_path, bad, name, error):
    assert_rejected(NB, tmp_path, bad, name, error)



@pytest.mark.notebooks
def test_verdict_supported_at_tiny_sizes(metrics):
    v = metrics["verdict"]
    check_verdict(v, {"supported"})
    assert len(v["evidence"]) == 4
    assert v["evidence"][0]["value"] == pytest.approx(metrics["one_step_check"])
    assert v["evidence"][1]["threshold"] == pytest.approx(3 / math.sqrt(TINY["n_particles"]))
