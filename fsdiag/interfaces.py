"""The interfaces written down (docs/design.md §8.3): what a sampler may ask of a prior.

A sampler sees the prior only through its denoiser and the denoiser's Jacobian products, as in
k-diffusion and deepinv; `EmpiricalPrior` (the exact FSR), `ShardedPrior` (its atoms split
across processes), `NetworkPrior` (a trained network) and the closed-form testbeds
(`fsdiag.testbeds.GaussianMixture`) all satisfy `Prior`, and tests/test_interfaces.py checks it.
The forward model's algebra is `fsdiag.forward.LinearForwardModel`'s (apply_A, apply_At, rows,
gram), the engine's seam is `fsdiag.kernels.Engine`.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from .prior import Moments

__all__ = ["Prior"]


@runtime_checkable
class Prior(Protocol):
    """A prior in the VP convention x_t = sqrt(abar) x_0 + sqrt(1 - abar) z, queried at rows x (B, d)."""

    dim: int
    dtype: torch.dtype
    device: torch.device

    def moments(self, x, abar, log_lik=None) -> Moments:
        """The Tweedie mean E[x_0 | x_t] (mean) and its log-normaliser, in one pass."""

    def denoise(self, x, abar) -> torch.Tensor:
        """E[x_0 | x_t], (B, d)."""

    def denoiser_vjp(self, x, abar, v, *, moments: Moments | None = None) -> torch.Tensor:
        """(dE[x_0 | x_t] / dx_t)^T v for v (B, d) or (B, k, d)."""

    def cov_matvec(self, x, abar, v, *, moments: Moments | None = None) -> torch.Tensor:
        """Cov(x_0 | x_t) v for v (B, d) or (B, k, d)."""
