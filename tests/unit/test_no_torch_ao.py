"""The torch.ao.quantization-free mode (PTSQ_NO_TORCH_AO=1): what it blocks, what it lets through, what ptsq does."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "ptsq"

PROBE = """
import ptsq, sys, torch
try:
    from torch.ao.quantization import QConfig
    print("imported")
except ImportError as e:
    print("refused:", e)
import torch._inductor.compile_fx        # torch itself still imports what it needs
print("torch internals:", "torch.ao.quantization" in sys.modules)
try:
    import torch.ao.quantization.observer  # already imported by torch: refused to anyone else all the same
    print("imported")
except ImportError:
    print("refused again")
from ptsq.config import QuantConfig
print("default engine:", QuantConfig().engine, ptsq.legacy.default_engine("dynamic"))
try:
    ptsq.quantize(torch.nn.Conv2d(3, 3, 1), [torch.randn(1, 3, 4, 4)], config=QuantConfig(engine="fx"), progress=False)
except ptsq.TorchAoUnavailable as e:
    print("fx:", e.message, "|", e.hint)
try:
    ptsq.analyze(torch.nn.Conv2d(3, 3, 1), [torch.randn(1, 3, 4, 4)], config=QuantConfig(engine="onnx"))
except ptsq.ConfigError as e:
    print("analyze:", e.message)
"""


def test_the_mode_refuses_the_stack_but_not_torch_and_picks_pt2e():
    env = {**os.environ, "PTSQ_NO_TORCH_AO": "1"}
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    assert lines[0].startswith("refused: torch.ao.quantization is unavailable (imported by __main__)"), lines
    assert lines[1] == "torch internals: True" and lines[2] == "refused again", lines
    assert lines[3] == "default engine: pt2e onnx", lines
    assert lines[4].startswith("fx: the fx engine needs the deprecated torch.ao.quantization"), lines
    assert "--engine pt2e" in lines[4]
    # analyze itself runs on PT2E in this mode (tests/integration/test_accuracy_tools.py)
    assert lines[5] == "analyze: analyze runs on the fx and pt2e engines only, not 'onnx'", lines


def test_ptsq_reaches_torch_ao_only_through_import_statements():
    """The import hook sees every use: no attribute access such as ``torch.ao.quantization.observer.X``."""
    offenders = []
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and ast.unparse(node).startswith(("torch.ao.", "torch.quantization")):
                offenders.append(f"{path.relative_to(SRC)}:{node.lineno} {ast.unparse(node)}")
    assert not offenders, offenders
