"""Measurement model p(y | x_0) = N(y; A(x_0), diag(noise_std^2))."""
from __future__ import annotations

import math

import torch

from ._checks import as_tensor, check_int
from .forward import ForwardModel

__all__ = ["GaussianLikelihood"]


class GaussianLikelihood:
    """y = A(x_0) + noise, noise ~ N(0, diag(noise_std^2)); noise_std a scalar or (m,)."""

    def __init__(self, forward: ForwardModel, y, noise_std):
        if not isinstance(forward, ForwardModel):
            raise TypeError(f"forward: expected an fsdiag.forward.ForwardModel, got {type(forward).__name__}")
        self.forward = forward
        y = as_tensor(y, "y", ndim=(0, 1), dtype=torch.float64)
        self.y = y.reshape(-1)
        if self.y.shape[0] == 0:
            raise ValueError("y: expected at least one measurement, got an empty array")
        std = as_tensor(noise_std, "noise_std", ndim=(0, 1), dtype=torch.float64)
        if bool((std <= 0).any()):
            raise ValueError(f"noise_std: expected positive values, got {std.tolist()}")
        if std.ndim == 1 and std.shape[0] not in (1, self.y.shape[0]):
            raise ValueError(f"noise_std: expected a scalar or shape ({self.y.shape[0]},), got {tuple(std.shape)}")
        self.noise_std = std.reshape(-1).expand(self.y.shape[0]).clone()

    @property
    def obs_dim(self) -> int:
        return self.y.shape[0]

    @property
    def noise_var(self) -> torch.Tensor:
        return self.noise_std ** 2

    def check_dim(self, d: int, what: str = "the prior's atoms") -> None:
        """Raise if A does not take R^d or maps it to a space whose size differs from y's.
        `what` names the caller's data of dimension d in the message."""
        try:
            m = self.forward.out_dim(d)
        except ValueError as err:
            raise ValueError(f"forward: {self.forward!r} cannot be applied to {what} "
                             f"(d = {d}): {err}") from None
        if m != self.obs_dim:
            raise ValueError(f"y: the forward model {self.forward!r} maps R^{d} to R^{m}, "
                             f"but y has {self.obs_dim} entries")

    def _like(self, x, t):
        return t.to(dtype=x.dtype, device=x.device)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        """y - A(x), (B, m)."""
        return self._like(x, self.y) - self.forward(x)

    def log_prob(self, x: torch.Tensor, chunk_size: int = 8192) -> torch.Tensor:
        """log p(y | x) for each row of x (B, d), in chunks of rows, in x's floating dtype.
        May hold -inf where a residual / noise_std overflows (callers that need finite values
        check and name noise_std)."""
        x = as_tensor(x, "x", ndim=2)
        chunk_size = check_int(chunk_size, "chunk_size")
        self.check_dim(x.shape[1], "x")
        # In float64 (B x m work): a float32 noise_std of 1e-300 would be 0, and 0/0 NaN.
        dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
        x64 = x.to(torch.float64)
        std = self._like(x64, self.noise_std)
        const = -torch.log(std).sum() - 0.5 * self.obs_dim * math.log(2 * math.pi)
        out = [(-0.5 * ((self.residual(x64[s:s + chunk_size]) / std) ** 2).sum(1)) + const
               for s in range(0, x.shape[0], chunk_size)]
        return (torch.cat(out) if out else x64.new_zeros(0)).to(dtype)

    def grad_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """grad_x log p(y | x) = J_A(x)^T Sigma_n^-1 (y - A(x))."""
        return self.forward.vjp(x, self.residual(x) / self._like(x, self.noise_var))

    def __repr__(self) -> str:
        std = self.noise_std
        s = f"{float(std[0]):g}" if bool((std == std[0]).all()) else f"({self.obs_dim},)"
        return f"GaussianLikelihood({self.forward!r}, y=({self.obs_dim},), noise_std={s})"
