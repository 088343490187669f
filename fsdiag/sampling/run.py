"""What every sampler returns: `Run`, the particles and a record of their trajectory."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

__all__ = ["Run"]


@dataclass
class Run:
    """A sampler's output. `times[r]` is the r-th recorded time (descending, the last is the
    final time); `trajectory[r]` the particles there and `tweedie[r]` their prior Tweedie means.
    `info` holds a sampler's own per-step diagnostics (SMC: ESS history, resampling steps, a
    log p(y) estimate; DAPS: its clean output and step sizes); empty for the others."""

    samples: torch.Tensor          # (n_particles, d) particles at the final time
    times: torch.Tensor            # (R,) float64
    trajectory: torch.Tensor       # (R, n_particles, d)
    tweedie: torch.Tensor          # (R, n_particles, d)
    method: str
    approximation: object | None   # the likelihood approximation (an fsdiag.Approximation) or None
    schedule: object
    n_steps: int
    seed: int | None
    params: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)

    @property
    def t_final(self) -> float:
        return float(self.times[-1])

    @property
    def denoised(self) -> torch.Tensor:
        """Tweedie means of the final particles."""
        return self.tweedie[-1]

    def __repr__(self) -> str:
        n, d = self.samples.shape
        return (f"Run(method={self.method!r}, n_particles={n}, d={d}, n_steps={self.n_steps}, "
                f"t_final={self.t_final:g}, recorded={len(self.times)} times, seed={self.seed})")
