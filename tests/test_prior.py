"""The streamed FSR kernels against autograd of the exact log-density (dense reference)."""
import math

import numpy as np
import pytest
import torch
from scipy import stats

import fsdiag
from fsdiag import oracle as R

ABARS = [0.999, 0.9, 0.5, 0.05, 1e-3]


def make_prior(gen, n=300, d=3, chunk=64, weighted=True, offset=0.0, dtype=torch.float64, device="cpu"):
    atoms = torch.randn(n, d, generator=gen, dtype=torch.float64) * 1.5 + offset
    w = torch.rand(n, generator=gen, dtype=torch.float64) + 0.1 if weighted else None
    return fsdiag.EmpiricalPrior(atoms.to(dtype), weights=w, chunk_size=chunk, device=device)


def queries(prior, abar, gen, n=16):
    idx = torch.randint(prior.n_atoms, (n,), generator=gen)
    z = torch.randn(n, prior.dim, generator=gen, dtype=torch.float64).to(prior.dtype)
    return (math.sqrt(abar) * prior.atoms[idx] + math.sqrt(1 - abar) * z).to(prior.device)


@pytest.mark.parametrize("abar", ABARS)
def test_log_density_score_and_denoiser_match_autograd(abar, gen):
    prior = make_prior(gen)
    x = queries(prior, abar, gen).requires_grad_(True)
    ref = R.log_marginal(x, prior.atoms, prior.log_weights, abar)
    (ref_score,) = torch.autograd.grad(ref.sum(), x)
    x = x.detach()
    torch.testing.assert_close(prior.log_density(x, abar), ref.detach(), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(prior.score(x, abar), ref_score, rtol=1e-8, atol=1e-8 / (1 - abar))
    tweedie = (x + (1 - abar) * ref_score) / math.sqrt(abar)
    torch.testing.assert_close(prior.denoise(x, abar), tweedie, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("abar", ABARS)
def test_cov_matvec_is_the_tweedie_jacobian(abar, gen):
    """dm/dx_t = (a / b^2) C(x_t): compare with the autograd vector-Jacobian product of m."""
    prior = make_prior(gen)
    x = queries(prior, abar, gen).requires_grad_(True)
    v = torch.randn(x.shape, generator=gen, dtype=torch.float64)
    m = R.tweedie_mean(x, prior.atoms, prior.log_weights, abar)
    (vjp,) = torch.autograd.grad(m, x, grad_outputs=v)
    ours = prior.denoiser_vjp(x.detach(), abar, v)
    torch.testing.assert_close(ours, vjp, rtol=1e-6, atol=1e-7 * (1 + vjp.abs().max().item()))
    # several vectors per query at once give the same as one at a time
    V = torch.randn(x.shape[0], 3, prior.dim, generator=gen, dtype=torch.float64)
    many = prior.cov_matvec(x.detach(), abar, V)
    for k in range(3):
        torch.testing.assert_close(many[:, k], prior.cov_matvec(x.detach(), abar, V[:, k]), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("abar", [0.9, 0.3, 0.01])
def test_exact_conditional_quantities_match_autograd(abar, gen):
    prior = make_prior(gen)
    lik = fsdiag.GaussianLikelihood(fsdiag.forward.Affine.example(3, seed=1), torch.tensor([0.4]), 0.7)
    ll = lik.log_prob(prior.atoms)
    x = queries(prior, abar, gen).requires_grad_(True)
    ref = R.log_marginal(x, prior.atoms, prior.log_weights, abar, ll) - R.log_marginal(x, prior.atoms, prior.log_weights, abar)
    (ref_grad,) = torch.autograd.grad(ref.sum(), x)
    x = x.detach()
    torch.testing.assert_close(prior.log_likelihood_t(x, abar, ll), ref.detach(), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(prior.likelihood_score(x, abar, ll), ref_grad, rtol=1e-7, atol=1e-8)
    w = prior.responsibilities(x, abar, ll)
    torch.testing.assert_close(prior.posterior_denoise(x, abar, ll), w @ prior.atoms, rtol=1e-10, atol=1e-10)


def test_chunk_size_does_not_change_results(gen):
    a = make_prior(gen, n=1000, chunk=1000)
    b = fsdiag.EmpiricalPrior(a.atoms, weights=a.weights, chunk_size=37, device="cpu")
    x = queries(a, 0.3, gen)
    v = torch.randn(x.shape, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(a.denoise(x, 0.3), b.denoise(x, 0.3), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(a.cov_matvec(x, 0.3, v), b.cov_matvec(x, 0.3, v), rtol=1e-10, atol=1e-12)


def test_float32_is_accurate_on_uncentred_data_at_small_noise(gen):
    """Centring keeps the ||x||^2 expansion accurate for data far from the origin (DESIGN §7)."""
    p64 = make_prior(gen, n=2000, d=16, chunk=512, weighted=False, offset=50.0)
    p32 = fsdiag.EmpiricalPrior(p64.atoms.float(), chunk_size=512, device="cpu")
    abar = fsdiag.VPSchedule().alpha_bar(2e-2)
    x = queries(p64, abar, gen, n=64)
    err = (p32.denoise(x.float(), abar).double() - p64.denoise(x, abar)).abs().max().item()
    assert err < 1e-3 * 50
    v = torch.randn(x.shape, generator=gen, dtype=torch.float64)
    c64 = p64.cov_matvec(x, abar, v)
    c32 = p32.cov_matvec(x.float(), abar, v.float()).double()
    assert (c32 - c64).norm() <= 1e-2 * c64.norm() + 1e-4


def test_streamed_memory_does_not_grow_with_n(gen):
    """The working set is O(batch x chunk): a 200k-atom prior with chunk 1024 runs with small temporaries."""
    atoms = torch.randn(200_000, 8, generator=gen)
    prior = fsdiag.EmpiricalPrior(atoms, chunk_size=1024, device="cpu")
    x = torch.randn(32, 8, generator=gen)
    m = prior.denoise(x, 0.5)
    assert torch.isfinite(m).all()
    dense = torch.softmax(-((x[:, None] - math.sqrt(0.5) * atoms[None]) ** 2).sum(-1) / (2 * 0.5), 1) @ atoms
    torch.testing.assert_close(m, dense, rtol=1e-4, atol=1e-4)


def test_gumbel_atom_sampling_matches_responsibilities(gen):
    """Chi-square test: streamed Gumbel-max draws follow w~_i(x_t, y)."""
    atoms = torch.tensor([[-2.0], [-0.5], [0.3], [1.0], [2.5]], dtype=torch.float64)
    prior = fsdiag.EmpiricalPrior(atoms, weights=[1, 2, 1, 3, 1], chunk_size=2, device="cpu")
    ll = torch.tensor([-1.0, 0.0, -0.5, -2.0, 0.3], dtype=torch.float64)
    x = torch.full((20000, 1), 0.4, dtype=torch.float64)
    idx = prior.sample_atoms(x, 0.4, gen, ll)
    counts = torch.bincount(idx, minlength=5).numpy()
    expected = prior.responsibilities(x[:1], 0.4, ll)[0].numpy() * x.shape[0]
    assert stats.chisquare(counts, expected).pvalue > 1e-3


def test_nearest_atoms_is_the_argmax_of_responsibilities(gen):
    prior = make_prior(gen, n=200, chunk=17)
    x = queries(prior, 0.7, gen, n=50)
    assert torch.equal(prior.nearest_atoms(x, 0.7), prior.responsibilities(x, 0.7).argmax(1))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(gen):
    cpu = make_prior(gen, n=5000, d=8, chunk=1024)
    gpu = fsdiag.EmpiricalPrior(cpu.atoms, weights=cpu.weights, chunk_size=1024, device="cuda")
    x = queries(cpu, 0.2, gen, n=64)
    v = torch.randn(x.shape, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(gpu.denoise(x.cuda(), 0.2).cpu(), cpu.denoise(x, 0.2), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(gpu.cov_matvec(x.cuda(), 0.2, v.cuda()).cpu(), cpu.cov_matvec(x, 0.2, v), rtol=1e-8, atol=1e-9)
