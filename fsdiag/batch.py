"""Run many independent tasks and hand back their results as they finish: in this process, a
local process pool, or a Dask cluster. The engine under `fsdiag regenerate` (one task per
notebook run) and `fsdiag leaderboard` (one task per sampler x problem x budget x seed): a task
function never raises (it reports its failure in its result), so one failure fails alone."""
from __future__ import annotations

__all__ = ["execute", "run_batch"]


def execute(fn, tasks: list, *, jobs: int = 1, scheduler: str | None = None, key=str):
    """Yield fn(task) for every task, as they finish. jobs: processes (or Dask workers with
    scheduler="local"); scheduler: None (this machine), "local" (a dask.distributed.LocalCluster
    of `jobs` workers) or a Dask scheduler address ("tcp://host:8786"). key(task): the task's
    name on the Dask dashboard. fn and tasks must pickle when jobs > 1 or on Dask."""
    if not tasks:
        return
    if scheduler is not None:
        from dask.distributed import Client, LocalCluster, as_completed
        cluster = LocalCluster(n_workers=jobs, threads_per_worker=1, processes=True, dashboard_address=None) \
            if scheduler == "local" else None
        client = Client(cluster if cluster is not None else scheduler)
        try:
            futures = [client.submit(fn, task, pure=False, key=key(task)) for task in tasks]
            for fut in as_completed(futures):
                yield fut.result()
        finally:
            client.close()
            if cluster is not None:
                cluster.close()
    elif jobs == 1:
        for task in tasks:
            yield fn(task)
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            for fut in as_completed([pool.submit(fn, task) for task in tasks]):
                yield fut.result()


def run_batch(fn, tasks: list, *, done=None, force: bool = False, jobs: int = 1, scheduler: str | None = None,
              key=str, desc: str = "batch", unit: str = "run", label=None, progress: bool = True,
              before=None) -> tuple[list[dict], int]:
    """Run the tasks not finished yet and return (every task's row, in task order; how many ran).
    done(task): the row of a finished task, or None (then it runs; every task with force);
    rows carry the task's "key" (task.key); label(row): the progress bar's note for a finished
    row; before(todo): called with the tasks to run before any runs (e.g. to set threads)."""
    from tqdm import tqdm

    rows, todo = {}, []
    for task in tasks:
        row = None if force or done is None else done(task)
        if row is None:
            todo.append(task)
        else:
            rows[task.key] = row
    if before is not None:
        before(todo)
    bar = tqdm(total=len(todo), desc=desc, unit=unit, disable=not progress or not todo)
    for row in execute(fn, todo, jobs=jobs, scheduler=scheduler, key=key):
        rows[row["key"]] = row
        if label is not None:
            bar.set_postfix_str(label(row))
        bar.update()
    bar.close()
    return [rows[task.key] for task in tasks], len(todo)
