"""Samplers: the paper's three-atom testbed, the exact reference, closed-form posteriors."""
import math

import numpy as np
import pytest
import torch
from scipy import stats

import fsdiag
from fsdiag import oracle as R
from fsdiag.diagnostics import atom_mass, wilson_interval
from fsdiag import testbeds
from fsdiag.testbeds import PAPER_METHOD_PARAMS, GaussianPrior

METHODS = ["fsr", "sigma_dps", "zeta_dps", "pigdm", "tmpd"]


@pytest.fixture
def three_atoms():
    return testbeds.three_atoms()


@pytest.mark.parametrize("method", METHODS)
def test_three_atom_testbed_reproduces_the_papers_algorithm(method, three_atoms):
    """Same seed, same grid: fsdiag.sample and the dense autograd loop written the paper code's
    way give the same particles, hence the same posterior."""
    prior, lik = three_atoms
    run = fsdiag.sample(prior, lik, method=method, n_particles=512, n_steps=500, t_min=1e-2, seed=7,
                        progress=False, record=0, **PAPER_METHOD_PARAMS.get(method, {}))
    ref = R.sample_em(method, prior.atoms, lik, n_particles=512, n_steps=500, t_min=1e-2,
                      generator=torch.Generator().manual_seed(7), schedule=fsdiag.VPSchedule(), **PAPER_METHOD_PARAMS.get(method, {}))
    abar = fsdiag.VPSchedule().alpha_bar(1e-2)
    torch.testing.assert_close(atom_mass(prior, run.samples, abar), atom_mass(prior, ref, abar), rtol=0, atol=2 / 512)
    assert (run.samples - ref).abs().median() < 1e-8


def test_three_atom_testbed_masses(three_atoms):
    """The paper's finding on this testbed: exact methods put all mass on x = -1.8, pigdm does not."""
    prior, lik = three_atoms
    n = 2048
    abar = fsdiag.VPSchedule().alpha_bar(1e-2)
    mass = {m: atom_mass(prior, fsdiag.sample(prior, lik, method=m, n_particles=n, n_steps=500, seed=1,
                                              progress=False, record=0, **PAPER_METHOD_PARAMS.get(m, {})).samples, abar)
            for m in METHODS}
    psi = fsdiag.posterior_weights(prior, lik)
    assert psi[0] > 1 - 1e-9
    for m in ("fsr", "sigma_dps", "zeta_dps"):
        assert mass[m][0] > 0.995, m
    lo, _ = wilson_interval(round(float(1 - mass["pigdm"][0]) * n), n)
    _, hi = wilson_interval(round(float(1 - mass["fsr"][0]) * n), n)
    assert lo > hi and 0.05 < 1 - mass["pigdm"][0] < 0.15   # paper code: ~9.6% off the true atom
    assert 0.005 < 1 - mass["tmpd"][0] < 0.04


def test_exact_sampler_frequencies_match_posterior_weights(gen):
    """Chi-square: atom frequencies of the exact ancestral sampler against psi."""
    atoms = torch.tensor([[-2.0, 0.0], [0.0, 1.0], [1.0, -1.0], [2.0, 2.0]], dtype=torch.float64)
    prior = fsdiag.EmpiricalPrior(atoms, weights=[1, 2, 3, 1], device="cpu")
    lik = fsdiag.GaussianLikelihood(fsdiag.forward.Affine([[1.0, 0.5]]), [0.0], 1.0)
    psi = fsdiag.posterior_weights(prior, lik)
    n = 8000
    run = fsdiag.sample_exact(prior, lik, n_particles=n, n_steps=50, t_min=1e-3, seed=3, progress=False)
    counts = (atom_mass(prior, run.samples, fsdiag.VPSchedule().alpha_bar(1e-3)) * n).round().numpy()
    assert stats.chisquare(counts, psi.numpy() * n).pvalue > 1e-3


def test_exact_sampler_is_exact_at_every_recorded_time(gen):
    """Marginals along the exact sampler's path are p_t(x_t|y): compare moments."""
    atoms = torch.randn(30, 1, generator=gen, dtype=torch.float64) * 2
    prior = fsdiag.EmpiricalPrior(atoms, device="cpu")
    lik = fsdiag.GaussianLikelihood(fsdiag.forward.Identity(), [0.7], 0.5)
    psi = fsdiag.posterior_weights(prior, lik)
    run = fsdiag.sample_exact(prior, lik, n_particles=20000, n_steps=20, seed=0, record=5, progress=False)
    for t, x in zip(run.times.tolist(), run.trajectory):
        abar = run.schedule.alpha_bar(t)
        mean = math.sqrt(abar) * float(psi @ atoms[:, 0])
        var = abar * float(psi @ (atoms[:, 0] - psi @ atoms[:, 0]) ** 2) + 1 - abar
        assert abs(float(x.mean()) - mean) < 5 * math.sqrt(var / 20000)
        assert abs(float(x.var()) / var - 1) < 0.05


def test_fsr_sampler_matches_gaussian_linear_posterior(gen):
    """Many atoms from a Gaussian prior: FSR particles reproduce the closed-form posterior."""
    d = 2
    gauss = GaussianPrior(torch.tensor([0.5, -0.5], dtype=torch.float64), torch.tensor([[1.0, 0.3], [0.3, 0.5]], dtype=torch.float64))
    lik = fsdiag.GaussianLikelihood(fsdiag.forward.Affine([[1.0, 1.0]]), [1.0], 0.5)
    post = gauss.condition(lik)
    prior = gauss.to_empirical(20000, gen, device="cpu")
    run = fsdiag.sample(prior, lik, method="fsr", n_particles=2000, n_steps=100, seed=0, progress=False, record=0)
    x = run.samples
    torch.testing.assert_close(x.mean(0), post.mean(), atol=0.05, rtol=0)
    torch.testing.assert_close(torch.cov(x.T), post.cov(), atol=0.05, rtol=0)


def test_record_and_reproducibility(three_atoms):
    prior, lik = three_atoms
    kw = dict(method="pigdm", n_particles=64, n_steps=40, seed=5, progress=False)
    a = fsdiag.sample(prior, lik, record=[1.0, 0.5, 0.1], **kw)
    b = fsdiag.sample(prior, lik, record=[1.0, 0.5, 0.1], **kw)
    assert torch.equal(a.samples, b.samples)
    assert a.times.tolist()[0] == 1.0 and a.times.tolist()[-1] == pytest.approx(1e-2)
    assert len(a.times) == 4 and a.trajectory.shape == (4, 64, 1) and a.tweedie.shape == (4, 64, 1)
    assert torch.equal(a.trajectory[-1], a.samples)
    c = fsdiag.sample(prior, lik, **{**kw, "seed": 6})
    assert not torch.equal(a.samples, c.samples)
    full = fsdiag.sample(prior, lik, record=1000, **kw)
    assert len(full.times) == 41
    # recorded Tweedie means are the prior denoiser at the recorded particles
    abar = full.schedule.alpha_bar(float(full.times[10]))
    torch.testing.assert_close(full.tweedie[10], prior.denoise(full.trajectory[10], abar))


def test_ddpm_schedule_sampler_runs_to_zero_and_is_exact_for_fsr(three_atoms):
    prior, lik = three_atoms
    run = fsdiag.sample(prior, lik, method="fsr", schedule=fsdiag.DDPMSchedule(), n_steps=1000,
                        n_particles=1000, seed=0, progress=False, record=0)
    assert run.t_final == 0.0
    assert (run.samples[:, 0] - (-1.8)).abs().max() < 0.05
