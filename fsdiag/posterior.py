"""The exact posterior over atoms, psi_i = softmax_i(log pi_i + log p(y | x^(i))) (docs/design.md §2.3):
the target every judge compares with. Beside the prior: it is the prior's weights, conditioned."""
from __future__ import annotations

import torch

from .kernels import Engine
from .likelihood import GaussianLikelihood
from .problems import Problem
from .prior import EmpiricalPrior

__all__ = ["posterior_weights"]


def posterior_weights(prior: EmpiricalPrior, lik) -> torch.Tensor:
    """Exact posterior over atoms psi_i = softmax_i(log pi_i + log p(y | x^(i))), shape (N,)."""
    if not isinstance(prior, EmpiricalPrior):
        raise TypeError(f"prior: expected an fsdiag.EmpiricalPrior, got {type(prior).__name__}")
    problem = Problem.build(prior, lik)
    return prior.log_posterior_weights(_log_lik_differences(prior, problem.lik, problem.log_lik)).exp()


# Below this |l_i| the float64 l_i are exact to ~1e-12 in their differences (all the softmax sees).
_LOG_LIK_EXACT = 1e3


def _log_lik_differences(prior: EmpiricalPrior, lik, log_lik: torch.Tensor) -> torch.Tensor:
    """l_i - l_r for a reference atom r, without the cancellation of l_i = -|y - A(x_i)|^2 / 2s^2
    (+ const): with y = 1e30 and s = 1e-8, l_i ~ -5e75 and its rounding (~1e60) swamps the
    differences between atoms (~1e46) that decide the posterior. Instead
        l_i - l_r = -(1/2) sum_j ((A(x_r) - A(x_i))_j / s_j) ((r_i + r_r)_j / s_j),
    r_i = y - A(x_i), in which y cancels exactly. Returned as is where every |l_i| is below
    _LOG_LIK_EXACT (the plain l_i then lose nothing, and their numbers stay as they were), for a
    likelihood that overrides the Gaussian log_prob, and for a prior whose softmax over atoms is
    not local (a ShardedPrior combines l_i of every shard, which must share one constant)."""
    finite = torch.isfinite(prior.engine.log_weights64)
    if (float(log_lik[finite].abs().max()) < _LOG_LIK_EXACT
            or type(lik).log_prob is not GaussianLikelihood.log_prob
            or type(lik).residual is not GaussianLikelihood.residual
            or type(prior.engine).log_posterior_weights is not Engine.log_posterior_weights):
        return log_lik
    ref = int(torch.argmax(prior.engine.log_weights64 + log_lik))
    std = lik.noise_std.to(device=prior.device)
    y = lik.y.to(device=prior.device)
    a_ref = lik.forward(prior.atoms[ref:ref + 1].to(torch.float64))[0]
    out = torch.empty_like(log_lik)
    for sl in prior.engine.blocks(8):
        a_i = lik.forward(prior.atoms[sl].to(torch.float64))
        diff = (a_ref - a_i) / std
        both = ((y - a_i) + (y - a_ref)) / std
        out[sl] = -0.5 * (diff * both).sum(1)
    # Where the product overflows (|l_i| near float64's limit), the plain difference is as good.
    plain = log_lik - log_lik[ref]
    return torch.where(torch.isfinite(out), out, plain)
