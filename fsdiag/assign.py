"""Assignment: every sample goes to one atom, exactly — the first step of the judge.

A clean sample goes to its nearest atom, a noisy one (alpha_bar < 1) to its most responsible
atom, by the engine's exact float64 search (`fsdiag.kernels.nearest`); exact copies of an atom
share what lands on them in proportion to pi. `fsdiag.evaluate` and `fsdiag.networks.prior_report`
judge from these masses; `fsdiag.diagnostics.atom_mass` is the same mass.
"""
from __future__ import annotations

import math

import torch

from ._checks import as_tensor
from .kernels import group_shares
from .prior import EmpiricalPrior

__all__ = ["copies_of", "atom_masses", "atom_spacing", "sample_rows", "SUPPORT_FRACTION"]


def copies_of(prior: EmpiricalPrior) -> torch.Tensor:
    """One id per atom, equal for exact copies of one atom (N,): no sample can tell them apart."""
    return torch.unique(prior.atoms, dim=0, return_inverse=True)[1].reshape(-1).cpu()


def atom_masses(prior: EmpiricalPrior, x: torch.Tensor, abar: float = 1.0,
                copies: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The sampler's mass per atom (N,) float64 on the CPU, and each sample's distance to its atom:
    every sample x (n, d) goes to its nearest atom (the most responsible one at alpha_bar < 1), exactly
    (`prior.nearest`), and is split among exact copies of that atom in proportion to pi (no sample
    can tell copies apart, and the exact posterior splits them so too: they share one likelihood)."""
    copies = copies_of(prior) if copies is None else copies
    nn = prior.nearest(x, abar)
    share = group_shares(prior.log_weights.detach().cpu(), copies)
    hits = torch.bincount(copies[nn.index.cpu()], minlength=int(copies.max()) + 1).to(torch.float64)
    return hits[copies] * share / x.shape[0], nn.distance


def atom_spacing(prior: EmpiricalPrior, copies: torch.Tensor | None = None, n_probe: int = 512) -> float:
    """Median distance from an atom to its nearest distinct atom (exact copies skipped), on up
    to n_probe atoms (fixed, evenly spread); 0 when all atoms are copies of one."""
    copies = copies_of(prior) if copies is None else copies
    if int(copies.max()) == 0:
        return 0.0
    probe = torch.linspace(0, prior.n_atoms - 1, min(n_probe, prior.n_atoms)).round().long()
    c = prior.center.to(torch.float64)
    xc = prior.atoms[probe.to(prior.device)].to(torch.float64) - c
    best = torch.full((probe.shape[0],), math.inf, dtype=torch.float64)
    step = max(16, (1 << 21) // max(1, probe.shape[0]))
    for s in range(0, prior.n_atoms, step):
        ac = prior.atoms[s:s + step].to(torch.float64) - c
        d2 = ((xc * xc).sum(1)[:, None] - 2 * xc @ ac.T + (ac * ac).sum(1)[None]).clamp_min(0).cpu()
        d2[copies[probe][:, None] == copies[s:s + step][None]] = math.inf     # itself and its copies
        best = torch.minimum(best, d2.min(1).values)
    best = best[torch.isfinite(best)]
    return float(best.median().sqrt()) if best.numel() else 0.0


# A clean sample is off the prior's support when it is farther from every atom than this fraction
# of the typical distance between neighbouring atoms: near enough to be unmistakably that atom.
SUPPORT_FRACTION = 0.1


def sample_rows(samples, prior: EmpiricalPrior, name: str) -> torch.Tensor:
    """(n, d) or (n, C, H, W) with C*H*W = d, as (n, d) rows in the prior's dtype/device."""
    x = as_tensor(samples, name, dtype=prior.dtype, device=prior.device)
    if x.ndim < 2 or x.shape[0] < 1 or math.prod(x.shape[1:]) != prior.dim:
        raise ValueError(f"{name}: expected shape (n, {prior.dim}) or (n, ...) with {prior.dim} values per "
                         f"sample and n >= 1, got {tuple(x.shape)}")
    return x.reshape(x.shape[0], prior.dim)
