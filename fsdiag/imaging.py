"""Image forward models: operators on images of shape (C, H, W), applied to rows (B, d), d = C H W.

Matrix-free and batched: every operator reshapes a row to its image, works on whatever
device and floating dtype x has (float16/bfloat16 are computed in float32 and cast back:
the CPU FFT and convolutions have no half kernels), and reshapes back. Linear operators
give their exact adjoint as `vjp`, and `matrix_for` builds the dense (m, d) matrix by
applying the operator to the identity (fine for small images).

Registered (`fsdiag.forward.FORWARD_MODELS`), so the registry-driven tests run on them:
`pixel_mask`, `inpainting` (random pixels), `box_inpainting`, `gaussian_blur`,
`downsampling`, `fourier_magnitude` (phase retrieval, nonlinear).
"""
from __future__ import annotations

import math

import torch

from ._checks import as_tensor, check_int, check_positive, check_real
from .forward import ForwardModel, LinearForwardModel, register

__all__ = ["ImageOperator", "LinearImageOperator", "PixelMask", "Inpainting", "BoxInpainting",
           "GaussianBlur", "Downsampling", "FourierMagnitude", "as_image_shape", "pixel_moments",
           "gradient_energy", "observed_image"]


def as_image_shape(value, name: str = "image_shape") -> tuple[int, int, int]:
    """(C, H, W) from a (C, H, W) or (H, W) sequence of positive integers."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__"):
        raise TypeError(f"{name}: expected (C, H, W) or (H, W), got {value!r}")
    if len(value) not in (2, 3):
        raise ValueError(f"{name}: expected (C, H, W) or (H, W), got {tuple(value)!r}")
    dims = tuple(check_int(v, name) for v in value)
    return dims if len(dims) == 3 else (1, *dims)


def _example_shape(d: int) -> tuple[int, int, int]:
    """The most square single-channel image with d pixels (the registry tests pass any d)."""
    h = max(k for k in range(1, math.isqrt(d) + 1) if d % k == 0)
    return 1, h, d // h


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _finite(out: torch.Tensor, name: str, what: str) -> torch.Tensor:
    """Finite inputs can still overflow the dtype (float32 pixels near 3e38): say so."""
    if not bool(torch.isfinite(out).all()):
        raise ValueError(f"{name}: {what} overflows {out.dtype} for these values; use float64 or rescale")
    return out


class ImageOperator(ForwardModel):
    """An operator on (C, H, W) images. Subclasses implement `_forward(img)` on (B, C, H, W)
    returning (B, ...) and `_vjp(img, v)` returning (B, C, H, W), both in a float32/64 dtype."""

    def __init__(self, image_shape):
        self.image_shape = as_image_shape(image_shape)
        self._device_cache: dict = {}

    @property
    def dim(self) -> int:
        return math.prod(self.image_shape)

    def _m(self) -> int:
        raise NotImplementedError

    def out_dim(self, d):
        if d != self.dim:
            raise ValueError(f"x: {self.name} expects rows of d = C*H*W = {self.dim} for image_shape "
                             f"{self.image_shape}, got d = {d}")
        return self._m()

    def _on(self, key: str, t: torch.Tensor, device, dtype=None) -> torch.Tensor:
        """A constant tensor (mask index, kernel) moved once per device and dtype, not per call."""
        k = (key, str(device), dtype)
        if k not in self._device_cache:
            self._device_cache[k] = t.to(device=device, dtype=dtype)
        return self._device_cache[k]

    def _image(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(_compute_dtype(x.dtype)).reshape(x.shape[0], *self.image_shape)

    def __call__(self, x):
        x = self._check_x(x)
        if x.shape[0] == 0:
            return x.new_zeros(0, self._m())
        y = self._forward(self._image(x)).reshape(x.shape[0], self._m())
        return _finite(y.to(x.dtype), "x", f"{self.name}(x)")

    def vjp(self, x, v):
        x, v = self._check_xv(x, v)
        if x.shape[0] == 0:
            return torch.zeros_like(x)
        g = self._vjp(self._image(x), v.to(_compute_dtype(v.dtype))).reshape(x.shape)
        return _finite(g.to(x.dtype), "v", f"the vector-Jacobian product of {self.name}")

    def _forward(self, img):
        raise NotImplementedError

    def _vjp(self, img, v):
        raise NotImplementedError


class LinearImageOperator(ImageOperator, LinearForwardModel):
    """A linear image operator: `vjp(x, v)` is the adjoint A^T v and does not depend on x."""

    def matrix_for(self, d, dtype=torch.float64, device=None, *, max_dim: int = 4096):
        """The dense (m, d) matrix, column j = A e_j, built in blocks of the identity."""
        self.out_dim(d)
        if d > max_dim:
            raise ValueError(f"d: building the matrix of {self.name} needs d <= max_dim = {max_dim}, got d = {d}")
        work = torch.float64 if dtype in (torch.float16, torch.bfloat16) else dtype
        eye = torch.eye(d, dtype=work, device=device)
        cols = [self(eye[s:s + 512]) for s in range(0, d, 512)]
        return torch.cat(cols).T.contiguous().to(dtype)


# ------------------------------------------------------------------ inpainting
@register
class PixelMask(LinearImageOperator):
    """Inpainting with a given mask: observe the pixels where `mask` is True. `mask` has shape
    (H, W) (shared by every channel: a missing pixel misses all its colours) or (C, H, W)."""

    name = "pixel_mask"

    def __init__(self, image_shape, mask):
        super().__init__(image_shape)
        c, h, w = self.image_shape
        if not isinstance(mask, torch.Tensor):
            try:
                mask = torch.as_tensor(mask)
            except (TypeError, RuntimeError, ValueError) as err:
                raise TypeError(f"mask: expected a boolean array, got {type(mask).__name__}") from err
        if mask.dtype != torch.bool or tuple(mask.shape) not in ((h, w), (c, h, w)):
            raise ValueError(f"mask: expected a boolean mask of shape {(h, w)} or {(c, h, w)}, "
                             f"got dtype {mask.dtype} shape {tuple(mask.shape)}")
        if not bool(mask.any()):
            raise ValueError("mask: expected at least one observed pixel")
        self.mask = mask.cpu().expand(c, h, w).clone()
        self.index = torch.nonzero(self.mask.reshape(-1)).flatten()

    def _m(self):
        return int(self.index.shape[0])

    def _forward(self, img):
        return img.reshape(img.shape[0], -1)[:, self._on("index", self.index, img.device)]

    def _vjp(self, img, v):
        out = v.new_zeros(img.shape[0], self.dim)
        out[:, self._on("index", self.index, img.device)] = v
        return out

    @classmethod
    def example(cls, d, seed=0):
        shape = _example_shape(d)
        ii, jj = torch.meshgrid(torch.arange(shape[1]), torch.arange(shape[2]), indexing="ij")
        return cls(shape, (ii + jj + seed) % 2 == 0 if d > 1 else torch.ones(1, 1, dtype=torch.bool))

    def __repr__(self):
        return f"{type(self).__name__}(image_shape={self.image_shape}, observed={self._m()}/{self.dim})"


@register
class Inpainting(PixelMask):
    """Random-pixel inpainting: a seeded mask observes round(keep H W) pixels (at least one),
    drawn without replacement; every channel of a missing pixel is missing."""

    name = "inpainting"

    def __init__(self, image_shape, keep: float = 0.5, *, seed: int = 0):
        c, h, w = as_image_shape(image_shape)
        keep = check_real(keep, "keep")
        if not 0.0 < keep <= 1.0:
            raise ValueError(f"keep: expected the observed fraction in (0, 1], got {keep!r}")
        self.keep, self.seed = keep, check_int(seed, "seed", minimum=0)
        g = torch.Generator().manual_seed(self.seed)
        n_obs = max(1, round(keep * h * w))
        mask = torch.zeros(h * w, dtype=torch.bool)
        mask[torch.randperm(h * w, generator=g)[:n_obs]] = True
        super().__init__((c, h, w), mask.reshape(h, w))

    @classmethod
    def example(cls, d, seed=0):
        return cls(_example_shape(d), 0.5, seed=seed)

    def __repr__(self):
        return f"Inpainting(image_shape={self.image_shape}, keep={self.keep:g}, seed={self.seed})"


@register
class BoxInpainting(PixelMask):
    """Box inpainting: a rectangle box = (top, left, height, width) is removed (the default) or,
    with keep_box=True, is all that is observed. The default box is the centred half-size one."""

    name = "box_inpainting"

    def __init__(self, image_shape, box=None, *, keep_box: bool = False):
        c, h, w = as_image_shape(image_shape)
        if box is None:
            bh, bw = max(1, h // 2), max(1, w // 2)
            box = ((h - bh) // 2, (w - bw) // 2, bh, bw)
        if isinstance(box, (str, bytes)) or not hasattr(box, "__len__") or len(box) != 4:
            raise TypeError(f"box: expected (top, left, height, width), got {box!r}")
        top, left = (check_int(v, "box", minimum=0) for v in box[:2])
        bh, bw = (check_int(v, "box") for v in box[2:])
        if top + bh > h or left + bw > w:
            raise ValueError(f"box: {tuple(box)} does not fit in an image of height {h} and width {w}")
        if not isinstance(keep_box, bool):
            raise TypeError(f"keep_box: expected True or False, got {keep_box!r}")
        inside = torch.zeros(h, w, dtype=torch.bool)
        inside[top:top + bh, left:left + bw] = True
        if not keep_box and bool(inside.all()):
            raise ValueError(f"box: {tuple(box)} removes every pixel; use a smaller box or keep_box=True")
        self.box, self.keep_box = (top, left, bh, bw), keep_box
        super().__init__((c, h, w), inside if keep_box else ~inside)

    @classmethod
    def example(cls, d, seed=0):
        shape = _example_shape(d)
        return cls(shape, keep_box=d == 1 or seed % 2 == 1)

    def __repr__(self):
        return f"BoxInpainting(image_shape={self.image_shape}, box={self.box}, keep_box={self.keep_box})"


# ------------------------------------------------------------------ blur
def _pad_index(n: int, r: int, padding: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Source index and validity of each of the n + 2r padded positions along one axis.
    Padding is a gather, so its exact adjoint is the matching scatter-add (index_add)."""
    j = torch.arange(-r, n + r)
    if padding == "zero":
        return j.clamp(0, n - 1), (j >= 0) & (j < n)
    if padding == "circular":
        return j % n, torch.ones_like(j, dtype=torch.bool)
    # reflect about the edge pixels (d c b | a b c d | c b a), repeated for wide kernels
    period = max(2 * (n - 1), 1)
    j = j % period
    return torch.where(j > n - 1, period - j, j), torch.ones_like(j, dtype=torch.bool)


@register
class GaussianBlur(LinearImageOperator):
    """Separable Gaussian blur of standard deviation `std` pixels, kernel truncated at
    `radius` (default ceil(3 std)), normalised to sum 1; output the same size as the input.
    padding: "zero" (default; A is then the symmetric matrix of `operators.blur_matrix`),
    "reflect" (about the edge pixels) or "circular". The adjoint is exact for each padding:
    padding is a gather whose adjoint is the scatter-add of the same indices."""

    name = "gaussian_blur"
    PADDINGS = ("zero", "reflect", "circular")

    def __init__(self, image_shape, std: float = 1.0, *, radius: int | None = None, padding: str = "zero"):
        super().__init__(image_shape)
        self.std = check_positive(std, "std")
        self.radius = max(1, math.ceil(3 * self.std)) if radius is None else check_int(radius, "radius", minimum=0)
        if padding not in self.PADDINGS:
            raise ValueError(f"padding: expected one of {self.PADDINGS}, got {padding!r}")
        self.padding = padding
        k = torch.exp(-0.5 * (torch.arange(-self.radius, self.radius + 1, dtype=torch.float64) / self.std) ** 2)
        self.kernel = k / k.sum()
        self._taps = self.kernel.tolist()     # the weights as Python floats, for any dtype
        _, h, w = self.image_shape
        self._pads = {axis: _pad_index(n, self.radius, padding) for axis, n in (("h", h), ("w", w))}

    def _m(self):
        return self.dim

    def _consts(self, axis, t):
        idx, valid = self._pads[axis]
        return (self._on(f"index {axis}", idx, t.device), self._on(f"valid {axis}", valid, t.device, t.dtype),
                self._on("kernel", self.kernel, t.device, t.dtype))

    def _blur_last(self, t, axis):
        """Blur along the last axis: pad (gather), then a 'valid' 1-D correlation written as a
        weighted sum of 2 radius + 1 shifted slices (5x faster than conv1d with one channel)."""
        idx, valid, _ = self._consts(axis, t)
        padded = t[..., idx] * valid
        n = t.shape[-1]
        out = padded[..., :n] * self._taps[0]
        for j, k in enumerate(self._taps[1:], 1):
            out.add_(padded[..., j:j + n], alpha=k)
        return out

    def _blur_last_adjoint(self, t, axis):
        """Adjoint of `_blur_last`: each slice's weighted copy added back, then the padding folded."""
        idx, valid, _ = self._consts(axis, t)
        n = t.shape[-1]
        padded = t.new_zeros(*t.shape[:-1], n + 2 * self.radius)
        for j, k in enumerate(self._taps):
            padded[..., j:j + n].add_(t, alpha=k)
        return t.new_zeros(t.shape).index_add_(-1, idx, padded * valid)

    def _forward(self, img):
        out = self._blur_last(img, "w")
        return self._blur_last(out.transpose(-1, -2), "h").transpose(-1, -2)

    def _vjp(self, img, v):
        u = v.reshape(img.shape)
        u = self._blur_last_adjoint(u.transpose(-1, -2), "h").transpose(-1, -2)
        return self._blur_last_adjoint(u.contiguous(), "w")

    @classmethod
    def example(cls, d, seed=0):
        return cls(_example_shape(d), 1.0, padding=cls.PADDINGS[seed % 3])

    def __repr__(self):
        return (f"GaussianBlur(image_shape={self.image_shape}, std={self.std:g}, radius={self.radius}, "
                f"padding={self.padding!r})")


# ------------------------------------------------------------------ downsampling
@register
class Downsampling(LinearImageOperator):
    """k x k average pooling (H and W divisible by k); the adjoint is nearest-neighbour
    upsampling divided by k^2."""

    name = "downsampling"

    def __init__(self, image_shape, factor: int = 2):
        super().__init__(image_shape)
        self.factor = check_int(factor, "factor")
        _, h, w = self.image_shape
        if h % self.factor or w % self.factor:
            raise ValueError(f"factor: expected a divisor of the height {h} and the width {w}, got {self.factor}")

    def _m(self):
        c, h, w = self.image_shape
        return c * (h // self.factor) * (w // self.factor)

    def _blocks(self, b):
        c, h, w = self.image_shape
        k = self.factor
        return b, c, h // k, k, w // k, k

    def _forward(self, img):
        # divide first: the sum of k^2 values stays within the dtype's range
        return (img.reshape(self._blocks(img.shape[0])) / self.factor ** 2).sum((3, 5))

    def _vjp(self, img, v):
        b, c, hk, k, wk, _ = self._blocks(img.shape[0])
        u = v.reshape(b, c, hk, 1, wk, 1) / k ** 2
        return u.expand(b, c, hk, k, wk, k)

    @classmethod
    def example(cls, d, seed=0):
        shape = _example_shape(d)
        return cls(shape, 2 if shape[1] % 2 == 0 and shape[2] % 2 == 0 else 1)

    def __repr__(self):
        return f"Downsampling(image_shape={self.image_shape}, factor={self.factor})"


# ------------------------------------------------------------------ phase retrieval
@register
class FourierMagnitude(ImageOperator):
    """Phase retrieval: |FFT2(x)| per channel, with the unitary ("ortho") FFT so that
    ||A(x)|| = ||x||. oversampling s zero-pads each image to (s H, s W) first (s = 2 is the
    usual choice for uniqueness up to the trivial ambiguities); m = C s^2 H W.
    With z = F x, the vector-Jacobian product is Re(F^H (v z / |z|)) (the real-valued chain
    rule; F^H = the ortho inverse FFT); at |z| = 0 the subgradient 0 is used, as autograd does."""

    name = "fourier_magnitude"

    def __init__(self, image_shape, *, oversampling: int = 1):
        super().__init__(image_shape)
        self.oversampling = check_int(oversampling, "oversampling", maximum=16)

    def _m(self):
        c, h, w = self.image_shape
        return c * h * w * self.oversampling ** 2

    def _fft(self, img):
        _, h, w = self.image_shape
        s = self.oversampling
        return torch.fft.fft2(img, s=(s * h, s * w), norm="ortho")   # s= zero-pads bottom/right

    def _forward(self, img):
        return self._fft(img).abs()

    def _vjp(self, img, v):
        z = self._fft(img)
        # the phase z / |z| of a subnormal or huge z over- or underflows: divide by the larger
        # of |Re z|, |Im z| first (then 1 <= |w| <= sqrt 2); phase 0 where z = 0
        scale = torch.maximum(z.real.abs(), z.imag.abs())
        safe = torch.where(scale > 0, scale, 1)
        wr, wi = z.real / safe, z.imag / safe
        norm = torch.hypot(wr, wi).clamp_min(1)
        phase = torch.complex(wr / norm, wi / norm)           # 0 where z = 0 (wr = wi = 0)
        u = v.reshape(z.shape) * phase
        _, h, w = self.image_shape
        return torch.fft.ifft2(u, norm="ortho").real[..., :h, :w]

    @classmethod
    def example(cls, d, seed=0):
        return cls(_example_shape(d), oversampling=1 + seed % 2)

    def __repr__(self):
        return f"FourierMagnitude(image_shape={self.image_shape}, oversampling={self.oversampling})"


# ------------------------------------------------------------------ summaries of images
def _rows(x, name: str) -> torch.Tensor:
    x = as_tensor(x, name, dtype=torch.float64)
    if x.ndim < 2 or x.shape[0] < 1:
        raise ValueError(f"{name}: expected images (n, ...) with n >= 1, got shape {tuple(x.shape)}")
    return x.reshape(x.shape[0], -1)


def pixel_moments(x, weights=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel mean and standard deviation of images x (n, ...) under weights (n,) (normalised
    here; uniform when None): the exact posterior's maps with weights = psi over the atoms, a
    sampler's with its samples. Returns two float64 tensors shaped like one image."""
    rows = _rows(x, "x")
    if weights is None:
        w = torch.full((rows.shape[0],), 1.0 / rows.shape[0], dtype=torch.float64, device=rows.device)
    else:
        w = as_tensor(weights, "weights", ndim=1, dtype=torch.float64, device=rows.device)
        if w.shape[0] != rows.shape[0] or bool((w < 0).any()) or not float(w.sum()) > 0:
            raise ValueError(f"weights: expected {rows.shape[0]} non-negative weights with a positive sum, "
                             f"got shape {tuple(w.shape)}")
        w = w / w.sum()
    mean = w @ rows
    var = (w @ (rows - mean) ** 2).clamp_min(0)        # centred first: no cancellation
    shape = tuple(as_tensor(x, "x").shape[1:])
    return mean.reshape(shape), var.sqrt().reshape(shape)


def gradient_energy(x, image_shape) -> torch.Tensor:
    """Mean squared finite difference of each image (n,): the average of (x[i+1, j] - x[i, j])^2
    and (x[i, j+1] - x[i, j])^2 over every pair of neighbouring pixels and channel. A blurred
    image has less of it; an average of several images (a Tweedie mean) less than each."""
    c, h, w = as_image_shape(image_shape)
    rows = _rows(x, "x")
    if rows.shape[1] != c * h * w:
        raise ValueError(f"x: expected images of {c * h * w} pixels for image_shape {(c, h, w)}, got {rows.shape[1]}")
    if h * w < 2:
        raise ValueError(f"image_shape: expected at least two pixels per channel, got {(c, h, w)}")
    img = rows.reshape(-1, c, h, w)
    dv, dh = img[:, :, 1:] - img[:, :, :-1], img[:, :, :, 1:] - img[:, :, :, :-1]
    total = (dv ** 2).sum((1, 2, 3)) + (dh ** 2).sum((1, 2, 3))
    return total / (c * (h - 1) * w + c * h * (w - 1))


def observed_image(forward, y) -> torch.Tensor:
    """What a measurement y (m,) shows, as an image (C, H, W) for display: inpainting puts the
    observed pixels in place and NaN elsewhere; downsampling repeats each value over its block;
    a blur is an image already; Fourier magnitudes are centred (fftshift) per channel."""
    if not isinstance(forward, ImageOperator):
        raise TypeError(f"forward: expected an fsdiag.imaging operator, got {type(forward).__name__}")
    y = as_tensor(y, "y", dtype=torch.float64).reshape(-1).cpu()
    if y.shape[0] != forward._m():
        raise ValueError(f"y: expected {forward._m()} values for {forward!r}, got {y.shape[0]}")
    c, h, w = forward.image_shape
    if isinstance(forward, PixelMask):
        out = torch.full((c * h * w,), math.nan, dtype=torch.float64)
        out[forward.index] = y
        return out.reshape(c, h, w)
    if isinstance(forward, Downsampling):
        k = forward.factor
        return y.reshape(c, h // k, 1, w // k, 1).expand(c, h // k, k, w // k, k).reshape(c, h, w)
    if isinstance(forward, FourierMagnitude):
        s = forward.oversampling
        return torch.fft.fftshift(y.reshape(c, s * h, s * w), dim=(-2, -1))
    return y.reshape(c, h, w)
