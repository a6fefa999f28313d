"""Configuration: YAML presets merged over `presets/default.yaml` (every key, documented), a preset's
per-stage section, `key=value` overrides, checked once into typed sections (`schema.py`).

    cfg = load_config("camvid-cpu", ["train.lr=0.02"], stage="teachers")
    cfg.train.lr, cfg.data.crop, cfg.model.student.head    # 0.02, (160, 224), 'separable'
    cfg.to_dict()                                          # plain data, as checkpoints store it
"""
from .errors import ConfigError
from .load import (PRESET_DIR, available_presets, config_from_dict, load_config, parse_override, recorded_config,
                   set_key)
from .schema import Config, DataConfig, MethodConfig, ModelConfig, RoleConfig, StagesConfig, TrainConfig

__all__ = ["ConfigError", "Config", "DataConfig", "RoleConfig", "ModelConfig", "TrainConfig", "MethodConfig",
           "StagesConfig", "PRESET_DIR", "available_presets", "load_config", "config_from_dict", "recorded_config",
           "parse_override", "set_key"]
