"""Numbers that several chapters compute the same way: each method's keyword arguments, the
exact posterior's mass per class, the most ambiguous of several measurements, and a fraction of
particles with its Wilson interval."""
from __future__ import annotations

import math

__all__ = ["GUIDANCE_METHODS", "method_params", "class_weights", "class_entropy", "most_ambiguous", "with_ci"]

# The five approximations the paper compares on its testbeds, in the book's order.
GUIDANCE_METHODS = ("fsr", "sigma_dps", "zeta_dps", "pigdm", "tmpd")


def method_params(methods=GUIDANCE_METHODS, *, zeta: float | None = None) -> dict:
    """{method: keyword arguments for fsdiag.sample}: the paper's (testbeds.PAPER_METHOD_PARAMS),
    with ζ-DPS's weight replaced by `zeta` when given (a chapter's `zeta` parameter)."""
    from ..testbeds import PAPER_METHOD_PARAMS
    if isinstance(methods, str) or not all(isinstance(m, str) for m in methods):
        raise TypeError(f"methods: expected a list of method names, got {methods!r}")
    if zeta is not None and not (isinstance(zeta, (int, float)) and not isinstance(zeta, bool) and zeta > 0):
        raise ValueError(f"zeta: expected a positive number, got {zeta!r}")
    out = {}
    for m in methods:
        out[m] = dict(PAPER_METHOD_PARAMS.get(m, {}))
        if m == "zeta_dps" and zeta is not None:
            out[m]["zeta"] = zeta
    return out


def class_weights(prior, psi, n_classes: int):
    """The posterior mass of each class, sum of psi_i over the atoms labelled c (float64, on the
    CPU): the exact class weights when psi is fsdiag.posterior_weights(prior, lik)."""
    import torch
    if getattr(prior, "labels", None) is None:
        raise ValueError("prior: expected an empirical prior with labels (one class per atom)")
    if not isinstance(n_classes, int) or isinstance(n_classes, bool) or n_classes < 1:
        raise ValueError(f"n_classes: expected a positive integer, got {n_classes!r}")
    if psi.shape != prior.labels.shape:
        raise ValueError(f"psi: expected one weight per atom ({tuple(prior.labels.shape)}), got {tuple(psi.shape)}")
    return torch.zeros(n_classes, dtype=torch.float64).index_add_(0, prior.labels.cpu(), psi.double().cpu())


def class_entropy(weights) -> float:
    """Entropy (nats) of float64 class weights (class_weights'): 0 when one class holds all the mass, log K when K share it."""
    return float(-(weights * weights.clamp_min(1e-300).log()).sum())


def most_ambiguous(prior, likelihoods, n_classes: int) -> tuple[int, list[float]]:
    """Among measurements (an iterable of likelihoods, consumed in order), the index of the one
    whose exact class weights have the highest entropy (the first on a tie) and every entropy:
    the problem where a sampler's class weights can most easily come out wrong."""
    from .. import posterior_weights
    entropy = [class_entropy(class_weights(prior, posterior_weights(prior, lik), n_classes)) for lik in likelihoods]
    if not entropy:
        raise ValueError("likelihoods: expected at least one measurement, got none")
    best = max(range(len(entropy)), key=lambda j: (entropy[j], -j))
    return best, entropy


def with_ci(fraction: float, n: int) -> tuple[float, float, float]:
    """A fraction of n particles with its Wilson 95% interval: (fraction, lower, upper)."""
    from ..diagnostics import wilson_interval
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n: expected a positive integer, got {n!r}")
    fraction = float(fraction)
    if not (math.isfinite(fraction) and 0.0 <= fraction <= 1.0):
        raise ValueError(f"fraction: expected a number in [0, 1], got {fraction!r}")
    lo, hi = wilson_interval(round(fraction * n), n)
    return fraction, float(lo), float(hi)
