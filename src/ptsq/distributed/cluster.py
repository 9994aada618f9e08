"""Connect to Ray, ship ptsq's code to the workers, and shut down what was started here.

``address="auto"`` starts a fresh local Ray instance sized to this machine (every CPU it may use; a
small object store: only batches and model blobs travel) and shuts it down on exit, whether the work
succeeded, failed or was interrupted. Any other address joins an existing cluster (``ray start --head``
prints it); leaving only disconnects. A process that is already connected (``ray.init`` called by the
user, or a test session) is used as it is and left connected.

Code: the job's runtime environment carries the driver's own ``ptsq`` package (plus any folders the
caller names) as ``py_modules``, so workers run exactly the driver's ptsq even where another version is
installed. (Ray accepts local folders only when the job connects: a process that was already connected
keeps the runtime environment it connected with.) The user's model classes travel by value inside the pickled models
(:mod:`ptsq.distributed.pickling`); what they import must be installed on every node, and a worker that
cannot import it fails with a one-line :class:`~ptsq.errors.ModelLoadError`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from ptsq.errors import ClusterError, ConfigError, first_line

INSTALL_HINT = "install the extra: pip install 'ptsq[ray]'"
DEFAULT_PORT = 6379
_STORE_MIN, _STORE_MAX = 256 << 20, 2 << 30  # object store bytes for a local instance


def require_ray() -> ModuleType:
    """Import ray, or raise ClusterError naming how to install it."""
    try:
        import ray
    except ImportError:
        raise ClusterError("--ray needs Ray, which is not installed", INSTALL_HINT) from None
    return ray


def check_workers(workers: int | None) -> None:
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ConfigError(
            f"--workers {workers!r} must be a whole number of at least 1",
            "e.g. --workers 2, or leave it out to use every CPU of the cluster",
        )


def _host_port(address: str) -> tuple[str, int]:
    rest = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = rest.rpartition(":")
    if not sep:
        return rest, DEFAULT_PORT
    try:
        return host.strip("[]"), int(port)
    except ValueError:
        raise ConfigError(
            f"--ray address {address!r} has no valid port", "give HOST:PORT, e.g. 10.0.0.5:6379"
        ) from None


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail fast (Ray itself would retry for minutes) when nothing listens at ``address``."""
    host, port = _host_port(address)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        raise ClusterError(
            f"cannot reach a Ray cluster at {address}: {exc.strerror or first_line(exc)}",
            "start one with 'ray start --head' and pass the address it prints, or use --ray auto",
        ) from None


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _store_bytes() -> int:
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return _STORE_MIN
    return int(min(_STORE_MAX, max(_STORE_MIN, total // 10)))


def _debug() -> bool:
    return os.environ.get("PTSQ_DEBUG", "") not in ("", "0")


def _quiet(ray: ModuleType) -> None:
    """Keep Ray's own chatter out of ptsq's output (PTSQ_DEBUG=1 shows it).

    Its loggers print connection notices on stderr, and the driver prints the raylet's worker-crash
    notices on *stdout*, which would corrupt ``--json``; ptsq reports every failure itself.
    """
    if _debug():
        return
    for name in [n for n in logging.root.manager.loggerDict if n == "ray" or n.startswith("ray.")]:
        logging.getLogger(name).setLevel(logging.ERROR)
    worker = ray._private.worker
    original = worker.print_to_stdstream
    if getattr(original, "ptsq_quiet", False):
        return

    def print_to_stdstream(data: dict[str, Any], ignore_prefix: bool) -> None:
        if data.get("pid") != "raylet":
            original(data, ignore_prefix)

    print_to_stdstream.ptsq_quiet = True  # type: ignore[attr-defined]
    worker.print_to_stdstream = print_to_stdstream


_ACTORS: dict[str, dict[Any, list[Any]]] = {}  # Ray job id -> actor pools kept between calls


@contextlib.contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Ctrl-C (or SIGTERM) during a Ray call is held until the call returns, then raised as KeyboardInterrupt.

    Raised inside Ray's C++ code (``ray.init``, ``ray.wait``) it can leave the core worker half torn down,
    and the process then crashes on exit (SIGSEGV) after ptsq has cleaned up; between calls it is safe.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    got: list[int] = []

    def hold(signum: int, _frame: object) -> None:
        got.append(signum)

    old = {sig: signal.signal(sig, hold) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
    if got:
        raise KeyboardInterrupt


@contextlib.contextmanager
def _stderr_silenced() -> Iterator[None]:
    """File descriptor 2 on /dev/null while Ray starts: its C++ core announces its log level there, unasked.

    Failures still surface, as the exception ``ray.init`` raises; PTSQ_DEBUG=1 leaves stderr alone.
    """
    if _debug():
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class Cluster:
    """A Ray connection for the duration of a ``with`` block.

    ``address``: ``"auto"`` (start a local instance, shut it down on exit) or ``HOST:PORT`` of a running
    cluster. ``workers`` bounds how many jobs or actors run at once (default: one per CPU of the cluster).
    ``ship``: extra local folders or ``.py`` files the workers need (e.g. a benchmark package).
    ``num_cpus``: CPUs of a local instance (default: every CPU this process may use).
    """

    def __init__(
        self,
        address: str = "auto",
        workers: int | None = None,
        *,
        ship: Sequence[str | Path] = (),
        num_cpus: int | None = None,
    ) -> None:
        check_workers(workers)
        if not isinstance(address, str) or not address.strip():
            raise ConfigError(f"--ray {address!r} is not an address", "use --ray auto, or --ray HOST:PORT")
        self.address = address.strip()
        self.workers = workers
        self.ship = [str(Path(p).resolve()) for p in ship]
        self.num_cpus = num_cpus
        self.owned = False  # we started the instance (auto) or opened the connection (address)
        self.started = False  # we started a local instance
        self._ray: ModuleType | None = None

    # -------------------------------------------------------------------------------- connect
    def __enter__(self) -> Cluster:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def connect(self) -> None:
        ray = require_ray()
        self._ray = ray
        if self.address != "auto":
            check_reachable(self.address)
        if ray.is_initialized():
            self._check_same(ray)
            return
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # ptsq sends nothing anywhere
        os.environ.setdefault("RAY_IGNORE_UNHANDLED_ERRORS", "1")  # failures are reported per job instead
        if not _debug():  # the driver's C++ core would log its view of a failure on stderr; ptsq says it once
            os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
        _quiet(ray)
        kwargs: dict[str, Any] = dict(
            include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR, runtime_env=self.runtime_env
        )
        if self.address == "auto":
            cpus = self.num_cpus or _usable_cpus()
            # workers as nice as this process (Ray's default, +15, starves them on a shared machine: ptsq
            # --ray would then lose to ptsq without it for no reason of its own)
            kwargs.update(
                address="local", num_cpus=cpus, object_store_memory=_store_bytes(),
                _system_config={"worker_niceness": 0},
            )  # fmt: skip
        else:
            kwargs.update(address=self.address)
        main = threading.current_thread() is threading.main_thread()
        old_term = signal.getsignal(signal.SIGTERM) if main else None
        try:
            with deferred_interrupts(), _stderr_silenced():
                ray.init(**kwargs)
        except KeyboardInterrupt:
            self._shutdown_quietly(ray)
            raise
        except Exception as exc:
            self._shutdown_quietly(ray)
            where = (
                "start a local Ray instance" if self.address == "auto" else f"join the Ray cluster at {self.address}"
            )
            raise ClusterError(
                f"cannot {where}: {first_line(exc)}",
                "check 'ray status' on the head node, or free memory and /tmp space for --ray auto",
            ) from None
        finally:
            if main and old_term is not None:  # ray.init replaces SIGTERM; keep the CLI's clean interrupt
                signal.signal(signal.SIGTERM, old_term)
        self.owned = True
        self.started = self.address == "auto"

    def _check_same(self, ray: ModuleType) -> None:
        if self.address == "auto":
            return
        current = ray.get_runtime_context().gcs_address
        if _host_port(current) != _host_port(self.address):
            raise ClusterError(
                f"this process is already connected to the Ray cluster at {current}, not {self.address}",
                f"pass --ray {current}, or call ray.shutdown() first",
            )

    @staticmethod
    def _shutdown_quietly(ray: ModuleType) -> None:
        with contextlib.suppress(Exception), deferred_interrupts():
            ray.shutdown()

    @property
    def actors(self) -> dict[Any, list[Any]]:
        """Actors kept between calls (ptsq.distributed.actors), one registry per Ray connection of this process:
        every Cluster object on one connection sees them (and their CPUs), whoever started them."""
        return _ACTORS.setdefault(self.ray.get_runtime_context().get_job_id(), {})

    def release_actors(self) -> None:
        """Kill the actors kept between calls (their CPUs go back to the cluster, e.g. for fan-out tasks)."""
        if self._ray is None or not self._ray.is_initialized():
            return
        pools = self.actors
        with deferred_interrupts():
            for pool in pools.values():
                for actor in pool:
                    with contextlib.suppress(Exception):
                        self._ray.kill(actor, no_restart=True)
        pools.clear()

    def close(self) -> None:
        """Kill our actors; shut down the local instance we started (or disconnect from the cluster we joined)."""
        self.release_actors()
        if self.owned and self._ray is not None:
            self._shutdown_quietly(self._ray)
            self.owned = False

    # ------------------------------------------------------------------------------ resources
    @property
    def ray(self) -> ModuleType:
        if self._ray is None:
            raise RuntimeError("Cluster.connect() first")
        return self._ray

    def wait(self, refs: Sequence[Any], num_returns: int = 1, timeout: float | None = None) -> list[Any]:
        """``ray.wait`` in short steps: a Ctrl-C is raised between them, never inside Ray (see deferred_interrupts)."""
        import time

        end = None if timeout is None else time.monotonic() + timeout
        while True:
            step = 0.5 if end is None else max(0.0, min(0.5, end - time.monotonic()))
            with deferred_interrupts():
                ready, _ = self.ray.wait(list(refs), num_returns=min(num_returns, len(refs)), timeout=step)
            if len(ready) >= min(num_returns, len(refs)) or (end is not None and time.monotonic() >= end):
                return ready

    def cpus(self) -> int:
        return int(self.ray.cluster_resources().get("CPU", 0))

    def nodes(self) -> int:
        return sum(1 for n in self.ray.nodes() if n.get("Alive"))

    def slots(self, cpus_per_worker: int = 1) -> int:
        """How many workers of ``cpus_per_worker`` CPUs run at once: ``workers``, capped by the cluster's CPUs."""
        fit = max(1, self.cpus() // max(1, cpus_per_worker))
        return min(self.workers, fit) if self.workers else fit

    @property
    def runtime_env(self) -> dict[str, Any]:
        """The job's runtime environment: the driver's ptsq (and ``ship``) as ``py_modules``."""
        import ptsq

        here = str(Path(ptsq.__file__).resolve().parent)
        return {
            "py_modules": [here, *self.ship],
            "env_vars": {"TORCH_CPP_LOG_LEVEL": "ERROR", "PYTHONWARNINGS": "ignore"},
        }

    def describe(self) -> str:
        kind = "local Ray instance" if self.started else f"Ray cluster at {self.ray.get_runtime_context().gcs_address}"
        return f"{kind}: {self.nodes()} node(s), {self.cpus()} CPUs"


@contextlib.contextmanager
def using(ray: str | Cluster | None, workers: int | None = None) -> Iterator[Cluster | None]:
    """``None`` -> None (run in this process); an address -> a connected Cluster, closed on exit;
    a Cluster -> itself (connected if needed, left as it is)."""
    if ray is None:
        if workers is not None:
            check_workers(workers)
            raise ConfigError("workers needs ray (--workers needs --ray)", "add --ray auto, or drop --workers")
        yield None
        return
    if isinstance(ray, Cluster):
        if ray._ray is None:
            ray.connect()
        check_workers(workers)
        before = ray.workers
        ray.workers = workers if workers is not None else before  # this call's bound, then the cluster's own
        try:
            yield ray
        finally:
            ray.workers = before
        return
    with Cluster(ray, workers) as cluster:
        yield cluster


__all__ = [
    "INSTALL_HINT", "Cluster", "check_reachable", "check_workers", "deferred_interrupts", "require_ray", "using",
]  # fmt: skip
