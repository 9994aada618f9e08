"""Compiled int8 programs kept between processes as AOTInductor packages.

Inductor's in-process compile of a loaded program costs 5-15 s per process (MobileNetV2: ~8 s) and
torch 2.14 cannot cache the frozen int8 graph (its prepacked oneDNN weights are not picklable).
``torch._inductor.aoti_compile_and_package`` compiles the same static-shape program, frozen weights
included, into one shared library that a later process loads in well under a second and that runs the
same oneDNN int8 kernels (its outputs are bit-equal to the in-process compile's).

A package is specific to the program (its digest), the input signature, the torch version, the CPU
(inductor's vector ISA and oneDNN's prepacked weight layouts depend on it) and the thread count (a
package compiled for one thread has no parallel loops), so all of these name it. Next to each package
a check file records its sha256 and its outputs on a fixed probe input; a package whose bytes or probe
outputs differ on load is deleted and compiled again. The cache keeps the most recently used packages.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import torch

from ptsq.engines.pt2e.runtime import export_static
from ptsq.models import file_sha256

FORMAT = 1  # bump when what a package or its check file holds changes
KEEP = 24  # packages kept in the cache (MobileNetV2's is 6 MB); the least recently used go first
NO_AOTI_ENV = "PTSQ_PT2E_AOTI"  # =0: compile in every process, keep no package


def enabled() -> bool:
    return os.environ.get(NO_AOTI_ENV, "") != "0"


def package_dir() -> Path:
    from ptsq.cache import cache_root

    return cache_root() / "aoti"


def _machine() -> dict[str, Any]:
    from torch._inductor.cpu_vec_isa import pick_vec_isa

    from ptsq.machine import cpu_flags

    return {
        "capability": torch.backends.cpu.get_cpu_capability(),
        "vec_isa": str(pick_vec_isa()),
        "flags": hashlib.sha256(" ".join(sorted(cpu_flags())).encode()).hexdigest()[:16],
    }


def package_key(digest: str, signature: tuple[Any, ...], options: dict[str, Any]) -> str:
    """The name of the package for this program, input signature, torch, machine and thread count."""
    facts = {
        "format": FORMAT,
        "program": digest,
        "signature": repr(signature),
        "torch": torch.__version__,
        "machine": _machine(),
        "threads": torch.get_num_threads(),
        "options": options,
    }
    return hashlib.sha256(json.dumps(facts, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _paths(key: str) -> tuple[Path, Path]:
    d = package_dir()
    return d / f"{key}.pt2", d / f"{key}.check.pt"


def _probe(args: tuple[Any, ...]) -> tuple[Any, ...]:
    """Fixed inputs like ``args``: seeded normal floats, zero integers (valid indices), other values as given."""
    gen = torch.Generator().manual_seed(0)

    def one(a: Any) -> Any:
        if not isinstance(a, torch.Tensor):
            return a
        if a.is_floating_point():
            return torch.randn(a.shape, generator=gen, dtype=a.dtype)
        return torch.zeros_like(a)

    return tuple(one(a) for a in args)


def _tensors(out: Any) -> list[torch.Tensor]:
    leaves = torch.utils._pytree.tree_leaves(out)
    return [t.detach().clone() for t in leaves if isinstance(t, torch.Tensor)]


def _same(got: list[torch.Tensor], want: list[torch.Tensor]) -> bool:
    """The same int8 kernels on the same machine: equal to 1e-6 (not merely close)."""
    return len(got) == len(want) and all(
        g.shape == w.shape and g.dtype == w.dtype and torch.allclose(g, w, rtol=0, atol=1e-6, equal_nan=True)
        for g, w in zip(got, want)
    )


def discard(key: str) -> None:
    for path in _paths(key):
        try:
            path.unlink()
        except OSError:
            pass


def load(key: str, args: tuple[Any, ...]) -> Any | None:
    """The cached package for ``key`` loaded and checked, or None (a package that fails is deleted)."""
    package, check = _paths(key)
    if not (package.is_file() and check.is_file()):
        return None
    try:
        facts = torch.load(check, weights_only=True)
        if facts.get("format") != FORMAT or facts.get("sha256") != file_sha256(package):
            raise ValueError("the package is not the one its check file describes")
        fn = torch._inductor.aoti_load_package(str(package))
        with torch.no_grad():
            if not _same(_tensors(fn(*_probe(args))), list(facts["outputs"])):
                raise ValueError("the package's outputs differ from those recorded when it was compiled")
    except Exception:  # a cache is never an error: a bad package is compiled again
        discard(key)
        return None
    now = time.time()
    for path in (package, check):  # most recently used: pruned last
        try:
            os.utime(path, (now, now))
        except OSError:
            pass
    return fn


def build(program: torch.nn.Module, args: tuple[Any, ...], key: str, options: dict[str, Any]) -> Any:
    """Compile ``program`` at ``args``' shapes into a package, keep it under ``key`` and return it loaded."""
    from ptsq.artifact import atomic_path

    package, check = _paths(key)
    package.parent.mkdir(parents=True, exist_ok=True)
    static = export_static(program, args)
    with atomic_path(package) as tmp:
        with torch.no_grad():  # freezing applies to inference graphs only
            torch._inductor.aoti_compile_and_package(static, package_path=str(tmp), inductor_configs=options)
            fn = torch._inductor.aoti_load_package(str(tmp))  # the loader extracts it: the rename is safe
            outputs = _tensors(fn(*_probe(args)))
        sha = file_sha256(tmp)
    with atomic_path(check) as tmp:  # written last: a package without it is not used
        torch.save({"format": FORMAT, "sha256": sha, "outputs": outputs}, tmp)
    prune()
    return fn


def prune(keep: int = KEEP) -> None:
    """Delete all but the ``keep`` most recently used packages (and stray check files)."""
    d = package_dir()
    try:
        packages = sorted(d.glob("*.pt2"), key=lambda p: p.stat().st_mtime, reverse=True)
        checks = list(d.glob("*.check.pt"))
    except OSError:
        return
    kept = {p.name.removesuffix(".pt2") for p in packages[:keep]}
    for path in [*packages[keep:], *(c for c in checks if c.name.removesuffix(".check.pt") not in kept)]:
        try:
            path.unlink()
        except OSError:
            pass
