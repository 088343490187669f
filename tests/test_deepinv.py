"""fsdiag.adapters.deepinv: deepinv's operators as fsdiag forward models, and deepinv's samplers on the exact denoiser."""
import importlib.util
import subprocess
import sys
import warnings

import pytest
import torch

# Not pytest.importorskip: a bare `import deepinv` fails beside a CPU torch until
# fsdiag.adapters.deepinv.import_deepinv has made torchvision importable.
if importlib.util.find_spec("deepinv") is None:
    pytest.skip("deepinv is not installed (pip install 'fsdiag[deepinv]')", allow_module_level=True)
from fsdiag.adapters import deepinv as fdi  # noqa: E402

import fsdiag  # noqa: E402
from conftest import ROOT  # noqa: E402

dinv = fdi.import_deepinv()
SHAPE = (1, 8, 8)


def _mask():
    mask = torch.ones(SHAPE)
    mask[:, :4] = 0          # the top half is missing
    return mask


def _physics():
    """deepinv operators of the chapter's kinds (inpainting, blur, 2x downsampling), noisy."""
    noise = dinv.physics.GaussianNoise(0.1)
    kernel = dinv.physics.functional.blur.gaussian_blur(psf_size=None, sigma=(1.0, 1.0))
    return {
        "inpainting": dinv.physics.Inpainting(img_size=SHAPE, mask=_mask(), noise_model=noise),
        "blur": dinv.physics.Blur(filter=kernel, padding="circular", noise_model=noise),
        "blur_fft": dinv.physics.BlurFFT(img_size=SHAPE, filter=kernel, noise_model=noise),
        "downsampling": dinv.physics.Downsampling(img_size=SHAPE, filter=None, factor=2, noise_model=noise),
    }


PHYSICS = list(_physics())


@pytest.fixture
def rows(gen):
    return torch.rand(5, 64, generator=gen, dtype=torch.float64)


def test_import_fsdiag_does_not_import_deepinv():
    code = "import sys, fsdiag; assert 'deepinv' not in sys.modules and 'fsdiag.adapters.deepinv' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


@pytest.mark.parametrize("kind", PHYSICS)
def test_adaptor_applies_the_physics_own_operator(kind, rows):
    physics = _physics()[kind]
    fwd = fdi.from_physics(physics, SHAPE)
    assert isinstance(fwd, fsdiag.forward.LinearForwardModel)
    expected = physics.A(rows.float().reshape(-1, *SHAPE)).reshape(5, -1)
    assert fwd.out_dim(64) == expected.shape[1]
    torch.testing.assert_close(fwd(rows), expected.double())
    # The matrix is A on the identity: it reproduces A x.
    mat = fwd.matrix_for(64)
    assert mat.shape == (expected.shape[1], 64) and mat.dtype == torch.float64
    torch.testing.assert_close(rows @ mat.T, expected.double(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", PHYSICS)
def test_adaptor_vjp_is_the_adjoint(kind, rows, gen):
    fwd = fdi.from_physics(_physics()[kind], SHAPE)
    u = torch.randn(5, fwd.out_dim(64), generator=gen, dtype=torch.float64)
    lhs = (fwd(rows) * u).sum(1)
    rhs = (rows * fwd.vjp(rows, u)).sum(1)
    torch.testing.assert_close(lhs, rhs, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fwd.vjp(rows, u), u @ fwd.matrix_for(64), rtol=1e-5, atol=1e-5)


def test_nonlinear_physics_vjp_matches_its_jacobian(rows, gen):
    physics = dinv.physics.Physics(A=lambda x, **kw: x ** 2 + torch.sin(x))
    fwd = fdi.from_physics(physics, SHAPE)
    assert not fwd.is_linear
    v = torch.randn(5, 64, generator=gen, dtype=torch.float64)
    x32 = rows.float()
    torch.testing.assert_close(fwd.vjp(rows, v).float(), ((2 * x32 + torch.cos(x32)) * v.float()), rtol=1e-5,
                               atol=1e-5)


def test_likelihood_uses_the_physics_noise_level(rows):
    physics = _physics()["inpainting"]
    y = physics.A(rows[:1].float().reshape(1, *SHAPE))
    lik = fdi.likelihood(physics, y, SHAPE)
    assert float(lik.noise_std[0]) == pytest.approx(0.1)
    r = (y.reshape(-1).double() - fdi.from_physics(physics, SHAPE)(rows)) / 0.1
    torch.testing.assert_close(lik.log_prob(rows) - lik.log_prob(rows[:1]), -0.5 * (r * r).sum(1))


def test_bad_inputs_are_named():
    with pytest.raises(TypeError, match="physics"):
        fdi.from_physics(object(), SHAPE)
    with pytest.raises(ValueError, match="img_shape"):
        fdi.from_physics(_physics()["inpainting"], (64,))
    with pytest.raises(ValueError, match="physics"):
        fdi.likelihood(dinv.physics.Inpainting(img_size=SHAPE, mask=_mask()), torch.zeros(1, *SHAPE), SHAPE)


@pytest.fixture(scope="module")
def two_atoms():
    """Two atoms that differ in the bottom (observed) half, and y from the first: the exact
    posterior is (essentially) all on atom 0."""
    atoms = torch.zeros(2, 64)
    atoms[0, 32:] = 1.0
    atoms[1, :32] = 1.0
    prior = fsdiag.EmpiricalPrior(atoms, labels=[0, 1], device="cpu")
    physics = dinv.physics.Inpainting(img_size=SHAPE, mask=_mask(), noise_model=dinv.physics.GaussianNoise(0.1))
    y = physics.A(atoms[:1].reshape(1, *SHAPE))
    return prior, physics, y


@pytest.mark.parametrize("name, settings", [("DDRM", {"num_steps": 10}), ("PD-PiGDM", {"num_steps": 20}),
                                            ("DPS", {"num_steps": 20, "weight": 400.0})])
def test_exact_denoiser_drives_deepinv_samplers(two_atoms, name, settings):
    prior, physics, y = two_atoms
    lik = fdi.likelihood(physics, y, SHAPE)
    assert float(fsdiag.posterior_weights(prior, lik)[0]) > 1 - 1e-12
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = fdi.run(name, fsdiag.ExactDenoiser(prior), physics, y, n=8, seed=0, **settings)
    assert out.samples.shape == (8, 64) and out.wall_s > 0
    report = fsdiag.evaluate(out.samples, prior, lik)
    assert report.modes["sampler"][0] == pytest.approx(1.0)


def test_run_is_repeatable_and_leaves_the_global_generator_alone(two_atoms):
    """Same seed, same samples; different seed, different samples; the caller's global torch
    generator state is the same after a run as before it."""
    prior, physics, y = two_atoms
    before = torch.get_rng_state()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        runs = [fdi.run("DiffPIR", fsdiag.ExactDenoiser(prior), physics, y, n=3, seed=s, max_iter=5).samples
                for s in (0, 0, 1)]
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])


def test_run_refuses_unknown_settings_and_names(two_atoms):
    prior, physics, y = two_atoms
    with pytest.raises(ValueError, match="num_stepz"):
        fdi.run("DPS", fsdiag.ExactDenoiser(prior), physics, y, n=2, num_stepz=3)
    with pytest.raises(ValueError, match="name"):
        fdi.run("DPS++", fsdiag.ExactDenoiser(prior), physics, y, n=2)
    with pytest.raises(ValueError, match="which"):
        fdi.settings_for("DPS", "best", noise_std=0.1)
    for name in fdi.SAMPLERS:
        for which in fdi.SETTINGS:
            fdi._check_settings(dinv, name, fdi.settings_for(name, which, noise_std=0.1))


# ------------------------------------------------------------------ what deepinv 0.5 does (chapter 9's notes)
def test_fact_diffpir_returns_a_noisy_state_ddrm_an_atom(two_atoms):
    prior, physics, y = two_atoms
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        diffpir = fdi.run("DiffPIR", fsdiag.ExactDenoiser(prior), physics, y, n=4, max_iter=10).samples
        ddrm = fdi.run("DDRM", fsdiag.ExactDenoiser(prior), physics, y, n=4, num_steps=10).samples
    atom = prior.atoms[0].double()
    assert float((ddrm - atom).abs().max()) < 1e-6                  # the last denoiser call, at sigma = 0
    assert float((diffpir - atom).norm(dim=1).min()) > 1e-3         # DiffPIR's last noisy iterate


def test_fact_ddrm_needs_a_decomposable_physics(two_atoms):
    prior, _, _ = two_atoms
    physics = _physics()["blur"]
    with pytest.raises(AttributeError, match="mask"):
        fdi.run("DDRM", fsdiag.ExactDenoiser(prior), physics, torch.zeros(1, *SHAPE), n=2, num_steps=3)


def test_fact_dps_needs_a_float32_convolution_physics(two_atoms):
    prior, _, _ = two_atoms
    physics = _physics()["blur"].to(torch.float64)
    with pytest.raises(RuntimeError, match="type"):
        fdi.run("DPS", fsdiag.ExactDenoiser(prior), physics, torch.zeros(1, *SHAPE, dtype=torch.float64), n=2,
                num_steps=3)


def test_fact_langevin_default_max_iter_is_a_float():
    import inspect
    for cls in (dinv.sampling.ULA, dinv.sampling.SKRock):
        assert isinstance(inspect.signature(cls).parameters["max_iter"].default, float)
    assert fdi.settings_for("ULA", "defaults", noise_std=0.1) == {"max_iter": 1000}
