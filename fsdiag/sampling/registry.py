"""The one registry of samplers: `SAMPLERS`, name -> sampler function.

Every sampler shares one signature, k-diffusion style:
    f(prior, lik, *, n_particles, n_steps, t_min, t_max, schedule, seed, generator, record,
      progress, **its own parameters) -> fsdiag.Run
(`sample` also takes `method`, a likelihood approximation of `fsdiag.METHODS`). The test-suite
runs every registered sampler (tests/test_smc.py), so a new one is tested the moment it is added.
"""
from __future__ import annotations

import functools

from .._threads import threads_for
from ..registry import Registry

__all__ = ["SAMPLERS", "register_sampler"]

SAMPLERS = Registry("sampler")


def register_sampler(fn=None, *, name: str | None = None, small_on_one_thread: bool = True):
    """Add a sampler function to `SAMPLERS` under `name` (default its __name__); usable as a
    decorator. small_on_one_thread: run it on one intra-op thread when the problem is small
    (fsdiag._threads: per-call overhead dominates there, and extra threads only add
    synchronisation — a 1024-particle logsumexp took ~25 ms with 2 threads on a loaded machine)."""
    if fn is None:
        return functools.partial(register_sampler, name=name, small_on_one_thread=small_on_one_thread)
    if not callable(fn):
        raise TypeError("register_sampler: expected a function")
    run = fn
    if small_on_one_thread:
        @functools.wraps(fn)
        def run(prior, lik, *args, **kwargs):
            n = kwargs.get("n_particles", 1024)
            work = (n if isinstance(n, int) else 1) * getattr(prior, "dim", 1) * getattr(prior, "n_atoms", 1)
            with threads_for(work):
                return fn(prior, lik, *args, **kwargs)
    return SAMPLERS.register(run, name=name or fn.__name__)
