"""Configuration: YAML presets merged over `presets/default.yaml`, then `key=value` overrides.

A config is a plain nested dict (easy to save in a checkpoint and to diff); `Config` adds
attribute access. Unknown keys are rejected so that a typo never silently does nothing.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Iterable

import yaml

PRESET_DIR = Path(__file__).parent / "presets"


class ConfigError(ValueError):
    """A preset or override that does not fit the schema in presets/default.yaml."""


class Config(dict):
    """A dict whose nested dicts read as attributes: `cfg.train.lr`."""

    def __getattr__(self, name: str) -> Any:
        try:
            value = self[name]
        except KeyError:
            raise AttributeError(name) from None
        return Config(value) if isinstance(value, dict) and not isinstance(value, Config) else value

    def to_dict(self) -> dict:
        return copy.deepcopy(dict(self))


def available_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml") if p.stem != "default")


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e.__class__.__name__}); fix the file") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections (data:, model:, train:, method:)")
    return data


def _merge(base: dict, update: dict, where: str = "") -> dict:
    for key, value in update.items():
        path = f"{where}{key}"
        if key not in base:
            raise ConfigError(f"unknown config key '{path}'; known here: {', '.join(sorted(base))}")
        if isinstance(base[key], dict) and base[key] and isinstance(value, dict):
            _merge(base[key], value, path + ".")
        else:
            base[key] = copy.deepcopy(value)
    return base


def parse_override(item: str) -> tuple[list[str], Any]:
    """`train.lr=0.02` -> (['train', 'lr'], 0.02); the value is read as YAML (numbers, lists, null)."""
    if "=" not in item:
        raise ConfigError(f"override '{item}' is not key=value (for example train.lr=0.02)")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else None
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def set_key(cfg: dict, keys: list[str], value: Any) -> None:
    node = cfg
    for i, k in enumerate(keys):
        if not isinstance(node, dict) or k not in node:
            raise ConfigError(f"unknown config key '{'.'.join(keys[: i + 1])}'")
        if i == len(keys) - 1:
            node[k] = value
        else:
            node = node[k]


def _apply_stage(cfg: dict, stage: str) -> None:
    """Merge the preset's `stages.<stage>` section (nested like the config: `{train: {iters: 1200}}`)
    over the config, so one preset can give each stage its own budget. Every stage section is
    checked whichever stage runs, so a typo fails at once rather than when that stage comes."""
    for name, section in cfg["stages"].items():
        _merge(copy.deepcopy({k: v for k, v in cfg.items() if k != "stages"}), section or {}, f"stages.{name}.")
    _merge(cfg, copy.deepcopy(cfg["stages"].get(stage) or {}))


def load_config(preset: str | Path | None = None, overrides: Iterable[str] = (), stage: str | None = None,
                **updates: Any) -> Config:
    """Defaults, then a preset (name or YAML path), then the preset's section for `stage`, then
    `key=value` overrides (so a flag wins over a stage's budget), then keyword sections."""
    cfg = _read_yaml(PRESET_DIR / "default.yaml")
    if preset:
        path = Path(preset)
        if not path.suffix:
            path = PRESET_DIR / f"{preset}.yaml"
            if not path.exists():
                raise ConfigError(f"unknown preset '{preset}'; choose one of: {', '.join(available_presets())}")
        elif not path.exists():
            raise ConfigError(f"config file {path} does not exist")
        _merge(cfg, _read_yaml(path))
    if stage:
        _apply_stage(cfg, stage)
    for item in overrides:
        set_key(cfg, *parse_override(item))
    if updates:
        _merge(cfg, updates)
    return Config(cfg)
