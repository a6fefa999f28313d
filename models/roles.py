"""The three IGL-DT networks from a config: `model.student`, `model.global_teacher`,
`model.local_teacher`, and `model.teachers` (dual | dual-global | dual-local, Figure 5 ablation)."""
from __future__ import annotations

from typing import Mapping

import torch

from .deeplab import DeepLabV3Plus, build_segmenter

ROLES = ("student", "global_teacher", "local_teacher")
TEACHER_MODES = ("dual", "dual-global", "dual-local")


def teacher_backbones(cfg: Mapping) -> dict[str, dict]:
    """`{"global": spec, "local": spec}` after `model.teachers`: dual keeps both as configured,
    dual-global uses the global (Swin) spec twice, dual-local the local (WideResNet) spec twice."""
    model = cfg["model"]
    mode = model.get("teachers", "dual")
    if mode not in TEACHER_MODES:
        raise ValueError(f"model.teachers must be one of {', '.join(TEACHER_MODES)}, got '{mode}'")
    g, l = dict(model["global_teacher"]), dict(model["local_teacher"])
    if mode == "dual-global":
        l = dict(g)
    elif mode == "dual-local":
        g = dict(l)
    return {"global": g, "local": l}


def role_spec(cfg: Mapping, role: str) -> dict:
    """The model section that builds `role` (teacher ablation applied)."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, got '{role}'")
    if role == "student":
        return dict(cfg["model"]["student"])
    return teacher_backbones(cfg)[role.split("_")[0]]


def build_role(cfg: Mapping, role: str, num_classes: int) -> DeepLabV3Plus:
    """DeepLabV3+ for student | global_teacher | local_teacher from `cfg.model.<role>`.

    The random part of the initialisation (head, non-pretrained layers) is drawn from its own
    generator seeded by (`train.seed`, role), whatever was built before: the Sup-only baseline and
    the IGL-DT student start from the same weights (a controlled comparison), and the two teachers
    of a dual-global / dual-local pair still start different, as CPS needs.
    """
    spec = role_spec(cfg, role)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(cfg["train"].get("seed", 0)) * len(ROLES) + ROLES.index(role))
        return _build(spec, num_classes)


def _build(spec: Mapping, num_classes: int) -> DeepLabV3Plus:
    return build_segmenter(spec["backbone"], num_classes, output_stride=int(spec.get("output_stride", 16)),
                           pretrained=bool(spec.get("pretrained", False)), weights=spec.get("weights"),
                           stride_fallback=spec.get("stride_fallback", "upsample"), head=spec.get("head", "dense"),
                           channels=int(spec.get("channels", 256)), attention=int(spec.get("attention", 0)),
                           attention_residual=bool(spec.get("attention_residual", False)))
