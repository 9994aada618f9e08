"""Keep freed memory in a worker's heap instead of handing it back to the kernel after every batch.

A fresh process starts with glibc's smallest thresholds (memory above 128 KiB is mapped and unmapped per
allocation, and the heap is trimmed as soon as 256 KiB lie free at its top). glibc raises them as it sees
large blocks freed, so a long-lived process that has already quantized or loaded big tensors runs its
models without trimming, while a fresh Ray worker running a small convolutional net gives each
activation buffer back after every forward pass and faults it in again on the next one: measured here,
about 1,100 page faults per forward pass of a small ResNet on 32 images, 15-25% more CPU than the same
batches cost in the driver (kernel time, all of it). :func:`keep_heap` sets both thresholds where glibc's
own adjustment ends up in a long-lived process (blocks up to 32 MiB from the heap, up to 64 MiB kept free
at its top), so a worker costs what one process costs. Elsewhere (macOS, musl) it does nothing.
"""

from __future__ import annotations

import ctypes
import platform

M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's malloc.h
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # glibc's ceiling for its own dynamic threshold on 64-bit
TRIM_THRESHOLD = 2 * MMAP_THRESHOLD  # what glibc pairs with it

_applied = False


def keep_heap() -> bool:
    """Set this process's malloc thresholds as described above (once); True if they are set."""
    global _applied
    if _applied:
        return True
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # mmap threshold first: setting either one turns glibc's own adjustment off
    _applied = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    return _applied


__all__ = ["keep_heap"]
