"""Run independent jobs as Ray tasks: bounded parallelism, time limits, crash isolation, ordered results.

Each job is ``fn(*args)`` (or ``fn(shared, *args)``) in a Ray worker process, never in the driver:

- a job that raises is reported with its error (type and first line) and not retried: it would fail
  the same way again;
- a worker that dies (SIGKILL, out of memory, a segfault in a kernel) is retried by Ray up to
  ``retries`` times, then reported as a crash; the other jobs carry on;
- a job still running ``timeout`` seconds after it was started is cancelled (its worker is killed) and
  reported as timed out;
- ``isolate=True`` gives each job a fresh worker process (nothing leaks from one job into the next);
  otherwise workers are reused and ``shared`` (pickled by :func:`ptsq.distributed.pickling.dumps`, int8
  modules included, and put into the object store once) is deserialised once per worker process.

Results come back in the order of ``jobs``, whatever order they finished in, so a caller that folds
them gets the same answer as a sequential loop over the same jobs.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ptsq.distributed.cluster import Cluster, deferred_interrupts
from ptsq.distributed.heap import keep_heap
from ptsq.distributed.pickling import dumps, loads
from ptsq.errors import PtsqError, first_line
from ptsq.progress import task


@dataclass
class Outcome:
    """What one job gave: ``value`` when ``ok``, else ``error`` (one line) and ``kind`` of failure."""

    key: str
    ok: bool
    value: Any = None
    error: str | None = None
    kind: str | None = None  # "error" | "crashed" | "timeout"
    seconds: float = 0.0


_SHARED: dict[str, Any] = {}  # per worker process: the deserialised shared value of the current fan-out


def _call(fn: Callable[..., Any], shared: list[Any], args: tuple[Any, ...], threads: int, engine: str) -> Any:
    """Runs in the worker: threads and int8 kernels as the driver's, ``shared`` fetched once per process."""
    import torch

    keep_heap()  # a fresh worker would re-fault its buffers on every forward pass (see ptsq.distributed.heap)
    torch.set_num_threads(threads)
    if engine in torch.backends.quantized.supported_engines:
        torch.backends.quantized.engine = engine
    if not shared:
        return fn(*args)
    import ray

    key = shared[0].hex()
    if key not in _SHARED:
        _SHARED.clear()  # one fan-out at a time per worker: drop the previous one's models
        _SHARED[key] = loads(ray.get(shared[0]))
    return fn(_SHARED[key], *args)


def describe_failure(exc: BaseException) -> tuple[str, str]:
    """(kind, one line) for an exception raised by ``ray.get`` on a job's result."""
    import ray.exceptions as rx

    if isinstance(exc, rx.TaskCancelledError):
        return "timeout", "cancelled"
    if isinstance(exc, rx.RayTaskError):
        cause = exc.cause if getattr(exc, "cause", None) is not None else exc
        if isinstance(cause, PtsqError):  # ptsq's own errors are written for the user: their message alone
            return "error", cause.message
        return "error", f"{type(cause).__name__}: {first_line(cause)}"
    if isinstance(exc, (rx.WorkerCrashedError, rx.ActorDiedError, rx.NodeDiedError, rx.OutOfMemoryError)):
        return "crashed", f"its worker process died ({type(exc).__name__}) on every attempt"
    return "crashed", f"{type(exc).__name__}: {first_line(exc)}"


def fan_out(
    fn: Callable[..., Any],
    jobs: Sequence[tuple[str, tuple[Any, ...]]],
    cluster: Cluster,
    *,
    shared: Any = None,
    timeout: float | None = None,
    retries: int = 2,
    isolate: bool = False,
    threads: int = 1,
    torch_threads: int | None = None,
    progress: bool = False,
    description: str = "jobs",
    on_result: Callable[[int, Outcome], None] | None = None,
) -> list[Outcome]:
    """Run ``fn(*args)`` (``fn(shared, *args)`` when ``shared`` is given) for every ``(key, args)`` job.

    At most ``cluster.slots(threads)`` jobs run at once, each with ``threads`` CPUs and ``torch_threads``
    torch threads (default ``threads``; more oversubscribes, for jobs whose results depend on the thread
    count, such as the speed guard's verdicts).
    ``fn`` must be importable on the workers (a module-level function of ptsq or of a shipped folder).
    ``on_result(index, outcome)`` is called as each job finishes (in completion order).
    """
    ray = cluster.ray
    cluster.release_actors()  # idle evaluation actors would hold the CPUs these tasks need
    remote = ray.remote(max_calls=1 if isolate else 0)(_call).options(
        num_cpus=threads, max_retries=retries, retry_exceptions=False
    )
    import torch

    box = [ray.put(dumps(shared))] if shared is not None else []
    engine = torch.backends.quantized.engine
    slots = cluster.slots(threads)
    outcomes: list[Outcome | None] = [None] * len(jobs)
    running: dict[Any, tuple[int, float]] = {}  # ref -> (job index, start time)
    todo = list(range(len(jobs)))[::-1]
    done = 0
    with task(description, len(jobs), progress) as update:

        def finish(i: int, out: Outcome) -> None:
            nonlocal done
            outcomes[i] = out
            done += 1
            update(done)
            if on_result:
                on_result(i, out)

        try:
            while todo or running:
                while todo and len(running) < slots:
                    i = todo.pop()
                    ref = remote.remote(fn, box, jobs[i][1], torch_threads or threads, engine)
                    running[ref] = (i, time.perf_counter())
                wait = None
                if timeout is not None:
                    oldest = min(t0 for _, t0 in running.values())
                    wait = max(0.0, oldest + timeout - time.perf_counter())
                ready = cluster.wait(list(running), timeout=wait)
                now = time.perf_counter()
                if not ready:  # the oldest job ran out of time: kill its worker, report it
                    for ref, (i, t0) in list(running.items()):
                        if timeout is not None and now - t0 >= timeout:
                            ray.cancel(ref, force=True, recursive=True)
                            del running[ref]
                            finish(i, Outcome(
                                jobs[i][0], False, error=f"timed out after {timeout:g} s", kind="timeout",
                                seconds=round(now - t0, 2),
                            ))  # fmt: skip
                    continue
                ref = ready[0]
                i, t0 = running.pop(ref)
                try:
                    out = Outcome(jobs[i][0], True, ray.get(ref), seconds=round(now - t0, 2))
                except Exception as exc:
                    kind, why = describe_failure(exc)
                    out = Outcome(jobs[i][0], False, error=why, kind=kind, seconds=round(now - t0, 2))
                finish(i, out)
        finally:
            with deferred_interrupts():
                for ref in running:  # interrupted or failed: leave nothing running on the cluster
                    with contextlib.suppress(Exception):
                        ray.cancel(ref, force=True)
    return [o for o in outcomes if o is not None]


__all__ = ["Outcome", "describe_failure", "fan_out"]
