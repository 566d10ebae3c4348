"""The contract shared by training, export and inference.

Everything a model's user must agree on lives here, once: the input tensor's name, shape, dtype and
normalisation, the class labels and the output's name. Training, export and the torch-free runtime
all import these values; none of them copies a constant by hand. This module imports only numpy.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import numpy as np

INPUT_NAME = "input"  # name of the ONNX graph input
OUTPUT_NAME = "log_probs"  # name of the ONNX graph output: log-softmax over the classes
IMAGE_SIZE = 28  # MNIST images are 28x28 pixels
CHANNELS = 1  # grayscale
INPUT_SHAPE = (CHANNELS, IMAGE_SIZE, IMAGE_SIZE)  # per image, channels first (NCHW)
INPUT_LAYOUT = "NCHW"
MEAN = 0.1307  # training-set pixel mean after scaling to 0..1
STD = 0.3081  # training-set pixel standard deviation after scaling to 0..1
PIXEL_SCALE = 1.0 / 255.0  # uint8 pixels -> 0..1
CLASS_LABELS = tuple(str(d) for d in range(10))  # output index i is the digit i
NUM_CLASSES = len(CLASS_LABELS)
METADATA_PREFIX = "mnist_edge."  # keys of the contract inside model metadata
# Where formats without key/value metadata keep those keys, as one JSON object: a TFLite model's
# metadata entry of this name, an ExecuTorch program's constant method of this name.
TFLITE_METADATA = "mnist_edge"
PTE_METADATA_METHOD = "mnist_edge_metadata"

# The architecture of the original mnist.py (model.py builds it; bench counts its FLOPs from it).
KERNEL = 3  # every conv is 3x3, stride 1, no padding: each one trims KERNEL - 1 pixels
CONV_CHANNELS = (32, 64, 128)  # conv1, conv2, conv3 output channels
LAYERS = ("conv1", "conv2", "conv3", "fc")  # module names, in order


def conv_output_size(image_size: int = IMAGE_SIZE, n_convs: int = len(CONV_CHANNELS)) -> int:
    """Side length after `n_convs` unpadded 3x3 convolutions (28 -> 22)."""
    return image_size - n_convs * (KERNEL - 1)


def macs_per_image(image_size: int = IMAGE_SIZE) -> int:
    """Multiply-adds per image: the three convolutions, then the fully connected layer."""
    macs, side, c_in = 0, image_size, CHANNELS
    for c_out in CONV_CHANNELS:
        side -= KERNEL - 1
        macs += side * side * c_out * c_in * KERNEL * KERNEL
        c_in = c_out
    return macs + side * side * c_in * NUM_CLASSES  # fc: 61,952 x 10


FLOPS_PER_IMAGE = 2 * macs_per_image()  # 94.2 MFLOP (a multiply-add is two FLOPs)


@dataclass(frozen=True)
class Contract:
    """Preprocessing contract carried inside an exported model's metadata."""

    mean: float = MEAN  # subtracted after scaling pixels to 0..1
    std: float = STD  # divided by after subtracting the mean
    pixel_scale: float = PIXEL_SCALE  # multiply raw uint8 pixels by this to reach 0..1
    input_name: str = INPUT_NAME
    output_name: str = OUTPUT_NAME
    input_layout: str = INPUT_LAYOUT
    image_size: int = IMAGE_SIZE
    class_labels: tuple[str, ...] = field(default=CLASS_LABELS)

    def to_metadata(self) -> dict[str, str]:
        """Flatten to string key/values (ONNX metadata_props, TorchScript extra files)."""
        out = {}
        for key, value in asdict(self).items():
            text = json.dumps(list(value)) if isinstance(value, tuple) else str(value)
            out[METADATA_PREFIX + key] = text
        return out

    @classmethod
    def from_metadata(cls, meta: dict[str, str]) -> Contract | None:
        """Rebuild from metadata written by `to_metadata`; None when the keys are absent."""
        if METADATA_PREFIX + "mean" not in meta:
            return None
        kw: dict[str, object] = {}
        for name, default in asdict(cls()).items():
            raw = meta.get(METADATA_PREFIX + name)
            if raw is None:
                kw[name] = default
            elif isinstance(default, tuple):
                kw[name] = tuple(str(x) for x in json.loads(raw))
            else:
                kw[name] = type(default)(raw)
        return cls(**kw)  # type: ignore[arg-type]


def normalize(pixels: np.ndarray, contract: Contract = Contract()) -> np.ndarray:
    """uint8 pixels (0..255) -> normalised float32, same shape."""
    x = pixels.astype(np.float32) * np.float32(contract.pixel_scale)
    return (x - np.float32(contract.mean)) / np.float32(contract.std)
