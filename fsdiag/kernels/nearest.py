"""The one nearest-atom search: exact in float64, streamed over blocks of atoms.

For queries x (B, d), scale a = sqrt(abar) and b^2 = 1 - abar it finds, per query, the atoms that
minimise the score

    s_i(x) = ||x - a x^(i)||^2 - 2 b^2 log pi_i,

i.e. the most responsible atom at time abar (the argmax of w_i(x_t)), and at abar = 1 (clean
samples, b = 0) the nearest atom of positive weight. Atoms of zero weight are never chosen.

Exact: the ||x||^2 expansion (centred, float64) only screens. Its rounding error is bounded by
gamma (||x - a c|| + a ||x^(i) - c||)^2 with gamma = 4 (d + 4) 2^-52, so every atom whose expanded
score is within twice that bound of the best is re-scored by the direct difference x - a x^(i)
in float64. Atoms 1e-5 apart at 1e4 are told apart (the expansion alone cannot), and exact
copies of an atom tie exactly: every tied atom is returned, so callers decide what a tie means
(the denoiser's sigma -> 0 limit averages them by weight; the judge splits a sample among copies).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch

__all__ = ["Nearest", "nearest", "group_shares"]

_BLOCK_BYTES = 1 << 23          # one (rows x atoms) float64 block of screening scores: 8 MiB
_PAIR_VALUES = 1 << 21          # at most this many float64 values in one batch of exact re-scores


class Nearest(NamedTuple):
    """index (B,): the best atom per query (the lowest index among exact ties);
    distance (B,) float64: ||x - a x^(index)||; tie_rows, tie_index (P,): every (query, atom)
    pair at exactly the best score, sorted by query then atom; score (B,) float64: the best
    score s (below), exact (shards compare theirs to find the global best)."""

    index: torch.Tensor
    distance: torch.Tensor
    tie_rows: torch.Tensor
    tie_index: torch.Tensor
    score: torch.Tensor


def group_shares(log_weights: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """pi_i / sum of pi_j over i's group, for log-weights (any scale: 1e-300 beside 1e300 included),
    float64; 0 for atoms of zero weight. groups: one id per entry (non-negative integers)."""
    lw = log_weights.to(torch.float64)
    k = int(groups.max()) + 1 if groups.numel() else 0
    top = torch.full((k,), -math.inf, dtype=torch.float64, device=lw.device).scatter_reduce_(
        0, groups, lw, "amax")
    w = torch.where(torch.isneginf(lw), torch.zeros_like(lw), (lw - top[groups]).exp())
    total = torch.zeros(k, dtype=torch.float64, device=lw.device).index_add_(0, groups, w)
    return torch.where(total[groups] > 0, w / total[groups], torch.zeros_like(w))


def _exact_scores(x64, atoms, rows, cols, a, penalty) -> torch.Tensor:
    """s for the pairs (rows[k], cols[k]) by direct differences, in pieces of bounded memory."""
    out = torch.empty(rows.shape[0], dtype=torch.float64, device=x64.device)
    step = max(1, _PAIR_VALUES // max(1, x64.shape[1]))
    for s in range(0, rows.shape[0], step):
        r, c = rows[s:s + step], cols[s:s + step]
        diff = x64[r] - a * atoms[c].to(torch.float64)
        out[s:s + step] = (diff * diff).sum(1) + penalty[c]
    return out


def nearest(store, x: torch.Tensor, abar: float = 1.0) -> Nearest:
    """The atoms of `store` (an `AtomStore`: atoms, centre, log-weights) minimising s_i(x) for
    each row of x (B, d), a checked tensor on the store's device. abar in (0, 1]; see the
    module's docstring."""
    a, b2 = math.sqrt(abar), 1.0 - abar
    dev = x.device
    B, d = x.shape
    if B == 0:
        none = torch.zeros(0, dtype=torch.long, device=dev)
        empty = torch.zeros(0, dtype=torch.float64, device=dev)
        return Nearest(none, empty, none, none, empty)
    x64 = x.to(torch.float64)
    c = store.center.to(torch.float64)
    xq = x64 - a * c
    xsq = (xq * xq).sum(1)
    xnorm = xsq.sqrt()
    logw = store.log_weights.to(torch.float64)
    # The weight term of the score; +inf for zero-weight atoms (never chosen, also at b = 0).
    penalty = torch.where(torch.isneginf(logw), torch.full_like(logw, math.inf), -2.0 * b2 * logw)
    gamma = 4.0 * (d + 4) * torch.finfo(torch.float64).eps
    best = torch.full((B,), math.inf, dtype=torch.float64, device=dev)
    tie_r, tie_c, tie_s = [], [], []
    n = store.n_atoms
    size = max(16, _BLOCK_BYTES // (8 * max(B, 1)))
    for s in range(0, n, size):
        sl = slice(s, min(s + size, n))
        ac = a * (store.atoms[sl].to(torch.float64) - c)
        asq = (ac * ac).sum(1)
        pen = penalty[sl]
        approx = torch.addmm(asq + pen, xq, ac.T, alpha=-2.0).add_(xsq[:, None])
        tol = gamma * (xnorm + float(asq.max().sqrt())) ** 2                 # (B,) bound on the rounding
        # An atom can beat (or tie) the best only if its lower bound reaches the smallest upper bound.
        upper = torch.minimum((approx + tol[:, None]).amin(1), best)
        cand = (approx - tol[:, None] <= upper[:, None]) & torch.isfinite(pen)[None]
        rows, cols = cand.nonzero(as_tuple=True)
        if rows.numel() == 0:
            continue
        exact = _exact_scores(x64, store.atoms, rows, cols + s, a, penalty)
        block_best = torch.full((B,), math.inf, dtype=torch.float64, device=dev)
        block_best.scatter_reduce_(0, rows, exact, "amin")
        best = torch.minimum(best, block_best)
        keep = exact <= best[rows]                                             # ties of the best so far
        tie_r.append(rows[keep])
        tie_c.append(cols[keep] + s)
        tie_s.append(exact[keep])
    if not tie_r:
        raise ValueError("x: no atom of positive weight is at a finite distance")
    rows, cols, scores = torch.cat(tie_r), torch.cat(tie_c), torch.cat(tie_s)
    keep = scores == best[rows]
    rows, cols = rows[keep], cols[keep]
    order = torch.argsort(rows * n + cols)                                     # by query, then atom
    rows, cols = rows[order], cols[order]
    first = torch.full((B,), n, dtype=torch.long, device=dev).scatter_reduce_(0, rows, cols, "amin")
    if bool((first == n).any()):
        raise ValueError("x: no atom of positive weight is at a finite distance")
    diff = x64 - a * store.atoms[first].to(torch.float64)
    return Nearest(first, diff.norm(dim=1), rows, cols, best)
