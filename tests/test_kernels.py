"""Issue 11's kernels: the fused (flash) route against the torch-ops route and autograd of exact
log-densities, the posterior score from the conditional Tweedie mean alone, one copy of the atoms."""
import math

import pytest
import torch

import fsdiag
from fsdiag.kernels import fused as FU
from fsdiag.kernels import store as S
from fsdiag import oracle as R


def reduce(prior, x, abar, log_lik, heads, *, route):
    """The engine's reduce at alpha_bar `abar` (the seam takes a = sqrt(abar), b^2 = 1 - abar)."""
    return prior.engine.reduce(x, math.sqrt(abar), 1.0 - abar, log_lik, heads, route=route)


needs_flash = pytest.mark.skipif(FU.FLASH_CPU is None, reason="this torch has no CPU flash-attention kernel")


def make(gen, n=400, d=3, dtype=torch.float64, offset=0.0, weighted=True, chunk=128):
    atoms = torch.randn(n, d, generator=gen, dtype=torch.float64) * 1.5 + offset
    w = torch.rand(n, generator=gen, dtype=torch.float64) + 0.1 if weighted else None
    return fsdiag.EmpiricalPrior(atoms.to(dtype), weights=w, chunk_size=chunk, device="cpu")


def queries(prior, abar, gen, n=24):
    idx = torch.randint(prior.n_atoms, (n,), generator=gen)
    z = torch.randn(n, prior.dim, generator=gen, dtype=torch.float64)
    return (math.sqrt(abar) * prior.atoms[idx].double() + math.sqrt(1 - abar) * z).to(prior.dtype)


@needs_flash
@pytest.mark.parametrize("abar", [0.999, 0.5, 0.02])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("heads", [(False,), (True,), (False, True)])
def test_flash_route_matches_torch_route(abar, dtype, heads, gen):
    prior = make(gen, dtype=dtype, offset=3.0)
    x = queries(prior, abar, gen)
    ll = -0.5 * ((prior.atoms.double()[:, :2] - 0.3) ** 2).sum(1) / 0.5
    ll = None if heads == (False,) else ll
    lf, mf, _ = reduce(prior, x, abar, ll, heads, route="flash")
    lt, mt, _ = reduce(prior, x, abar, ll, heads, route="torch")
    tol = 1e-10 if dtype == torch.float64 else 2e-4
    torch.testing.assert_close(lf, lt, rtol=tol, atol=tol * (1 + lt.abs().max().item()))
    torch.testing.assert_close(mf, mt, rtol=tol, atol=tol * 10)


@needs_flash
def test_flash_route_merges_chunks_and_skips_zero_weight_chunks(gen):
    """A chunk whose atoms all have zero prior weight contributes nothing (no NaN from -inf - -inf)."""
    atoms = torch.randn(600, 2, generator=gen, dtype=torch.float64)
    w = torch.ones(600, dtype=torch.float64)
    w[:256] = 0.0                                              # the first chunks: zero weight
    small = fsdiag.EmpiricalPrior(atoms, weights=w, chunk_size=64, device="cpu")
    whole = fsdiag.EmpiricalPrior(atoms[256:], chunk_size=4096, device="cpu")
    x = torch.randn(50, 2, generator=gen, dtype=torch.float64)
    for abar in (0.9, 0.1):
        a = reduce(small, x, abar, None, (False,), route="flash")
        b = reduce(whole, x, abar, None, (False,), route="flash")
        torch.testing.assert_close(a[1], b[1], rtol=1e-10, atol=1e-12)
        # log_norm drops ||x - a c||^2 / 2b^2, c the mean of all atoms (zero-weight ones included)
        drop = [((x - math.sqrt(abar) * p.center) ** 2).sum(1) / (2 * (1 - abar)) for p in (small, whole)]
        torch.testing.assert_close(a[0][0] - drop[0], b[0][0] - drop[1], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("abar", [0.95, 0.4, 0.01])
def test_posterior_score_is_the_gradient_of_the_exact_log_posterior(abar, gen):
    """prior score + likelihood score = (a E[x_0 | x_t, y] - x_t) / b^2 = grad log p_t(x_t | y),
    with p_t(x_t | y) = sum_i psi_i N(x_t; a x^(i), b^2 I), differentiated by autograd."""
    prior = make(gen)
    lik = fsdiag.GaussianLikelihood(fsdiag.forward.Affine.example(3, seed=1), torch.tensor([0.4]), 0.7)
    ll = lik.log_prob(prior.atoms)
    x = queries(prior, abar, gen).requires_grad_(True)
    log_psi = prior.engine.log_posterior_weights(ll)
    lp = R.log_marginal(x, prior.atoms, log_psi, abar)
    (ref,) = torch.autograd.grad(lp.sum(), x)
    x = x.detach()
    ours = prior.posterior_score(x, abar, ll)
    torch.testing.assert_close(ours, ref, rtol=1e-8, atol=1e-8 / (1 - abar))
    two_terms = prior.score(x, abar) + prior.likelihood_score(x, abar, ll)
    torch.testing.assert_close(ours, two_terms, rtol=1e-8, atol=1e-8 / (1 - abar))
    # the one-head log-normaliser is the two-head one's conditional half
    torch.testing.assert_close(prior.posterior_moments(x, abar, ll).log_norm,
                               prior.moments(x, abar, ll).log_norm_cond, rtol=1e-10, atol=1e-10)


class _FSRTwoTerms(fsdiag.methods.FSR):
    """The FSR through the generic path (prior Tweedie mean + likelihood score at every step)."""


def test_sample_fsr_with_the_conditional_mean_only_matches_the_two_term_path(gen):
    prior = make(gen, n=200, d=2)
    lik = fsdiag.GaussianLikelihood(fsdiag.forward.Identity(), torch.tensor([0.5, -0.2]), 0.4)
    kw = dict(n_particles=64, n_steps=30, seed=3, progress=False, record=4)
    fast = fsdiag.sample(prior, lik, method="fsr", **kw)
    slow = fsdiag.sample(prior, lik, method=_FSRTwoTerms(), **kw)
    torch.testing.assert_close(fast.samples, slow.samples, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(fast.trajectory, slow.trajectory, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(fast.tweedie, slow.tweedie, rtol=1e-9, atol=1e-9)
    assert len(fast.times) == 4 and fast.tweedie.shape == (4, 64, 2)
    assert bool(torch.isfinite(fast.tweedie).all())


def test_the_prior_holds_one_copy_of_the_atoms(gen):
    """No tensor attribute besides `atoms` is atoms-sized; `atoms` is the caller's tensor when
    the dtype and device already match (no copy at all)."""
    atoms = torch.randn(2000, 32, generator=gen, dtype=torch.float64)
    prior = fsdiag.EmpiricalPrior(atoms, labels=torch.arange(2000) % 3, device="cpu")
    assert prior.atoms.data_ptr() == atoms.data_ptr()
    others = [v for v in vars(prior).values() if isinstance(v, torch.Tensor) and v is not prior.atoms]
    assert others, "expected the per-atom vectors (weights, squared norms) as attributes"
    assert all(t.untyped_storage().data_ptr() != atoms.untyped_storage().data_ptr() for t in others)
    extra = sum(t.untyped_storage().nbytes() for t in others)
    assert extra < atoms.nbytes / 4, f"{extra} bytes beyond the atoms ({atoms.nbytes})"
    # and the kernels still see the centred atoms: the Tweedie mean at abar -> 1 is the nearest atom
    x = atoms[:5] * math.sqrt(1 - 1e-9)
    torch.testing.assert_close(prior.denoise(x, 1 - 1e-9), atoms[:5], rtol=0, atol=1e-6)


@pytest.mark.parametrize("storage", [torch.float16, torch.bfloat16])
def test_half_storage_computes_in_float32_on_the_rounded_atoms(storage, gen):
    """storage_dtype keeps the atoms at 2 bytes; the kernels then compute exactly what a float32
    prior on the rounded atoms computes (widening is exact), and the rounding error is bounded."""
    atoms = torch.rand(700, 16, generator=gen, dtype=torch.float64)
    half = fsdiag.EmpiricalPrior(atoms, storage_dtype=storage, device="cpu")
    assert half.atoms.dtype == storage and half.dtype == torch.float32 and half.atoms.element_size() == 2
    rounded = fsdiag.EmpiricalPrior(atoms.to(storage).float(), device="cpu")
    exact = fsdiag.EmpiricalPrior(atoms, device="cpu")
    abar = 0.6
    x = math.sqrt(abar) * atoms[:32] + math.sqrt(1 - abar) * torch.randn(32, 16, generator=gen, dtype=torch.float64)
    ll = -((atoms[:, :4] - 0.5) ** 2).sum(1)
    mh = half.moments(x.float(), abar, ll)
    mr = rounded.moments(x.float(), abar, ll)
    torch.testing.assert_close(mh.mean, mr.mean, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(mh.mean_cond, mr.mean_cond, rtol=1e-5, atol=1e-5)
    v = torch.randn(32, 16, generator=gen)
    torch.testing.assert_close(half.cov_matvec(x.float(), abar, v), rounded.cov_matvec(x.float(), abar, v),
                               rtol=1e-4, atol=1e-5)
    # against float64: the error of rounding the atoms (2^-8 relative for bfloat16, 2^-11 float16)
    eps = 2.0 ** (-8 if storage == torch.bfloat16 else -11)
    err = (mh.mean.double() - exact.denoise(x, abar)).abs().max().item()
    assert err < 4 * eps, err
    run = fsdiag.sample_exact(half, fsdiag.GaussianLikelihood(fsdiag.forward.Identity(), atoms[0], 0.5),
                              n_particles=8, n_steps=3, progress=False)
    assert run.samples.dtype == torch.float32 and bool(torch.isfinite(run.samples).all())


def test_bad_storage_dtype_and_center_name_the_argument():
    with pytest.raises(ValueError, match="storage_dtype"):
        fsdiag.EmpiricalPrior(torch.zeros(3, 2), storage_dtype=torch.int8, device="cpu")
    with pytest.raises(ValueError, match="center"):
        fsdiag.EmpiricalPrior(torch.zeros(3, 2), center=torch.zeros(3), device="cpu")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("storage", [None, torch.bfloat16])
def test_cuda_kernels_match_the_cpu(storage, gen):
    """The same streamed kernels on a GPU (torch-ops route) give the CPU's answer."""
    atoms = torch.randn(3000, 24, generator=gen, dtype=torch.float64)
    kw = {} if storage is None else {"storage_dtype": storage}
    cpu = fsdiag.EmpiricalPrior(atoms.float(), device="cpu", **kw)
    gpu = fsdiag.EmpiricalPrior(atoms.float(), device="cuda", **kw)
    x = torch.randn(64, 24, generator=gen)
    ll = -((atoms[:, :3] - 0.2) ** 2).sum(1)
    for abar in (0.9, 0.2):
        a, b = cpu.moments(x, abar, ll), gpu.moments(x.cuda(), abar, ll.cuda())
        for u, v in zip(a, b):
            torch.testing.assert_close(v.cpu(), u, rtol=1e-4, atol=1e-4)
        v = torch.randn(64, 24, generator=gen)
        torch.testing.assert_close(gpu.cov_matvec(x.cuda(), abar, v.cuda()).cpu(), cpu.cov_matvec(x, abar, v),
                                   rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("storage", [None, torch.bfloat16])
def test_one_off_passes_in_small_blocks_match_the_whole_array(storage, gen, monkeypatch):
    """The constructor's squared norms and log_likelihoods walk ~1 MiB blocks (many blocks here):
    the same numbers as one pass over all atoms."""
    monkeypatch.setattr(S, "ONE_OFF_BYTES", 8)                  # the floor: 16 atoms per block
    atoms = torch.randn(100, 5, generator=gen, dtype=torch.float64) + 2.0
    kw = {} if storage is None else {"storage_dtype": storage}
    prior = fsdiag.EmpiricalPrior(atoms, device="cpu", **kw)
    assert len(list(prior.engine.blocks(8))) == 7
    xc = prior.atoms.to(prior.dtype) - prior.center
    torch.testing.assert_close(prior.engine.sq_norms, (xc * xc).sum(1), rtol=1e-6, atol=1e-6)
    lik = fsdiag.GaussianLikelihood(fsdiag.forward.Affine.example(5, seed=2), torch.tensor([0.3, -0.2]), 0.4)
    ll = prior.log_likelihoods(lik)
    assert ll.dtype == torch.float64 and ll.shape == (100,)
    torch.testing.assert_close(ll, lik.log_prob(prior.atoms.to(torch.float64)), rtol=0, atol=0)
    with pytest.raises(ValueError, match="atoms"):
        bad = atoms.clone()
        bad[57, 3] = math.nan                                    # in the 4th block
        fsdiag.EmpiricalPrior(bad, device="cpu")


def test_bench_cuda_task_exits_0_with_a_message_without_a_gpu(monkeypatch, capsys, tmp_path):
    """`python benchmarks/bench_fsr.py --task cuda` on a machine without CUDA: status 0, says so."""
    import argparse
    import importlib.util
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_fsr.py"
    spec = importlib.util.spec_from_file_location("bench_fsr_under_test", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert bench.main(["--task", "cuda", "--json", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out
    assert "no CUDA device" in out and "nothing was measured" in out
    assert not (tmp_path / "r.json").exists()
    # --dry-run: the task's whole code path on the CPU at tiny sizes (timings meaningless)
    assert bench.main(["--task", "cuda", "--dry-run", "--rounds", "1", "--json", str(tmp_path / "r.json")]) == 0
    rows = json.loads((tmp_path / "r.json").read_text())
    for case in ("gmm", "mnist", "1e6x1024"):
        for storage in ("float32", "bfloat16"):
            for route in ("torch", "flash"):
                assert math.isfinite(rows[f"{case}_{storage}_{route}_ms_per_step"])
            assert rows[f"{case}_{storage}_auto_picks_fused"] in (0.0, 1.0)
    for storage, bound in (("float32", 1e-5), ("bfloat16", 1e-2), ("float16", 2e-3)):
        for route in ("torch", "flash"):
            assert 0 < rows[f"mnist_{storage}_{route}_rel_err_vs_float64"] < bound
    cases = bench._cuda_cases(argparse.Namespace(gmm_atoms=1024, gmm_particles=4096))
    assert [(c[0], c[1], c[2], c[3]) for c in cases] == [("gmm", 1024, 1, 4096), ("mnist", 60000, 784, 256),
                                                         ("1e6x1024", 10 ** 6, 1024, 256)]


# --------------------------------------------------------------- the CPU route's key splits (threads)
def _split_problem(gen, dtype, n=1024, d=5, chunk=128, dead=300):
    """n atoms in chunks of `chunk`, the first `dead` of zero weight: whole chunks of zero-weight
    atoms, then a chunk that is partly dead."""
    atoms = torch.randn(n, d, generator=gen, dtype=torch.float64) * 1.5 + 2.0
    w = torch.rand(n, generator=gen, dtype=torch.float64) + 0.1
    w[:dead] = 0.0
    prior = fsdiag.EmpiricalPrior(atoms.to(dtype), weights=w, chunk_size=chunk, device="cpu")
    x = (0.7 * atoms[dead:dead + 40] + 0.7 * torch.randn(40, d, generator=gen, dtype=torch.float64)).to(dtype)
    ll = -0.5 * (atoms[:, 0] - 2.5) ** 2 / 0.3
    return prior, x, ll


@needs_flash
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("threads", [2, 3, 4])
def test_cpu_key_split_threads_equal_one_thread_and_torch_ops(threads, dtype, gen):
    """The CPU route's chunks split between Python threads (flash_pass(threads=...)), merged in
    the atoms' order. 1024 atoms in chunks of 128, the first 300 of zero weight (two whole
    chunks, then a partial one): 2 and 4 threads keep the 8 chunks of 128 and give one thread's
    numbers bit for bit; 3 threads make 9 uneven chunks (8 x 114 + 112): one thread's numbers to
    float rounding. All agree with torch ops to float rounding."""
    prior, x, ll = _split_problem(gen, dtype)
    eng = prior.engine
    tol = 2e-5 if dtype == torch.float32 else 1e-10
    for abar in (0.8, 0.1):
        a, b2 = math.sqrt(abar), 1.0 - abar
        xq = x - a * eng.center
        lls = eng.shifted_log_lik(ll)[0]
        for heads in ((False,), (True,), (False, True)):
            lik = None if heads == (False,) else lls
            l1, m1 = FU.flash_pass(eng, xq, a, b2, lik, heads, threads=1)
            ls, ms = FU.flash_pass(eng, xq, a, b2, lik, heads, threads=threads)
            lt, mt = FU.softmax_pass(eng, xq, a, b2, lik, heads)
            if 8 % threads == 0:
                assert torch.equal(l1, ls) and torch.equal(m1, ms)
            for l, m in ((ls, ms), (l1, m1)):
                torch.testing.assert_close(l, lt, rtol=tol, atol=tol * (1 + lt.abs().max().item()))
                torch.testing.assert_close(m, mt, rtol=tol, atol=tol * (1 + mt.abs().max().item()))
            torch.testing.assert_close(ls, l1, rtol=tol, atol=tol * (1 + l1.abs().max().item()))
            torch.testing.assert_close(ms, m1, rtol=tol, atol=tol * (1 + m1.abs().max().item()))


@needs_flash
@pytest.mark.parametrize("n", [200, 130, 1000])
def test_cpu_key_split_makes_a_chunk_per_thread(n, gen):
    """Fewer chunks than threads: the chunks shrink to one per thread (at least MIN_CHUNK atoms:
    200 atoms on 3 threads are 67 + 67 + 66, 130 are 65 + 65), float rounding away from one
    thread's single chunk and from torch ops; zero-weight atoms fill the first chunk."""
    prior, x, ll = _split_problem(gen, torch.float32, n=n, chunk=4096, dead=min(70, n // 2))
    eng = prior.engine
    a, b2 = math.sqrt(0.3), 0.7
    xq = x - a * eng.center
    lls = eng.shifted_log_lik(ll)[0]
    for heads in ((False,), (True,), (False, True)):
        lik = None if heads == (False,) else lls
        l1, m1 = FU.flash_pass(eng, xq, a, b2, lik, heads, threads=1)
        ls, ms = FU.flash_pass(eng, xq, a, b2, lik, heads, threads=3)
        lt, mt = FU.softmax_pass(eng, xq, a, b2, lik, heads)
        for l, m in ((ls, ms), (l1, m1)):
            torch.testing.assert_close(l, lt, rtol=2e-5, atol=2e-5 * (1 + lt.abs().max().item()))
            torch.testing.assert_close(m, mt, rtol=2e-5, atol=2e-5 * (1 + mt.abs().max().item()))


@needs_flash
def test_engine_splits_keys_at_several_threads_and_restores_the_count(gen):
    """Engine.reduce on work above SMALL_WORK at 2 intra-op threads takes the split (the default:
    key_threads), gives one thread's numbers (the same chunks) and leaves torch's thread count as
    it was; so does log_likelihoods (blocks on threads)."""
    from fsdiag._threads import SMALL_WORK
    n, d, B = 16384, 32, 256                     # 4 chunks of 4096: a multiple of 2 threads
    assert B * n * d >= SMALL_WORK
    atoms = torch.randn(n, d, generator=gen)
    prior = fsdiag.EmpiricalPrior(atoms, device="cpu", route="flash")
    x = torch.randn(B, d, generator=gen)
    lik = fsdiag.GaussianLikelihood(fsdiag.forward.Mask(torch.arange(d) < 3), torch.zeros(3), 0.5)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        ll1 = prior.log_likelihoods(lik)
        one = reduce(prior, x, 0.4, ll1, (False, True), route="flash")
        torch.set_num_threads(2)
        assert FU.key_threads(prior.engine, B, n) == 2 and prior.engine.block_threads(lik) == 2
        ll2 = prior.log_likelihoods(lik)
        two = reduce(prior, x, 0.4, ll2, (False, True), route="flash")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert torch.equal(ll1, ll2)
    assert torch.equal(one[0], two[0]) and torch.equal(one[1], two[1])


def test_run_ordered_consumes_in_order_and_raises_after_all_threads_stop():
    """fsdiag._threads.run_ordered: consume(i, fn(i)) in index order whatever the finishing
    order; at most `window` items ahead; the first error re-raised; the thread count restored."""
    import threading
    import time

    from fsdiag._threads import run_ordered

    before = torch.get_num_threads()
    seen, lock, inside = [], threading.Lock(), []

    def fn(i):
        inside.append(torch.get_num_threads())
        time.sleep(0.002 * ((7 * i) % 5))         # finish out of order
        return i * i

    def consume(i, r):
        with lock:
            seen.append((i, r))

    run_ordered(23, fn, consume, 3, window=4)
    assert seen == [(i, i * i) for i in range(23)]
    assert set(inside) == {1} and torch.get_num_threads() == before

    def bad(i):
        if i == 5:
            raise KeyError("five")
        return i

    got = []
    with pytest.raises(KeyError, match="five"):
        run_ordered(40, bad, lambda i, r: got.append(i), 3)
    assert got == list(range(len(got))) and 5 not in got
    assert torch.get_num_threads() == before


def test_threads_for_gives_a_large_block_the_callers_threads_back():
    """A large kernel inside a one-thread block (a sampler's step of small (B, d) ops around the
    reduction over the atoms) runs at the caller's thread count; inside run_ordered's items the
    budget is one thread, nested blocks included; every count is restored."""
    from fsdiag._threads import SMALL_WORK, run_ordered, thread_budget, threads_for

    before = torch.get_num_threads()
    seen = []
    try:
        torch.set_num_threads(2)
        with threads_for(1):
            assert torch.get_num_threads() == 1 and thread_budget() == 2
            with threads_for(SMALL_WORK):
                assert torch.get_num_threads() == 2
                with threads_for(1):
                    assert torch.get_num_threads() == 1 and thread_budget() == 2
                assert torch.get_num_threads() == 2
            assert torch.get_num_threads() == 1

            def item(i):
                with threads_for(SMALL_WORK):
                    seen.append((torch.get_num_threads(), thread_budget()))

            run_ordered(4, item, lambda i, r: None, 2)
            assert torch.get_num_threads() == 1 and thread_budget() == 2
        assert torch.get_num_threads() == 2 and thread_budget() == 2
    finally:
        torch.set_num_threads(before)
    assert set(seen) == {(1, 1)}


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork")
def test_run_ordered_works_in_a_forked_child():
    """The worker pool does not survive a fork: a child starts its own (a task handed to the
    inherited pool would never run, and run_ordered would wait forever)."""
    import os

    from fsdiag._threads import run_ordered

    run_ordered(4, lambda i: i, lambda i, r: None, 2)          # the parent's pool exists
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:                                                # pragma: no cover - the child
        try:
            got = []
            run_ordered(6, lambda i: 2 * i, lambda i, r: got.append(r), 2)
            os.write(write, repr(got).encode())
        finally:
            os._exit(0)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    assert os.read(read, 1000).decode() == repr([0, 2, 4, 6, 8, 10]) and status == 0
