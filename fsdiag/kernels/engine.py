"""The engine's seam: every reduction over atoms that a prior, the denoiser or the judge needs.

`Engine` is an `AtomStore` with the public passes (docs/design.md §8):

- `reduce`: per head, the log-sum-exp of the logits and the softmax-weighted mean of the atoms
  (the Tweedie mean; with the per-atom log-likelihood, the exact conditional one);
- `cov`: the covariance of the atoms under that softmax times vectors;
- `best`: the (Gumbel-)max atom of the logits, an exact draw from the softmax;
- `nearest`: the exact float64 nearest / most responsible atom (with its exact ties);
- `atoms_at`, `log_weights_at`, `log_posterior_weights`, `responsibilities`, `prior_mean`.

Every pass returns what a caller on one process would get. A sharded engine
(`fsdiag.distributed.ShardedEngine`) overrides these methods to combine its shards' partial
results, so every consumer is right on a sharded prior without knowing about shards.
Noise levels: `a` = sqrt(abar) and `b2` = 1 - abar as floats, or as (B, 1) tensors for a level
per query (`reduce` and `cov` only; the torch-ops route then).
"""
from __future__ import annotations

import torch

from .._threads import run_ordered, thread_budget, threads_for
from . import fused
from .nearest import Nearest, nearest
from .store import AtomStore
from .streamed import best_atom, cov_pass, functorch_wrapped, softmax_pass

__all__ = ["Engine", "ROUTES", "FLASH_MIN_ATOMS", "check_result"]

ROUTES = ("auto", "flash", "torch")
FLASH_MIN_ATOMS = 128
# Atom entries (N x d) from which log_likelihoods runs its ~1 MiB float64 blocks on threads (4 blocks).
BLOCKS_WORK = 1 << 19


def check_result(name: str, *tensors: torch.Tensor) -> None:
    """O(batch) check after a kernel: finite inputs can still overflow the dtype (e.g. float32
    queries ~1e19 from the atoms); say so rather than return NaN."""
    for t in tensors:
        if t is not None and not bool(torch.isfinite(t).all()):
            raise FloatingPointError(f"{name}: the kernel overflowed {t.dtype} for these queries "
                                     "(x far from the atoms, or b^2 = 1 - abar tiny); use float64 "
                                     "atoms or rescale the data")


class Engine(AtomStore):
    """The streamed passes over one process's atoms (see the module's docstring). `route`: how
    `reduce` runs: "auto" (a fused attention kernel where one exists, is expected to be faster
    and passed its self-check, else torch ops), "flash" (the fused kernel, forced) or "torch"."""

    def __init__(self, atoms, log_w, log_w64, *, dtype, center=None, chunk_size: int = 4096,
                 route: str = "auto"):
        if route not in ROUTES:
            raise ValueError(f"route: expected one of {ROUTES}, got {route!r}")
        super().__init__(atoms, log_w, log_w64, dtype=dtype, center=center, chunk_size=chunk_size)
        self.route = route

    # --------------------------------------------------------------- routes
    def use_flash(self, x: torch.Tensor, has_ll: bool = False) -> bool:
        """Route "auto": the fused kernel where one exists for this device and dtype, where it is
        expected to win (fused.Kernel.max_width; on the CPU at any width), and where its self-check
        passed. Not under autograd or a torch.func transform (its backward is slow and less
        accurate; forward AD has no rule for it), not for an empty batch (it crashes the CPU
        kernel), not below ~128 atoms (its fixed cost per call loses). has_ll: the keys carry a
        likelihood column (`fused.ll_column`)."""
        op = fused.KERNELS.get(self.device.type)
        if (op is None or x.requires_grad or functorch_wrapped(x) or x.shape[0] == 0
                or self.n_atoms < FLASH_MIN_ATOMS or self.dtype not in op.dtypes):
            return False
        if op.max_width is not None and fused.width(self.dim, has_ll, op.align) > op.max_width:
            return False
        return fused.usable(self.device, self.dtype, self.dim, has_ll)

    # --------------------------------------------------------------- the seam
    def reduce(self, x: torch.Tensor, a, b2, log_lik=None, heads: tuple[bool, ...] = (False,), *,
               route: str = "auto"):
        """log_norm (H, B) and the softmax-weighted mean of the atoms (H, B, d) for each head
        (True: the logits plus log_lik, the per-atom log p(y | x^(i)) (N,)), and the shift the
        conditional heads' log_norm leaves out (`AtomStore.shifted_log_lik`). x (B, d) in the
        kernels' dtype. route: "auto" (this engine's own `route`), "flash" or "torch"."""
        if route == "auto":
            route = self.route
        if route not in ROUTES:
            raise ValueError(f"route: expected one of {ROUTES}, got {route!r}")
        per_row = isinstance(a, torch.Tensor)
        if per_row and route == "flash":
            raise ValueError("route: the fused kernel takes one noise level per call; use 'torch'")
        with threads_for(0, self.device):     # O(N) and O(B d) ops: one intra-op thread (_threads)
            ll, shift = (None, 0.0) if log_lik is None else self.shifted_log_lik(log_lik)
            xq = x - a * self.center
        col = fused.ll_column(ll, heads)      # the fused keys' width: d + 1 + col
        flash = (not per_row and self.use_flash(x, col)) if route == "auto" else route == "flash"
        with threads_for(len(heads) * x.shape[0] * self.n_atoms * self.dim, self.device):
            log_norm = None
            if flash:
                # The CPU route splits its chunks of atoms between `split` Python threads; every op
                # around and between the kernel calls runs at one intra-op thread (fused.key_threads).
                split = fused.key_threads(self, len(heads) * x.shape[0], self.n_atoms)
                with threads_for(0, self.device):
                    if route == "auto":
                        try:
                            log_norm, mean = fused.flash_pass(self, xq, a, b2, ll, heads, threads=split)
                        except RuntimeError as err:   # a kernel that passed its self-check fails here: fall back for good
                            fused.disable(self.device, self.dtype, self.dim, col,
                                          f"it raised {type(err).__name__} at batch {x.shape[0]}, {self.n_atoms} "
                                          f"atoms: {fused.first_line(err)}")
                    else:
                        log_norm, mean = fused.flash_pass(self, xq, a, b2, ll, heads, threads=split)
            if log_norm is None:
                log_norm, mean = softmax_pass(self, xq, a, b2, ll, heads)
        with threads_for(0, self.device):
            mean = mean + self.center
            check_result("x", log_norm, mean)
        return log_norm, mean, shift

    def cov(self, x: torch.Tensor, a, b2, v: torch.Tensor, mean: torch.Tensor):
        """The softmax's covariance times v (B, k, d), centred at `mean` (B, d): (its log_norm (B,),
        sum_i w_i (x^(i) - mean)((x^(i) - mean) . v) (B, k, d))."""
        return cov_pass(self, x, a, b2, v, mean)

    def best(self, x: torch.Tensor, a: float, b2: float, generator, log_lik=None):
        """Per query the best logit (float64, the likelihood's shift added back, so that values of
        different shards compare) and its atom's index; with a generator, Gumbel-perturbed (a draw
        from the softmax), else the arg-max."""
        ll, shift = (None, 0.0) if log_lik is None else self.shifted_log_lik(log_lik)
        best, idx = best_atom(self, x, a, b2, generator, ll)
        check_result("x", best)
        return best.to(torch.float64) + shift, idx

    def nearest(self, x: torch.Tensor, abar: float = 1.0) -> Nearest:
        """`fsdiag.kernels.nearest.nearest` on these atoms: exact in float64, with every tie."""
        return nearest(self, x, abar)

    def atoms_at(self, index: torch.Tensor) -> torch.Tensor:
        """The atoms x^(i) for a tensor of indices (any shape), in the kernels' dtype."""
        return self.atoms[index].to(self.dtype)

    def log_weights_at(self, index: torch.Tensor) -> torch.Tensor:
        """log pi_i in float64 for a tensor of indices."""
        return self.log_weights64[index]

    def log_posterior_weights(self, log_lik) -> torch.Tensor:
        """log psi_i = log_softmax(log pi_i + l_i) over every atom, in float64."""
        return torch.log_softmax(self.log_weights64 + self.check_log_lik(log_lik), 0)

    def responsibilities(self, x: torch.Tensor, a: float, b2: float, log_lik=None) -> torch.Tensor:
        """Dense (B, N) softmax of the logits (plus log_lik): for small N only."""
        logits = self.logits(x - a * self.center, slice(None), a, b2)
        if log_lik is not None:
            logits = logits + self.shifted_log_lik(log_lik)[0]
        out = torch.softmax(logits, dim=1)
        check_result("x", out)
        return out

    def prior_mean(self) -> torch.Tensor:
        """sum_i pi_i x^(i) (centred: no cancellation), the abar -> 0 limit of the Tweedie mean."""
        return self.center + torch.exp(self.log_weights) @ (self.atoms - self.center)

    def log_likelihoods(self, lik) -> torch.Tensor:
        """(N,) float64 l_i = log p(y | x^(i)) for every atom: `lik.log_prob` on blocks of ~1 MiB
        of float64 atoms, written into one output (no float64 copy of the atoms, and temporaries
        small enough that the allocator's heap does not grow)."""
        out = torch.empty(self.n_atoms, dtype=torch.float64, device=self.device)
        blocks = list(self.blocks(8))

        def put(j, value):
            out[blocks[j]] = value

        run_ordered(len(blocks), lambda j: lik.log_prob(self.atoms[blocks[j]].to(torch.float64)), put,
                    self.block_threads(lik))
        return out

    def block_threads(self, lik) -> int:
        """Threads for `log_likelihoods`' blocks: on the CPU, torch's intra-op thread count for a
        likelihood whose log_prob is safe to call from several threads at once (a
        GaussianLikelihood with one of fsdiag.forward's models: pure tensor functions) from 4
        blocks on (BLOCKS_WORK entries), else 1.
        Its ~1 MiB blocks are too small to split each op between threads (at MNIST size 360
        blocks x ~10 ops: with two intra-op threads on a busy 2-core machine each op waited
        for the other thread, 3 s against 0.2 s on one thread); whole blocks on separate threads
        do not wait for each other."""
        from ..forward import ForwardModel
        from ..likelihood import GaussianLikelihood

        if (self.device.type != "cpu" or type(lik) is not GaussianLikelihood
                or type(lik.forward).__module__ != ForwardModel.__module__
                or self.n_atoms * self.dim < BLOCKS_WORK):
            return 1
        return thread_budget()

