"""Reading a config: `presets/default.yaml`, then a preset, then the preset's section for the stage,
then `key=value` overrides, then keyword sections; the merged data is checked and typed once
(`typed.section`), so every consumer reads `cfg.train.lr` and nothing casts or defaults again.
Unknown keys are refused at each step, so that a typo never silently does nothing."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from .errors import ConfigError
from .schema import Config
from .typed import check_partial, section

PRESET_DIR = Path(__file__).resolve().parent.parent / "presets"


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


def _merge(base: dict, update: Mapping, where: str = "") -> dict:
    for key, value in update.items():
        path = f"{where}{key}"
        if key not in base:
            raise ConfigError(f"unknown config key '{path}'; known here: {', '.join(sorted(base))}")
        if isinstance(base[key], dict) and base[key] and isinstance(value, Mapping):
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


def set_key(raw: dict, keys: list[str], value: Any) -> None:
    """Set one key of the merged data; a mapping given for a section replaces that section whole."""
    node = raw
    for i, k in enumerate(keys):
        if not isinstance(node, dict) or k not in node:
            raise ConfigError(f"unknown config key '{'.'.join(keys[: i + 1])}'")
        if i == len(keys) - 1:
            node[k] = value
        else:
            node = node[k]


def _apply_stage(raw: dict, stage: str) -> None:
    """Merge the preset's `stages.<stage>` section (nested like the config: `{train: {iters: 1200}}`)
    over the config, so one preset can give each stage its own budget. Every stage section is
    checked whichever stage runs, so a typo fails at once rather than when that stage comes."""
    for name, stage_section in raw["stages"].items():
        check_partial(stage_section, f"stages.{name}")
    _merge(raw, copy.deepcopy(raw["stages"].get(stage) or {}))


def _preset_path(preset: str | Path) -> Path:
    path = Path(preset)
    if not path.suffix:
        path = PRESET_DIR / f"{preset}.yaml"
        if not path.exists():
            raise ConfigError(f"unknown preset '{preset}'; choose one of: {', '.join(available_presets())}")
    elif not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    return path


def typed(raw: Mapping) -> Config:
    """The merged data checked against the schema (one-line ConfigError naming the key)."""
    return section(Config, raw, "")


def load_config(preset: str | Path | None = None, overrides: Iterable[str] = (), stage: str | None = None,
                **updates: Any) -> Config:
    """Defaults, then a preset (name or YAML path), then the preset's section for `stage`, then
    `key=value` overrides (so a flag wins over a stage's budget), then keyword sections."""
    raw = _read_yaml(PRESET_DIR / "default.yaml")
    if preset:
        _merge(raw, _read_yaml(_preset_path(preset)))
    if stage:
        _apply_stage(raw, stage)
    for item in overrides:
        set_key(raw, *parse_override(item))
    if updates:
        _merge(raw, updates)
    return typed(raw)


def config_from_dict(saved: Mapping, overrides: Iterable[str] = ()) -> Config:
    """A config saved as plain data (`Config.to_dict()`, a checkpoint's `config`), then `key=value`
    overrides. Keys a run saved before they existed take their value from default.yaml."""
    if not isinstance(saved, Mapping):
        raise ConfigError(f"a saved config must be a mapping of sections, got {type(saved).__name__}")
    raw = _merge(_read_yaml(PRESET_DIR / "default.yaml"), saved)
    for item in overrides:
        set_key(raw, *parse_override(item))
    return typed(raw)


def recorded_config(meta: Mapping) -> Config | None:
    """The training config a checkpoint (or its meta) records, typed; None when it records none."""
    saved = meta.get("config")
    return config_from_dict(saved) if saved else None
