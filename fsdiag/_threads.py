"""Thread counts that suit the problem size.

A streamed kernel call on a small problem (the 1-D and 2-D chapters: a few hundred atoms, a few
thousand particles) is dominated by per-call overhead, and torch's intra-op threads only add
synchronisation: on a loaded 2-core machine one step took ~100 ms with 2 threads against ~1 ms
with one. Large calls (images, 10^4+ atoms) keep the caller's thread count.

The same holds for every small op around a large one: each op split between threads waits for
all of them, and on a busy machine one of them is often descheduled for a whole time slice.
`run_ordered` therefore splits large work into whole items on Python threads that each run at
one intra-op thread (the CPU fused route's chunks of atoms), not each op between threads.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import torch

__all__ = ["threads_for", "thread_budget", "run_ordered", "SMALL_WORK"]

# Multiply-adds (batch x atoms x d) below which one thread is used. A call this size takes a few
# milliseconds on one core, so splitting it cannot win much and can lose a lot.
SMALL_WORK = 2 ** 25


_LOCAL = threading.local()      # .budget: the caller's thread count inside a one-thread block


def thread_budget() -> int:
    """The intra-op threads the caller gave torch: torch.get_num_threads(), except inside a block
    that `threads_for` (or `run_ordered`) ran on fewer, where it is the count outside that block."""
    budget = getattr(_LOCAL, "budget", None)
    return torch.get_num_threads() if budget is None else budget


@contextmanager
def threads_for(work: float, device: torch.device | None = None):
    """Run the block with one intra-op thread when `work` is below SMALL_WORK, else with the
    caller's count (`thread_budget`: a large kernel inside a one-thread block, e.g. a sampler's
    step of small (B, d) updates around the reduction over the atoms, gets the caller's threads
    back). CPU only: on another `device` the block's kernels do not use these threads, and the
    thread count is left alone, saving two set_num_threads calls per kernel call."""
    if device is not None and torch.device(device).type != "cpu":
        yield
        return
    budget = thread_budget()
    want = 1 if work < SMALL_WORK else budget
    now = torch.get_num_threads()
    if want == now:
        yield
        return
    before = getattr(_LOCAL, "budget", None)
    _LOCAL.budget = budget
    torch.set_num_threads(want)
    try:
        yield
    finally:
        torch.set_num_threads(now)
        _LOCAL.budget = before


# Worker threads for `run_ordered` (created on first use, reused: each keeps its OpenMP state).
_POOL: ThreadPoolExecutor | None = None
_POOL_SIZE = 0
_POOL_LOCK = threading.Lock()


def _forget_pool() -> None:
    """In a forked child the pool's threads do not exist: start a new pool there (a task handed
    to the inherited one would never run, and run_ordered would wait for it forever)."""
    global _POOL, _POOL_SIZE, _POOL_LOCK
    _POOL, _POOL_SIZE, _POOL_LOCK = None, 0, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def _pool(n: int) -> ThreadPoolExecutor:
    global _POOL, _POOL_SIZE
    with _POOL_LOCK:
        if _POOL is None or _POOL_SIZE < n:
            if _POOL is not None:
                _POOL.shutdown(wait=False)
            _POOL, _POOL_SIZE = ThreadPoolExecutor(n, thread_name_prefix="fsdiag-split"), n
        return _POOL


def run_ordered(n: int, fn, consume, threads: int, window: int | None = None) -> None:
    """consume(i, fn(i)) for i in range(n), with the fn(i) computed on `threads` Python threads
    (this one and threads - 1 pooled workers), each at one intra-op thread, and consume called
    in index order (whatever thread finished which item, the results are combined in one order:
    the numbers are those of the sequential loop). Items are handed out one at a time as threads
    come free (a thread that the OS deschedules on a busy machine holds up one item, not half the
    work, as a static split would), at most `window` (default 2 x threads) items ahead of the
    oldest one not yet consumed (the finished ones wait in memory). torch's ops release the GIL,
    so the threads run in parallel; the process's intra-op thread count is 1 meanwhile (torch's
    setting is process-wide) and restored after. The first exception is raised after every
    thread has stopped."""
    if threads <= 1 or n <= 1:
        for i in range(n):
            consume(i, fn(i))
        return
    window = 2 * threads if window is None else max(1, window)
    cv = threading.Condition()
    state = {"next": 0, "done": 0, "error": None}
    pending: dict = {}

    def work():
        while True:
            with cv:
                i = state["next"]
                if state["error"] is not None or i >= n:
                    return
                state["next"] = i + 1
                while i >= state["done"] + window and state["error"] is None:
                    cv.wait()
                if state["error"] is not None:
                    return
            try:
                result = fn(i)
                with cv:
                    pending[i] = result
                    while state["done"] in pending:       # consume in order, under the lock
                        consume(state["done"], pending.pop(state["done"]))
                        state["done"] += 1
                    cv.notify_all()
            except BaseException as err:  # noqa: BLE001 - re-raised by the caller below
                with cv:
                    if state["error"] is None:
                        state["error"] = err
                    cv.notify_all()
                return

    before, budget = torch.get_num_threads(), getattr(_LOCAL, "budget", None)
    torch.set_num_threads(1)
    _LOCAL.budget = 1                    # fn on this thread: one intra-op thread, nested blocks too
    try:
        futures = [_pool(threads - 1).submit(work) for _ in range(threads - 1)]
        work()
        for f in futures:
            f.result()
    finally:
        torch.set_num_threads(before)
        _LOCAL.budget = budget
    if state["error"] is not None:
        raise state["error"]
