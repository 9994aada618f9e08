"""Run an exported int8 program compiled with inductor.

The program is compiled straight from its aten graph (``torch._inductor.compile``), not through
``torch.compile``: no Dynamo frame, so no guard evaluation on every call (0.4 ms per call on
MobileNetV2, 8% of its int8 run time). Freezing is on (weights become constants and are prepacked
for oneDNN; without it the int8 graph is slower than fp32). The wrapper's per-op size and alignment
asserts are off (their Python costs ~2-8% of a MobileNetV2 call).

Each input signature (shapes and dtypes) gets its own compile, kept on the module: the program is
exported again at those static shapes and compiled with inductor's C++ wrapper. The Python wrapper
costs ~10 us per int8 op (~0.5 ms of a 5 ms MobileNetV2 call at 1 thread; it was most of PT2E's gap
to FX's TorchScript), and the C++ wrapper needs static shapes (on the saved program, whose every
dimension is dynamic, it fails in torch 2.14). A program that cannot be exported again or compiled
this way runs through the Python wrapper on the dynamic program, as before (``route`` says which;
``PTSQ_PT2E_PYTHON_WRAPPER=1`` asks for it).

Inductor cannot cache a frozen graph across processes in torch 2.14 (the prepacked oneDNN weights are
not picklable: its graph cache reports "mkldnn tensors unpickleable"). A program loaded from a .pt2
(it has a digest) is therefore compiled with AOTInductor instead, into a package kept under
``~/.cache/ptsq/aoti`` (``$PTSQ_CACHE_DIR``; see :mod:`.aoti`): later processes load that package in
well under a second instead of compiling for seconds. Where AOTInductor fails, or ``PTSQ_PT2E_AOTI=0``,
each process compiles in process as above; the C++ kernels themselves are cached under
``~/.cache/ptsq/inductor``. ``compile_seconds`` and ``route`` say what happened.
``PTSQ_PT2E_EAGER=1`` runs the program without compiling (correct, slow; no C++ compiler needed).
"""

from __future__ import annotations

import inspect
import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

NO_COMPILE_ENV = "PTSQ_PT2E_EAGER"  # =1: run loaded programs without inductor (no C++ compiler, debugging)
PYTHON_WRAPPER_ENV = "PTSQ_PT2E_PYTHON_WRAPPER"  # =1: skip the static-shape C++ wrapper route
INDUCTOR_OPTIONS: dict[str, Any] = {
    "freezing": True,
    "size_asserts": False,
    "alignment_asserts": False,
    "scalar_asserts": False,
    "fx_graph_cache": True,
}


def cache_dir() -> Path:
    """Where compiled kernels are kept between loads (``$PTSQ_CACHE_DIR`` or ``~/.cache/ptsq``)."""
    from ptsq.cache import cache_root

    return cache_root() / "inductor"


def _flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")


def eager_only() -> bool:
    return _flag(NO_COMPILE_ENV)


def _dispatch_mode_active() -> bool:
    """A FLOP counter or another TorchDispatchMode is watching: it wants the ops, not a compile."""
    from torch.utils._python_dispatch import _get_current_dispatch_mode

    return _get_current_dispatch_mode() is not None


def _signature(args: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(
        (tuple(a.shape), a.dtype, a.device.type) if isinstance(a, torch.Tensor) else (type(a).__name__, repr(a))
        for a in args
    )


def export_static(program: nn.Module, args: tuple[Any, ...]) -> torch.export.ExportedProgram:
    """``program`` exported again at ``args``' shapes (what inductor's C++ wrapper and AOTInductor need)."""
    # strict=False: the program is already aten; a fresh export only fixes its shapes to these inputs
    return torch.export.export(program, tuple(args), strict=False)


def _compile_key(args: tuple[Any, ...]) -> tuple[Any, ...]:
    # inductor writes its own loops for the thread count at compile time: a program compiled at 1 thread
    # would run single-threaded at 4, so a new thread count compiles again
    return (*_signature(args), torch.get_num_threads())


class CompiledProgram(nn.Module):
    """An exported int8 program, compiled with inductor on its first call for each input signature."""

    def __init__(self, program: nn.Module | Callable[[], nn.Module], digest: str | None = None) -> None:
        super().__init__()
        # not a registered submodule: .eval()/.train() on exported graphs raise, and they hold no training state;
        # a callable reads the program when first needed (seconds): a cached package runs without it
        ready = isinstance(program, nn.Module)
        object.__setattr__(self, "_program", program if ready else None)
        object.__setattr__(self, "_read", None if ready else program)
        self.digest = digest  # the saved program's sha256: names its AOTInductor packages (None: none kept)
        self.compile_seconds: float | None = None  # the first compile (or cached package load)
        self.route: str | None = None  # the first compile's: "cached AOTI package", "static shapes, ..." or why not
        self._compiled: dict[tuple[Any, ...], Any] = {}

    @property
    def program(self) -> nn.Module:
        if self._program is None:
            object.__setattr__(self, "_program", self._read())
            object.__setattr__(self, "_read", None)
        return self._program

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if kwargs:  # keyword inputs (dict batches naming forward's parameters) in the program's order
            args = inspect.signature(self.program.forward).bind(*args, **kwargs).args
        if eager_only() or _dispatch_mode_active():
            with torch.no_grad():
                return self.program(*args)  # reference kernels: right, but slow
        # compiled code assumes the strides it was compiled for: a channels-last or sliced input of the same
        # shape gave wrong outputs (EfficientNet-Lite0: off by 6 in 9.6); a contiguous tensor is not copied
        args = tuple(a.contiguous() if isinstance(a, torch.Tensor) else a for a in args)
        fn = self._compiled.get(_compile_key(args))
        if fn is None:
            self.compile_now(args)
            fn = self._compiled[_compile_key(args)]
        with torch.no_grad():
            return fn(*args)

    def compile_now(self, args: tuple[Any, ...]) -> float:
        """Compile for inputs like ``args`` now; returns the seconds it took."""
        from ptsq.engines.pt2e.quantizer import import_torchao
        from ptsq.errors import first_line

        import_torchao()  # torchao registers inductor's int8 lowering (qconv/qlinear) at import
        cache = cache_dir()
        cache.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache))
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fn, route = self._packaged(args)
            try:
                if fn is None:
                    fn, route = self._compile_static(args), "static shapes, C++ wrapper" + route
            except Exception as exc:  # never worse than the plain route: the dynamic program, Python wrapper
                fn, route = self._compile_dynamic(args), f"Python wrapper ({first_line(exc, 160)})"
        seconds = round(time.perf_counter() - t0, 2)
        self._compiled[_compile_key(args)] = fn
        if self.compile_seconds is None:
            self.compile_seconds, self.route = seconds, route
        return seconds

    def _packaged(self, args: tuple[Any, ...]) -> tuple[Any, str]:
        """(the cached or newly built AOTInductor package for ``args``, its route); (None, why not) else."""
        from ptsq.engines.pt2e import aoti
        from ptsq.errors import first_line

        if self.digest is None or not aoti.enabled() or _flag(PYTHON_WRAPPER_ENV):
            return None, ""
        key = ""
        try:
            key = aoti.package_key(self.digest, _signature(args), INDUCTOR_OPTIONS)
            fn = aoti.load(key, args)
            if fn is not None:
                return fn, "cached AOTI package"
            return aoti.build(self.program, args, key, dict(INDUCTOR_OPTIONS)), "static shapes, AOTI package (cached)"
        except Exception as exc:  # compiled in process instead; the route says why no package
            if key:
                aoti.discard(key)
            return None, f" (no AOTI package: {first_line(exc, 160)})"

    def _compile_static(self, args: tuple[Any, ...]) -> Any:
        from torch._inductor import compile as inductor_compile

        if _flag(PYTHON_WRAPPER_ENV):
            raise RuntimeError(f"{PYTHON_WRAPPER_ENV} is set")
        static = export_static(self.program, args).module()
        with torch.no_grad():  # freezing applies to inference graphs only
            fn = inductor_compile(static, list(args), {**INDUCTOR_OPTIONS, "cpp_wrapper": True})
            fn(*args)
        return fn

    def _compile_dynamic(self, args: tuple[Any, ...]) -> Any:
        from torch._inductor import compile as inductor_compile

        graph = getattr(self.program, "graph", None)
        codegen = getattr(graph, "_codegen", None)
        attributes = set(vars(self.program))
        try:
            with torch.no_grad():
                fn = inductor_compile(self.program, list(args), dict(INDUCTOR_OPTIONS))
                fn(*args)
        finally:  # inductor edits the program in place; undo it so that it can compile again and be saved
            for name in set(vars(self.program)) - attributes:  # _param_name_to_source breaks a second compile
                delattr(self.program, name)
            if graph is not None and graph._codegen is not codegen:  # pytree inputs/outputs flattened
                graph._codegen = codegen
                self.program.recompile()
        return fn
