"""Quantization modes beside static PTQ: dynamic (``dynamic.py``) and advice on which mode fits (``advice.py``).

Quantization-aware training lives in :mod:`ptsq.qat`.
"""
