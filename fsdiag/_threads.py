"""Thread counts that suit the problem size.

A streamed kernel call on a small problem (the 1-D and 2-D chapters: a few hundred atoms, a few
thousand particles) is dominated by per-call overhead, and torch's intra-op threads only add
synchronisation: on a loaded 2-core machine one step took ~100 ms with 2 threads against ~1 ms
with one. Large calls (images, 10^4+ atoms) keep the caller's thread count.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch

__all__ = ["threads_for", "SMALL_WORK"]

# Multiply-adds (batch x atoms x d) below which one thread is used. A call this size takes a few
# milliseconds on one core, so splitting it cannot win much and can lose a lot.
SMALL_WORK = 2 ** 25


@contextmanager
def threads_for(work: float, device: torch.device | None = None):
    """Run the block with one intra-op thread when `work` is below SMALL_WORK (CPU only: on
    another `device` the block's kernels do not use these threads, and the thread count is left
    alone, saving two set_num_threads calls per kernel call)."""
    n = torch.get_num_threads()
    if n == 1 or work >= SMALL_WORK or (device is not None and torch.device(device).type != "cpu"):
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)
