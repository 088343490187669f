"""RED-diff, DDNM, PnP-DM and LGD-MC against closed forms on a Gaussian prior with a linear operator
(the exact posterior and each chain's own linear-Gaussian recursion), their limits, and a smoke run on
the three-atom testbed."""
import math

import pytest
import torch

import fsdiag
from fsdiag.methods import make_method
from fsdiag.problems import Problem
from fsdiag.sampling import ddnm, lgd_mc, pnpdm, reddiff
from fsdiag.sampling.ddnm import range_null_split
from fsdiag.sampling.lgd import lgd_guidance
from fsdiag.sampling.pnpdm import likelihood_step, prior_step
from fsdiag.sampling.steps import bridge
from fsdiag.testbeds import GaussianPrior, three_atoms

F64 = torch.float64
I3 = torch.eye(3, dtype=F64)
MU0 = torch.tensor([0.5, -0.3, 0.2], dtype=F64)
_L = torch.tensor([[1.0, 0, 0], [0.6, 0.8, 0], [-0.4, 0.5, 0.7]], dtype=F64)
S = _L @ _L.T                                                    # correlated prior covariance
A = torch.tensor([[1.0, 0.5, 0.0], [0.0, 1.0, -1.0]], dtype=F64)  # R^3 -> R^2: a one-dimensional null space
Y = torch.tensor([0.7, -0.4], dtype=F64)
VP = fsdiag.VPSchedule()


@pytest.fixture(autouse=True)
def one_thread():
    """These problems are tiny (d = 3): extra intra-op threads only add synchronisation (fsdiag._threads),
    which the registered samplers avoid themselves but the step functions called directly here do not."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def gaussian_problem(noise_std, cov=S):
    return GaussianPrior(MU0, cov), fsdiag.GaussianLikelihood(fsdiag.forward.Affine(A), Y, noise_std)


def tweedie_gain(abar, cov=S):
    """m(x_t) = mu0 + K (x_t - a mu0) for the prior N(mu0, cov): K = a cov (abar cov + (1 - abar) I)^-1."""
    a = math.sqrt(abar)
    return a * cov @ torch.linalg.inv(abar * cov + (1 - abar) * I3)


def assert_moments(x, mean, cov, k=5.0, cov_rtol=0.0):
    """Sample mean and covariance within k standard errors (Gaussian formulas) of the given ones."""
    n = x.shape[0]
    se_mean = (cov.diagonal() / n).sqrt()
    assert bool(((x.mean(0) - mean).abs() <= k * se_mean + 1e-12).all()), (x.mean(0), mean)
    d = cov.diagonal()
    se_cov = ((d[:, None] * d[None, :] + cov ** 2) / n).sqrt()
    err = (torch.cov(x.T) - cov).abs()
    assert bool((err <= k * se_cov + cov_rtol * d.max() + 1e-12).all()), (torch.cov(x.T), cov)


# ------------------------------------------------------------------ DDNM
def ddnm_moments(problem, cov, n_steps, noise_aware, t_min=1e-2, eta=None):
    """Mean and covariance of DDNM's output, propagated exactly through its linear-Gaussian chain."""
    V, s, y_bar = range_null_split(problem)
    abars = [VP.alpha_bar(float(t)) for t in VP.time_grid(n_steps, t_min, 1.0)] + [1.0]
    mean, C = torch.zeros(3, dtype=F64), I3.clone()
    for k in range(n_steps + 1):
        ab = abars[k]
        K = tweedie_gain(ab, cov)
        c_x, c_0, v = bridge(ab, abars[k + 1])
        lam = (math.sqrt(v) * s / c_0).clamp(max=1.0) if noise_aware else torch.ones_like(s)
        R = I3 - V @ torch.diag(lam) @ V.T                       # x0_hat = R m + V diag(lam) y_bar
        F = c_x * I3 + c_0 * R @ K
        g = c_0 * (R @ (MU0 - math.sqrt(ab) * K @ MU0) + V @ (lam * y_bar))
        Q = v * I3
        if eta is not None and k < n_steps:      # x_s = a_s x0_hat + b_s (eta z + sqrt(1 - eta^2) eps_hat)
            a_s, b_s, a_t, b_t = math.sqrt(abars[k + 1]), math.sqrt(1 - abars[k + 1]), math.sqrt(ab), math.sqrt(1 - ab)
            keep = b_s * math.sqrt(1 - eta ** 2) / b_t          # eps_hat = (x - a_t m) / b_t
            F = a_s * R @ K + keep * (I3 - a_t * K)
            g = a_s * (R @ (MU0 - a_t * K @ MU0) + V @ (lam * y_bar)) - keep * a_t * (MU0 - a_t * K @ MU0)
            Q = (b_s * eta) ** 2 * I3
        if noise_aware:
            Q = Q + V @ torch.diag((v - (c_0 * lam / s) ** 2).clamp(min=0) - v) @ V.T
        mean, C = F @ mean + g, F @ C @ F.T + Q
    return mean, C


@pytest.mark.parametrize("noise_aware, eta", [(False, None), (True, None), (False, 0.85)])
def test_ddnm_follows_its_linear_gaussian_chain(noise_aware, eta):
    prior, lik = gaussian_problem(1e-3 if not noise_aware else 0.3)
    run = ddnm(prior, lik, n_particles=20000, n_steps=100, noise_aware=noise_aware, eta=eta, seed=1, progress=False)
    mean, C = ddnm_moments(Problem.build(prior, lik), S, 100, noise_aware, eta=eta)
    assert_moments(run.samples, mean, C)
    assert run.times[-1] == 0.0 and torch.equal(run.trajectory[-1], run.samples)


def test_ddnm_range_space_is_y_and_null_space_is_the_prior_conditional_when_they_are_independent():
    """A x0_hat = y exactly. With a prior whose range and null parts of A are independent, the null part
    follows the prior's own reverse chain and, as the steps grow, reaches the exact conditional (its
    marginal); with the correlated S it does not: the gap stays at any step count."""
    V_null = torch.linalg.svd(A, full_matrices=True)[2][-1]      # unit null vector
    P_null = torch.outer(V_null, V_null)
    cov = (I3 - P_null) @ S @ (I3 - P_null) + 0.8 * P_null       # independent range and null parts
    prior, lik = gaussian_problem(1e-6, cov)
    run = ddnm(prior, lik, n_particles=20000, n_steps=100, noise_aware=False, seed=2, progress=False)
    torch.testing.assert_close(run.samples @ A.T, Y.expand(20000, 2), atol=1e-9, rtol=0)
    problem = Problem.build(prior, lik)
    mean, C = ddnm_moments(problem, cov, 100, False)
    assert_moments(run.samples, mean, C)
    post = prior.condition(lik)
    exact_mean, exact_var = float(post.mean() @ V_null), float(V_null @ post.cov() @ V_null)
    gaps = []
    for n_steps in (100, 3000):
        mean, C = ddnm_moments(problem, cov, n_steps, False)
        gaps.append((abs(float(mean @ V_null) - exact_mean), abs(float(V_null @ C @ V_null) / exact_var - 1)))
    assert gaps[1][0] < 1e-3 and gaps[1][1] < 0.01 and gaps[1][1] < gaps[0][1] / 5, gaps
    prior_c, lik_c = gaussian_problem(1e-6)                       # the correlated prior: a lasting bias
    mean_c, _ = ddnm_moments(Problem.build(prior_c, lik_c), S, 3000, False)
    assert abs(float((mean_c - prior_c.condition(lik_c).mean()) @ V_null)) > 0.03


def test_ddnm_eta_step_by_hand():
    """n_steps = 1 with the released code's step: x_1 ~ N(0, I); x0_hat = A^+ y + (I - A^+ A) m(x_1);
    x_tmin = a x0_hat + b (eta z + sqrt(1 - eta^2) (x_1 - a_1 m(x_1)) / b_1); output its x0_hat."""
    prior, lik = gaussian_problem(0.2)
    run = ddnm(prior, lik, n_particles=4, n_steps=1, t_min=0.05, eta=0.85, noise_aware=False, seed=3, progress=False)
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(4, 3, generator=gen, dtype=F64)
    Ap = torch.linalg.pinv(A)
    P = I3 - Ap @ A
    ab1, ab = VP.alpha_bar(1.0), VP.alpha_bar(0.05)
    m = prior.moments(x, ab1).mean
    x0_hat = Y @ Ap.T + m @ P.T
    eps_hat = (x - math.sqrt(ab1) * m) / math.sqrt(1 - ab1)
    z = torch.randn(4, 3, generator=gen, dtype=F64)
    x = math.sqrt(ab) * x0_hat + math.sqrt(1 - ab) * (0.85 * z + math.sqrt(1 - 0.85 ** 2) * eps_hat)
    torch.testing.assert_close(run.samples, Y @ Ap.T + prior.moments(x, ab).mean @ P.T)


def test_ddnm_argument_checks():
    prior, lik = gaussian_problem(0.1)
    with pytest.raises(ValueError, match="eta"):
        ddnm(prior, lik, n_particles=2, n_steps=2, eta=0.5, progress=False)     # eta needs noise_aware=False
    with pytest.raises(ValueError, match="eta"):
        ddnm(prior, lik, n_particles=2, n_steps=2, eta=1.5, noise_aware=False, progress=False)
    run = ddnm(prior, lik, n_particles=4, n_steps=3, eta=0.85, noise_aware=False, progress=False)
    torch.testing.assert_close(run.samples @ A.T, Y.expand(4, 2))
    nonlinear = fsdiag.GaussianLikelihood(fsdiag.forward.Radial(), torch.tensor([1.0], dtype=F64), 0.1)
    with pytest.raises(TypeError, match="lik"):
        ddnm(prior, nonlinear, n_particles=2, n_steps=2, progress=False)


# ------------------------------------------------------------------ RED-diff
def test_reddiff_sgd_follows_its_linear_gaussian_recursion():
    """With plain SGD each step is affine in mu plus Gaussian noise (the eps draw through m(x_t))."""
    sd, lam, lr, n_steps = 0.3, 0.25, 0.02, 300
    prior, lik = gaussian_problem(sd)
    run = reddiff(prior, lik, n_particles=20000, n_steps=n_steps, optimizer="sgd", lr=lr, lam=lam, seed=3,
                  progress=False)
    H = A.T @ A / sd ** 2
    mean, C = torch.linalg.pinv(A) @ Y, torch.zeros(3, 3, dtype=F64)     # the paper's start A^+ y
    for t in VP.time_grid(n_steps, 1e-2, 1.0)[1:]:
        ab = VP.alpha_bar(float(t))
        K = tweedie_gain(ab)
        F = I3 - lr * (lam * (I3 - math.sqrt(ab) * K) + H)
        g = lr * (lam * (I3 - math.sqrt(ab) * K) @ MU0 + A.T @ Y / sd ** 2)
        G = lr * lam * math.sqrt(1 - ab) * K
        mean, C = F @ mean + g, F @ C @ F.T + G @ G.T
    assert_moments(run.samples, mean, C)


def test_reddiff_adam_reaches_its_fixed_point_at_one_level():
    """At one level t held fixed, E[gradient] = lam (I + SNR_t S)^-1 (mu - mu0) - A^T Sigma^-1 (y - A mu)
    vanishes at the MAP point under N(mu0, (I + SNR_t S) / lam) (fsdiag.sampling.reddiff)."""
    sd, lam, t = 0.3, 0.25, 0.6
    prior, lik = gaussian_problem(sd)
    run = reddiff(prior, lik, n_particles=1000, n_steps=3000, t_min=t, t_max=t + 1e-9, lr=0.01, lam=lam,
                  sigma_x0=0.05, seed=4, progress=False)
    ab = VP.alpha_bar(t)
    W = lam * torch.linalg.inv(I3 + ab / (1 - ab) * S)
    H = A.T @ A / sd ** 2
    mu_star = torch.linalg.solve(W + H, W @ MU0 + A.T @ Y / sd ** 2)
    torch.testing.assert_close(run.samples.mean(0), mu_star, atol=3e-3, rtol=0)
    map_point = prior.condition(lik).mean()                                 # lam = 1, SNR -> 0 would give this
    assert float((mu_star - map_point).abs().max()) > 0.02


def test_reddiff_draws_differ_per_particle_and_arguments_are_named():
    prior, lik = gaussian_problem(0.3)
    x = reddiff(prior, lik, n_particles=3, n_steps=5, progress=False).samples
    assert not torch.equal(x[0], x[1])
    for bad, exc in (({"optimizer": "lbfgs"}, ValueError), ({"sigma_x0": -1.0}, ValueError),
                     ({"betas": (0.9, 1.0)}, ValueError), ({"init": "noise"}, ValueError), ({"lam": 0}, ValueError)):
        with pytest.raises(exc, match=next(iter(bad))):
            reddiff(prior, lik, n_particles=2, n_steps=2, progress=False, **bad)


# ------------------------------------------------------------------ PnP-DM
def rho_marginal(noise_std, rho):
    """The x-marginal of PnP-DM's target: the posterior of N(mu0, S) under N(y; A x, Sigma_n + rho^2 A A^T)."""
    Se = noise_std ** 2 * torch.eye(2, dtype=F64) + rho ** 2 * A @ A.T
    Sinv = torch.linalg.inv(S)
    C = torch.linalg.inv(Sinv + A.T @ torch.linalg.solve(Se, A))
    return C @ (Sinv @ MU0 + A.T @ torch.linalg.solve(Se, Y)), C


def test_pnpdm_likelihood_step_is_the_exact_gaussian_conditional():
    gen = torch.Generator().manual_seed(5)
    sd, rho = 0.3, 0.5
    x = torch.tensor([0.3, 0.9, -0.5], dtype=F64)
    z = likelihood_step(x.expand(20000, 3), rho, A, Y, torch.full((2,), sd ** 2, dtype=F64), gen)
    C = torch.linalg.inv(A.T @ A / sd ** 2 + I3 / rho ** 2)
    assert_moments(z, C @ (A.T @ Y / sd ** 2 + x / rho ** 2), C)


def test_pnpdm_prior_step_converges_to_the_denoising_posterior():
    """p(x | z) for N(mu0, S) at noise rho: mean mu0 + G (z - mu0), covariance S - G S, G = S (S + rho^2 I)^-1.
    The ancestral steps drop c_0^2 Cov(x0 | x_t) of variance per step: the deficit shrinks with the steps."""
    prior = GaussianPrior(MU0, S)
    rho, z = 0.5, torch.tensor([0.3, 0.9, -0.5], dtype=F64)
    G = S @ torch.linalg.inv(S + rho ** 2 * I3)
    mean, C = MU0 + G @ (z - MU0), S - G @ S
    errs = []
    for n in (10, 40, 160):
        x = prior_step(prior, z.expand(20000, 3), rho, n, torch.Generator().manual_seed(6))
        assert_moments(x, mean, C, cov_rtol=1.0)                             # means within MC error
        errs.append(float(((torch.cov(x.T) - C).diagonal() / C.diagonal()).abs().max()))
    assert errs[2] < errs[1] / 2 and errs[1] < errs[0] / 2 and errs[2] < 0.1, errs


def test_pnpdm_gibbs_chain_targets_the_rho_marginal_and_it_tends_to_the_posterior():
    """Means within MC error of the rho_min-marginal; its covariance up to the prior step's variance deficit,
    which shrinks as the prior step's steps grow (-11% at 40, -2.5% at 160 with 10^4 particles); the
    rho-marginal itself tends to the exact posterior as rho -> 0."""
    sd, t_min = 0.3, 0.1
    prior, lik = gaussian_problem(sd)
    ab = VP.alpha_bar(t_min)
    rho_min = math.sqrt((1 - ab) / ab)
    mean, C = rho_marginal(sd, rho_min)
    errs = []
    for n_prior_steps in (30, 120):
        run = pnpdm(prior, lik, n_particles=4000, n_steps=30, t_min=t_min, t_max=0.5, decay=0.8,
                    n_prior_steps=n_prior_steps, seed=7, progress=False)
        assert run.info["rho"][-1] == pytest.approx(rho_min) and run.info["rho"][0] > 3
        assert_moments(run.samples, mean, C, cov_rtol=0.2)
        errs.append(float(((torch.cov(run.samples.T) - C).diagonal() / C.diagonal()).abs().max()))
    assert errs[1] < 0.07 and errs[1] < errs[0] / 2, errs
    post = prior.condition(lik)
    m_small, C_small = rho_marginal(sd, 1e-4)
    torch.testing.assert_close(m_small, post.mean())
    torch.testing.assert_close(C_small, post.cov())


def test_pnpdm_paper_annealing_and_argument_checks():
    """rho_k = max(rho_min, rho_start decay^k) with the paper's rho_start = 10, decay = 0.9, rho_min = 0.3."""
    prior, lik = three_atoms()
    run = pnpdm(prior, lik, n_particles=64, n_steps=40, rho_start=10.0, rho_min=0.3, n_prior_steps=10, seed=1,
                progress=False)
    assert run.info["rho"] == pytest.approx([max(0.3, 10 * 0.9 ** k) for k in range(40)])
    assert float(((run.samples + 1.8).abs() < 0.5).double().mean()) > 0.9
    for bad in ({"decay": 1.5}, {"rho_min": 200.0}, {"n_prior_steps": 0}, {"rho_edm": 0.5}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            pnpdm(prior, lik, n_particles=2, n_steps=2, progress=False, **bad)
    nonlinear = fsdiag.GaussianLikelihood(fsdiag.forward.Radial(), torch.tensor([1.0], dtype=F64), 0.1)
    with pytest.raises(TypeError, match="lik"):
        pnpdm(GaussianPrior(MU0, S), nonlinear, n_particles=2, n_steps=2, progress=False)


# ------------------------------------------------------------------ LGD-MC
def test_lgd_mc_is_dps_for_one_draw_and_no_spread():
    prior, lik = gaussian_problem(0.3)
    problem = Problem.build(prior, lik)
    x = torch.randn(6, 3, generator=torch.Generator().manual_seed(8), dtype=F64)
    dps = make_method("sigma_dps")(problem, x, 0.4)
    g0 = lgd_guidance(prior, lik, x, 0.4, n_mc=1, r_scale=0.0, generator=torch.Generator().manual_seed(9))
    torch.testing.assert_close(g0.likelihood_score, dps.likelihood_score)
    torch.testing.assert_close(g0.tweedie, dps.tweedie)
    g = lgd_guidance(prior, lik, x, 0.4, n_mc=1, r_scale=1e-4, generator=torch.Generator().manual_seed(9))
    torch.testing.assert_close(g.likelihood_score, dps.likelihood_score, atol=1e-2, rtol=1e-2)
    assert not torch.equal(g.likelihood_score, dps.likelihood_score)


def test_lgd_mc_estimate_converges_to_the_gaussian_expectation_pigdm():
    """E over x0 ~ N(m, r_t^2 I) of p(y | x0) = N(y; A m, Sigma_n + r_t^2 A A^T): its score is ΠGDM's."""
    prior, lik = gaussian_problem(0.3)
    problem = Problem.build(prior, lik)
    x = torch.tensor([[0.4, -0.2, 0.9]], dtype=F64)
    abar = 0.5
    exact = make_method("pigdm", r2="song")(problem, x, abar).likelihood_score[0]
    errs = []
    for n_mc in (10, 100_000):
        g = torch.stack([lgd_guidance(prior, lik, x, abar, n_mc=n_mc, generator=torch.Generator().manual_seed(s))
                         .likelihood_score[0] for s in range(8)])
        errs.append(float((g - exact).norm(dim=1).mean()))
    assert errs[1] < 0.03 * exact.norm() and errs[1] < errs[0] / 10, (errs, exact)


def test_lgd_mc_without_spread_is_the_sigma_dps_run():
    prior, lik = gaussian_problem(0.3)
    kw = {"n_particles": 32, "n_steps": 20, "seed": 11, "progress": False}
    run = lgd_mc(prior, lik, r_scale=0.0, **kw)
    torch.testing.assert_close(run.samples, fsdiag.sample(prior, lik, method="sigma_dps", **kw).samples)
    assert not torch.equal(run.samples, lgd_mc(prior, lik, **kw).samples)


# ------------------------------------------------------------------ the three-atom testbed
@pytest.mark.parametrize("name, kw", [
    ("reddiff", {"n_steps": 200, "lr": 0.05}),
    ("ddnm", {"n_steps": 100}),
    ("pnpdm", {"n_steps": 100, "n_prior_steps": 20}),
    ("lgd_mc", {"n_steps": 200}),
])
def test_new_samplers_find_the_observed_atom_of_three_atoms(name, kw):
    """y = -1.8 sits on the atom -1.8 with noise 0.3: the exact posterior puts ~all its mass there."""
    prior, lik = three_atoms()
    run = fsdiag.SAMPLERS[name](prior, lik, n_particles=256, seed=0, progress=False, **kw)
    x = run.samples[:, 0]
    assert bool(torch.isfinite(x).all())
    assert float(((x + 1.8).abs() < 0.5).double().mean()) > 0.9, x
