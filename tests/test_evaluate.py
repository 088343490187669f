"""evaluate: samples from any code judged against the exact posterior (closed forms, exact draws)."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fsdiag
from fsdiag.evaluate import monte_carlo_floor, nearest_atoms, support_set


def _problem():
    # Six atoms in three labelled modes; ||x|| = 2 excludes the mode at 6 and splits the other two.
    atoms = torch.tensor([[-2.0, 0.0], [-1.9, 0.1], [2.0, 0.0], [2.1, -0.1], [6.0, 0.0], [6.1, 0.0]],
                         dtype=torch.float64)
    prior = fsdiag.EmpiricalPrior(atoms, labels=[0, 0, 1, 1, 2, 2], device="cpu")
    lik = fsdiag.GaussianLikelihood(fsdiag.forward.Radial(), [2.0], 0.3)
    return prior, lik


def _exact_draws(prior, lik, n, seed):
    psi = fsdiag.posterior_weights(prior, lik)
    idx = torch.multinomial(psi, n, replacement=True, generator=torch.Generator().manual_seed(seed))
    return prior.atoms[idx]


def test_support_set_is_the_smallest_set_reaching_the_level():
    assert support_set([0.05, 0.5, 0.15, 0.3], 0.9).tolist() == [1, 2, 3]
    assert support_set([0.05, 0.5, 0.15, 0.3], 0.99).tolist() == [0, 1, 2, 3]
    assert support_set([1.0, 0.0], 0.99).tolist() == [0]


def test_monte_carlo_floor_matches_closed_forms():
    # One draw from (1/2, 1/2) is always at TV 1/2; two draws at TV 1/2 with probability 1/2, else 0.
    assert monte_carlo_floor([0.5, 0.5], 1, repeats=50)["mean"] == pytest.approx(0.5)
    assert monte_carlo_floor([0.5, 0.5], 2, repeats=4000)["mean"] == pytest.approx(0.25, abs=0.02)
    # Grouping two atoms into one mode removes the split between them.
    assert monte_carlo_floor([0.25, 0.25, 0.5], 2, groups=[0, 0, 1], repeats=4000)["mean"] == pytest.approx(0.25, abs=0.02)


def test_nearest_atoms_match_a_dense_search(gen):
    atoms = torch.randn(300, 5, generator=gen, dtype=torch.float64) + 50.0   # un-centred on purpose
    prior = fsdiag.EmpiricalPrior(atoms, device="cpu")
    x = atoms[torch.randint(0, 300, (40,), generator=gen)] + 0.05 * torch.randn(40, 5, generator=gen, dtype=torch.float64)
    idx, dist = nearest_atoms(prior, x, chunk=64)
    dense = torch.cdist(x, atoms)
    assert torch.equal(idx, dense.argmin(1))
    assert torch.allclose(dist, dense.min(1).values, atol=1e-9)


def test_exact_draws_score_at_the_monte_carlo_floor_and_the_prior_does_not():
    prior, lik = _problem()
    n = 2000
    rep = fsdiag.evaluate(_exact_draws(prior, lik, n, seed=1), prior, lik)
    assert rep.tv_atoms <= rep.floor["atoms"]["q95"] + 1e-12
    assert rep.tv_modes <= rep.floor["modes"]["q95"] + 1e-12
    assert 0.002 < rep.tv_floor_atoms < 0.05
    assert rep.excluded_mass == 0.0 and rep.hallucination["absent_modes"] == [2]
    assert rep.hallucination["off_support"] == 0.0
    for lo, hi, e in zip(rep.modes["lower"], rep.modes["upper"], rep.modes["exact"]):
        assert lo - 1e-9 <= e <= hi + 1e-9
    # Samples from the prior put a third of their mass on the excluded mode.
    idx = torch.arange(n) % prior.n_atoms
    bad = fsdiag.evaluate(prior.atoms[idx], prior, lik)
    assert bad.excluded_mass == pytest.approx(1 / 3, abs=1e-3)
    assert bad.hallucination["outside_support_modes"] == pytest.approx(1 / 3, abs=1e-3)
    assert bad.tv_modes > 10 * bad.tv_floor_modes


def test_images_and_rows_give_the_same_report():
    prior, lik = _problem()
    x = _exact_draws(prior, lik, 300, seed=2) + 0.01
    flat = fsdiag.evaluate(x, prior, lik).to_dict()
    img = fsdiag.evaluate(x.reshape(300, 1, 1, 2), prior, lik).to_dict()
    assert flat == img


def test_labels_override_and_off_support_samples_that_fit_y():
    prior, lik = _problem()
    # x = (0, 2) is far from every atom but fits ||x|| = 2 exactly: a likelihood mode.
    x = torch.tensor([[2.0, 0.0], [0.0, 2.0], [-2.0, 0.0], [6.0, 0.0]], dtype=torch.float64)
    rep = fsdiag.evaluate(x, prior, lik, labels=[0, 1, 2, 3, 4, 5])
    assert len(rep.modes["labels"]) == 6
    assert rep.hallucination["off_support"] == pytest.approx(0.25)
    assert rep.hallucination["likelihood_mode"] == pytest.approx(0.25)
    assert rep.excluded_mass == pytest.approx(0.25)    # the sample on the atom at 6


def test_trajectory_gives_spread_and_early_stopping_like_diagnose():
    prior, lik = _problem()
    run = fsdiag.sample_exact(prior, lik, n_particles=500, n_steps=40, seed=0, progress=False, record=5)
    via_run = fsdiag.diagnose(run, prior, lik)
    via_tuple = fsdiag.evaluate(run.samples, prior, lik, trajectory=(run.times, run.trajectory),
                                t_final=run.t_final)
    assert via_tuple.spread == via_run.spread
    es_a, es_b = via_tuple.early_stopping, via_run.early_stopping
    assert np.allclose(es_a["tweedie"], es_b["tweedie"]) and np.allclose(es_a["particle"], es_b["particle"])
    assert via_tuple.tv_atoms == via_run.tv_atoms
    assert fsdiag.evaluate(run.samples, prior, lik).spread is None


@pytest.mark.parametrize("kwargs,exc,match", [
    ({"samples": torch.zeros(4, 3)}, ValueError, "samples"),
    ({"samples": torch.zeros(0, 2)}, ValueError, "samples"),
    ({"samples": "abc"}, TypeError, "samples"),
    ({"labels": [0, 1]}, ValueError, "labels"),
    ({"level": 1.5}, ValueError, "level"),
    ({"negligible": 0}, ValueError, "negligible"),
    ({"t_final": 2.0}, ValueError, "t_final"),
    ({"radius": -1.0}, ValueError, "radius"),
    ({"trajectory": 3}, TypeError, "trajectory"),
    ({"trajectory": ([0.5], torch.zeros(2, 4, 2))}, ValueError, "trajectory"),
    ({"seed": -1}, ValueError, "seed"),
    ({"prior": "atoms"}, TypeError, "prior"),
])
def test_bad_arguments_name_themselves(kwargs, exc, match):
    prior, lik = _problem()
    args = {"samples": torch.zeros(4, 2, dtype=torch.float64), "prior": prior, "lik": lik, **kwargs}
    with pytest.raises(exc, match=match):
        fsdiag.evaluate(args.pop("samples"), args.pop("prior"), args.pop("lik"), **args)


def _finite(obj):
    if isinstance(obj, dict):
        return all(_finite(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return all(_finite(v) for v in obj)
    return not isinstance(obj, float) or math.isfinite(obj)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(n=st.integers(1, 30), scale=st.sampled_from([0.0, 1e-3, 1.0, 1e3]), seed=st.integers(0, 2 ** 16),
       image=st.booleans())
def test_any_valid_samples_give_a_finite_normalised_report(n, scale, seed, image):
    prior, lik = _problem()
    x = scale * torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    rep = fsdiag.evaluate(x.reshape(n, 2, 1) if image else x, prior, lik, seed=seed)
    assert _finite(rep.to_dict())
    assert sum(rep.atom_mass) == pytest.approx(1.0) and sum(rep.modes["sampler"]) == pytest.approx(1.0)
    assert 0.0 <= rep.tv_atoms <= 1.0 and 0.0 <= rep.tv_floor_modes <= 1.0
