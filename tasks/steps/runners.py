"""Where many small tasks of one step run (`runtime.task_runner`): one after another in the flow's
own process (`local`), or in parallel on a Dask cluster through prefect-dask (`dask`).

The tasks themselves know nothing of Dask, so another backend can come later. Dask's nanny spawns
its workers with `MALLOC_TRIM_THRESHOLD_=65536` and `OMP_NUM_THREADS=1` (`distributed.yaml`,
`nanny.pre-spawn-environ`): that undoes the allocator settings measured here as halving CPU step
time, and pins torch to one thread whatever the config asks. Both are set here instead, before the
LocalCluster spawns a worker. The cluster binds 127.0.0.1, and the scheduler's small status server
(no dashboard: bokeh is not installed) a free loopback port, so two runs never clash on 8787.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from prefect import Task

from tasks.config.spec import DaskSpec, RuntimeSpec
from tasks.core.allocator import ALLOCATOR_SETTINGS

R = TypeVar("R")
RunAll = Callable[[Task[..., R], list[dict[str, Any]]], list[R]]


@contextmanager
def task_runner(runtime: RuntimeSpec) -> Iterator[RunAll[Any]]:
    """A function that runs `task` once per parameter set and returns the results in order. Each
    call is a task run of the current flow run, on either runner; a failed call raises."""
    if runtime.task_runner == "local":
        yield lambda task, calls: [task(**parameters) for parameters in calls]
        return
    with dask_task_runner(runtime.dask) as runner:
        runner.client  # noqa: B018  (starts or connects the cluster now: its failure is not a task's)

        def run_all(task: Task[..., Any], calls: list[dict[str, Any]]) -> list[Any]:
            futures = [runner.submit(task, parameters) for parameters in calls]
            return [future.result() for future in futures]

        yield run_all


def dask_task_runner(spec: DaskSpec) -> Any:
    """prefect-dask's runner: for `spec.address` an existing scheduler, else a LocalCluster of
    `spec.workers` processes with `spec.threads_per_worker` threads each (torch's too)."""
    require_prefect_dask()
    import dask
    from prefect_dask import DaskTaskRunner

    if spec.address:
        return DaskTaskRunner(address=spec.address)
    threads = str(spec.threads_per_worker)
    dask.config.set({"distributed.nanny.pre-spawn-environ": {
        **ALLOCATOR_SETTINGS, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}})
    return DaskTaskRunner(cluster_kwargs={"n_workers": spec.workers, "threads_per_worker": spec.threads_per_worker,
                                          "processes": True, "host": "127.0.0.1",
                                          # None still serves on :8787; a free port cannot clash
                                          "dashboard_address": "127.0.0.1:0"})


def require_prefect_dask() -> None:
    """prefect-dask is an optional extra: without it, one line with the fix, not an ImportError."""
    import importlib.util

    from tasks.core.errors import SpecError

    if importlib.util.find_spec("prefect_dask") is None:
        raise SpecError("runtime.task_runner is dask, but prefect-dask is not installed. Fix: pip install "
                        "'transferflow[dask]', or set runtime.task_runner: local (or pass --task-runner local).")
