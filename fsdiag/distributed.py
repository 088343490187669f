"""Atoms sharded across processes with torch.distributed: beyond one process or GPU.

Each process holds one shard of the atoms, in shard order (rank 0 holds global indices
0 .. N_0 - 1, rank 1 the next N_1, ...). A streamed pass on a shard gives, per query, its
partial log-sum-exp L_k = log sum_{i in shard k} pi_i exp(logit_i) and its weighted sums;
one all-gather lets every rank combine them exactly: L = logsumexp_k L_k, and any weighted
sum S = sum_k exp(L_k - L) S_k. All shards centre at the mean of all atoms and hold their
prior weights pi_i normalised over all shards (one all-reduce at construction), so the L_k
drop the same per-query term and compare. Every rank combines the same gathered numbers in
the same order, so every rank holds bit-identical results.

Launch one process per shard (per GPU), each with the same queries — the same seed:

    torchrun --nproc_per_node=4 run_fsr.py            # one node, 4 GPUs (or CPU processes)
    torchrun --nnodes=2 --nproc_per_node=8 --rdzv_endpoint=HOST:29500 run_fsr.py

where run_fsr.py holds

    import torch, torch.distributed as dist, fsdiag
    from fsdiag.distributed import ShardedPrior
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    atoms = ...                                        # (N, d), e.g. np.load(..., mmap_mode="r")
    lo, hi = rank * len(atoms) // world, (rank + 1) * len(atoms) // world
    device = f"cuda:{rank % torch.cuda.device_count()}" if torch.cuda.is_available() else "cpu"
    prior = ShardedPrior(atoms[lo:hi], device=device)  # weights/labels: this shard's rows
    run = fsdiag.sample(prior, lik, method="tmpd", seed=0)       # any method, same seed on every rank
    ref = fsdiag.sample_exact(prior, lik, seed=0)                # the exact reference too
    dist.destroy_process_group()

Every rank then holds the same particles. Sharded, so a ShardedPrior is a drop-in for an
`EmpiricalPrior` in `fsdiag.sample` (every method in `fsdiag.METHODS`) and `fsdiag.sample_exact`:

- `moments`, `posterior_moments`, `denoise`, `score`, `log_density` and the exact conditionals
  (the FSR sampler);
- `cov_matvec`, `denoiser_vjp` (the DPS family, PiGDM, TMPD): each shard's pass centred at the
  global Tweedie mean, combined with its log-normaliser;
- `log_posterior_weights`: the full (N,) vector over all atoms, in shard order;
- `sample_atoms`: GLOBAL indices, the same on every rank. The arg-max (generator=None) equals
  one process's; a draw is a Gumbel-max with independent noise per shard (seeded from one draw
  of the shared generator and the rank), exact in distribution but not bit-identical to one
  process's draw;
- `nearest`, `nearest_atoms`: the exact float64 search of one process, in GLOBAL indices (each
  shard searches its atoms; the best exact score over shards wins, ties across shards kept);
- `fsdiag.ExactDenoiser` on a sharded prior: one process's answer at every noise level (a
  level per sample, sigma = 0 and sigma = inf included), since it calls only the engine;
- `atoms_at(index)`: atoms at global indices (each rank fills the rows it holds, one all-reduce);
- `responsibilities`: this shard's (B, N_k) columns, normalised over all shards (the columns of
  all ranks, concatenated in rank order, are one process's matrix).

`n_atoms`, `atoms`, `labels` are this shard's (`offset` is its first global index, `n_total`
the number of atoms in all, `sizes` every shard's count); `weights` are this shard's atoms' pi_i,
normalised over all shards. Every method is a collective: all ranks must call it together with
the same queries. Not sharded: the judges (`fsdiag.evaluate`, `diagnose`) index `atoms` and
`labels` with global indices; run them on one process with an `EmpiricalPrior` of all atoms.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.distributed as dist

from ._checks import as_tensor, resolve_device
from .kernels import Engine, Nearest, check_result
from .prior import EmpiricalPrior

__all__ = ["ShardedPrior", "ShardedEngine"]


def _comm_device(dev: torch.device) -> torch.device:
    # gloo communicates CPU tensors; nccl CUDA tensors.
    return dev if dist.get_backend() == "nccl" else torch.device("cpu")


def _combine(L: torch.Tensor, S: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Shards' log-normalisers L (world, *q) and normalised sums S (world, *q, ...) to the
    global log-normaliser and normalised sum: sum_k exp(L_k - L) S_k."""
    top = L.amax(0)
    w = torch.exp(L - top)                                   # -inf shards weigh 0
    total = w.sum(0)
    w = (w / total).reshape(*w.shape, *([1] * (S.ndim - w.ndim)))
    return top + torch.log(total), (w * S).sum(0)


class ShardedEngine(Engine):
    """The engine's seam over one shard, every pass combined over the process group: the
    results are one process's (indices are global). `sizes`: every shard's atom count in rank
    order; `massless`: this shard holds no prior mass (it then contributes nothing)."""

    def __init__(self, atoms, log_w, log_w64, *, group, sizes: list[int], massless: bool, **options):
        super().__init__(atoms, log_w, log_w64, **options)
        self.group = group
        self.rank = dist.get_rank(group)
        self.world = dist.get_world_size(group)
        self.sizes = sizes
        self.n_total = sum(sizes)
        self.offset = sum(sizes[:self.rank])
        self.massless = massless
        scale = torch.tensor([self.scale], dtype=torch.float64, device=_comm_device(self.device))
        dist.all_reduce(scale, op=dist.ReduceOp.MAX, group=group)
        self.scale = float(scale)

    def gather(self, local: torch.Tensor) -> torch.Tensor:
        """(world, *local.shape): every rank's `local` (the same shape on every rank), in rank order."""
        comm = _comm_device(self.device)
        parts = [torch.empty(local.shape, dtype=local.dtype, device=comm) for _ in range(self.world)]
        dist.all_gather(parts, local.contiguous().to(comm), group=self.group)
        return torch.stack(parts).to(self.device)

    def gather_ragged(self, local: torch.Tensor) -> list[torch.Tensor]:
        """Every rank's 1-D `local` (lengths may differ), in rank order."""
        sizes = self.gather(torch.tensor([local.shape[0]], device=self.device))[:, 0].tolist()
        padded = torch.zeros(max(sizes), dtype=local.dtype, device=self.device)
        padded[:local.shape[0]] = local
        allp = self.gather(padded)
        return [allp[r, :n] for r, n in enumerate(sizes)]

    def all_sum(self, local: torch.Tensor) -> torch.Tensor:
        comm = local.to(_comm_device(self.device))
        dist.all_reduce(comm, group=self.group)
        return comm.to(self.device)

    # --------------------------------------------------------------- the seam, combined
    def reduce(self, x, a, b2, log_lik=None, heads=(False,), *, route="auto"):
        """Each shard's partial log-sum-exp and mean per head, combined over all shards exactly."""
        H, B, d = len(heads), x.shape[0], self.dim
        if self.massless:
            log_norm = torch.full((H, B), -math.inf, dtype=self.dtype, device=self.device)
            mean = torch.zeros(H, B, d, dtype=self.dtype, device=self.device)
            if log_lik is not None:
                self.check_log_lik(log_lik)                      # the same argument checks
        else:
            log_norm, mean, shift = super().reduce(x, a, b2, log_lik, heads, route=route)
            cond = torch.tensor([shift if c else 0.0 for c in heads], dtype=self.dtype, device=self.device)
            log_norm = log_norm + cond.unsqueeze(1)
            mean = mean - self.center
        allp = self.gather(torch.cat([log_norm.reshape(-1), mean.reshape(-1)]))
        L = allp[:, :H * B].reshape(-1, H, B)
        M = allp[:, H * B:].reshape(-1, H, B, d)
        log_norm, mean = _combine(L, M)
        return log_norm, mean + self.center, 0.0

    def cov(self, x, a, b2, v, mean):
        """Each shard's C v pass centred at the global `mean` (the caller's moments are the
        combined ones), combined with the shards' own log-normalisers."""
        B, k, d = v.shape
        if self.massless:
            log_norm = torch.full((B,), -math.inf, dtype=self.dtype, device=self.device)
            out = torch.zeros(B, k, d, dtype=self.dtype, device=self.device)
        else:
            log_norm, out = super().cov(x, a, b2, v, mean)
        allp = self.gather(torch.cat([log_norm, out.reshape(-1)]))
        return _combine(allp[:, :B], allp[:, B:].reshape(-1, B, k, d))

    def best(self, x, a, b2, generator, log_lik=None):
        """The best (Gumbel-)logit over all shards and its GLOBAL index. A generator is shared by
        the ranks (same state): one 63-bit draw of it and the rank seed each shard's own noise,
        so a draw is exact in distribution, not bit-identical to one process's. On ties (the
        arg-max): the lowest rank, hence the lowest index."""
        local_gen = None
        if generator is not None:
            seed = int(torch.randint(0, 2 ** 63 - 1, (1,), generator=generator, device=generator.device))
            state = np.random.SeedSequence([seed, self.rank]).generate_state(2, np.uint32)
            local_gen = torch.Generator(device=self.device)
            local_gen.manual_seed(int(state[0]) << 31 | int(state[1]) >> 1)
        B = x.shape[0]
        if self.massless:
            if log_lik is not None:
                self.check_log_lik(log_lik)
            best = torch.full((B,), -math.inf, dtype=torch.float64, device=self.device)
            idx = torch.zeros(B, dtype=torch.long, device=self.device)
        else:
            best, idx = super().best(x, a, b2, local_gen, log_lik)
        allp = self.gather(torch.stack([best, (idx + self.offset).to(torch.float64)]))   # (world, 2, B)
        win = allp[:, 0].argmax(0)                               # the first maximum: the lowest rank
        return allp[:, 0].gather(0, win.unsqueeze(0))[0], allp[:, 1].gather(0, win.unsqueeze(0))[0].to(torch.long)

    def nearest(self, x, abar=1.0) -> Nearest:
        """The exact search of one process: each shard's exact best score (float64), the least
        over shards, every shard's ties at that score in GLOBAL indices (the lowest first)."""
        B = x.shape[0]
        if self.massless:
            inf = torch.full((B,), math.inf, dtype=torch.float64, device=self.device)
            none = torch.zeros(0, dtype=torch.long, device=self.device)
            local = Nearest(torch.zeros(B, dtype=torch.long, device=self.device), inf, none, none, inf)
        else:
            local = super().nearest(x, abar)
        scores = self.gather(local.score)                        # (world, B)
        best = scores.amin(0)
        win = (scores == best).to(torch.int8).argmax(0)          # the lowest rank at the best score
        dists = self.gather(local.distance)
        index = self.gather(local.index + self.offset).gather(0, win.unsqueeze(0))[0]
        keep = local.score[local.tie_rows] == best[local.tie_rows]
        rows = torch.cat(self.gather_ragged(local.tie_rows[keep]))
        cols = torch.cat(self.gather_ragged(local.tie_index[keep] + self.offset))
        order = torch.argsort(rows * self.n_total + cols)
        if not bool(torch.isfinite(best).all()):
            raise ValueError("x: no atom of positive weight is at a finite distance")
        return Nearest(index, dists.gather(0, win.unsqueeze(0))[0], rows[order], cols[order], best)

    def atoms_at(self, index: torch.Tensor) -> torch.Tensor:
        """The atoms x^(i) at GLOBAL indices (any shape): each rank fills the rows it holds,
        zeros elsewhere, and one all-reduce sums them (exact: every row has one source)."""
        index = self._global_index(index)
        local = index - self.offset
        mine = (local >= 0) & (local < self.n_atoms)
        out = torch.zeros(*index.shape, self.dim, dtype=self.dtype, device=self.device)
        out[mine] = self.atoms[local[mine]].to(self.dtype)
        return self.all_sum(out)

    def log_weights_at(self, index: torch.Tensor) -> torch.Tensor:
        """log pi_i (float64) at GLOBAL indices, from the rank that holds each."""
        index = self._global_index(index)
        local = index - self.offset
        mine = (local >= 0) & (local < self.n_atoms)
        out = torch.zeros(index.shape, dtype=torch.float64, device=self.device)
        out[mine] = self.log_weights64[local[mine]]
        return self.all_sum(out)                                 # one source per entry

    def _global_index(self, index) -> torch.Tensor:
        if not isinstance(index, torch.Tensor) or index.is_floating_point() or index.is_complex() \
                or index.dtype == torch.bool:
            raise TypeError(f"index: expected an integer tensor of atom indices, got "
                            f"{index.dtype if isinstance(index, torch.Tensor) else type(index).__name__}")
        index = index.to(self.device)
        if index.numel() and (int(index.min()) < 0 or int(index.max()) >= self.n_total):
            raise ValueError(f"index: expected atom indices in [0, {self.n_total}), got values in "
                             f"[{int(index.min())}, {int(index.max())}]")
        return index

    def log_posterior_weights(self, log_lik) -> torch.Tensor:
        """log psi over ALL atoms (N,), in shard order (the same vector on every rank)."""
        local = self.log_weights64 + self.check_log_lik(log_lik)
        return torch.log_softmax(torch.cat(self.gather_ragged(local)), 0)

    def responsibilities(self, x, a, b2, log_lik=None) -> torch.Tensor:
        """This shard's columns (B, N_k), normalised over ALL shards: the ranks' columns
        concatenated in rank order are one process's (B, N) matrix."""
        if self.massless:
            if log_lik is not None:
                self.check_log_lik(log_lik)
            local = torch.zeros(x.shape[0], self.n_atoms, dtype=self.dtype, device=self.device)
            lse = torch.full((x.shape[0],), -math.inf, dtype=torch.float64, device=self.device)
        else:
            logits = self.logits(x - a * self.center, slice(None), a, b2)
            shift = 0.0
            if log_lik is not None:
                ll, shift = self.shifted_log_lik(log_lik)        # centred by this shard's shift
                logits = logits + ll
            local = torch.softmax(logits, dim=1)
            lse = torch.logsumexp(logits.to(torch.float64), 1) + shift   # this shard's log-normaliser
        L = self.gather(lse)                                     # (world, B), float64
        share = torch.exp(lse - torch.logsumexp(L, 0)).to(self.dtype)
        out = local * share.unsqueeze(1)
        check_result("x", out)
        return out

    def prior_mean(self) -> torch.Tensor:
        """sum_i pi_i x^(i) over all shards (each shard's weights are normalised over all)."""
        local = torch.exp(self.log_weights) @ (self.atoms - self.center).to(self.dtype)
        return self.center + self.all_sum(local)


class ShardedPrior(EmpiricalPrior):
    """This process's shard of an empirical prior whose atoms are split across a process group.

    atoms: (N_k, d) this shard's atoms (N_k >= 1); weights: optional (N_k,) non-negative weights
    on the same scale on every rank (normalised over all shards; pass them on every rank or on
    none; a shard may hold zero weight); group: a torch.distributed group (default the world).
    Other keywords as for `EmpiricalPrior`. Its engine is a `ShardedEngine`.
    """

    def __init__(self, atoms, weights=None, labels=None, *, group=None, device="auto", dtype=None,
                 chunk_size: int | None = None, storage_dtype=None):
        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError("ShardedPrior: torch.distributed is not initialised; call "
                               "torch.distributed.init_process_group first (see fsdiag.distributed)")
        self.group = group
        self.rank = dist.get_rank(group)
        self.world = dist.get_world_size(group)
        dev = resolve_device(device)
        x = as_tensor(atoms, "atoms", ndim=2, device=dev, finite=False)
        n, d = x.shape
        w = None
        if weights is not None:
            w = as_tensor(weights, "weights", ndim=1, dtype=torch.float64, device=dev)
            if w.shape[0] != n:
                raise ValueError(f"weights: expected shape ({n},) to match atoms, got {tuple(w.shape)}")
            if bool((w < 0).any()):
                raise ValueError("weights: expected non-negative weights")
        mass = float(n) if w is None else float(w.sum())
        # One all-reduce, in float64: atom count, prior mass, ranks with weights, each shard's
        # size (its own slot) and the sum of the atoms.
        tot = torch.zeros(3 + self.world + d, dtype=torch.float64, device=dev)
        tot[0], tot[1], tot[2], tot[3 + self.rank] = n, mass, float(w is not None), n
        for s in range(0, n, 8192):
            tot[3 + self.world:] += x[s:s + 8192].to(torch.float64).sum(0)
        tot = tot.to(_comm_device(dev))
        dist.all_reduce(tot, group=group)
        if int(tot[2]) not in (0, self.world):
            raise ValueError("weights: pass weights on every rank or on none (they are normalised "
                             "over all shards)")
        if float(tot[0]) < 1 or not float(tot[1]) > 0:
            raise ValueError("atoms: the shards hold no atoms (or no prior mass) in all")
        if not math.isfinite(float(tot[1])):
            raise ValueError("weights: their sum over all shards overflows float64; rescale them")
        center = (tot[3 + self.world:] / tot[0]).to(dev)
        self.sizes = [int(s) for s in tot[3:3 + self.world].tolist()]
        self.n_total = int(tot[0])
        self.offset = sum(self.sizes[:self.rank])
        # pi_i normalised over all shards, as one process computes them: -log N for uniform
        # weights (bit-identical), log(w_i / total) otherwise; `make_engine` installs them.
        self._shard_weights = (w, float(tot[1]), not mass > 0)
        super().__init__(x, None, labels, device=dev, dtype=dtype, chunk_size=chunk_size,
                         storage_dtype=storage_dtype, center=center)

    def make_engine(self, atoms, log_w, log_w64, *, dtype, **options) -> ShardedEngine:
        w, total, massless = self._shard_weights
        if w is None:
            log_w = torch.full((atoms.shape[0],), -math.log(self.n_total), dtype=dtype, device=atoms.device)
            log_w64 = log_w.to(torch.float64)
        else:
            log_w64 = torch.log(w / total)
            log_w = log_w64.to(dtype)
        return ShardedEngine(atoms, log_w, log_w64, dtype=dtype, group=self.group, sizes=self.sizes,
                             massless=massless, **options)

    def __repr__(self) -> str:
        return (f"ShardedPrior(shard {self.rank} of {self.world}: N={self.n_atoms} of {self.n_total}, "
                f"offset={self.offset}, d={self.dim}, dtype={self.dtype}, device={self.device})")
