"""Calibration and evaluation data: preprocessing specs, folders of images, tensor files and text files."""

from ptsq.data.images import IMAGE_EXTENSIONS, CalibrationImages, ImageFolder, decode_image, find_images
from ptsq.data.preprocess import PRESETS, Preprocess, parse_floats, parse_size, preset
from ptsq.data.tensor_inputs import TensorInputs, inputs_from_file
from ptsq.data.tensors import TENSOR_EXTENSIONS, CalibrationTensors, is_tensor_file

__all__ = [
    "IMAGE_EXTENSIONS",
    "PRESETS",
    "TENSOR_EXTENSIONS",
    "CalibrationImages",
    "CalibrationTensors",
    "ImageFolder",
    "Preprocess",
    "TensorInputs",
    "decode_image",
    "find_images",
    "inputs_from_file",
    "is_tensor_file",
    "parse_floats",
    "parse_size",
    "preset",
]
