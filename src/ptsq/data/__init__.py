"""Calibration and evaluation data: preprocessing specs and folders of images."""

from ptsq.data.images import IMAGE_EXTENSIONS, CalibrationImages, ImageFolder, decode_image, find_images
from ptsq.data.preprocess import PRESETS, Preprocess, parse_floats, parse_size, preset

__all__ = [
    "IMAGE_EXTENSIONS",
    "PRESETS",
    "CalibrationImages",
    "ImageFolder",
    "Preprocess",
    "decode_image",
    "find_images",
    "parse_floats",
    "parse_size",
    "preset",
]
