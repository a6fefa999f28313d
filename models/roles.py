"""The three IGL-DT networks from a config: `model.student`, `model.global_teacher`,
`model.local_teacher`, and `model.teachers` (dual | dual-global | dual-local, Figure 5 ablation)."""
from __future__ import annotations

from typing import get_args

import torch

from igldt.config import Config, RoleConfig
from igldt.config.schema import TeacherMode

from .deeplab import DeepLabV3Plus, build_segmenter

ROLES = ("student", "global_teacher", "local_teacher")
TEACHER_MODES = get_args(TeacherMode)  # checked when the config loads


def teacher_backbones(cfg: Config) -> dict[str, RoleConfig]:
    """`{"global": spec, "local": spec}` after `model.teachers`: dual keeps both as configured,
    dual-global uses the global (Swin) spec twice, dual-local the local (WideResNet) spec twice."""
    model = cfg.model
    g, l = model.global_teacher, model.local_teacher
    if model.teachers == "dual-global":
        l = g
    elif model.teachers == "dual-local":
        g = l
    return {"global": g, "local": l}


def role_spec(cfg: Config, role: str) -> RoleConfig:
    """The model section that builds `role` (teacher ablation applied)."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, got '{role}'")
    if role == "student":
        return cfg.model.student
    return teacher_backbones(cfg)[role.split("_")[0]]


def build_role(cfg: Config, role: str, num_classes: int) -> DeepLabV3Plus:
    """DeepLabV3+ for student | global_teacher | local_teacher from `cfg.model.<role>`.

    The random part of the initialisation (head, non-pretrained layers) is drawn from its own
    generator seeded by (`train.seed`, role), whatever was built before: the Sup-only baseline and
    the IGL-DT student start from the same weights (a controlled comparison), and the two teachers
    of a dual-global / dual-local pair still start different, as CPS needs.
    """
    spec = role_spec(cfg, role)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.train.seed * len(ROLES) + ROLES.index(role))
        return _build(spec, num_classes)


def _build(spec: RoleConfig, num_classes: int) -> DeepLabV3Plus:
    return build_segmenter(spec.backbone, num_classes, output_stride=spec.output_stride, pretrained=spec.pretrained,
                           weights=spec.weights, head=spec.head, channels=spec.channels, attention=spec.attention,
                           attention_residual=spec.attention_residual)
