"""Every registered forward model: Jacobian-transpose products against autograd."""
import pytest
import torch

import fsdiag
from fsdiag.forward import FORWARD_MODELS, LinearForwardModel

D = 4


@pytest.mark.parametrize("name", sorted(FORWARD_MODELS))
def test_vjp_matches_autograd(name, gen):
    fwd = FORWARD_MODELS[name].example(D, seed=3)
    x = torch.randn(7, D, generator=gen, dtype=torch.float64).requires_grad_(True)
    y = fwd(x)
    assert y.shape == (7, fwd.out_dim(D))
    v = torch.randn(y.shape, generator=gen, dtype=torch.float64)
    (ref,) = torch.autograd.grad(y, x, grad_outputs=v)
    torch.testing.assert_close(fwd.vjp(x.detach(), v), ref, rtol=1e-10, atol=1e-12)
    jac = fwd.jacobian(x.detach())
    torch.testing.assert_close(torch.einsum("bmd,bm->bd", jac, v), ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", sorted(n for n, c in FORWARD_MODELS.items() if issubclass(c, LinearForwardModel)))
def test_linear_models_agree_with_their_matrix(name, gen):
    fwd = FORWARD_MODELS[name].example(D, seed=3)
    x = torch.randn(5, D, generator=gen, dtype=torch.float64)
    M = fwd.matrix_for(D)
    c = torch.zeros(M.shape[0], dtype=torch.float64) if fwd.bias is None else fwd.bias
    torch.testing.assert_close(fwd(x), x @ M.T + c)


def test_known_values():
    x = torch.tensor([[3.0, 4.0]], dtype=torch.float64)
    assert fsdiag.forward.Radial()(x).item() == pytest.approx(5.0)
    assert fsdiag.forward.PolarAngle()(x).item() == pytest.approx(0.9272952180016122)
    assert fsdiag.forward.AbsoluteValue()(-x).tolist() == [[3.0, 4.0]]
    assert fsdiag.forward.Mask(torch.tensor([False, True]))(x).tolist() == [[4.0]]
    assert fsdiag.forward.Affine([[1.0, 2.0]], [0.5])(x).item() == pytest.approx(11.5)


def test_mlp_is_seeded():
    x = torch.randn(3, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    a, b = fsdiag.forward.MLP(5, 2, seed=7), fsdiag.forward.MLP(5, 2, seed=7)
    assert torch.equal(a(x), b(x))
    assert not torch.equal(a(x), fsdiag.forward.MLP(5, 2, seed=8)(x))
