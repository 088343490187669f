"""Chapter 12 (beyond the paper, issue 9 item 6): whose error is it, the trained network's or the
likelihood approximation's? Run at tiny sizes: the claims are checked from metrics.json."""
import math
import statistics

import pytest

from conftest import assert_rejected, check_verdict, run_notebook

NB = "12_whose_error.ipynb"
TINY = dict(methods=["sigma_dps", "pigdm"], n_particles=256, n_steps=60, mlp_width=32, mlp_depth=2, mlp_steps=300,
            digit_methods=["sigma_dps"], n_digit_particles=32, n_digit_steps=30, conv_channels=8, conv_depth=1,
            conv_steps=60, batch_size=128, n_threads=1)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("nb12")
    return tmp, run_notebook(NB, tmp, seed=0, **TINY)


@pytest.mark.notebooks
def test_networks_are_trained_seeded_and_saved_next_to_the_outputs(run):
    tmp, metrics = run
    assert set(metrics["training"]) == {"gmm2d", "digits_inpainting"}
    saved = {p.name for p in (tmp / "out.weights").glob("*.pt")}
    for key, tr in metrics["training"].items():
        assert tr["trained"] and tr["seconds"] > 0 and math.isfinite(tr["final_loss"]), key
        assert any(tr["key"] in name for name in saved), key


@pytest.mark.notebooks
def test_prior_samples_are_judged_against_the_prior(run):
    _, metrics = run
    for key, rep in metrics["prior"].items():
        exact, net = rep["exact denoiser"], rep["network"]
        # The exact denoiser's unconditional samples are exact draws of the prior: TV near the floor.
        assert exact["tv_modes"] < 3 * exact["tv_floor_modes"] + 0.05, key
        assert 0 <= net["tv_modes"] <= 1 and net["tv_floor_modes"] > 0, key


@pytest.mark.notebooks
def test_every_method_runs_with_both_denoisers_and_the_share_follows(run):
    _, metrics = run
    expected = {"gmm2d": TINY["methods"], "digits_inpainting": TINY["digit_methods"]}
    for key, prob in metrics["problems"].items():
        assert set(prob["methods"]) == set(expected[key])
        runs = metrics["runs"][key]
        # The exact FSR sampler is within Monte Carlo error of the exact posterior.
        fsr = runs["fsr"]["exact denoiser"]
        assert fsr["tv_modes"] < 3 * fsr["floor"] + 0.05, key
        for m, row in prob["methods"].items():
            assert row["tv_exact_denoiser"] == runs[m]["exact denoiser"]["tv_modes"]
            assert row["tv_network"] == runs[m]["network"]["tv_modes"]
            assert row["share"] == pytest.approx(row["tv_exact_denoiser"] / row["tv_network"])
            assert 0 <= row["tv_network"] <= 1 and 0 <= row["tv_exact_denoiser"] <= 1
        shares = [r["share"] for r in prob["methods"].values()]
        assert prob["median_share"] == pytest.approx(statistics.median(shares))


@pytest.mark.notebooks
def test_verdict_is_consistent(run):
    _, metrics = run
    v = metrics["verdict"]
    check_verdict(v)
    labels = [r["label"] for r in v["evidence"]]
    assert any(lab.startswith("gmm2d") for lab in labels) and any(lab.startswith("digits_inpainting") for lab in labels)


@pytest.mark.notebooks
@pytest.mark.parametrize("bad, name, error", [
    (dict(mlp_steps=-1), "mlp_steps", "ValueError"),
    (dict(methods=["fsr"]), "methods", "ValueError"),
    (dict(n_particles=2.5), "n_particles", "TypeError"),
    (dict(conv_stepz=10), "conv_stepz", "ValueError"),
])
def test_bad_or_unknown_parameter_fails_in_the_validation_cell(tmp_path, bad, name, error):
    assert_rejected(NB, tmp_path, {**TINY, **bad}, name, error)
