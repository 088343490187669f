"""The exact MMSE denoiser of an empirical prior, as a module samplers can call (docs/design.md §3).

`ExactDenoiser(prior)(x, sigma)` is E[x0 | x] for x = x0 + sigma z (the variance-exploding
convention of k-diffusion, EDM and deepinv); `.vp(x_t, abar)` is the same in the VP convention
x_t = sqrt(abar) x0 + sqrt(1 - abar) z. Both are the prior's streamed Tweedie mean
(`EmpiricalPrior.moments`), never a (batch, N) tensor. Derivatives use the closed form
dm/dx_t = (a / b^2) Cov(x0 | x_t) — in VE form dD/dx = Cov(x0 | x) / sigma^2, symmetric — through
a custom autograd.Function, so `.backward()`, `torch.func.vjp`, `jvp`, `vmap`, `jacrev` and
`jacfwd` all cost one streamed covariance-vector pass per call (k vectors per query in one pass).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ._checks import check_has_values
from .kernels import group_shares
from .prior import EmpiricalPrior

__all__ = ["ExactDenoiser"]

_SOFT, _ROWS, _NEAREST, _MEAN = "soft", "rows", "nearest", "mean"
# Above this many distinct noise levels in one batch, one per-row pass beats a pass per level.
_MAX_LEVEL_GROUPS = 4


class _Group:
    """Rows sharing one noise level: how to compute them and the Jacobian's scale there.

    kind: _SOFT (prior.denoise at one abar), _ROWS (a noise level per row, by this module's
    streamed pass), _NEAREST (the sigma -> 0 limit) or _MEAN (abar -> 0: the prior mean);
    x_scale: multiplies the query into the prior's VP convention; jac_scale: the Jacobian is
    jac_scale * Cov(x0 | x); rows: a LongTensor of row indices, or None for all. For _ROWS,
    abar is the pair (a, b2) and x_scale, jac_scale are (rows, 1) float64 tensors.
    """

    __slots__ = ("kind", "abar", "x_scale", "jac_scale", "rows", "pair")

    def __init__(self, kind, abar, x_scale, jac_scale, rows, pair=None):
        self.kind, self.abar, self.x_scale, self.jac_scale, self.rows = kind, abar, x_scale, jac_scale, rows
        self.pair = pair    # (a, b^2) as floats, b^2 computed without cancellation (for _ROWS)


class _Plan:
    """The groups of a batch of `rows` queries (an opaque leaf for torch.func, not a pytree)."""

    __slots__ = ("groups", "rows", "name")

    def __init__(self, groups, rows, name="x"):
        self.groups, self.rows, self.name = tuple(groups), rows, name

    def tile(self, copies: int) -> "_Plan":
        """The plan of `copies` stacked copies of the batch (vmap folds its dimension into rows)."""
        groups = []
        for g in self.groups:
            rows = g.rows
            if rows is not None:
                offs = torch.arange(copies, device=rows.device) * self.rows
                rows = (offs[:, None] + rows[None, :]).reshape(-1)
            abar, xs, js = g.abar, g.x_scale, g.jac_scale
            if g.kind == _ROWS:
                abar = tuple(t.repeat(copies, 1) for t in abar)
                xs, js = xs.repeat(copies, 1), js.repeat(copies, 1)
            groups.append(_Group(g.kind, abar, xs, js, rows))
        return _Plan(groups, self.rows * copies, self.name)


def _take(t: torch.Tensor, rows):
    return t if rows is None else t.index_select(0, rows)


def _put(out: torch.Tensor, rows, value: torch.Tensor) -> None:
    if rows is None:
        out.copy_(value)
    else:
        out.index_copy_(0, rows, value)


def _limit_nearest(prior: EmpiricalPrior, x: torch.Tensor) -> torch.Tensor:
    """lim_{sigma -> 0} E[x0 | x]: the nearest atom of positive weight; at an exact tie, the
    pi-weighted mean of the tied atoms (the engine's exact search, `fsdiag.kernels.nearest`)."""
    engine = prior.engine
    nn = engine.nearest(x, 1.0)
    share = group_shares(engine.log_weights_at(nn.tie_index), nn.tie_rows)   # the tied atoms' pi, per row
    atoms = engine.atoms_at(nn.tie_index).to(torch.float64) * share[:, None]
    out = torch.zeros(x.shape, dtype=torch.float64, device=x.device).index_add_(0, nn.tie_rows, atoms)
    return out.to(x.dtype)


def _pair(abar, x: torch.Tensor):
    """(a, b^2) from abar (a float) or from (a, b^2) given as (B, 1) float64 tensors."""
    if isinstance(abar, tuple):
        return tuple(t.to(dtype=x.dtype, device=x.device) for t in abar)
    return math.sqrt(abar), 1.0 - abar


def _mean_rows(prior: EmpiricalPrior, x: torch.Tensor, abar) -> torch.Tensor:
    """Tweedie mean with a noise level per row (abar = (a, b2) as (B, 1) tensors): the engine's
    one softmax pass with per-row coefficients, one pass for any number of levels."""
    a, b2 = _pair(abar, x)
    return prior.engine.reduce(x, a, b2, route="torch")[1][0]


def _cov_matvec(prior: EmpiricalPrior, x: torch.Tensor, abar, mean: torch.Tensor,
                v: torch.Tensor) -> torch.Tensor:
    """Cov(x0 | x_t) v for v (B, k, d), centred at the saved mean m; abar a float or per row
    (a, b2) as (B, 1) tensors. The engine's covariance pass normalises its weights within the
    pass, not by the earlier moments pass's log_norm, which at small b in float32 rounds the
    logits differently (seen: 1e20x at sigma = 3e-4, d = 64). Centring at the saved m costs
    nothing: a slightly different m changes C v only at second order."""
    a, b2 = _pair(abar, x)
    return prior.engine.cov(x, a, b2, v, mean)[1]


def _check_x_finite(x: torch.Tensor, name: str) -> None:
    if not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{name}: expected finite values, found {bad} NaN/Inf entries")


class _Tweedie(torch.autograd.Function):
    """The prior's streamed Tweedie mean, per group of rows; its Jacobian is
    jac_scale * Cov(x0 | x) (symmetric), applied by _CovMatvec."""

    @staticmethod
    def forward(x, prior, plan):
        _check_x_finite(x, plan.name)
        out = torch.empty_like(x)
        for g in plan.groups:
            xs = _take(x, g.rows)
            if g.kind == _SOFT:
                _put(out, g.rows, prior.denoise(xs * g.x_scale if g.x_scale != 1.0 else xs, g.abar))
            elif g.kind == _ROWS:
                _put(out, g.rows, _mean_rows(prior, xs * g.x_scale.to(xs), g.abar))
            elif g.kind == _NEAREST:
                _put(out, g.rows, _limit_nearest(prior, xs))
            else:
                _put(out, g.rows, prior.engine.prior_mean().to(x.dtype).expand_as(xs))
        return out

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, prior, plan = inputs
        ctx.save_for_backward(x, output)
        ctx.save_for_forward(x, output)
        ctx.prior, ctx.plan = prior, plan

    @staticmethod
    def backward(ctx, grad_mean):
        x, mean = ctx.saved_tensors
        return _CovMatvec.apply(x, mean, grad_mean, ctx.prior, ctx.plan), None, None

    @staticmethod
    def jvp(ctx, x_tangent, prior_tangent, plan_tangent):
        x, mean = ctx.saved_tensors
        # The Jacobian is symmetric: the forward-mode product is the same matvec.
        return _CovMatvec.apply(x, mean, x_tangent, ctx.prior, ctx.plan)

    @staticmethod
    def vmap(info, in_dims, x, prior, plan):
        # Fold the vmapped dimension into the batch: one streamed pass for all copies.
        if in_dims[0] is None:
            return _Tweedie.apply(x, prior, plan), None
        n = info.batch_size
        xb = x.movedim(in_dims[0], 0)
        mean = _Tweedie.apply(xb.reshape(n * xb.shape[1], xb.shape[2]), prior, plan.tile(n))
        return mean.reshape(xb.shape), 0


class _CovMatvec(torch.autograd.Function):
    """jac_scale * Cov(x0 | x) v per group, v (B, d) or (B, k, d), from the saved pass."""

    @staticmethod
    def forward(x, mean, v, prior, plan):
        out = torch.zeros_like(v)
        for g in plan.groups:
            if g.kind not in (_SOFT, _ROWS):
                continue    # sigma = 0 (piecewise constant) and abar = 0 (constant): zero Jacobian
            xs = _take(x, g.rows)
            vs = _take(v, g.rows)
            vs3 = vs if vs.ndim == 3 else vs.unsqueeze(1)
            if g.kind == _SOFT:
                cv = _cov_matvec(prior, xs * g.x_scale if g.x_scale != 1.0 else xs, g.abar,
                                 _take(mean, g.rows), vs3) * g.jac_scale
            else:
                cv = _cov_matvec(prior, xs * g.x_scale.to(xs), g.abar, _take(mean, g.rows), vs3)
                cv = cv * g.jac_scale.to(xs).unsqueeze(-1)
            _put(out, g.rows, cv.reshape(vs.shape))
        return out

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, grad):
        raise NotImplementedError("ExactDenoiser: second derivatives (double backward, Hessians) "
                                  "are not supported; the first derivative is the closed form "
                                  "Cov(x0 | x) / sigma^2")

    @staticmethod
    def jvp(ctx, *tangents):
        raise NotImplementedError("ExactDenoiser: second derivatives (forward-over-reverse) "
                                  "are not supported")

    @staticmethod
    def vmap(info, in_dims, x, mean, v, prior, plan):
        xd, md, vd = in_dims[:3]
        n = info.batch_size
        if xd is None and md is None and vd is None:
            return _CovMatvec.apply(x, mean, v, prior, plan), None
        if xd is None and md is None:
            # Only the vectors are batched (jacrev, jacfwd, many cotangents): k = n vectors per
            # query in one pass.
            vb = v.movedim(vd, 1)
            if vb.ndim == 3:
                return _CovMatvec.apply(x, mean, vb, prior, plan), 1
            B, d = vb.shape[0], vb.shape[-1]
            out = _CovMatvec.apply(x, mean, vb.reshape(B, -1, d).contiguous(), prior, plan)
            return out.reshape(vb.shape), 1

        def fold(t, dim):
            t = t.unsqueeze(0).expand(n, *t.shape) if dim is None else t.movedim(dim, 0)
            return t.reshape(n * t.shape[1], *t.shape[2:])

        B = (x if xd is None else x.movedim(xd, 0)[0]).shape[0]
        out = _CovMatvec.apply(fold(x, xd), fold(mean, md), fold(v, vd), prior, plan.tile(n))
        return out.reshape(n, B, *out.shape[1:]), 0


# ------------------------------------------------------------------- argument checks
def _level(value) -> float:
    """One number as a Python float; an integer beyond float range is +-inf (10**400 is as
    infinite a noise level as float('inf')), which _check_levels then accepts or refuses."""
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def _levels(value, name: str, batch: int, *, upper: float | None) -> list[float]:
    """A noise level per query as Python floats: one value (any shape of numel 1), or `batch`
    values in a (B,), (B, 1), (B, 1, 1, 1), ... tensor, array or (nested) list. Non-negative, not
    NaN, at most `upper` when given."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}: expected a real number or tensor, got bool")
    if isinstance(value, (complex, np.complexfloating)):
        raise TypeError(f"{name}: expected a real number, got complex {value!r}")
    if isinstance(value, torch.Tensor):
        t = value
    elif isinstance(value, (int, float, np.integer, np.floating)):
        return _check_levels([_level(value)], name, upper)
    else:
        try:
            arr = np.asarray(value)
        except Exception as err:  # noqa: BLE001 - re-raised with the argument's name
            raise TypeError(f"{name}: expected a real number or tensor, got {type(value).__name__}") from err
        if arr.dtype == object and arr.size and all(
                isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))
                for v in arr.flat):
            # Python ints beyond float64 (a list holding 10**400) make an object array.
            arr = np.array([_level(v) for v in arr.flat], dtype=np.float64).reshape(arr.shape)
        if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
            raise TypeError(f"{name}: expected real numbers, got an array of dtype {arr.dtype}")
        if arr.dtype == np.longdouble and arr.dtype != np.float64:
            arr = arr.astype(np.float64)        # torch has no extended precision (beyond float64: inf)
        t = torch.as_tensor(arr)
    if t.dtype == torch.bool or t.is_complex():
        raise TypeError(f"{name}: expected a real tensor, got dtype {t.dtype}")
    check_has_values(t, name)
    if t.requires_grad:
        # Read as numbers, it would get no gradient: say so rather than return zeros (torch.func.grad).
        raise ValueError(f"{name}: derivatives with respect to {name} are not supported; "
                         f"pass {name}.detach()")
    n = t.numel()
    if n != 1:
        if n != batch or t.ndim == 0 or t.shape[0] != batch:
            raise ValueError(f"{name}: expected one value or one per sample, shape ({batch},) or "
                             f"({batch}, 1, ...), got shape {tuple(t.shape)}")
    try:
        vals = t.detach().to("cpu", torch.float64).reshape(-1).tolist()
    except RuntimeError as err:
        raise ValueError(f"{name}: cannot be read as numbers here (batched by torch.func.vmap? "
                         f"vmap over x only)") from err
    return _check_levels(vals, name, upper)


def _check_levels(vals: list[float], name: str, upper: float | None) -> list[float]:
    for v in vals:
        if math.isnan(v) or v < 0 or (upper is not None and v > upper):
            want = f"in [0, {upper:g}]" if upper is not None else "non-negative (inf allowed)"
            raise ValueError(f"{name}: expected values {want}, got {v}")
    return vals


def _ve_group(sigma: float, rows) -> _Group:
    """D_VE(x, sigma) = m_VP(a x, abar), abar = 1 / (1 + sigma^2), a = (1 + sigma^2)^(-1/2)."""
    s2 = sigma * sigma
    abar = 1.0 / (1.0 + s2)
    if sigma == 0.0 or abar == 1.0:
        # abar rounds to 1 for sigma < ~1.05e-8: then every atom but the nearest has weight
        # below exp(-36) ~ 1e-16 unless ||x - x_j||^2 - ||x - x_i||^2 < 72 sigma^2 < 1e-14.
        return _Group(_NEAREST, 1.0, 1.0, 0.0, rows)
    if abar == 0.0 or math.isinf(s2):
        return _Group(_MEAN, 0.0, 0.0, 0.0, rows)
    # b^2 = sigma^2 / (1 + sigma^2), not 1 - abar, for the per-row pass (the prior takes abar).
    return _Group(_SOFT, abar, math.sqrt(abar), 1.0 / s2, rows, (math.sqrt(abar), s2 / (1.0 + s2)))


def _vp_group(abar: float, rows) -> _Group:
    if abar == 1.0:
        return _Group(_NEAREST, 1.0, 1.0, 0.0, rows)
    if abar == 0.0:
        return _Group(_MEAN, 0.0, 0.0, 0.0, rows)
    return _Group(_SOFT, abar, 1.0, math.sqrt(abar) / (1.0 - abar), rows, (math.sqrt(abar), 1.0 - abar))


def _plan(levels: list[float], batch: int, make, device, name: str) -> _Plan:
    """Group the rows by noise level: one group per limit (sigma = 0, abar = 0); each distinct
    level its own group (the prior's kernel) up to _MAX_LEVEL_GROUPS levels, else one per-row pass."""
    if len(set(levels)) == 1:
        return _Plan([make(levels[0], None)], batch, name)
    uniq, inv = torch.unique(torch.tensor(levels, dtype=torch.float64), return_inverse=True)
    protos = [make(v, None) for v in uniq.tolist()]

    def rows_of(ks):
        return torch.isin(inv, torch.tensor(ks)).nonzero().squeeze(1)

    groups = []
    for kind in (_NEAREST, _MEAN):
        ks = [k for k, g in enumerate(protos) if g.kind == kind]
        if ks:
            g = protos[ks[0]]
            groups.append(_Group(kind, g.abar, g.x_scale, g.jac_scale, rows_of(ks).to(device)))
    soft = [k for k, g in enumerate(protos) if g.kind == _SOFT]
    if len(soft) <= _MAX_LEVEL_GROUPS:
        for k in soft:
            g = protos[k]
            groups.append(_Group(_SOFT, g.abar, g.x_scale, g.jac_scale, rows_of([k]).to(device)))
    elif soft:
        rows = rows_of(soft)
        per = [protos[k] for k in inv[rows].tolist()]
        col = lambda vals: torch.tensor(vals, dtype=torch.float64).unsqueeze(1)  # noqa: E731
        pair = (col([g.pair[0] for g in per]), col([g.pair[1] for g in per]))
        groups.append(_Group(_ROWS, pair, col([g.x_scale for g in per]), col([g.jac_scale for g in per]),
                             rows.to(device)))
    return _Plan(groups, batch, name)


class ExactDenoiser(torch.nn.Module):
    """The exact MMSE denoiser D(x, sigma) = E[x0 | x0 + sigma z = x] of an EmpiricalPrior
    (docs/design.md §2.2, §3), streamed over atoms, with the closed-form Jacobian Cov(x0 | x) / sigma^2.

    forward(x, sigma): x of shape (B, d) or (B, ...) with prod(...) = prior.dim (e.g. (B, C, H, W));
    sigma a number, a 0-dim tensor, or one value per sample ((B,), (B, 1, 1, 1), ...), sigma >= 0.
    Returns E[x0 | x] in x's shape, dtype and device, computed in the prior's dtype on its
    device. Per-sample sigma costs one streamed pass per distinct value.
    sigma = 0 is the limit: the nearest atom of positive weight (at an exact tie, the
    pi-weighted mean of the tied atoms); so is sigma < ~1.05e-8, where abar = 1/(1+sigma^2)
    rounds to 1 in float64 and that limit is exact to float64 precision. sigma = inf (or
    sigma^2 overflowing) gives the prior mean sum_i pi_i x_i.

    Derivatives with respect to x: a custom autograd.Function applies the closed-form symmetric
    Jacobian (one streamed covariance-vector pass, self-normalised: see _cov_matvec) under plain
    autograd and torch.func (vjp, jvp, vmap, grad, jacrev, jacfwd); zero at sigma = 0 and inf.
    Not supported: derivatives with respect to sigma (it is read as numbers; a sigma that
    requires grad raises ValueError rather than silently getting none) and second derivatives
    (double backward and forward-over-reverse raise NotImplementedError).

    Precision at small sigma: the prior's kernels take abar and form 1 - abar, so 1/sigma^2
    carries a relative error up to ~1e-16/sigma^2; this moves logit differences by less than the
    kernels' own ||x||^2 expansion already does (~eps |x - c| |x_i - c| / sigma^2). Near a tie
    between atoms D is ill-conditioned (dD/dx ~ |x_i - x_j|^2 / sigma^2): expect float32 to lose
    the split between tied atoms once eps32 |x| |x_i - x_j| approaches sigma^2.

    The module holds no parameters or buffers: `prior` is a plain reference (its atoms are not
    copied), and `.to(...)` does not move it.
    """

    def __init__(self, prior: EmpiricalPrior):
        super().__init__()
        if not isinstance(prior, EmpiricalPrior):
            raise TypeError(f"prior: expected an fsdiag.EmpiricalPrior, got {type(prior).__name__}")
        self.prior = prior

    def extra_repr(self) -> str:
        return f"prior={self.prior!r}"

    def _flat(self, x, name: str) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(f"{name}: expected a floating-point tensor, got dtype {x.dtype}")
        check_has_values(x, name)
        d = self.prior.dim
        if x.ndim < 2 or math.prod(x.shape[1:]) != d:
            raise ValueError(f"{name}: expected shape (batch, {d}) or (batch, ...) with "
                             f"{d} values per sample, got {tuple(x.shape)}")
        return x.reshape(x.shape[0], d).to(dtype=self.prior.dtype, device=self.prior.device)

    def _run(self, x, plan, xf) -> torch.Tensor:
        if x.shape[0] == 0:
            return xf.reshape(x.shape).to(dtype=x.dtype, device=x.device)
        mean = _Tweedie.apply(xf, self.prior, plan)
        return mean.reshape(x.shape).to(dtype=x.dtype, device=x.device)

    def forward(self, x: torch.Tensor, sigma) -> torch.Tensor:
        """E[x0 | x] for x = x0 + sigma z (VE)."""
        xf = self._flat(x, "x")
        levels = _levels(sigma, "sigma", x.shape[0], upper=None)
        return self._run(x, _plan(levels, x.shape[0], _ve_group, self.prior.device, "x"), xf)

    def vp(self, x_t: torch.Tensor, abar) -> torch.Tensor:
        """E[x0 | x_t] for x_t = sqrt(abar) x0 + sqrt(1 - abar) z (VP), abar in [0, 1]
        (1: the nearest-atom limit; 0: the prior mean); Jacobian (sqrt(abar)/(1-abar)) Cov."""
        xf = self._flat(x_t, "x_t")
        levels = _levels(abar, "abar", x_t.shape[0], upper=1.0)
        return self._run(x_t, _plan(levels, x_t.shape[0], _vp_group, self.prior.device, "x_t"), xf)
