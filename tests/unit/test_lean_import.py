"""Importing ptsq must stay cheap: no torch, torchvision or engines until a name is used."""

import subprocess
import sys


def test_import_ptsq_does_not_import_torch():
    code = "import sys, ptsq; print(','.join(m for m in ('torch', 'torchvision', 'onnxruntime') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", out


def test_lazy_names_resolve():
    code = "import ptsq; assert callable(ptsq.quantize) and callable(ptsq.load); print(ptsq.PtsqError.__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "PtsqError"
