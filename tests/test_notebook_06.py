"""Chapter 6 (claim 5): the FSR sampler stays on the data and off excluded prior modes; the
DPS variants leave the manifold under nonlinear operators and low noise, and the approximations land on
prior modes the posterior excludes."""
import pytest

from conftest import assert_rejected, check_verdict, run_notebook
from fsdiag.diagnostics import wilson_interval

NB = "06_hallucination.ipynb"
TINY = dict(n_atoms=120, n_particles=160, n_steps=100, ring_noise=[0.03], noise_sweep=[0.01], mlp_hidden=8)
N = TINY["n_particles"]


def interval(rate, z=3.0):
    lo, hi = wilson_interval(round(rate * N), N, z)
    return float(lo), float(hi)


@pytest.fixture(scope="module")
def metrics(tmp_path_factory):
    return run_notebook(NB, tmp_path_factory.mktemp("nb06"), seed=0, **TINY)


def _nonlinear(metrics):
    for dataset, by_op in metrics["manifold"]["rates"].items():
        for op, by_method in by_op.items():
            yield dataset, op, by_method


@pytest.mark.notebooks
def test_fsr_stays_on_the_support(metrics):
    for dataset, op, by_method in _nonlinear(metrics):
        assert by_method["fsr"]["off_support"] <= 0.02, (dataset, op)
        assert by_method["fsr"]["likelihood_mode"] <= 0.02, (dataset, op)
    for row in metrics["noise_sweep"]["rows"]:
        if row["method"] == "fsr":
            assert row["off_support"] <= 0.02, row
    assert metrics["summary"]["fsr_max_off_support"] <= 0.02


@pytest.mark.notebooks
def test_dps_leaves_the_support_beyond_monte_carlo_error(metrics):
    rates = [(by_m[m]["off_support"], by_m["fsr"]["off_support"]) for _, _, by_m in _nonlinear(metrics)
             for m in ("sigma_dps", "zeta_dps")]
    sweep = {(r["noise_std"], r["method"]): r["off_support"] for r in metrics["noise_sweep"]["rows"]}
    rates += [(v, sweep[(s, "fsr")]) for (s, m), v in sweep.items() if m != "fsr"]
    # At least one DPS variant's lower 3-sigma bound clears the FSR's upper one, by a wide margin.
    assert any(interval(dps)[0] > interval(fsr)[1] and dps > fsr + 0.2 for dps, fsr in rates), rates


@pytest.mark.notebooks
def test_prior_mode_hallucination_on_the_ring(metrics):
    rows = {r["method"]: r for r in metrics["ring"]["rows"]}
    assert rows["fsr"]["exact_absent_mass"] < 1e-2
    assert rows["fsr"]["prior_mode"] <= 0.02
    worst = max((r["prior_mode"], m) for m, r in rows.items() if m != "fsr")
    assert interval(worst[0])[0] > interval(rows["fsr"]["prior_mode"])[1], rows


@pytest.mark.notebooks
def test_linear_only_methods_are_not_applicable_to_nonlinear_models(metrics):
    assert metrics["manifold"]["not_applicable"] == ["pigdm", "tmpd"]
    for _, _, by_method in _nonlinear(metrics):
        assert by_method["pigdm"] is None and by_method["tmpd"] is None
        for m in ("fsr", "sigma_dps", "zeta_dps"):
            assert 0.0 <= by_method[m]["likelihood_mode"] <= by_method[m]["off_support"] <= 1.0


@pytest.mark.notebooks
@pytest.mark.parametrize("bad, name, error", [
    ({"mlp_hidden": -1}, "mlp_hidden", "ValueError"),
    ({"ring_modes": 2.5}, "ring_modes", "TypeError"),
    ({"ring_mode": 4}, "ring_mode", "ValueError"),
    ({"sweep_dataset": "torus", "sweep_operator": "polar_angle"}, "sweep_operator", "ValueError"),
])
def test_bad_or_unknown_parameter_fails_in_the_validation_cell(tmp_path, bad, name, error):
    assert_rejected(NB, tmp_path, bad, name, error)



@pytest.mark.notebooks
def test_verdict_supported_at_tiny_sizes(metrics):
    v = metrics["verdict"]
    check_verdict(v, {"supported"})
    assert [(r["op"], r["threshold"]) for r in v["evidence"]] == [(">", 0.05), ("<=", 0.02), (">", 0.2), ("<=", 0.02)]
    assert v["evidence"][1]["value"] == pytest.approx(metrics["summary"]["fsr_max_prior_mode"])
    assert v["evidence"][3]["value"] == pytest.approx(metrics["summary"]["fsr_max_off_support"])
