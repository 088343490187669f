"""Benchmarks of the FSR kernels; every number that matters is a ratio measured in one run.

    python benchmarks/bench_fsr.py                      # --task score: N=60000, d=784, batch 256, float32
    python benchmarks/bench_fsr.py --n-atoms 5000 --dim 64 --device cuda
    python benchmarks/bench_fsr.py --task gmm           # the paper code's gmm task, fsdiag vs the paper code's way
    python benchmarks/bench_fsr.py --task mnist         # fsdiag.sample at MNIST size vs the matmul peak; peak memory
    python benchmarks/bench_fsr.py --task ratios        # the issue's ratios: MNIST-size share of a 4096^2 matmul at
                                                        # 1 and all threads; d = 1 speed-up over the replica
    python benchmarks/bench_fsr.py --task storage       # float16/bfloat16 atom storage: error against float64
    python benchmarks/bench_fsr.py --task cuda          # on a GPU: routes x storage at three sizes (< 3 min, H200)
    python benchmarks/bench_fsr.py --task cuda --dry-run  # the same code on the CPU at tiny sizes (a smoke test)

Tasks gmm, mnist and storage run on --threads threads (default 1: the machine is shared);
ratios on one thread and on --threads (default: all of torch's).

--task score:
The naive baseline is the paper code's way (fsdiag.oracle): the full (batch x N x d)
difference tensor and autograd through log p(y|x_t). At the target size it needs ~48 GB per
tensor, so it is timed at --naive-atoms and scaled linearly in N (its cost is linear in N);
the streamed kernel is timed at both sizes so one ratio is measured like for like.
Every measurement runs in a fresh subprocess so its peak memory is its own.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))   # run from a checkout without installing


def _status_mib(field: str) -> float:
    """A memory field of /proc/self/status (VmRSS: resident now, VmHWM: peak resident) in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _rss_mib() -> float:
    return _status_mib("VmRSS")


def _reset_hwm() -> bool:
    """Reset the process's peak RSS (VmHWM) so the next reading is the peak of what follows (Linux).
    Freed heap memory is returned to the system first (malloc_trim), so that the baseline RSS does
    not hold memory that the measured call could reuse unseen."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _hwm_mib() -> float:
    return _status_mib("VmHWM")


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def worker(kind: str, n_atoms: int, dim: int, batch: int, repeats: int, device: str, chunk: int,
           matmul_peak: bool = False) -> dict:
    import fsdiag
    from fsdiag import oracle as reference

    dev = torch.device(device)
    g = torch.Generator(device="cpu").manual_seed(0)
    dtype = torch.float32
    atoms = (torch.rand(n_atoms, dim, generator=g, dtype=dtype) + 0.5 * torch.randn(n_atoms, dim, generator=g, dtype=dtype)).to(dev)
    abar = fsdiag.VPSchedule().alpha_bar(0.3)
    x = (math.sqrt(abar) * atoms[:batch] + math.sqrt(1 - abar) * torch.randn(batch, dim, generator=g, dtype=dtype).to(dev))
    log_lik = -0.5 * ((atoms[:, :dim // 2] - atoms[0, :dim // 2]) ** 2).sum(1) / 4.0   # any per-atom log p(y|x_i)
    log_w = torch.full((n_atoms,), -math.log(n_atoms), dtype=dtype, device=dev)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    base = _rss_mib()
    if kind == "streamed":
        prior = fsdiag.EmpiricalPrior(atoms, device=dev, chunk_size=chunk)
        base = _rss_mib()
        fn = lambda: prior.likelihood_score(x, abar, log_lik)  # noqa: E731
    else:
        def fn():
            xg = x.detach().requires_grad_(True)
            lp = reference.log_marginal(xg, atoms, log_w, abar, log_lik) - reference.log_marginal(xg, atoms, log_w, abar)
            return torch.autograd.grad(lp.sum(), xg)[0]
    out = fn()
    _sync(dev)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter(); out = fn(); _sync(dev); times.append(time.perf_counter() - t0)
    flops = 6.0 * batch * n_atoms * dim   # logits matmul + two weighted sums (unconditional, conditional)
    res = {"peak_extra_mib": (_peak_mib() - base) if dev.type == "cpu" else torch.cuda.max_memory_allocated() / 2 ** 20,
           "finite": bool(torch.isfinite(out).all())}
    if matmul_peak:
        # The matmul peak, timed in turns with the kernel so that both see the same machine
        # (on a shared CPU the clock moves by 30% between runs); best of each.
        ma = torch.randn(4096, 4096, generator=g, dtype=dtype).to(dev)
        mb = torch.randn(4096, 4096, generator=g, dtype=dtype).to(dev)
        mm_times = []
        for _ in range(2 * repeats):
            t0 = time.perf_counter(); ma @ mb; _sync(dev); mm_times.append(time.perf_counter() - t0)
            t0 = time.perf_counter(); fn(); _sync(dev); times.append(time.perf_counter() - t0)
        res["matmul_gflops"] = 2 * 4096 ** 3 / min(mm_times) / 1e9
    res.update(seconds=min(times), median_seconds=sorted(times)[len(times) // 2], gflops=flops / min(times) / 1e9)
    return res


def run_worker(args, kind, n_atoms, repeats, matmul_peak=False):
    cmd = [sys.executable, __file__, "--worker", kind, "--n-atoms", str(n_atoms), "--dim", str(args.dim),
           "--batch", str(args.batch), "--repeats", str(repeats), "--device", args.device, "--chunk", str(args.chunk)]
    cmd += ["--matmul-peak"] * matmul_peak
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"{kind} worker failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def gmm_worker(args) -> dict:
    """The paper code's gmm task: a two-component 1-D mixture, --gmm-atoms atoms drawn from it,
    --gmm-particles particles, Euler-Maruyama on the VP-SDE, float64. fsdiag.sample(method="fsr")
    against the paper code's way (fsdiag.oracle.sample_em: the full difference tensor and
    autograd, as the paper's code computes it), alternated in one process, per step."""
    import fsdiag
    from fsdiag import oracle as reference
    from fsdiag.testbeds import GaussianMixture

    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    mix = GaussianMixture([0.3, 0.7], [[-2.0], [2.0]], [0.25, 0.25], dtype=torch.float64)
    atoms = mix.sample(args.gmm_atoms, g)
    lik = fsdiag.GaussianLikelihood(fsdiag.forward.Identity(), torch.tensor([1.0], dtype=torch.float64), 0.5)
    prior = fsdiag.EmpiricalPrior(atoms, device="cpu")
    sched = fsdiag.VPSchedule()
    ours, paper = [], []
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        reference.sample_em("fsr", atoms, lik, n_particles=args.gmm_particles, n_steps=args.paper_steps,
                            t_min=1e-2, generator=torch.Generator().manual_seed(1), schedule=sched)
        paper.append((time.perf_counter() - t0) / args.paper_steps)
        t0 = time.perf_counter()
        run = fsdiag.sample(prior, lik, method="fsr", n_particles=args.gmm_particles, n_steps=args.gmm_steps,
                            record=0, progress=False, seed=1)
        ours.append((time.perf_counter() - t0) / args.gmm_steps)
    assert bool(torch.isfinite(run.samples).all())
    return {"paper_way_s_per_step": min(paper), "fsdiag_s_per_step": min(ours),
            "speedup_per_step": min(paper) / min(ours),
            "paper_way_500_steps_s": 500 * min(paper), "fsdiag_500_steps_s": 500 * min(ours)}


def _mnist_sized(args):
    """(generator, atoms (N, d) in [0, 1] float32, a half-pixel mask likelihood) at MNIST size."""
    import fsdiag

    g = torch.Generator().manual_seed(0)
    atoms = torch.rand(args.n_atoms, args.dim, generator=g, dtype=torch.float32)
    mask = torch.rand(args.dim, generator=g) < 0.5
    y = atoms[0, mask].double() + 0.1 * torch.randn(int(mask.sum()), generator=g, dtype=torch.float64)
    return g, atoms, fsdiag.GaussianLikelihood(fsdiag.forward.Mask(mask), y, 0.1)


def mnist_worker(args) -> dict:
    """fsdiag.sample(method="fsr") at MNIST size on synthetic atoms (N x d uniform pixels, a random
    half of the pixels observed): the whole call's time, counted as 4 B N d flops per step and
    4 B N d for the final Tweedie mean (setup charged to the call), against a plain a @ b of the same shape (B x d) @ (d x N)
    timed in turns with it; the kernel alone (posterior_moments, 4 B N d) likewise. Peak RSS beyond the atoms and the
    recorded trajectory is the extra memory of the whole call (log-likelihoods included), and the
    constructor's (EmpiricalPrior(atoms)) likewise: as RSS
    with glibc's default malloc, which keeps freed blocks of up to 32 MB in its heap (its mmap
    threshold rises with each freed block), and as live memory — run with the environment
    MALLOC_MMAP_THRESHOLD_=131072 (fixed threshold: freed blocks go back at once)."""
    import fsdiag

    torch.set_num_threads(args.threads)
    g, atoms, lik = _mnist_sized(args)
    N, d, B = args.n_atoms, args.dim, args.batch
    if not _reset_hwm():
        raise RuntimeError("cannot reset the peak RSS (/proc/self/clear_refs): Linux only")
    base_rss = _rss_mib()
    prior = fsdiag.EmpiricalPrior(atoms, device="cpu")
    init_extra = _hwm_mib() - base_rss          # the constructor's peak beyond the atoms
    xa = torch.randn(B, d, generator=g)
    kw = dict(method="fsr", n_particles=B, record=args.record, progress=False, seed=1)
    _reset_hwm()
    base_rss = _rss_mib()
    t0 = time.perf_counter(); run = fsdiag.sample(prior, lik, n_steps=1 + args.mnist_steps, **kw)
    t1 = time.perf_counter()
    traj_mib = (run.trajectory.nbytes + run.tweedie.nbytes) / 2 ** 20
    peak_extra = _hwm_mib() - base_rss - traj_mib
    whole, mm, kern = [t1 - t0], [], []
    mm_out = torch.empty(B, N)       # the plain matmul writes into a reused buffer (no page faults)
    problem = fsdiag.Problem.build(prior, lik)
    abar = fsdiag.VPSchedule().alpha_bar(0.5)
    for _ in range(args.rounds):
        t0 = time.perf_counter(); torch.matmul(xa, atoms.T, out=mm_out); mm.append(time.perf_counter() - t0)
        t0 = time.perf_counter(); prior.posterior_moments(xa, abar, problem.log_lik); kern.append(time.perf_counter() - t0)
        t0 = time.perf_counter(); fsdiag.sample(prior, lik, n_steps=1 + args.mnist_steps, **kw)
        whole.append(time.perf_counter() - t0)
    peak = 2.0 * B * N * d / min(mm)
    flops = 4.0 * B * N * d
    # The whole call: its steps and the final Tweedie mean (one pass each, 4 B N d), with the setup
    # (log p(y | x_i) for every atom, the initial draw) charged to it: no subtraction of timings.
    steps = 1 + args.mnist_steps
    total = flops * (steps + 1)
    return {"matmul_gflops": peak / 1e9, "kernel_s": min(kern), "kernel_fraction_of_matmul_peak": flops / min(kern) / peak,
            "sample_s": min(whole), "sample_steps": steps, "sample_gflops": total / min(whole) / 1e9,
            "fraction_of_matmul_peak": total / min(whole) / peak, "atoms_mib": atoms.nbytes / 2 ** 20,
            "trajectory_mib": traj_mib, "peak_extra_mib": peak_extra, "prior_init_peak_extra_mib": init_extra}


def replica_sample(atoms, log_lik, sched, n_particles, n_steps, t_min, generator):
    """The paper code's way without autograd (a lean "difference-tensor replica"): per step the full
    (B, N) logits log pi_i + l_i - ||x - a x^(i)||^2 / 2b^2 from the (B, N, d) difference tensor by
    broadcasting, their softmax, the weighted sum of the atoms, the exact posterior score
    (a E[x_0 | x_t, y] - x_t) / b^2 and fsdiag.sample's Euler-Maruyama step (same draws, same
    order); then the final Tweedie mean (prior only), as fsdiag.sample returns it."""
    N = atoms.shape[0]
    lw = torch.full((N,), -math.log(N), dtype=atoms.dtype)
    grid = sched.time_grid(n_steps, t_min).tolist()
    x = torch.randn(n_particles, atoms.shape[1], generator=generator, dtype=atoms.dtype)

    def mean(x, abar, bias):
        a, b2 = math.sqrt(abar), 1.0 - abar
        logits = bias - ((x[:, None, :] - a * atoms[None]) ** 2).sum(-1) / (2 * b2)
        return torch.softmax(logits, 1) @ atoms

    for k in range(n_steps):
        t, s = grid[k], grid[k + 1]
        abar = sched.alpha_bar(t)
        score = (math.sqrt(abar) * mean(x, abar, lw + log_lik) - x) / (1.0 - abar)
        beta, dt = sched.beta(t), t - s
        z = torch.randn(x.shape, generator=generator, dtype=atoms.dtype)
        x = x + (0.5 * beta * x + beta * score) * dt + math.sqrt(beta * dt) * z
    return x, mean(x, sched.alpha_bar(grid[-1]), lw)


def ratios_worker(args) -> dict:
    """The issue's two ratios in one run.

    1. MNIST size (--n-atoms x --dim synthetic pixels in [0, 1), --batch particles, float32, half
       the pixels observed, record=0): fsdiag.sample(method="fsr") with --ratio-steps steps, counted
       as 4 B N d flops per step and for the final Tweedie mean (setup charged to the call), as a
       share of a square 4096^2 float32 matmul's flop rate at the same thread count; at one
       thread and at --threads (default: all of torch's threads), timed in turns (min of
       --rounds; each matmul min of 3). The same-shape (B x d) @ (d x N) matmul's rate is shown too.
    2. d = 1 (--ratio-1d-atoms atoms of the paper's two-mode mixture, --ratio-1d-particles particles,
       float64, record=0, one thread): the whole fsdiag.sample call against the lean replica
       (replica_sample: the same steps and draws, the same final Tweedie mean), both with
       --ratio-1d-steps steps, timed in turns (min of --rounds); their samples must agree. The
       floor beside it: one float64 exp per (particle, atom) pair (torch.exp on a block in
       cache), the least any exact step can do; replica step / that time bounds the speed-up."""
    import fsdiag
    from fsdiag.testbeds import GaussianMixture

    all_threads = args.threads if args.threads_given else torch.get_num_threads()
    out = {}
    # ---- 1. MNIST size
    g, atoms, lik = _mnist_sized(args)
    N, d, B = args.n_atoms, args.dim, args.batch
    prior = fsdiag.EmpiricalPrior(atoms, device="cpu")
    ma = torch.randn(4096, 4096, generator=g)
    mb = torch.randn(4096, 4096, generator=g)
    xa = torch.randn(B, d, generator=g)
    mm_out, sq_out = torch.empty(B, N), torch.empty(4096, 4096)
    kw = {"method": "fsr", "n_particles": B, "n_steps": args.ratio_steps, "record": 0, "progress": False, "seed": 1}
    counts = sorted({1, all_threads})
    times = {(th, k): [] for th in counts for k in ("square", "shape", "sample")}
    samples = {}
    fsdiag.sample(prior, lik, **{**kw, "n_steps": 1})     # warm-up: the fused kernel's one-time self-check
    for _ in range(args.rounds):
        for th in counts:
            torch.set_num_threads(th)
            for _ in range(3):
                t0 = time.perf_counter(); torch.mm(ma, mb, out=sq_out); times[th, "square"].append(time.perf_counter() - t0)
                t0 = time.perf_counter(); torch.matmul(xa, atoms.T, out=mm_out); times[th, "shape"].append(time.perf_counter() - t0)
            t0 = time.perf_counter(); run = fsdiag.sample(prior, lik, **kw); times[th, "sample"].append(time.perf_counter() - t0)
            samples[th] = run.samples
    torch.set_num_threads(all_threads)
    flops = 4.0 * B * N * d * (args.ratio_steps + 1)
    for th in counts:
        square = 2 * 4096 ** 3 / min(times[th, "square"])
        shape = 2.0 * B * N * d / min(times[th, "shape"])
        rate = flops / min(times[th, "sample"])
        out[f"mnist_{th}thr_matmul4096_gflops"] = square / 1e9
        out[f"mnist_{th}thr_sample_s"] = min(times[th, "sample"])
        out[f"mnist_{th}thr_share_of_matmul4096"] = rate / square
        out[f"mnist_{th}thr_share_of_same_shape_matmul"] = rate / shape
    out["mnist_samples_max_abs_diff_across_threads"] = float((samples[counts[0]] - samples[counts[-1]]).abs().max())
    del atoms, prior, ma, mb, mm_out, sq_out
    # ---- 2. d = 1
    torch.set_num_threads(1)
    mix = GaussianMixture([0.3, 0.7], [[-2.0], [2.0]], [0.25, 0.25], dtype=torch.float64)
    atoms = mix.sample(args.ratio_1d_atoms, torch.Generator().manual_seed(0))
    lik = fsdiag.GaussianLikelihood(fsdiag.forward.Identity(), torch.tensor([1.0], dtype=torch.float64), 0.5)
    prior = fsdiag.EmpiricalPrior(atoms, device="cpu")
    sched = fsdiag.VPSchedule()
    ll = prior.log_likelihoods(lik)
    k1 = args.ratio_1d_steps
    fsdiag.sample(prior, lik, method="fsr", n_particles=64, n_steps=1, record=0, progress=False, seed=1)
    ours, rep, floor = [], [], []
    blk = torch.linspace(-30.0, 0.0, 256 * 512, dtype=torch.float64).view(256, 512)
    blk_out = torch.empty_like(blk)
    n_blk = -(-args.ratio_1d_particles * args.ratio_1d_atoms // blk.numel())
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        for _ in range(n_blk):               # the floor: one exp per (particle, atom), in cache
            torch.exp(blk, out=blk_out)
        floor.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        xr, mr = replica_sample(atoms, ll, sched, args.ratio_1d_particles, k1, 1e-2, torch.Generator().manual_seed(1))
        rep.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        run = fsdiag.sample(prior, lik, method="fsr", n_particles=args.ratio_1d_particles, n_steps=k1, record=0,
                            progress=False, seed=1, t_min=1e-2)
        ours.append(time.perf_counter() - t0)
    torch.set_num_threads(all_threads)
    out["d1_replica_s_per_step"] = min(rep) / k1
    out["d1_fsdiag_s_per_step"] = min(ours) / k1
    out["d1_speedup_vs_replica"] = min(rep) / min(ours)
    out["d1_exp_pass_s"] = min(floor)
    out["d1_exp_floor_speedup_vs_replica"] = min(rep) / k1 / min(floor)
    out["d1_samples_max_abs_diff"] = float((run.samples - xr).abs().max())
    out["d1_final_tweedie_max_abs_diff"] = float((run.tweedie[-1] - mr).abs().max())
    out["threads"] = all_threads
    return out


def storage_worker(args) -> dict:
    """Atoms stored in float16 / bfloat16, accumulated in float32: the Tweedie mean's error against
    float64 at several noise levels, next to float32 storage's (relative to the mean's RMS)."""
    import fsdiag

    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    N, d, B = min(args.n_atoms, 20000), args.dim, 64
    atoms = torch.rand(N, d, generator=g, dtype=torch.float64)
    ref_prior = fsdiag.EmpiricalPrior(atoms, device="cpu")
    out = {}
    for t in (0.8, 0.3, 0.1):
        abar = fsdiag.VPSchedule().alpha_bar(t)
        x = math.sqrt(abar) * atoms[:B] + math.sqrt(1 - abar) * torch.randn(B, d, generator=g, dtype=torch.float64)
        ref = ref_prior.denoise(x, abar)
        rms = float(ref.pow(2).mean().sqrt())
        for name, sd in (("float32", None), ("float16", torch.float16), ("bfloat16", torch.bfloat16)):
            kw = {} if sd is None else {"storage_dtype": sd}
            try:
                p = fsdiag.EmpiricalPrior(atoms.float(), device="cpu", **kw)
            except TypeError:
                continue
            m = p.denoise(x.float(), abar).double()
            out[f"t{t}_{name}_rel_err"] = float((m - ref).pow(2).mean().sqrt()) / rms
    return out


def _cuda_cases(args):
    """(name, atoms N, dim d, particles B, (fewer, more) steps) of the cuda task (--dry-run: tiny)."""
    if getattr(args, "dry_run", False):
        return [("gmm", 300, 1, 64, (1, 2)), ("mnist", 600, 784, 8, (1, 2)), ("1e6x1024", 600, 1024, 8, (1, 2))]
    return [("gmm", args.gmm_atoms, 1, args.gmm_particles, (5, 45)),
            ("mnist", 60000, 784, 256, (2, 12)),
            ("1e6x1024", 10 ** 6, 1024, 256, (1, 5))]


def cuda_worker(args) -> dict:
    """fsdiag.sample(method="fsr") on a CUDA device, per step, for three problems: the paper code's
    gmm task (d = 1, 1024 atoms, 4096 particles), MNIST size (60000 x 784 synthetic pixels, 256
    particles, half the pixels observed) and 10^6 atoms of 32x32 (d = 1024, 256 particles); each
    with the kernels' route forced to torch ops and to the fused kernel (efficient attention), and
    the atoms stored in float32 and bfloat16 (widened to float32 per chunk). A step's time is the
    difference of two whole sample calls with fewer and more steps (setup cancels), best of
    --rounds; its share of the matmul peak counts 4 B N d flops against a plain (B x d) @ (d x N)
    float32 matmul timed in the same run. Then the Tweedie mean's error against float64 at MNIST
    size for float32, bfloat16 and float16 storage on both routes, and which route "auto" picks.
    Returns {} (the caller prints why) without a CUDA device. --dry-run: the same code on the
    CPU at tiny sizes (its numbers mean nothing; it checks that the task runs)."""
    dry = args.dry_run
    if not dry and not torch.cuda.is_available():
        return {}
    import fsdiag
    from fsdiag.kernels import fused as FU
    from fsdiag.testbeds import GaussianMixture

    dev = torch.device("cpu" if dry else "cuda")
    t_start = time.perf_counter()
    print(f"device {'cpu (dry run)' if dry else torch.cuda.get_device_name(dev)}, torch {torch.__version__} "
          f"(CUDA {torch.version.cuda}), TF32 matmul allowed: {torch.backends.cuda.matmul.allow_tf32}", flush=True)
    rows = {}

    def timed(fn):
        _sync(dev)
        t0 = time.perf_counter()
        fn()
        _sync(dev)
        return time.perf_counter() - t0

    for name, N, d, B, (s1, s2) in _cuda_cases(args):
        if time.perf_counter() - t_start > args.cuda_budget_s:
            print(f"{name}: skipped (past --cuda-budget-s {args.cuda_budget_s:g} s)", flush=True)
            continue
        g = torch.Generator(device=dev).manual_seed(0)
        if name == "gmm":
            mix = GaussianMixture([0.3, 0.7], [[-2.0], [2.0]], [0.25, 0.25], dtype=torch.float64)
            atoms = mix.sample(N, torch.Generator().manual_seed(0)).to(dev, torch.float32)
            lik = fsdiag.GaussianLikelihood(fsdiag.forward.Identity(), torch.tensor([1.0], dtype=torch.float64), 0.5)
        else:
            atoms = torch.rand(N, d, generator=g, device=dev)
            mask = torch.rand(d, generator=torch.Generator().manual_seed(0)) < 0.5
            y = atoms[0, mask.to(dev)].double().cpu() + 0.1 * torch.randn(int(mask.sum()), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
            lik = fsdiag.GaussianLikelihood(fsdiag.forward.Mask(mask), y, 0.1)
        xa = torch.randn(B, d, generator=g, device=dev)
        mm_out = torch.empty(B, N, device=dev)
        timed(lambda: torch.matmul(xa, atoms.T, out=mm_out))
        mm = min(timed(lambda: torch.matmul(xa, atoms.T, out=mm_out)) for _ in range(5))
        del mm_out
        peak = 2.0 * B * N * d / mm
        rows[f"{name}_matmul_tflops"] = peak / 1e12
        step = {}
        for storage in ("float32", "bfloat16"):
            kw = {} if storage == "float32" else {"storage_dtype": torch.bfloat16}
            prior = fsdiag.EmpiricalPrior(atoms, device=dev, **kw)
            for route in ("torch", "flash"):
                prior.route = route
                try:
                    run = lambda k: fsdiag.sample(prior, lik, method="fsr", n_particles=B, n_steps=k,  # noqa: E731
                                                  record=0, progress=False, seed=1)
                    run(s1)                                                   # warm-up
                    t = [min(timed(lambda: run(k)) for _ in range(args.rounds)) for k in (s1, s2)]
                    step[storage, route] = (t[1] - t[0]) / (s2 - s1)
                except Exception as err:   # noqa: BLE001 - report and go on with the next
                    print(f"{name} {storage} {route}: FAILED {type(err).__name__}: {err}", flush=True)
                    continue
                ms = 1e3 * step[storage, route]
                share = 4.0 * B * N * d / step[storage, route] / peak
                rows[f"{name}_{storage}_{route}_ms_per_step"] = ms
                rows[f"{name}_{storage}_{route}_share_of_matmul"] = share
                print(f"{name:9s} {storage:8s} {route:5s} {ms:9.3f} ms/step  {share:6.1%} of the matmul peak "
                      f"({peak / 1e12:.1f} TFLOP/s)", flush=True)
            prior.route = "auto"
            rows[f"{name}_{storage}_auto_picks_fused"] = float(prior.engine.use_flash(xa, True))
            del prior
            if (storage, "torch") in step and (storage, "flash") in step:
                rows[f"{name}_{storage}_fused_speedup"] = step[storage, "torch"] / step[storage, "flash"]
        for route in ("torch", "flash"):
            if ("float32", route) in step and ("bfloat16", route) in step:
                rows[f"{name}_{route}_bf16_speedup"] = step["float32", route] / step["bfloat16", route]
        del atoms, xa
        if not dry:
            torch.cuda.empty_cache()
    if time.perf_counter() - t_start <= args.cuda_budget_s:
        rows.update(_cuda_storage_error(dev, 600 if dry else 60000))
    for key, why in FU.CHECKED.items():
        print(f"self-check {key[0]} {key[1]} key width {key[2]}: {'passed' if why is None else why}")
    rows["wall_s"] = time.perf_counter() - t_start
    return rows


def _cuda_storage_error(dev, N: int = 60000) -> dict:
    """The Tweedie mean (with the likelihood) at MNIST size against float64 torch ops on the same
    unrounded atoms, relative RMS, worst over three noise levels, per storage dtype and route."""
    import fsdiag

    g = torch.Generator(device=dev).manual_seed(2)
    d, B = 784, 64
    atoms = torch.rand(N, d, generator=g, device=dev, dtype=torch.float64)
    ll = -((atoms[:, :392] - atoms[0, :392]) ** 2).sum(1) / (2 * 0.1 ** 2 * 392)   # a soft likelihood
    exact = fsdiag.EmpiricalPrior(atoms, device=dev, route="torch")
    out = {}
    for t in (0.8, 0.3, 0.1):
        abar = fsdiag.VPSchedule().alpha_bar(t)
        x = math.sqrt(abar) * atoms[:B] + math.sqrt(1 - abar) * torch.randn(B, d, generator=g, device=dev, dtype=torch.float64)
        ref = exact.posterior_moments(x, abar, ll).mean
        rms = float(ref.pow(2).mean().sqrt())
        for storage in (torch.float32, torch.bfloat16, torch.float16):
            prior = fsdiag.EmpiricalPrior(atoms.float(), device=dev, storage_dtype=storage)
            for route in ("torch", "flash"):
                prior.route = route
                try:
                    m = prior.posterior_moments(x.float(), abar, ll).mean.double()
                except Exception as err:   # noqa: BLE001
                    print(f"storage error {storage} {route}: FAILED {type(err).__name__}: {err}", flush=True)
                    continue
                key = f"mnist_{str(storage).split('.')[-1]}_{route}_rel_err_vs_float64"
                out[key] = max(out.get(key, 0.0), float((m - ref).pow(2).mean().sqrt()) / rms)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n-atoms", type=int, default=60000)
    p.add_argument("--naive-atoms", type=int, default=2000)
    p.add_argument("--dim", type=int, default=784)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--chunk", type=int, default=4096)
    p.add_argument("--device", default="cpu")
    p.add_argument("--task", choices=["score", "gmm", "mnist", "storage", "cuda", "ratios"], default="score")
    p.add_argument("--threads", type=int, default=None,
                   help="intra-op threads for gmm, mnist, storage (default 1); for ratios the 'all "
                        "threads' count (default: torch's)")
    p.add_argument("--rounds", type=int, default=2, help="alternations of the timed codes (best of)")
    p.add_argument("--gmm-atoms", type=int, default=1024)
    p.add_argument("--gmm-particles", type=int, default=4096)
    p.add_argument("--gmm-steps", type=int, default=50, help="fsdiag steps per round (ratio is per step)")
    p.add_argument("--paper-steps", type=int, default=3, help="paper-way steps per round")
    p.add_argument("--mnist-steps", type=int, default=5, help="steps beyond the first, per round")
    p.add_argument("--ratio-steps", type=int, default=8, help="ratios task: fsdiag.sample steps at MNIST size")
    p.add_argument("--ratio-1d-steps", type=int, default=10, help="ratios task: steps of both d = 1 samplers")
    p.add_argument("--ratio-1d-atoms", type=int, default=4096, help="ratios task: atoms at d = 1")
    p.add_argument("--ratio-1d-particles", type=int, default=4096, help="ratios task: particles at d = 1")
    p.add_argument("--record", type=int, default=0,
                   help="recorded times in the mnist task (0: the final time only; a recorded step also "
                        "computes the prior mean, 1.5x the work of a step that is not)")
    p.add_argument("--cuda-budget-s", type=float, default=150,
                   help="cuda task: skip the remaining problems once this many seconds have passed")
    p.add_argument("--dry-run", action="store_true", help="cuda task: run its code on the CPU at tiny sizes")
    p.add_argument("--worker", choices=["streamed", "naive"], help=argparse.SUPPRESS)
    p.add_argument("--matmul-peak", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--json", help="also write the results to this file")
    args = p.parse_args(argv)
    args.threads_given = args.threads is not None
    if args.threads is None:
        args.threads = torch.get_num_threads() if args.task == "ratios" else 1
    if args.task != "score":
        return _task(args)
    if args.worker:
        print(json.dumps(worker(args.worker, args.n_atoms, args.dim, args.batch, args.repeats, args.device, args.chunk,
                                args.matmul_peak)))
        return 0
    print(f"FSR likelihood score, batch {args.batch}, d {args.dim}, float32, {args.device}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    small = run_worker(args, "streamed", args.naive_atoms, args.repeats)
    naive = run_worker(args, "naive", args.naive_atoms, max(2, args.repeats // 2))
    big = run_worker(args, "streamed", args.n_atoms, args.repeats, matmul_peak=True)
    naive_big = naive["seconds"] * args.n_atoms / args.naive_atoms
    rows = {
        "matmul_peak_gflops": big["matmul_gflops"],
        f"naive_N{args.naive_atoms}_s": naive["seconds"], f"naive_N{args.naive_atoms}_peak_mib": naive["peak_extra_mib"],
        f"streamed_N{args.naive_atoms}_s": small["seconds"],
        f"speedup_N{args.naive_atoms}": naive["seconds"] / small["seconds"],
        f"streamed_N{args.n_atoms}_s": big["seconds"], f"streamed_N{args.n_atoms}_gflops": big["gflops"],
        "fraction_of_matmul_peak": big["gflops"] / big["matmul_gflops"],
        f"streamed_N{args.n_atoms}_peak_mib": big["peak_extra_mib"],
        f"naive_N{args.n_atoms}_extrapolated_s": naive_big,
        f"speedup_N{args.n_atoms}_vs_extrapolated_naive": naive_big / big["seconds"],
        f"naive_N{args.n_atoms}_difference_tensor_gib": args.batch * args.n_atoms * args.dim * 4 / 2 ** 30,
    }
    width = max(map(len, rows))
    for k, v in rows.items():
        print(f"  {k:<{width}}  {v:10.3f}")
    ok = (rows[f"speedup_N{args.naive_atoms}"] >= 10, rows["fraction_of_matmul_peak"] >= 0.5,
          rows[f"streamed_N{args.n_atoms}_peak_mib"] < 1024)
    print(f"targets: >=10x vs naive: {ok[0]}; >=50% of matmul peak: {ok[1]}; peak memory < 1 GiB: {ok[2]}")
    if args.json:   # written to a temporary name, then moved into place
        tmp = f"{args.json}.tmp"
        with open(tmp, "w") as f:
            json.dump(rows, f, indent=2)
        os.replace(tmp, args.json)
    return 0


def _task(args) -> int:
    fn = {"gmm": gmm_worker, "mnist": mnist_worker, "storage": storage_worker, "cuda": cuda_worker,
          "ratios": ratios_worker}[args.task]
    print(f"task {args.task}, torch {torch.__version__}, {args.threads} thread(s)")
    rows = fn(args)
    if args.task == "cuda" and not rows:
        print(f"no CUDA device (torch {torch.__version__}, built for CUDA {torch.version.cuda}): "
              "the cuda task needs one; nothing was measured")
        return 0
    width = max(map(len, rows))
    for k, v in rows.items():
        print(f"  {k:<{width}}  {v:10.4g}")
    if args.task == "gmm":
        print(f"target: >= 50x the paper code's way per step: {rows['speedup_per_step'] >= 50}")
    if args.task == "ratios":
        t = rows["threads"]
        print(f"MNIST size, fsdiag.sample: {rows['mnist_1thr_share_of_matmul4096']:.1%} of a 4096^2 matmul at 1 "
              f"thread, {rows[f'mnist_{t}thr_share_of_matmul4096']:.1%} at {t} threads "
              f"(target >= 75% at {t}: {rows[f'mnist_{t}thr_share_of_matmul4096'] >= 0.75})")
        print(f"d = 1: fsdiag.sample {rows['d1_speedup_vs_replica']:.1f}x the difference-tensor replica "
              f"(target >= 20x: {rows['d1_speedup_vs_replica'] >= 20}); one exp per pair and nothing "
              f"else would be {rows['d1_exp_floor_speedup_vs_replica']:.1f}x")
    if args.task == "mnist":
        print(f"peak RSS beyond the atoms ({rows['atoms_mib']:.0f} MiB) and the trajectory: fsdiag.sample "
              f"{rows['peak_extra_mib']:.1f} MiB, EmpiricalPrior(...) {rows['prior_init_peak_extra_mib']:.1f} MiB")
        print(f"targets: >= 70% of the matmul peak: {rows['fraction_of_matmul_peak'] >= 0.7}; "
              f"extra memory < 64 MiB: {max(rows['peak_extra_mib'], rows['prior_init_peak_extra_mib']) < 64}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
