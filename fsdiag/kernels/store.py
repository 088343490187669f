"""The atoms as the streamed passes see them: storage, centring, chunking and scratch buffers.

An `AtomStore` holds one copy of the atoms (N, d) in their storage dtype, the prior's
log-weights, the centre c the kernels subtract (the atoms' mean by default: centring makes the
||x||^2 expansion 10-200x more accurate, docs/design.md §7) and ||x^(i) - c||^2. Every pass
(`fsdiag.kernels.streamed`, `fsdiag.kernels.fused`) reads atoms through `chunks`, `centred`,
`bias` and `logits`, so a chunk of 16-bit atoms is widened to the kernels' dtype on the fly and
no centred copy is stored.
"""
from __future__ import annotations

import math
import threading

import torch

from .._checks import as_tensor

__all__ = ["AtomStore", "BLOCK", "MIN_CHUNK"]

# Streaming block: ~1M (query, atom) pairs (4-8 MB) per chunk. Larger blocks spill out of
# cache and, above the allocator's mmap threshold, pay page faults on every chunk:
# at batch 4000, d = 2 this is ~4x faster than fixed 4096-atom chunks.
BLOCK = 1 << 20
MIN_CHUNK = 64
# One-off passes over all atoms (construction; log p(y | x^(i)) for every atom) walk blocks of
# ~1 MiB. Blocks of 4096 x 784 float32 (12.8 MB), or their float64 copies, freed and allocated
# again per block, raise glibc's mmap threshold and then grow its heap: at MNIST size the
# constructor peaked 39 MiB and the per-atom log-likelihoods (2048-atom float64 blocks) 177 MiB
# of RSS above the atoms. Small blocks bound what can pile up; speed is unchanged (O(N d) work).
ONE_OFF_BYTES = 1 << 20


class AtomStore:
    """Atoms (N, d) (any float storage dtype), log-weights `log_w` (N,) in the compute `dtype`
    and `log_w64` in float64, a centre (d,) or None (the atoms' mean), the largest chunk of atoms
    per block. Checks that the atoms and their squared distances to the centre are finite."""

    def __init__(self, atoms: torch.Tensor, log_w: torch.Tensor, log_w64: torch.Tensor, *,
                 dtype: torch.dtype, center=None, chunk_size: int = 4096):
        self.atoms = atoms
        self.log_weights = log_w
        self.log_weights64 = log_w64
        self.dtype = dtype
        self.device = atoms.device
        self.chunk_size = chunk_size
        # finiteness in blocks (torch.isfinite on all atoms at once holds ~1.7x the atoms)
        bad = sum(int((~torch.isfinite(atoms[sl])).sum()) for sl in self.blocks(atoms.element_size()))
        if bad:
            raise ValueError(f"atoms: expected finite values, found {bad} NaN/Inf entries "
                             f"(or values too large for {atoms.dtype})")
        if center is not None:
            center = as_tensor(center, "center", ndim=1, dtype=dtype, device=self.device)
            if center.shape[0] != atoms.shape[1]:
                raise ValueError(f"center: expected shape ({atoms.shape[1]},), got {tuple(center.shape)}")
            self.center = center
        else:
            self.center = atoms.mean(0) if atoms.dtype == dtype else atoms.mean(0, dtype=dtype)
        self.sq_norms = torch.empty(self.n_atoms, dtype=dtype, device=self.device)   # ||x^(i) - c||^2
        blocks = list(self.blocks(torch.finfo(dtype).bits // 8))
        buf = torch.empty(blocks[0].stop, self.dim, dtype=dtype, device=self.device)  # one reused block
        for sl in blocks:
            xc = self.centred(sl, out=buf[:sl.stop - sl.start])
            torch.sum(xc.mul_(xc), 1, out=self.sq_norms[sl])
        del buf
        if not bool(torch.isfinite(self.sq_norms).all()):
            raise ValueError(f"atoms: squared distances overflow {dtype} (max |atom| = "
                             f"{float(atoms.abs().max()):.3g}); rescale the data or use float64")
        # the data's scale (max |atom|), for samplers' sanity checks; no |atoms| temporary
        self.scale = max(float(atoms.max()), -float(atoms.min()))

    @property
    def n_atoms(self) -> int:
        return self.atoms.shape[0]

    @property
    def dim(self) -> int:
        return self.atoms.shape[1]

    # ------------------------------------------------------------------ walking the atoms
    def chunks(self, rows: int):
        """Atom slices sized so one (rows x chunk) block stays near BLOCK elements (in cache,
        small enough for the allocator to reuse), never above chunk_size atoms."""
        size = min(self.chunk_size, max(MIN_CHUNK, BLOCK // max(rows, 1)))
        for s in range(0, self.n_atoms, size):
            yield slice(s, min(s + size, self.n_atoms))

    def blocks(self, itemsize: int):
        """Atom slices of ~ONE_OFF_BYTES (at `itemsize` bytes per entry) for one-off passes; 64x
        that off the CPU (glibc's heap is a CPU matter: CUDA's caching allocator reuses blocks,
        and every block costs a few kernel launches: 10^6 x 1024 atoms would be ~8000 blocks)."""
        budget = ONE_OFF_BYTES if self.device.type == "cpu" else 64 * ONE_OFF_BYTES
        size = max(16, budget // (itemsize * self.dim))
        for s in range(0, self.n_atoms, size):
            yield slice(s, min(s + size, self.n_atoms))

    def centred(self, sl: slice, out: torch.Tensor | None = None) -> torch.Tensor:
        """x^(i) - center for the atoms in `sl` (into `out`, a scratch buffer, when given)."""
        if out is None:
            return self.atoms[sl] - self.center
        return torch.sub(self.atoms[sl], self.center, out=out)

    def bias(self, sl: slice, a, b2) -> torch.Tensor:
        """log pi_i - (a^2 / 2b^2) ||x^(i) - c||^2 for the atoms in `sl` ((B, n) for per-query a, b2)."""
        return self.log_weights[sl] - (a * a / (2 * b2)) * self.sq_norms[sl]

    def logits(self, xq: torch.Tensor, sl: slice, a: float, b2: float, out=None) -> torch.Tensor:
        """log pi_i + (a / b^2) xq . (x^(i) - c) - (a^2 / 2b^2) ||x^(i) - c||^2 for the atoms in `sl`,
        xq = x_t - a c: log w_i(x_t) up to a per-query constant (into `out` when given)."""
        return torch.addmm(self.bias(sl, a, b2), xq, self.centred(sl).T, alpha=a / b2, out=out)

    # ------------------------------------------------------------------ buffers
    def scratch(self, numel: int, name: str = "keys") -> torch.Tensor:
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

    def reused(self, reuse: bool, name: str, shape: tuple) -> torch.Tensor | None:
        """The reused buffer `name` viewed as `shape`, for an out= argument; None (a fresh tensor)
        when not `reuse` (autograd and torch.func transforms cannot write into a plain buffer)."""
        return self.scratch(math.prod(shape), name).view(shape) if reuse else None

    # ------------------------------------------------------------------ per-atom log-likelihoods
    def check_log_lik(self, log_lik) -> torch.Tensor:
        """log_lik as a checked (N,) float64 tensor on the store's device."""
        ll = as_tensor(log_lik, "log_lik", ndim=1, dtype=torch.float64, device=self.device)
        if ll.shape[0] != self.n_atoms:
            raise ValueError(f"log_lik: expected shape ({self.n_atoms},), got {tuple(ll.shape)}")
        return ll

    def shifted_log_lik(self, log_lik) -> tuple[torch.Tensor, float]:
        """(l - shift in the kernels' dtype, shift), shift = max_i(log pi_i + l_i) in float64.
        Centring keeps float32 from losing the differences between l_i that the posterior
        depends on; the passes' callers add the shift back where it matters (log_norm_cond)."""
        ll = self.check_log_lik(log_lik)
        shift = float((self.log_weights64 + ll).max())
        # Zero-weight atoms may carry any l_i: cap so -inf + l stays -inf, never inf - inf.
        cap = torch.finfo(self.dtype).max / 4
        return (ll - shift).clamp(max=cap).to(self.dtype), shift
