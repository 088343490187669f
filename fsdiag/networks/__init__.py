"""Trained denoisers: a small network's Tweedie mean in place of the exact one.

`train_denoiser` fits a small MLP (vectors, e.g. a 2-D mixture) or a small convolutional net
(images, e.g. the 8x8 digits) to the atoms by denoising score matching; `NetworkPrior` gives the
samplers the interface of an `EmpiricalPrior` (moments, denoiser_vjp, cov_matvec), so
`fsdiag.sample(NetworkPrior(net), lik, method="pigdm")` runs the same sampler code with the network.

`fsdiag.networks.training` holds the networks, their preconditioning and their training;
`fsdiag.networks.prior` the prior interface and the prior's own samples.
"""
from __future__ import annotations

from .prior import NetworkPrior, Unconditional, prior_report, sample_prior
from .training import MLP, ConvNet, NetworkDenoiser, Trained, train_denoiser

__all__ = ["MLP", "ConvNet", "NetworkDenoiser", "Trained", "train_denoiser", "NetworkPrior",
           "Unconditional", "sample_prior", "prior_report"]
