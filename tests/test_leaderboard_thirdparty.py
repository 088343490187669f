"""Other projects' samplers in the leaderboard (fsdiag.leaderboard.thirdparty): fsdiag's operators
as deepinv physics (the same A, A^T and log p(y | x)), deepinv's samplers at their defaults with
the budget setting their own step parameter, diffusers' schedulers on the exact epsilon-model
(exact noise levels, DPS guidance, what clip_sample costs), and the leaderboard without either
package. Each part skips when its package is missing."""
import importlib.util
import math
import subprocess
import sys
import warnings

import pytest
import torch

import fsdiag
from conftest import ROOT
from fsdiag.leaderboard import ENTRIES, Cell, run_cell
from fsdiag.leaderboard.entries import steps_for_budget
from fsdiag.leaderboard.thirdparty import DEEPINV_STEPS, DIFFUSERS_SCHEDULERS, thirdparty_entries
from fsdiag.problems import make_problem

# Not pytest.importorskip for deepinv: a bare `import deepinv` fails beside a CPU torch until
# fsdiag.adapters.deepinv.import_deepinv has made torchvision importable.
needs_deepinv = pytest.mark.skipif(importlib.util.find_spec("deepinv") is None,
                                   reason="deepinv is not installed (pip install 'fsdiag[deepinv]')")
LINEAR_IMAGES = ["digits_inpainting", "digits_blur", "digits_box_inpainting", "digits_downsampling",
                 "textures_inpainting"]


def _fdi():
    from fsdiag.adapters import deepinv as fdi
    fdi.import_deepinv()
    return fdi


def _fdf():
    pytest.importorskip("diffusers")
    from fsdiag.adapters import diffusers as fdf
    return fdf


# ------------------------------------------------------------------ deepinv
@needs_deepinv
@pytest.mark.parametrize("svd", [False, True])
@pytest.mark.parametrize("name", LINEAR_IMAGES)
def test_to_physics_is_the_problems_operator(name, svd):
    fdi = _fdi()
    problem = make_problem(name)
    shape, d, m = problem.image_shape, problem.dim, problem.lik.obs_dim
    physics, _ = fdi.problem_physics(problem, dtype=torch.float64, svd=svd)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, d, generator=g, dtype=torch.float64)
    z = torch.randn(4, m, generator=g, dtype=torch.float64)
    zy = fdi.to_measurement(problem.forward, z, shape, dtype=torch.float64)        # z as the physics sees it
    Ax = physics.A(x.reshape(4, *shape))
    Atz = physics.A_adjoint(zy)
    want_Ax = fdi.to_measurement(problem.forward, problem.forward.apply_A(x), shape, dtype=torch.float64)
    assert (Ax - want_Ax).abs().max() <= 1e-12
    assert (Atz.reshape(4, d) - problem.forward.apply_At(z, d)).abs().max() <= 1e-12
    assert abs(float((Ax * zy).sum() - (x.reshape(4, *shape) * Atz).sum())) <= 1e-10     # adjoint
    # a pixel mask is deepinv's Inpainting (decomposable: DDRM runs); svd=True decomposes the rest
    expect = "Inpainting" if "inpainting" in name else ("SVDPhysics" if svd else "LinearPhysics")
    assert type(physics).__name__ == expect


@needs_deepinv
@pytest.mark.parametrize("name", LINEAR_IMAGES)
def test_deepinv_likelihood_of_the_physics_is_the_problems(name):
    """log p(y | x) from deepinv's physics and y equals the problem's, up to the normalising
    constant of the unobserved pixels that deepinv's Inpainting keeps as zeros (exactly
    (d - m) (log sigma + log(2 pi) / 2)): the exact posteriors are the same."""
    fdi = _fdi()
    problem = make_problem(name)
    physics, y = fdi.problem_physics(problem, dtype=torch.float64)
    lik = fdi.likelihood(physics, y, problem.image_shape)
    atoms = problem.prior.atoms.to(torch.float64)
    diff = lik.log_prob(atoms) - problem.lik.log_prob(atoms)
    missing = problem.dim - problem.lik.obs_dim if "inpainting" in name else 0
    const = -missing * (math.log(problem.noise_std) + 0.5 * math.log(2 * math.pi))
    assert (diff - const).abs().max() <= 1e-8 * max(1.0, abs(const))
    psi = fsdiag.posterior_weights(problem.prior, lik).double()
    assert (psi - fsdiag.posterior_weights(problem.prior, problem.lik).double()).abs().max() <= 1e-10


@needs_deepinv
def test_deepinv_entries_spend_the_budget_through_their_own_step_parameter():
    """The budget calibration finds each sampler's cost per step (its own step parameter changed:
    one evaluation per step, two with a VJP, SKRock's 10 inner iterations), and at budget 50 on
    digits_inpainting (32 particles) every entry runs within it."""
    problem = make_problem("digits_inpainting")
    per_step = {"DPS": 2, "DiffPIR": 1, "DDRM": 1, "PD-DPS": 2, "PD-PiGDM": 2, "ULA": 1, "SKRock": 10}
    for name, cost in per_step.items():
        assert steps_for_budget(ENTRIES[f"deepinv.{name}"], problem, 50)[1] == cost, name
    assert steps_for_budget(ENTRIES["deepinv.PD-MM"], problem, 50)[1] > 2        # + conjugate gradient
    rows = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in DEEPINV_STEPS:
            rows[name] = run_cell(Cell(f"deepinv.{name}", "digits_inpainting", 50, 0, 32))
    for name, row in rows.items():
        assert row["status"] == "done" and row["family"] == "deepinv", row
        assert 25 <= row["nfe_used"] <= 50, row
        assert 0.0 <= row["tv_modes"] <= 1.0
    # deepinv's DPS is PosteriorDiffusion with DPS's data fidelity: at the same settings, the same draws
    assert rows["DPS"]["tv_modes"] == rows["PD-DPS"]["tv_modes"]
    # at their default step size deepinv's Langevin chains leave the atoms; DDRM stays on them
    assert rows["ULA"]["off_support"] > 0.5 and rows["SKRock"]["off_support"] > 0.5
    assert rows["DDRM"]["off_support"] == 0.0 and rows["DDRM"]["tv_modes"] < rows["ULA"]["tv_modes"]


@needs_deepinv
def test_deepinv_entries_are_not_applicable_off_linear_image_problems():
    for problem, why in [("three_atoms", "image problem"), ("digits_fourier_magnitude", "linear forward model")]:
        row = run_cell(Cell("deepinv.DDRM", problem, 24, 0, 8))
        assert row["status"] == "n/a" and why in row["error"], row


# ------------------------------------------------------------------ diffusers
@pytest.mark.parametrize("name", DIFFUSERS_SCHEDULERS)
def test_the_epsilon_model_reads_the_schedulers_noise_levels(name):
    """abar at every timestep of the scheduler's grid is the scheduler's own (alphas_cumprod at
    integer timesteps, 1 / (1 + sigma^2) of its sigmas for the sigma-space schedulers), and eps
    inverts x_t = sqrt(abar) D + sqrt(1 - abar) eps."""
    fdf = _fdf()
    prior = make_problem("three_atoms").prior
    sch = fdf.make_scheduler(name)
    sch.set_timesteps(20)
    model = fdf.EpsilonModel(prior, sch)
    ac = sch.alphas_cumprod.double()
    for i, t in enumerate(sch.timesteps):
        if float(t) == int(t):
            assert model.abar(t) == pytest.approx(float(ac[int(t)]), rel=1e-12)
        if name in ("Euler", "Heun"):
            sigma = float(sch.sigmas[i])
            assert model.abar(t) == pytest.approx(1 / (1 + sigma ** 2), rel=1e-5)
    x = torch.linspace(-2, 2, 7, dtype=torch.float64)[:, None]
    abar = model.abar(sch.timesteps[3])
    eps = model(x, sch.timesteps[3])
    den = fsdiag.ExactDenoiser(prior).vp(x, abar)
    assert torch.allclose(math.sqrt(abar) * den + math.sqrt(1 - abar) * eps, x, atol=1e-12)


def test_dps_guidance_is_the_likelihood_gradient_through_the_exact_denoiser():
    fdf = _fdf()
    problem = make_problem("digits_blur")
    den = fsdiag.ExactDenoiser(problem.prior)
    x = torch.randn(3, problem.dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x.requires_grad_(True)
    abar = 0.3
    d0 = den.vp(x, abar)
    g = fdf.dps_guidance(problem)(x, abar, d0)
    want, = torch.autograd.grad(problem.lik.log_prob(den.vp(x, abar)).sum(), x)
    assert torch.allclose(g, want, rtol=1e-8, atol=1e-10)
    d0 = den.vp(x, abar)
    g = fdf.dps_guidance(problem, zeta=0.7)(x, abar, d0)
    want, = torch.autograd.grad(-0.7 * problem.lik.residual(den.vp(x, abar)).norm(dim=1).sum(), x)
    assert torch.allclose(g, want, rtol=1e-8, atol=1e-10)


def test_solver_baseline_reaches_the_prior_and_clip_sample_does_not():
    """Unconditional runs at 50 evaluations land on the three atoms' prior (TV < 0.08 with 512
    samples) for every scheduler. diffusers' default clip_sample=True clips the predicted x0 to
    [-1, 1]: on atoms {-3, 0.5, 3} DDIM and DDPM then put every sample on the middle atom."""
    fdf = _fdf()
    base = fdf.solver_baseline(make_problem("three_atoms"), 512, [50])
    assert set(base) == set(DIFFUSERS_SCHEDULERS)
    assert all(tv[50] < 0.08 for tv in base.values()), base
    wide = fsdiag.EmpiricalPrior(torch.tensor([[-3.0], [0.5], [3.0]], dtype=torch.float64))
    free = fdf.solver_baseline(wide, 512, [50], schedulers=["DDIM", "DDPM"])
    clipped = fdf.solver_baseline(wide, 512, [50], schedulers=["DDIM", "DDPM"], clip_sample=True)
    for name in ("DDIM", "DDPM"):
        assert free[name][50] < 0.08 and clipped[name][50] > 0.6, (free, clipped)


def test_guided_diffusers_entries_find_the_three_atoms_posterior():
    """DPS-guided at budget 50 (128 particles), every scheduler puts its mass on the posterior's
    atom -1.8 (the prior alone would put 2/3 elsewhere); Heun spends two evaluations per step."""
    _fdf()
    problem = make_problem("three_atoms")
    assert steps_for_budget(ENTRIES["diffusers.Heun"], problem, 50)[1] == 2 * steps_for_budget(
        ENTRIES["diffusers.DDIM"], problem, 50)[1]
    for name in DIFFUSERS_SCHEDULERS:
        row = run_cell(Cell(f"diffusers.{name}", "three_atoms", 50, 0, 128))
        assert row["status"] == "done" and row["nfe_used"] <= 50, row
        assert row["tv_modes"] < 0.05, row


# ------------------------------------------------------------------ without either package
def test_the_leaderboard_works_without_deepinv_and_diffusers():
    assert thirdparty_entries(deepinv=False, diffusers=False) == []
    code = ("import sys; sys.modules['deepinv'] = None; sys.modules['diffusers'] = None\n"
            "from fsdiag.leaderboard import ENTRIES, Cell, run_cell\n"
            "assert not [n for n in ENTRIES if n.startswith(('deepinv.', 'diffusers.'))], list(ENTRIES)\n"
            "assert 'deepinv' not in sys.modules or sys.modules['deepinv'] is None\n"
            "row = run_cell(Cell('exact', 'three_atoms', 24, 0, 16)); assert row['status'] == 'done', row\n"
            "print(len(ENTRIES))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={**__import__("os").environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.strip()) == len([n for n in ENTRIES if not n.startswith(("deepinv.", "diffusers."))])
