"""DeepLabV3+ segmenters over timm backbones, and builders for the three IGL-DT roles."""
from .backbones import ALIASES, PretrainedWeightsError, load_backbone_weights, read_state_dict
from .deeplab import ASPP, DeepLabV3Plus, Decoder, build_segmenter, param_groups
from .export_wrapper import IMAGENET_MEAN, IMAGENET_STD, SegmentationExportWrapper
from .exportable import exportable, resolve_same_padding
from .roles import ROLES, TEACHER_MODES, build_role, role_spec, teacher_backbones

__all__ = ["ALIASES", "ASPP", "DeepLabV3Plus", "Decoder", "IMAGENET_MEAN", "IMAGENET_STD",
           "PretrainedWeightsError", "ROLES", "SegmentationExportWrapper", "TEACHER_MODES",
           "build_role", "exportable", "build_segmenter", "load_backbone_weights", "param_groups", "read_state_dict",
           "resolve_same_padding", "role_spec", "teacher_backbones"]
