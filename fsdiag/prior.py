"""The finite-sample prior: the empirical measure of N atoms, diffused exactly.

Every quantity is a softmax-weighted reduction over the atoms (DESIGN §2),
computed like attention: log space, a per-query log-sum-exp, streamed over
chunks of atoms so memory is O(batch x chunk), never O(batch x N x d).
Kernels take abar (the schedule's alpha_bar at the query time); a = sqrt(abar),
b^2 = 1 - abar.
"""
from __future__ import annotations

import math
import threading
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from . import fused
from ._threads import threads_for
from ._checks import as_tensor, check_generator, check_int, check_real, resolve_device
from .nearest import Nearest, nearest

__all__ = ["EmpiricalPrior", "Moments"]


class Moments(NamedTuple):
    """One streamed pass. log_norm: log sum_i pi_i exp(-||x - a x_i||^2 / 2b^2 + ||x - a c||^2 / 2b^2)
    (c the atom mean; a per-query constant is dropped); mean: the Tweedie mean E[x_0 | x_t].
    The `_cond` fields carry the same with the per-atom log-likelihood added (None without one)."""

    log_norm: torch.Tensor
    mean: torch.Tensor
    log_norm_cond: torch.Tensor | None = None
    mean_cond: torch.Tensor | None = None


def _exp_floor(dtype: torch.dtype) -> float:
    # torch.exp on CPU is ~15x slower for underflowing arguments; clamp first (DESIGN §7).
    return -80.0 if dtype in (torch.float32, torch.float16, torch.bfloat16) else -700.0


# Streaming block: ~1M (query, atom) pairs (4-8 MB) per chunk. Larger blocks spill out of
# cache and, above the allocator's mmap threshold, pay page faults on every chunk:
# at batch 4000, d = 2 this is ~4x faster than fixed 4096-atom chunks.
_BLOCK = 1 << 20
_MIN_CHUNK = 64
# One-off passes over all atoms (construction; log p(y | x^(i)) for every atom) walk blocks of
# ~1 MiB. Blocks of 4096 x 784 float32 (12.8 MB), or their float64 copies, freed and allocated
# again per block, raise glibc's mmap threshold and then grow its heap: at MNIST size the
# constructor peaked 39 MiB and the per-atom log-likelihoods (2048-atom float64 blocks) 177 MiB
# of RSS above the atoms. Small blocks bound what can pile up; speed is unchanged (O(N d) work).
_ONE_OFF_BYTES = 1 << 20
_FLASH_MIN_ATOMS = 128
_ROUTES = ("auto", "flash", "torch")
_STORAGE_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _shifted_exp(logits: torch.Tensor, shift: torch.Tensor, floor: float) -> torch.Tensor:
    """exp(logits - shift), with terms below exp(floor) set to exactly 0; in place unless
    autograd is recording through it. Clamping first keeps exp on its fast path; zeroing
    the floor keeps the next matmul free of subnormal products (2x slower on CPU)."""
    cut = 2.0 * math.exp(floor)
    if logits.requires_grad:
        return F.threshold(torch.exp((logits - shift).clamp_min(floor)), cut, 0.0)
    return F.threshold_(logits.sub_(shift).clamp_(min=floor).exp_(), cut, 0.0)


def _with_likelihood(logits: torch.Tensor, ll: torch.Tensor) -> torch.Tensor:
    """Stack (logits, logits + ll) as two heads (torch.stack is ~5x slower on CPU here)."""
    if logits.requires_grad:
        return torch.stack([logits, logits + ll])
    out = logits.new_empty((2, *logits.shape))
    out[0].copy_(logits)
    torch.add(logits, ll, out=out[1])
    return out


def _start_max(heads: int, rows: int, dtype, device) -> torch.Tensor:
    """Initial running max of a streamed log-sum-exp: a finite floor, not -inf, so that a
    chunk whose atoms all have zero prior weight (logits -inf) never computes -inf - (-inf)."""
    return torch.full((heads, rows), torch.finfo(dtype).min, dtype=dtype, device=device)


def _functorch_wrapped(t: torch.Tensor) -> bool:
    """Whether `t` is wrapped by a torch.func transform (vmap, grad, jvp): no out= writes then."""
    return bool(torch._C._functorch.is_functorch_wrapped_tensor(t))


def check_result(name: str, *tensors: torch.Tensor) -> None:
    """O(batch) check after a kernel: finite inputs can still overflow the dtype (e.g. float32
    queries ~1e19 from the atoms); say so rather than return NaN."""
    for t in tensors:
        if t is not None and not bool(torch.isfinite(t).all()):
            raise FloatingPointError(f"{name}: the kernel overflowed {t.dtype} for these queries "
                                     "(x far from the atoms, or b^2 = 1 - abar tiny); use float64 "
                                     "atoms or rescale the data")


def check_abar(abar) -> tuple[float, float, float]:
    abar = check_real(abar, "abar")
    if not (0.0 < abar < 1.0):
        raise ValueError(f"abar: expected alpha_bar in (0, 1), got {abar}")
    return abar, math.sqrt(abar), 1.0 - abar


class EmpiricalPrior:
    """Empirical prior sum_i pi_i delta(x - x^(i)) over atoms (N, d).

    weights: optional (N,) non-negative prior weights (normalised here);
    labels: optional (N,) integer mode labels (mixture component, class, ...);
    dtype: the kernels' dtype (float32 or float64; default the atoms' own);
    storage_dtype: keep the atoms in this dtype instead (float16 / bfloat16 halve the memory;
    every chunk is widened to `dtype`, default float32, before it is used, so all sums
    accumulate in float32 or better; the error is that of rounding the atoms themselves:
    `python benchmarks/bench_fsr.py --task storage` measures it against float64);
    center: the point the kernels centre the atoms at (default their mean; a sharded prior
    passes the mean over all shards so that every shard's log-normaliser drops the same term);
    route: how the Tweedie-mean kernels run: "auto" (default: a fused attention kernel where one
    exists, is expected to be faster and passed its self-check, else torch ops), "flash" (the
    fused kernel, forced) or "torch" (torch ops); the attribute `route` may be set later.
    """

    def __init__(self, atoms, weights=None, labels=None, *, device="auto", dtype=None,
                 chunk_size: int | None = None, storage_dtype=None, center=None, route: str = "auto"):
        if route not in _ROUTES:
            raise ValueError(f"route: expected one of {_ROUTES}, got {route!r}")
        self.route = route
        dev = resolve_device(device)
        if dtype is not None and dtype not in (torch.float32, torch.float64):
            raise ValueError(f"dtype: expected torch.float32 or torch.float64, got {dtype}")
        if storage_dtype is not None and storage_dtype not in _STORAGE_DTYPES:
            raise ValueError(f"storage_dtype: expected one of {list(_STORAGE_DTYPES)}, got {storage_dtype!r}")
        # finiteness is checked below in chunks (torch.isfinite on all atoms at once holds ~1.7x
        # the atoms in temporaries)
        atoms = as_tensor(atoms, "atoms", ndim=2, dtype=dtype if storage_dtype is None else None,
                          device=dev, finite=False)
        if storage_dtype is not None:
            compute = dtype or (storage_dtype if storage_dtype in (torch.float32, torch.float64)
                                else torch.float32)
            atoms = atoms.to(storage_dtype)
        elif atoms.dtype not in (torch.float32, torch.float64):
            atoms = atoms.to(torch.float32)
        if storage_dtype is None:
            compute = atoms.dtype
        n, _ = atoms.shape
        if n < 1 or atoms.shape[1] < 1:
            raise ValueError(f"atoms: expected shape (N, d) with N, d >= 1, got {tuple(atoms.shape)}")
        if weights is None:
            log_w = torch.full((n,), -math.log(n), dtype=compute, device=dev)
        else:
            w = as_tensor(weights, "weights", ndim=1, dtype=torch.float64, device=dev)
            if w.shape[0] != n:
                raise ValueError(f"weights: expected shape ({n},) to match atoms, got {tuple(w.shape)}")
            if bool((w < 0).any()) or not bool((w > 0).any()):
                raise ValueError("weights: expected non-negative weights with a positive sum")
            w0, shift = w, 0.0
            total = w.sum()
            if not bool(torch.isfinite(total)):   # weights near 1e308: the sum overflows
                shift = float(torch.log(w.max()))
                w = w / w.max()
                total = w.sum()
            log_w = torch.log(w / total)
            # A positive weight whose normalised value underflows (1e-300 beside 1e300: 1e-600) or
            # is subnormal keeps its logarithm, log w - log(sum w), instead of becoming -inf.
            lost = (w0 > 0) & (log_w < math.log(torch.finfo(torch.float64).tiny))
            if bool(lost.any()):
                log_w = torch.where(lost, torch.log(w0) - shift - torch.log(total), log_w)
        # float64 log-weights for the exact posterior over atoms, whatever the storage dtype.
        self._log_w64 = log_w.to(torch.float64)
        log_w = log_w.to(compute)
        if labels is not None:
            lab = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
            if lab.shape != (n,) or not np.issubdtype(lab.dtype, np.integer):
                raise ValueError(f"labels: expected an integer array of shape ({n},), got "
                                 f"{lab.dtype} array of shape {lab.shape}")
            if lab.dtype == np.uint64 and n and int(lab.max()) > np.iinfo(np.int64).max:
                # torch has no uint64 labels: casting would wrap them to negative numbers
                raise ValueError(f"labels: values up to {int(lab.max())} do not fit int64; "
                                 "relabel the modes 0..K-1 (np.unique(labels, return_inverse=True))")
            labels = torch.as_tensor(lab, dtype=torch.long, device=dev)
        # One copy of the atoms in memory (issue 11): the kernels centre each streamed chunk on
        # the fly (one subtraction per atom entry, ~1/(4B) of a chunk's flops), so no centred
        # copy is stored and `atoms` stays exactly the caller's values.
        self.atoms = atoms
        self.labels = labels
        self.log_weights = log_w
        self.device = dev
        self.dtype = compute                     # the kernels' dtype
        self.storage_dtype = atoms.dtype
        self.chunk_size = check_int(chunk_size, "chunk_size") if chunk_size is not None else 4096
        # Centring is free and makes the ||x||^2 expansion 10-200x more accurate (DESIGN §7).
        bad = sum(int((~torch.isfinite(atoms[sl])).sum()) for sl in self._blocks(atoms.element_size()))
        if bad:
            raise ValueError(f"atoms: expected finite values, found {bad} NaN/Inf entries "
                             f"(or values too large for {atoms.dtype})")
        if center is not None:
            center = as_tensor(center, "center", ndim=1, dtype=compute, device=dev)
            if center.shape[0] != atoms.shape[1]:
                raise ValueError(f"center: expected shape ({atoms.shape[1]},), got {tuple(center.shape)}")
            self.center = center
        else:
            self.center = atoms.mean(0) if atoms.dtype == compute else atoms.mean(0, dtype=compute)
        self._sq = torch.empty(n, dtype=compute, device=dev)   # ||x^(i) - center||^2
        blocks = list(self._blocks(torch.finfo(compute).bits // 8))
        buf = torch.empty(blocks[0].stop, atoms.shape[1], dtype=compute, device=dev)  # one reused block
        for sl in blocks:
            xc = self._centred(sl, out=buf[:sl.stop - sl.start])
            torch.sum(xc.mul_(xc), 1, out=self._sq[sl])
        del buf
        if not bool(torch.isfinite(self._sq).all()):
            raise ValueError(f"atoms: squared distances overflow {self.dtype} (max |atom| = "
                             f"{float(atoms.abs().max()):.3g}); rescale the data or use float64")
        # the data's scale (max |atom|), for samplers' sanity checks; no |atoms| temporary
        self.scale = max(float(atoms.max()), -float(atoms.min()))

    # ------------------------------------------------------------------ basics
    @property
    def n_atoms(self) -> int:
        return self.atoms.shape[0]

    @property
    def dim(self) -> int:
        return self.atoms.shape[1]

    @property
    def weights(self) -> torch.Tensor:
        return self.log_weights.exp()

    def __repr__(self) -> str:
        return (f"EmpiricalPrior(N={self.n_atoms}, d={self.dim}, dtype={self.dtype}, "
                f"device={self.device}, labels={'yes' if self.labels is not None else 'no'})")

    def _query(self, x, name="x") -> torch.Tensor:
        x = as_tensor(x, name, ndim=2, dtype=self.dtype, device=self.device)
        if x.shape[1] != self.dim:
            raise ValueError(f"{name}: expected shape (batch, {self.dim}), got {tuple(x.shape)}")
        return x

    def _log_lik64(self, log_lik) -> torch.Tensor:
        ll = as_tensor(log_lik, "log_lik", ndim=1, dtype=torch.float64, device=self.device)
        if ll.shape[0] != self.n_atoms:
            raise ValueError(f"log_lik: expected shape ({self.n_atoms},), got {tuple(ll.shape)}")
        return ll

    def _log_lik(self, log_lik) -> tuple[torch.Tensor, float]:
        """(l - shift in the prior's dtype, shift), shift = max_i(log pi_i + l_i) in float64.
        Centring keeps float32 from losing the differences between l_i that the posterior
        depends on; the kernels add the shift back where it matters (log_norm_cond)."""
        ll = self._log_lik64(log_lik)
        shift = float((self._log_w64 + ll).max())
        # Zero-weight atoms may carry any l_i: cap so -inf + l stays -inf, never inf - inf.
        cap = torch.finfo(self.dtype).max / 4
        return (ll - shift).clamp(max=cap).to(self.dtype), shift

    def _chunks(self, rows: int):
        """Atom slices sized so one (rows x chunk) block stays near _BLOCK elements (in cache,
        small enough for the allocator to reuse), never above chunk_size atoms."""
        size = min(self.chunk_size, max(_MIN_CHUNK, _BLOCK // max(rows, 1)))
        for s in range(0, self.n_atoms, size):
            yield slice(s, min(s + size, self.n_atoms))

    def _blocks(self, itemsize: int):
        """Atom slices of ~_ONE_OFF_BYTES (at `itemsize` bytes per entry) for one-off passes; 64x
        that off the CPU (glibc's heap is a CPU matter: CUDA's caching allocator reuses blocks,
        and every block costs a few kernel launches: 10^6 x 1024 atoms would be ~8000 blocks)."""
        budget = _ONE_OFF_BYTES if self.device.type == "cpu" else 64 * _ONE_OFF_BYTES
        size = max(16, budget // (itemsize * self.dim))
        for s in range(0, self.n_atoms, size):
            yield slice(s, min(s + size, self.n_atoms))

    def log_likelihoods(self, lik) -> torch.Tensor:
        """(N,) float64 l_i = log p(y | x^(i)) for every atom: `lik.log_prob` on blocks of ~1 MiB
        of float64 atoms, written into one output (no float64 copy of the atoms, and temporaries
        small enough that the allocator's heap does not grow; see _ONE_OFF_BYTES)."""
        out = torch.empty(self.n_atoms, dtype=torch.float64, device=self.device)
        for sl in self._blocks(8):
            out[sl] = lik.log_prob(self.atoms[sl].to(torch.float64))
        return out

    def _scratch(self, numel: int, name: str = "keys") -> torch.Tensor:
        """A reused buffer `name` of at least `numel` elements (one per thread): the flash route's
        keys, the covariance pass's blocks. Allocating several MB per call and freeing it either
        grows glibc's heap (its mmap threshold rises with each freed block: RSS creeps far above the
        live memory) or, below that threshold, maps fresh pages every time (page faults made the
        covariance pass 2.5x slower on the 1-D chapters)."""
        store = self.__dict__.setdefault("_scratch_buffers", {})
        key = (threading.get_ident(), name)
        buf = store.get(key)
        if buf is None or buf.numel() < numel:
            buf = store[key] = torch.empty(numel, dtype=self.dtype, device=self.device)
        return buf[:numel]

    def _centred(self, sl: slice, out: torch.Tensor | None = None) -> torch.Tensor:
        """x^(i) - center for the atoms in `sl` (into `out`, a scratch buffer, when given)."""
        if out is None:
            return self.atoms[sl] - self.center
        return torch.sub(self.atoms[sl], self.center, out=out)

    def _bias(self, sl: slice, a: float, b2: float) -> torch.Tensor:
        return self.log_weights[sl] - (a * a / (2 * b2)) * self._sq[sl]

    def _logits(self, xq: torch.Tensor, sl: slice, a: float, b2: float, out=None) -> torch.Tensor:
        """log pi_i + (a / b^2) xq . (x^(i) - c) - (a^2 / 2b^2) ||x^(i) - c||^2 for the atoms in `sl`,
        xq = x_t - a c: log w_i(x_t) up to a per-query constant (into `out` when given)."""
        return torch.addmm(self._bias(sl, a, b2), xq, self._centred(sl).T, alpha=a / b2, out=out)

    def _reused(self, reuse: bool, name: str, shape: tuple) -> torch.Tensor | None:
        """The reused buffer `name` viewed as `shape`, for an out= argument; None (a fresh tensor)
        when not `reuse` (autograd and torch.func transforms cannot write into a plain buffer)."""
        return self._scratch(math.prod(shape), name).view(shape) if reuse else None

    def _use_flash(self, x: torch.Tensor, has_ll: bool = False) -> bool:
        """Route "auto": the fused kernel where one exists for this device and dtype, where it is
        expected to win (fused.Kernel.max_width; on the CPU at any width), and where its self-check
        passed. Not under autograd or a torch.func transform (its backward is slow and less
        accurate; forward AD has no rule for it), not for an empty
        batch (it crashes the CPU kernel), not below ~128 atoms (its fixed cost per call loses)."""
        op = fused.KERNELS.get(self.device.type)
        if (op is None or x.requires_grad or _functorch_wrapped(x) or x.shape[0] == 0
                or self.n_atoms < _FLASH_MIN_ATOMS or self.dtype not in op.dtypes):
            return False
        if op.max_width is not None and fused.width(self.dim, has_ll, op.align) > op.max_width:
            return False
        return fused.usable(self.device, self.dtype, self.dim, has_ll)

    def _flash_pass(self, xq: torch.Tensor, a: float, b2: float, ll: torch.Tensor | None,
                    heads: tuple[bool, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """The fused route: an attention kernel (one pass over each block: logits, running max,
        exp, sum and the weighted sum of values, on chip) on queries Q = [xq a/b^2, 1, h, 0...]
        and keys = values = [x^(i) - c, bias_i, l_i, 0...] (the bias folded into extra key
        columns; h = 1 adds the log-likelihood; zero columns pad the width to the kernel's
        alignment). 16-bit atoms are widened into the float32 keys. Chunks of atoms are merged
        exactly from each call's log-sum-exp. Returns log_norm (H, B) and centred means (H, B, d)."""
        op = fused.KERNELS.get(self.device.type)
        if op is None:
            raise ValueError(f"route: no fused attention kernel for device {self.device} in this torch "
                             f"({torch.__version__}); use route='torch' or 'auto'")
        B, d = xq.shape
        H = len(heads)
        used = d + 1 + (ll is not None)
        width = fused.width(d, ll is not None, op.align)
        lo = -torch.finfo(self.dtype).max / 8    # finite: a chunk of zero-weight atoms must not give -inf - -inf
        q = xq.new_zeros(H * B, width)
        for h, cond in enumerate(heads):
            rows = q[h * B:(h + 1) * B]
            torch.mul(xq, a / b2, out=rows[:, :d])
            rows[:, d] = 1.0
            if ll is not None:
                rows[:, d + 1] = float(cond)
        size = max(_MIN_CHUNK, min(self.chunk_size, op.atoms_per_call))
        n0 = min(size, self.n_atoms)
        S = 1 if op.splits is None else max(1, min(n0, int(op.splits(H * B, n0, self.device))))
        keys = self._scratch(S * -(-n0 // S) * width).view(-1, width)
        if width > used:
            keys[:, used:] = 0.0                 # the buffer is shared with other widths
        q4 = q[None, None] if S == 1 else q[None, None].expand(S, 1, H * B, width).contiguous()
        run_lse = acc = None
        for s in range(0, self.n_atoms, size):
            sl = slice(s, min(s + size, self.n_atoms))
            n = sl.stop - s
            per = -(-n // S)                     # keys per split; S * per - n dead keys pad the last
            k = keys[:S * per]
            self._centred(sl, out=k[:n, :d])
            torch.clamp(self._bias(sl, a, b2), min=lo, out=k[:n, d])
            if ll is not None:
                torch.clamp(ll[sl], min=lo, out=k[:n, d + 1])
            if S * per > n:                      # dead keys: logit ~ lo, weight exactly 0
                k[n:, :used] = 0.0
                k[n:, d] = lo
            out, lse = op.call(q4, k.view(S, 1, per, width))
            # (the CUDA kernel pads its LSE along the queries to a multiple of 32)
            out, lse = out[:, 0, :, :d], lse[:, 0, :H * B].to(self.dtype)
            if S == 1:
                out, lse = out[0], lse[0]
            else:                                # merge the splits by their log-sum-exps
                top = lse.amax(0)
                w = torch.exp(lse - top)
                total = w.sum(0)
                out = (w.unsqueeze(-1) * out).sum(0) / total.unsqueeze(-1)
                lse = top + torch.log(total)
            if run_lse is None:
                run_lse, acc = lse, out.clone()
            else:
                new = torch.logaddexp(run_lse, lse)
                acc.mul_(torch.exp(run_lse - new).unsqueeze(1)).add_(out * torch.exp(lse - new).unsqueeze(1))
                run_lse = new
        return run_lse.reshape(H, B), acc.reshape(H, B, d)

    def _torch_pass(self, xq: torch.Tensor, a: float, b2: float, ll: torch.Tensor | None,
                    heads: tuple[bool, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """The same reduction from torch ops (any device, autograd): streamed chunks with a running
        max and rescale-and-add (addmm into a running sum loses ~2e-4 in float32)."""
        B, d = xq.shape
        H = len(heads)
        floor = _exp_floor(self.dtype)
        run_max = _start_max(H, B, self.dtype, self.device)
        run_sum = torch.zeros(H, B, dtype=self.dtype, device=self.device)
        acc = torch.zeros(H, B, d, dtype=self.dtype, device=self.device)
        for sl in self._chunks(H * B):
            xc = self._centred(sl)
            bias = self._bias(sl, a, b2)
            if heads == (True,):
                bias = bias + ll[sl]
            logits = torch.addmm(bias, xq, xc.T, alpha=a / b2)
            lg = logits.unsqueeze(0) if H == 1 else _with_likelihood(logits, ll[sl])
            new_max = torch.maximum(run_max, lg.amax(-1))
            rescale = torch.exp((run_max - new_max).clamp_min(floor))
            p = _shifted_exp(lg, new_max.unsqueeze(-1), floor)
            run_sum = run_sum * rescale + p.sum(-1)
            acc = acc * rescale.unsqueeze(-1) + (p.reshape(H * B, p.shape[-1]) @ xc).reshape(H, B, d)
            run_max = new_max
        return run_max + torch.log(run_sum), acc / run_sum.unsqueeze(-1)

    def _reduce(self, x: torch.Tensor, abar, log_lik, heads: tuple[bool, ...], *, route: str = "auto"):
        """log_norm (H, B) and Tweedie means (H, B, d) for each head (True: with the likelihood),
        plus the likelihood's shift. route: "auto" (the prior's own `route`), "flash" or "torch"
        (tests compare them)."""
        if route == "auto":
            route = getattr(self, "route", "auto")      # (a subclass may skip __init__'s attribute)
        if route not in _ROUTES:
            raise ValueError(f"route: expected one of {_ROUTES}, got {route!r}")
        _, a, b2 = check_abar(abar)
        ll, shift = (None, 0.0) if log_lik is None else self._log_lik(log_lik)
        xq = x - a * self.center
        flash = self._use_flash(x, ll is not None) if route == "auto" else route == "flash"
        with threads_for(len(heads) * x.shape[0] * self.n_atoms * self.dim, self.device):
            log_norm = None
            if flash and route == "auto":
                try:
                    log_norm, mean = self._flash_pass(xq, a, b2, ll, heads)
                except RuntimeError as err:   # a kernel that passed its self-check fails here: fall back for good
                    fused.disable(self.device, self.dtype, self.dim, ll is not None,
                                   f"it raised {type(err).__name__} at batch {x.shape[0]}, {self.n_atoms} "
                                   f"atoms: {fused.first_line(err)}")
            elif flash:
                log_norm, mean = self._flash_pass(xq, a, b2, ll, heads)
            if log_norm is None:
                log_norm, mean = self._torch_pass(xq, a, b2, ll, heads)
        mean = mean + self.center
        check_result("x", log_norm, mean)
        return log_norm, mean, shift

    # --------------------------------------------------------------- pass one
    def moments(self, x, abar, log_lik=None) -> Moments:
        """Tweedie mean (and, given per-atom log p(y|x^(i)), the exact conditional one) in one pass.

        Raises FloatingPointError (as do the other kernels) if finite inputs overflow the dtype,
        e.g. float32 queries ~1e19 from the atoms."""
        x = self._query(x)
        if log_lik is None:
            log_norm, mean, _ = self._reduce(x, abar, None, (False,))
            return Moments(log_norm[0], mean[0])
        log_norm, mean, shift = self._reduce(x, abar, log_lik, (False, True))
        return Moments(log_norm[0], mean[0], log_norm[1] + shift, mean[1])

    def posterior_moments(self, x, abar, log_lik) -> Moments:
        """The conditional half of `moments` alone, in one head (half the work): log_norm is
        log_norm_cond and mean is E[x_0 | x_t, y]; the `_cond` fields are None. The exact
        posterior score needs nothing more: (a E[x_0 | x_t, y] - x_t) / b^2 (DESIGN §8)."""
        x = self._query(x)
        log_norm, mean, shift = self._reduce(x, abar, log_lik, (True,))
        return Moments(log_norm[0] + shift, mean[0])

    def posterior_score(self, x, abar, log_lik) -> torch.Tensor:
        """Exact grad log p_t(x_t | y) = prior score + likelihood score = (a E[x_0|x_t,y] - x_t) / b^2."""
        x = self._query(x)
        _, a, b2 = check_abar(abar)
        return (a * self.posterior_moments(x, abar, log_lik).mean - x) / b2

    def denoise(self, x, abar) -> torch.Tensor:
        """Tweedie mean m(x_t) = sum_i w_i(x_t) x^(i)."""
        return self.moments(x, abar).mean

    def score(self, x, abar) -> torch.Tensor:
        """Prior score grad log p_t(x_t) = (a m(x_t) - x_t) / b^2."""
        x = self._query(x)
        _, a, b2 = check_abar(abar)
        return (a * self.denoise(x, abar) - x) / b2

    def log_density(self, x, abar) -> torch.Tensor:
        """log p_t(x_t) = log sum_i pi_i N(x_t; a x^(i), b^2 I)."""
        x = self._query(x)
        _, a, b2 = check_abar(abar)
        log_norm = self.moments(x, abar).log_norm
        xq = x - a * self.center
        out = log_norm - (xq * xq).sum(1) / (2 * b2) - 0.5 * self.dim * math.log(2 * math.pi * b2)
        check_result("x", out)
        return out

    def responsibilities(self, x, abar, log_lik=None) -> torch.Tensor:
        """Dense (batch, N) responsibilities w_i(x_t) (or w~_i given log_lik): for small N only."""
        x = self._query(x)
        _, a, b2 = check_abar(abar)
        logits = self._logits(x - a * self.center, slice(None), a, b2)
        if log_lik is not None:
            logits = logits + self._log_lik(log_lik)[0]
        out = torch.softmax(logits, dim=1)
        check_result("x", out)
        return out

    # --------------------------------------------------------------- exact conditionals
    def posterior_denoise(self, x, abar, log_lik) -> torch.Tensor:
        """Exact E[x_0 | x_t, y] = sum_i w~_i(x_t, y) x^(i)."""
        return self.posterior_moments(x, abar, log_lik).mean

    def log_likelihood_t(self, x, abar, log_lik) -> torch.Tensor:
        """Exact log p(y | x_t) = logsumexp_i(log w_i(x_t) + l_i)."""
        mo = self.moments(x, abar, log_lik)
        return mo.log_norm_cond - mo.log_norm

    def likelihood_score(self, x, abar, log_lik) -> torch.Tensor:
        """Exact grad log p(y | x_t) = (a / b^2)(E_w~[x_0] - E_w[x_0])."""
        _, a, b2 = check_abar(abar)
        mo = self.moments(x, abar, log_lik)
        return (a / b2) * (mo.mean_cond - mo.mean)

    # --------------------------------------------------------------- pass two
    def cov_matvec(self, x, abar, v, *, moments: Moments | None = None) -> torch.Tensor:
        """Denoiser covariance times vectors, C(x_t) v = sum_i w_i (x^(i) - m)((x^(i) - m) . v).

        v: (batch, d) or (batch, k, d). `moments` from an earlier pass on the same x
        saves one pass. Centred at m per query, so no large terms cancel.
        """
        x = self._query(x)
        _, a, b2 = check_abar(abar)
        v = as_tensor(v, "v", ndim=(2, 3), dtype=self.dtype, device=self.device)
        squeeze = v.ndim == 2
        if squeeze:
            v = v.unsqueeze(1)
        B, d = x.shape
        if v.shape[0] != B or v.shape[2] != d:
            raise ValueError(f"v: expected shape ({B}, {d}) or ({B}, k, {d}), got {tuple(v.shape)}")
        mo = self.moments(x, abar) if moments is None else moments
        out = self._cov_pass(x, a, b2, v, mo.mean)[1]
        check_result("v", out)
        return out[:, 0] if squeeze else out

    def _cov_pass(self, x: torch.Tensor, a: float, b2: float, v: torch.Tensor,
                  mean: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One streamed pass for C v centred at `mean` (B, d): returns this pass's own log-normaliser
        (B,) and sum_i w_i (x^(i) - mean)((x^(i) - mean) . v) (B, k, d), the w_i normalised over
        these atoms (a sharded prior combines shards' results with the log-normalisers)."""
        B, d = x.shape
        k = v.shape[1]
        mc = mean - self.center                                      # (B, d) centred mean
        mv = (mc.unsqueeze(1) * v).sum(-1)                           # (B, k)
        xq = x - a * self.center
        floor = _exp_floor(self.dtype)
        lhs = torch.cat([xq * (a / b2), v.reshape(B * k, d)])        # one matmul for logits and x_i . v
        acc = torch.zeros(B, k, d, dtype=self.dtype, device=self.device)
        wsum = torch.zeros(B, k, dtype=self.dtype, device=self.device)
        run_max = _start_max(1, B, self.dtype, self.device)[0]
        run_sum = torch.zeros(B, dtype=self.dtype, device=self.device)
        # The weights are normalised within this pass (its own running max and sum), not by the
        # moments pass's log_norm: the two round the logits differently, and in float32 at small b
        # near a tie between atoms exp(logits - log_norm) then overshoots by orders of magnitude.
        # k vectors per query multiply the block: _chunks shrinks the chunk to keep memory flat.
        # Plain tensors use reused buffers; autograd and torch.func transforms (the denoiser's
        # derivatives) get fresh ones (they cannot write into a plain buffer).
        reuse = not any(t.requires_grad or _functorch_wrapped(t) for t in (x, v, mean, lhs))
        with threads_for(B * (k + 1) * self.n_atoms * d):
            for sl in self._chunks(B * (k + 1)):
                xc = self._centred(sl)
                n_sl = sl.stop - sl.start
                q = torch.matmul(lhs, xc.T, out=self._reused(reuse, "cov_q", (lhs.shape[0], n_sl)))
                logits = q[:B].add_(self._bias(sl, a, b2))
                new_max = torch.maximum(run_max, logits.amax(-1))
                rescale = torch.exp((run_max - new_max).clamp_min(floor))
                p = _shifted_exp(logits, new_max.unsqueeze(1), floor)
                diff = torch.sub(q[B:].reshape(B, k, n_sl), mv.unsqueeze(-1),
                                 out=self._reused(reuse, "cov_ps", (B, k, n_sl)))
                # w_i (x_i - m) . v (in place on the buffer; autograd needs diff kept for p's gradient)
                ps = diff.mul_(p.unsqueeze(1)) if reuse else diff * p.unsqueeze(1)
                run_sum = run_sum * rescale + p.sum(-1)
                wsum = wsum * rescale.unsqueeze(-1) + ps.sum(-1)
                acc = acc * rescale[:, None, None] + (ps.reshape(B * k, n_sl) @ xc).reshape(B, k, d)
                run_max = new_max
        out = (acc - mc.unsqueeze(1) * wsum.unsqueeze(-1)) / run_sum[:, None, None]
        return run_max + torch.log(run_sum), out

    def denoiser_vjp(self, x, abar, v, *, moments: Moments | None = None) -> torch.Tensor:
        """(dm/dx_t)^T v = (a / b^2) C(x_t) v (the Jacobian is symmetric; no autograd)."""
        _, a, b2 = check_abar(abar)
        return (a / b2) * self.cov_matvec(x, abar, v, moments=moments)

    # --------------------------------------------------------------- sampling atoms
    def sample_atoms(self, x, abar, generator: torch.Generator | None, log_lik=None) -> torch.Tensor:
        """One atom index per query drawn from w_i(x_t) (w~_i given log_lik): a streamed
        Gumbel-max. With generator=None, the most responsible atom instead (the arg-max)."""
        x = self._query(x)
        _, a, b2 = check_abar(abar)
        if generator is not None:
            generator = check_generator(generator)
        return self._best_atom(x, a, b2, generator, log_lik)[1]

    def _best_atom(self, x, a: float, b2: float, generator, log_lik) -> tuple[torch.Tensor, torch.Tensor]:
        """The streamed (Gumbel-)max of the logits: per query, the best value (float64, with the
        likelihood's shift added back, so that values of different shards compare) and its index."""
        ll, shift = (None, 0.0) if log_lik is None else self._log_lik(log_lik)
        xq = x - a * self.center
        best = _start_max(1, x.shape[0], self.dtype, self.device)[0]
        idx = torch.zeros(x.shape[0], dtype=torch.long, device=self.device)
        B, tiny = x.shape[0], torch.finfo(self.dtype).tiny
        reuse = not (x.requires_grad or _functorch_wrapped(x))     # blocks in reused buffers (_reused)
        with threads_for(B * self.n_atoms * self.dim, self.device):
            for sl in self._chunks(B):
                n = sl.stop - sl.start
                logits = self._logits(xq, sl, a, b2, out=self._reused(reuse, "atom_logits", (B, n)))
                if ll is not None:
                    logits.add_(ll[sl])
                if generator is not None:             # Gumbel noise -log(-log u), in place
                    u = torch.rand((B, n), generator=generator, dtype=self.dtype, device=self.device,
                                   out=self._reused(reuse, "atom_noise", (B, n)))
                    logits.sub_(u.clamp_min_(tiny).log_().neg_().log_())
                val, arg = logits.max(1)
                better = val > best
                best = torch.where(better, val, best)
                idx = torch.where(better, arg + sl.start, idx)
        check_result("x", best)
        return best.to(torch.float64) + shift, idx

    def nearest_atoms(self, x, abar=1.0) -> torch.Tensor:
        """Index of the most responsible atom for each query at alpha_bar `abar` in (0, 1] (at 1:
        the nearest atom of positive weight), exact in float64 (`fsdiag.nearest`: the lowest
        index among exact ties)."""
        return self.nearest(x, abar).index

    def nearest(self, x, abar=1.0) -> Nearest:
        """`fsdiag.nearest.nearest` on this prior: the best atom per query, its distance
        ||x - a x^(i)|| and every exactly tied (query, atom) pair."""
        x = self._query(x)
        abar = check_real(abar, "abar")
        if not 0.0 < abar <= 1.0:
            raise ValueError(f"abar: expected alpha_bar in (0, 1], got {abar}")
        return nearest(self, x, abar)

    def atoms_at(self, index: torch.Tensor) -> torch.Tensor:
        """The atoms x^(i) for a tensor of indices (any shape), in the kernels' dtype (a sharded
        prior gathers them from the shard that holds each one)."""
        return self.atoms[index].to(self.dtype)

    def log_posterior_weights(self, log_lik) -> torch.Tensor:
        """log psi_i = log_softmax(log pi_i + l_i), computed in float64 (exact on near ties
        whatever the storage dtype), returned in the prior's dtype."""
        return self._log_posterior_weights64(log_lik).to(self.dtype)

    def _log_posterior_weights64(self, log_lik) -> torch.Tensor:
        return torch.log_softmax(self._log_w64 + self._log_lik64(log_lik), 0)
