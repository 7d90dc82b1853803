"""The sweep runner: many independent jobs on a local process pool, or on a Dask distributed cluster.

``run_sweep(fn, items)`` calls ``fn(item)`` for every item and returns the results in the items' order. Where the
jobs run:

* ``cluster=None`` (default): a local :class:`concurrent.futures.ProcessPoolExecutor` with ``workers`` processes
  (one per core by default; ``workers=1`` runs in this process, which is what a debugger wants);
* ``cluster="tcp://scheduler:8786"`` (or a ``distributed`` ``Cluster`` / ``Client`` object): the jobs are submitted
  to that Dask distributed scheduler (``pip install -e .[cluster]``). Dask's own scheduler does the distribution,
  retries and data movement - no job server of ours.

``fn`` and the items must be picklable (a module-level function, plain data). ``progress(done, total, result)``
is called in this process as each job finishes (in completion order), which is how ``systolic8 explore`` prints
points done, the best so far and the time left.

``systolic8 explore`` and its scaling view run their points through this module; so should any later campaign.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor, as_completed

__all__ = ["run_sweep", "default_workers", "ClusterUnavailable"]


class ClusterUnavailable(RuntimeError):
    """``--cluster`` was given but Dask distributed is not installed or the scheduler cannot be reached."""


def default_workers() -> int:
    """One worker per core this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:      # not on Linux
        return max(1, os.cpu_count() or 1)


def _client(cluster):
    try:
        from distributed import Client
    except ImportError:
        raise ClusterUnavailable("--cluster needs Dask distributed: pip install -e .[cluster]") from None
    if isinstance(cluster, Client):
        return cluster, False
    try:
        return Client(cluster, timeout="20s"), True
    except (OSError, TimeoutError) as exc:
        raise ClusterUnavailable(f"cannot reach the Dask scheduler at {cluster!r}: {exc}; start one "
                                 f"(`dask scheduler` and `dask worker ADDRESS`) or leave out --cluster") from None


def run_sweep(fn, items, *, workers: int | None = None, cluster=None, progress=None) -> list:
    """``[fn(item) for item in items]``, run in parallel (see the module docstring); an exception in a job is
    raised here (the first one, after the pool is shut down)."""
    items = list(items)
    total = len(items)
    results = [None] * total
    report = progress or (lambda done, total, result: None)
    if cluster is not None:
        client, owned = _client(cluster)
        try:
            futures = client.map(fn, items, pure=False)
            index = {f.key: i for i, f in enumerate(futures)}
            from distributed import as_completed as dask_completed
            for done, future in enumerate(dask_completed(futures), 1):
                results[index[future.key]] = future.result()
                report(done, total, results[index[future.key]])
        finally:
            if owned:
                client.close()
        return results
    workers = default_workers() if workers is None else workers
    if workers <= 1 or total <= 1:
        for i, item in enumerate(items):
            results[i] = fn(item)
            report(i + 1, total, results[i])
        return results
    with ProcessPoolExecutor(max_workers=min(workers, total)) as pool:
        futures = {pool.submit(fn, item): i for i, item in enumerate(items)}
        for done, future in enumerate(as_completed(futures), 1):
            results[futures[future]] = future.result()
            report(done, total, results[futures[future]])
    return results
