"""DeepLabV3+ over timm backbones: shapes at odd sizes, output strides, roles, export wrapper, weights."""
from __future__ import annotations

import time

import pytest
import timm
import torch

from igldt.config import load_config
from igldt.models import (ALIASES, PretrainedWeightsError, SegmentationExportWrapper, build_role, build_segmenter,
                          param_groups, role_spec, teacher_backbones)
from igldt.models import backbones

H, W = 70, 90  # not multiples of 32 (nor of 16)
SMALL_SWIN = {"embed_dim": 48, "depths": (2, 2, 2, 2), "num_heads": (3, 6, 12, 24)}


@pytest.fixture
def tiny_wrn(monkeypatch):
    """WideResNet-50-2 block layout (bottleneck width 128, 256..2048 channels), one block per stage."""
    monkeypatch.setitem(ALIASES, "wrn_tiny", ("wide_resnet50_2", {"layers": (1, 1, 1, 1)}))
    return "wrn_tiny"


def _forward(model, x):
    model.eval()
    with torch.no_grad():
        return model(x)


@pytest.mark.parametrize("backbone,os_", [("resnet18", 16), ("resnet18", 8), ("swin_nano", 16), ("swin_nano", 8)])
def test_shapes_at_odd_size(backbone, os_):
    model = build_segmenter(backbone, num_classes=5, output_stride=os_)
    out = _forward(model, torch.randn(2, 3, H, W))
    assert out["logits"].shape == (2, 5, H, W)
    assert out["features"].shape == (2, 256, -(-H // 4), -(-W // 4))  # ceil(H/4), ceil(W/4)
    assert torch.isfinite(out["logits"]).all()


def test_wide_resnet_family_shapes(tiny_wrn):
    model = build_segmenter(tiny_wrn, num_classes=3, output_stride=16)
    assert model.backbone.feature_info.channels()[-1] == 2048
    out = _forward(model, torch.randn(1, 3, 64, 80))
    assert out["logits"].shape == (1, 3, 64, 80) and out["features"].shape == (1, 256, 16, 20)


@pytest.mark.slow
@pytest.mark.parametrize("backbone", ["wide_resnet50_2", "swin_tiny_patch4_window7_224"])
def test_paper_backbones_build(backbone):
    out = _forward(build_segmenter(backbone, num_classes=3), torch.randn(1, 3, 64, 80))
    assert out["logits"].shape == (1, 3, 64, 80) and out["features"].shape == (1, 256, 16, 20)


def test_output_stride_dilates_resnet_and_doubles_aspp_rates():
    m16, m8 = build_segmenter("resnet18", 3, 16), build_segmenter("resnet18", 3, 8)
    assert m16.backbone.feature_info.reduction()[-1] == 16 and m8.backbone.feature_info.reduction()[-1] == 8
    assert [b[0].dilation[0] for b in m16.aspp.branches[1:]] == [6, 12, 18]
    assert [b[0].dilation[0] for b in m8.aspp.branches[1:]] == [12, 24, 36]
    assert not m16.upsample_high and m16.stride == 16


def test_swin_stride_fallbacks():
    up = build_segmenter("swin_nano", 3, 16)
    assert up.upsample_high and up.stride == 32 and up.channels_last_features
    assert up.backbone.feature_info.channels()[-1] == 384  # every stage kept
    cut = build_segmenter("swin_nano", 3, 16, stride_fallback="truncate")
    assert not cut.upsample_high and cut.stride == 16 and cut.backbone.feature_info.reduction()[-1] == 16
    assert _forward(cut, torch.randn(1, 3, 33, 47))["features"].shape == (1, 256, 9, 12)
    assert cut.arch["stride_fallback"] == "truncate"


def test_bad_arguments_fail_clearly():
    with pytest.raises(ValueError, match="output_stride"):
        build_segmenter("resnet18", 3, output_stride=32)
    with pytest.raises(ValueError, match="unknown backbone 'resnet_nope'"):
        build_segmenter("resnet_nope", 3)


def test_train_step_and_param_groups():
    model = build_segmenter("resnet18", 4)
    groups = param_groups(model, lr=0.01, head_lr_mult=10.0, weight_decay=5e-4)
    assert [g["name"] for g in groups] == ["backbone", "head"]
    assert groups[0]["lr"] == pytest.approx(0.01) and groups[1]["lr"] == pytest.approx(0.1)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    opt = torch.optim.SGD(groups, lr=0.01, momentum=0.9)
    out = model.train()(torch.randn(2, 3, 48, 64))
    loss = torch.nn.functional.cross_entropy(out["logits"], torch.randint(0, 4, (2, 48, 64)))
    loss.backward()
    assert model.classifier.weight.grad is not None and model.backbone.conv1.weight.grad is not None
    opt.step()


# The random-init CPU roles of earlier presets: small, fast, and one Swin among them.
SMALL_ROLES = ["model.student={backbone: resnet18}", "model.global_teacher={backbone: swin_nano}",
               "model.local_teacher={backbone: resnet18}"]


def test_roles_and_teacher_ablations():
    cfg = load_config("demo", SMALL_ROLES)
    assert role_spec(cfg, "student").backbone == "resnet18"
    assert teacher_backbones(cfg) == {"global": cfg.model.global_teacher, "local": cfg.model.local_teacher}
    g = load_config("demo", SMALL_ROLES + ["model.teachers=dual-global"])
    assert {s.backbone for s in teacher_backbones(g).values()} == {"swin_nano"}
    l = load_config("demo", SMALL_ROLES + ["model.teachers=dual-local"])
    assert {s.backbone for s in teacher_backbones(l).values()} == {"resnet18"}
    assert role_spec(l, "global_teacher").backbone == "resnet18"
    with pytest.raises(ValueError, match="model.teachers"):
        teacher_backbones(load_config("demo", SMALL_ROLES + ["model.teachers=triple"]))
    with pytest.raises(ValueError, match="role"):
        role_spec(cfg, "teacher")
    student = build_role(cfg, "student", 6)
    assert student.arch == {"backbone": "resnet18", "output_stride": 16, "num_classes": 6, "stride_fallback": "upsample",
                            "head": "dense", "channels": 256, "attention": 0, "attention_residual": False}


def test_residual_attention_starts_as_its_attention_free_twin():
    """attention_residual: the attention layers add to the deepest map through a zero-initialised
    projection, so at initialisation the network computes exactly what the same network without
    attention computes (its pretrained deep features intact); the layers then learn (gradient flows)."""
    torch.manual_seed(0)
    att = build_segmenter("resnet18", 5, head="separable", attention=1, attention_residual=True).eval()
    plain = build_segmenter("resnet18", 5, head="separable").eval()
    plain.load_state_dict({k: v for k, v in att.state_dict().items() if not k.startswith("context.")})
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        assert torch.allclose(att(x)["logits"], plain(x)["logits"], atol=1e-5)
    att.train()
    att(x)["logits"].sum().backward()
    assert att.context.out.weight.grad.abs().sum() > 0
    # a checkpoint's arch written before the option existed rebuilds the replacing variant
    old = {k: v for k, v in att.arch.items() if k != "attention_residual"}
    assert build_segmenter(**old).attention_residual is False


def test_attention_layers_get_their_own_learning_rate_when_asked():
    model = build_segmenter("resnet18", 5, attention=1)
    groups = {g["name"]: g for g in param_groups(model, head_lr_mult=10.0)}
    assert set(groups) == {"backbone", "head"}  # by default they are new layers like the head
    groups = {g["name"]: g for g in param_groups(model, head_lr_mult=10.0, attention_lr_mult=1.0)}
    assert groups["attention"]["lr_mult"] == 1.0 and groups["head"]["lr_mult"] == 10.0
    assert {id(p) for p in groups["attention"]["params"]} == {id(p) for p in model.context.parameters()}
    assert sum(len(g["params"]) for g in groups.values()) == len(list(model.parameters()))


def test_export_wrapper_labels_and_baked_preprocess():
    model = build_segmenter("resnet18", 4).eval()
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    bgr = torch.randint(0, 256, (1, 37, 53, 3), dtype=torch.uint8)
    rgb = bgr.flip(-1).permute(0, 3, 1, 2).float() / 255
    x = (rgb - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        ref = model(x)["logits"]
        logits = SegmentationExportWrapper(model, "logits")(x)
        baked = SegmentationExportWrapper(model, "logits", bake_preprocess=True, mean=mean, std=std)(bgr)
        labels = SegmentationExportWrapper(model, "labels", bake_preprocess=True, mean=mean, std=std)(bgr)
    assert torch.equal(logits, ref)
    torch.testing.assert_close(baked, ref, atol=1e-4, rtol=1e-4)
    assert labels.dtype == torch.uint8 and labels.shape == (1, 37, 53)
    assert (labels.long() == ref.argmax(1)).float().mean() > 0.999  # ties aside
    with pytest.raises(ValueError, match="output"):
        SegmentationExportWrapper(model, "probs")


def test_pretrained_offline_fails_fast_with_one_line(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(backbones, "_pretrained_source", lambda arch: ("huggingface.co", False))
    monkeypatch.setattr(backbones, "_reachable", lambda host, timeout=3.0: False)
    t = time.perf_counter()
    with pytest.raises(PretrainedWeightsError) as e:
        build_segmenter("resnet18", 3, pretrained=True)
    assert time.perf_counter() - t < 10
    msg = str(e.value)
    assert "no network: pass weights=PATH to a local file or pretrained=false" in msg and "\n" not in msg


def test_pretrained_hub_error_is_wrapped(monkeypatch):
    """Looks cached and reachable, but the download still fails (the real offline case, sped up)."""
    monkeypatch.setattr(backbones, "_pretrained_source", lambda arch: ("huggingface.co", True))
    real = timm.create_model

    def fake(name, pretrained=False, **kw):
        if pretrained:
            raise OSError("We couldn't connect to 'https://huggingface.co'\nretry later")
        return real(name, pretrained=False, **kw)

    monkeypatch.setattr(backbones.timm, "create_model", fake)
    with pytest.raises(PretrainedWeightsError, match="no network") as e:
        build_segmenter("resnet18", 3, pretrained=True)
    assert "\n" not in str(e.value)


def test_pretrained_env_offline_and_alias(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(backbones, "_pretrained_source", lambda arch: ("huggingface.co", False))
    with pytest.raises(PretrainedWeightsError, match="HF_HUB_OFFLINE"):
        build_segmenter("resnet18", 3, pretrained=True)
    with pytest.raises(PretrainedWeightsError, match="swin_nano.*pretrained=false"):
        build_segmenter("swin_nano", 3, pretrained=True)


def test_local_weights_file_resnet(tmp_path):
    src = timm.create_model("resnet18", pretrained=False)  # full classifier model, timm naming
    path = tmp_path / "r18.pth"
    torch.save(src.state_dict(), path)
    model = build_segmenter("resnet18", 3, pretrained=True, weights=path)  # weights wins, no network
    assert model.weights_report == {"loaded": len(model.backbone.state_dict()), "missing": 0, "unexpected": 2}
    own = model.backbone.state_dict()
    for k, v in src.state_dict().items():
        if not k.startswith("fc."):
            assert torch.equal(own[k], v), k


def test_local_weights_file_swin_safetensors(tmp_path):
    from safetensors.torch import save_file

    src = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, **SMALL_SWIN)
    path = tmp_path / "swin.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    model = build_segmenter("swin_nano", 3, weights=path)
    assert model.weights_report["missing"] == 0 and model.weights_report["loaded"] > 50
    own = model.backbone.state_dict()
    assert torch.equal(own["layers_2.blocks.1.attn.qkv.weight"], src.state_dict()["layers.2.blocks.1.attn.qkv.weight"])


def test_local_weights_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        build_segmenter("resnet18", 3, weights=tmp_path / "nope.pth")
    wrong = tmp_path / "other.pth"
    torch.save({"conv1.weight": torch.zeros(8, 3, 3, 3)}, wrong)
    with pytest.raises(PretrainedWeightsError, match="wrong shape"):
        build_segmenter("resnet18", 3, weights=wrong)
    evil = tmp_path / "evil.pth"
    torch.save({"x": _Evil()}, evil)
    with pytest.raises(PretrainedWeightsError, match="cannot be read safely"):
        build_segmenter("resnet18", 3, weights=evil)


class _Evil:
    pass
