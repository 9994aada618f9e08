"""Map a function over items on Ray actors that each load a context (models) once; results in item order.

Evaluation uses it: the context is the fp32 model and every artifact, each item is a few whole batches of
file paths, and the function reads, preprocesses and runs them (:func:`ptsq.evaluation.run_chunks`).
The driver hands items out and gets results back in the original order, so whatever folds them
(the evaluation's tally) computes exactly what a loop in one process computes.

Why actors fed by the driver rather than Ray Data ``map_batches``: Ray Data re-cuts its blocks into
batches of its own, so batches (and with them the kernels' batch sizes and the order outputs arrive in)
would differ from the single-process run's, and "identical" would rest on every kernel being batch-size
invariant. Here an item (whole batches) is the unit of work and of retry: an actor killed mid-item is
restarted by Ray (its context loaded again) and the item retried; the driver keeps each item's result
once, so nothing is counted twice or lost. At most ``in_flight`` items per actor are outstanding (memory
stays bounded) and the next item goes to whichever actor has the fewest (a slow node does not hold the
others up).

The context is pickled once (:func:`ptsq.distributed.pickling.dumps`: the user's own model code by
value, int8 modules and artifacts included) and put into the object store; each call carries only its
reference. Files named in the items must be readable at the same path on every node.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from ptsq.distributed.cluster import Cluster
from ptsq.distributed.heap import keep_heap
from ptsq.distributed.pickling import dumps, loads
from ptsq.errors import ClusterError, ModelLoadError, PtsqError, first_line

IN_FLIGHT = 2  # items queued per actor: one running, one ready to start
RESTARTS = 3  # an actor that dies is restarted (and its items retried) this many times
START_TIMEOUT = 600.0  # seconds for the actors to start and load the context (big models on busy nodes)


class MapWorker:
    """A Ray actor: the current context, loaded on first use (and again after a restart or for a new context),
    and ``fn`` applied to items."""

    def __init__(self, threads: int, engine: str) -> None:
        import torch

        keep_heap()  # else a fresh worker re-faults its activation buffers on every batch (see heap)
        torch.set_num_threads(threads)
        if engine in torch.backends.quantized.supported_engines:
            torch.backends.quantized.engine = engine  # int8 modules run the driver's kernels
        self.ctx: Any = None
        self.key: str | None = None

    def _context(self, box: list[Any], what: str) -> Any:
        if self.key != box[0].hex():
            import ray

            self.ctx, self.key = None, None  # the previous context's models go before the next ones load
            try:
                self.ctx = loads(ray.get(box[0]))
            except Exception as exc:
                raise ModelLoadError(
                    f"a Ray worker cannot load the {what}: {type(exc).__name__}: {first_line(exc)}",
                    "install what the model's code imports on every node, or run without --ray",
                ) from None
            self.key = box[0].hex()
        return self.ctx

    def ready(self, box: list[Any], what: str) -> int:
        self._context(box, what)
        return os.getpid()

    def run(self, fn: Callable[[Any, Any], Any], box: list[Any], what: str, item: Any) -> Any:
        return fn(self._context(box, what), item)


def actor_pool(cluster: Cluster, threads: int, n: int) -> list[Any]:
    """``n`` MapWorker actors of ``threads`` CPUs, kept between calls on one connection (their processes start
    once: Python, torch and ptsq load once), killed when the cluster closes or a map fails. One pool at a
    time: a pool of another size would wait for CPUs the first one holds."""
    import torch

    key = ("map", threads)
    if set(cluster.actors) - {key}:
        cluster.release_actors()
    pool = cluster.actors.setdefault(key, [])
    cls = cluster.ray.remote(MapWorker).options(num_cpus=threads, max_restarts=RESTARTS, max_task_retries=RESTARTS)
    while len(pool) < n:
        pool.append(cls.remote(threads, torch.backends.quantized.engine))
    return pool[:n]


def unwrap(exc: BaseException, what: str = "work") -> BaseException:
    """The user-facing error behind a Ray failure: the PtsqError raised on a worker, or a ClusterError."""
    import ray.exceptions as rx

    cause = getattr(exc, "cause", None)
    if isinstance(cause, PtsqError):
        return cause
    if isinstance(exc, rx.RayActorError):
        return ClusterError(
            f"a Ray worker died {RESTARTS + 1} times ({type(exc).__name__}) while running the {what}",
            "check memory on the nodes (each worker holds every model), or use fewer --workers",
        )
    return ClusterError(
        f"the {what} failed on Ray: {type(exc).__name__}: {first_line(exc)}", "retry, or run without --ray"
    )


def ordered_map(
    fn: Callable[[Any, Any], Any],
    ctx: Any,
    items: Sequence[Any],
    cluster: Cluster,
    *,
    threads: int = 1,
    in_flight: int = IN_FLIGHT,
    what: str = "work",
) -> Iterator[Any]:
    """Yield ``fn(ctx, item)`` for every item, in item order, computed on ``cluster.slots(threads)`` actors.

    ``fn`` must be importable on the workers (a module-level function of ptsq). ``what`` names the
    context in errors ("a Ray worker cannot load the models: ..."). The actors stay up for the next call
    on the same cluster (see :func:`actor_pool`).
    """
    ray = cluster.ray
    # actors first: new worker processes start (Python, torch) while this process pickles the context
    actors = actor_pool(cluster, threads, max(1, min(cluster.slots(threads), len(items))))
    box = [ray.put(dumps(ctx))]
    pending: dict[Any, tuple[int, int]] = {}  # result ref -> (item index, actor index)
    try:
        try:  # load the context everywhere first: a worker that cannot import the model's code fails once, here
            ready = [a.ready.remote(box, what) for a in actors]
            started = cluster.wait(ready, num_returns=len(ready), timeout=START_TIMEOUT)
            ray.get(started)
        except Exception as exc:
            raise unwrap(exc, what) from None
        if len(started) < len(ready):
            raise ClusterError(
                f"{len(ready) - len(started)} of {len(ready)} Ray workers did not start within {START_TIMEOUT:g} s",
                "other jobs may hold the cluster's CPUs ('ray status' shows them); use fewer --workers",
            )
        load = [0] * len(actors)
        results: dict[int, Any] = {}
        submitted = 0
        for want in range(len(items)):
            while want not in results:
                while submitted < len(items) and min(load) < in_flight:
                    a = load.index(min(load))
                    pending[actors[a].run.remote(fn, box, what, items[submitted])] = (submitted, a)
                    load[a] += 1
                    submitted += 1
                ready = cluster.wait(list(pending))
                i, a = pending.pop(ready[0])
                load[a] -= 1
                try:
                    results[i] = ray.get(ready[0])
                except Exception as exc:
                    raise unwrap(exc, what) from None
            yield results.pop(want)
    except BaseException as exc:  # failed, interrupted, or abandoned with work in flight: no half-busy actor
        if pending or not isinstance(exc, GeneratorExit):  # is left for the next call
            cluster.release_actors()
        raise


__all__ = ["MapWorker", "actor_pool", "ordered_map", "unwrap"]
