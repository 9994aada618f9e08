"""``ptsq.qat``: quantization-aware training with your own training loop (see :mod:`ptsq.modes.qat`)."""

from ptsq.modes.qat import Schedule, calibrate, convert, finetune, freeze_bn, freeze_observers, prepare

__all__ = ["Schedule", "calibrate", "convert", "finetune", "freeze_bn", "freeze_observers", "prepare"]
