"""Counting denoiser evaluations: the unit of compute for equal-budget comparisons."""
from __future__ import annotations

import torch

__all__ = ["CountingPrior"]


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
