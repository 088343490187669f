"""Regressions for numerical defects found by fuzzing the public surface (one test per defect).

Each case is pinned against a closed form computed independently here (float64, exact rationals
with `fractions`, or a limit the module docstrings state), not against the code's own output."""
import math
import warnings
from fractions import Fraction

import numpy as np
import pytest
import torch

import fsdiag
from fsdiag import diagnostics, forward, networks, sampling, testbeds
from fsdiag._checks import check_int, check_real

F64 = torch.float64


def _atoms(n=40, d=2, seed=0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=F64)


def _net(atoms, **kw):
    """A tiny network: a few steps are enough for these tests (they test arithmetic, not fit)."""
    kw = {"steps": 4, "width": 8, "depth": 1, "batch_size": 16, "device": "cpu", "progress": False, **kw}
    return networks.train_denoiser(atoms, **kw)


def _gaussian_denoiser(x, abar, center, s):
    """E[x0 | x_t] for x0 ~ N(c, s^2 I), exactly (float64 rationals), as a float64 tensor:
    c + a s^2 / (abar s^2 + 1 - abar) (x_t - a c). Equal to an untrained network's (F = 0)."""
    ab = Fraction(abar)
    s2 = Fraction(s) ** 2
    a = math.sqrt(abar)                       # a enters once in the gain and once in the offset
    gain = float(s2 / (ab * s2 + 1 - ab)) * a
    return center.to(F64) + gain * (x.to(F64) - a * center.to(F64))


# ------------------------------------------------------------------ 1. network at extreme abar
@pytest.mark.parametrize("abar", [5e-324, 1e-300, 1e-30, 1 - 1e-9, 1 - 2 ** -53])
def test_network_denoiser_is_finite_and_exact_at_extreme_abar(abar):
    """float32 network: abar rounded to 0 or 1 in float32 made sigma^2 = inf or 0 and the
    preconditioning NaN. The untrained network (F = 0) is the Gaussian denoiser: compare exactly."""
    atoms = _atoms()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(5, 2, generator=g)
    for tr, tol in ((_net(atoms, steps=0, dtype=torch.float32), 1e-5), (_net(atoms, steps=0, dtype=F64), 1e-12)):
        prior = networks.NetworkPrior(tr)
        den = tr.denoiser
        out = prior.denoise(x, abar)
        assert out.shape == (5, 2) and out.dtype == tr.denoiser.center.dtype and bool(torch.isfinite(out).all())
        exact = _gaussian_denoiser(x, abar, den.center, den.sigma_data)
        assert torch.allclose(out.double(), exact, rtol=tol, atol=tol), (abar, out, exact)
        assert bool(torch.isfinite(prior.score(x, abar)).all())
        assert bool(torch.isfinite(prior.moments(x, abar).mean).all())
    # A trained one: finite, and at abar -> 1 the identity (no noise to remove).
    trained = networks.NetworkPrior(_net(atoms, dtype=torch.float32))
    out = trained.denoise(x, abar)
    assert bool(torch.isfinite(out).all())
    if abar > 0.5:
        assert torch.allclose(out, x, atol=1e-3)


# ------------------------------------------------------------------ 2. training on huge atoms
def test_training_on_atoms_too_large_for_the_dtype_is_refused_by_name():
    """float32 atoms ~1e30: the spread squared overflowed float32 and a NaN network came back."""
    atoms = (_atoms() * 1e30).to(torch.float32)
    with pytest.raises(ValueError, match="^atoms:"):
        _net(atoms, dtype=torch.float32)
    # Untrained (steps = 0) it is the Gaussian denoiser, computable at any scale.
    tr = _net(atoms, steps=0, dtype=torch.float32)
    assert all(bool(torch.isfinite(p).all()) for p in tr.denoiser.parameters())
    assert math.isfinite(tr.denoiser.sigma_data)
    out = networks.NetworkPrior(tr).denoise(atoms[:3], 0.5)
    assert bool(torch.isfinite(out).all())
    # Large but trainable atoms still train, and the result is finite.
    tr = _net((_atoms() * 1e4).to(torch.float32), dtype=torch.float32)
    assert all(bool(torch.isfinite(p).all()) for p in tr.denoiser.parameters())
    assert all(math.isfinite(v) for v in tr.losses)


def test_a_diverging_training_raises_instead_of_returning_nan_weights():
    with pytest.raises(FloatingPointError, match="^lr:"):
        _net(_atoms(), lr=1e30, steps=20, dtype=torch.float32)


# ------------------------------------------------------------------ 3. corrupt weight cache
@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "wrong_shapes", "not_a_dict", "nan"])
def test_unusable_cached_weights_are_retrained_and_rewritten(tmp_path, damage):
    atoms = _atoms()
    kw = {"weights_dir": tmp_path / "w", "dtype": torch.float32}
    first = _net(atoms, **kw)
    good = first.path.read_bytes()
    if damage == "truncated":
        first.path.write_bytes(good[: len(good) // 2])
    elif damage == "garbage":
        first.path.write_bytes(b"\x80\x04not a torch file" * 8)
    elif damage == "empty":
        first.path.write_bytes(b"")
    else:
        saved = torch.load(first.path, weights_only=True)
        if damage == "wrong_shapes":
            saved["state"] = {k: torch.zeros(3) for k in saved["state"]}
        elif damage == "nan":
            saved["state"] = {k: torch.full_like(v, math.nan) for k, v in saved["state"].items()}
        else:
            saved = [1, 2, 3]
        torch.save(saved, first.path)
    with pytest.warns(RuntimeWarning, match="^weights_dir: ignoring"):
        again = _net(atoms, **kw)
    assert again.trained and again.path == first.path
    assert again.path.read_bytes() == good                           # rewritten: same seed, same weights
    assert sorted(p.name for p in again.path.parent.iterdir()) == [first.path.name]   # no temporaries left
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        third = _net(atoms, **kw)                                    # now it loads, silently
    assert not third.trained
    x = torch.randn(4, 2, generator=torch.Generator().manual_seed(0))
    assert torch.equal(networks.NetworkPrior(third).denoise(x, 0.3), networks.NetworkPrior(first).denoise(x, 0.3))


# ------------------------------------------------------------------ 4. sigma beyond float range
def test_exact_denoiser_sigma_beyond_float_range_is_infinite():
    """10**400 raised OverflowError; sigma = inf is supported (the prior mean)."""
    prior = fsdiag.EmpiricalPrior(_atoms(), weights=torch.arange(1, 41, dtype=F64), device="cpu")
    den = fsdiag.ExactDenoiser(prior)
    x = _atoms(3, seed=5)
    mean = (prior.weights[:, None] * prior.atoms).sum(0)
    for sigma in (10 ** 400, [10 ** 400] * 3, [[10 ** 400]] * 3, np.array([10 ** 400] * 3, dtype=object)):
        out = den(x, sigma)
        assert torch.allclose(out, mean.expand(3, 2), rtol=1e-12, atol=1e-12)
        assert torch.equal(out, den(x, math.inf))
    mixed = den(x, [10 ** 400, 0.5, 2])                               # per sample: inf beside finite levels
    assert torch.equal(mixed[0], den(x[:1], math.inf)[0])
    assert torch.allclose(mixed[1:], torch.stack([den(x[1:2], 0.5)[0], den(x[2:], 2.0)[0]]), rtol=1e-12)
    for bad in (-10 ** 400, [0.5, -10 ** 400, 1.0]):
        with pytest.raises(ValueError, match="^sigma:"):
            den(x, bad)
    for bad in (10 ** 400, -10 ** 400, [10 ** 400] * 3):
        with pytest.raises(ValueError, match="^abar:"):
            den.vp(x, bad)


# ------------------------------------------------------------------ 5. CountingPrior inputs
def test_counting_prior_accepts_what_the_prior_accepts():
    prior = fsdiag.EmpiricalPrior(_atoms(d=1), device="cpu")
    counting = sampling.CountingPrior(prior)
    assert torch.equal(counting.denoise([[0.5]], 0.5), prior.denoise([[0.5]], 0.5))
    assert torch.equal(counting.moments(np.array([[0.5], [1.0]]), 0.5).mean, prior.moments([[0.5], [1.0]], 0.5).mean)
    v = [[[1.0], [2.0], [3.0]], [[1.0], [0.0], [0.0]]]                 # (2, k = 3, 1) as a list
    assert torch.equal(counting.cov_matvec([[0.5], [1.0]], 0.5, v), prior.cov_matvec([[0.5], [1.0]], 0.5, v))
    assert torch.equal(counting.denoiser_vjp([[0.5]], 0.5, v=[[1.0]]), prior.denoiser_vjp([[0.5]], 0.5, [[1.0]]))
    assert counting.counts == {"moments": 2, "denoise": 1, "denoiser_vjp": 1, "cov_matvec": 6}
    with pytest.raises(ValueError, match="^x:"):
        counting.denoise([[0.5, 1.0]], 0.5)                           # refused: no pass, nothing counted
    assert counting.evaluations == 10


# ------------------------------------------------------------------ 6. meta-device tensors
def _meta(*shape):
    return torch.zeros(*shape, dtype=F64, device="meta")


def _meta_calls():
    prior = fsdiag.EmpiricalPrior(_atoms(), device="cpu")
    den = fsdiag.ExactDenoiser(prior)
    lik = fsdiag.GaussianLikelihood(forward.Identity(), [0.1, 0.2], 0.5)
    x = _atoms(3, seed=2)
    net = networks.NetworkPrior(_net(_atoms(), steps=0, dtype=F64))
    return [
        ("x", lambda: den(_meta(3, 2), 0.5)),
        ("sigma", lambda: den(x, torch.zeros(3, device="meta"))),
        ("sigma", lambda: den(x, torch.tensor(0.5, device="meta"))),
        ("x_t", lambda: den.vp(_meta(3, 2), 0.5)),
        ("atoms", lambda: fsdiag.EmpiricalPrior(_meta(3, 2), device="cpu")),
        ("weights", lambda: fsdiag.EmpiricalPrior(x, weights=_meta(3), device="cpu")),
        ("x", lambda: prior.denoise(_meta(3, 2), 0.5)),
        ("abar", lambda: prior.denoise(x, torch.tensor(0.5, device="meta"))),
        ("v", lambda: prior.cov_matvec(x, 0.5, _meta(3, 2))),
        ("log_lik", lambda: prior.moments(x, 0.5, _meta(40))),
        ("x", lambda: net.denoise(_meta(3, 2), 0.5)),
        ("v", lambda: net.denoiser_vjp(x, 0.5, _meta(3, 2))),
        ("samples", lambda: fsdiag.evaluate(_meta(3, 2), prior, lik)),
        ("x", lambda: forward.Radial()(_meta(3, 2))),
        ("v", lambda: forward.Radial().vjp(x, _meta(3, 1))),
        ("matrix", lambda: forward.Affine(_meta(1, 2))),
        ("y", lambda: fsdiag.GaussianLikelihood(forward.Identity(), _meta(2), 0.5)),
        ("x", lambda: lik.log_prob(_meta(3, 2))),
        ("means", lambda: testbeds.GaussianMixture([1.0], _meta(1, 2), [0.5])),
        ("mean", lambda: testbeds.GaussianPrior(_meta(2), torch.eye(2, dtype=F64))),
        ("x", lambda: testbeds.GaussianPrior([0.0, 0.0], torch.eye(2, dtype=F64)).denoise(_meta(3, 2), 0.5)),
        ("p", lambda: diagnostics.total_variation(_meta(3), [0.2, 0.3, 0.5])),
        ("labels", lambda: diagnostics.mode_weights([0.5, 0.5], [0.5, 0.5], torch.zeros(2, dtype=torch.long,
                                                                                          device="meta"), 4)),
        ("t", lambda: check_real(torch.tensor(0.5, device="meta"), "t")),
        ("n", lambda: check_int(torch.tensor(3, device="meta"), "n")),
    ]


@pytest.mark.parametrize("case", range(25))
def test_meta_device_tensors_are_refused_by_name(case):
    calls = _meta_calls()
    assert len(calls) == 25
    name, fn = calls[case]
    with pytest.raises((ValueError, TypeError), match=f"^{name}: a tensor on the meta device has no values"):
        fn()


# ------------------------------------------------------------------ 7. Radial in float32
def test_radial_norm_and_vjp_are_scaled_in_float32():
    model = forward.Radial()
    x = torch.tensor([[1e30, 1e30, 1e30], [1e-30, -1e-30, 1e-30], [3.0, 4.0, 0.0], [1e-45, 0.0, 0.0],
                      [0.0, 0.0, 0.0], [2e19, 0.0, -2e19]], dtype=torch.float32)
    x64 = x.double()
    norm = x64.norm(dim=1, keepdim=True)
    r = model(x)
    assert r.dtype == torch.float32 and bool(torch.isfinite(r).all())
    assert torch.allclose(r.double(), norm, rtol=1e-6, atol=0)
    v = torch.tensor([[2.0], [1.0], [1.0], [3.0], [1.0], [1.0]])
    g = model.vjp(x, v)
    exact = torch.where(norm > 0, x64 / norm.clamp_min(1e-300), torch.zeros_like(x64)) * v.double()
    assert bool(torch.isfinite(g).all()) and torch.allclose(g.double(), exact, rtol=1e-6, atol=1e-7)
    assert torch.equal(model(x[2:3]), x[2:3].norm(dim=1, keepdim=True))     # ordinary rows: the plain norm
    # autograd through the forward agrees with the closed-form vjp
    xg = x[:3].clone().requires_grad_()
    model(xg).sum().backward()
    assert torch.allclose(xg.grad, model.vjp(x[:3], torch.ones(3, 1)), rtol=1e-6)
    with pytest.raises(FloatingPointError, match="^x:"):
        model(torch.full((1, 2), 3e38))                                      # sqrt(2) * 3e38 > float32 max
    # PolarAngle's vjp: (-x2, x1) / r^2, its r^2 overflowed and underflowed the same way
    pa = forward.PolarAngle()
    xs = torch.tensor([[1e30, 2e30], [1e-30, -3e-30], [3.0, 4.0]], dtype=torch.float32)
    x64 = xs.double()
    r2 = (x64 ** 2).sum(1)
    exact = torch.stack([-x64[:, 1] / r2, x64[:, 0] / r2], 1)
    assert torch.allclose(pa.vjp(xs, torch.ones(3, 1)).double(), exact, rtol=1e-6, atol=0)


# ------------------------------------------------------------------ 8. posterior weights at extremes
def _exact_posterior(atoms, weights, y, noise):
    """psi_i for scalar atoms, identity forward model: the quadratics in exact rationals, relative to
    atom 0 (so y's 1e30 cancels exactly), the log weights in float64, then a float64 softmax."""
    xs, yy, s2 = [Fraction(a) for a in atoms], Fraction(y), Fraction(noise) ** 2
    rel = [float(((yy - xs[0]) ** 2 - (yy - xi) ** 2) / (2 * s2)) for xi in xs]
    logits = [math.log(w) + r for w, r in zip(weights, rel)]
    top = max(logits)
    e = [math.exp(v - top) for v in logits]
    return [v / sum(e) for v in e]


@pytest.mark.parametrize("atoms, weights, y, noise, dtype", [
    # the weights alone: 1e-300 beside 1e300 normalised to 1e-600 = 0, i.e. log -inf
    ([0.0, 60.0], [1e300, 1e-300], 60.0, 1.0, F64),
    # the likelihood alone: l_i ~ -5e75 at y = 1e30, noise 1e-8, differences ~1 swamped by rounding
    ([0.0, 1e-46, -2e-46], [1.0, 1.0, 1.0], 1e30, 1e-8, F64),
    # both: likelihood gains of ~1381.5 and ~1382.5 against the weights' log(1e-600) = -1381.55
    ([0.0, 1.3815e-43, 1.3825e-43], [1e300, 1e-300, 1e-300], 1e30, 1e-8, F64),
    # a float32 prior (its atoms rounded to float32 first; psi is formed in float64 whatever the dtype)
    ([0.0, 1.3815e-33, 1.3825e-33], [1e300, 1e-300, 1e-300], 1e20, 1e-8, torch.float32),
])
def test_posterior_weights_are_exact_at_extreme_scales(atoms, weights, y, noise, dtype):
    stored = torch.tensor(atoms, dtype=F64).to(dtype)
    prior = fsdiag.EmpiricalPrior(stored[:, None], weights=weights, device="cpu")
    lik = fsdiag.GaussianLikelihood(forward.Identity(), [y], noise)
    psi = fsdiag.posterior_weights(prior, lik)
    exact = torch.tensor(_exact_posterior(stored.double().tolist(), weights, y, noise), dtype=F64)
    assert 1e-3 < float(exact.max()) < 1 - 1e-3 or len(atoms) == 2     # a non-trivial answer
    tol = 1e-9 if dtype == F64 else 1e-6
    assert psi.dtype == dtype and 0.5 * float((psi.double() - exact).abs().sum()) < tol, (psi.tolist(), exact.tolist())


def test_sigma_zero_limit_with_a_tiny_positive_weight_is_the_nearest_atom():
    prior = fsdiag.EmpiricalPrior([[0.0], [1.0], [2.0]], weights=[1e300, 1e-300, 0.0], device="cpu")
    out = fsdiag.ExactDenoiser(prior)(torch.tensor([[1.1]], dtype=F64), 0.0)
    assert torch.equal(out, torch.tensor([[1.0]], dtype=F64))


def test_posterior_weights_of_ordinary_problems_are_unchanged():
    """Below |l_i| = 1e3 the plain float64 l_i are used: bit-identical to softmax(log pi + l)."""
    prior, lik = testbeds.three_atoms()
    psi = fsdiag.posterior_weights(prior, lik)
    ll = lik.log_prob(prior.atoms.double())
    assert torch.equal(psi, torch.log_softmax(prior.engine.log_weights64 + ll, 0).to(prior.dtype).exp())


# ------------------------------------------------------------------ 9. complex v
def _complex_vs(shape):
    t = torch.ones(shape, dtype=torch.complex128) * (0.5 + 1j)
    return [t, t.to(torch.complex64), t.numpy(), t.tolist()]


@pytest.mark.parametrize("kernel", ["cov_matvec", "denoiser_vjp"])
def test_complex_v_is_refused_by_name(kernel):
    x = _atoms(3, seed=3)
    priors = [fsdiag.EmpiricalPrior(_atoms(), device="cpu"),
              networks.NetworkPrior(_net(_atoms(), steps=0, dtype=F64)),
              testbeds.GaussianPrior([0.0, 0.0], torch.eye(2, dtype=F64))]
    for prior in priors:
        for v in _complex_vs((3, 2)) + _complex_vs((3, 2, 2)):
            with pytest.raises(TypeError, match="^v:"):
                getattr(prior, kernel)(x, 0.5, v)
    for model in (forward.Radial(), forward.Affine([[1.0, 2.0]]), forward.AbsoluteValue()):
        m = model.out_dim(2)
        for v in _complex_vs((3, m)):
            with pytest.raises(TypeError, match="^v:"):
                model.vjp(x, v)


# ------------------------------------------------------------------ found by the property tests
def test_gaussian_testbed_far_queries_raise_instead_of_nan():
    """GaussianMixture kernels at x = 1e300: every squared distance overflowed, the softmax over
    components was 0 / 0 and the denoiser returned NaN (found by tests/test_properties.py::
    test_counting_prior). Now the documented FloatingPointError naming x, as EmpiricalPrior's."""
    for prior in (testbeds.GaussianPrior([0.0], [[1.0]]),
                  testbeds.GaussianMixture([0.5, 0.5], [[-1.0], [1.0]], [0.3, 0.3])):
        for fn in (lambda: prior.denoise([[1e300]], 0.5), lambda: prior.moments([[1e300]], 0.5),
                   lambda: prior.score([[1e300]], 0.5), lambda: prior.cov_matvec([[1e300]], 0.5, [[1.0]])):
            with pytest.raises(FloatingPointError, match="^x:"):
                fn()
        ordinary = prior.denoise([[0.3]], 0.5)                         # unchanged elsewhere
        assert bool(torch.isfinite(ordinary).all())


# ------------------------------------------------------------------ 10. diagnostics of grad tensors
def test_diagnostics_read_tensors_that_require_grad():
    p = torch.tensor([0.3, 0.7], dtype=F64, requires_grad=True)
    q = torch.tensor([0.5, 0.5], dtype=F64)
    assert diagnostics.total_variation(p, q) == pytest.approx(0.2, abs=1e-15)
    assert diagnostics.total_variation(q, p) == pytest.approx(0.2, abs=1e-15)
    u = torch.tensor([0.0, 1.0, 2.0], requires_grad=True)
    assert diagnostics.wasserstein_1d(u, [0.0, 1.0, 2.0], u_weights=torch.ones(3, requires_grad=True)) == 0.0
    lo, hi = diagnostics.wilson_interval(torch.tensor([3.0], requires_grad=True), 10)
    assert 0 < float(lo[0]) < 0.3 < float(hi[0]) < 1
    modes = diagnostics.mode_weights(p, q, torch.tensor([0, 1]), 10)
    assert modes["tv"] == pytest.approx(0.2, abs=1e-15)
