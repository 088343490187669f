"""Diagnostics: statistics against SciPy/closed forms, and reports on exact runs."""
import math

import numpy as np
import pytest
import torch
from scipy import stats

import fsdiag
from fsdiag import diagnostics as D


def test_wasserstein_1d_matches_scipy(gen):
    rng = np.random.default_rng(0)
    u, v = rng.normal(size=300), rng.normal(1.0, 2.0, size=200)
    uw, vw = rng.random(300), rng.random(200)
    assert D.wasserstein_1d(u, v) == pytest.approx(stats.wasserstein_distance(u, v), rel=1e-10)
    assert D.wasserstein_1d(u, v, uw, vw) == pytest.approx(stats.wasserstein_distance(u, v, uw, vw), rel=1e-10)


def test_sliced_wasserstein_of_a_shift(gen):
    x = torch.randn(4000, 3, generator=gen, dtype=torch.float64)
    shift = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    # a shift by s moves each projection by s . theta: the mean |theta_1| over the sphere in 3-D is 1/2
    assert D.sliced_wasserstein(x + shift, x, n_projections=400) == pytest.approx(0.5, abs=0.05)
    assert D.sliced_wasserstein(x, x) == 0.0


def test_sliced_wasserstein_streams_large_samples_in_float64(gen):
    """Projected a block of rows at a time (float32 atoms never copied to float64 whole): equal
    to the projections of the whole float64 sample, scipy's W1 per direction; NaN/Inf named."""
    x = torch.randn(300, 700, generator=gen)
    y = torch.randn(4000, 700, generator=gen) + 0.3           # 4000 rows = three blocks at d = 700
    w = np.random.default_rng(1).random(4000)
    dirs = torch.randn(700, 8, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    dirs /= dirs.norm(dim=0, keepdim=True)
    px, py = (x.double() @ dirs).numpy(), (y.double() @ dirs).numpy()
    want = np.mean([stats.wasserstein_distance(px[:, j], py[:, j], None, w) for j in range(8)])
    assert D.sliced_wasserstein(x, y, y_weights=w, n_projections=8, seed=5) == pytest.approx(want, rel=1e-9)
    for name, bad in (("x", x.clone()), ("y", y.clone())):
        bad[7, 3] = math.inf
        args = (bad, y) if name == "x" else (x, bad)
        with pytest.raises(ValueError, match=f"^{name}: expected finite"):
            D.sliced_wasserstein(*args)


def test_wilson_and_tv():
    lo, hi = D.wilson_interval(30, 100)
    assert float(lo) == pytest.approx(0.2189, abs=1e-4) and float(hi) == pytest.approx(0.3958, abs=1e-4)
    assert D.total_variation([0.5, 0.5, 0.0], [0.2, 0.5, 0.3]) == pytest.approx(0.3)


def _bimodal():
    atoms = torch.tensor([[-2.0], [-1.9], [2.0], [2.1], [6.0]], dtype=torch.float64)
    prior = fsdiag.EmpiricalPrior(atoms, labels=[0, 0, 1, 1, 2], device="cpu")
    lik = fsdiag.GaussianLikelihood(fsdiag.forward.AbsoluteValue(), [2.0], 0.3)
    return prior, lik


def test_report_on_the_exact_sampler_finds_no_failure():
    prior, lik = _bimodal()
    run = fsdiag.sample_exact(prior, lik, n_particles=4000, n_steps=100, seed=0, progress=False, record=8)
    rep = fsdiag.diagnose(run, prior, lik)
    psi = fsdiag.posterior_weights(prior, lik).numpy()
    assert rep.tv_atoms < 0.03
    for s, lo, hi, e in zip(rep.modes["sampler"], rep.modes["lower"], rep.modes["upper"], rep.modes["exact"]):
        assert lo - 0.01 <= e <= hi + 0.01
    assert rep.modes["exact"][2] == pytest.approx(psi[4], abs=1e-12) and rep.modes["exact"][2] < 1e-3
    assert rep.hallucination["prior_mode"] < 0.005 and rep.hallucination["off_support"] < 0.02
    assert all(0.9 < r < 1.1 for r in rep.spread["var_ratio"])
    assert rep.early_stopping["particle"][-1] < 0.05
    assert rep.score_agreement is None
    assert "TV" in rep.summary() and set(rep.to_dict()) >= {"modes", "spread", "early_stopping"}


def test_fsr_score_agreement_is_exact_and_dps_is_not():
    prior, lik = _bimodal()
    times = [0.9, 0.5, 0.2, 0.05]
    fsr = D.score_agreement(prior, lik, "fsr", times, n_points=64)
    assert np.allclose(fsr["norm_ratio"], 1.0) and np.allclose(fsr["cosine"], 1.0)
    dps = D.score_agreement(prior, lik, "sigma_dps", times, n_points=64)
    assert max(abs(math.log(r)) for r in dps["norm_ratio"]) > math.log(1.5)


def test_hallucination_detects_off_support_particles_that_fit_y():
    prior, lik = _bimodal()
    abar = fsdiag.VPSchedule().alpha_bar(1e-2)
    a = math.sqrt(abar)
    x = torch.tensor([[-2.0], [4.0], [2.0]], dtype=torch.float64) * a
    # x[1] lies between the atoms 2.1 and 6.0: off the support, and |4| does not fit y = 2
    def hallucination(x):       # the judge's one measure, on samples still noisy at t = 1e-2
        return fsdiag.evaluate(x, prior, lik, t_final=1e-2).hallucination

    h = hallucination(x)
    assert h["off_support"] == pytest.approx(1 / 3) and h["likelihood_mode"] == 0.0
    x[1, 0] = a * -2.05     # next to the atom -2.0: on the support
    h2 = hallucination(x)
    assert h2["off_support"] == 0.0
    x[1, 0] = a * -2.6      # off the support, but |x| ~ 2.6 fits y = 2 within noise 0.3
    h3 = hallucination(x)
    assert h3["off_support"] == pytest.approx(1 / 3) and h3["likelihood_mode"] == pytest.approx(1 / 3)
