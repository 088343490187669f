"""The finite-sample prior: the empirical measure of N atoms, diffused exactly.

Every quantity is a softmax-weighted reduction over the atoms (docs/design.md §2), computed
like attention by the engine (`fsdiag.kernels`): log space, a per-query log-sum-exp, streamed
over chunks of atoms so memory is O(batch x chunk), never O(batch x N x d). Methods take abar
(the schedule's alpha_bar at the query time); a = sqrt(abar), b^2 = 1 - abar.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch

from ._checks import as_tensor, check_abar, check_generator, check_int, check_real, resolve_device
from .kernels import ROUTES, Engine, Nearest, check_result

__all__ = ["EmpiricalPrior", "Moments"]

_STORAGE_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


class Moments(NamedTuple):
    """One streamed pass. log_norm: log sum_i pi_i exp(-||x - a x_i||^2 / 2b^2 + ||x - a c||^2 / 2b^2)
    (c the atom mean; a per-query constant is dropped); mean: the Tweedie mean E[x_0 | x_t].
    The `_cond` fields carry the same with the per-atom log-likelihood added (None without one)."""

    log_norm: torch.Tensor
    mean: torch.Tensor
    log_norm_cond: torch.Tensor | None = None
    mean_cond: torch.Tensor | None = None


class EmpiricalPrior:
    """Empirical prior sum_i pi_i delta(x - x^(i)) over atoms (N, d).

    weights: optional (N,) non-negative prior weights (normalised here);
    labels: optional (N,) integer mode labels (mixture component, class, ...);
    dtype: the kernels' dtype (float32 or float64; default the atoms' own);
    storage_dtype: keep the atoms in this dtype instead (float16 / bfloat16 halve the memory;
    every chunk is widened to `dtype`, default float32, before it is used, so all sums
    accumulate in float32 or better; the error is that of rounding the atoms themselves:
    `python benchmarks/bench_fsr.py --task storage` measures it against float64);
    center: the point the kernels centre the atoms at (default their mean; a sharded prior
    passes the mean over all shards so that every shard's log-normaliser drops the same term);
    route: how the Tweedie-mean kernels run: "auto" (default: a fused attention kernel where one
    exists, is expected to be faster and passed its self-check, else torch ops), "flash" (the
    fused kernel, forced) or "torch" (torch ops); the attribute `route` may be set later.
    """

    def __init__(self, atoms, weights=None, labels=None, *, device="auto", dtype=None,
                 chunk_size: int | None = None, storage_dtype=None, center=None, route: str = "auto"):
        dev = resolve_device(device)
        if dtype is not None and dtype not in (torch.float32, torch.float64):
            raise ValueError(f"dtype: expected torch.float32 or torch.float64, got {dtype}")
        if storage_dtype is not None and storage_dtype not in _STORAGE_DTYPES:
            raise ValueError(f"storage_dtype: expected one of {list(_STORAGE_DTYPES)}, got {storage_dtype!r}")
        # finiteness is checked below in chunks (torch.isfinite on all atoms at once holds ~1.7x
        # the atoms in temporaries)
        atoms = as_tensor(atoms, "atoms", ndim=2, dtype=dtype if storage_dtype is None else None,
                          device=dev, finite=False)
        if storage_dtype is not None:
            compute = dtype or (storage_dtype if storage_dtype in (torch.float32, torch.float64)
                                else torch.float32)
            atoms = atoms.to(storage_dtype)
        elif atoms.dtype not in (torch.float32, torch.float64):
            atoms = atoms.to(torch.float32)
        if storage_dtype is None:
            compute = atoms.dtype
        n, _ = atoms.shape
        if n < 1 or atoms.shape[1] < 1:
            raise ValueError(f"atoms: expected shape (N, d) with N, d >= 1, got {tuple(atoms.shape)}")
        if weights is None:
            log_w = torch.full((n,), -math.log(n), dtype=compute, device=dev)
        else:
            w = as_tensor(weights, "weights", ndim=1, dtype=torch.float64, device=dev)
            if w.shape[0] != n:
                raise ValueError(f"weights: expected shape ({n},) to match atoms, got {tuple(w.shape)}")
            if bool((w < 0).any()) or not bool((w > 0).any()):
                raise ValueError("weights: expected non-negative weights with a positive sum")
            w0, shift = w, 0.0
            total = w.sum()
            if not bool(torch.isfinite(total)):   # weights near 1e308: the sum overflows
                shift = float(torch.log(w.max()))
                w = w / w.max()
                total = w.sum()
            log_w = torch.log(w / total)
            # A positive weight whose normalised value underflows (1e-300 beside 1e300: 1e-600) or
            # is subnormal keeps its logarithm, log w - log(sum w), instead of becoming -inf.
            lost = (w0 > 0) & (log_w < math.log(torch.finfo(torch.float64).tiny))
            if bool(lost.any()):
                log_w = torch.where(lost, torch.log(w0) - shift - torch.log(total), log_w)
        # float64 log-weights for the exact posterior over atoms, whatever the storage dtype.
        log_w64 = log_w.to(torch.float64)
        log_w = log_w.to(compute)
        if labels is not None:
            lab = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
            if lab.shape != (n,) or not np.issubdtype(lab.dtype, np.integer):
                raise ValueError(f"labels: expected an integer array of shape ({n},), got "
                                 f"{lab.dtype} array of shape {lab.shape}")
            if lab.dtype == np.uint64 and n and int(lab.max()) > np.iinfo(np.int64).max:
                # torch has no uint64 labels: casting would wrap them to negative numbers
                raise ValueError(f"labels: values up to {int(lab.max())} do not fit int64; "
                                 "relabel the modes 0..K-1 (np.unique(labels, return_inverse=True))")
            labels = torch.as_tensor(lab, dtype=torch.long, device=dev)
        self.labels = labels
        # One copy of the atoms in memory: the engine centres each streamed chunk on the fly (one
        # subtraction per atom entry, ~1/(4B) of a chunk's flops), so no centred copy is stored
        # and `atoms` stays exactly the caller's values.
        self.engine = self.make_engine(atoms, log_w, log_w64, dtype=compute, center=center,
                                        chunk_size=check_int(chunk_size, "chunk_size")
                                        if chunk_size is not None else 4096, route=route)

    def make_engine(self, atoms, log_w, log_w64, **options) -> Engine:
        """The engine (`fsdiag.kernels.Engine`) over these checked atoms and log-weights; a prior
        whose atoms live elsewhere (`fsdiag.distributed.ShardedPrior`) returns its own engine."""
        return Engine(atoms, log_w, log_w64, **options)

    # ------------------------------------------------------------------ basics
    @property
    def atoms(self) -> torch.Tensor:
        """The atoms (N, d), the caller's values in the storage dtype (a shard's own on a sharded prior)."""
        return self.engine.atoms

    @property
    def log_weights(self) -> torch.Tensor:
        """log pi_i (N,) in the kernels' dtype."""
        return self.engine.log_weights

    @property
    def center(self) -> torch.Tensor:
        """The point the kernels centre the atoms at (d,)."""
        return self.engine.center

    @property
    def dtype(self) -> torch.dtype:
        """The kernels' dtype."""
        return self.engine.dtype

    @property
    def device(self) -> torch.device:
        return self.engine.device

    @property
    def storage_dtype(self) -> torch.dtype:
        return self.engine.atoms.dtype

    @property
    def scale(self) -> float:
        """max |atom| (over all shards), for samplers' sanity checks."""
        return self.engine.scale

    @property
    def chunk_size(self) -> int:
        return self.engine.chunk_size

    @property
    def route(self) -> str:
        """How the Tweedie-mean kernels run ("auto", "flash" or "torch"); may be set."""
        return self.engine.route

    @route.setter
    def route(self, value: str) -> None:
        if value not in ROUTES:
            raise ValueError(f"route: expected one of {ROUTES}, got {value!r}")
        self.engine.route = value

    @property
    def n_atoms(self) -> int:
        return self.engine.n_atoms

    @property
    def dim(self) -> int:
        return self.engine.dim

    @property
    def weights(self) -> torch.Tensor:
        return self.log_weights.exp()

    def __repr__(self) -> str:
        return (f"EmpiricalPrior(N={self.n_atoms}, d={self.dim}, dtype={self.dtype}, "
                f"device={self.device}, labels={'yes' if self.labels is not None else 'no'})")

    def query(self, x, name="x") -> torch.Tensor:
        """x as a checked (batch, d) tensor in the kernels' dtype and device."""
        x = as_tensor(x, name, ndim=2, dtype=self.dtype, device=self.device)
        if x.shape[1] != self.dim:
            raise ValueError(f"{name}: expected shape (batch, {self.dim}), got {tuple(x.shape)}")
        return x

    def log_likelihoods(self, lik) -> torch.Tensor:
        """(N,) float64 l_i = log p(y | x^(i)) for every atom (`Engine.log_likelihoods`)."""
        return self.engine.log_likelihoods(lik)

    def _reduce(self, x: torch.Tensor, abar, log_lik, heads: tuple[bool, ...]):
        _, a, b2 = check_abar(abar)
        return self.engine.reduce(x, a, b2, log_lik, heads)

    # --------------------------------------------------------------- pass one
    def moments(self, x, abar, log_lik=None) -> Moments:
        """Tweedie mean (and, given per-atom log p(y|x^(i)), the exact conditional one) in one pass.

        Raises FloatingPointError (as do the other kernels) if finite inputs overflow the dtype,
        e.g. float32 queries ~1e19 from the atoms."""
        x = self.query(x)
        if log_lik is None:
            log_norm, mean, _ = self._reduce(x, abar, None, (False,))
            return Moments(log_norm[0], mean[0])
        log_norm, mean, shift = self._reduce(x, abar, log_lik, (False, True))
        return Moments(log_norm[0], mean[0], log_norm[1] + shift, mean[1])

    def posterior_moments(self, x, abar, log_lik) -> Moments:
        """The conditional half of `moments` alone, in one head (half the work): log_norm is
        log_norm_cond and mean is E[x_0 | x_t, y]; the `_cond` fields are None. The exact
        posterior score needs nothing more: (a E[x_0 | x_t, y] - x_t) / b^2 (docs/design.md §2.3)."""
        x = self.query(x)
        log_norm, mean, shift = self._reduce(x, abar, log_lik, (True,))
        return Moments(log_norm[0] + shift, mean[0])

    def posterior_score(self, x, abar, log_lik) -> torch.Tensor:
        """Exact grad log p_t(x_t | y) = prior score + likelihood score = (a E[x_0|x_t,y] - x_t) / b^2."""
        x = self.query(x)
        _, a, b2 = check_abar(abar)
        return (a * self.posterior_moments(x, abar, log_lik).mean - x) / b2

    def denoise(self, x, abar) -> torch.Tensor:
        """Tweedie mean m(x_t) = sum_i w_i(x_t) x^(i)."""
        return self.moments(x, abar).mean

    def score(self, x, abar) -> torch.Tensor:
        """Prior score grad log p_t(x_t) = (a m(x_t) - x_t) / b^2."""
        x = self.query(x)
        _, a, b2 = check_abar(abar)
        return (a * self.denoise(x, abar) - x) / b2

    def log_density(self, x, abar) -> torch.Tensor:
        """log p_t(x_t) = log sum_i pi_i N(x_t; a x^(i), b^2 I)."""
        x = self.query(x)
        _, a, b2 = check_abar(abar)
        log_norm = self.moments(x, abar).log_norm
        xq = x - a * self.center
        out = log_norm - (xq * xq).sum(1) / (2 * b2) - 0.5 * self.dim * math.log(2 * math.pi * b2)
        check_result("x", out)
        return out

    def responsibilities(self, x, abar, log_lik=None) -> torch.Tensor:
        """Dense (batch, N) responsibilities w_i(x_t) (or w~_i given log_lik): for small N only
        (a shard's columns, normalised over all shards, on a sharded prior)."""
        x = self.query(x)
        _, a, b2 = check_abar(abar)
        return self.engine.responsibilities(x, a, b2, log_lik)

    # --------------------------------------------------------------- exact conditionals
    def posterior_denoise(self, x, abar, log_lik) -> torch.Tensor:
        """Exact E[x_0 | x_t, y] = sum_i w~_i(x_t, y) x^(i)."""
        return self.posterior_moments(x, abar, log_lik).mean

    def log_likelihood_t(self, x, abar, log_lik) -> torch.Tensor:
        """Exact log p(y | x_t) = logsumexp_i(log w_i(x_t) + l_i)."""
        mo = self.moments(x, abar, log_lik)
        return mo.log_norm_cond - mo.log_norm

    def likelihood_score(self, x, abar, log_lik) -> torch.Tensor:
        """Exact grad log p(y | x_t) = (a / b^2)(E_w~[x_0] - E_w[x_0])."""
        _, a, b2 = check_abar(abar)
        mo = self.moments(x, abar, log_lik)
        return (a / b2) * (mo.mean_cond - mo.mean)

    # --------------------------------------------------------------- pass two
    def cov_matvec(self, x, abar, v, *, moments: Moments | None = None) -> torch.Tensor:
        """Denoiser covariance times vectors, C(x_t) v = sum_i w_i (x^(i) - m)((x^(i) - m) . v).

        v: (batch, d) or (batch, k, d). `moments` from an earlier pass on the same x
        saves one pass. Centred at m per query, so no large terms cancel.
        """
        x = self.query(x)
        _, a, b2 = check_abar(abar)
        v = as_tensor(v, "v", ndim=(2, 3), dtype=self.dtype, device=self.device)
        squeeze = v.ndim == 2
        if squeeze:
            v = v.unsqueeze(1)
        B, d = x.shape
        if v.shape[0] != B or v.shape[2] != d:
            raise ValueError(f"v: expected shape ({B}, {d}) or ({B}, k, {d}), got {tuple(v.shape)}")
        mo = self.moments(x, abar) if moments is None else moments
        out = self.engine.cov(x, a, b2, v, mo.mean)[1]
        check_result("v", out)
        return out[:, 0] if squeeze else out

    def denoiser_vjp(self, x, abar, v, *, moments: Moments | None = None) -> torch.Tensor:
        """(dm/dx_t)^T v = (a / b^2) C(x_t) v (the Jacobian is symmetric; no autograd)."""
        _, a, b2 = check_abar(abar)
        return (a / b2) * self.cov_matvec(x, abar, v, moments=moments)

    # --------------------------------------------------------------- sampling atoms
    def sample_atoms(self, x, abar, generator: torch.Generator | None, log_lik=None) -> torch.Tensor:
        """One atom index per query drawn from w_i(x_t) (w~_i given log_lik): a streamed
        Gumbel-max. With generator=None, the most responsible atom instead (the arg-max)."""
        x = self.query(x)
        _, a, b2 = check_abar(abar)
        if generator is not None:
            generator = check_generator(generator)
        return self.engine.best(x, a, b2, generator, log_lik)[1]

    def nearest_atoms(self, x, abar=1.0) -> torch.Tensor:
        """Index of the most responsible atom for each query at alpha_bar `abar` in (0, 1] (at 1:
        the nearest atom of positive weight), exact in float64 (`fsdiag.kernels.nearest`: the lowest
        index among exact ties)."""
        return self.nearest(x, abar).index

    def nearest(self, x, abar=1.0) -> Nearest:
        """The exact nearest-atom search (`fsdiag.kernels.nearest`) on this prior: the best atom
        per query, its distance ||x - a x^(i)||, every exactly tied (query, atom) pair."""
        x = self.query(x)
        abar = check_real(abar, "abar")
        if not 0.0 < abar <= 1.0:
            raise ValueError(f"abar: expected alpha_bar in (0, 1], got {abar}")
        return self.engine.nearest(x, abar)

    def atoms_at(self, index: torch.Tensor) -> torch.Tensor:
        """The atoms x^(i) for a tensor of indices (any shape), in the kernels' dtype (a sharded
        prior gathers them from the shard that holds each one)."""
        return self.engine.atoms_at(index)

    def log_posterior_weights(self, log_lik) -> torch.Tensor:
        """log psi_i = log_softmax(log pi_i + l_i), computed in float64 (exact on near ties
        whatever the storage dtype), returned in the prior's dtype (over all atoms, in shard
        order, on a sharded prior)."""
        return self.engine.log_posterior_weights(log_lik).to(self.dtype)
