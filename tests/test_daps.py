"""DAPS: the ODE, the Langevin steps and one whole annealing step against hand computations."""
import math

import pytest
import torch

import fsdiag
from fsdiag.sampling import Run
from fsdiag.sampling.daps import daps, langevin_x0, ode_to_x0
from fsdiag.testbeds import three_atoms


def tiny_problem():
    gen = torch.Generator().manual_seed(0)
    prior = fsdiag.EmpiricalPrior(torch.randn(6, 2, generator=gen, dtype=torch.float64), device="cpu")
    lik = fsdiag.GaussianLikelihood(fsdiag.forward.Affine(torch.tensor([[1.0, -0.5]], dtype=torch.float64)), [0.4], 0.3)
    return prior, lik


def D(prior, x, sigma):
    """The VE denoiser by hand: D(x, sigma) = m(x / sqrt(1 + sigma^2), 1 / (1 + sigma^2))."""
    return prior.denoise(x / math.sqrt(1 + sigma ** 2), 1 / (1 + sigma ** 2))


def test_ode_steps_by_hand():
    prior, _ = tiny_problem()
    x = 2.0 * torch.randn(5, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    torch.testing.assert_close(ode_to_x0(prior, x, 1.5, 1), D(prior, x, 1.5))           # one step lands on D
    half = x + (0.75 - 1.5) * (x - D(prior, x, 1.5)) / 1.5                              # rho = 1: sigma, sigma/2, 0
    torch.testing.assert_close(ode_to_x0(prior, x, 1.5, 2, rho=1.0), D(prior, half, 0.75))
    s1 = 1.5 * 0.5 ** 7
    torch.testing.assert_close(ode_to_x0(prior, x, 1.5, 2), D(prior, x + (s1 - 1.5) * (x - D(prior, x, 1.5)) / 1.5, s1))


def test_langevin_steps_by_autograd():
    prior, lik = tiny_problem()
    x0_hat = torch.randn(4, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    r2, lr = 0.2, 0.01
    got = langevin_x0(lik, x0_hat, r2, lr, 2, torch.Generator().manual_seed(3))
    gen = torch.Generator().manual_seed(3)
    x0 = x0_hat
    for _ in range(2):
        xg = x0.clone().requires_grad_(True)
        logp = (lik.log_prob(xg) - ((xg - x0_hat) ** 2).sum(1) / (2 * r2)).sum()
        grad, = torch.autograd.grad(logp, xg)
        x0 = x0 + lr * grad + math.sqrt(2 * lr) * torch.randn(x0.shape, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(got, x0)


def test_one_annealing_step_by_hand():
    """n_steps = 1: x_1 ~ N(0, I); ODE to x0_hat; Langevin; re-noise to t_min — all with the same draws."""
    prior, lik = tiny_problem()
    run = daps(prior, lik, n_particles=3, n_steps=1, t_min=0.05, seed=7, n_ode_steps=3, n_langevin_steps=4,
               lr=0.02, progress=False)
    vp = fsdiag.VPSchedule()
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(3, 2, generator=gen, dtype=torch.float64)
    ab = vp.alpha_bar(1.0)
    sigma = math.sqrt((1 - ab) / ab)
    x_ve = x / math.sqrt(ab)
    for i in range(3):                                          # Euler on dx/dsigma = (x - D) / sigma
        s, s_next = sigma * (1 - i / 3) ** 7, sigma * (1 - (i + 1) / 3) ** 7
        x_ve = D(prior, x_ve, s) if s_next == 0 else x_ve + (s_next - s) * (x_ve - D(prior, x_ve, s)) / s
    x0_hat, x0 = x_ve, x_ve
    for _ in range(4):                                          # lr at k = 0 is lr itself
        g = lik.grad_log_prob(x0) - (x0 - x0_hat) / sigma ** 2
        x0 = x0 + 0.02 * g + math.sqrt(0.04) * torch.randn(x0.shape, generator=gen, dtype=torch.float64)
    ab1 = vp.alpha_bar(0.05)
    x1 = math.sqrt(ab1) * x0 + math.sqrt(1 - ab1) * torch.randn(x0.shape, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(run.info["x0"], x0)
    torch.testing.assert_close(run.samples, x1)
    torch.testing.assert_close(run.tweedie[0], prior.denoise(run.trajectory[0], ab))
    assert isinstance(run, Run) and run.method == "daps" and run.info["lr"] == [0.02]


def test_learning_rate_decays_linearly_to_its_minimum_ratio():
    prior, lik = three_atoms()
    run = daps(prior, lik, n_particles=2, n_steps=4, n_langevin_steps=1, lr=1e-2, lr_min_ratio=0.2, seed=0,
               progress=False)
    assert run.info["lr"] == pytest.approx([1e-2, 0.8e-2, 0.6e-2, 0.4e-2])


def test_finds_the_posterior_atom_on_the_three_atom_testbed():
    prior, lik = three_atoms()
    run = daps(prior, lik, n_particles=256, n_steps=50, lr=3e-3, lr_min_ratio=1.0, seed=0, progress=False)
    rep = fsdiag.diagnose(run, prior, lik)
    assert rep.atom_mass[0] > 0.98 and rep.spread is not None      # measured 0.997 at 1024 particles
    x0 = fsdiag.evaluate(run.info["x0"], prior, lik)
    assert x0.atom_mass[0] > 0.98


def test_deterministic():
    prior, lik = three_atoms()
    a, b = (daps(prior, lik, n_particles=8, n_steps=5, n_langevin_steps=3, seed=1, progress=False) for _ in range(2))
    assert torch.equal(a.samples, b.samples) and torch.equal(a.info["x0"], b.info["x0"])


@pytest.mark.parametrize("kw,exc,name", [
    ({"n_ode_steps": 0}, ValueError, "n_ode_steps"), ({"n_langevin_steps": -1}, ValueError, "n_langevin_steps"),
    ({"lr": 0.0}, ValueError, "lr"), ({"lr": "big"}, TypeError, "lr"), ({"lr_min_ratio": 2.0}, ValueError, "lr_min_ratio"),
    ({"r_scale": -1.0}, ValueError, "r_scale"), ({"rho": 0.5}, ValueError, "rho"),
    ({"n_particles": 0}, ValueError, "n_particles"), ({"schedule": fsdiag.DDPMSchedule()}, TypeError, "schedule"),
    ({"seed": None}, ValueError, "seed")])
def test_bad_arguments_name_the_argument(kw, exc, name):
    prior, lik = three_atoms()
    with pytest.raises(exc, match=name):
        daps(prior, lik, **{"n_particles": 2, "n_steps": 2, "progress": False, **kw})
