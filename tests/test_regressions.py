"""One test per reliability defect of issue 6 (each failed before its fix)."""
import math

import numpy as np
import pytest
import torch

import fsdiag
from fsdiag import EmpiricalPrior as EP
from fsdiag import GaussianLikelihood as GL
from fsdiag import diagnostics, testbeds
from fsdiag import forward as F

F64 = torch.float64


def _lik(y=0.5, std=1.0):
    return GL(F.Identity(), [y], std)


# ------------------------------------------------------------------ must-fix defects
def test_zero_weight_leading_chunk_is_not_nan():
    prior = EP([[0.0], [1.0]], weights=[0, 1], chunk_size=1, device="cpu")
    assert torch.equal(prior.denoise([[0.5]], 0.5), torch.tensor([[1.0]], dtype=prior.dtype))
    mo = prior.moments([[0.5]], 0.5, [0.0, -1.0])
    assert torch.isfinite(mo.log_norm).all() and torch.isfinite(mo.log_norm_cond).all()
    assert torch.equal(mo.mean_cond, torch.tensor([[1.0]], dtype=prior.dtype))
    C = prior.cov_matvec([[0.5]], 0.5, [[1.0]])
    assert torch.allclose(C, torch.zeros(1, 1, dtype=prior.dtype))
    assert prior.sample_atoms([[0.5]], 0.5, torch.Generator().manual_seed(0)).item() == 1


def test_zero_weight_leading_atoms_in_the_samplers():
    g = torch.Generator().manual_seed(0)
    atoms = torch.randn(300, 1, generator=g, dtype=F64)
    w = torch.ones(300, dtype=F64)
    w[:100] = 0
    prior = EP(atoms, weights=w, chunk_size=64, device="cpu")
    run = fsdiag.sample(prior, _lik(), n_particles=64, n_steps=5, progress=False)
    assert torch.isfinite(run.trajectory).all() and torch.isfinite(run.tweedie).all()
    ex = fsdiag.sample_exact(prior, _lik(), n_particles=64, n_steps=5, progress=False)
    assert torch.isfinite(ex.tweedie).all()
    assert (prior.nearest_atoms(ex.samples, 0.99) >= 100).all()


def test_weights_whose_sum_overflows():
    prior = EP([[0.0], [1.0]], weights=[1e308, 1e308], device="cpu")
    psi = fsdiag.posterior_weights(prior, GL(F.Identity(), [0.5], 1.0))
    torch.testing.assert_close(psi, torch.tensor([0.5, 0.5], dtype=F64))
    run = fsdiag.sample_exact(prior, _lik(), n_particles=8, n_steps=2, progress=False)
    assert torch.isfinite(run.samples).all()


def test_float32_posterior_weights_are_exact_on_near_ties():
    atoms = (3 + 1e-6 * torch.arange(50, dtype=F64)).to(torch.float32)[:, None]
    lik = GL(F.Identity(), [50.0], 1e-2)
    psi = fsdiag.posterior_weights(EP(atoms, device="cpu"), lik)
    exact = torch.softmax(lik.log_prob(atoms.double()), 0)
    assert 0.5 * float((psi.double() - exact).abs().sum()) < 1e-5


def test_float32_conditional_kernels_agree_with_float64():
    atoms = (3 + 1e-6 * torch.arange(50, dtype=F64)).to(torch.float32)[:, None]
    lik = GL(F.Identity(), [50.0], 1e-2)
    p32, p64 = EP(atoms, device="cpu"), EP(atoms.double(), device="cpu")
    ll = lik.log_prob(atoms.double())
    x = torch.tensor([[2.9], [3.0]])
    m32 = p32.posterior_denoise(x, 0.9, ll).double()
    m64 = p64.posterior_denoise(x.double(), 0.9, ll)
    torch.testing.assert_close(m32, m64, rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------ also found
@pytest.mark.parametrize("kernel", ["moments", "denoise", "score", "log_density", "responsibilities",
                                    "nearest_atoms"])
def test_empty_batch_in_kernels(kernel):
    prior = EP([[0.0, 1.0], [1.0, 2.0]], device="cpu")
    out = getattr(prior, kernel)(torch.zeros(0, 2), 0.5)
    out = out.mean if kernel == "moments" else out
    assert out.shape[0] == 0


def test_empty_batch_in_conditional_kernels_and_likelihood():
    prior = EP([[0.0, 1.0], [1.0, 2.0]], device="cpu")
    x, ll = torch.zeros(0, 2), [0.0, -1.0]
    assert prior.posterior_denoise(x, 0.5, ll).shape == (0, 2)
    assert prior.log_likelihood_t(x, 0.5, ll).shape == (0,)
    assert prior.cov_matvec(x, 0.5, torch.zeros(0, 3, 2)).shape == (0, 3, 2)
    assert prior.denoiser_vjp(x, 0.5, torch.zeros(0, 2)).shape == (0, 2)
    assert prior.sample_atoms(x, 0.5, torch.Generator(), ll).shape == (0,)
    assert GL(F.Identity(), [0.0, 1.0], 1.0).log_prob(x).shape == (0,)


@pytest.mark.parametrize("bad,exc", [(0, ValueError), (2.5, TypeError), ("3", TypeError)])
def test_diagnose_validates_n_score_points(bad, exc):
    prior, lik = testbeds.three_atoms()
    run = fsdiag.sample(prior, lik, method="sigma_dps", n_particles=8, n_steps=3, progress=False)
    with pytest.raises(exc, match="^n_score_points:"):
        fsdiag.diagnose(run, prior, lik, n_score_points=bad)


@pytest.mark.parametrize("device", ["meta", "mps", "xpu"])
def test_unusable_devices_are_refused(device):
    with pytest.raises(ValueError, match="^device:"):
        EP([[0.0]], device=device)


@pytest.mark.parametrize("where", ["y", "noise_std", "atoms", "x"])
def test_complex_inputs_are_refused(where):
    with pytest.raises(TypeError, match=f"^{where}:"):
        if where == "y":
            GL(F.Identity(), [0.5 + 1j], 1.0)
        elif where == "noise_std":
            GL(F.Identity(), [0.5], np.complex128(1.0))
        elif where == "atoms":
            EP(torch.tensor([[1.0 + 1j]]), device="cpu")
        else:
            EP([[0.0]], device="cpu").denoise(np.array([[1j]]), 0.5)


def test_float32_atoms_whose_squares_overflow():
    with pytest.raises(ValueError, match="^atoms:"):
        EP(torch.tensor([[2e19], [-2e19]]), device="cpu")


def test_ddpm_schedule_beta_start_above_beta_end():
    with pytest.raises(ValueError, match="^beta_start"):
        fsdiag.DDPMSchedule(beta_start=1.0)


@pytest.mark.parametrize("schedule", [fsdiag.VPSchedule(), fsdiag.DDPMSchedule()])
@pytest.mark.parametrize("t", [math.inf, math.nan, -0.5])
def test_schedule_times_are_validated(schedule, t):
    with pytest.raises(ValueError, match="^t:"):
        schedule.alpha_bar(t)


def test_numpy_n_timesteps_does_not_wrap():
    sch = fsdiag.DDPMSchedule(n_timesteps=np.uint8(200))
    assert type(sch.n_timesteps) is int and sch.time_grid(100).shape == (101,)
    assert 0 < sch.alpha_bar(1.0) < 1


def test_schedule_parameter_types():
    with pytest.raises(TypeError, match="^beta_min:"):
        fsdiag.VPSchedule(beta_min="0.1")
    with pytest.raises(TypeError, match="^beta_max:"):
        fsdiag.VPSchedule(beta_max=True)


@pytest.mark.parametrize("covs", [[[[1.0, 0.5], [0.0, 1.0]]], [[[1.0, 2.0], [2.0, 1.0]]]])
def test_gaussian_mixture_rejects_bad_covariances(covs):
    with pytest.raises(ValueError, match="^covs:"):
        testbeds.GaussianMixture([1.0], [[0.0, 0.0]], covs)


def test_affine_never_casts_its_matrix_to_int():
    out = F.Affine([[0.7, 1.4]])(torch.tensor([[1, 2]]))
    assert out.is_floating_point() and abs(float(out) - 3.5) < 1e-6


def test_mask_none_and_vjp_shapes():
    with pytest.raises(TypeError, match="^mask:"):
        F.Mask(None)
    A = F.Affine([[1.0, 2.0]])
    with pytest.raises(ValueError, match="^v:"):
        A.vjp(torch.zeros(3, 2), torch.zeros(2, 1))
    with pytest.raises(ValueError, match="^x:"):
        A.vjp(torch.zeros(3, 5), torch.zeros(3, 1))


def test_wasserstein_of_an_empty_sample():
    with pytest.raises(ValueError, match="^v:"):
        diagnostics.wasserstein_1d([1.0], [])


def test_wilson_interval_counts_in_range():
    with pytest.raises(ValueError, match="^k:"):
        diagnostics.wilson_interval(5, 2)


@pytest.mark.parametrize("fn", [testbeds.swiss_roll, testbeds.torus, testbeds.sphere])
def test_manifold_data_needs_a_generator(fn):
    with pytest.raises(TypeError, match="^generator:"):
        fn(5, None)


def test_tiny_noise_std_is_named():
    prior = EP([[0.0], [1e10]], device="cpu")
    with pytest.raises(ValueError, match="^noise_std:"):
        fsdiag.posterior_weights(prior, GL(F.Identity(), [0.5], 1e-300))


def test_dimension_mismatch_names_the_forward_model():
    prior = EP([[0.0, 1.0]], device="cpu")
    with pytest.raises(ValueError, match="^forward: .*atoms"):
        fsdiag.posterior_weights(prior, GL(F.Affine([[1.0, 2.0, 3.0]]), [0.5], 1.0))


def test_seed_beyond_int64():
    prior, lik = testbeds.three_atoms()
    with pytest.raises(ValueError, match="seed.*9223372036854775807"):
        fsdiag.sample(prior, lik, seed=2 ** 64, n_particles=4, n_steps=2, progress=False)


def test_t_min_as_a_string():
    prior, lik = testbeds.three_atoms()
    with pytest.raises(TypeError, match="^t_min:"):
        fsdiag.sample(prior, lik, t_min="0.5", n_particles=4, n_steps=2, progress=False)


def test_numeric_types_are_treated_alike():
    prior, lik = testbeds.three_atoms()
    kw = dict(n_particles=4, n_steps=3, progress=False)
    with pytest.raises(TypeError, match="^zeta:"):
        fsdiag.sample(prior, lik, method="zeta_dps", zeta=True, **kw)
    run = fsdiag.sample(prior, lik, method="zeta_dps", zeta=np.float32(0.3), **kw)
    assert run.approximation.zeta == pytest.approx(0.3)
    run = fsdiag.sample(prior, lik, record=np.int64(3), **kw)
    assert len(run.times) == 3
    run = fsdiag.sample(prior, lik, t_min=np.float64(0.05), n_particles=np.int32(4), n_steps=np.int64(3),
                        progress=False)
    assert run.samples.shape == (4, 1)


def test_diverging_sampler_raises_a_helpful_error():
    prior = EP(torch.tensor([[-3.0], [0.0], [3.0]], dtype=F64), device="cpu")
    lik = GL(F.Identity(), [1.0], 1e-8)
    with pytest.raises(FloatingPointError, match=r"sigma_dps.*t = .*step .*max \|x\|.*noise_std"):
        fsdiag.sample(prior, lik, method="sigma_dps", n_particles=64, n_steps=100, progress=False)


def test_cov_matvec_normalises_within_its_own_pass_in_float32_near_ties():
    # Near a tie between two atoms at small b, float32 logits round differently in the moments
    # pass and the covariance pass; normalising by the other pass's log_norm overshot by ~1e13.
    g = torch.Generator().manual_seed(0)
    atoms = (torch.randn(2000, 64, generator=g, dtype=torch.float64) + 2.0).to(torch.float32)
    prior = fsdiag.EmpiricalPrior(atoms, device="cpu")
    diam2 = float(torch.cdist(atoms.double(), atoms.double()).max() ** 2)
    for s in (1e-3, 3e-4):
        i = torch.arange(64)
        delta = atoms[i + 100] - atoms[i]
        t = torch.linspace(-3, 3, 64)[:, None] * s * s / delta.norm(dim=1, keepdim=True) ** 2
        abar = 1.0 / (1.0 + s * s)
        x = abar ** 0.5 * ((atoms[i] + atoms[i + 100]) / 2 + t * delta)
        v = torch.randn(64, 64, generator=g).to(torch.float32)
        cv = prior.cov_matvec(x, abar, v).double()
        # C(x_t) is the covariance of some weights on the atoms: |C v| <= diam^2 |v|.
        assert bool((cv.norm(dim=1) <= 1.01 * diam2 * v.double().norm(dim=1)).all())


def test_small_kernels_run_on_one_thread_and_restore_the_count():
    from fsdiag._threads import SMALL_WORK, threads_for
    before = torch.get_num_threads()
    with threads_for(SMALL_WORK - 1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with threads_for(SMALL_WORK):
        assert torch.get_num_threads() == before
