"""Bad input raises ValueError / TypeError naming the argument."""
import math

import pytest
import torch

import fsdiag


@pytest.fixture
def ok():
    prior = fsdiag.EmpiricalPrior(torch.tensor([[-1.0], [1.0]], dtype=torch.float64), device="cpu")
    lik = fsdiag.GaussianLikelihood(fsdiag.forward.Identity(), [0.3], 0.5)
    return prior, lik


@pytest.mark.parametrize("atoms,match", [
    (torch.tensor([1.0, 2.0]), "atoms"),
    (torch.tensor([[1.0], [math.nan]]), "atoms"),
    (torch.tensor([[1.0], [math.inf]]), "atoms"),
    ("abc", "atoms"),
])
def test_bad_atoms(atoms, match):
    with pytest.raises((ValueError, TypeError), match=match):
        fsdiag.EmpiricalPrior(atoms, device="cpu")


def test_bad_weights_labels_device():
    atoms = torch.zeros(3, 2)
    with pytest.raises(ValueError, match="weights"):
        fsdiag.EmpiricalPrior(atoms, weights=[1.0, 2.0], device="cpu")
    with pytest.raises(ValueError, match="weights"):
        fsdiag.EmpiricalPrior(atoms, weights=[1.0, -2.0, 1.0], device="cpu")
    with pytest.raises(ValueError, match="labels"):
        fsdiag.EmpiricalPrior(atoms, labels=[0, 1], device="cpu")
    with pytest.raises(ValueError, match="device"):
        fsdiag.EmpiricalPrior(atoms, device="tpu9")


@pytest.mark.parametrize("y,std,match", [
    ([math.nan], 0.5, "y"), ([0.0], 0.0, "noise_std"), ([0.0], -1.0, "noise_std"),
    ([0.0], math.inf, "noise_std"), ([0.0, 1.0], [0.1, 0.2, 0.3], "noise_std"),
])
def test_bad_likelihood(y, std, match):
    with pytest.raises(ValueError, match=match):
        fsdiag.GaussianLikelihood(fsdiag.forward.Identity(), y, std)


def test_forward_model_type_and_shape_mismatch(ok):
    prior, _ = ok
    with pytest.raises(TypeError, match="forward"):
        fsdiag.GaussianLikelihood(lambda x: x, [0.0], 1.0)
    lik = fsdiag.GaussianLikelihood(fsdiag.forward.Identity(), [0.0, 1.0], 1.0)   # y has 2 entries, d = 1
    with pytest.raises(ValueError, match="y"):
        fsdiag.posterior_weights(prior, lik)
    with pytest.raises(ValueError, match="y"):
        fsdiag.sample(prior, lik, n_particles=4, n_steps=2, progress=False)


@pytest.mark.parametrize("kwargs,exc,match", [
    ({"t_min": 0.0}, ValueError, "t_min"), ({"t_min": 1.0}, ValueError, "t_min"),
    ({"t_min": -0.1}, ValueError, "t_min"), ({"t_min": 1.5}, ValueError, "t_min"),
    ({"n_particles": 0}, ValueError, "n_particles"), ({"n_steps": 2.5}, TypeError, "n_steps"),
    ({"method": "dpss"}, ValueError, "method"), ({"zetta": 1.0, "method": "zeta_dps"}, TypeError, "zetta"),
    ({"zeta": 1.0, "method": "fsr"}, TypeError, "zeta"), ({"zeta": -1.0, "method": "zeta_dps"}, ValueError, "zeta"),
    ({"r2": "other", "method": "pigdm"}, ValueError, "r2"), ({"seed": None}, ValueError, "seed"),
    ({"seed": -3}, ValueError, "seed"), ({"record": "all"}, TypeError, "record"),
    ({"generator": 3}, TypeError, "generator"),
])
def test_bad_sampler_arguments(ok, kwargs, exc, match):
    prior, lik = ok
    args = {"n_particles": 4, "n_steps": 2, "progress": False, **kwargs}
    with pytest.raises(exc, match=match):
        fsdiag.sample(prior, lik, **args)


def test_bad_queries(ok):
    prior, _ = ok
    with pytest.raises(ValueError, match="x"):
        prior.denoise(torch.zeros(3, 2, dtype=torch.float64), 0.5)
    with pytest.raises(ValueError, match="x"):
        prior.denoise(torch.tensor([[math.nan]]), 0.5)
    with pytest.raises(ValueError, match="abar"):
        prior.denoise(torch.zeros(3, 1), 1.0)
    with pytest.raises(ValueError, match="log_lik"):
        prior.moments(torch.zeros(3, 1), 0.5, torch.zeros(5))
    with pytest.raises(ValueError, match="v"):
        prior.cov_matvec(torch.zeros(3, 1), 0.5, torch.zeros(2, 1))


def test_bad_forward_model_arguments():
    with pytest.raises(ValueError, match="mask"):
        fsdiag.forward.Mask(torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="bias"):
        fsdiag.forward.Affine(torch.eye(2), [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="in_dim"):
        fsdiag.forward.MLP(0)
    with pytest.raises(ValueError, match="x"):
        fsdiag.forward.PolarAngle()(torch.zeros(3, 1))


def test_bad_schedules():
    with pytest.raises(ValueError, match="beta_min"):
        fsdiag.VPSchedule(beta_min=30.0)
    with pytest.raises(ValueError, match="n_steps"):
        fsdiag.DDPMSchedule().time_grid(300)


def test_diagnose_checks_its_inputs(ok):
    prior, lik = ok
    with pytest.raises(TypeError, match="run"):
        fsdiag.diagnose("not a run", prior, lik)
    run = fsdiag.sample(prior, lik, n_particles=4, n_steps=2, progress=False)
    other = fsdiag.EmpiricalPrior(torch.zeros(2, 3), device="cpu")
    with pytest.raises(ValueError, match="run"):
        fsdiag.diagnose(run, other, lik)
