import inspect

import pytest
import torch
from torch import nn

from mnist_edge import model as model_module
from mnist_edge.model import MnistCNN, conv_output_size


@pytest.mark.parametrize("batch", [1, 7])
def test_outputs_are_log_probabilities(batch):
    torch.manual_seed(0)
    out = MnistCNN()(torch.randn(batch, 1, 28, 28))
    assert out.shape == (batch, 10)
    torch.testing.assert_close(out.exp().sum(1), torch.ones(batch))


def test_parameter_count_is_the_originals():
    m = MnistCNN()
    assert sum(p.numel() for p in m.parameters()) == 712_202
    assert (m.conv1.in_channels, m.conv1.out_channels) == (1, 32)
    assert (m.conv2.in_channels, m.conv2.out_channels) == (32, 64)
    assert (m.conv3.in_channels, m.conv3.out_channels) == (64, 128)
    assert all(c.kernel_size == (3, 3) for c in (m.conv1, m.conv2, m.conv3))


def test_fc_size_is_derived_from_the_input_size():
    assert MnistCNN().fc_input_size == 128 * 22 * 22
    assert conv_output_size(32) == 26
    m = MnistCNN(image_size=32)
    assert m.fc_input_size == 128 * 26 * 26
    assert m(torch.zeros(2, 1, 32, 32)).shape == (2, 10)
    with pytest.raises(ValueError):
        MnistCNN(image_size=6)


def test_model_module_defines_one_module_class():
    classes = [
        obj
        for _, obj in inspect.getmembers(model_module, inspect.isclass)
        if issubclass(obj, nn.Module) and obj.__module__ == model_module.__name__
    ]
    assert classes == [MnistCNN]
