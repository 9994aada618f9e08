"""Quantization modes, one pipeline each: ``static`` (calibrated PTQ), ``dynamic`` (int8 weights, activation
ranges at run time) and ``qat`` (fine-tuning with fake quantization); ``check`` is the self-check against fp32
they share, ``advice`` says when a mode does not fit a model. :func:`ptsq.quantize` dispatches on
``QuantConfig.mode``.
"""
