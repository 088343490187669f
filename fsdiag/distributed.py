"""Atoms sharded across processes with torch.distributed (issue 11: beyond one GPU).

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
- `sample_atoms`, `nearest_atoms`: GLOBAL indices, the same on every rank. The arg-max
  (generator=None) equals one process's; a draw is a Gumbel-max with independent noise per shard
  (seeded from one draw of the shared generator and the rank), exact in distribution but not
  bit-identical to one process's draw;
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

from ._checks import as_tensor, check_generator, resolve_device
from .prior import EmpiricalPrior, check_abar, check_result

__all__ = ["ShardedPrior"]


class ShardedPrior(EmpiricalPrior):
    """This process's shard of an empirical prior whose atoms are split across a process group.

    atoms: (N_k, d) this shard's atoms (N_k >= 1); weights: optional (N_k,) non-negative weights
    on the same scale on every rank (normalised over all shards; pass them on every rank or on
    none; a shard may hold zero weight); group: a torch.distributed group (default the world).
    Other keywords as for `EmpiricalPrior`.
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
        comm = self._comm_device(dev)
        tot = torch.zeros(3 + self.world + d, dtype=torch.float64, device=dev)
        tot[0], tot[1], tot[2], tot[3 + self.rank] = n, mass, float(w is not None), n
        for s in range(0, n, 8192):
            tot[3 + self.world:] += x[s:s + 8192].to(torch.float64).sum(0)
        tot = tot.to(comm)
        dist.all_reduce(tot, group=group)
        if int(tot[2]) not in (0, self.world):
            raise ValueError("weights: pass weights on every rank or on none (they are normalised "
                             "over all shards)")
        if float(tot[0]) < 1 or not float(tot[1]) > 0:
            raise ValueError("atoms: the shards hold no atoms (or no prior mass) in all")
        if not math.isfinite(float(tot[1])):
            raise ValueError("weights: their sum over all shards overflows float64; rescale them")
        center = (tot[3 + self.world:] / tot[0]).to(dev)
        # Uniform local weights for the base class (a shard may hold no mass); set below.
        super().__init__(x, None, labels, device=dev, dtype=dtype, chunk_size=chunk_size,
                         storage_dtype=storage_dtype, center=center)
        self.sizes = [int(s) for s in tot[3:3 + self.world].tolist()]
        self.n_total = int(tot[0])
        self.offset = sum(self.sizes[:self.rank])
        # pi_i normalised over all shards, as one process computes them: -log N for uniform
        # weights (bit-identical), log(w_i / total) otherwise.
        if w is None:
            log_w = torch.full((n,), -math.log(self.n_total), dtype=self.dtype, device=dev)
            self._log_w64 = log_w.to(torch.float64)
        else:
            self._log_w64 = torch.log(w / float(tot[1]))
            log_w = self._log_w64.to(self.dtype)
        self.log_weights = log_w
        self._massless = not mass > 0         # a shard without prior mass contributes nothing
        scale = torch.tensor([self.scale], dtype=torch.float64, device=comm)
        dist.all_reduce(scale, op=dist.ReduceOp.MAX, group=group)
        self.scale = float(scale)

    def __repr__(self) -> str:
        return (f"ShardedPrior(shard {self.rank} of {self.world}: N={self.n_atoms} of {self.n_total}, "
                f"offset={self.offset}, d={self.dim}, dtype={self.dtype}, device={self.device})")

    @staticmethod
    def _comm_device(dev: torch.device) -> torch.device:
        # gloo communicates CPU tensors; nccl CUDA tensors.
        return dev if dist.get_backend() == "nccl" else torch.device("cpu")

    def _gather(self, local: torch.Tensor) -> torch.Tensor:
        """(world, *local.shape): every rank's `local` (the same shape on every rank), in rank order."""
        comm = self._comm_device(self.device)
        parts = [torch.empty(local.shape, dtype=local.dtype, device=comm) for _ in range(self.world)]
        dist.all_gather(parts, local.contiguous().to(comm), group=self.group)
        return torch.stack(parts).to(self.device)

    @staticmethod
    def _combine(L: torch.Tensor, S: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Shards' log-normalisers L (world, *q) and normalised sums S (world, *q, ...) to the
        global log-normaliser and normalised sum: sum_k exp(L_k - L) S_k."""
        top = L.amax(0)
        w = torch.exp(L - top)                                   # -inf shards weigh 0
        total = w.sum(0)
        w = (w / total).reshape(*w.shape, *([1] * (S.ndim - w.ndim)))
        return top + torch.log(total), (w * S).sum(0)

    # --------------------------------------------------------------- pass one
    def _reduce(self, x, abar, log_lik, heads, *, route="auto"):
        """The shard's partial log-sum-exp and mean per head, combined over all shards exactly."""
        H, B, d = len(heads), x.shape[0], self.dim
        if self._massless:
            log_norm = torch.full((H, B), -math.inf, dtype=self.dtype, device=self.device)
            mean = torch.zeros(H, B, d, dtype=self.dtype, device=self.device)
            if log_lik is not None:
                self._log_lik64(log_lik)                         # the same argument checks
        else:
            log_norm, mean, shift = super()._reduce(x, abar, log_lik, heads, route=route)
            cond = torch.tensor([shift if c else 0.0 for c in heads], dtype=self.dtype, device=self.device)
            log_norm = log_norm + cond.unsqueeze(1)
            mean = mean - self.center
        allp = self._gather(torch.cat([log_norm.reshape(-1), mean.reshape(-1)]))
        L = allp[:, :H * B].reshape(-1, H, B)
        M = allp[:, H * B:].reshape(-1, H, B, d)
        log_norm, mean = self._combine(L, M)
        return log_norm, mean + self.center, 0.0

    # --------------------------------------------------------------- pass two
    def _cov_pass(self, x, a, b2, v, mean):
        """Each shard's C v pass centred at the global Tweedie mean `mean` (the sampler's moments
        are the combined ones), combined with the shards' own log-normalisers."""
        B, k, d = v.shape
        if self._massless:
            log_norm = torch.full((B,), -math.inf, dtype=self.dtype, device=self.device)
            out = torch.zeros(B, k, d, dtype=self.dtype, device=self.device)
        else:
            log_norm, out = super()._cov_pass(x, a, b2, v, mean)
        allp = self._gather(torch.cat([log_norm, out.reshape(-1)]))
        return self._combine(allp[:, :B], allp[:, B:].reshape(-1, B, k, d))

    # --------------------------------------------------------------- over atoms
    def responsibilities(self, x, abar, log_lik=None) -> torch.Tensor:
        """This shard's columns (batch, N_k) of the responsibilities w_i(x_t) (w~_i given log_lik),
        normalised over ALL shards: the ranks' columns concatenated in rank order are one
        process's (batch, N) matrix. Dense: for small N only."""
        x = self._query(x)
        _, a, b2 = check_abar(abar)
        if self._massless:
            if log_lik is not None:
                self._log_lik64(log_lik)
            local = torch.zeros(x.shape[0], self.n_atoms, dtype=self.dtype, device=self.device)
            lse = torch.full((x.shape[0],), -math.inf, dtype=torch.float64, device=self.device)
        else:
            logits = self._logits(x - a * self.center, slice(None), a, b2)
            shift = 0.0
            if log_lik is not None:
                ll, shift = self._log_lik(log_lik)               # centred by this shard's shift
                logits = logits + ll
            local = torch.softmax(logits, dim=1)
            lse = torch.logsumexp(logits.to(torch.float64), 1) + shift   # this shard's log-normaliser
        L = self._gather(lse)                                    # (world, B), float64
        share = torch.exp(lse - torch.logsumexp(L, 0)).to(self.dtype)
        out = local * share.unsqueeze(1)
        check_result("x", out)
        return out

    def _log_posterior_weights64(self, log_lik) -> torch.Tensor:
        """log psi over ALL atoms (N,), in shard order (the same vector on every rank)."""
        local = self._log_w64 + self._log_lik64(log_lik)
        width = max(self.sizes)                                  # gloo gathers equal sizes: pad
        padded = torch.full((width,), -math.inf, dtype=torch.float64, device=self.device)
        padded[:self.n_atoms] = local
        allp = self._gather(padded)
        full = torch.cat([allp[r, :n] for r, n in enumerate(self.sizes)])
        return torch.log_softmax(full, 0)

    def log_posterior_weights(self, log_lik) -> torch.Tensor:
        """log psi_i over ALL atoms (N,), in shard order, from this shard's log_lik (N_k,);
        float64 inside, returned in the prior's dtype (the same vector on every rank)."""
        return super().log_posterior_weights(log_lik)

    def atoms_at(self, index: torch.Tensor) -> torch.Tensor:
        """The atoms x^(i) at GLOBAL indices (any shape): each rank fills the rows it holds,
        zeros elsewhere, and one all-reduce sums them (exact: every row has one source)."""
        if not isinstance(index, torch.Tensor) or index.is_floating_point() or index.is_complex() \
                or index.dtype == torch.bool:
            raise TypeError(f"index: expected an integer tensor of atom indices, got "
                            f"{index.dtype if isinstance(index, torch.Tensor) else type(index).__name__}")
        index = index.to(self.device)
        if index.numel() and (int(index.min()) < 0 or int(index.max()) >= self.n_total):
            raise ValueError(f"index: expected atom indices in [0, {self.n_total}), got values in "
                             f"[{int(index.min())}, {int(index.max())}]")
        local = index - self.offset
        mine = (local >= 0) & (local < self.n_atoms)
        out = torch.zeros(*index.shape, self.dim, dtype=self.dtype, device=self.device)
        out[mine] = self.atoms[local[mine]].to(self.dtype)
        comm = out.to(self._comm_device(self.device))
        dist.all_reduce(comm, group=self.group)
        return comm.to(self.device)

    def nearest_atoms(self, x, abar) -> torch.Tensor:
        """The most responsible atom's GLOBAL index at alpha_bar abar in (0, 1) (the arg-max of
        `sample_atoms`; not the float64 exact search of one process, which needs all atoms)."""
        return self.sample_atoms(x, abar, None)

    def sample_atoms(self, x, abar, generator: torch.Generator | None, log_lik=None) -> torch.Tensor:
        """One GLOBAL atom index per query, the same on every rank, drawn from w_i(x_t) (w~_i
        given log_lik) by a Gumbel-max: each shard perturbs its logits with its own noise (a
        local generator seeded by one 63-bit draw of the shared `generator` and the rank) and
        keeps its best; the best over shards wins. Exact in distribution, not bit-identical to
        one process's draw. With generator=None, the most responsible atom, as one process
        (ties: the lowest index)."""
        x = self._query(x)
        _, a, b2 = check_abar(abar)
        local_gen = None
        if generator is not None:
            generator = check_generator(generator)
            # one draw on every rank (the ranks' generators share their state and stay in step)
            seed = int(torch.randint(0, 2 ** 63 - 1, (1,), generator=generator, device=generator.device))
            state = np.random.SeedSequence([seed, self.rank]).generate_state(2, np.uint32)
            local_gen = torch.Generator(device=self.device)
            local_gen.manual_seed(int(state[0]) << 31 | int(state[1]) >> 1)
        B = x.shape[0]
        if self._massless:
            if log_lik is not None:
                self._log_lik64(log_lik)
            best = torch.full((B,), -math.inf, dtype=torch.float64, device=self.device)
            idx = torch.zeros(B, dtype=torch.long, device=self.device)
        else:
            best, idx = self._best_atom(x, a, b2, local_gen, log_lik)
        allp = self._gather(torch.stack([best, (idx + self.offset).to(torch.float64)]))   # (world, 2, B)
        # argmax returns the first maximum: on ties, the lowest rank, hence the lowest index
        win = allp[:, 0].argmax(0)
        return allp[:, 1].gather(0, win.unsqueeze(0))[0].to(torch.long)
