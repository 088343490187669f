"""Property-based tests of the public surface (issue 6: no silent NaN, no raw crash).

Every call either returns a finite, correctly shaped, correctly normalised answer, or raises
ValueError / TypeError whose message names the caller's argument ("name: ..." or 'name'),
or the documented FloatingPointError. Inputs range over shapes (0-sized included), dtypes
(int, bool, float16/32/64, complex), containers (tensor, numpy, list), non-finite and extreme
values, unknown names and keywords, seeds and devices. "Clean" inputs (real, finite, moderate)
must succeed.
"""
import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fsdiag
from fsdiag import diagnostics as D
from fsdiag import testbeds as T
from fsdiag.forward import FORWARD_MODELS

settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
CI = settings.get_profile("ci")


def examples(n):
    return settings(CI, max_examples=n)


# ------------------------------------------------------------------ the property
def call(fn, *names):
    """fn() or None when it raised an allowed error; the error must name one of `names`."""
    try:
        return fn()
    except FloatingPointError:
        return None
    except (ValueError, TypeError) as err:
        msg = str(err)
        named = msg.split(":")[0].split(", ")          # "a: ..." or "a, b: ..." (a relation between two)
        assert any(n in named or f"'{n}'" in msg for n in names), \
            f"error does not name any of {names}: {type(err).__name__}: {msg}"
        return None


def finite(t):
    t = torch.as_tensor(t)
    return bool(torch.isfinite(t).all())


# ------------------------------------------------------------------ strategies
MODERATE = st.floats(-5, 5, allow_nan=False, width=32)
EXTREME = st.sampled_from([0.0, -0.0, 1e-300, 1e-40, -1e30, 1e30, 3e38, 1e300, math.nan, math.inf, -math.inf])
DTYPES = [torch.float64, torch.float32, torch.float16, torch.int64, torch.bool, torch.complex64]


@st.composite
def arrays(draw, shape, *, clean_only=False):
    """(an array-like of `shape`, clean), clean: real, finite and moderate, so it must be accepted."""
    n = int(np.prod(shape))
    extreme = (not clean_only) and draw(st.booleans())
    vals = draw(st.lists(st.one_of(MODERATE, EXTREME) if extreme else MODERATE, min_size=n, max_size=n))
    t = torch.tensor(vals, dtype=torch.float64).reshape(shape)
    dtype = torch.float64 if clean_only else draw(st.sampled_from(DTYPES))
    if dtype in (torch.int64, torch.bool):
        t = t.nan_to_num(0.0, 0.0, 0.0).clamp(-1e6, 1e6)     # a float -> int cast of nan / inf is undefined
    t = t.to(dtype)
    kind = draw(st.sampled_from(["tensor", "numpy", "list"] if n else ["tensor", "numpy"]))  # [] loses the shape
    obj = t if kind == "tensor" else t.numpy() if kind == "numpy" else t.tolist()
    clean = not t.is_complex() and bool((t.double().abs() <= 5).all())
    return obj, clean


REALS = st.one_of(st.floats(0.01, 0.99), st.sampled_from(
    [0.0, 1.0, -0.5, 2.0, math.nan, math.inf, "0.5", True, None, 1j, np.float32(0.3), np.float64(0.7),
     torch.tensor(0.4), torch.tensor([0.4]), np.int64(0)]))
INTS = st.one_of(st.integers(-2, 4), st.sampled_from([2.5, "3", True, None, np.int64(2), np.uint8(3), 2 ** 64]))
SEEDS = st.sampled_from([0, 7, np.int64(3), -1, 2 ** 63, 2 ** 63 - 1, None, "1", 1.5, True])
DEVICES = st.sampled_from(["cpu", "auto", torch.device("cpu"), "meta", "mps", "xpu", "cuda", "tpu9", 3, None])


@st.composite
def priors(draw, *, max_n=6, max_d=3):
    """A valid EmpiricalPrior: small, float32 or float64, some zero weights, tiny chunks."""
    n, d = draw(st.integers(1, max_n)), draw(st.integers(1, max_d))
    atoms = torch.tensor(draw(st.lists(MODERATE, min_size=n * d, max_size=n * d)), dtype=torch.float64).reshape(n, d)
    w = None
    if draw(st.booleans()):
        w = torch.tensor(draw(st.lists(st.sampled_from([0.0, 0.5, 1.0, 1e-300, 1e300]), min_size=n, max_size=n)),
                         dtype=torch.float64)
        if not bool((w > 0).any()):
            w[-1] = 1.0
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    return fsdiag.EmpiricalPrior(atoms, weights=w, labels=torch.arange(n) % 2, dtype=dtype, device="cpu",
                                 chunk_size=draw(st.integers(1, 4)))


def likelihoods(d):
    """A valid likelihood for dimension d: every registered forward model that takes R^d."""
    models = []
    for name, cls in sorted(FORWARD_MODELS.items()):
        model = cls.example(d, seed=0)
        try:
            models.append(model if model.out_dim(d) else None)
        except ValueError:
            continue
    return st.builds(lambda model, y, std: fsdiag.GaussianLikelihood(model, [y] * model.out_dim(d), std),
                     st.sampled_from(models), MODERATE, st.sampled_from([0.3, 1.0, 2.0]))


# ------------------------------------------------------------------ EmpiricalPrior
@examples(300)
@given(st.data())
def test_empirical_prior_construction(data):
    n, d = data.draw(st.integers(0, 4)), data.draw(st.integers(0, 3))
    atoms, clean = data.draw(arrays((n, d)))
    kw = {}
    if data.draw(st.booleans()):
        kw["weights"] = data.draw(arrays((data.draw(st.sampled_from([n, n + 1])),)))[0]
    if data.draw(st.booleans()):
        kw["labels"] = data.draw(st.sampled_from([list(range(n)), [0.5] * n, [True] * n, "ab", None]))
    if data.draw(st.booleans()):
        kw["dtype"] = data.draw(st.sampled_from([None, torch.float32, torch.float64, torch.float16, "float32"]))
    if data.draw(st.booleans()):
        kw["chunk_size"] = data.draw(INTS)
    if data.draw(st.booleans()):
        kw["device"] = data.draw(DEVICES)
    prior = call(lambda: fsdiag.EmpiricalPrior(atoms, **kw), "atoms", *kw)
    if prior is None:
        assert not (clean and n and d and not kw), "clean atoms were refused"
        return
    assert prior.atoms.shape == (n, d) and prior.dtype in (torch.float32, torch.float64)
    assert finite(prior.atoms) and finite(prior.log_weights[prior.log_weights > -math.inf])
    assert abs(float(prior.weights.double().sum()) - 1) < 1e-5


KERNELS = ["moments", "denoise", "score", "log_density", "responsibilities", "posterior_denoise",
           "log_likelihood_t", "likelihood_score", "cov_matvec", "denoiser_vjp", "sample_atoms",
           "nearest_atoms", "log_posterior_weights"]


@examples(350)
@given(priors(), st.sampled_from(KERNELS), st.data())
def test_prior_kernels(prior, kernel, data):
    N, d = prior.n_atoms, prior.dim
    B = data.draw(st.integers(0, 3))
    x, x_clean = data.draw(arrays((B, data.draw(st.sampled_from([d, d, d + 1])))))
    if data.draw(st.booleans()):
        abar, abar_ok = data.draw(st.floats(1e-4, 0.9999)), True
    else:
        abar, abar_ok = data.draw(REALS), False
    ll, ll_clean = data.draw(arrays((data.draw(st.sampled_from([N, N, N + 1])),)))
    v, v_clean = data.draw(arrays(data.draw(st.sampled_from([(B, d), (B, 2, d), (B + 1, d), (d,)]))))
    gen = data.draw(st.sampled_from([torch.Generator().manual_seed(0), None, 3]))
    args = {
        "moments": lambda: prior.moments(x, abar, data.draw(st.sampled_from([None, ll]))),
        "denoise": lambda: prior.denoise(x, abar), "score": lambda: prior.score(x, abar),
        "log_density": lambda: prior.log_density(x, abar),
        "responsibilities": lambda: prior.responsibilities(x, abar, data.draw(st.sampled_from([None, ll]))),
        "posterior_denoise": lambda: prior.posterior_denoise(x, abar, ll),
        "log_likelihood_t": lambda: prior.log_likelihood_t(x, abar, ll),
        "likelihood_score": lambda: prior.likelihood_score(x, abar, ll),
        "cov_matvec": lambda: prior.cov_matvec(x, abar, v), "denoiser_vjp": lambda: prior.denoiser_vjp(x, abar, v),
        "sample_atoms": lambda: prior.sample_atoms(x, abar, gen, data.draw(st.sampled_from([None, ll]))),
        "nearest_atoms": lambda: prior.nearest_atoms(x, abar),
        "log_posterior_weights": lambda: prior.log_posterior_weights(ll),
    }
    out = call(args[kernel], "x", "abar", "log_lik", "v", "generator")
    if out is None:
        if kernel == "log_posterior_weights":
            assert not (ll_clean and len(ll) == N), "clean log_lik refused"
        elif kernel in ("moments", "denoise", "score", "log_density", "nearest_atoms"):
            assert not (x_clean and abar_ok and torch.as_tensor(np.asarray(x)).shape[-1] == d
                        and kernel != "moments"), "clean query refused"
        return
    if kernel == "log_posterior_weights":
        assert out.shape == (N,) and out.dtype == prior.dtype
        assert abs(float(out.double().exp().sum()) - 1) < 1e-5 and not bool(torch.isnan(out).any())
        return
    outs = [t for t in (out if isinstance(out, tuple) else (out,)) if t is not None]
    assert all(finite(t) for t in outs), f"{kernel} returned non-finite values"
    assert all(t.shape[0] == B for t in outs)
    if kernel in ("denoise", "posterior_denoise"):
        lo, hi = prior.atoms.min(0).values, prior.atoms.max(0).values    # a mean over atoms: in their hull
        slack = 1e-4 * (1 + prior.atoms.abs().max())
        assert out.shape == (B, d) and bool(((out >= lo - slack) & (out <= hi + slack)).all())
    if kernel == "responsibilities":
        assert out.shape == (B, N)
        assert torch.allclose(out.sum(1).double(), torch.ones(B, dtype=torch.float64), atol=1e-5)
    if kernel in ("sample_atoms", "nearest_atoms"):
        assert out.dtype == torch.long and bool(((out >= 0) & (out < N)).all())
        # zero weight is log weight -inf: 1e-300 beside 1e300 is positive (log -1381.6) though exp underflows
        assert bool((prior.log_weights[out] > -math.inf).all()), "drew an atom of zero prior weight"
    if kernel in ("cov_matvec", "denoiser_vjp"):
        assert out.shape == torch.as_tensor(np.asarray(v)).shape


# ------------------------------------------------------------------ ExactDenoiser
HUGE = 10 ** 400                                     # a Python int beyond float64: float() overflows
LEVEL_SCALARS = st.one_of(st.floats(0, 10), st.sampled_from(
    [0.0, 1e-300, 1e-9, 1.0, 1e300, math.inf, HUGE, np.int64(2), np.float32(0.5), np.uint64(2 ** 64 - 1)]))
BAD_LEVELS = st.sampled_from([-0.5, -HUGE, math.nan, -math.inf, True, None, "0.5", 1j, [[1.0, 2.0]], {}, object()])


def _level_value(v) -> float:
    try:
        return float(v)
    except OverflowError:                            # 10**400
        return math.inf if v > 0 else -math.inf


@st.composite
def levels(draw, B, *, upper=None):
    """(sigma or abar, clean): one value or one per sample, as a number, a 0-dim / (n,) / (n, 1, 1)
    tensor (float16/32/64; requires_grad; meta), numpy array or list; clean: it must be accepted.
    Values: [0, 10] (clipped to 1 for abar), the limits 0 and inf, 10**400, and bad values."""
    kind = draw(st.sampled_from(["scalar", "scalar", "one", "per_sample", "wrong_len", "bad"]))
    if kind == "bad":
        return draw(BAD_LEVELS), False
    n = {"scalar": 1, "one": 1, "per_sample": B, "wrong_len": B + 1}[kind]
    vals = [draw(LEVEL_SCALARS) for _ in range(n)]
    if upper is not None and draw(st.booleans()):
        vals = [min(_level_value(v), upper) for v in vals]
    if kind == "scalar":
        v = vals[0]
        return v, 0 <= _level_value(v) <= (upper if upper is not None else math.inf)
    container = draw(st.sampled_from(["list", "numpy", "tensor", "tensor", "column", "grad", "meta"]))
    if container == "list":
        obj = vals
    elif container == "numpy":
        obj = np.array([_level_value(v) for v in vals])
    else:
        obj = torch.tensor([_level_value(v) for v in vals], dtype=torch.float64)
        obj = obj.to(draw(st.sampled_from([torch.float64, torch.float32, torch.float16])))
        if container == "column":
            obj = obj.reshape(n, 1, 1)
        elif n == 1 and draw(st.booleans()):
            obj = obj.reshape(())
        vals = obj.reshape(-1).tolist()
        if container == "grad":
            obj.requires_grad_()
        elif container == "meta":
            obj = obj.to("meta")
    fits = n == 1 or n == B
    in_range = all(0 <= _level_value(v) <= (upper if upper is not None else math.inf) for v in vals)
    return obj, fits and in_range and container not in ("grad", "meta")


@st.composite
def queries(draw, d):
    """(x, clean) for ExactDenoiser: a (B, d) or (B, ...) tensor of any dtype, or things it refuses."""
    B = draw(st.integers(0, 3))
    shape = draw(st.sampled_from([(B, d), (B, d), (B, d), (B, d, 1), (B, 1, 1, d), (B, d + 1), (B,)]))
    x, clean = draw(arrays(shape, clean_only=draw(st.booleans())))
    scale = draw(st.sampled_from([1.0, 1.0, 1.0, 1e-30, 1e15, 1e30, 1e300]))     # far from (or on) the atoms
    if scale != 1.0 and isinstance(x, torch.Tensor) and x.is_floating_point():
        x, clean = x * scale, False
    if draw(st.booleans()) and not np.iscomplexobj(np.asarray(x)):
        x = torch.as_tensor(np.asarray(x)).to(draw(st.sampled_from([torch.float32, torch.float16])))
    kind = draw(st.sampled_from(["tensor", "tensor", "tensor", "numpy", "meta", "grad"]))
    t = torch.as_tensor(np.asarray(x)) if not isinstance(x, torch.Tensor) else x
    fits = len(shape) >= 2 and int(np.prod(shape[1:])) == d
    if kind == "numpy":
        return t.numpy(), False
    if kind == "meta":
        return t.to("meta"), False
    if kind == "grad" and t.is_floating_point():
        t = t.clone().requires_grad_()
    return t, clean and fits and t.is_floating_point()


@examples(300)
@given(priors(), st.data())
def test_exact_denoiser(prior, data):
    den = fsdiag.ExactDenoiser(prior)
    x, x_clean = data.draw(queries(prior.dim))
    B = x.shape[0] if len(getattr(x, "shape", ())) else 0
    vp = data.draw(st.booleans())
    level, level_clean = data.draw(levels(B, upper=1.0 if vp else None))
    if vp:
        out = call(lambda: den.vp(x, level), "x_t", "abar")
    else:
        out = call(lambda: den(x, level), "x", "sigma")
    if out is None:
        assert not (x_clean and level_clean), "a clean query was refused"
        return
    assert isinstance(x, torch.Tensor) and out.shape == x.shape and out.dtype == x.dtype
    assert finite(out), "non-finite denoiser output"
    lo, hi = prior.atoms.min(0).values, prior.atoms.max(0).values         # a mean over atoms: in their hull
    slack = 1e-3 * (1 + prior.atoms.abs().max())
    flat = out.detach().double().reshape(B, prior.dim)
    assert bool(((flat >= lo.double() - slack) & (flat <= hi.double() + slack)).all())


# ------------------------------------------------------------------ NetworkPrior
_NETS = {}


def _network(kind):
    """Small networks (cached per session): untrained float64 (the Gaussian denoiser), briefly
    trained float32."""
    if kind not in _NETS:
        atoms = torch.randn(60, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        from fsdiag import networks
        dtype, steps = (torch.float64, 0) if kind == "gauss64" else (torch.float32, 20)
        _NETS[kind] = networks.NetworkPrior(networks.train_denoiser(
            atoms, steps=steps, width=8, depth=1, batch_size=16, lr=1e-2, dtype=dtype, device="cpu", progress=False))
    return _NETS[kind]


ABARS = st.one_of(st.floats(1e-6, 1 - 1e-6), st.sampled_from(
    [5e-324, 1e-300, 1e-40, 1e-30, 1e-8, 1 - 1e-9, 1 - 2 ** -53, 0.0, 1.0, -0.1, 1.5, math.nan, math.inf, HUGE, True,
     "0.5", None, 1j, np.float32(0.5), torch.tensor(0.5), torch.tensor([0.5]), torch.tensor(0.5, device="meta")]))
NET_KERNELS = ["denoise", "score", "moments", "cov_matvec", "denoiser_vjp"]


@examples(250)
@given(st.sampled_from(["gauss64", "trained32"]), st.sampled_from(NET_KERNELS), ABARS, st.data())
def test_network_prior_kernels(kind, kernel, abar, data):
    net = _network(kind)
    d = net.dim
    B = data.draw(st.integers(0, 3))
    x, x_clean = data.draw(arrays((B, data.draw(st.sampled_from([d, d, d + 1])))))
    v, _ = data.draw(arrays(data.draw(st.sampled_from([(B, d), (B, 2, d), (B + 1, d)]))))
    if isinstance(abar, torch.Tensor):
        abar_ok = abar.ndim == 0 and abar.device.type != "meta" and 0 < float(abar) < 1
    else:
        abar_ok = isinstance(abar, (float, np.floating)) and 0 < float(abar) < 1
    fn = {"denoise": lambda: net.denoise(x, abar), "score": lambda: net.score(x, abar),
          "moments": lambda: net.moments(x, abar).mean, "cov_matvec": lambda: net.cov_matvec(x, abar, v),
          "denoiser_vjp": lambda: net.denoiser_vjp(x, abar, v)}[kernel]
    out = call(fn, "x", "abar", "v")
    if out is None:
        if kernel in ("denoise", "score", "moments") and x_clean and abar_ok:
            # only the documented FloatingPointError may refuse a clean query here, and not for denoise
            try:
                fn()
            except FloatingPointError:
                assert kernel != "denoise", "the network's mean overflowed for a clean query"
            except (ValueError, TypeError) as err:
                assert torch.as_tensor(np.asarray(x)).shape[-1] != d, f"clean query refused: {err}"
        return
    assert finite(out), f"{kernel} returned non-finite values"
    assert out.dtype == net.dtype and out.shape[0] == B
    if kernel in ("cov_matvec", "denoiser_vjp"):
        assert out.shape == torch.as_tensor(np.asarray(v)).shape
    else:
        assert out.shape == (B, d)


# ------------------------------------------------------------------ CountingPrior
@examples(200)
@given(priors(max_n=4, max_d=2), st.sampled_from(["moments", "denoise", "cov_matvec", "denoiser_vjp"]), st.data())
def test_counting_prior(prior, kernel, data):
    """CountingPrior(prior) accepts exactly what the prior accepts, returns the same answer, and
    counts the rows of a pass that happened (times k for cov_matvec with k vectors per row)."""
    from fsdiag.sampling import CountingPrior
    which = data.draw(st.sampled_from(["empirical", "gauss64", "mixture"]))
    if which == "gauss64":
        prior = _network("gauss64")
    elif which == "mixture":
        prior = T.GaussianPrior(torch.zeros(prior.dim, dtype=torch.float64), torch.eye(prior.dim, dtype=torch.float64))
    d = prior.dim
    B = data.draw(st.integers(0, 3))
    x, _ = data.draw(arrays((B, data.draw(st.sampled_from([d, d, d + 1])))))
    v, _ = data.draw(arrays(data.draw(st.sampled_from([(B, d), (B, 2, d), (B + 1, d)]))))
    abar = data.draw(st.one_of(st.floats(0.01, 0.99), REALS))
    by_keyword = data.draw(st.booleans())

    def run(p):
        fn = getattr(p, kernel)
        if kernel in ("moments", "denoise"):
            return fn(x=x, abar=abar) if by_keyword else fn(x, abar)
        return fn(x, abar, v=v) if by_keyword else fn(x, abar, v)

    counting = CountingPrior(prior)
    try:
        expected = run(prior)
    except Exception as err:  # noqa: BLE001 - the wrapper must raise the very same
        with pytest.raises(type(err)):
            run(counting)
        assert counting.evaluations == 0, "a refused call was counted"
        return
    got = run(counting)
    if kernel == "moments":
        expected, got = expected.mean, got.mean
    assert torch.equal(got, expected)
    rows = B * (got.shape[1] if kernel == "cov_matvec" and got.ndim == 3 else 1)
    assert counting.counts[kernel] == rows and counting.evaluations == rows


# ------------------------------------------------------------------ likelihood and forward models
@examples(250)
@given(st.sampled_from(sorted(FORWARD_MODELS)), st.integers(1, 3), st.data())
def test_forward_models_and_vjp(name, d, data):
    model = FORWARD_MODELS[name].example(d, seed=data.draw(st.integers(0, 3)))
    B = data.draw(st.integers(0, 3))
    x, x_clean = data.draw(arrays((B, data.draw(st.sampled_from([d, d, d + 1])))))
    fwd = call(lambda: model(x), "x")
    ok_dim = call(lambda: model.out_dim(torch.as_tensor(np.asarray(x)).shape[-1]), "x") is not None
    if fwd is None:
        assert not (x_clean and ok_dim), f"{name} refused a clean x"
        return
    dx = torch.as_tensor(np.asarray(x)).shape[1]
    m = model.out_dim(dx)
    assert fwd.shape == (B, m) and fwd.is_floating_point() and finite(fwd)
    v, v_clean = data.draw(arrays(data.draw(st.sampled_from([(B, m), (B, m), (B, m + 1), (m,)]))))
    vj = call(lambda: model.vjp(x, v), "x", "v")
    if vj is None:
        assert not (v_clean and torch.as_tensor(np.asarray(v)).shape == (B, m)), f"{name}.vjp refused clean v"
        return
    assert vj.shape == (B, dx) and finite(vj)


@examples(150)
@given(st.data())
def test_forward_model_constructors(data):
    which = data.draw(st.sampled_from(["affine", "mask", "mlp"]))
    if which == "affine":
        matrix = data.draw(arrays(data.draw(st.sampled_from([(1, 2), (2, 2), (0, 2), (2,), (3,)]))))[0]
        bias = data.draw(st.sampled_from([None, [0.1], [0.1, 0.2], "b"]))
        model = call(lambda: fsdiag.forward.Affine(matrix, bias), "matrix", "bias")
    elif which == "mask":
        mask = data.draw(st.sampled_from([[True, False], [False, False], [1, 0], None, "ab", np.array([True]), 3]))
        model = call(lambda: fsdiag.forward.Mask(mask), "mask")
    else:
        kw = {k: data.draw(INTS) for k in data.draw(st.sets(st.sampled_from(["out_dim", "hidden", "seed"])))}
        model = call(lambda: fsdiag.forward.MLP(data.draw(INTS), **kw), "in_dim", *kw)
    if model is not None:
        d = model.matrix.shape[1] if which == "affine" else model.mask.shape[0] if which == "mask" else model.in_dim
        assert finite(model(torch.ones(2, d, dtype=torch.float64)))


@examples(200)
@given(st.integers(1, 3), st.data())
def test_gaussian_likelihood(d, data):
    model = data.draw(st.sampled_from([FORWARD_MODELS[n].example(d) for n in sorted(FORWARD_MODELS)] + ["A"]))
    y, y_clean = data.draw(arrays(data.draw(st.sampled_from([(1,), (2,), (), (0,), (d,)]))))
    std, std_clean = data.draw(st.one_of(arrays(data.draw(st.sampled_from([(), (1,), (3,)]))),
                                         st.sampled_from([(1e-300, False), (-1.0, False), (0.5, True)])))
    lik = call(lambda: fsdiag.GaussianLikelihood(model, y, std), "forward", "y", "noise_std")
    if lik is None:
        return
    assert finite(lik.noise_std) and bool((lik.noise_std > 0).all()) and finite(lik.y)
    B = data.draw(st.integers(0, 3))
    x, x_clean = data.draw(arrays((B, data.draw(st.sampled_from([d, d + 1])))))
    lp = call(lambda: lik.log_prob(x), "x", "forward", "y")
    if lp is not None:
        assert lp.shape == (B,) and not bool(torch.isnan(lp).any())


# ------------------------------------------------------------------ schedules
@examples(250)
@given(st.data())
def test_schedules(data):
    if data.draw(st.booleans()):
        kw = {k: data.draw(st.one_of(REALS, st.floats(0.001, 30))) for k in
              data.draw(st.sets(st.sampled_from(["beta_min", "beta_max"])))}
        sch = call(lambda: fsdiag.VPSchedule(**kw), *kw)
    else:
        kw = {k: data.draw(st.one_of(REALS, st.floats(1e-5, 0.5))) for k in
              data.draw(st.sets(st.sampled_from(["beta_start", "beta_end"])))}
        if data.draw(st.booleans()):
            kw["n_timesteps"] = data.draw(st.one_of(INTS, st.sampled_from([np.uint8(200), 10])))
        sch = call(lambda: fsdiag.DDPMSchedule(**kw), *kw)
    if sch is None:
        return
    t = data.draw(st.one_of(st.floats(0, 1), REALS))
    ab = call(lambda: sch.alpha_bar(t), "t")
    if ab is not None:
        assert isinstance(ab, float) and 0.0 <= ab <= 1.0
        beta = sch.beta(t)
        assert math.isfinite(beta) and beta >= 0
    n_steps = data.draw(st.one_of(INTS, st.sampled_from([1, 2, 5, 10])))
    t_min, t_max = data.draw(REALS), data.draw(st.one_of(st.just(1.0), REALS))
    grid = call(lambda: sch.time_grid(n_steps, t_min, t_max), "n_steps", "t_min", "t_max")
    if grid is not None:
        assert grid.ndim == 1 and finite(grid) and bool((grid[1:] < grid[:-1]).all())
        assert all(0 < ab_ <= 1 for ab_ in map(sch.alpha_bar, grid.tolist()))


# ------------------------------------------------------------------ samplers
@examples(120)
@given(priors(max_n=4, max_d=2), st.data())
def test_sample(prior, data):
    lik = data.draw(likelihoods(prior.dim))
    method = data.draw(st.sampled_from(sorted(fsdiag.METHODS) + ["nope", 3]))
    kw = {}
    for key, strat in (("n_particles", st.one_of(st.integers(1, 3), INTS)),
                       ("n_steps", st.one_of(st.integers(1, 3), INTS)),
                       ("t_min", st.one_of(st.floats(0.01, 0.5), REALS)), ("seed", SEEDS),
                       ("record", st.sampled_from([0, 2, np.int64(3), None, [0.5, 0.1], "all", True, -1])),
                       ("schedule", st.sampled_from([None, fsdiag.VPSchedule(), fsdiag.DDPMSchedule(n_timesteps=4),
                                                     "vp"])),
                       ("zeta", st.sampled_from([0.3, -1.0, True, np.float32(0.3)])),
                       ("zetta", st.just(1.0)), ("r2", st.sampled_from(["song", "x"]))):
        if data.draw(st.booleans()):
            kw[key] = data.draw(strat)
    if isinstance(kw.get("schedule"), fsdiag.DDPMSchedule) and kw.get("n_steps") not in (1, 2, 4):
        kw["n_steps"] = 2
    kw = {"n_particles": 2, "n_steps": 2, **kw}
    run = call(lambda: fsdiag.sample(prior, lik, method=method, progress=False, **kw),
               "method", "n_particles", "n_steps", "t_min", "seed", "record", "schedule", "zeta", "zetta",
               "r2", "noise_std")
    if run is None:
        return
    n = int(kw.get("n_particles", 2))
    assert run.samples.shape == (n, prior.dim) and finite(run.samples)
    assert finite(run.trajectory) and finite(run.tweedie) and run.trajectory.shape[1:] == (n, prior.dim)
    assert bool((run.times[1:] < run.times[:-1]).all())


@examples(80)
@given(priors(max_n=4, max_d=2), st.data())
def test_sample_exact_and_posterior_weights(prior, data):
    lik = data.draw(likelihoods(prior.dim))
    psi = fsdiag.posterior_weights(prior, lik)
    assert psi.shape == (prior.n_atoms,) and finite(psi) and bool((psi >= 0).all())
    assert abs(float(psi.double().sum()) - 1) < 1e-5
    assert float(psi[torch.isneginf(prior.log_weights)].sum()) == 0
    kw = {k: data.draw(s) for k, s in (("n_particles", st.one_of(st.integers(1, 3), INTS)), ("seed", SEEDS),
                                       ("generator", st.sampled_from([torch.Generator().manual_seed(1), 5])))
          if data.draw(st.booleans())}
    run = call(lambda: fsdiag.sample_exact(prior, lik, n_steps=2, progress=False, **{"n_particles": 2, **kw}),
               "n_particles", "seed", "generator")
    if run is not None:
        assert finite(run.trajectory) and finite(run.tweedie)
        assert bool((prior.log_weights[prior.nearest_atoms(run.samples, 0.999)] > -math.inf).all())


# ------------------------------------------------------------------ diagnostics
_PRIOR, _LIK = T.three_atoms()
_RUN = fsdiag.sample(_PRIOR, _LIK, method="sigma_dps", n_particles=16, n_steps=4, record=2, progress=False)


@examples(25)
@given(st.data())
def test_diagnose(data):
    kw = {k: data.draw(s) for k, s in (("n_score_points", st.one_of(st.integers(1, 4), INTS)), ("seed", SEEDS),
                                       ("negligible", REALS), ("radius", REALS),
                                       ("score_times", st.sampled_from([[0.5], [], [2.0], "0.5", [np.float32(0.3)]])))
          if data.draw(st.booleans())}
    rep = call(lambda: fsdiag.diagnose(_RUN, _PRIOR, _LIK, **kw), *kw, "times")
    if rep is not None:
        assert 0 <= rep.tv_atoms <= 1 and math.isfinite(rep.wasserstein)
        assert abs(sum(rep.exact_weights) - 1) < 1e-9 and abs(sum(rep.atom_mass) - 1) < 1e-9


@examples(300)
@given(st.sampled_from(["tv", "wilson", "w1", "sw", "mass", "modes", "post_t"]), st.data())
def test_diagnostics_helpers(fn, data):
    n = data.draw(st.integers(0, 4))
    a, a_clean = data.draw(arrays((n,)))
    b, b_clean = data.draw(arrays((data.draw(st.sampled_from([n, n + 1, 0])),)))
    if fn == "tv":
        out = call(lambda: D.total_variation(a, b), "p", "q")
        assert out is None or (math.isfinite(out) and out >= 0)
    elif fn == "wilson":
        k, nn = data.draw(st.one_of(st.integers(-1, 6), REALS)), data.draw(INTS)
        z = data.draw(st.one_of(st.just(1.96), REALS))
        out = call(lambda: D.wilson_interval(k, nn, z), "k", "n", "z")
        if out is not None:
            lo, hi = map(np.asarray, out)
            assert np.isfinite(lo).all() and (0 <= lo).all() and (lo <= hi).all() and (hi <= 1).all()
    elif fn == "w1":
        w = data.draw(st.sampled_from([None, "same", [1.0] * n, [-1.0] * n, [0.0] * n]))
        uw = a if w == "same" else w
        out = call(lambda: D.wasserstein_1d(a, b, uw, None), "u", "v", "u_weights")
        assert out is None or (math.isfinite(out) and out >= 0)
    elif fn == "sw":
        x, _ = data.draw(arrays((n, 2)))
        y, _ = data.draw(arrays((data.draw(st.integers(0, 3)), data.draw(st.sampled_from([2, 3])))))
        out = call(lambda: D.sliced_wasserstein(x, y, n_projections=data.draw(INTS), seed=data.draw(SEEDS)),
                   "x", "y", "n_projections", "seed")
        assert out is None or (math.isfinite(out) and out >= 0)
    elif fn == "mass":
        x, _ = data.draw(arrays((n, 1)))
        out = call(lambda: D.atom_mass(_PRIOR, x, data.draw(REALS)), "x", "abar")
        assert out is None or (out.shape == (3,) and abs(float(out.sum()) - 1) < 1e-9)
    elif fn == "modes":
        mass, psi = data.draw(arrays((3,)))[0], data.draw(arrays((data.draw(st.sampled_from([3, 2])),)))[0]
        labels = data.draw(st.sampled_from([[0, 1, 1], [0.5, 1.0, 2.0], [0, 1]]))
        out = call(lambda: D.mode_weights(mass, psi, torch.as_tensor(labels), data.draw(INTS)),
                   "mass", "psi", "labels", "n")
        assert out is None or all(np.isfinite(out[k]).all() for k in ("sampler", "lower", "upper", "exact", "tv"))
    else:
        psi, _ = data.draw(arrays((data.draw(st.sampled_from([3, 2])),)))
        out = call(lambda: D.sample_posterior_t(_PRIOR, psi, data.draw(REALS), data.draw(INTS),
                                                data.draw(st.sampled_from([torch.Generator(), None]))),
                   "psi", "abar", "n", "generator")
        assert out is None or (out.shape[1] == 1 and finite(out))


# ------------------------------------------------------------------ testbeds
@examples(200)
@given(st.sampled_from(["gmm", "swiss_roll", "torus", "sphere"]), st.data())
def test_testbeds(which, data):
    if which == "gmm":
        K, d = data.draw(st.integers(0, 2)), data.draw(st.integers(1, 2))
        means, _ = data.draw(arrays((K, d)))
        weights, _ = data.draw(arrays((K,)))
        covs = data.draw(st.sampled_from(["iso", "psd", "asym", "neg", "nan"]))
        covs = {"iso": [0.5] * K, "psd": [np.eye(d) * 0.3] * K, "asym": [np.triu(np.ones((d, d))) + np.eye(d)] * K,
                "neg": [-np.eye(d)] * K, "nan": [np.full((d, d), np.nan)] * K}[covs]
        gm = call(lambda: T.GaussianMixture(weights, means, np.asarray(covs).reshape(-1, *(() if covs and
                                            np.asarray(covs).ndim == 1 else (d, d)))), "weights", "means", "covs")
        if gm is not None:
            assert abs(float(gm.weights.sum()) - 1) < 1e-9
            x = gm.sample(5, torch.Generator().manual_seed(0))
            assert x.shape == (5, d) and finite(x)
            q, _ = data.draw(arrays((data.draw(st.integers(0, 3)), data.draw(st.sampled_from([d, d + 1])))))
            abar = data.draw(st.one_of(st.floats(0.01, 0.99), REALS))
            for kernel in ("denoise", "score"):
                out = call(lambda: getattr(gm, kernel)(q, abar), "x", "abar")
                assert out is None or (out.shape[1] == d and finite(out))
            cv = call(lambda: gm.cov_matvec(q, abar, q), "x", "abar", "v")
            assert cv is None or (cv.shape == torch.as_tensor(np.asarray(q)).shape and finite(cv))
            lp = call(lambda: gm.log_prob(q), "x", "covs")
            assert lp is None or not bool(torch.isnan(lp).any())
            post = call(lambda: gm.condition(data.draw(st.one_of(likelihoods(d), st.just("lik")))), "lik", "forward")
            assert post is None or abs(float(post.weights.sum()) - 1) < 1e-9
        return
    fn = getattr(T, which)
    n = data.draw(INTS)
    gen = data.draw(st.sampled_from([torch.Generator().manual_seed(0), None, 0]))
    kw = {"noise": data.draw(st.sampled_from([0.0, 0.1, -1.0, "x", math.nan]))} if data.draw(st.booleans()) else {}
    out = call(lambda: fn(n, gen, **kw), "n", "generator", "noise")
    if out is not None:
        pts = out[0] if isinstance(out, tuple) else out
        assert pts.shape[0] == int(n) and finite(pts)


def test_the_profile_is_derandomised():
    assert CI.derandomize and CI.deadline is None


@pytest.mark.parametrize("device", ["meta", "mps", "xpu"])
def test_unusable_devices(device):
    with pytest.raises(ValueError, match="^device:"):
        fsdiag.EmpiricalPrior([[0.0]], device=device)
