"""Forward models A: R^d -> R^m, batched over rows, with Jacobian-transpose products.

A new operator is one subclass with `@register`; the tests pick it up from
`FORWARD_MODELS` (each class provides `example(d, seed)` for them).
"""
from __future__ import annotations

import math

import torch

from ._checks import as_tensor, check_int
from ._threads import threads_for
from .registry import Registry

__all__ = ["ForwardModel", "Identity", "Affine", "Mask", "Radial", "PolarAngle",
           "AbsoluteValue", "MLP", "FORWARD_MODELS", "register"]

FORWARD_MODELS = Registry("forward model")
register = FORWARD_MODELS.register    # a forward model class, under its `name`


class ForwardModel:
    """A(x) on (B, d) rows; `vjp(x, v)` = J_A(x)^T v for v of shape (B, m)."""

    name = "base"
    is_linear = False

    def out_dim(self, d: int) -> int:
        raise NotImplementedError

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def vjp(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def jacobian(self, x: torch.Tensor) -> torch.Tensor:
        """(B, m, d) Jacobian from m vector-Jacobian products (fine for small m)."""
        x = self._check_x(x)
        y = self(x)
        m = y.shape[1]
        eye = torch.eye(m, dtype=x.dtype, device=x.device)
        return torch.stack([self.vjp(x, eye[j].expand(x.shape[0], m)) for j in range(m)], 1)

    @classmethod
    def example(cls, d: int, seed: int = 0) -> "ForwardModel":
        """An instance for the test-suite (subclasses that need arguments override)."""
        return cls()

    def _check_x(self, x, min_dim: int = 1) -> torch.Tensor:
        """x as a (batch, d) floating tensor (integers and bool become the default float
        dtype: a model's parameters are never cast to an integer dtype)."""
        x = as_tensor(x, "x")
        if x.ndim != 2 or x.shape[1] < min_dim:
            raise ValueError(f"x: expected shape (batch, d) with d >= {min_dim} for {self.name}, "
                             f"got {tuple(x.shape)}")
        self.out_dim(x.shape[1])
        return x

    def _check_xv(self, x, v, min_dim: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, d) and v (B, m) for a vector-Jacobian product, v in x's dtype and device."""
        x = self._check_x(x, min_dim)
        v = as_tensor(v, "v", dtype=x.dtype, device=x.device)
        shape = (x.shape[0], self.out_dim(x.shape[1]))
        if tuple(v.shape) != shape:
            raise ValueError(f"v: expected shape {shape} for {self.name} at x of shape "
                             f"{tuple(x.shape)}, got {tuple(v.shape)}")
        return x, v

    def apply_A(self, w) -> torch.Tensor:
        raise TypeError(f"forward: apply_A needs a linear forward model (fsdiag.forward.LinearForwardModel), "
                        f"got {self!r}")

    def apply_At(self, z, d: int) -> torch.Tensor:
        raise TypeError(f"forward: apply_At needs a linear forward model (fsdiag.forward.LinearForwardModel), "
                        f"got {self!r}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class LinearForwardModel(ForwardModel):
    """A(x) = M x + c. Subclasses provide `matrix_for(d)` and may override the fast paths.

    The algebra the samplers need, as deepinv's LinearPhysics offers it: `apply_A` (M w) and
    `apply_At` (M^T z), matrix-free from the operator and its vector-Jacobian product (O(d) for a
    mask, a blur or a pooling), `rows` (M from m adjoint products: any d, small m), `dense` (M) and
    `gram` (M M^T), the last three built once per (d, dtype, device)."""

    is_linear = True
    bias: torch.Tensor | None = None

    def matrix_for(self, d: int, dtype=torch.float64, device=None) -> torch.Tensor:
        raise NotImplementedError

    def _once(self, key: tuple, make):
        store = self.__dict__.setdefault("_algebra", {})
        if key not in store:
            store[key] = make()
        return store[key]

    def dense(self, d: int, dtype=torch.float64, device=None) -> torch.Tensor:
        """M (m, d) in dtype on device (`matrix_for`), built once."""
        return self._once(("matrix", d, dtype, str(device)), lambda: self.matrix_for(d, dtype, device))

    def gram(self, d: int, dtype=torch.float64, device=None) -> torch.Tensor:
        """M M^T (m, m) of the dense matrix, built once (ΠGDM's dense solve needs it every step)."""
        def make():
            M = self.dense(d, dtype, device)
            return M @ M.T
        return self._once(("gram", d, dtype, str(device)), make)

    def offset(self, d: int, dtype=torch.float64, device=None) -> torch.Tensor | None:
        """c = A(0) of A(x) = M x + c (None when c = 0), from the operator itself (a subclass that
        adds a constant without setting `bias` is handled too)."""
        def make():
            c = self(torch.zeros(1, d, dtype=dtype, device=device))[0]
            return c if bool((c != 0).any()) else None
        return self._once(("offset", d, dtype, str(device)), make)

    def _work(self, rows: int, d: int) -> int:
        # An image operator's product costs a few dozen flops per pixel (a blur's taps); CG calls
        # it on small (B, d) blocks where torch's threads only add synchronisation (_threads).
        return 32 * rows * (d + self.out_dim(d))

    def apply_A(self, w) -> torch.Tensor:
        """M w for rows w (B, d) -> (B, m): the linear part of A(x) = M x + c (no bias c)."""
        w = as_tensor(w, "w", ndim=2)
        if not w.is_floating_point():
            w = w.to(torch.get_default_dtype())
        try:
            self.out_dim(w.shape[1])
        except (TypeError, ValueError) as err:
            raise ValueError(f"w: rows of shape {tuple(w.shape)} do not fit {self.name}: {err}") from None
        with threads_for(self._work(w.shape[0], w.shape[1])):
            out = self(w)
        c = self.offset(w.shape[1], w.dtype, w.device)
        return out if c is None else out - c

    def apply_At(self, z, d: int) -> torch.Tensor:
        """M^T z for rows z (B, m) -> (B, d), from the vector-Jacobian product (exact for a linear
        model: J_A(x)^T z does not depend on x)."""
        d = check_int(d, "d")
        z = as_tensor(z, "z", ndim=2)
        if not z.is_floating_point():
            z = z.to(torch.get_default_dtype())
        m = self.out_dim(d)
        if z.shape[1] != m:
            raise ValueError(f"z: expected shape (batch, {m}) for {self.name} on d = {d}, got {tuple(z.shape)}")
        with threads_for(self._work(z.shape[0], d)):
            return self.vjp(z.new_zeros(z.shape[0], d), z)

    def rows(self, d: int, dtype=torch.float64, device=None) -> torch.Tensor:
        """The (m, d) matrix M from m adjoint products M^T e_j, built once: no limit on d, for
        small m (TMPD's dense path). Equals `dense` bit for bit for masks, pooling, Affine and
        zero- or circular-padded blur; to rounding for reflect padding (its folded edge sums)."""
        return self._once(("rows", d, dtype, str(device)),
                          lambda: self.apply_At(torch.eye(self.out_dim(d), dtype=dtype, device=device), d))


@register
class Identity(LinearForwardModel):
    name = "identity"

    def out_dim(self, d):
        return d

    def __call__(self, x):
        return self._check_x(x)

    def vjp(self, x, v):
        return self._check_xv(x, v)[1]

    def matrix_for(self, d, dtype=torch.float64, device=None):
        return torch.eye(d, dtype=dtype, device=device)


@register
class Affine(LinearForwardModel):
    """A(x) = matrix @ x + bias; matrix (m, d), bias (m,)."""

    name = "affine"

    def __init__(self, matrix, bias=None):
        self.matrix = as_tensor(matrix, "matrix", ndim=(0, 1, 2))
        if self.matrix.ndim < 2:  # a scalar or a single row
            self.matrix = self.matrix.reshape(1, -1)
        m = self.matrix.shape[0]
        if m < 1 or self.matrix.shape[1] < 1:
            raise ValueError(f"matrix: expected shape (m, d) with m, d >= 1, got {tuple(self.matrix.shape)}")
        self.bias = None if bias is None else as_tensor(bias, "bias", ndim=(0, 1)).reshape(-1)
        if self.bias is not None and self.bias.shape[0] != m:
            raise ValueError(f"bias: expected shape ({m},) to match matrix rows, got {tuple(self.bias.shape)}")

    def out_dim(self, d):
        if d != self.matrix.shape[1]:
            raise ValueError(f"x: the affine model expects d = {self.matrix.shape[1]}, got d = {d}")
        return self.matrix.shape[0]

    def _m(self, x):
        return self.matrix.to(dtype=x.dtype, device=x.device)

    def __call__(self, x):
        x = self._check_x(x)
        y = x @ self._m(x).T
        return y if self.bias is None else y + self.bias.to(dtype=x.dtype, device=x.device)

    def vjp(self, x, v):
        x, v = self._check_xv(x, v)
        return v @ self._m(x)

    def matrix_for(self, d, dtype=torch.float64, device=None):
        self.out_dim(d)
        return self.matrix.to(dtype=dtype, device=device)

    @classmethod
    def example(cls, d, seed=0):
        g = torch.Generator().manual_seed(seed)
        m = max(1, d // 2)
        return cls(torch.randn(m, d, generator=g, dtype=torch.float64) / math.sqrt(d),
                   torch.randn(m, generator=g, dtype=torch.float64) * 0.1)

    def __repr__(self):
        return f"Affine(matrix={tuple(self.matrix.shape)}, bias={'yes' if self.bias is not None else 'no'})"


@register
class Mask(LinearForwardModel):
    """Inpainting: keep the coordinates where `mask` is True."""

    name = "mask"

    def __init__(self, mask):
        try:
            mask = torch.as_tensor(mask)
        except (TypeError, RuntimeError, ValueError) as err:
            raise TypeError(f"mask: expected a 1-D boolean array, got {type(mask).__name__}") from err
        if mask.ndim != 1 or mask.dtype != torch.bool:
            raise ValueError(f"mask: expected a 1-D boolean mask, got dtype {mask.dtype} shape {tuple(mask.shape)}")
        if not bool(mask.any()):
            raise ValueError("mask: expected at least one observed coordinate")
        self.mask = mask
        self.index = torch.nonzero(mask).flatten()

    def out_dim(self, d):
        if d != self.mask.shape[0]:
            raise ValueError(f"x: the mask expects d = {self.mask.shape[0]}, got d = {d}")
        return int(self.index.shape[0])

    def __call__(self, x):
        x = self._check_x(x)
        return x[:, self.index.to(x.device)]

    def vjp(self, x, v):
        x, v = self._check_xv(x, v)
        out = torch.zeros_like(x)
        out[:, self.index.to(x.device)] = v
        return out

    def matrix_for(self, d, dtype=torch.float64, device=None):
        self.out_dim(d)
        return torch.eye(d, dtype=dtype, device=device)[self.index.to(device)]

    @classmethod
    def example(cls, d, seed=0):
        mask = torch.zeros(d, dtype=torch.bool)
        mask[::2] = True
        return cls(mask)

    def __repr__(self):
        return f"Mask(observed={self.out_dim(self.mask.shape[0])}/{self.mask.shape[0]})"


@register
class Radial(ForwardModel):
    """A(x) = ||x|| (distance from the origin), m = 1."""

    name = "radial"

    def out_dim(self, d):
        return 1

    def __call__(self, x):
        return _row_norm(self._check_x(x))

    def vjp(self, x, v):
        x, v = self._check_xv(x, v)
        r = _row_norm(x)
        tiny = torch.finfo(x.dtype).tiny
        unit = x / r.clamp_min(tiny)
        small = (r < tiny) & (r > 0)         # a subnormal norm: x / tiny is not the unit vector
        if bool(small.any()):
            m = torch.where(small, x.abs().amax(1, keepdim=True), torch.ones_like(r))
            u = x / m
            unit = torch.where(small, u / u.norm(dim=1, keepdim=True).clamp_min(tiny), unit)
        return unit * v


def _row_norm(x: torch.Tensor) -> torch.Tensor:
    """||x|| per row, (B, 1). Rows whose sum of squares would overflow or underflow the dtype
    (|x| ~ 1e20 or 1e-20 in float32) are scaled by their largest entry first, so a norm that is
    representable is returned; other rows keep the plain norm (unchanged numbers). A norm beyond
    the dtype's range raises rather than return inf."""
    r = x.norm(dim=1, keepdim=True)
    if x.shape[0] == 0 or x.shape[1] == 0:
        return r
    info = torch.finfo(x.dtype)
    big = x.abs().amax(1, keepdim=True)
    risky = (big > info.max ** 0.5 / x.shape[1] ** 0.5) | ((big < info.tiny ** 0.5) & (big > 0))
    if bool(risky.any()):
        m = torch.where(big > 0, big, torch.ones_like(big))
        r = torch.where(risky, m * (x / m).norm(dim=1, keepdim=True), r)
        if not bool(torch.isfinite(r).all()):
            raise FloatingPointError(f"x: ||x|| exceeds the range of {x.dtype} "
                                     f"(max |x| = {float(big.max()):.3g}); rescale x or use float64")
    return r


@register
class PolarAngle(ForwardModel):
    """A(x) = atan2(x_2, x_1), the polar angle of the first two coordinates, m = 1."""

    name = "polar_angle"

    def out_dim(self, d):
        if d < 2:
            raise ValueError(f"x: polar_angle needs d >= 2, got d = {d}")
        return 1

    def __call__(self, x):
        x = self._check_x(x, 2)
        return torch.atan2(x[:, 1:2], x[:, 0:1])

    def vjp(self, x, v):
        x, v = self._check_xv(x, v, 2)
        info = torch.finfo(x.dtype)
        r2 = (x[:, 0] ** 2 + x[:, 1] ** 2).clamp_min(info.tiny)
        g0, g1 = -x[:, 1] / r2, x[:, 0] / r2
        # Rows whose r^2 overflows or underflows the dtype: (-x_2, x_1) / r^2 from x / max|x_1|, |x_2|.
        m = torch.maximum(x[:, 0].abs(), x[:, 1].abs())
        risky = (m > info.max ** 0.5 / 2) | ((m < info.tiny ** 0.5) & (m > 0))
        if bool(risky.any()):
            ms = torch.where(risky, m, torch.ones_like(m))
            s0, s1 = x[:, 0] / ms, x[:, 1] / ms
            q = s0 * s0 + s1 * s1                                 # in [1, 2]
            g0, g1 = torch.where(risky, -s1 / q / ms, g0), torch.where(risky, s0 / q / ms, g1)
        out = torch.zeros_like(x)
        out[:, 0] = g0 * v[:, 0]
        out[:, 1] = g1 * v[:, 0]
        return out

    @classmethod
    def example(cls, d, seed=0):
        return cls()


@register
class AbsoluteValue(ForwardModel):
    """A(x) = |x| coordinate-wise (phase-retrieval-like), m = d."""

    name = "abs"

    def out_dim(self, d):
        return d

    def __call__(self, x):
        return self._check_x(x).abs()

    def vjp(self, x, v):
        x, v = self._check_xv(x, v)
        return torch.sign(x) * v


@register
class MLP(ForwardModel):
    """A small fixed-weight network A(x) = W2 tanh(W1 x + b1) + b2, seeded."""

    name = "mlp"

    def __init__(self, in_dim: int, out_dim: int = 1, hidden: int = 16, *, seed: int = 0):
        # Sizes beyond 2**20 are typos here (the weights would not fit in memory).
        in_dim, out_dim, hidden = (check_int(val, arg, maximum=2 ** 20) for arg, val in
                                   (("in_dim", in_dim), ("out_dim", out_dim), ("hidden", hidden)))
        seed = check_int(seed, "seed", minimum=0)
        g = torch.Generator().manual_seed(seed)
        self.w1 = torch.randn(hidden, in_dim, generator=g, dtype=torch.float64) * (1.5 / math.sqrt(in_dim))
        self.b1 = torch.randn(hidden, generator=g, dtype=torch.float64) * 0.5
        self.w2 = torch.randn(out_dim, hidden, generator=g, dtype=torch.float64) / math.sqrt(hidden)
        self.b2 = torch.zeros(out_dim, dtype=torch.float64)
        self.in_dim, self._out, self.seed = in_dim, out_dim, seed

    def out_dim(self, d):
        if d != self.in_dim:
            raise ValueError(f"x: this MLP expects d = {self.in_dim}, got d = {d}")
        return self._out

    def _p(self, x):
        return [p.to(dtype=x.dtype, device=x.device) for p in (self.w1, self.b1, self.w2, self.b2)]

    def __call__(self, x):
        x = self._check_x(x)
        w1, b1, w2, b2 = self._p(x)
        return torch.tanh(x @ w1.T + b1) @ w2.T + b2

    def vjp(self, x, v):
        x, v = self._check_xv(x, v)
        w1, b1, w2, _ = self._p(x)
        h = torch.tanh(x @ w1.T + b1)
        return ((v @ w2) * (1 - h * h)) @ w1

    @classmethod
    def example(cls, d, seed=0):
        return cls(d, 2, 8, seed=seed)

    def __repr__(self):
        return f"MLP(in_dim={self.in_dim}, out_dim={self._out}, hidden={self.w1.shape[0]}, seed={self.seed})"
