"""PT2E programs loaded from a .pt2 keep their compiled form as an AOTInductor package in ptsq's cache:
a later process loads it instead of compiling, and a package that is damaged is compiled again."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import ptsq
from ptsq.config import Pt2eOptions, QuantConfig

BUILT, CACHED = "static shapes, AOTI package (cached)", "cached AOTI package"


ENV = ("PTSQ_PT2E_EAGER", "PTSQ_PT2E_AOTI", "PTSQ_PT2E_PYTHON_WRAPPER")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A small program saved as .pt2 and loaded once here, which compiles its package into a fresh cache."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(16, 16, 3, padding=1), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(16, 10),
    ).eval()  # fmt: skip
    g = torch.Generator().manual_seed(0)
    calib = [torch.randn(2, 3, 16, 16, generator=g) for _ in range(4)]
    config = QuantConfig(engine="pt2e", speed_guard=0, pt2e=Pt2eOptions(compile=False))
    qm = ptsq.quantize(model, calib, config=config, progress=False)
    x = torch.randn(1, 3, 16, 16, generator=g)
    path = qm.save(tmp_path_factory.mktemp("aoti") / "small.pt2")
    cache = tmp_path_factory.mktemp("cache")  # $PTSQ_CACHE_DIR: the packages go there, nowhere else
    with pytest.MonkeyPatch.context() as mp, torch.inference_mode():
        mp.setenv("PTSQ_CACHE_DIR", str(cache))
        for name in ENV:
            mp.delenv(name, raising=False)
        ref = qm(x)  # the converted program on reference kernels
        first = ptsq.load(path)
        want = first(x)
        strided = first(x.contiguous(memory_format=torch.channels_last))  # same shape, other strides
    assert first.module.route == BUILT, first.module.route
    torch.testing.assert_close(strided, want, atol=1e-6, rtol=0)
    step = ref.abs().max().item() / 64  # int8 kernels vs the reference's fp32 rounding: within an output step
    assert want.shape == ref.shape and (want - ref).abs().max().item() <= step
    return path, x, want, cache


def _load_in_fresh_process(path: Path, x: torch.Tensor, cache: Path, work: Path) -> tuple[torch.Tensor, dict]:
    xin, yout = work / "x.pt", work / "y.pt"
    torch.save(x, xin)
    code = textwrap.dedent(f"""
        import json, torch, ptsq
        torch.set_num_threads({torch.get_num_threads()})  # a package is compiled for a thread count
        m = ptsq.load({str(path)!r})
        with torch.inference_mode():
            torch.save(m(torch.load({str(xin)!r})), {str(yout)!r})
        read = m.module._program is not None  # a cached package runs without the program being read
        print(json.dumps({{"route": m.module.route, "seconds": m.module.compile_seconds, "read": read}}))
    """)
    env = {k: v for k, v in os.environ.items() if k not in ENV} | {"PTSQ_CACHE_DIR": str(cache)}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    return torch.load(yout), json.loads(r.stdout.strip().splitlines()[-1])


def test_a_fresh_process_loads_the_cached_package_instead_of_compiling(built, tmp_path):
    path, x, want, cache = built
    packages = sorted((cache / "aoti").glob("*.pt2"))
    assert len(packages) == 1 and len(list((cache / "aoti").glob("*.check.pt"))) == 1, packages
    got, facts = _load_in_fresh_process(path, x, cache, tmp_path)
    assert facts["route"] == CACHED and facts["read"] is False, facts
    assert sorted((cache / "aoti").glob("*.pt2")) == packages  # used, not compiled again beside it
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)  # the same int8 kernels


def test_damaged_package_is_discarded_and_compiled_again(built, monkeypatch):
    path, x, want, cache = built
    monkeypatch.setenv("PTSQ_CACHE_DIR", str(cache))
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    (package,) = (cache / "aoti").glob("*.pt2")
    (check,) = (cache / "aoti").glob("*.check.pt")
    with torch.inference_mode():
        data = bytearray(package.read_bytes())  # a flipped byte in the middle (the shared library)
        data[len(data) // 2] ^= 0xFF
        package.write_bytes(bytes(data))
        again = ptsq.load(path)
        got = again(x)
        assert again.module.route == BUILT, again.module.route
        assert package.read_bytes() != bytes(data)  # replaced by a package that passes its check
        torch.testing.assert_close(got, want, atol=1e-6, rtol=0)

        facts = torch.load(check, weights_only=True)  # intact bytes, but outputs unlike those recorded
        torch.save({**facts, "outputs": [t + 1 for t in facts["outputs"]]}, check)
        third = ptsq.load(path)
        got = third(x)
        assert third.module.route == BUILT, third.module.route
        torch.testing.assert_close(got, want, atol=1e-6, rtol=0)

        reused = ptsq.load(path)  # and the new package passes its check
        got = reused(x)
        assert reused.module.route == CACHED, reused.module.route
        torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
        assert reused.module._program is None  # not read: the package did not need it
        eager = reused.module.program(x)  # read on demand later: the reference kernels, within an output step
        assert (eager - want).abs().max().item() <= want.abs().max().item() / 64
