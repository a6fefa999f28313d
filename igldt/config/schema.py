"""The config's shape: one frozen dataclass per section, with the type of every key.

The values live in `presets/default.yaml`, once: it lists every key with the comment that documents
it, presets list what they change, and `load.py` merges them before `typed.py` turns the result into
these classes. The dataclasses hold types, not values, so a default cannot exist twice and drift:
their fields have no defaults. The one exception is `RoleConfig`: a role given whole on the command
line (`-o model.student={backbone: resnet18}`) replaces the preset's role, and the keys it leaves out
take a bare network's values (no pretrained weights, the dense head), as the builder always did.
`Literal` types are the choices a key accepts; `tests/test_config.py` checks them against the code
that acts on them (datasets, heads, evaluation modes, AMP).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, Literal

Dataset = Literal["voc", "cityscapes", "camvid", "folder", "demo"]
Head = Literal["dense", "separable"]
TeacherMode = Literal["dual", "dual-global", "dual-local"]
AmpMode = Literal["auto", "bf16", "fp16", "off"]
EvalMode = Literal["whole", "center", "slide"]
LossTerm = Literal["pseudo", "glo", "loc", "dis"]
SingleState = Literal["half", "every"]
PseudoTargets = Literal["hard", "soft"]
ThresholdRule = Literal["kept", "valid"]
UnlabelledPool = Literal["rest", "labelled"]
SupLoss = Literal["ce", "ohem", "median_freq"]
TeacherRecipe = Literal["cps", "unimatch"]

# YAML 1.1 reads a bare `off`/`on` as a boolean; train.amp takes them in the sense its comment gives.
YAML_BOOL_WORDS = "yaml_bool_words"


@dataclass(frozen=True)
class DataConfig:
    dataset: Dataset
    root: str
    train_split: str
    val_split: str
    labelled_list: str | None
    unlabelled_list: str | None
    unlabelled_pool: UnlabelledPool
    fraction: float | None
    count: int | None
    split_seed: int
    crop: tuple[int, int] | None
    scale: tuple[float, float] | None
    flip: bool
    strong: bool
    cutmix: bool
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    workers: int


@dataclass(frozen=True)
class RoleConfig:
    """One network (student, global or local teacher). Defaults: see the module docstring."""
    backbone: str
    output_stride: int = 16
    pretrained: bool = False
    weights: str | None = None
    head: Head = "dense"
    channels: int = 256
    attention: int = 0
    attention_residual: bool = False


@dataclass(frozen=True)
class ModelConfig:
    student: RoleConfig
    global_teacher: RoleConfig
    local_teacher: RoleConfig
    teachers: TeacherMode
    sync_bn: bool


@dataclass(frozen=True)
class TrainConfig:
    epochs: int
    iters: int | None
    batch_size: int
    global_batch: bool
    accum: int
    lr: float
    head_lr_mult: float
    attention_lr_mult: float | None
    momentum: float
    weight_decay: float
    poly_power: float
    warmup_iters: int
    amp: AmpMode = field(metadata={YAML_BOOL_WORDS: {False: "off", True: "auto"}})
    channels_last: bool
    seed: int
    val_every: int
    eval_mode: EvalMode
    eval_crop: tuple[int, int] | None
    eval_stride: tuple[int, int] | None
    max_nonfinite: int
    save_every: int
    save_every_s: float
    keep_validated: bool
    log_every: int


@dataclass(frozen=True)
class MethodConfig:
    cps_weight: float
    cps_rampup: int
    cps_warmup: int
    cps_labelled: bool
    cps_class_power: float | None
    cps_class_ratio: bool
    cps_threshold: float | None
    alpha: float
    grid: int
    losses: tuple[LossTerm, ...]
    single_state: SingleState
    pseudo_labelled: bool
    align: bool
    threshold: float | None
    threshold_rule: ThresholdRule
    pseudo_targets: PseudoTargets
    sup_loss: SupLoss
    pseudo_loss: SupLoss
    ohem_threshold: float
    ohem_min_kept: int
    teacher_recipe: TeacherRecipe
    unimatch_threshold: float
    unimatch_fp_dropout: float


# A stage section is a partial config in the same nesting (`{train: {iters: 1200}}`), each of its
# values checked against the type of the key it sets (typed.check_partial).
StageSection = dict[str, Any]


@dataclass(frozen=True)
class StagesConfig:
    supervised: StageSection
    teachers: StageSection
    student: StageSection
    unimatch: StageSection


@dataclass(frozen=True)
class Config:
    """A whole training config: `cfg.train.lr`, `cfg.model.student.backbone`, ..."""
    data: DataConfig
    model: ModelConfig
    train: TrainConfig
    method: MethodConfig
    stages: StagesConfig

    def to_dict(self) -> dict:
        """Plain nested data (lists, not tuples), as checkpoints store it and YAML writes it."""
        return to_plain(self)


def to_plain(obj: Any) -> Any:
    """Dataclasses -> dicts, tuples -> lists: what `yaml.safe_dump` and a safe checkpoint take."""
    if is_dataclass(obj):
        return {f.name: to_plain(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, Mapping):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    return obj
