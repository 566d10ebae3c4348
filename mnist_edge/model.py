"""The seed CNN from the original mnist.py, and nothing else."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .edge import spec

KERNEL = spec.KERNEL
CHANNELS = spec.CONV_CHANNELS
conv_output_size = spec.conv_output_size


class MnistCNN(nn.Module):
    """Three 3x3 convs (1->32->64->128), ReLU after each, flatten, linear, log-softmax."""

    def __init__(
        self,
        image_size: int = spec.IMAGE_SIZE,
        in_channels: int = spec.CHANNELS,
        num_classes: int = spec.NUM_CLASSES,
    ) -> None:
        super().__init__()
        side = conv_output_size(image_size)
        if side < 1:
            raise ValueError(f"image_size {image_size} is too small for three 3x3 convolutions")
        self.conv1 = nn.Conv2d(in_channels, CHANNELS[0], KERNEL)
        self.conv2 = nn.Conv2d(CHANNELS[0], CHANNELS[1], KERNEL)
        self.conv3 = nn.Conv2d(CHANNELS[1], CHANNELS[2], KERNEL)
        self.fc_input_size = CHANNELS[2] * side * side  # 128 * 22 * 22 = 61,952 for 28x28
        self.fc = nn.Linear(self.fc_input_size, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))  # (N, 32, 26, 26)
        x = F.relu(self.conv2(x))  # (N, 64, 24, 24)
        x = F.relu(self.conv3(x))  # (N, 128, 22, 22)
        x = torch.flatten(x, 1)  # (N, 61952)
        return F.log_softmax(self.fc(x), dim=1)  # (N, 10)
