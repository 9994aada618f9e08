"""A corpus of small, unusual model patterns: what real forward() code does that trips quantizers.

Each pattern (:mod:`tests.patterns.catalogue`) is a tiny ``nn.Module`` with its own input batches.
:mod:`tests.patterns.runner` quantizes it with the plain torch.ao FX recipe and with ptsq's defaults on
the same calibration and check batches; ``test_patterns.py`` holds ptsq to the rules (quantizes, saves,
reloads identically, never modifies the model, never more than 1 dB below the plain recipe), and
``python -m benchmarks.bench_patterns`` writes the per-pattern summary (BENCHMARKS.md).
"""
