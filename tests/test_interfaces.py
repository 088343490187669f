"""Every prior satisfies the written-down `fsdiag.interfaces.Prior`, with the same answers a
sampler relies on: denoise = moments().mean, and denoiser_vjp = (a / b^2) cov_matvec (the
Jacobian of the Tweedie mean is a / b^2 times the posterior covariance, symmetric)."""
import math

import pytest
import torch

import fsdiag
from fsdiag.interfaces import Prior
from fsdiag.testbeds import GaussianMixture


def _priors():
    g = torch.Generator().manual_seed(0)
    atoms = torch.randn(50, 2, generator=g, dtype=torch.float64)
    mix = GaussianMixture([0.3, 0.7], torch.tensor([[-1.0, 0.0], [1.0, 0.5]]),
                          torch.stack([0.2 * torch.eye(2), 0.3 * torch.eye(2)]))
    return {"empirical": fsdiag.EmpiricalPrior(atoms, device="cpu"), "mixture": mix}


@pytest.mark.parametrize("name", ["empirical", "mixture"])
def test_every_prior_satisfies_the_protocol_and_its_identities(name):
    prior = _priors()[name]
    assert isinstance(prior, Prior)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(7, prior.dim, generator=g, dtype=torch.float64)
    v = torch.randn(7, prior.dim, generator=g, dtype=torch.float64)
    abar = 0.6
    torch.testing.assert_close(prior.denoise(x, abar), prior.moments(x, abar).mean)
    a, b2 = math.sqrt(abar), 1 - abar
    torch.testing.assert_close(prior.denoiser_vjp(x, abar, v), (a / b2) * prior.cov_matvec(x, abar, v))
    # the VJP is the Jacobian of the denoiser (finite differences, central, float64)
    eps = 1e-6
    fd = (prior.denoise(x + eps * v, abar) - prior.denoise(x - eps * v, abar)) / (2 * eps)
    torch.testing.assert_close(prior.denoiser_vjp(x, abar, v), fd, rtol=1e-5, atol=1e-7)


def test_network_and_sharded_priors_have_every_member_of_the_protocol():
    from fsdiag.distributed import ShardedPrior
    from fsdiag.networks import NetworkPrior

    for cls in (NetworkPrior, ShardedPrior):
        for member in ("moments", "denoise", "denoiser_vjp", "cov_matvec", "dim"):
            assert hasattr(cls, member), (cls.__name__, member)


def test_something_else_is_not_a_prior():
    assert not isinstance(torch.zeros(3), Prior)
    assert not isinstance(fsdiag.ExactDenoiser(_priors()["empirical"]), Prior)
