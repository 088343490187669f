"""The streamed passes over atoms, from torch ops (any device, autograd, torch.func).

Each pass walks the atoms in chunks (`store.chunks`), keeps a running max of the logits per query
and rescales its running sums when the max grows: a log-sum-exp computed like attention, in
memory O(batch x chunk), never O(batch x N x d). The logits of atom i for a query x are

    log pi_i + (a / b^2) (x - a c) . (x^(i) - c) - (a^2 / 2 b^2) ||x^(i) - c||^2,

log w_i(x_t) up to a per-query constant (c the store's centre; docs/design.md §2.2). `a` and `b2`
are floats, or (B, 1) tensors for a noise level per query (the denoiser's mixed batches).
`store` is a `fsdiag.kernels.Atoms` (or a subclass), read through its public methods.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .._threads import threads_for

__all__ = ["exp_floor", "shifted_exp", "start_max", "functorch_wrapped", "softmax_pass",
           "cov_pass", "best_atom"]


def exp_floor(dtype: torch.dtype) -> float:
    """The clamp below which exp's argument is treated as exp(-inf) = 0: torch.exp on CPU is ~15x
    slower for underflowing arguments (docs/design.md §7)."""
    return -80.0 if dtype in (torch.float32, torch.float16, torch.bfloat16) else -700.0


def shifted_exp(logits: torch.Tensor, shift: torch.Tensor, floor: float) -> torch.Tensor:
    """exp(logits - shift), with terms below exp(floor) set to exactly 0; in place unless
    autograd is recording through it. Clamping first keeps exp on its fast path; zeroing
    the floor keeps the next matmul free of subnormal products (2x slower on CPU)."""
    cut = 2.0 * math.exp(floor)
    if logits.requires_grad:
        return F.threshold(torch.exp((logits - shift).clamp_min(floor)), cut, 0.0)
    return F.threshold_(logits.sub_(shift).clamp_(min=floor).exp_(), cut, 0.0)


def with_likelihood(logits: torch.Tensor, ll: torch.Tensor) -> torch.Tensor:
    """Stack (logits, logits + ll) as two heads (torch.stack is ~5x slower on CPU here)."""
    if logits.requires_grad:
        return torch.stack([logits, logits + ll])
    out = logits.new_empty((2, *logits.shape))
    out[0].copy_(logits)
    torch.add(logits, ll, out=out[1])
    return out


def start_max(heads: int, rows: int, dtype, device) -> torch.Tensor:
    """Initial running max of a streamed log-sum-exp: a finite floor, not -inf, so that a
    chunk whose atoms all have zero prior weight (logits -inf) never computes -inf - (-inf)."""
    return torch.full((heads, rows), torch.finfo(dtype).min, dtype=dtype, device=device)


def functorch_wrapped(t: torch.Tensor) -> bool:
    """Whether `t` is wrapped by a torch.func transform (vmap, grad, jvp): no out= writes then."""
    return bool(torch._C._functorch.is_functorch_wrapped_tensor(t))


def softmax_pass(store, xq: torch.Tensor, a, b2, ll: torch.Tensor | None,
                 heads: tuple[bool, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """The one streamed softmax: per head (True: the logits plus ll, the per-atom log-likelihood)
    log sum_i exp(logit_i) (H, B) and the weighted mean of the centred atoms (H, B, d). Running max
    and rescale-and-add (addmm into a running sum loses ~2e-4 in float32)."""
    B, d = xq.shape
    H = len(heads)
    dtype, device = store.dtype, store.device
    floor = exp_floor(dtype)
    xs = None if not isinstance(a, torch.Tensor) else xq * (a / b2)
    run_max = start_max(H, B, dtype, device)
    run_sum = torch.zeros(H, B, dtype=dtype, device=device)
    acc = torch.zeros(H, B, d, dtype=dtype, device=device)
    for sl in store.chunks(H * B):
        xc = store.centred(sl)
        if xs is None:
            bias = store.bias(sl, a, b2)
            if heads == (True,):
                bias = bias + ll[sl]
            logits = torch.addmm(bias, xq, xc.T, alpha=a / b2)
        else:
            logits = torch.matmul(xs, xc.T).add_(store.bias(sl, a, b2))
            if heads == (True,):
                logits = logits + ll[sl]
        lg = logits.unsqueeze(0) if H == 1 else with_likelihood(logits, ll[sl])
        new_max = torch.maximum(run_max, lg.amax(-1))
        rescale = torch.exp((run_max - new_max).clamp_min(floor))
        p = shifted_exp(lg, new_max.unsqueeze(-1), floor)
        run_sum = run_sum * rescale + p.sum(-1)
        acc = acc * rescale.unsqueeze(-1) + (p.reshape(H * B, p.shape[-1]) @ xc).reshape(H, B, d)
        run_max = new_max
    return run_max + torch.log(run_sum), acc / run_sum.unsqueeze(-1)


def cov_pass(store, x: torch.Tensor, a, b2, v: torch.Tensor,
             mean: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One streamed pass for C v centred at `mean` (B, d), v (B, k, d): returns this pass's own
    log-normaliser (B,) and sum_i w_i (x^(i) - mean)((x^(i) - mean) . v) (B, k, d), the w_i
    normalised over the store's atoms (a sharded store combines shards with the log-normalisers)."""
    B, d = x.shape
    k = v.shape[1]
    dtype, device = store.dtype, store.device
    center = store.center
    mc = mean - center                                           # (B, d) centred mean
    mv = (mc.unsqueeze(1) * v).sum(-1)                           # (B, k)
    xq = x - a * center
    floor = exp_floor(dtype)
    lhs = torch.cat([xq * (a / b2), v.reshape(B * k, d)])        # one matmul for logits and x_i . v
    acc = torch.zeros(B, k, d, dtype=dtype, device=device)
    wsum = torch.zeros(B, k, dtype=dtype, device=device)
    run_max = start_max(1, B, dtype, device)[0]
    run_sum = torch.zeros(B, dtype=dtype, device=device)
    # The weights are normalised within this pass (its own running max and sum), not by the
    # moments pass's log_norm: the two round the logits differently, and in float32 at small b
    # near a tie between atoms exp(logits - log_norm) then overshoots by orders of magnitude.
    # k vectors per query multiply the block: chunks shrink to keep memory flat.
    # Plain tensors use reused buffers; autograd and torch.func transforms (the denoiser's
    # derivatives) get fresh ones (they cannot write into a plain buffer).
    reuse = not any(t.requires_grad or functorch_wrapped(t) for t in (x, v, mean, lhs))
    with threads_for(B * (k + 1) * store.n_atoms * d):
        for sl in store.chunks(B * (k + 1)):
            xc = store.centred(sl)
            n_sl = sl.stop - sl.start
            q = torch.matmul(lhs, xc.T, out=store.reused(reuse, "cov_q", (lhs.shape[0], n_sl)))
            logits = q[:B].add_(store.bias(sl, a, b2))
            new_max = torch.maximum(run_max, logits.amax(-1))
            rescale = torch.exp((run_max - new_max).clamp_min(floor))
            p = shifted_exp(logits, new_max.unsqueeze(1), floor)
            diff = torch.sub(q[B:].reshape(B, k, n_sl), mv.unsqueeze(-1),
                             out=store.reused(reuse, "cov_ps", (B, k, n_sl)))
            # w_i (x_i - m) . v (in place on the buffer; autograd needs diff kept for p's gradient)
            ps = diff.mul_(p.unsqueeze(1)) if reuse else diff * p.unsqueeze(1)
            run_sum = run_sum * rescale + p.sum(-1)
            wsum = wsum * rescale.unsqueeze(-1) + ps.sum(-1)
            acc = acc * rescale[:, None, None] + (ps.reshape(B * k, n_sl) @ xc).reshape(B, k, d)
            run_max = new_max
    out = (acc - mc.unsqueeze(1) * wsum.unsqueeze(-1)) / run_sum[:, None, None]
    return run_max + torch.log(run_sum), out


def best_atom(store, x: torch.Tensor, a: float, b2: float, generator,
              ll: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The streamed (Gumbel-)max of the logits (plus ll, already shifted, when given): per query,
    the best value (in the store's dtype) and its index among the store's atoms. Gumbel noise
    -log(-log u) from `generator` makes it a draw from the softmax; generator=None: the arg-max."""
    dtype, device = store.dtype, store.device
    xq = x - a * store.center
    B, tiny = x.shape[0], torch.finfo(dtype).tiny
    best = start_max(1, B, dtype, device)[0]
    idx = torch.zeros(B, dtype=torch.long, device=device)
    reuse = not (x.requires_grad or functorch_wrapped(x))       # blocks in reused buffers
    with threads_for(B * store.n_atoms * store.dim, device):
        for sl in store.chunks(B):
            n = sl.stop - sl.start
            logits = store.logits(xq, sl, a, b2, out=store.reused(reuse, "atom_logits", (B, n)))
            if ll is not None:
                logits.add_(ll[sl])
            if generator is not None:                             # Gumbel noise, in place
                u = torch.rand((B, n), generator=generator, dtype=dtype, device=device,
                               out=store.reused(reuse, "atom_noise", (B, n)))
                logits.sub_(u.clamp_min_(tiny).log_().neg_().log_())
            val, arg = logits.max(1)
            better = val > best
            best = torch.where(better, val, best)
            idx = torch.where(better, arg + sl.start, idx)
    return best, idx
