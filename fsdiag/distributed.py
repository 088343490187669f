"""Atoms sharded across processes with torch.distributed (issue 11: beyond one GPU).

Each process holds one shard of the atoms. A streamed pass on a shard gives, per query, its
partial log-sum-exp L_k = log sum_{i in shard k} pi_i exp(logit_i) and its weighted mean m_k;
one all-gather of (L_k, m_k) lets every rank combine them exactly:
L = logsumexp_k L_k, m = sum_k exp(L_k - L) m_k. All shards centre at the mean of all atoms
(one all-reduce at construction), so the L_k drop the same per-query term and compare.

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
    run = fsdiag.sample(prior, lik, method="fsr", seed=0)   # same seed on every rank
    dist.destroy_process_group()

Every rank then holds the same particles. Sharded: `moments`, `posterior_moments`, `denoise`,
`score`, `log_density`, the exact conditionals, hence `fsdiag.sample(method="fsr")`. Not
sharded (they raise): `cov_matvec` (the DPS-family approximations), `sample_atoms`,
`responsibilities` and the posterior over atoms (`sample_exact`); `n_atoms`, `atoms`,
`weights` are this shard's.
"""
from __future__ import annotations

import math

import torch
import torch.distributed as dist

from ._checks import as_tensor, resolve_device
from .prior import EmpiricalPrior

__all__ = ["ShardedPrior"]


class ShardedPrior(EmpiricalPrior):
    """This process's shard of an empirical prior whose atoms are split across a process group.

    atoms: (N_k, d) this shard's atoms; weights: optional (N_k,) non-negative weights on the
    same scale on every rank (normalised over all shards); group: a torch.distributed group
    (default the world). Other keywords as for `EmpiricalPrior`.
    """

    def __init__(self, atoms, weights=None, labels=None, *, group=None, device="auto", dtype=None,
                 chunk_size: int | None = None, storage_dtype=None):
        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError("ShardedPrior: torch.distributed is not initialised; call "
                               "torch.distributed.init_process_group first (see fsdiag.distributed)")
        self.group = group
        dev = resolve_device(device)
        x = as_tensor(atoms, "atoms", ndim=2, device=dev, finite=False)
        n, d = x.shape
        w = None if weights is None else as_tensor(weights, "weights", ndim=1, dtype=torch.float64, device=dev)
        mass = float(n) if w is None else float(w.sum())
        # One all-reduce: atom count, prior mass and the sum of the atoms, in float64.
        comm = self._comm_device(dev)
        tot = torch.zeros(d + 2, dtype=torch.float64, device=dev)
        tot[0], tot[1] = n, mass
        for s in range(0, n, 8192):
            tot[2:] += x[s:s + 8192].to(torch.float64).sum(0)
        tot = tot.to(comm)
        dist.all_reduce(tot, group=group)
        if float(tot[0]) < 1 or not float(tot[1]) > 0:
            raise ValueError("atoms: the shards hold no atoms (or no prior mass) in all")
        center = (tot[2:] / tot[0]).to(dev)
        super().__init__(x, weights, labels, device=dev, dtype=dtype, chunk_size=chunk_size,
                         storage_dtype=storage_dtype, center=center)
        self.n_total = int(tot[0])
        # log of this shard's share of the prior mass: the local weights are normalised per shard.
        self._log_share = math.log(mass / float(tot[1])) if mass > 0 else -math.inf
        scale = torch.tensor([self.scale], dtype=torch.float64, device=comm)
        dist.all_reduce(scale, op=dist.ReduceOp.MAX, group=group)
        self.scale = float(scale)

    @staticmethod
    def _comm_device(dev: torch.device) -> torch.device:
        # gloo communicates CPU tensors; nccl CUDA tensors.
        return dev if dist.get_backend() == "nccl" else torch.device("cpu")

    def _reduce(self, x, abar, log_lik, heads, *, route="auto"):
        """The shard's partial log-sum-exp and mean per head, combined over all shards exactly."""
        H, B, d = len(heads), x.shape[0], self.dim
        if self._log_share == -math.inf:           # a shard without prior mass contributes nothing
            log_norm = torch.full((H, B), -math.inf, dtype=self.dtype, device=self.device)
            mean, shift = torch.zeros(H, B, d, dtype=self.dtype, device=self.device), 0.0
            if log_lik is not None:
                self._log_lik64(log_lik)
        else:
            log_norm, mean, shift = super()._reduce(x, abar, log_lik, heads, route=route)
            cond = torch.tensor([shift if c else 0.0 for c in heads], dtype=self.dtype, device=self.device)
            log_norm = log_norm + cond.unsqueeze(1) + self._log_share
        local = torch.cat([log_norm.reshape(-1), (mean - self.center).reshape(-1)])
        comm = self._comm_device(self.device)
        parts = [torch.empty_like(local, device=comm) for _ in range(dist.get_world_size(self.group))]
        dist.all_gather(parts, local.to(comm), group=self.group)
        allp = torch.stack(parts).to(self.device)
        L = allp[:, :H * B].reshape(-1, H, B)
        M = allp[:, H * B:].reshape(-1, H, B, d)
        top = L.amax(0)
        w = torch.exp(L - top)                                   # (world, H, B); -inf shards give 0
        total = w.sum(0)
        mean = (w.unsqueeze(-1) * M).sum(0) / total.unsqueeze(-1) + self.center
        return top + torch.log(total), mean, 0.0

    def _not_sharded(self, name):
        raise NotImplementedError(f"ShardedPrior.{name}: not sharded yet; use an EmpiricalPrior "
                                  "on one process (or method='fsr', which needs only the moments)")

    def cov_matvec(self, *args, **kwargs):
        self._not_sharded("cov_matvec")

    def sample_atoms(self, *args, **kwargs):
        self._not_sharded("sample_atoms")

    def responsibilities(self, *args, **kwargs):
        self._not_sharded("responsibilities")

    def _log_posterior_weights64(self, log_lik):
        self._not_sharded("log_posterior_weights")
