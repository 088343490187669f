"""Likelihood approximations: hand-computed values, the dense autograd reference, closed forms."""
import math

import numpy as np
import pytest
import torch

import fsdiag
from fsdiag import oracle as R
from fsdiag.forward import FORWARD_MODELS, LinearForwardModel
from fsdiag import Problem
from fsdiag.methods import METHODS
from fsdiag.testbeds import PAPER_METHOD_PARAMS, GaussianPrior, three_atoms


def hand_scores(x, abar, y, sigma, zeta=0.3):
    """1-D, atoms {-1, 1}, equal weights, identity A: every method's score by hand (NumPy)."""
    atoms = np.array([-1.0, 1.0])
    a, b2 = math.sqrt(abar), 1 - abar
    w = np.exp(-(x - a * atoms) ** 2 / (2 * b2)); w /= w.sum()
    m = w @ atoms
    C = w @ atoms ** 2 - m ** 2
    J = a / b2 * C
    lik = np.exp(-(y - atoms) ** 2 / (2 * sigma ** 2))
    wc = w * lik / (w * lik).sum()
    sigma_dps = J * (y - m) / sigma ** 2
    return {"fsr": a / b2 * (wc @ atoms - m), "sigma_dps": sigma_dps,
            "zeta_dps": 2 * zeta / abs(y - m) * sigma_dps,
            "pigdm": J * (y - m) / ((1 - abar) / abar + sigma ** 2),
            "tmpd": J * (y - m) / (C + sigma ** 2)}


@pytest.mark.parametrize("method", ["fsr", "sigma_dps", "zeta_dps", "pigdm", "tmpd"])
@pytest.mark.parametrize("x,abar", [(0.2, 0.5), (-0.7, 0.9), (1.3, 0.1)])
def test_against_hand_computed_values(method, x, abar):
    prior = fsdiag.EmpiricalPrior(torch.tensor([[-1.0], [1.0]], dtype=torch.float64), device="cpu")
    lik = fsdiag.GaussianLikelihood(fsdiag.forward.Identity(), [0.3], 0.5)
    approx = fsdiag.methods.make_method(method, **PAPER_METHOD_PARAMS.get(method, {}))
    g = approx(Problem.build(prior, lik), torch.tensor([[x]], dtype=torch.float64), abar)
    assert g.likelihood_score.item() == pytest.approx(hand_scores(x, abar, 0.3, 0.5)[method], rel=1e-10, abs=1e-12)


def _cases():
    """Every registered method with every registered forward model it accepts."""
    for method, cls in sorted(METHODS.items()):
        for fname, fcls in sorted(FORWARD_MODELS.items()):
            if cls.linear_only and not issubclass(fcls, LinearForwardModel):
                continue
            yield method, fname


@pytest.mark.parametrize("method,fname", list(_cases()))
def test_matches_dense_autograd_reference(method, fname, gen):
    if method not in ("fsr", "sigma_dps", "zeta_dps", "pigdm", "tmpd"):
        pytest.skip(f"no dense reference for {method!r}")
    d = 3
    atoms = torch.randn(60, d, generator=gen, dtype=torch.float64)
    prior = fsdiag.EmpiricalPrior(atoms, weights=torch.rand(60, generator=gen, dtype=torch.float64) + 0.2,
                                  chunk_size=16, device="cpu")
    fwd = FORWARD_MODELS[fname].example(d, seed=2)
    y = fwd(atoms[:1]).reshape(-1) + 0.1
    lik = fsdiag.GaussianLikelihood(fwd, y, 0.4)
    problem = Problem.build(prior, lik)
    approx = fsdiag.methods.make_method(method, **PAPER_METHOD_PARAMS.get(method, {}))
    for abar in (0.8, 0.2):
        x = math.sqrt(abar) * atoms[:8] + math.sqrt(1 - abar) * torch.randn(8, d, generator=gen, dtype=torch.float64)
        ours = approx(problem, x, abar).likelihood_score
        ref = R.likelihood_score(method, x, atoms, prior.log_weights, abar, lik, **PAPER_METHOD_PARAMS.get(method, {}))
        torch.testing.assert_close(ours, ref, rtol=1e-7, atol=1e-9 * (1 + ref.abs().max().item()))


@pytest.mark.parametrize("method", sorted(METHODS))
def test_no_nan_down_to_small_t_min(method):
    prior, lik = three_atoms()
    run = fsdiag.sample(prior, lik, method=method, n_particles=256, n_steps=300, t_min=1e-4, seed=0,
                        progress=False, **PAPER_METHOD_PARAMS.get(method, {}))
    assert torch.isfinite(run.samples).all() and torch.isfinite(run.tweedie).all()


def test_tmpd_is_exact_for_a_gaussian_prior_and_linear_model(gen):
    d = 3
    L = torch.randn(d, d, generator=gen, dtype=torch.float64)
    prior = GaussianPrior(torch.randn(d, generator=gen, dtype=torch.float64), L @ L.T + 0.3 * torch.eye(d, dtype=torch.float64))
    fwd = fsdiag.forward.Affine(torch.randn(2, d, generator=gen, dtype=torch.float64), [0.1, -0.2])
    lik = fsdiag.GaussianLikelihood(fwd, [0.5, -1.0], torch.tensor([0.3, 0.6]))
    problem = Problem.build(prior, lik)
    for abar in (0.95, 0.5, 0.05):
        x = torch.randn(10, d, generator=gen, dtype=torch.float64)
        exact = prior.likelihood_score(x, abar, lik)
        torch.testing.assert_close(METHODS["tmpd"]()(problem, x, abar).likelihood_score, exact, rtol=1e-9, atol=1e-10)
        # the other approximations are not exact here
        assert (METHODS["sigma_dps"]()(problem, x, abar).likelihood_score - exact).abs().max() > 1e-3


def test_pigdm_with_songs_variance_is_exact_for_a_standard_normal_prior(gen):
    d = 4
    prior = GaussianPrior(torch.zeros(d, dtype=torch.float64), 1.0)
    lik = fsdiag.GaussianLikelihood(fsdiag.forward.Mask(torch.tensor([True, False, True, True])), [0.3, -1.0, 2.0], 0.5)
    problem = Problem.build(prior, lik)
    for abar in (0.9, 0.4, 0.02):
        x = torch.randn(10, d, generator=gen, dtype=torch.float64)
        exact = prior.likelihood_score(x, abar, lik)
        torch.testing.assert_close(METHODS["pigdm"](r2="song")(problem, x, abar).likelihood_score, exact, rtol=1e-10, atol=1e-12)
        paper = METHODS["pigdm"]()(problem, x, abar).likelihood_score
        assert (paper - exact).abs().max() > 1e-3   # the paper's r_t^2 = (1 - abar)/abar is not exact here


def test_tmpd_conjugate_gradients_match_the_dense_solve(gen):
    d = 6
    atoms = torch.randn(200, d, generator=gen, dtype=torch.float64)
    prior = fsdiag.EmpiricalPrior(atoms, device="cpu")
    lik = fsdiag.GaussianLikelihood(fsdiag.forward.Affine.example(d, seed=4), torch.zeros(3), 0.3)
    problem = Problem.build(prior, lik)
    x = torch.randn(9, d, generator=gen, dtype=torch.float64)
    dense = METHODS["tmpd"]()(problem, x, 0.4).likelihood_score
    cg = METHODS["tmpd"](dense_max=0, cg_iters=50, cg_tol=1e-12)(problem, x, 0.4).likelihood_score
    torch.testing.assert_close(cg, dense, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("method", sorted(m for m, c in METHODS.items() if c.linear_only))
def test_linear_only_methods_refuse_nonlinear_models(method):
    prior = fsdiag.EmpiricalPrior(torch.randn(10, 2, generator=torch.Generator().manual_seed(0)), device="cpu")
    lik = fsdiag.GaussianLikelihood(fsdiag.forward.Radial(), [1.0], 0.1)
    with pytest.raises(ValueError, match="linear forward model"):
        fsdiag.sample(prior, lik, method=method, n_particles=4, n_steps=2, progress=False)


def test_registering_a_new_method_makes_it_available():
    @fsdiag.register
    class Half(fsdiag.Approximation):
        name = "half_sigma_dps_test"

        def __call__(self, problem, x, abar):
            g = METHODS["sigma_dps"]()(problem, x, abar)
            return fsdiag.Guidance(0.5 * g.likelihood_score, g.tweedie)
    try:
        prior = fsdiag.EmpiricalPrior(torch.tensor([[-1.0], [1.0]], dtype=torch.float64), device="cpu")
        lik = fsdiag.GaussianLikelihood(fsdiag.forward.Identity(), [0.3], 0.5)
        run = fsdiag.sample(prior, lik, method="half_sigma_dps_test", n_particles=8, n_steps=5, progress=False)
        assert run.method == "half_sigma_dps_test"
    finally:
        METHODS.pop("half_sigma_dps_test")
