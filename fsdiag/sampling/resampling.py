"""Weights and resampling for the sequential Monte Carlo samplers (TDS, MCGdiff)."""
from __future__ import annotations

import torch

from .._checks import check_real

__all__ = ["normalise", "effective_sample_size", "systematic_resample", "multinomial_resample",
           "RESAMPLING_SCHEMES", "resample", "resample_if_degenerate", "check_smc_args"]


def normalise(log_w: torch.Tensor) -> torch.Tensor:
    """Normalised weights exp(log_w) / sum exp(log_w), in float64."""
    return torch.softmax(log_w.to(torch.float64), 0)


def effective_sample_size(log_w: torch.Tensor) -> float:
    """ESS = 1 / sum_i w_i^2 of the normalised weights (n for equal weights, 1 for one particle)."""
    w = normalise(log_w)
    return float(1.0 / (w * w).sum())


def systematic_resample(weights: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """n ancestor indices by systematic resampling: one uniform u, positions (u + k) / n, k < n.
    Unbiased: E[count_i] = n w_i, and |count_i - n w_i| < 1."""
    w = weights.to(torch.float64)
    cum = torch.cumsum(w / w.sum(), 0)
    cum[-1] = 1.0
    u = torch.rand((), generator=generator, dtype=torch.float64, device=w.device)
    pos = (u + torch.arange(n, dtype=torch.float64, device=w.device)) / n
    return torch.searchsorted(cum, pos, right=True).clamp_(max=w.shape[0] - 1)


def multinomial_resample(weights: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """n ancestor indices drawn independently from the weights."""
    return torch.multinomial(weights.to(torch.float64), n, replacement=True, generator=generator)


RESAMPLING_SCHEMES = {"systematic": systematic_resample, "multinomial": multinomial_resample}


def resample(log_w: torch.Tensor, generator: torch.Generator, scheme: str = "systematic") -> torch.Tensor:
    """Ancestor indices, as many as particles, from log-weights."""
    if scheme not in RESAMPLING_SCHEMES:
        raise ValueError(f"resampling: expected one of {sorted(RESAMPLING_SCHEMES)}, got {scheme!r}")
    return RESAMPLING_SCHEMES[scheme](normalise(log_w), log_w.shape[0], generator)


def resample_if_degenerate(log_w: torch.Tensor, threshold: float, generator: torch.Generator,
                           scheme: str = "systematic") -> tuple[torch.Tensor | None, float]:
    """(ancestor indices, ESS) when ESS < threshold * n, else (None, ESS)."""
    ess = effective_sample_size(log_w)
    if ess < threshold * log_w.shape[0]:
        return resample(log_w, generator, scheme), ess
    return None, ess


def check_smc_args(ess_threshold, resampling) -> float:
    """ess_threshold as a fraction in [0, 1], after checking the resampling scheme's name."""
    threshold = check_real(ess_threshold, "ess_threshold")
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"ess_threshold: expected a fraction in [0, 1], got {ess_threshold!r}")
    if not isinstance(resampling, str) or resampling not in RESAMPLING_SCHEMES:
        raise ValueError(f"resampling: expected one of {sorted(RESAMPLING_SCHEMES)}, got {resampling!r}")
    return threshold
