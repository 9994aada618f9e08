"""Ray workers keep freed memory in their heap: no page faults per batch (the CPU Ray's workers lost)."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's malloc only"
)
FEW = 64  # page faults per forward pass: the tuned heap gives ~0; a fresh process without it ~1,000

_SCRIPT = """
import sys, torch
from examples.reference.fashion import FashionResNet
from ptsq.distributed.heap import keep_heap
from tests.distributed.jobs import faults_per_forward
torch.set_num_threads(1)
tuned = sys.argv[1] == "1" and keep_heap()
print(faults_per_forward(FashionResNet().eval(), 20))
"""


def _faults(tuned: bool) -> float:
    env = {"PYTHONPATH": f"{ROOT / 'src'}:{ROOT}", "PATH": "/usr/bin:/bin"}
    cmd = [sys.executable, "-c", _SCRIPT, str(int(tuned))]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, check=True)
    return float(out.stdout.split()[-1])


@pytest.mark.slow
def test_keep_heap_stops_refaulting_activation_buffers():
    untuned, tuned = _faults(False), _faults(True)
    assert tuned < FEW
    assert tuned < untuned  # what the fix is for: a fresh process gives its buffers back after every pass


def test_ray_workers_keep_their_heap(ray_cluster):
    from examples.reference.fashion import FashionResNet

    from ptsq.distributed.actors import ordered_map
    from tests.distributed.jobs import faults_per_forward

    faults = list(ordered_map(faults_per_forward, FashionResNet().eval(), [20, 20], ray_cluster, what="model"))
    assert max(faults) < FEW
