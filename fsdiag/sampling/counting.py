"""Counting denoiser evaluations: the unit of compute for equal-budget comparisons, at the prior's
methods (`CountingPrior`) or at its engine (`count_evaluations`)."""
from __future__ import annotations

import torch

__all__ = ["CountingPrior", "count_evaluations"]


def _rows(name: str, out) -> int:
    """Particles through one pass, read off a kernel's result: rows of the Tweedie mean (`moments`
    returns Moments) or of the product, times k for `cov_matvec` with k vectors per row (B, k, d)."""
    t = out.mean if hasattr(out, "mean") and isinstance(getattr(out, "mean"), torch.Tensor) else out
    rows = int(t.shape[0])
    if name == "cov_matvec" and t.ndim == 3:
        rows *= int(t.shape[1])                      # k products per particle (TMPD's C A^T)
    return rows


class CountingPrior:
    """A prior that counts its denoiser passes: every attribute is the wrapped prior's, but calls to
    `moments`/`denoise` (a Tweedie mean) and `denoiser_vjp`/`cov_matvec` (a Jacobian pass) add the
    number of query rows to `counts` (times k for a covariance product with k vectors per row). For
    equal-compute comparisons: a denoiser *evaluation* is one particle through one pass (a network's
    forward, or one backward for a VJP)."""

    _COUNTED = ("moments", "denoise", "denoiser_vjp", "cov_matvec")

    def __init__(self, prior):
        if not hasattr(prior, "moments"):
            raise TypeError(f"prior: expected an fsdiag.EmpiricalPrior or a testbed prior, got {type(prior).__name__}")
        self.prior = prior
        self.counts = dict.fromkeys(self._COUNTED, 0)

    def __getattr__(self, name):
        attr = getattr(self.prior, name)
        if name in CountingPrior._COUNTED:
            def counted(x, *args, **kwargs):
                # Counted from the answer, not the arguments: the wrapped prior accepts lists, numpy
                # arrays, ... (which have no .shape), and a call it refuses is no denoiser pass.
                out = attr(x, *args, **kwargs)
                self.counts[name] += _rows(name, out)
                return out
            return counted
        return attr

    @property
    def tweedie_evaluations(self) -> int:
        """Particles x Tweedie-mean passes."""
        return self.counts["moments"] + self.counts["denoise"]

    @property
    def evaluations(self) -> int:
        """Particles x all denoiser passes (Tweedie means and Jacobian products)."""
        return sum(self.counts.values())

    def reset(self) -> None:
        self.counts = dict.fromkeys(self._COUNTED, 0)


class count_evaluations:
    """Count denoiser evaluations at the engine, whoever calls it: `with count_evaluations(prior)
    as c: ...` then `c.total` (or `c.counts` by pass). One evaluation is one particle through one
    pass over the atoms: a Tweedie mean (`reduce`, prior and conditional heads together), a
    covariance-vector product (`cov`, k per particle with k vectors) or an atom draw (`best`).
    It sees samplers that call the prior, `fsdiag.ExactDenoiser` (k-diffusion's, deepinv's or a
    user's sampler) and the judge alike, so it counts only inside the `with` block. prior: an
    `fsdiag.EmpiricalPrior` (its engine's methods are wrapped on the instance, then restored)."""

    _PASSES = ("reduce", "cov", "best")

    def __init__(self, prior):
        engine = getattr(prior, "engine", None)
        if engine is None or not all(callable(getattr(engine, p, None)) for p in self._PASSES):
            raise TypeError(f"prior: expected an fsdiag.EmpiricalPrior (a prior with an engine), "
                            f"got {type(prior).__name__}")
        self.engine = engine
        self.counts = dict.fromkeys(self._PASSES, 0)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def _wrap(self, name: str):
        inner = getattr(self.engine, name)

        def counted(x, *args, **kwargs):
            out = inner(x, *args, **kwargs)
            per = out[1].shape[1] if name == "cov" else 1           # cov: (log_norm, C v (B, k, d))
            self.counts[name] += int(x.shape[0]) * int(per)
            return out
        return counted

    def __enter__(self) -> "count_evaluations":
        for name in self._PASSES:
            setattr(self.engine, name, self._wrap(name))
        return self

    def __exit__(self, *exc) -> None:
        for name in self._PASSES:
            self.engine.__dict__.pop(name, None)
