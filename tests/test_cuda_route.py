"""The fused route's dispatch, self-check and fallback (issue 11), tested on the CPU by injecting
kernels into fsdiag.kernels.fused.KERNELS: the CPU flash kernel stands in for the CUDA one (with the CUDA
kernel's padding: key width to a multiple of 8, LSE padded to 32 queries), and broken kernels
(wrong numbers, raising) must make "auto" fall back to torch ops with one warning. The tests
marked cuda run every route and storage dtype on a GPU against float64 torch ops."""
import math
import warnings

import pytest
import torch

import fsdiag
from fsdiag.kernels import engine as E
from fsdiag.kernels import fused as FU


def reduce(prior, x, abar, log_lik, heads, *, route):
    """The engine's reduce at alpha_bar `abar` (the seam takes a = sqrt(abar), b^2 = 1 - abar)."""
    return prior.engine.reduce(x, math.sqrt(abar), 1.0 - abar, log_lik, heads, route=route)


needs_flash = pytest.mark.skipif(FU.FLASH_CPU is None, reason="this torch has no CPU flash-attention kernel")


class Kernel:
    """A stand-in kernel that counts its calls; `fn(q, k)` computes (out, lse)."""

    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, q, k):
        self.calls += 1
        return self.fn(q, k)


def flash(q, k):
    return FU.FLASH_CPU(q, k, k, scale=1.0)[:2]


def cuda_like(q, k):
    """The CPU kernel with the CUDA kernel's output layout: the LSE padded along the queries to a
    multiple of 32, the padding holding garbage (float32 on CUDA, which takes float32 only)."""
    out, lse = flash(q, k)
    m = lse.shape[-1]
    pad = torch.full((*lse.shape[:2], -(-m // 32) * 32), 123.0, dtype=lse.dtype)
    pad[..., :m] = lse
    return out, pad


def install(monkeypatch, fn, *, align=8, dtypes=(torch.float32, torch.float64), max_width=None,
            splits=None, atoms_per_call=FU.ATOMS_PER_CALL):
    """Make `fn` the CPU's fused kernel, with a fresh self-check cache."""
    kernel = Kernel(fn)
    monkeypatch.setattr(FU, "KERNELS", {"cpu": FU.Kernel(kernel, align, dtypes, max_width, splits, atoms_per_call)})
    monkeypatch.setattr(FU, "CHECKED", {})
    return kernel


def problem(gen, n=500, d=3, dtype=torch.float32, batch=40):
    atoms = torch.randn(n, d, generator=gen, dtype=torch.float64) * 1.5 + 2.0
    prior = fsdiag.EmpiricalPrior(atoms.to(dtype), chunk_size=128, device="cpu")
    x = (0.7 * atoms[:batch] + 0.7 * torch.randn(batch, d, generator=gen, dtype=torch.float64)).to(dtype)
    ll = -0.5 * ((atoms[:, 0] - 2.5) ** 2) / 0.3
    return prior, x, ll


def routes_agree(prior, x, ll, tol):
    for heads, lik in (((False,), None), ((True,), ll), ((False, True), ll)):
        for abar in (0.8, 0.1):
            lf, mf, _ = reduce(prior, x, abar, lik, heads, route="auto")
            lt, mt, _ = reduce(prior, x, abar, lik, heads, route="torch")
            torch.testing.assert_close(lf, lt, rtol=tol, atol=tol * (1 + lt.abs().max().item()))
            torch.testing.assert_close(mf, mt, rtol=tol, atol=tol * (1 + mt.abs().max().item()))


@needs_flash
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_good_kernel_passes_its_self_check_and_is_used_padded(dtype, gen, monkeypatch):
    """d = 3: key width 5 (with the likelihood column) padded to 8 with zero columns; the LSE's
    padded tail is ignored; "auto" then calls the kernel and agrees with torch ops."""
    kernel = install(monkeypatch, cuda_like)
    prior, x, ll = problem(gen, dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        routes_agree(prior, x, ll, 1e-10 if dtype == torch.float64 else 2e-4)
    assert kernel.calls > 12                          # self-checks plus 4 chunks per real call
    assert set(FU.CHECKED.values()) == {None}
    # one check per key width: 3 + 1 -> 8 and 3 + 2 -> 8 share one entry
    assert [k[2] for k in FU.CHECKED] == [8]
    assert FU.width(3, True, 8) == 8 and FU.width(7, True, 8) == 16 and FU.width(7, True, 1) == 9


@needs_flash
@pytest.mark.parametrize("how", ["wrong", "raises", "default_scale", "nan"])
def test_a_broken_kernel_fails_its_self_check_and_auto_falls_back_with_one_warning(how, gen, monkeypatch):
    def broken(q, k):
        if how == "raises":
            raise RuntimeError("CUDA error: no kernel image is available")
        if how == "default_scale":                    # the kernel's own 1/sqrt(width) scale
            return FU.FLASH_CPU(q, k, k)[:2]
        out, lse = flash(q, k)
        return (out * 1.005, lse) if how == "wrong" else (out, lse * math.nan)

    kernel = install(monkeypatch, broken)
    prior, x, ll = problem(gen)
    with pytest.warns(RuntimeWarning, match="not used: it (raised|disagrees)") as rec:
        first = prior.moments(x, 0.5, ll)
    assert len([w for w in rec if "fused" in str(w.message)]) == 1
    checks = kernel.calls
    assert checks >= 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")                # the outcome is cached: no second warning
        again = prior.moments(x, 0.5, ll)
    assert kernel.calls == checks                     # never called outside its self-check
    ref = reduce(prior, x, 0.5, ll, (False, True), route="torch")
    torch.testing.assert_close(first.mean, ref[1][0])
    torch.testing.assert_close(again.mean_cond, ref[1][1])
    # route="flash" still forces the kernel (tests compare routes with it)
    if how == "raises":
        with pytest.raises(RuntimeError, match="no kernel image"):
            reduce(prior, x, 0.5, None, (False,), route="flash")


@needs_flash
def test_a_kernel_that_fails_after_its_self_check_falls_back_for_good(gen, monkeypatch):
    """The self-check has 16 queries per head; a kernel that raises on more queries (a launch
    limit, say) is caught at the real call: torch ops answer, one warning, never called again."""
    def small_only(q, k):
        if q.shape[2] > 32:
            raise RuntimeError("invalid configuration argument")
        return flash(q, k)

    kernel = install(monkeypatch, small_only)
    prior, x, ll = problem(gen, batch=40)
    with pytest.warns(RuntimeWarning, match="raised RuntimeError at batch 40"):
        mean = prior.denoise(x, 0.5)
    torch.testing.assert_close(mean, reduce(prior, x, 0.5, None, (False,), route="torch")[1][0])
    calls = kernel.calls
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        prior.denoise(x, 0.5)
    assert kernel.calls == calls


@needs_flash
def test_auto_skips_the_kernel_where_it_is_not_expected_to_win(gen, monkeypatch):
    """No self-check and no call: keys wider than max_width, dtypes it does not take, autograd,
    fewer than _FLASH_MIN_ATOMS atoms; the CUDA entry's rule is width <= 128."""
    kernel = install(monkeypatch, flash, max_width=8, dtypes=(torch.float32,))
    prior, x, ll = problem(gen, d=7)                   # width 7 + 1 = 8: used
    assert prior.engine.use_flash(x, False) and kernel.calls > 0
    assert not prior.engine.use_flash(x, True)               # 7 + 2 -> 16 > 8
    calls = kernel.calls
    wide, xw, _ = problem(gen, d=16)
    assert not wide.engine.use_flash(xw, False)
    p64, x64, _ = problem(gen, d=2, dtype=torch.float64)
    assert not p64.engine.use_flash(x64, False)
    assert not prior.engine.use_flash(x.clone().requires_grad_(True), False)
    few, xf, _ = problem(gen, n=E.FLASH_MIN_ATOMS - 1, d=7)
    assert not few.engine.use_flash(xf, False)
    assert kernel.calls == calls
    if hasattr(torch.ops.aten, "_scaled_dot_product_efficient_attention"):
        assert FU.CUDA_MAX_WIDTH == 128


@needs_flash
def test_torch_func_transforms_take_torch_ops_and_leave_the_kernel_enabled(gen, monkeypatch):
    """Forward AD (jacfwd) has no rule for the fused kernel: under it "auto" takes torch ops
    without a warning, and the kernel stays enabled for plain calls."""
    kernel = install(monkeypatch, flash)
    prior, x, _ = problem(gen, d=7)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)   # the fallback's warning
        jac = torch.func.jacfwd(lambda z: prior.moments(z, 0.5).mean)(x[:3])
    assert jac.shape == (3, 7, 3, 7) and bool(torch.isfinite(jac).all())
    assert all(why is None for why in FU.CHECKED.values())
    calls = kernel.calls
    prior.moments(x, 0.5)
    assert kernel.calls > calls                        # still used for plain tensors


def test_routes_are_validated_and_flash_needs_a_kernel(gen, monkeypatch):
    prior, x, _ = problem(gen)
    with pytest.raises(ValueError, match="route"):
        reduce(prior, x, 0.5, None, (False,), route="fused")
    monkeypatch.setattr(FU, "KERNELS", {})
    with pytest.raises(ValueError, match="route: no fused attention kernel"):
        reduce(prior, x, 0.5, None, (False,), route="flash")
    assert not prior.engine.use_flash(x, False)              # "auto" then uses torch ops
    assert bool(torch.isfinite(prior.denoise(x, 0.5)).all())


@needs_flash
def test_the_self_check_passes_for_the_cpu_kernel_and_catches_small_errors(monkeypatch):
    cpu = torch.device("cpu")
    for d in (1, 2, 64, 300):
        for has_ll in (False, True):
            assert FU.self_check(cpu, torch.float32, d, has_ll) is None
    assert FU.self_check(cpu, torch.float64, 5, True) is None
    install(monkeypatch, lambda q, k: (flash(q, k)[0] * (1 + 1e-3), flash(q, k)[1]))
    assert "disagrees" in FU.self_check(cpu, torch.float32, 64, True)
    install(monkeypatch, lambda q, k: (flash(q, k)[0], flash(q, k)[1][..., :-1]))   # one LSE short
    assert FU.self_check(cpu, torch.float32, 64, False).startswith("it raised")


# ------------------------------------------------------------------------------ on a GPU
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.cuda
@cuda
@pytest.mark.parametrize("d", [1, 2, 16, 126, 784])
def test_cuda_fused_kernel_passes_its_self_check(d):
    """The CUDA kernel (efficient attention) agrees with torch ops on the GPU at these widths
    (126 + 2 = 128: the widest "auto" uses; 784: images, forced only)."""
    dev = torch.device("cuda")
    assert "cuda" in FU.KERNELS, f"this torch ({torch.__version__}) has no efficient-attention op"
    for has_ll in (False, True):
        assert FU.self_check(dev, torch.float32, d, has_ll) is None


@pytest.mark.cuda
@cuda
@pytest.mark.parametrize("storage", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("route", ["torch", "flash", "auto"])
@pytest.mark.parametrize("d", [2, 784])
def test_cuda_routes_and_storage_match_float64(storage, route, d, gen):
    """Every route and storage dtype on the GPU against float64 torch ops on the same (rounded)
    atoms: 16-bit atoms are widened to float32 per chunk, so only float32 rounding remains."""
    n = 3000
    atoms = (torch.rand(n, d, generator=gen, dtype=torch.float64) * (4.0 / math.sqrt(d))).to(storage)
    exact = fsdiag.EmpiricalPrior(atoms.double(), device="cuda")
    prior = fsdiag.EmpiricalPrior(atoms, device="cuda", dtype=torch.float32,
                                  **({} if storage == torch.float32 else {"storage_dtype": storage}))
    assert prior.atoms.dtype == storage and prior.dtype == torch.float32
    x = 0.8 * atoms[:64].double() + 0.6 * torch.randn(64, d, generator=gen, dtype=torch.float64) / math.sqrt(d)
    ll = -((atoms.double()[:, 0] - atoms.double()[0, 0]) ** 2) / 0.01
    x, ll = x.cuda(), ll.cuda()
    for abar in (0.9, 0.3, 0.02):
        for heads, lik in (((False,), None), ((False, True), ll), ((True,), ll)):
            lf, mf, _ = reduce(prior, x.float(), abar, lik, heads, route=route)
            lt, mt, _ = reduce(exact, x, abar, lik, heads, route="torch")
            scale = 1 + lt.abs().max().item()
            torch.testing.assert_close(lf.double(), lt, rtol=1e-4, atol=1e-4 * scale)
            torch.testing.assert_close(mf.double(), mt, rtol=1e-4, atol=1e-4 * (1 + mt.abs().max().item()))
    run = fsdiag.sample(prior, fsdiag.GaussianLikelihood(fsdiag.forward.Identity(), atoms[1].double().cpu(), 0.5),
                        method="fsr", n_particles=32, n_steps=5, progress=False, seed=0)
    assert run.samples.device.type == "cuda" and bool(torch.isfinite(run.samples).all())


@needs_flash
def test_the_priors_route_keyword_picks_the_route_for_auto(gen, monkeypatch):
    kernel = install(monkeypatch, flash)
    atoms = torch.randn(300, 4, generator=gen)
    with pytest.raises(ValueError, match="route"):
        fsdiag.EmpiricalPrior(atoms, route="cuda", device="cpu")
    x = torch.randn(20, 4, generator=gen)
    forced_torch = fsdiag.EmpiricalPrior(atoms, route="torch", chunk_size=128, device="cpu")
    m_torch = forced_torch.denoise(x, 0.4)
    assert kernel.calls == 0 and FU.CHECKED == {}
    forced_flash = fsdiag.EmpiricalPrior(atoms, route="flash", chunk_size=128, device="cpu")
    m_flash = forced_flash.denoise(x, 0.4)
    assert kernel.calls == 3 and FU.CHECKED == {}     # 300 atoms in 128-atom chunks: no self-check
    torch.testing.assert_close(m_flash, m_torch, rtol=2e-4, atol=2e-5)
    forced_flash.route = "torch"
    forced_flash.denoise(x, 0.4)
    assert kernel.calls == 3


def test_threads_for_leaves_the_cpu_threads_alone_for_gpu_work():
    from fsdiag._threads import SMALL_WORK, threads_for
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with threads_for(SMALL_WORK - 1, torch.device("cuda")):
            assert torch.get_num_threads() == 2
        with threads_for(SMALL_WORK - 1, torch.device("cpu")):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


@needs_flash
@pytest.mark.parametrize("splits", [2, 3, 7])
def test_key_splits_pad_and_merge_exactly(splits, gen, monkeypatch):
    """Split-KV (the CUDA entry's way to fill the GPU): each chunk's keys go to `splits` batch
    entries, the last chunk padded with dead keys, the entries merged by their LSE; the same
    numbers as torch ops (500 atoms in chunks of 128: 128 = 3 x 43 - 1, 116 = 3 x 39 - 1)."""
    kernel = install(monkeypatch, cuda_like, splits=lambda rows, n, dev: splits, atoms_per_call=128)
    prior, x, ll = problem(gen, n=500, d=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        routes_agree(prior, x, ll, 2e-4)
    assert kernel.calls > 0 and set(FU.CHECKED.values()) == {None}
    # zero-weight atoms filling whole splits (logits at the finite floor) still give no NaN
    atoms = torch.randn(300, 2, generator=gen, dtype=torch.float64)
    w = torch.ones(300, dtype=torch.float64)
    w[:200] = 0.0
    zero = fsdiag.EmpiricalPrior(atoms, weights=w, chunk_size=128, device="cpu", route="flash")
    alive = fsdiag.EmpiricalPrior(atoms[200:], chunk_size=4096, device="cpu", route="torch")
    xs = torch.randn(30, 2, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(zero.denoise(xs, 0.3), alive.denoise(xs, 0.3), rtol=1e-10, atol=1e-12)


def test_cuda_split_rule(monkeypatch):
    """~2 thread blocks per SM (blocks of 64 queries), >= 256 keys per split, at least 1."""
    class Props:
        multi_processor_count = 132                                   # an H200
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: Props())
    dev = torch.device("cuda")
    assert FU.cuda_splits(256, 16384, dev) == 64                      # MNIST batch: 4 query blocks
    assert FU.cuda_splits(8192, 16384, dev) == 3                      # gmm, two heads: 128 blocks
    assert FU.cuda_splits(32, 512, dev) == 2                          # the self-check
    assert FU.cuda_splits(32, 100, dev) == 1
