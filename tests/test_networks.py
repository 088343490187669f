"""fsdiag.networks: a trained denoiser behind the prior interface of the guidance samplers.

Closed forms: an untrained network (zero output layer) is exactly the denoiser of N(c, s^2 I), so
its Tweedie mean, covariance products, every guidance method and whole sampler runs must equal
those of testbeds.GaussianPrior; a briefly trained one must learn an anisotropic Gaussian's
denoiser. Jacobian products against finite differences; caching; argument errors."""
import math

import pytest
import torch

import fsdiag
from fsdiag import forward, networks, testbeds
from fsdiag import Problem
from fsdiag.methods import METHODS

F64 = torch.float64


def _gauss_atoms(n, mean, var, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.tensor(mean, dtype=F64) + torch.randn(n, len(mean), generator=g, dtype=F64) * torch.tensor(var).sqrt()


def _untrained(atoms, **kw):
    return networks.train_denoiser(atoms, steps=0, dtype=F64, device="cpu", progress=False, **kw)


def _isotropic_twin(trained):
    """The closed-form Gaussian prior an untrained network must reproduce."""
    den = trained.denoiser
    d = den.dim
    return testbeds.GaussianPrior(den.center, den.sigma_data ** 2 * torch.eye(d, dtype=F64))


@pytest.fixture(scope="module")
def small_net():
    """A briefly trained float64 MLP on 2-D atoms: a non-trivial, non-symmetric Jacobian."""
    atoms = torch.cat([_gauss_atoms(60, [1.0, 0.0], [0.1, 0.1]), _gauss_atoms(60, [-1.0, 1.0], [0.05, 0.2], 1)])
    return networks.train_denoiser(atoms, steps=40, lr=2e-2, width=16, depth=2, batch_size=64,
                                   dtype=F64, device="cpu", progress=False)


@pytest.mark.parametrize("abar", [0.02, 0.3, 0.9, 0.999])
def test_untrained_network_is_the_gaussian_denoiser(abar):
    atoms = _gauss_atoms(200, [0.5, -1.0, 2.0], [1.0, 0.5, 2.0])
    tr = _untrained(atoms)
    net, gauss = networks.NetworkPrior(tr), _isotropic_twin(tr)
    assert tr.denoiser.sigma_data == pytest.approx(float((atoms - atoms.mean(0)).pow(2).mean().sqrt()))
    x = torch.randn(7, 3, generator=torch.Generator().manual_seed(1), dtype=F64) * 2
    v = torch.randn(7, 4, 3, generator=torch.Generator().manual_seed(2), dtype=F64)
    mo = net.moments(x, abar)
    assert torch.allclose(mo.mean, gauss.moments(x, abar).mean, rtol=1e-10, atol=1e-10)
    assert torch.isnan(mo.log_norm).all()
    assert torch.allclose(net.cov_matvec(x, abar, v), gauss.cov_matvec(x, abar, v), rtol=1e-9, atol=1e-12)
    assert torch.allclose(net.denoiser_vjp(x, abar, v[:, 0], moments=mo), gauss.denoiser_vjp(x, abar, v[:, 0]),
                          rtol=1e-9, atol=1e-12)
    assert torch.allclose(net.score(x, abar), gauss.score(x, abar), rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("method", ["sigma_dps", "zeta_dps", "pigdm", "tmpd"])
def test_every_guidance_method_and_sampler_matches_the_closed_form(method):
    atoms = _gauss_atoms(100, [1.0, -0.5], [0.3, 0.6])
    tr = _untrained(atoms)
    net, gauss = networks.NetworkPrior(tr), _isotropic_twin(tr)
    lik = fsdiag.GaussianLikelihood(forward.Affine(torch.tensor([[1.0, 2.0]], dtype=F64)), [0.7], 0.4)
    x = torch.randn(5, 2, generator=torch.Generator().manual_seed(3), dtype=F64)
    approx = fsdiag.methods.make_method(method)
    g_net, g_gauss = approx(Problem.build(net, lik), x, 0.4), approx(Problem.build(gauss, lik), x, 0.4)
    assert torch.allclose(g_net.likelihood_score, g_gauss.likelihood_score, rtol=1e-8, atol=1e-10)
    # The whole sampler: same seed, same code path, the same particles.
    kw = dict(method=method, n_particles=64, n_steps=30, seed=0, progress=False, record=3)
    r_net, r_gauss = fsdiag.sample(net, lik, **kw), fsdiag.sample(gauss, lik, **kw)
    assert r_net.samples.shape == (64, 2) and torch.isfinite(r_net.samples).all()
    assert torch.allclose(r_net.samples, r_gauss.samples, rtol=1e-7, atol=1e-8)
    assert torch.allclose(r_net.tweedie, r_gauss.tweedie, rtol=1e-7, atol=1e-8)


def _fd_jacobian(net, x, abar, eps=1e-6):
    """(B, d, d) Jacobian dm/dx_t by central differences, J[b, i, j] = dm_i / dx_j."""
    cols = []
    for j in range(x.shape[1]):
        e = torch.zeros_like(x)
        e[:, j] = eps
        cols.append((net.denoise(x + e, abar) - net.denoise(x - e, abar)) / (2 * eps))
    return torch.stack(cols, -1)


@pytest.mark.parametrize("abar", [0.05, 0.5, 0.98])
def test_jacobian_products_match_finite_differences(small_net, abar):
    net = networks.NetworkPrior(small_net)
    x = torch.randn(6, 2, generator=torch.Generator().manual_seed(4), dtype=F64)
    v = torch.randn(6, 3, 2, generator=torch.Generator().manual_seed(5), dtype=F64)
    J = _fd_jacobian(net, x, abar)
    assert (J - J.transpose(1, 2)).abs().max() > 1e-6          # a network's Jacobian is not symmetric
    jt_v = torch.einsum("bij,bki->bkj", J, v)
    j_v = torch.einsum("bij,bkj->bki", J, v)
    mo = net.moments(x, abar)
    assert torch.allclose(net.denoiser_vjp(x, abar, v), jt_v, rtol=1e-6, atol=1e-8)
    assert torch.allclose(net.denoiser_vjp(x, abar, v[:, 1], moments=mo), jt_v[:, 1], rtol=1e-6, atol=1e-8)
    a, b2 = math.sqrt(abar), 1 - abar
    assert torch.allclose(net.cov_matvec(x, abar, v), (b2 / a) * j_v, rtol=1e-6, atol=1e-8)
    assert torch.allclose(net.cov_matvec(x, abar, v[:, 2]), (b2 / a) * j_v[:, 2], rtol=1e-6, atol=1e-8)
    # A Moments from another x is not reused.
    other = net.moments(x + 1, abar)
    assert torch.allclose(net.denoiser_vjp(x, abar, v[:, 0], moments=other), jt_v[:, 0], rtol=1e-6, atol=1e-8)


def test_conv_net_jacobian_matches_finite_differences():
    g = torch.Generator().manual_seed(6)
    atoms = torch.rand(40, 9, generator=g, dtype=F64)
    tr = networks.train_denoiser(atoms, arch="conv", image_shape=(1, 3, 3), width=4, depth=1, steps=20, lr=3e-2,
                                 batch_size=32, dtype=F64, device="cpu", progress=False)
    net = networks.NetworkPrior(tr)
    x = torch.randn(3, 9, generator=g, dtype=F64)
    v = torch.randn(3, 9, generator=g, dtype=F64)
    J = _fd_jacobian(net, x, 0.3)
    assert torch.allclose(net.denoiser_vjp(x, 0.3, v), torch.einsum("bij,bi->bj", J, v), rtol=1e-6, atol=1e-8)
    assert torch.allclose(net.cov_matvec(x, 0.3, v), (0.7 / math.sqrt(0.3)) * torch.einsum("bij,bj->bi", J, v),
                          rtol=1e-6, atol=1e-8)


def test_briefly_trained_network_learns_an_anisotropic_gaussian():
    mean, var = [1.0, -0.5], [1.0, 0.04]
    atoms = _gauss_atoms(4000, mean, var, seed=7)
    kw = dict(width=64, depth=2, batch_size=256, dtype=torch.float32, device="cpu", progress=False)
    tr = networks.train_denoiser(atoms, steps=400, lr=3e-3, seed=0, **kw)
    assert tr.trained and len(tr.losses) == 100 and tr.losses[-1] < tr.losses[0]
    untrained = networks.NetworkPrior(networks.train_denoiser(atoms, steps=0, **kw))
    net = networks.NetworkPrior(tr)
    emp_mean, emp_cov = atoms.mean(0), torch.cov(atoms.T)
    gauss = testbeds.GaussianPrior(emp_mean, emp_cov)               # closed form for the atoms' Gaussian
    g = torch.Generator().manual_seed(8)
    for abar in (0.1, 0.5, 0.9):                                    # sigma = 3, 1, 0.33
        x0 = emp_mean + torch.randn(512, 2, generator=g, dtype=F64) * emp_cov.diagonal().sqrt()
        x = math.sqrt(abar) * x0 + math.sqrt(1 - abar) * torch.randn(512, 2, generator=g, dtype=F64)
        exact = gauss.denoise(x, abar)
        err = (net.denoise(x, abar).double() - exact).pow(2).sum(1).mean().sqrt()
        err0 = (untrained.denoise(x, abar).double() - exact).pow(2).sum(1).mean().sqrt()
        assert err < 0.35 * err0 and err < 0.12, (abar, float(err), float(err0))


def test_saved_weights_skip_training_and_new_seed_data_or_settings_retrain(tmp_path):
    atoms = _gauss_atoms(50, [0.0, 1.0], [1.0, 1.0])
    kw = dict(steps=15, width=8, depth=1, batch_size=16, device="cpu", progress=False, weights_dir=tmp_path / "w")
    first = networks.train_denoiser(atoms, **kw)
    assert first.trained and first.path.is_file() and first.path.parent == tmp_path / "w"
    again = networks.train_denoiser(atoms, **kw)
    assert not again.trained and again.path == first.path and again.losses == first.losses
    x = torch.randn(4, 2, generator=torch.Generator().manual_seed(0))
    m1 = networks.NetworkPrior(first).denoise(x, 0.5)
    assert torch.equal(networks.NetworkPrior(again).denoise(x, 0.5), m1)
    # Without a cache, the same seed trains to the same weights; seed, data and settings each retrain.
    assert torch.equal(networks.NetworkPrior(networks.train_denoiser(atoms, **{**kw, "weights_dir": None}))
                       .denoise(x, 0.5), m1)
    seed1 = networks.train_denoiser(atoms, **{**kw, "seed": 1})
    data2 = networks.train_denoiser(atoms + 0.1, **kw)
    longer = networks.train_denoiser(atoms, **{**kw, "steps": 16})
    for tr in (seed1, data2, longer):
        assert tr.trained and tr.path != first.path and tr.path.is_file()
    assert not torch.equal(networks.NetworkPrior(seed1).denoise(x, 0.5), m1)
    assert len(list((tmp_path / "w").glob("*.pt"))) == 4


def test_unconditional_sampling_and_prior_report():
    prior = fsdiag.EmpiricalPrior(torch.tensor([[-2.0], [0.0], [2.0]], dtype=F64), weights=[0.6, 0.3, 0.1],
                                  labels=[0, 1, 1])
    run = networks.sample_prior(prior, n_particles=2000, n_steps=100, seed=0, progress=False)
    rep = networks.prior_report(run.samples, prior)
    assert rep["modes"]["exact"] == pytest.approx([0.6, 0.4])
    assert rep["tv_modes"] < 3 * rep["tv_floor_modes"] + 0.02
    assert rep["relative_distance"] < 0.1                      # the exact prior's samples sit on atoms
    # Hand-made samples: all on atom 0 -> TV over atoms 0.4, over modes 0.4; half-way between atoms: 0.5.
    on0 = torch.full((10, 1), -2.0, dtype=F64)
    rep0 = networks.prior_report(on0, prior)
    assert rep0["tv_atoms"] == pytest.approx(0.4) and rep0["tv_modes"] == pytest.approx(0.4)
    assert networks.prior_report(torch.full((10, 1), -1.0, dtype=F64) + 1e-9, prior)["relative_distance"] \
        == pytest.approx(0.5)


def test_fsr_needs_atoms_and_the_unconditional_method_is_not_registered(small_net):
    net = networks.NetworkPrior(small_net)
    lik = fsdiag.GaussianLikelihood(forward.Identity(), [0.0, 0.0], 0.5)
    with pytest.raises(TypeError, match="fsr"):
        fsdiag.sample(net, lik, method="fsr", n_particles=4, n_steps=2, progress=False)
    assert "unconditional" not in METHODS


@pytest.mark.parametrize("kw, exc, name", [
    (dict(arch="rnn"), ValueError, "arch"),
    (dict(arch="conv"), ValueError, "image_shape"),
    (dict(arch="conv", image_shape=(1, 2, 3)), ValueError, "image_shape"),
    (dict(image_shape=(1, 2, 1)), ValueError, "image_shape"),
    (dict(steps=-1), ValueError, "steps"),
    (dict(seed=1.5), TypeError, "seed"),
    (dict(lr=0.0), ValueError, "lr"),
    (dict(t_range=(0.5, 0.1)), ValueError, "t_range"),
    (dict(width=0), ValueError, "width"),
    (dict(dtype=torch.float16), ValueError, "dtype"),
    (dict(device="tpu"), ValueError, "device"),
])
def test_bad_training_arguments_raise(kw, exc, name):
    atoms = torch.zeros(5, 2)
    with pytest.raises(exc, match=name):
        networks.train_denoiser(atoms, progress=False, **kw)


def test_bad_prior_arguments_raise(small_net, tmp_path):
    with pytest.raises(TypeError, match="atoms"):
        networks.train_denoiser("abc", progress=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="weights_dir"):
        networks.train_denoiser(torch.zeros(3, 2), steps=1, progress=False, weights_dir=tmp_path / "file")
    with pytest.raises(TypeError, match="denoiser"):
        networks.NetworkPrior("net")
    net = networks.NetworkPrior(small_net)
    x = torch.zeros(3, 2, dtype=F64)
    with pytest.raises(TypeError, match="log_lik"):
        net.moments(x, 0.5, log_lik=torch.zeros(3))
    with pytest.raises(ValueError, match="x"):
        net.moments(torch.zeros(3, 5), 0.5)
    for bad in (0.0, 1.0, float("nan")):
        with pytest.raises(ValueError, match="abar"):
            net.moments(x, bad)
    with pytest.raises(ValueError, match="v"):
        net.cov_matvec(x, 0.5, torch.zeros(2, 2))
    with pytest.raises(ValueError, match="v"):
        net.denoiser_vjp(x, 0.5, torch.zeros(3, 1, 3))
    with pytest.raises(TypeError, match="prior"):
        networks.sample_prior("prior", n_steps=2)
    with pytest.raises(TypeError, match="prior"):
        networks.prior_report(x, net)
    prior = fsdiag.EmpiricalPrior(torch.zeros(2, 2))
    with pytest.raises(ValueError, match="samples"):
        networks.prior_report(torch.zeros(3, 3), prior)
