"""original_dps: DPS as in its DDPM code, as a registered approximation; checked against the published
update computed with autograd, step by step through fsdiag.sample."""
import math

import pytest
import torch

import fsdiag
from fsdiag import Problem
from fsdiag.methods import METHODS
from fsdiag.original_dps import OriginalDPS
from fsdiag.testbeds import three_atoms


def tiny_problem():
    gen = torch.Generator().manual_seed(0)
    prior = fsdiag.EmpiricalPrior(torch.randn(7, 2, generator=gen, dtype=torch.float64), device="cpu")
    lik = fsdiag.GaussianLikelihood(fsdiag.forward.Affine(torch.tensor([[1.0, -0.5]], dtype=torch.float64), [0.2]),
                                    [0.4], 0.3)
    return prior, lik


def test_registered_and_exported():
    assert METHODS["original_dps"] is OriginalDPS and fsdiag.OriginalDPS is OriginalDPS
    assert OriginalDPS().params["zeta"] == 1.0 and OriginalDPS().params["n_steps"] == 1000


def test_register_overwrites_the_name_silently():
    class Tutorial(OriginalDPS):          # chapter 8 registers its own class under the same name
        name = "original_dps"
    try:
        assert fsdiag.register(Tutorial) is Tutorial and METHODS["original_dps"] is Tutorial
    finally:
        fsdiag.register(OriginalDPS)
    assert METHODS["original_dps"] is OriginalDPS


@pytest.mark.parametrize("n_steps", [4, 2])
def test_sample_reproduces_the_published_ddpm_update_by_autograd(n_steps):
    """x_{k-1} = (x_k + beta_k s(x_k)) / sqrt(alpha_k) + sigma_k z - zeta grad_{x_k} ||y - A(m(x_k))||,
    the gradient by autograd through the denoiser, against fsdiag.sample with the same draws."""
    prior, lik = tiny_problem()
    ddpm, zeta = fsdiag.DDPMSchedule(n_timesteps=4, beta_start=0.05, beta_end=0.3), 0.7
    run = fsdiag.sample(prior, lik, method=OriginalDPS(zeta=zeta, n_steps=n_steps, schedule=ddpm), schedule=ddpm,
                        n_steps=n_steps, n_particles=5, seed=11, progress=False)
    gen = torch.Generator().manual_seed(11)
    x = torch.randn(5, 2, generator=gen, dtype=torch.float64)
    grid = ddpm.time_grid(n_steps)
    for k in range(n_steps):
        abar, abar_next = ddpm.alpha_bar(float(grid[k])), ddpm.alpha_bar(float(grid[k + 1]))
        alpha = abar / abar_next
        beta, sigma = 1 - alpha, math.sqrt((1 - abar_next) / (1 - abar) * (1 - alpha))
        xg = x.clone().requires_grad_(True)
        grad, = torch.autograd.grad(lik.residual(prior.denoise(xg, abar)).norm(dim=1).sum(), xg)
        z = torch.randn(x.shape, generator=gen, dtype=torch.float64)
        x = (x + beta * prior.score(x, abar)) / math.sqrt(alpha) + sigma * z - zeta * grad
    torch.testing.assert_close(run.samples, x, rtol=1e-10, atol=1e-10)


def test_noise_levels_off_the_ddpm_grid_use_the_step_that_contains_them():
    approx = OriginalDPS(n_steps=250)
    ddpm = approx.schedule
    on = ddpm.alpha_bar(400 / 1000)                       # node 100 of 250: step 400 -> 396
    alpha, beta = approx.step(on)
    assert alpha == pytest.approx(ddpm.alpha_bar(0.4) / ddpm.alpha_bar(0.396), rel=1e-12)
    assert beta == pytest.approx(1 - alpha, rel=1e-9)
    between = math.sqrt(ddpm.alpha_bar(0.4) * ddpm.alpha_bar(0.396))
    assert approx.step(between) == pytest.approx((alpha, beta), rel=1e-12)
    assert approx.step(1 - 1e-12) == approx.step(ddpm.alpha_bar(0.004))             # cleaner than step 1
    assert approx.step(1e-30) == approx.step(ddpm.alpha_bar(1.0))                    # noisier than step T


@pytest.mark.parametrize("n_steps", [3, 7, 1500])
def test_step_counts_that_do_not_divide_the_ddpm_timesteps_interpolate_log_abar(n_steps):
    """A VP run of any length: node j sits at timestep j T / n_steps, where DDPMSchedule.alpha_bar
    interpolates log abar; the step that leaves node j has alpha = abar(node j) / abar(node j - 1)."""
    approx = OriginalDPS(n_steps=n_steps)
    ddpm = approx.schedule
    for j in (1, n_steps // 2, n_steps):
        ab, ab_prev = ddpm.alpha_bar(j / n_steps), ddpm.alpha_bar((j - 1) / n_steps)
        alpha, beta = approx.step(ab)
        assert alpha == pytest.approx(ab / ab_prev, rel=1e-9)
        assert beta == pytest.approx(1 - ab / ab_prev, rel=1e-6)
        # slightly less noise than node j: still inside the step that leaves node j; node j - 1 is not
        assert approx.step(ab ** (1 - 1e-3)) == pytest.approx((alpha, beta), rel=1e-12)
        if j > 1:
            assert approx.step(ab_prev)[0] != pytest.approx(alpha, rel=1e-6)
    with pytest.raises(ValueError, match="n_steps"):          # a DDPM run still needs a divisor
        prior, lik = three_atoms()
        fsdiag.sample(prior, lik, method="original_dps", schedule=ddpm, n_steps=n_steps, n_particles=2,
                      progress=False)


def test_score_against_hand_formula_and_vp_run():
    prior, lik = tiny_problem()
    problem = Problem.build(prior, lik)
    approx = OriginalDPS(zeta=0.5)
    x = torch.randn(6, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    abar = approx.schedule.alpha_bar(0.3)
    alpha, beta = approx.step(abar)
    xg = x.clone().requires_grad_(True)
    grad, = torch.autograd.grad(lik.residual(prior.denoise(xg, abar)).norm(dim=1).sum(), xg)
    torch.testing.assert_close(approx(problem, x, abar).likelihood_score, -(0.5 * math.sqrt(alpha) / beta) * grad)
    p3, l3 = three_atoms()
    run = fsdiag.sample(p3, l3, method="original_dps", zeta=0.5, n_particles=128, n_steps=100, seed=0, progress=False)
    assert fsdiag.evaluate(run.samples, p3, l3, t_final=run.t_final).atom_mass[0] > 0.99


def test_deterministic():
    prior, lik = three_atoms()
    a, b = (fsdiag.sample(prior, lik, method="original_dps", n_particles=16, n_steps=20, seed=5, progress=False)
            for _ in range(2))
    assert torch.equal(a.samples, b.samples)


@pytest.mark.parametrize("kw,exc,name", [
    ({"zeta": -1.0}, ValueError, "zeta"), ({"zeta": "1"}, TypeError, "zeta"), ({"zeta": True}, TypeError, "zeta"),
    ({"n_steps": -3}, ValueError, "n_steps"), ({"n_steps": 0}, ValueError, "n_steps"),
    ({"n_steps": 2.0}, TypeError, "n_steps"), ({"schedule": fsdiag.VPSchedule()}, TypeError, "schedule")])
def test_bad_arguments_name_the_argument(kw, exc, name):
    with pytest.raises(exc, match=name):
        OriginalDPS(**kw)
