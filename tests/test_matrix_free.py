"""Matrix-free ΠGDM and TMPD: A w and A^T z without the (m, d) matrix (issue 11).

LinearForwardModel.apply_A / apply_At against the dense matrix for every linear operator; ΠGDM's conjugate
gradients against its Cholesky solve; TMPD's matrix-free CG against its dense solve; images of
64 x 64 x 3 (d = 12288), where the dense matrix is refused, sampled end to end.
"""
import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fsdiag
from fsdiag import imaging
from fsdiag.forward import FORWARD_MODELS, LinearForwardModel
from fsdiag import Problem
from fsdiag.methods import METHODS, PiGDM, _batched_cg
from fsdiag.testbeds import three_atoms

CI = settings(derandomize=True, deadline=None, max_examples=8,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
LINEAR = sorted(name for name, cls in FORWARD_MODELS.items() if issubclass(cls, LinearForwardModel))


def image_operators(shape):
    """Every linear image operator of fsdiag.imaging on one (C, H, W) shape."""
    c, h, w = shape
    ops = [imaging.PixelMask(shape, torch.arange(h * w).reshape(h, w) % 3 != 0),
           imaging.Inpainting(shape, 0.4, seed=3), imaging.BoxInpainting(shape),
           imaging.BoxInpainting(shape, (1, 1, 2, 3), keep_box=True)]
    ops += [imaging.GaussianBlur(shape, 0.8, padding=p) for p in imaging.GaussianBlur.PADDINGS]
    return ops + [imaging.Downsampling(shape, 2)]


def problem_for(fwd, d, *, n=40, gen=None, dtype=torch.float64, noise=0.1, atoms=None):
    gen = gen or torch.Generator().manual_seed(0)
    atoms = torch.rand(n, d, generator=gen, dtype=dtype) if atoms is None else atoms
    prior = fsdiag.EmpiricalPrior(atoms, device="cpu")
    y = fwd(atoms[:1].double())[0] + 0.05 * torch.randn(fwd.out_dim(d), generator=gen, dtype=torch.float64)
    return Problem.build(prior, fsdiag.GaussianLikelihood(fwd, y, noise))


def check_products(problem, gen):
    """apply_A / apply_At against the dense matrix, and the adjoint identity <A w, z> = <w, A^T z>."""
    fwd = problem.forward
    M = fwd.dense(problem.dim, problem.dtype, problem.device)
    m, d = M.shape
    w = torch.randn(5, d, generator=gen, dtype=torch.float64)
    z = torch.randn(5, m, generator=gen, dtype=torch.float64)
    Aw, Atz = fwd.apply_A(w), fwd.apply_At(z, d)
    assert Aw.shape == (5, m) and Atz.shape == (5, d)
    torch.testing.assert_close(Aw, w @ M.T, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(Atz, z @ M, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close((Aw * z).sum(1), (w * Atz).sum(1), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(fwd.rows(d, problem.dtype, problem.device), M, rtol=1e-14, atol=1e-15)


# ------------------------------------------------------------------ the products
@pytest.mark.parametrize("name", LINEAR)
@pytest.mark.parametrize("d", [12, 36])
def test_products_match_the_matrix_for_every_registered_linear_model(name, d, gen):
    for seed in range(3):
        fwd = FORWARD_MODELS[name].example(d, seed=seed)
        check_products(problem_for(fwd, d, gen=gen), gen)


@pytest.mark.parametrize("shape", [(1, 6, 6), (3, 4, 6)])
def test_products_match_the_matrix_for_every_image_operator(shape, gen):
    d = math.prod(shape)
    for fwd in image_operators(shape):
        check_products(problem_for(fwd, d, gen=gen), gen)


def test_apply_a_leaves_out_the_bias(gen):
    M = torch.randn(3, 5, generator=gen, dtype=torch.float64)
    problem = problem_for(fsdiag.forward.Affine(M, [10.0, -3.0, 0.5]), 5, gen=gen)
    w = torch.randn(4, 5, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(problem.forward.apply_A(w), w @ M.T, rtol=1e-12, atol=1e-12)


def test_products_follow_the_inputs_dtype(gen):
    fwd = imaging.GaussianBlur((1, 4, 4), 1.0)
    for dtype in (torch.float32, torch.float64):
        assert fwd.apply_A(torch.ones(2, 16, dtype=dtype)).dtype == dtype
        assert fwd.apply_At(torch.ones(2, 16, dtype=dtype), 16).dtype == dtype


def test_products_reject_bad_input(gen):
    fwd = imaging.Downsampling((1, 4, 4), 2)
    with pytest.raises(ValueError, match="w"):
        fwd.apply_A(torch.ones(2, 15))
    with pytest.raises(ValueError, match="z"):
        fwd.apply_At(torch.ones(2, 16), 16)
    with pytest.raises(ValueError, match="z"):
        fwd.apply_At(torch.tensor([[math.nan, 0, 0, 0]]), 16)
    with pytest.raises(TypeError, match="linear forward model"):
        imaging.FourierMagnitude((1, 4, 4)).apply_A(torch.ones(2, 16))


# ------------------------------------------------------------------ conjugate gradients
def test_batched_cg_solves_spd_systems_and_reports_its_residual(gen):
    m = 20
    Q = torch.linalg.qr(torch.randn(m, m, generator=gen, dtype=torch.float64))[0]
    S = Q @ torch.diag(torch.logspace(-3, 0, m, dtype=torch.float64)) @ Q.T     # condition number 1e3
    rhs = torch.randn(4, m, generator=gen, dtype=torch.float64)
    rhs[2] = 0                                                                  # a zero right-hand side
    res = _batched_cg(lambda z: z @ S, rhs, 200, 1e-12)
    torch.testing.assert_close(res.solution, torch.linalg.solve(S, rhs.T).T, rtol=1e-8, atol=1e-10)
    assert res.solution[2].abs().max() == 0
    assert 0 < res.iterations < 200 and res.residual <= 1e-12
    short = _batched_cg(lambda z: z @ S, rhs, 3, 1e-12)                        # stopped early: says so
    assert short.iterations == 3 and short.residual > 1e-3
    assert _batched_cg(lambda z: z @ S, rhs, 0, 1e-6).solution.abs().max() == 0


@pytest.mark.parametrize("kwargs,match,err", [
    ({"solver": "lu"}, "solver", ValueError), ({"solver": None}, "solver", ValueError),
    ({"cg_iters": 0}, "cg_iters", ValueError), ({"cg_iters": 2.5}, "cg_iters", TypeError),
    ({"cg_tol": 0.0}, "cg_tol", ValueError), ({"cg_tol": math.inf}, "cg_tol", ValueError),
    ({"cg_tol": "1e-6"}, "cg_tol", TypeError)])
def test_pigdm_rejects_bad_solver_parameters(kwargs, match, err):
    with pytest.raises(err, match=match):
        PiGDM(**kwargs)
    prior, lik = three_atoms()
    with pytest.raises(err, match=match):
        fsdiag.sample(prior, lik, method="pigdm", n_particles=2, n_steps=1, progress=False, **kwargs)


# ------------------------------------------------------------------ ΠGDM: CG against Cholesky
def digits_like(shape, n, gen):
    """Smooth blobs in [0, 1]: n atoms of shape (C, H, W), like small digits."""
    c, h, w = shape
    ii, jj = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    centres = torch.rand(n, c, 2, 1, 1, generator=gen, dtype=torch.float64) * torch.tensor([h, w]).view(1, 1, 2, 1, 1)
    blob = torch.exp(-((ii - centres[:, :, 0]) ** 2 + (jj - centres[:, :, 1]) ** 2) / 3.0)
    return blob.reshape(n, -1)


def guidance_pair(fwd, shape, gen, method, dense_kw, cg_kw, abars=(0.95, 0.5, 0.05)):
    d = math.prod(shape)
    problem = problem_for(fwd, d, gen=gen, atoms=digits_like(shape, 60, gen))
    x = torch.randn(7, d, generator=gen, dtype=torch.float64)
    for abar in abars:
        dense = METHODS[method](**dense_kw)(problem, x, abar)
        cg = METHODS[method](**cg_kw)(problem, x, abar)
        yield abar, dense, cg


@pytest.mark.parametrize("fwd", [imaging.GaussianBlur((1, 6, 6), 1.0), imaging.Inpainting((1, 6, 6), 0.5, seed=1),
                                 imaging.Downsampling((1, 6, 6), 2)], ids=repr)
@pytest.mark.parametrize("r2", ["paper", "song"])
def test_pigdm_cg_matches_the_dense_solve(fwd, r2, gen):
    for _, dense, cg in guidance_pair(fwd, (1, 6, 6), gen, "pigdm", {"r2": r2, "solver": "dense"},
                                      {"r2": r2, "solver": "cg", "cg_iters": 300, "cg_tol": 1e-13}):
        scale = dense.likelihood_score.abs().max().item()
        assert scale > 0
        torch.testing.assert_close(cg.likelihood_score, dense.likelihood_score, rtol=1e-8, atol=1e-9 * scale)
        torch.testing.assert_close(cg.tweedie, dense.tweedie, rtol=0, atol=0)


def test_pigdm_records_its_cg_convergence(gen):
    fwd = imaging.Inpainting((1, 6, 6), 0.5, seed=1)                 # A A^T = I: one CG step solves it
    problem = problem_for(fwd, 36, gen=gen)
    approx = PiGDM(solver="cg")
    approx(problem, torch.randn(3, 36, generator=gen, dtype=torch.float64), 0.5)
    assert approx.last_cg.iterations == 1 and approx.last_cg.residual < 1e-12


@given(st.integers(1, 2), st.integers(2, 5), st.integers(2, 5), st.sampled_from(["blur", "mask", "down"]),
       st.sampled_from([0.9, 0.3, 0.05]), st.integers(0, 2 ** 16))
@CI
def test_pigdm_cg_matches_dense_on_random_shapes(c, hh, ww, kind, abar, seed):
    gen = torch.Generator().manual_seed(seed)
    shape = (c, 2 * hh, 2 * ww) if kind == "down" else (c, hh, ww)
    fwd = {"blur": lambda: imaging.GaussianBlur(shape, 0.7, padding=["zero", "reflect", "circular"][seed % 3]),
           "mask": lambda: imaging.Inpainting(shape, 0.5, seed=seed),
           "down": lambda: imaging.Downsampling(shape, 2)}[kind]()
    for _, dense, cg in guidance_pair(fwd, shape, gen, "pigdm", {"solver": "dense"},
                                      {"solver": "cg", "cg_iters": 500, "cg_tol": 1e-13}, abars=(abar,)):
        scale = dense.likelihood_score.abs().max().item()
        torch.testing.assert_close(cg.likelihood_score, dense.likelihood_score, rtol=1e-7, atol=1e-8 * scale)


def test_auto_keeps_the_dense_path_on_book_sized_problems(gen):
    digits = (1, 8, 8)
    small = [problem_for(op, 64, gen=gen) for op in (imaging.Inpainting(digits), imaging.GaussianBlur(digits),
                                                      imaging.Downsampling(digits), imaging.BoxInpainting(digits))]
    small += [Problem.build(*three_atoms()), problem_for(fsdiag.forward.Identity(), 784, n=3, gen=gen),
              problem_for(imaging.GaussianBlur((1, 32, 32)), 1024, n=3, gen=gen),   # the GPU profile's 32 x 32
              problem_for(imaging.GaussianBlur((3, 32, 32)), 3072, n=3, gen=gen),
              problem_for(imaging.Downsampling((1, 64, 64)), 4096, n=3, gen=gen)]     # the largest matrix_for builds
    assert all(PiGDM().uses_dense(p) for p in small)
    large = [problem_for(imaging.BoxInpainting((1, 65, 64), (0, 0, 1, 1), keep_box=True), 4160, n=3, gen=gen),
             problem_for(imaging.Inpainting((3, 64, 64)), 12288, n=3, gen=gen),
             problem_for(fsdiag.forward.Affine(torch.ones(4097, 2)), 2, n=3, gen=gen)]
    assert not any(PiGDM().uses_dense(p) for p in large)
    # "auto" on a small problem is the dense path, bit for bit
    problem, x = small[1], torch.randn(5, 64, generator=gen, dtype=torch.float64)
    assert torch.equal(PiGDM()(problem, x, 0.3).likelihood_score,
                       PiGDM(solver="dense")(problem, x, 0.3).likelihood_score)


# ------------------------------------------------------------------ TMPD
@pytest.mark.parametrize("fwd", [imaging.GaussianBlur((1, 6, 6), 1.0, padding="reflect"),
                                 imaging.BoxInpainting((1, 6, 6))], ids=repr)
def test_tmpd_matrix_free_cg_matches_its_dense_solve(fwd, gen):
    for _, dense, cg in guidance_pair(fwd, (1, 6, 6), gen, "tmpd", {"dense_max": 64},
                                      {"dense_max": 0, "cg_iters": 300, "cg_tol": 1e-13}):
        scale = dense.likelihood_score.abs().max().item()
        assert scale > 0
        torch.testing.assert_close(cg.likelihood_score, dense.likelihood_score, rtol=1e-7, atol=1e-8 * scale)


def test_tmpd_dense_path_needs_no_dense_matrix(gen):
    """A 2 x 2 box of a 64 x 64 x 3 image: m = 12 <= dense_max, d = 12288 > what matrix() builds."""
    fwd = imaging.BoxInpainting((3, 64, 64), (30, 30, 2, 2), keep_box=True)
    problem = problem_for(fwd, fwd.dim, n=20, gen=gen)
    with pytest.raises(ValueError, match="d"):
        problem.forward.dense(problem.dim, problem.dtype, problem.device)
    x = torch.randn(3, fwd.dim, generator=gen, dtype=torch.float64)
    dense = METHODS["tmpd"]()(problem, x, 0.5).likelihood_score
    cg = METHODS["tmpd"](dense_max=0, cg_iters=100, cg_tol=1e-13)(problem, x, 0.5).likelihood_score
    assert dense.shape == (3, fwd.dim)
    torch.testing.assert_close(cg, dense, rtol=1e-8, atol=1e-10 * dense.abs().max().item())
    # A's rows (from adjoint products) pick exactly the box's pixels
    assert sorted(fwd.rows(problem.dim, problem.dtype, problem.device).nonzero()[:, 1].tolist()) == fwd.index.tolist()


# ------------------------------------------------------------------ images too large for the matrix
@pytest.mark.parametrize("fwd", [imaging.Inpainting((3, 64, 64), 0.3, seed=0), imaging.GaussianBlur((3, 64, 64), 1.5)],
                         ids=lambda f: type(f).__name__)
@pytest.mark.parametrize("method,params", [("pigdm", {"cg_iters": 8}), ("tmpd", {"cg_iters": 4})])
def test_sampling_64x64x3_images_without_the_matrix(fwd, method, params):
    gen = torch.Generator().manual_seed(5)
    d = fwd.dim
    atoms = digits_like((3, 64, 64), 24, gen).float()
    problem = problem_for(fwd, d, gen=gen, atoms=atoms)
    with pytest.raises(ValueError, match="d"):
        problem.forward.dense(problem.dim, problem.dtype, problem.device)
    assert not PiGDM().uses_dense(problem)
    run = fsdiag.sample(problem.prior, problem.lik, method=method, n_particles=3, n_steps=4, seed=0,
                        progress=False, record=None, **params)
    assert run.samples.shape == (3, d) and run.samples.dtype == torch.float32
    assert torch.isfinite(run.samples).all()
    # the particles end near the atoms' scale (pixels in [0, 1]), not blown up by the guidance
    assert run.samples.abs().max() < 10
