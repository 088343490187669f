"""SMC (TDS): weights, ESS and resampling by hand; convergence to the exact FSR posterior as particles grow;
every registered sampler (fsdiag.SAMPLERS) and the denoiser-pass counter."""
import math

import numpy as np
import pytest
import torch

import fsdiag
from fsdiag.sampling import (CountingPrior, Run, effective_sample_size, multinomial_resample, normalise, resample,
                             resample_if_degenerate, systematic_resample, tds)
from fsdiag._threads import threads_for
from fsdiag.testbeds import three_atoms


def split_three_atoms(y=-0.9):
    """The three-atom testbed with y between two atoms: exact posterior ~ (0.902, 0.098, 0)."""
    prior, _ = three_atoms()
    return prior, fsdiag.GaussianLikelihood(fsdiag.forward.Identity(), torch.tensor([y], dtype=torch.float64), 0.3)


# ------------------------------------------------------------------ weights and resampling
def test_normalised_weights_and_ess_by_hand():
    log_w = torch.log(torch.tensor([2.0, 1.0, 1.0]))
    torch.testing.assert_close(normalise(log_w), torch.tensor([0.5, 0.25, 0.25], dtype=torch.float64))
    assert float(normalise(log_w + 1e3).sum()) == pytest.approx(1.0)       # shift-invariant, no overflow
    assert effective_sample_size(log_w) == pytest.approx(1 / (0.25 + 2 * 0.0625))
    assert effective_sample_size(torch.zeros(7)) == pytest.approx(7.0)
    assert effective_sample_size(torch.tensor([0.0, -math.inf, -math.inf])) == pytest.approx(1.0)


def test_resampling_happens_only_below_the_ess_threshold():
    gen = torch.Generator().manual_seed(0)
    log_w = torch.log(torch.tensor([0.7, 0.1, 0.1, 0.1]))                  # ESS = 1 / 0.52 = 1.923
    idx, ess = resample_if_degenerate(log_w, 0.5, gen)                       # threshold 2.0 > ESS
    assert ess == pytest.approx(1 / 0.52) and idx is not None and idx.shape == (4,)
    idx, ess = resample_if_degenerate(log_w, 0.45, gen)                      # threshold 1.8 < ESS
    assert idx is None
    assert resample_if_degenerate(torch.zeros(4), 1.0, gen)[0] is None        # ESS = n is never below n


def test_systematic_resampling_is_unbiased_with_counts_within_one():
    w = torch.tensor([0.05, 0.3, 0.15, 0.5], dtype=torch.float64)
    n = 10
    gen = torch.Generator().manual_seed(1)
    counts = torch.stack([torch.bincount(systematic_resample(w, n, gen), minlength=4) for _ in range(4000)])
    assert bool(((counts - n * w).abs() < 1).all())                         # floor(n w_i) or ceil(n w_i)
    assert bool((counts.sum(1) == n).all())
    torch.testing.assert_close(counts.double().mean(0), n * w, atol=0.03, rtol=0)   # E[count] = n w (sd ~ 0.008)


def test_multinomial_resampling_is_unbiased():
    w = torch.tensor([0.05, 0.3, 0.15, 0.5], dtype=torch.float64)
    gen = torch.Generator().manual_seed(2)
    counts = torch.bincount(multinomial_resample(w, 200_000, gen), minlength=4).double() / 200_000
    torch.testing.assert_close(counts, w, atol=5e-3, rtol=0)
    with pytest.raises(ValueError, match="resampling"):
        resample(torch.zeros(3), gen, "stratified?")


# ------------------------------------------------------------------ the sampler
@pytest.fixture(scope="module")
def convergence():
    """TV over atoms of TDS at 64 and 1024 particles (4 seeds each), its floor, and sigma-DPS at 1024."""
    prior, lik = split_three_atoms()
    out = {}
    for n in (64, 1024):
        runs = [tds(prior, lik, n_particles=n, n_steps=100, seed=s, progress=False) for s in range(4)]
        reps = [fsdiag.evaluate(r.samples, prior, lik, t_final=r.t_final) for r in runs]
        out[n] = {"tv": float(np.mean([r.tv_atoms for r in reps])), "floor": reps[0].tv_floor_atoms, "runs": runs}
    with threads_for(0):
        dps = fsdiag.sample(prior, lik, method="sigma_dps", n_particles=1024, n_steps=100, seed=0, progress=False)
    out["sigma_dps"] = fsdiag.evaluate(dps.samples, prior, lik, t_final=dps.t_final).tv_atoms
    return out


def test_tds_converges_to_the_exact_posterior_as_particles_grow(convergence):
    small, large = convergence[64], convergence[1024]
    # measured: 0.016 at 64 (floor 0.030), 0.0045 at 1024 (floor 0.0079); sigma-DPS 0.17
    assert large["tv"] <= 3 * large["floor"]
    assert large["tv"] < 0.6 * small["tv"]
    assert convergence["sigma_dps"] > 10 * large["floor"] and convergence["sigma_dps"] > 10 * large["tv"]


def test_tds_estimates_the_evidence(convergence):
    prior, lik = split_three_atoms()
    exact = float(torch.logsumexp(lik.log_prob(prior.atoms) + prior.log_weights, 0))
    for run in convergence[1024]["runs"]:
        assert run.info["log_evidence"] == pytest.approx(exact, abs=0.1)


def test_tds_bookkeeping_and_run_compatibility(convergence):
    run = convergence[1024]["runs"][0]
    assert isinstance(run, Run) and isinstance(run, fsdiag.Run) and run.method == "tds"
    info = run.info
    assert len(info["ess"]) == run.n_steps + 1 and all(0 < e <= 1024 * (1 + 1e-9) for e in info["ess"])
    # resampled exactly where the ESS fell below half the particles
    assert info["resampled"] == [k for k, e in enumerate(info["ess"][:-1]) if e < 0.5 * 1024]
    assert run.samples.shape == (1024, 1) and bool((run.times[1:] < run.times[:-1]).all())
    prior, lik = split_three_atoms()
    rep = fsdiag.diagnose(run, prior, lik)
    assert rep.method == "tds" and rep.spread is not None and math.isfinite(rep.tv_atoms)


def test_tds_puts_no_mass_on_atoms_that_pigdm_hallucinates():
    prior, lik = three_atoms()                                   # DESIGN §8: pigdm 7.6% + 2.0% excluded
    run = tds(prior, lik, n_particles=512, n_steps=100, seed=0, progress=False)
    with threads_for(0):                                         # a small problem: one thread (fsdiag._threads)
        pig = fsdiag.sample(prior, lik, method="pigdm", n_particles=512, n_steps=100, seed=0, progress=False)
    excluded = [fsdiag.evaluate(r.samples, prior, lik, t_final=r.t_final).excluded_mass for r in (run, pig)]
    assert excluded[0] < 0.005 and excluded[1] > 0.05


@pytest.mark.parametrize("r2", ["paper", "song", "none"])
def test_tds_runs_on_nonlinear_models_and_testbed_priors(r2):
    prior = fsdiag.EmpiricalPrior(torch.randn(40, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64),
                                  device="cpu")
    lik = fsdiag.GaussianLikelihood(fsdiag.forward.Radial(), [1.0], 0.2)
    run = tds(prior, lik, n_particles=64, n_steps=20, seed=0, progress=False, r2=r2, resampling="multinomial")
    assert torch.isfinite(run.samples).all() and math.isfinite(run.info["log_evidence"])
    gm = fsdiag.testbeds.GaussianMixture([0.5, 0.5], [[-1.0, 0.0], [1.0, 0.0]], [0.1, 0.1])
    lin = fsdiag.GaussianLikelihood(fsdiag.forward.Affine(torch.tensor([[1.0, 1.0]], dtype=torch.float64)), [0.5], 0.3)
    assert torch.isfinite(tds(gm, lin, n_particles=32, n_steps=10, seed=0, progress=False, r2=r2).samples).all()


def test_tds_is_deterministic_and_record_does_not_change_the_samples():
    prior, lik = split_three_atoms()
    a = tds(prior, lik, n_particles=64, n_steps=20, seed=3, progress=False)
    b = tds(prior, lik, n_particles=64, n_steps=20, seed=3, progress=False, record=3)
    c = tds(prior, lik, n_particles=64, n_steps=20, generator=torch.Generator().manual_seed(3), progress=False)
    assert torch.equal(a.samples, b.samples) and torch.equal(a.samples, c.samples)
    assert a.info["resampled"] == b.info["resampled"] and len(b.times) == 3
    assert not torch.equal(a.samples, tds(prior, lik, n_particles=64, n_steps=20, seed=4, progress=False).samples)


@pytest.mark.parametrize("kw,exc,name", [
    ({"r2": "x"}, ValueError, "r2"), ({"ess_threshold": 1.5}, ValueError, "ess_threshold"),
    ({"ess_threshold": "half"}, TypeError, "ess_threshold"), ({"resampling": "stratified"}, ValueError, "resampling"),
    ({"n_particles": 0}, ValueError, "n_particles"), ({"n_steps": 2.5}, TypeError, "n_steps"),
    ({"t_min": 0.0}, ValueError, "t_min"), ({"schedule": fsdiag.DDPMSchedule()}, TypeError, "schedule"),
    ({"seed": None}, ValueError, "seed"), ({"record": "all"}, TypeError, "record"),
    ({"generator": 3}, TypeError, "generator")])
def test_tds_bad_arguments_name_the_argument(kw, exc, name):
    prior, lik = split_three_atoms()
    with pytest.raises(exc, match=name):
        tds(prior, lik, **{"n_particles": 4, "n_steps": 2, "progress": False, **kw})
    with pytest.raises(TypeError, match="prior"):
        tds("atoms", lik, n_particles=4, n_steps=2, progress=False)


# ------------------------------------------------------------------ every registered sampler; counting passes
@pytest.mark.parametrize("name", sorted(fsdiag.SAMPLERS))
def test_every_registered_sampler_runs_is_seeded_and_names_bad_arguments(name):
    fn = fsdiag.SAMPLERS[name]
    prior, lik = split_three_atoms()
    kw = {"n_particles": 16, "n_steps": 4, "progress": False}
    a, b = fn(prior, lik, seed=5, **kw), fn(prior, lik, seed=5, **kw)
    assert isinstance(a, Run) and a.method == {"sample": "fsr"}.get(name, name) and a.samples.shape == (16, 1)
    assert bool(torch.isfinite(a.samples).all()) and torch.equal(a.samples, b.samples)
    assert not torch.equal(a.samples, fn(prior, lik, seed=6, **kw).samples)
    for bad, exc in (({"n_particles": 0}, ValueError), ({"n_steps": 1.5}, TypeError), ({"seed": -1}, ValueError)):
        with pytest.raises(exc, match=next(iter(bad))):
            fn(prior, lik, **{**kw, **bad})


def test_counting_prior_counts_every_denoiser_pass():
    """Rows x passes, by hand: sigma_dps one Tweedie mean and one VJP per step (+ the final Tweedie mean);
    TDS the same at each of the n_steps + 1 grid times; MCGdiff one Tweedie mean per grid time."""
    prior, lik = split_three_atoms()
    n, k = 8, 5
    c = CountingPrior(prior)
    fsdiag.sample(c, lik, method="sigma_dps", n_particles=n, n_steps=k, progress=False)
    assert c.counts == {"moments": n * (k + 1), "denoise": 0, "denoiser_vjp": n * k, "cov_matvec": 0}
    c.reset()
    tds(c, lik, n_particles=n, n_steps=k, progress=False)
    assert c.counts["moments"] == n * (k + 1) and c.counts["denoiser_vjp"] == n * (k + 1)
    c.reset()
    fsdiag.sampling.mcgdiff(c, lik, n_particles=n, n_steps=k, progress=False)
    assert c.tweedie_evaluations == n * (k + 1) and c.evaluations == n * (k + 1)
    c.reset()
    fsdiag.sample(c, lik, method="tmpd", n_particles=n, n_steps=k, progress=False)   # C A^T: one product per row of A
    assert c.counts["cov_matvec"] == n * k * 1 and c.evaluations == n * (k + 1) + n * k
    x = torch.zeros(3, 1, dtype=torch.float64)
    torch.testing.assert_close(c.denoise(x, 0.5), prior.denoise(x, 0.5))          # the wrapped prior's answers
    assert c.n_atoms == 3 and c.counts["denoise"] == 3
    with pytest.raises(TypeError, match="prior"):
        CountingPrior("atoms")
