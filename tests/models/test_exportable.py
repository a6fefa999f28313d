"""models/exportable.py: 'same' padding fixed, in-place off, BatchNorm folded, each exact where it applies."""
from __future__ import annotations

import pytest
import torch
from timm.layers.conv2d_same import Conv2dSame
from timm.layers.pool2d_same import MaxPool2dSame
from torch import nn

from igldt.models import build_segmenter, exportable, resolve_same_padding
from igldt.models.exportable import fold_batchnorm, same_pad, without_inplace


def test_same_pad_of_a_divisible_axis():
    """timm's ceil(x / s) arithmetic reduces to a constant once s divides x: TF puts the odd pixel after."""
    assert same_pad(3, 2) == (0, 1)
    assert same_pad(5, 2) == (1, 2)
    assert same_pad(3, 1) == (1, 1) and same_pad(5, 1, dilation=2) == (4, 4)
    assert same_pad(1, 2) == (0, 0)  # a 1x1 stride-2 conv pads nothing


@pytest.fixture(scope="module")
def lite():
    torch.manual_seed(0)
    model = build_segmenter("tf_efficientnet_lite0", 5, 16, head="separable").eval()
    for m in model.modules():  # running statistics away from (0, 1), so that folding has work to do
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return model


def _logits(model, x):
    with torch.no_grad():
        return model(x)["logits"]


def test_fixed_padding_is_exact_on_every_multiple_of_the_stride(lite):
    fixed, n = resolve_same_padding(lite, torch.zeros(1, 3, lite.stride, lite.stride))
    assert n >= 4, "the Lite0 backbone's stride-2 layers should be timm Conv2dSame"
    assert not any(isinstance(m, Conv2dSame) for m in fixed.modules())
    assert any(isinstance(m, Conv2dSame) for m in lite.modules()), "the original must be left as it was"
    for h, w in ((16, 16), (48, 80), (96, 128)):
        x = torch.randn(2, 3, h, w)
        assert torch.equal(_logits(lite, x), _logits(fixed, x)), (h, w)


def test_a_layer_that_would_see_an_odd_size_is_refused():
    """Two stride-2 'same' convs need inputs of 4k: a probe of 2x2 leaves the second one a 1x1 input."""
    net = nn.Sequential(Conv2dSame(3, 4, 3, stride=2), Conv2dSame(4, 4, 3, stride=2)).eval()
    with pytest.raises(ValueError, match=r"layer '1' sees \(1, 1\)"):
        resolve_same_padding(net, torch.zeros(1, 3, 2, 2))
    fixed, n = resolve_same_padding(net, torch.zeros(1, 3, 4, 4))
    x = torch.randn(1, 3, 12, 20)
    assert n == 2 and torch.equal(net(x), fixed(x))


def test_max_pool_pads_with_minus_infinity():
    """A negative input padded with zeros would change the max at the border; -inf does not."""
    net = nn.Sequential(MaxPool2dSame(3, stride=2)).eval()
    fixed, _ = resolve_same_padding(net, torch.zeros(1, 1, 2, 2))
    x = -torch.rand(1, 1, 8, 6) - 1
    assert torch.equal(net(x), fixed(x))


def test_inplace_activations_are_turned_off(lite):
    net = nn.Sequential(nn.Conv2d(3, 3, 1), nn.ReLU6(inplace=True), nn.ReLU(inplace=True))
    assert without_inplace(net) == 2 and not net[1].inplace and not net[2].inplace
    fixed, report = exportable(lite, torch.zeros(1, 3, 16, 16))
    assert report["inplace_off"] > 30 and not any(getattr(m, "inplace", False) for m in fixed.modules())


def test_batchnorm_folds_into_the_convolution_that_feeds_it(lite):
    fixed, report = exportable(lite, torch.zeros(1, 3, 16, 16))
    before = sum(isinstance(m, nn.BatchNorm2d) for m in lite.modules())
    after = sum(isinstance(m, nn.BatchNorm2d) for m in fixed.modules())
    assert report["batchnorm_folded"] == before - after and after <= 4  # the few after a non-conv stay
    x = torch.randn(2, 3, 64, 96)
    a, b = _logits(lite, x), _logits(fixed, x)
    assert (a - b).abs().max() <= 1e-4 * a.abs().max()
    assert torch.equal(a.argmax(1), b.argmax(1))


class ConvFeedsTwo(nn.Module):
    """The conv's output feeds its BatchNorm and a skip: folding would change the skip."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3)

    def forward(self, x):
        y = self.conv(x)
        return self.bn(y) + y


def test_a_fold_that_would_change_the_output_is_not_kept():
    net = ConvFeedsTwo().eval()
    net.bn.running_mean.fill_(0.5)
    net.bn.running_var.fill_(3.0)
    probe = torch.zeros(1, 3, 8, 8)
    assert fold_batchnorm(ConvFeedsTwo().eval(), probe) == 1  # the dataflow alone cannot tell
    fixed, report = exportable(net, probe)
    x = torch.randn(1, 3, 8, 8)
    assert report["batchnorm_folded"] == 0 and torch.equal(net(x), fixed(x))
