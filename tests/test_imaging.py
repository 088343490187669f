"""Image forward models: adjointness, vjp against autograd, matrix, batching, dtypes, devices."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fsdiag
from fsdiag import imaging as I
from fsdiag.operators import blur_matrix

SHAPES = [(1, 8, 8), (3, 5, 7), (2, 6, 4)]


def operators(shape):
    """Every image operator, in several configurations, for one image shape."""
    c, h, w = shape
    k = math.gcd(h, w)
    ops = [I.Inpainting(shape, 0.3, seed=1), I.BoxInpainting(shape), I.BoxInpainting(shape, keep_box=True),
           I.BoxInpainting(shape, (0, 1, h, 1)), I.PixelMask(shape, torch.rand(c, h, w) > 0.5),
           *(I.GaussianBlur(shape, std, padding=p) for std, p in [(1.0, "zero"), (2.5, "reflect"), (0.7, "circular")]),
           I.GaussianBlur(shape, 1.5, radius=1, padding="reflect"),
           I.Downsampling(shape, 1), I.FourierMagnitude(shape), I.FourierMagnitude(shape, oversampling=2)]
    if k > 1:
        ops.append(I.Downsampling(shape, k))
    return ops


CASES = [(shape, op) for shape in SHAPES for op in operators(shape)]
LINEAR = [(shape, op) for shape, op in CASES if op.is_linear]
IDS = [repr(op) for _, op in CASES]


@pytest.mark.parametrize("shape,op", LINEAR, ids=[repr(op) for _, op in LINEAR])
def test_adjointness(shape, op, gen):
    d = math.prod(shape)
    x = torch.randn(5, d, generator=gen, dtype=torch.float64)
    u = torch.randn(5, op.out_dim(d), generator=gen, dtype=torch.float64)
    lhs = (op(x) * u).sum(1)
    rhs = (x * op.vjp(x, u)).sum(1)
    torch.testing.assert_close(lhs, rhs, rtol=1e-12, atol=1e-12)
    # and the adjoint does not depend on the point
    torch.testing.assert_close(op.vjp(torch.zeros_like(x), u), op.vjp(x, u))


@pytest.mark.parametrize("shape,op", CASES, ids=IDS)
def test_vjp_matches_autograd(shape, op, gen):
    d = math.prod(shape)
    x = torch.randn(4, d, generator=gen, dtype=torch.float64).requires_grad_(True)
    y = op(x)
    v = torch.randn(y.shape, generator=gen, dtype=torch.float64)
    (ref,) = torch.autograd.grad(y, x, grad_outputs=v)
    torch.testing.assert_close(op.vjp(x.detach(), v), ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("shape,op", LINEAR, ids=[repr(op) for _, op in LINEAR])
def test_matrix_agrees_with_call_and_adjoint(shape, op, gen):
    d = math.prod(shape)
    M = op.matrix_for(d)
    assert M.shape == (op.out_dim(d), d) and M.dtype == torch.float64
    x = torch.randn(3, d, generator=gen, dtype=torch.float64)
    u = torch.randn(3, op.out_dim(d), generator=gen, dtype=torch.float64)
    torch.testing.assert_close(op(x), x @ M.T)
    torch.testing.assert_close(op.vjp(x, u), u @ M)
    assert op.matrix_for(d, torch.float32).dtype == torch.float32


def test_known_values():
    # blur with zero padding is operators.blur_matrix; it preserves the mean inside, darkens edges
    op = I.GaussianBlur((1, 8, 8), 1.0)
    torch.testing.assert_close(op.matrix_for(64), blur_matrix(8, 8, 1.0))
    reflect = I.GaussianBlur((2, 6, 5), 1.3, padding="reflect")
    ones = torch.ones(2, 60, dtype=torch.float64)
    torch.testing.assert_close(reflect(ones), ones)                 # reflect / circular keep constants
    torch.testing.assert_close(I.GaussianBlur((2, 6, 5), 1.3, padding="circular")(ones), ones)
    assert float(op(torch.ones(1, 64, dtype=torch.float64)).min()) < 0.9
    # downsampling averages blocks; its adjoint spreads v / k^2
    x = torch.arange(16.0, dtype=torch.float64).reshape(1, 16)
    down = I.Downsampling((1, 4, 4), 2)
    assert down(x).tolist() == [[2.5, 4.5, 10.5, 12.5]]
    assert down.vjp(x, torch.tensor([[4.0, 0, 0, 0]], dtype=torch.float64)).reshape(4, 4)[:2, :2].tolist() == \
        [[1.0, 1.0], [1.0, 1.0]]
    # Fourier magnitude: unitary, the DC term is sum / sqrt(n), invariant to circular shifts and flips
    img = torch.randn(2, 3 * 4 * 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    fm = I.FourierMagnitude((3, 4, 6))
    torch.testing.assert_close(fm(img).norm(dim=1), img.norm(dim=1))
    dc = img.reshape(2, 3, 24).sum(-1).abs() / math.sqrt(24)
    torch.testing.assert_close(fm(img).reshape(2, 3, 4, 6)[..., 0, 0], dc)
    shifted = torch.roll(img.reshape(2, 3, 4, 6), (1, 2), (2, 3)).reshape(2, -1)
    flipped = torch.roll(img.reshape(2, 3, 4, 6).flip(2, 3), (1, 1), (2, 3)).reshape(2, -1)
    torch.testing.assert_close(fm(shifted), fm(img))
    torch.testing.assert_close(fm(flipped), fm(img))
    assert I.FourierMagnitude((3, 4, 6), oversampling=2).out_dim(72) == 288
    # masks: counts, channels share the pixel mask
    inp = I.Inpainting((3, 10, 10), 0.25, seed=4)
    assert inp.out_dim(300) == 75 and bool((inp.mask == inp.mask[0]).all())
    box = I.BoxInpainting((1, 4, 4), (1, 1, 2, 2))
    assert box.out_dim(16) == 12 and I.BoxInpainting((1, 4, 4), (1, 1, 2, 2), keep_box=True)(x).tolist() == \
        [[5.0, 6.0, 9.0, 10.0]]


def test_fourier_magnitude_vjp_at_zero_is_the_subgradient_zero():
    fm = I.FourierMagnitude((1, 4, 4))
    x = torch.zeros(2, 16, dtype=torch.float64)      # every |F x| is 0
    g = fm.vjp(x, torch.ones(2, 16, dtype=torch.float64))
    assert torch.equal(g, torch.zeros_like(g))
    x[0, 0] = 1.0                                      # a delta: |F x| = 1/4 everywhere, no zeros
    xr = x.clone().requires_grad_(True)
    (ref,) = torch.autograd.grad(fm(xr).sum(), xr)
    torch.testing.assert_close(fm.vjp(x, torch.ones(2, 16, dtype=torch.float64)), ref)
    # subnormal and huge float32 spectra: the phase z / |z| is still finite and right
    for scale in (1e-40, 1e37):
        g32 = fm.vjp((x * scale).float(), torch.ones(2, 16))
        torch.testing.assert_close(g32.double(), fm.vjp(x, torch.ones(2, 16, dtype=torch.float64)))


@pytest.mark.parametrize("shape,op", CASES, ids=IDS)
def test_rows_are_independent(shape, op, gen):
    d = math.prod(shape)
    x = torch.randn(6, d, generator=gen, dtype=torch.float64)
    v = torch.randn(6, op.out_dim(d), generator=gen, dtype=torch.float64)
    y, g = op(x), op.vjp(x, v)
    for i in (0, 3, 5):
        torch.testing.assert_close(op(x[i:i + 1]), y[i:i + 1])
        torch.testing.assert_close(op.vjp(x[i:i + 1], v[i:i + 1]), g[i:i + 1])
    assert op(x[:0]).shape == (0, op.out_dim(d)) and op.vjp(x[:0], v[:0]).shape == (0, d)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
@pytest.mark.parametrize("shape,op", CASES[:len(operators(SHAPES[0]))], ids=IDS[:len(operators(SHAPES[0]))])
def test_dtype_follows_x(shape, op, dtype, gen):
    d = math.prod(shape)
    x64 = torch.rand(3, d, generator=gen, dtype=torch.float64)
    v64 = torch.rand(3, op.out_dim(d), generator=gen, dtype=torch.float64)
    y, g = op(x64.to(dtype)), op.vjp(x64.to(dtype), v64.to(dtype))
    assert y.dtype == dtype and g.dtype == dtype
    tol = {torch.float64: 1e-12, torch.float32: 1e-5, torch.float16: 2e-2}[dtype]
    torch.testing.assert_close(y.double(), op(x64), rtol=tol, atol=tol)
    torch.testing.assert_close(g.double(), op.vjp(x64, v64), rtol=tol, atol=tol)


@pytest.mark.parametrize("shape,op", CASES[:len(operators(SHAPES[0]))], ids=IDS[:len(operators(SHAPES[0]))])
def test_devices(shape, op, device, gen):
    """On the CPU always, on CUDA too when present: output on x's device, equal to the CPU's."""
    d = math.prod(shape)
    x = torch.randn(4, d, generator=gen, dtype=torch.float64)
    v = torch.randn(4, op.out_dim(d), generator=gen, dtype=torch.float64)
    y, g = op(x.to(device)), op.vjp(x.to(device), v.to(device))
    assert y.device.type == device and g.device.type == device
    torch.testing.assert_close(y.cpu(), op(x))
    torch.testing.assert_close(g.cpu(), op.vjp(x, v))
    if op.is_linear:
        assert op.matrix_for(d, device=device).device.type == device


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("shape,op", CASES, ids=IDS)
def test_cuda_float32_adjoint_and_autograd(shape, op):
    d = math.prod(shape)
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(8, d, generator=g, device="cuda").requires_grad_(True)
    y = op(x)
    v = torch.randn(y.shape, generator=g, device="cuda")
    (ref,) = torch.autograd.grad(y, x, grad_outputs=v)
    torch.testing.assert_close(op.vjp(x.detach(), v), ref, rtol=1e-4, atol=1e-5)
    if op.is_linear:
        torch.testing.assert_close((y * v).sum(1), (x * op.vjp(x.detach(), v)).sum(1), rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------ validation
def test_bad_inputs_name_the_argument():
    op = I.GaussianBlur((1, 4, 4))
    with pytest.raises(ValueError, match=r"^x: .*image_shape \(1, 4, 4\)"):
        op(torch.zeros(2, 15))
    with pytest.raises(ValueError, match="^x: "):
        op(torch.zeros(16))
    with pytest.raises(ValueError, match="^v: "):
        op.vjp(torch.zeros(2, 16), torch.zeros(2, 15))
    with pytest.raises(ValueError, match="^x: .*overflows"):
        I.FourierMagnitude((1, 2, 2))(torch.full((1, 4), 3e38))
    # averaging divides first: float32 pixels near the top of the range do not overflow
    assert I.Downsampling((1, 2, 2), 2)(torch.full((1, 4), 3e38)).item() == pytest.approx(3e38, rel=1e-6)
    bad = [(lambda: I.GaussianBlur((1, 2, 3, 4), 1.0), "image_shape"), (lambda: I.GaussianBlur("abc"), "image_shape"),
           (lambda: I.GaussianBlur((1, 0, 4)), "image_shape"), (lambda: I.GaussianBlur((4, 4), -1.0), "std"),
           (lambda: I.GaussianBlur((4, 4), padding="same"), "padding"),
           (lambda: I.GaussianBlur((4, 4), radius=-1), "radius"),
           (lambda: I.Downsampling((4, 6), 4), "factor"), (lambda: I.Downsampling((4, 4), 0), "factor"),
           (lambda: I.Inpainting((4, 4), 0.0), "keep"), (lambda: I.Inpainting((4, 4), 0.5, seed=-1), "seed"),
           (lambda: I.BoxInpainting((4, 4), (0, 0, 4, 4)), "box"),
           (lambda: I.BoxInpainting((4, 4), (3, 0, 2, 1)), "box"),
           (lambda: I.BoxInpainting((4, 4), (0, 0)), "box"), (lambda: I.BoxInpainting((4, 4), keep_box=1), "keep_box"),
           (lambda: I.PixelMask((4, 4), torch.zeros(4, 4, dtype=torch.bool)), "mask"),
           (lambda: I.PixelMask((4, 4), torch.ones(3, 3, dtype=torch.bool)), "mask"),
           (lambda: I.FourierMagnitude((4, 4), oversampling=0), "oversampling"),
           (lambda: I.GaussianBlur((4, 4)).matrix_for(16, max_dim=8), "d")]
    for make, name in bad:
        with pytest.raises((ValueError, TypeError), match=f"^{name}: "):
            make()


def test_registered_and_reprs():
    for name in ("inpainting", "box_inpainting", "gaussian_blur", "downsampling", "fourier_magnitude", "pixel_mask"):
        assert name in fsdiag.forward.FORWARD_MODELS
    assert repr(I.GaussianBlur((3, 4, 5), 2.0, padding="reflect")) == \
        "GaussianBlur(image_shape=(3, 4, 5), std=2, radius=6, padding='reflect')"


# ------------------------------------------------------------------ properties over shapes
@settings(max_examples=40, deadline=None, derandomize=True)
@given(c=st.integers(1, 3), h=st.integers(1, 7), w=st.integers(1, 7), which=st.integers(0, 5),
       std=st.floats(0.3, 4.0), padding=st.sampled_from(I.GaussianBlur.PADDINGS), seed=st.integers(0, 50))
def test_properties_over_shapes(c, h, w, which, std, padding, seed):
    shape, d = (c, h, w), c * h * w
    k = max(f for f in (1, 2, 3) if h % f == 0 and w % f == 0)
    op = [lambda: I.Inpainting(shape, 0.4, seed=seed), lambda: I.BoxInpainting(shape, keep_box=h * w == 1),
          lambda: I.GaussianBlur(shape, std, padding=padding), lambda: I.Downsampling(shape, k),
          lambda: I.FourierMagnitude(shape, oversampling=1 + seed % 2),
          lambda: I.GaussianBlur(shape, std, radius=seed % 9, padding=padding)][which]()
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, d, generator=g, dtype=torch.float64).requires_grad_(True)
    y = op(x)
    assert y.shape == (3, op.out_dim(d)) and bool(torch.isfinite(y).all())
    v = torch.randn(y.shape, generator=g, dtype=torch.float64)
    (ref,) = torch.autograd.grad(y, x, grad_outputs=v)
    torch.testing.assert_close(op.vjp(x.detach(), v), ref, rtol=1e-9, atol=1e-11)
    if op.is_linear:
        torch.testing.assert_close((y * v).sum(1), (x * op.vjp(x, v)).sum(1), rtol=1e-10, atol=1e-10)
        if which == 2 and padding != "zero":         # reflect / circular blur keep constant images
            torch.testing.assert_close(op(torch.ones(1, d, dtype=torch.float64)), torch.ones(1, d, dtype=torch.float64))


# ------------------------------------------------------------------ end to end with the exact posterior
@pytest.mark.parametrize("name", ["inpainting", "box_inpainting", "gaussian_blur", "downsampling",
                                  "fourier_magnitude", "pixel_mask"])
def test_exact_posterior_with_each_operator(name):
    data = fsdiag.data.shapes(60, 8, seed=0)
    split = data.split(2, seed=1)
    prior = split.prior(device="cpu")
    kw = {"inpainting": {"keep": 0.3, "seed": 0}, "downsampling": {"factor": 2}, "gaussian_blur": {"std": 1.0},
          "pixel_mask": {"mask": torch.arange(64).reshape(8, 8) % 3 == 0}}.get(name, {})
    op = fsdiag.forward.FORWARD_MODELS[name](data.image_shape, **kw)
    truth = split.truths[:1].double()
    y = op(truth)[0] + 0.05 * torch.randn(op.out_dim(64), generator=torch.Generator().manual_seed(2),
                                          dtype=torch.float64)
    lik = fsdiag.GaussianLikelihood(op, y, 0.05)
    psi = fsdiag.posterior_weights(prior, lik)
    assert psi.shape == (prior.n_atoms,) and bool(torch.isfinite(psi).all())
    assert float(psi.sum()) == pytest.approx(1.0, abs=1e-6)
    # the posterior puts its mass on atoms that explain y; the same weights in closed form:
    log_lik = lik.log_prob(split.atoms.double())
    torch.testing.assert_close(psi.double(), torch.softmax(log_lik, 0), rtol=1e-4, atol=1e-6)


# ------------------------------------------------------------------ summaries of images
def test_pixel_moments_match_weighted_closed_form(gen):
    x = torch.rand(7, 2, 3, 4, generator=gen, dtype=torch.float64)
    w = torch.rand(7, generator=gen, dtype=torch.float64)
    mean, std = I.pixel_moments(x, 3.0 * w)                     # weights are normalised
    p = (w / w.sum()).numpy()
    xn = x.numpy()
    ref_mean = np.tensordot(p, xn, axes=1)
    ref_var = np.tensordot(p, (xn - ref_mean) ** 2, axes=1)
    assert mean.shape == std.shape == (2, 3, 4)
    np.testing.assert_allclose(mean.numpy(), ref_mean, rtol=1e-12)
    np.testing.assert_allclose(std.numpy(), np.sqrt(ref_var), rtol=1e-12)
    m0, s0 = I.pixel_moments(x)                                 # uniform: numpy's population moments
    np.testing.assert_allclose(m0.numpy(), xn.mean(0), rtol=1e-12)
    np.testing.assert_allclose(s0.numpy(), xn.std(0), rtol=1e-12)
    # a Dirac weight: that image, zero spread; far-from-zero data does not cancel
    m1, s1 = I.pixel_moments(x + 1e8, torch.eye(7, dtype=torch.float64)[2])
    np.testing.assert_allclose(m1.numpy(), xn[2] + 1e8, rtol=1e-15)
    assert float(s1.abs().max()) == 0.0


def test_gradient_energy_closed_forms(gen):
    ii, jj = torch.meshgrid(torch.arange(6), torch.arange(6), indexing="ij")
    checker = ((ii + jj) % 2).double().reshape(1, -1)           # every neighbour differs by 1
    const = torch.full((1, 36), 0.3, dtype=torch.float64)
    ramp = (0.5 * jj).double().reshape(1, -1)                   # horizontal steps 0.5, vertical 0
    e = I.gradient_energy(torch.cat([checker, const, ramp]), (1, 6, 6))
    # 30 horizontal and 30 vertical pairs: the ramp's 30 horizontal ones are 0.25 each, so 0.125
    torch.testing.assert_close(e, torch.tensor([1.0, 0.0, 0.125], dtype=torch.float64))
    # averaging distinct images and blurring both lower it
    x = torch.rand(16, 64, generator=gen, dtype=torch.float64)
    assert float(I.gradient_energy(x.mean(0, keepdim=True), (8, 8))) < float(I.gradient_energy(x, (8, 8)).min())
    blur = I.GaussianBlur((1, 8, 8), 1.0, padding="circular")
    assert bool((I.gradient_energy(blur(x), (8, 8)) < I.gradient_energy(x, (8, 8))).all())


def test_observed_image_puts_measurements_in_place(gen):
    x = torch.rand(1, 2 * 4 * 6, generator=gen, dtype=torch.float64)
    box = I.BoxInpainting((2, 4, 6))
    shown = I.observed_image(box, box(x)[0])
    img = x.reshape(2, 4, 6)
    assert torch.equal(torch.isnan(shown), ~box.mask)
    torch.testing.assert_close(shown[box.mask], img[box.mask])
    down = I.Downsampling((2, 4, 6), 2)
    shown = I.observed_image(down, down(x)[0])
    torch.testing.assert_close(shown[:, ::2, ::2], img.reshape(2, 2, 2, 3, 2).mean((2, 4)))
    assert torch.equal(shown[:, 1::2, 1::2], shown[:, ::2, ::2])
    blur = I.GaussianBlur((2, 4, 6))
    torch.testing.assert_close(I.observed_image(blur, blur(x)[0]), blur(x).reshape(2, 4, 6))
    fm = I.FourierMagnitude((1, 4, 4))
    z = torch.zeros(1, 16, dtype=torch.float64)
    z[0, 0] = 1.0                                               # a delta: flat magnitude 1/4
    torch.testing.assert_close(I.observed_image(fm, fm(z)[0]), torch.full((1, 4, 4), 0.25, dtype=torch.float64))


def test_image_summaries_name_bad_arguments():
    with pytest.raises(ValueError, match="weights"):
        I.pixel_moments(torch.rand(3, 4), torch.ones(2))
    with pytest.raises(ValueError, match="weights"):
        I.pixel_moments(torch.rand(3, 4), -torch.ones(3))
    with pytest.raises(ValueError, match="x"):
        I.pixel_moments(torch.rand(4))
    with pytest.raises(ValueError, match="x"):
        I.gradient_energy(torch.rand(2, 10), (1, 3, 3))
    with pytest.raises(TypeError, match="forward"):
        I.observed_image(fsdiag.forward.Identity(), torch.rand(3))
    with pytest.raises(ValueError, match="y"):
        I.observed_image(I.Downsampling((1, 4, 4), 2), torch.rand(5))
