"""A trained denoiser behind the prior interface of the guidance samplers (`NetworkPrior`), and
the prior's own samples (`sample_prior`) with their report against the atoms (`prior_report`).

Derivatives: dm/dx_t by autograd; `denoiser_vjp` is J^T v and `cov_matvec` is
Cov v = ((1 - abar) / sqrt(abar)) J v (Tweedie's identity, exact for the true denoiser, whose J is
symmetric; a network's J need not be, and the two products then differ).
"""
from __future__ import annotations

import math

import torch

from .._checks import as_tensor, check_abar, check_int, check_positive
from ..assign import atom_masses, atom_spacing, copies_of, sample_rows
from ..diagnostics import mode_weights, monte_carlo_floor, total_variation
from ..forward import Identity
from ..likelihood import GaussianLikelihood
from ..methods import Approximation, Guidance
from ..kernels import check_result
from ..prior import EmpiricalPrior, Moments
from ..sampling import sample
from ..schedules import VPSchedule
from .training import NetworkDenoiser, Trained

__all__ = ["NetworkPrior", "Unconditional", "sample_prior", "prior_report"]


# ------------------------------------------------------------------ the prior interface
class NetworkPrior:
    """A trained denoiser behind the prior interface the guidance samplers use (σ-DPS, ζ-DPS,
    ΠGDM, TMPD): `moments(x, abar).mean` is the network's Tweedie mean, `denoiser_vjp` is
    (dm/dx_t)^T v by autograd, `cov_matvec` is ((1 - abar)/sqrt(abar)) (dm/dx_t) v by forward-mode
    autograd. It has no atoms: the exact 'fsr' method and `log_lik` need an EmpiricalPrior, and
    `moments(...).log_norm` is NaN (a network gives no density)."""

    def __init__(self, denoiser):
        if isinstance(denoiser, Trained):
            denoiser = denoiser.denoiser
        if not isinstance(denoiser, NetworkDenoiser):
            raise TypeError(f"denoiser: expected an fsdiag.networks.NetworkDenoiser (or Trained), "
                            f"got {type(denoiser).__name__}")
        self.denoiser = denoiser.eval().requires_grad_(False)
        self.center = denoiser.center
        self.dtype = denoiser.center.dtype
        self.device = denoiser.center.device
        self.scale = denoiser.scale
        self._last = None   # (mean, x, abar, vjp_fn) of the latest moments call: its VJP reuses the graph

    @property
    def dim(self) -> int:
        return self.denoiser.dim

    def __repr__(self) -> str:
        return f"NetworkPrior(d={self.dim}, net={type(self.denoiser.net).__name__}, dtype={self.dtype})"

    def _query(self, x, name="x") -> torch.Tensor:
        x = as_tensor(x, name, ndim=2, dtype=self.dtype, device=self.device)
        if x.shape[1] != self.dim:
            raise ValueError(f"{name}: expected shape (batch, {self.dim}), got {tuple(x.shape)}")
        return x

    def _vectors(self, v, B: int) -> tuple[torch.Tensor, bool]:
        v = as_tensor(v, "v", ndim=(2, 3), dtype=self.dtype, device=self.device)
        if v.shape[0] != B or v.shape[-1] != self.dim:
            raise ValueError(f"v: expected shape ({B}, {self.dim}) or ({B}, k, {self.dim}), got {tuple(v.shape)}")
        return (v.unsqueeze(1), True) if v.ndim == 2 else (v, False)

    def moments(self, x, abar, log_lik=None) -> Moments:
        """The network's Tweedie mean (log_norm is NaN: no density). Keeps the graph for one VJP."""
        if log_lik is not None:
            raise TypeError("log_lik: a NetworkPrior has no atoms; the exact conditional mean needs an "
                            "fsdiag.EmpiricalPrior")
        x = self._query(x)
        abar, _, _ = check_abar(abar)
        mean, vjp_fn = torch.func.vjp(lambda q: self.denoiser(q, abar), x)
        mean = mean.detach()
        check_result("x", mean)
        self._last = (mean, x, abar, vjp_fn)
        nan = torch.full((x.shape[0],), math.nan, dtype=self.dtype, device=self.device)
        return Moments(nan, mean)

    def denoise(self, x, abar) -> torch.Tensor:
        x = self._query(x)
        abar, _, _ = check_abar(abar)
        with torch.no_grad():
            out = self.denoiser(x, abar)
        check_result("x", out)
        return out

    def score(self, x, abar) -> torch.Tensor:
        """The network's prior score (a m(x_t) - x_t) / b^2."""
        x = self._query(x)
        _, a, b2 = check_abar(abar)
        out = (a * self.denoise(x, abar) - x) / b2
        check_result("x", out)
        return out

    def denoiser_vjp(self, x, abar, v, *, moments: Moments | None = None) -> torch.Tensor:
        """(dm/dx_t)^T v by autograd; v (B, d) or (B, k, d). Reuses the graph of `moments` when
        it came from this prior's latest moments call on the same x and abar."""
        x = self._query(x)
        abar, _, _ = check_abar(abar)
        v3, squeeze = self._vectors(v, x.shape[0])
        last = self._last
        if (moments is not None and last is not None and moments.mean is last[0] and last[2] == abar
                and (last[1] is x or torch.equal(last[1], x))):
            vjp_fn = last[3]
        else:
            _, vjp_fn = torch.func.vjp(lambda q: self.denoiser(q, abar), x)
        if v3.shape[1] == 1:
            out = vjp_fn(v3[:, 0].contiguous())[0].unsqueeze(1)
        else:
            out = torch.func.vmap(lambda u: vjp_fn(u)[0])(v3.transpose(0, 1).contiguous()).transpose(0, 1)
        out = out.detach()
        check_result("v", out)
        return out[:, 0] if squeeze else out

    def cov_matvec(self, x, abar, v, *, moments: Moments | None = None) -> torch.Tensor:
        """Cov(x0 | x_t) v = ((1 - abar) / sqrt(abar)) (dm/dx_t) v (Tweedie), by forward-mode
        autograd; v (B, d) or (B, k, d). `moments` is accepted for the interface and not needed."""
        x = self._query(x)
        abar, a, b2 = check_abar(abar)
        v3, squeeze = self._vectors(v, x.shape[0])

        def jvp(u):
            return torch.func.jvp(lambda q: self.denoiser(q, abar), (x,), (u,))[1]

        if v3.shape[1] == 1:
            out = jvp(v3[:, 0].contiguous()).unsqueeze(1)
        else:
            out = torch.func.vmap(jvp)(v3.transpose(0, 1).contiguous()).transpose(0, 1)
        out = (b2 / a) * out.detach()
        check_result("v", out)      # (b^2 / a) J v: a network's J need not vanish like a as abar -> 0
        return out[:, 0] if squeeze else out


# ------------------------------------------------------------------ the prior's own samples
class Unconditional(Approximation):
    """No measurement: a zero likelihood score, so `fsdiag.sample` runs the prior's reverse SDE.
    Not registered (it is no posterior sampler); pass an instance as `method`."""

    name = "unconditional"

    def __call__(self, problem, x, abar):
        mo = problem.prior.moments(x, abar)
        return Guidance(torch.zeros_like(mo.mean), mo.mean)


def sample_prior(prior, *, n_particles: int = 1024, n_steps: int = 500, t_min: float = 1e-2,
                 seed: int = 0, progress: bool = True):
    """Unconditional samples from any prior (an EmpiricalPrior, a NetworkPrior, ...) by the same
    reverse Euler-Maruyama as `fsdiag.sample` (the measurement is a placeholder the sampler ignores)."""
    if not hasattr(prior, "moments") or not hasattr(prior, "dim"):
        raise TypeError(f"prior: expected an fsdiag.EmpiricalPrior or NetworkPrior, got {type(prior).__name__}")
    lik = GaussianLikelihood(Identity(), torch.zeros(prior.dim, dtype=torch.float64), 1.0)
    return sample(prior, lik, method=Unconditional(), n_particles=n_particles, n_steps=n_steps, t_min=t_min,
                  seed=seed, record=0, progress=progress)


def prior_report(samples, prior: EmpiricalPrior, *, t_final: float | None = None, seed: int = 0) -> dict:
    """Unconditional samples against the prior over atoms: mass per mode (each sample's nearest atom's
    label; with t_final, the most responsible atom at that time) next to the prior's, the TV over
    modes and over atoms with their Monte Carlo floors (as many exact prior draws), and the median
    distance from a clean sample to its nearest atom relative to the median spacing of the atoms."""
    if not isinstance(prior, EmpiricalPrior):
        raise TypeError(f"prior: expected an fsdiag.EmpiricalPrior, got {type(prior).__name__}")
    x = sample_rows(samples, prior, "samples")
    seed = check_int(seed, "seed", minimum=0)
    n = x.shape[0]
    abar = 1.0 if t_final is None else VPSchedule().alpha_bar(check_positive(t_final, "t_final"))
    copies = copies_of(prior)
    mass, dist = atom_masses(prior, x, abar, copies)
    a = math.sqrt(abar)
    x0, dist = x / a, dist / a                     # ||x / a - x^(i)||: the distance of a clean sample
    w = prior.weights.detach().cpu().double()
    labels = prior.labels.cpu() if prior.labels is not None else torch.arange(prior.n_atoms)
    modes = mode_weights(mass, w, labels, n)
    return {"n": n, "modes": modes, "tv_modes": modes["tv"],
            "tv_floor_modes": monte_carlo_floor(w, n, groups=labels, copies=copies, seed=seed)["mean"],
            "tv_atoms": total_variation(mass.numpy(), w.numpy()),
            "tv_floor_atoms": monte_carlo_floor(w, n, copies=copies, seed=seed)["mean"],
            "relative_distance": float(dist.median()) / (atom_spacing(prior, copies) or 1.0),
            "mean_abs_x0": float(x0.abs().mean())}
