"""Range setting and weight algorithms: one module each, chosen by name through QuantConfig.

- activation observers (``QuantConfig.fx.observer``): ``minmax``, ``moving-average``, ``histogram``
  (torch.ao's L2 search, the x86 default), ``mse`` (:mod:`ptsq.algorithms.mse`), ``percentile``
  (:mod:`ptsq.algorithms.percentile`), ``entropy`` (KL, :mod:`ptsq.algorithms.entropy`);
- cross-layer equalization (:mod:`ptsq.algorithms.equalization`, clean-up step ``equalize``);
- bias correction (:mod:`ptsq.algorithms.bias_correction`, clean-up step ``bias-correction``).

This package module imports nothing heavy: names only.
"""

from ptsq.config import OBSERVER_NAMES

__all__ = ["OBSERVER_NAMES"]
