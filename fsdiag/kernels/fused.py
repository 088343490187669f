"""Fused attention kernels for the FSR's Tweedie-mean reduction, one per device type, the fused
pass that runs them (`flash_pass`) and the one-time self-check that decides whether the route
"auto" may use one.
"""
from __future__ import annotations

import math
import threading
import warnings
from typing import NamedTuple

import torch

from .._threads import run_ordered, threads_for
from .store import MIN_CHUNK, AtomStore
from .streamed import softmax_pass

# Atoms per fused call: the scratch keys (chunk x (d + 2)) stay ~13 MB at d = 784 (float32).
ATOMS_PER_CALL = 4096

# The fused route (flash_pass) runs an attention kernel that returns its
# per-query log-sum-exp, so chunks (and shards) merge exactly. One kernel per device type:
#
# cpu:  aten::_scaled_dot_product_flash_attention_for_cpu(query, key, value, dropout_p=0.,
#       is_causal=False, *, attn_mask=None, scale=None) -> (output, logsumexp); float32 and
#       float64; the value width must equal the query width (else a slower path), so V = K.
#       Measured on this CPU: 91% of the matmul peak at MNIST size, and the fastest route at d = 1.
# cuda: aten::_scaled_dot_product_efficient_attention(query, key, value, attn_bias?,
#       bool compute_log_sumexp, dropout_p=0., is_causal=False, *, scale=None)
#       -> (output, log_sumexp, philox_seed, philox_offset)   (native_functions.yaml; the schema
#       is printed by torch.ops.aten._scaled_dot_product_efficient_attention.default._schema).
#       Facts from pytorch's sources (not run here: no GPU in the session that wrote this):
#       - aten/src/ATen/native/transformers/cuda/attention.cu, _efficient_attention_forward:
#         logsumexp = at::empty({B, num_heads, ceil_div(max_seqlen_q, kAlignLSE) * kAlignLSE},
#         float32): the LSE is float32 and padded along the queries to a multiple of 32
#         (kAlignLSE), hence flash_pass's slice [..., :M]; natural log, the scale included
#         (mem_eff_attention/kernel_forward.h stores mi / log2(e) + log(s_prime)).
#       - _scaled_dot_product_efficient_attention_cuda takes (B, H, M, K), transposes to
#         (B, M, H, K) for the kernel and the output back to (B, H, M, Kv).
#       - aten/src/ATen/native/transformers/cuda/sdp_utils.cpp, check_head_dim_size_mem_efficient:
#         q/k/v last dims divisible by minimum_gemm_alignment (4 for float32 on sm80+, 8 for
#         16-bit types): the key width d + 1 (+ 1) is padded with zero columns to a multiple of
#         8 (zero columns in q and k add nothing to the logits; their outputs are dropped).
#         Head dims above 128 run the kernels without kSingleValueIteration (any K up to 65536).
#       - dtypes float32 / float16 / bfloat16 (bfloat16 from sm80). Only float32 is used: the
#         logits a x.x_i / b^2 + bias_i are differences of terms up to ~1e6 at small b, which a
#         16-bit query would round to nonsense; 16-bit atom storage is widened per chunk to
#         float32 before the kernel, as in every route. float64 has no fused CUDA kernel.
#       - _scaled_dot_product_flash_attention (CUDA) takes float16 / bfloat16 only and head
#         dims <= 256 (check_head_dim_size_flash): not usable here, for the same reason.
# Nobody has run the CUDA kernel through this code yet, so "auto" uses a kernel only after a
# one-time self-check per (device, dtype, key width) against torch ops (self_check).


def _flash_cpu(q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    out, lse = FLASH_CPU(q, k, k, scale=1.0)[:2]
    return out, lse


def _efficient_cuda(q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    out, lse = torch.ops.aten._scaled_dot_product_efficient_attention(q, k, k, None, True, scale=1.0)[:2]
    return out, lse


def cuda_splits(rows: int, n: int, device: torch.device) -> int:
    """Key splits per CUDA call (split-KV): the kernel parallelises over batch x heads x blocks of
    (up to 64) queries and walks the keys inside a block, so one call with 256 queries would keep
    4 of an H200's 132 SMs busy. The chunk's keys are split into S batch entries (the queries
    repeated), ~2 thread blocks per SM, each split >= 256 keys; the splits merge by their LSE."""
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    return max(1, min(n // 256, -(-2 * sms // -(-rows // 64))))


class Kernel(NamedTuple):
    """A fused attention kernel for one device type. call(q (S, 1, M, W), k (S, 1, n, W)) returns
    (softmax(q k^T) k of shape (S, 1, M, W), its natural-log log-sum-exp (S, 1, >= M)), V = K."""

    call: object
    align: int                  # the key width is padded with zero columns to a multiple of this
    dtypes: tuple               # compute dtypes the kernel takes ("auto" skips others silently)
    max_width: int | None       # "auto" uses it up to this padded key width (None: any width)
    splits: object = None       # (rows M, keys n, device) -> S key splits per call (None: 1)
    atoms_per_call: int = ATOMS_PER_CALL


FLASH_CPU = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
# CUDA: "auto" only up to a padded key width of 128, where the kernel keeps a query's whole
# output row on chip (kSingleValueIteration) and the torch-ops route is bound by memory traffic:
# a dozen elementwise passes (logits, max, exp, sums) over each B x chunk block in global memory
# against one fused pass. Wider keys (images) make both routes compute-bound matmuls, where
# cuBLAS is the safe default until `python benchmarks/bench_fsr.py --task cuda` shows otherwise.
CUDA_MAX_WIDTH = 128
KERNELS: dict[str, Kernel] = {}
if FLASH_CPU is not None:
    KERNELS["cpu"] = Kernel(_flash_cpu, 1, (torch.float32, torch.float64), None)
if hasattr(torch.ops.aten, "_scaled_dot_product_efficient_attention"):
    # 16384 atoms per call on a GPU: keys ~52 MB at d = 784 (float32), room for 64 splits.
    KERNELS["cuda"] = Kernel(_efficient_cuda, 8, (torch.float32,), CUDA_MAX_WIDTH, cuda_splits, 16384)
# Self-check outcomes: (device, dtype, key width, kernel) -> None (passed) or why it failed.
CHECKED: dict[tuple, str | None] = {}
LOCK = threading.Lock()


def ll_column(ll: torch.Tensor | None, heads: tuple[bool, ...]) -> bool:
    """Whether the fused pass's keys carry l_i in a column of their own: only when some head
    leaves the likelihood out (h = 0 there). When every head is conditional (the posterior score's
    one head), l_i is added to the bias column: keys [x^(i) - c, bias_i + l_i], one column
    narrower (at d = 1 the key width is 2, not 3)."""
    return ll is not None and not all(heads)


def width(d: int, has_ll: bool, align: int) -> int:
    """Key width [x - c, bias, (l)] padded with zero columns to a multiple of `align`."""
    w = d + 1 + has_ll
    return -(-w // align) * align


def self_check(device: torch.device, dtype: torch.dtype, d: int, has_ll: bool) -> str | None:
    """Run the fused kernel and torch ops on a small random problem on `device` (both heads);
    None if they agree, else why not."""
    try:
        with threads_for(0):         # one CPU thread: a tiny problem (2 threads spin on a busy machine)
            return _compare(device, dtype, d, has_ll)
    except Exception as err:         # any failure of an untested kernel means: do not use it
        return f"it raised {type(err).__name__}: {first_line(err)}"


def first_line(err: BaseException) -> str:
    """The first line of an exception's message ("" if it has none)."""
    return str(err).splitlines()[0] if str(err) else ""


def _compare(device: torch.device, dtype: torch.dtype, d: int, has_ll: bool) -> str | None:
    g = torch.Generator().manual_seed(0)
    # atoms ~ 1 + N(0, 4/d): distances O(1) at any d, so at abar = 0.05 the responsibilities
    # spread over most atoms (a wrong weighted sum shows) and at 0.64 over ~2 for d >= 128
    # (sharp); the offset checks the centring. 1101 atoms in chunks of 512: merges, and on a GPU
    # 2 key splits per call with a dead key padding the last chunk.
    # (made in the kernels' dtype, in place: ~4.4 kB per dimension, 3.4 MB at d = 784)
    atoms = torch.randn(1101, d, generator=g, dtype=dtype).mul_(2.0 / math.sqrt(d)).add_(1.0)
    u = (atoms.sum(1, dtype=torch.float64) - d) / (2.0 * math.sqrt(d))   # ~ N(0, 1) per atom
    ll = -(u - 0.5) ** 2 if has_ll else None
    heads = (False, True) if has_ll else (False,)
    x = 0.8 * atoms[:16] + (0.6 / math.sqrt(d)) * torch.randn(16, d, generator=g, dtype=dtype)
    atoms, x = atoms.to(device), x.to(device)
    log_w = torch.full((atoms.shape[0],), -math.log(atoms.shape[0]), dtype=dtype, device=device)
    tiny = AtomStore(atoms, log_w, log_w.to(torch.float64), dtype=dtype, chunk_size=512)
    # float32: the two routes agree to ~1e-6 here (the CPU kernel); a kernel 0.5% off in its
    # weighted sums, or one that applies its default scale 1/sqrt(W), fails.
    tol = 1e-4 if dtype != torch.float64 else 1e-10
    for abar in (0.64, 0.05):
        a, b2 = math.sqrt(abar), 1.0 - abar
        lli = None if ll is None else tiny.shifted_log_lik(ll.to(device))[0]
        xq = x - a * tiny.center
        lf, mf = flash_pass(tiny, xq, a, b2, lli, heads)
        lt, mt = softmax_pass(tiny, xq, a, b2, lli, heads)
        if lf.shape != lt.shape or mf.shape != mt.shape:
            return (f"it returned shapes {tuple(lf.shape)}, {tuple(mf.shape)}; expected "
                    f"{tuple(lt.shape)}, {tuple(mt.shape)}")
        err = max(float((lf - lt).abs().max()) / (1 + float(lt.abs().max())),
                  float((mf - mt).norm() / mt.norm().clamp_min(torch.finfo(dtype).tiny)))
        if not err <= tol:           # (NaN fails too)
            return f"it disagrees with torch ops by {err:.3g} (relative; tolerance {tol:g})"
    return None


def usable(device: torch.device, dtype: torch.dtype, d: int, has_ll: bool) -> bool:
    """Whether "auto" may use the fused kernel here: one self-check per (device, dtype, key
    width, kernel), cached; a failure warns once and falls back to torch ops for good."""
    op = KERNELS.get(device.type)
    if op is None or dtype not in op.dtypes:
        return False
    k = _key(device, dtype, d, has_ll, op)
    with LOCK:
        if k not in CHECKED:
            CHECKED[k] = self_check(device, dtype, d, has_ll)
            if CHECKED[k] is not None:
                warn(k, CHECKED[k])
    return CHECKED[k] is None


def disable(device: torch.device, dtype: torch.dtype, d: int, has_ll: bool, why: str) -> None:
    """Record that the kernel failed here after its self-check (`why`): "auto" uses torch ops there
    from now on; warns once."""
    k = _key(device, dtype, d, has_ll, KERNELS[device.type])
    with LOCK:
        CHECKED[k] = why
    warn(k, why)


def _key(device: torch.device, dtype: torch.dtype, d: int, has_ll: bool, op: Kernel) -> tuple:
    """CHECKED's key: (device, dtype, padded key width, kernel)."""
    return (str(device), dtype, width(d, has_ll, op.align), op)


def warn(key: tuple, why: str) -> None:
    warnings.warn(f"fsdiag: the fused attention route on {key[0]} ({key[1]}, key width {key[2]}) "
                  f"is not used: {why}; the kernels use torch ops there (same results, slower)",
                  RuntimeWarning, stacklevel=4)


def key_threads(store, rows: int, n_atoms: int) -> int:
    """Threads that split a fused CPU pass's chunks of atoms (keys) between them: torch's intra-op
    thread count (1 inside `threads_for` on small work), at most one per chunk of MIN_CHUNK atoms.
    The CPU kernel parallelises over batch x heads x blocks of 64-256 queries only, and between
    its calls the keys are built (a copy of each chunk) and merged by ops too small to split:
    at MNIST size (256 queries, 60000 x 784) two intra-op threads reached ~65% of the matmul's rate
    against ~85% for one. Off the CPU (a GPU kernel splits keys by itself: Kernel.splits): 1."""
    if store.device.type != "cpu" or KERNELS.get("cpu") is None or KERNELS["cpu"].splits is not None:
        return 1
    return max(1, min(torch.get_num_threads(), n_atoms // MIN_CHUNK))


def flash_pass(store, xq: torch.Tensor, a: float, b2: float, ll: torch.Tensor | None,
               heads: tuple[bool, ...], *, threads: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The fused route: an attention kernel (one pass over each block: logits, running max,
    exp, sum and the weighted sum of values, on chip) on queries Q = [xq a/b^2, 1, h, 0...]
    and keys = values = [x^(i) - c, bias_i, l_i, 0...] (the bias folded into extra key
    columns; h = 1 adds the log-likelihood; zero columns pad the width to the kernel's
    alignment; when every head is conditional, keys [x^(i) - c, bias_i + l_i, 0...]:
    ll_column). 16-bit atoms are widened into the float32 keys. Chunks of atoms are merged
    exactly from each call's log-sum-exp, in the order of the atoms. On the CPU with several
    intra-op threads (`threads`: default `key_threads`) the chunks are split between that many
    Python threads, each running its chunks' key building and kernel calls at one intra-op
    thread (`fsdiag._threads.run_ordered`); the chunks are then made a multiple of the thread
    count, of equal sizes (at MNIST size 16 chunks of 3750 atoms for 2 threads, not 14 of 4096 and
    one of 2656: no thread idles through the last chunk). The merge order, and so the numbers,
    are those of one thread with the same chunks (float rounding from one thread's chunks).
    Returns log_norm (H, B) and centred means (H, B, d)."""
    op = KERNELS.get(store.device.type)
    if op is None:
        raise ValueError(f"route: no fused attention kernel for device {store.device} in this torch "
                         f"({torch.__version__}); use route='torch' or 'auto'")
    B, d = xq.shape
    H = len(heads)
    col = ll_column(ll, heads)               # else l_i, if any, is folded into the bias column
    used = d + 1 + col
    w = width(d, col, op.align)
    lo = -torch.finfo(store.dtype).max / 8    # finite: a chunk of zero-weight atoms must not give -inf - -inf
    q = xq.new_zeros(H * B, w)
    for h, cond in enumerate(heads):
        rows = q[h * B:(h + 1) * B]
        torch.mul(xq, a / b2, out=rows[:, :d])
        rows[:, d] = 1.0
        if col:
            rows[:, d + 1] = float(cond)
    n_atoms = store.n_atoms
    T = key_threads(store, H * B, n_atoms) if threads is None else max(1, int(threads))
    size = max(MIN_CHUNK, min(store.chunk_size, op.atoms_per_call))
    if T > 1:                                # a multiple of T chunks of equal size (+-1 atom)
        n_chunks = -(-max(1, -(-n_atoms // size)) // T) * T
        size = max(MIN_CHUNK, -(-n_atoms // n_chunks))
    n0 = min(size, n_atoms)
    S = 1 if op.splits is None else max(1, min(n0, int(op.splits(H * B, n0, store.device))))
    q4 = q[None, None] if S == 1 else q[None, None].expand(S, 1, H * B, w).contiguous()
    starts = range(0, n_atoms, size)
    zeroed = set()                           # threads whose scratch keys have their pad columns zeroed

    def chunk(j: int):
        s = starts[j]
        sl = slice(s, min(s + size, n_atoms))
        n = sl.stop - s
        per = -(-n // S)                     # keys per split; S * per - n dead keys pad the last
        keys = store.scratch(S * -(-n0 // S) * w).view(-1, w)     # this thread's buffer
        if w > used and threading.get_ident() not in zeroed:
            keys[:, used:] = 0.0             # the buffer is shared with other widths
            zeroed.add(threading.get_ident())
        k = keys[:S * per]
        store.centred(sl, out=k[:n, :d])
        if ll is not None and not col:       # every head conditional: bias_i + l_i in one column
            torch.add(store.bias(sl, a, b2), ll[sl], out=k[:n, d]).clamp_(min=lo)
        else:
            torch.clamp(store.bias(sl, a, b2), min=lo, out=k[:n, d])
        if col:
            torch.clamp(ll[sl], min=lo, out=k[:n, d + 1])
        if S * per > n:                      # dead keys: logit ~ lo, weight exactly 0
            k[n:, :used] = 0.0
            k[n:, d] = lo
        out, lse = op.call(q4, k.view(S, 1, per, w))
        # (the CUDA kernel pads its LSE along the queries to a multiple of 32)
        out, lse = out[:, 0, :, :d], lse[:, 0, :H * B].to(store.dtype)
        if S == 1:
            return out[0], lse[0]
        top = lse.amax(0)                    # merge the splits by their log-sum-exps
        ew = torch.exp(lse - top)
        total = ew.sum(0)
        return (ew.unsqueeze(-1) * out).sum(0) / total.unsqueeze(-1), top + torch.log(total)

    run = {}

    def merge(j: int, result) -> None:
        out, lse = result
        if not run:
            run["lse"], run["acc"] = lse, out.clone()
            return
        new = torch.logaddexp(run["lse"], lse)
        run["acc"].mul_(torch.exp(run["lse"] - new).unsqueeze(1)).add_(out * torch.exp(lse - new).unsqueeze(1))
        run["lse"] = new

    run_ordered(len(starts), chunk, merge, T)
    return run["lse"].reshape(H, B), run["acc"].reshape(H, B, d)
