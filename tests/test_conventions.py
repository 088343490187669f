"""The conventions found in the wild, each against its closed form: PiGDM's r_t^2 ((1 - abar)/abar in
the paper's code, 1 - abar in Song et al.), DPS's scalings (Sigma_n^-1, zeta/||r||, zeta per DDPM step),
one DDPM ancestral step and one VP Euler-Maruyama step (mean and variance of x_s given x_t), and
original_dps taking the run's step count. Ends with the measurement that chapter 11 reports."""
import math

import pytest
import torch

import fsdiag
from fsdiag import Problem
from fsdiag.methods import make_method
from fsdiag.original_dps import OriginalDPS
from fsdiag.testbeds import GaussianPrior, three_atoms

F64 = torch.float64


def gaussian_case():
    """N(mu, S) in 2-D, y = A x_0 + noise with a 1 x 2 matrix A."""
    mu = torch.tensor([0.3, -0.2], dtype=F64)
    S = torch.tensor([[1.5, 0.4], [0.4, 0.7]], dtype=F64)
    A = torch.tensor([[1.0, -2.0]], dtype=F64)
    lik = fsdiag.GaussianLikelihood(fsdiag.forward.Affine(A, [0.0]), [0.8], 0.25)
    return GaussianPrior(mu, S), lik, mu, S, A


def gaussian_tweedie(x, abar, mu, S):
    """m(x_t) = mu + a S (a^2 S + b^2 I)^-1 (x_t - a mu); J = dm/dx_t = a S (a^2 S + b^2 I)^-1."""
    a, b2 = math.sqrt(abar), 1 - abar
    J = a * S @ torch.linalg.inv(abar * S + b2 * torch.eye(S.shape[0], dtype=F64))
    return mu + (x - a * mu) @ J.T, J


@pytest.mark.parametrize("r2", ["paper", "song"])
@pytest.mark.parametrize("abar", [0.9, 0.3, 0.02])
def test_pigdm_score_for_a_gaussian_prior_against_the_hand_formula(r2, abar):
    """J^T A^T (r_t^2 A A^T + Sigma_n)^-1 (y - A m) with r_t^2 = (1 - abar)/abar or 1 - abar."""
    prior, lik, mu, S, A = gaussian_case()
    x = torch.tensor([[0.1, 0.5], [-1.0, 2.0], [3.0, -0.4]], dtype=F64)
    m, J = gaussian_tweedie(x, abar, mu, S)
    rt2 = (1 - abar) / abar if r2 == "paper" else 1 - abar
    u = (0.8 - m @ A.T) / (rt2 * float(A @ A.T) + 0.25 ** 2)            # (B, 1)
    expected = (u @ A) @ J                                                # J^T A^T u, J symmetric
    got = make_method("pigdm", r2=r2)(Problem.build(prior, lik), x, abar).likelihood_score
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("abar", [0.8, 0.25])
def test_song_r2_is_exact_for_a_unit_variance_gaussian_prior_and_the_paper_r2_is_not(abar):
    """For x_0 ~ N(0, I): p(x_0 | x_t) = N(a x_t, (1 - abar) I), so r_t^2 = 1 - abar gives the exact
    grad log p(y | x_t), p(y | x_t) = N(y; a A x_t, (1 - abar) A A^T + Sigma_n), here by autograd."""
    A = torch.tensor([[1.0, 0.5], [0.0, 2.0]], dtype=F64)
    y, sd = torch.tensor([0.4, -1.0], dtype=F64), 0.3
    prior = GaussianPrior(torch.zeros(2, dtype=F64), 1.0)
    problem = Problem.build(prior, fsdiag.GaussianLikelihood(fsdiag.forward.Affine(A, [0.0, 0.0]), y, sd))
    x = torch.tensor([[0.2, -0.7], [1.5, 0.3]], dtype=F64, requires_grad=True)
    cov = (1 - abar) * A @ A.T + sd ** 2 * torch.eye(2, dtype=F64)
    logp = torch.distributions.MultivariateNormal(math.sqrt(abar) * x @ A.T, cov).log_prob(y).sum()
    exact, = torch.autograd.grad(logp, x)
    song = make_method("pigdm", r2="song")(problem, x.detach(), abar).likelihood_score
    paper = make_method("pigdm", r2="paper")(problem, x.detach(), abar).likelihood_score
    torch.testing.assert_close(song, exact, rtol=1e-10, atol=1e-12)
    assert (paper - exact).abs().max() > 1e-3 * exact.abs().max()       # (1 - abar)/abar != 1 - abar


# ---------------------------------------------------------------- two atoms in 1-D, by hand
ATOMS = (-1.0, 1.5)
A1, Y, SD = 2.0, 0.7, 0.4          # y = 2 x_0 + noise


def two_atoms():
    prior = fsdiag.EmpiricalPrior(torch.tensor([[ATOMS[0]], [ATOMS[1]]], dtype=F64), device="cpu")
    lik = fsdiag.GaussianLikelihood(fsdiag.forward.Affine(torch.tensor([[A1]], dtype=F64), [0.0]), [Y], SD)
    return prior, lik


def hand_moments(x: float, abar: float):
    """w_i = softmax(-(x - a x_i)^2 / 2b^2), m = sum w_i x_i, J = (a/b^2) (sum w_i x_i^2 - m^2)."""
    a, b2 = math.sqrt(abar), 1 - abar
    logits = [-(x - a * xi) ** 2 / (2 * b2) for xi in ATOMS]
    top = max(logits)
    w = [math.exp(v - top) for v in logits]
    w = [v / sum(w) for v in w]
    m = sum(wi * xi for wi, xi in zip(w, ATOMS))
    return m, (a / b2) * (sum(wi * xi * xi for wi, xi in zip(w, ATOMS)) - m * m)


XS = (-0.6, 0.1, 0.9)


@pytest.mark.parametrize("abar", [0.7, 0.2])
def test_two_atom_scores_of_every_convention_against_hand_formulas(abar):
    prior, lik = two_atoms()
    problem = Problem.build(prior, lik)
    x = torch.tensor([[v] for v in XS], dtype=F64)
    zeta, zeta_orig = 0.3, 0.8
    orig = OriginalDPS(zeta=zeta_orig, n_steps=100)
    alpha_k, beta_k = orig.step(abar)
    expected = {k: [] for k in ("paper", "song", "sigma", "zeta", "orig")}
    for v in XS:
        m, J = hand_moments(v, abar)
        r = Y - A1 * m
        expected["paper"].append(J * A1 * r / ((1 - abar) / abar * A1 ** 2 + SD ** 2))
        expected["song"].append(J * A1 * r / ((1 - abar) * A1 ** 2 + SD ** 2))
        expected["sigma"].append(J * A1 * r / SD ** 2)                              # Sigma_n^-1 scaling
        expected["zeta"].append(2 * zeta / abs(r) * J * A1 * r / SD ** 2)           # (2 zeta/||r||) x sigma
        expected["orig"].append(zeta_orig * math.sqrt(alpha_k) / beta_k * J * A1 * math.copysign(1, r))
    got = {"paper": make_method("pigdm", r2="paper"), "song": make_method("pigdm", r2="song"),
           "sigma": make_method("sigma_dps"), "zeta": make_method("zeta_dps", zeta=zeta), "orig": orig}
    for key, approx in got.items():
        score = approx(problem, x, abar).likelihood_score[:, 0]
        torch.testing.assert_close(score, torch.tensor(expected[key], dtype=F64), rtol=1e-9, atol=1e-12, msg=key)
    # zeta/||r|| is a per-particle rescaling of the Sigma_n^-1 score: its direction never changes.
    ratio = torch.tensor(expected["zeta"]) / torch.tensor(expected["sigma"])
    assert bool((ratio > 0).all()) and float(ratio.max() / ratio.min()) > 1.5   # ... but its size does


def draws(seed, n_particles, n_steps):
    """The sampler's draws: x at t_max, then one z per step, from one generator."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n_particles, 1, generator=gen, dtype=F64)
    return x, [torch.randn(n_particles, 1, generator=gen, dtype=F64) for _ in range(n_steps)]


@pytest.mark.parametrize("method,params", [("sigma_dps", {}), ("zeta_dps", {"zeta": 0.3})])
def test_one_euler_maruyama_step_of_sigma_and_zeta_dps_by_hand(method, params):
    """x_s = x_t + (beta x_t / 2 + beta (prior score + likelihood score)) dt + sqrt(beta dt) z."""
    prior, lik = two_atoms()
    run = fsdiag.sample(prior, lik, method=method, n_particles=3, n_steps=1, t_min=0.6, t_max=0.9,
                        seed=4, record=0, progress=False, **params)
    x, (z,) = draws(4, 3, 1)
    sch = fsdiag.VPSchedule()
    abar, beta, dt = sch.alpha_bar(0.9), sch.beta(0.9), 0.9 - 0.6
    expected = []
    for v, zv in zip(x[:, 0].tolist(), z[:, 0].tolist()):
        m, J = hand_moments(v, abar)
        r = Y - A1 * m
        lik_score = J * A1 * r / SD ** 2 * (2 * params["zeta"] / abs(r) if params else 1.0)
        score = (math.sqrt(abar) * m - v) / (1 - abar) + lik_score
        expected.append(v + (beta * v / 2 + beta * score) * dt + math.sqrt(beta * dt) * zv)
    torch.testing.assert_close(run.samples[:, 0], torch.tensor(expected, dtype=F64), rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------- one step of each discretisation
C = 0.7   # one atom: x_t | x_0 = C is Gaussian and the exact reverse transition is the forward bridge


def bridge(x, abar_t, abar_s):
    """Mean and variance of the exact q(x_s | x_t, x_0 = C)."""
    alpha = abar_t / abar_s
    mean = (math.sqrt(alpha) * (1 - abar_s) * x + math.sqrt(abar_s) * (1 - alpha) * C) / (1 - abar_t)
    return mean, (1 - alpha) * (1 - abar_s) / (1 - abar_t)


def one_atom_runs(schedule, n_steps, **kw):
    prior = fsdiag.EmpiricalPrior(torch.tensor([[C]], dtype=F64), device="cpu")
    lik = fsdiag.GaussianLikelihood(fsdiag.forward.Identity(), [0.0], 1.0)
    return fsdiag.sample(prior, lik, method="fsr", n_particles=4, n_steps=n_steps, schedule=schedule, seed=2,
                         record=n_steps + 1, progress=False, **kw)


def test_ddpm_ancestral_steps_have_the_ddpm_mean_and_variance_and_are_exact_for_one_atom():
    """x_s = (x_t + beta_k score) / sqrt(alpha_k) + sigma_k z, sigma_k^2 = (1 - abar_s)/(1 - abar_t) beta_k;
    with the exact score of a single atom this is exactly the bridge q(x_s | x_t, x_0)."""
    ddpm = fsdiag.DDPMSchedule(n_timesteps=8, beta_start=0.05, beta_end=0.4)
    run = one_atom_runs(ddpm, 4)                                          # strided: two timesteps a step
    _, zs = draws(2, 4, 4)
    grid = ddpm.time_grid(4)
    for k in range(4):
        abar_t, abar_s = ddpm.alpha_bar(float(grid[k])), ddpm.alpha_bar(float(grid[k + 1]))
        x_t, x_s = run.trajectory[k], run.trajectory[k + 1]
        alpha = abar_t / abar_s
        score = (math.sqrt(abar_t) * C - x_t) / (1 - abar_t)
        mean, var = (x_t + (1 - alpha) * score) / math.sqrt(alpha), (1 - abar_s) / (1 - abar_t) * (1 - alpha)
        torch.testing.assert_close(x_s, mean + math.sqrt(var) * zs[k], rtol=1e-10, atol=1e-12)
        b_mean, b_var = bridge(x_t, abar_t, abar_s)
        torch.testing.assert_close(mean, b_mean, rtol=1e-10, atol=1e-12)
        assert var == pytest.approx(b_var, rel=1e-12)


def test_euler_maruyama_steps_have_their_mean_and_variance_and_approach_the_bridge_as_dt_shrinks():
    """x_s = x_t + (beta x_t / 2 + beta score) dt + sqrt(beta dt) z: variance beta(t) dt, which differs
    from the exact bridge's at a coarse step and agrees to first order as dt -> 0."""
    vp = fsdiag.VPSchedule()
    run = one_atom_runs(vp, 3, t_min=0.1, t_max=0.7)
    _, zs = draws(2, 4, 3)
    grid = vp.time_grid(3, 0.1, 0.7)
    for k in range(3):
        t, s = float(grid[k]), float(grid[k + 1])
        abar_t, beta, dt = vp.alpha_bar(t), vp.beta(t), t - s
        x_t = run.trajectory[k]
        score = (math.sqrt(abar_t) * C - x_t) / (1 - abar_t)
        mean = x_t + (beta * x_t / 2 + beta * score) * dt
        torch.testing.assert_close(run.trajectory[k + 1], mean + math.sqrt(beta * dt) * zs[k], rtol=1e-10, atol=1e-12)
    ratios = []
    for dt in (0.2, 0.02, 0.002):
        t = 0.5
        _, b_var = bridge(0.0, vp.alpha_bar(t), vp.alpha_bar(t - dt))
        ratios.append(vp.beta(t) * dt / b_var)
    assert abs(ratios[0] - 1) > 0.1                                       # a coarse step is not exact
    assert abs(ratios[2] - 1) < 0.1 * abs(ratios[1] - 1) + 1e-6 < 0.1     # error O(dt): 10x smaller per 10x


# ---------------------------------------------------------------- original_dps takes the run's step count
def test_sample_forwards_n_steps_and_the_ddpm_schedule_to_original_dps():
    prior, lik = three_atoms()
    ddpm = fsdiag.DDPMSchedule()
    kw = dict(n_particles=8, seed=3, record=51, progress=False)      # DDPM ends on the atoms: compare paths
    by_name = fsdiag.sample(prior, lik, method="original_dps", zeta=0.5, schedule=ddpm, n_steps=50, **kw)
    assert by_name.approximation.n_steps == 50 and by_name.approximation.schedule is ddpm
    assert by_name.params["n_steps"] == 50
    same = fsdiag.sample(prior, lik, method=OriginalDPS(zeta=0.5, n_steps=50), schedule=ddpm, n_steps=50, **kw)
    torch.testing.assert_close(by_name.trajectory, same.trajectory, rtol=0, atol=0)
    stale = fsdiag.sample(prior, lik, method=OriginalDPS(zeta=0.5), schedule=ddpm, n_steps=50, **kw)
    assert (stale.trajectory - by_name.trajectory).abs().max() > 1e-3  # the 1000-step zeta is 20x weaker here
    vp = fsdiag.sample(prior, lik, method="original_dps", n_steps=40, **kw)
    assert vp.approximation.n_steps == 40 and vp.approximation.schedule == fsdiag.DDPMSchedule()


# ---------------------------------------------------------------- the measurement chapter 11 reports
@pytest.fixture
def one_thread():
    """A 1-D problem is too small to split: on a busy CPU two threads wait on each other (10x slower here)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_three_atom_pigdm_excluded_mass_under_each_r2_at_paper_scale(one_thread):
    """Three atoms, noise 0.3, y = -1.8, 4096 particles, 500 steps: the paper code's r_t^2 puts ~7.6% and
    ~2.0% on the excluded atoms 0.2 and 2.2; Song's r_t^2 about 0.05% (Monte Carlo: a few tenths of a %)."""
    prior, lik = three_atoms()
    mass = {}
    for r2 in ("paper", "song"):
        run = fsdiag.sample(prior, lik, method="pigdm", r2=r2, n_particles=4096, n_steps=500, seed=0, record=0,
                            progress=False)
        mass[r2] = fsdiag.evaluate(run.samples, prior, lik, t_final=run.t_final).atom_mass
    assert 0.06 < mass["paper"][1] < 0.095 and 0.012 < mass["paper"][2] < 0.03, mass
    assert mass["song"][1] + mass["song"][2] < 0.002, mass
