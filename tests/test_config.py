import pytest
import yaml

from igldt.config import Config, ConfigError, available_presets, config_from_dict, load_config, recorded_config


@pytest.mark.parametrize("stage", [None, "supervised", "teachers", "student"])
@pytest.mark.parametrize("name", available_presets())
def test_every_preset_loads_against_the_schema_for_every_stage(name, stage):
    cfg = load_config(name, stage=stage)
    assert isinstance(cfg, Config) and cfg.model.student.backbone
    assert isinstance(cfg.train.lr, float) and cfg.train.lr > 0


def test_required_presets_exist():
    assert {"voc-r50", "voc-r101", "cityscapes-r101", "camvid-cpu", "demo"} <= set(available_presets())


def test_overrides_are_typed_and_nested():
    cfg = load_config("camvid-cpu", ["train.lr=0.02", "data.crop=[64, 96]", "method.threshold=null",
                                     "model.student.backbone=resnet34", "method.losses=[pseudo, glo]"])
    assert cfg.train.lr == 0.02 and cfg.data.crop == (64, 96) and cfg.method.threshold is None
    assert cfg.model.student.backbone == "resnet34" and cfg.method.losses == ("pseudo", "glo")
    # the preset's other student keys survive a partial override
    assert cfg.model.student.output_stride == 16


def test_paper_settings_follow_method_md():
    voc = load_config("voc-r50")
    assert (voc.train.lr, voc.train.momentum, voc.train.weight_decay, voc.train.poly_power) == (0.01, 0.9, 5e-4, 0.9)
    assert voc.train.epochs == 80 and voc.data.crop == (512, 512)
    cs = load_config("cityscapes-r101")
    assert cs.train.lr == 0.002 and cs.train.epochs == 240 and cs.train.batch_size == 8
    assert cs.model.student.backbone == "resnet101" and cs.model.local_teacher.backbone == "wide_resnet101_2"
    assert voc.method.alpha == 0.1 and voc.method.cps_weight == 1.5
    assert cs.method.cps_weight == 6.0  # CPS's Cityscapes config (TorchSemiSeg exp.city)
    # one learning rate, as METHOD.md gives (no head multiplier); CPS on labelled images too, as CPS's code
    assert voc.train.head_lr_mult == cs.train.head_lr_mult == 1.0 and voc.method.cps_labelled


@pytest.mark.parametrize("bad, match", [
    (["train.lrr=1"], "unknown config key 'train.lrr'"),
    (["nosuch.key=1"], "unknown config key 'nosuch'"),
    (["train.lr"], "not key=value"),
])
def test_bad_overrides_name_the_key(bad, match):
    with pytest.raises(ConfigError, match=match):
        load_config("demo", bad)


def test_unknown_preset_lists_the_choices(tmp_path):
    with pytest.raises(ConfigError, match="choose one of: .*camvid-cpu"):
        load_config("nope")
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {lr: 0.1, typo: 3}\n")
    with pytest.raises(ConfigError, match="unknown config key 'train.typo'"):
        load_config(bad)


def test_a_stage_section_sets_that_stages_budget_and_overrides_still_win(tmp_path):
    preset = tmp_path / "p.yaml"
    preset.write_text("train: {iters: 600, warmup_iters: 100}\n"
                      "stages: {teachers: {train: {iters: 1200, warmup_iters: 0}, method: {cps_warmup: 600}}}\n")
    teachers = load_config(preset, stage="teachers")
    assert (teachers.train.iters, teachers.train.warmup_iters, teachers.method.cps_warmup) == (1200, 0, 600)
    student = load_config(preset, stage="student")
    assert (student.train.iters, student.train.warmup_iters, student.method.cps_warmup) == (600, 100, 0)
    assert load_config(preset, ["train.iters=5"], stage="teachers").train.iters == 5
    assert load_config("camvid-cpu", stage="teachers").train.iters == 2 * load_config("camvid-cpu").train.iters


def test_a_typo_in_any_stage_section_fails_whichever_stage_runs(tmp_path):
    preset = tmp_path / "p.yaml"
    preset.write_text("stages: {teachers: {train: {itres: 1200}}}\n")
    for stage in ("teachers", "student"):
        with pytest.raises(ConfigError, match="unknown config key 'stages.teachers.train.itres'"):
            load_config(preset, stage=stage)


# -- typed sections: one check at load, one line naming the key -------------------------------------
@pytest.mark.parametrize("override, message", [
    ("train.lr=abc", "train.lr: expected a number, got 'abc'"),
    ("train.iters=2.5", "train.iters: expected an integer or null, got 2.5"),
    ("train.batch_size=true", "train.batch_size: expected an integer, got True"),  # a bool is not a number
    ("data.flip=1", "data.flip: expected true or false, got 1"),
    ("data.root=7", "data.root: expected a string, got 7"),
    ("data.crop=[64]", "data.crop: expected a list of 2 integers or null, got [64]"),
    ("data.mean=[0.5, x, 0.5]", "data.mean: expected a list of 3 numbers, got [0.5, 'x', 0.5]"),
    ("model.student.head=sparse", "model.student.head: expected one of dense, separable, got 'sparse'"),
    ("model.teachers=triple", "model.teachers: expected one of dual, dual-global, dual-local, got 'triple'"),
    ("train.eval_mode=tiles", "train.eval_mode: expected one of whole, center, slide, got 'tiles'"),
    ("method.losses=[pseudo, glob]", "method.losses: expected a list of any of pseudo, glo, loc, dis"),
    ("train={lr: 0.1}", "config key 'train.epochs' is missing"),
])
def test_a_wrong_value_is_one_line_naming_the_key_value_and_expectation(override, message):
    with pytest.raises(ConfigError) as e:
        load_config("demo", [override])
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


def test_a_wrong_value_in_a_preset_or_a_stage_section_names_its_full_key(tmp_path):
    preset = tmp_path / "p.yaml"
    preset.write_text("model: {global_teacher: {attention: two}}\n")
    with pytest.raises(ConfigError, match=r"^model.global_teacher.attention: expected an integer, got 'two'$"):
        load_config(preset)
    preset.write_text("stages: {teachers: {train: {iters: 1.5}}}\n")
    for stage in (None, "student", "teachers"):  # checked whichever stage runs, and with none
        with pytest.raises(ConfigError, match=r"^stages.teachers.train.iters: expected an integer or null"):
            load_config(preset, stage=stage)


def test_values_are_converted_to_their_declared_types():
    cfg = load_config("demo", ["train.lr=1", "train.weight_decay=1e-4", "data.scale=[1, 2]", "train.amp=off",
                               "train.eval_crop=[64, 96]"])
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)  # a YAML int where a number is expected
    assert cfg.train.weight_decay == 1e-4  # YAML 1.1 reads 1e-4 as a string
    assert cfg.data.scale == (1.0, 2.0) and cfg.train.eval_crop == (64, 96)  # lists become tuples
    assert cfg.train.amp == "off" and load_config("demo", ["train.amp=on"]).train.amp == "auto"  # YAML's booleans
    assert load_config("camvid-cpu").train.amp == "off"  # the preset writes a bare `amp: off`


def test_a_role_given_whole_takes_a_bare_networks_values_for_the_keys_it_leaves_out():
    cfg = load_config("demo", ["model.local_teacher={backbone: resnet18}"])
    role = cfg.model.local_teacher
    assert (role.backbone, role.pretrained, role.weights, role.head, role.attention) == ("resnet18", False, None,
                                                                                         "dense", 0)
    assert cfg.model.student.weights == "package"  # the other roles keep the preset's


def test_sections_are_frozen():
    cfg = load_config("demo")
    with pytest.raises(AttributeError):
        cfg.train.lr = 1.0


# -- plain data: checkpoints and printing -------------------------------------------------------------
@pytest.mark.parametrize("stage", [None, "teachers"])
@pytest.mark.parametrize("name", available_presets())
def test_to_dict_round_trips_to_an_equal_config(name, stage):
    cfg = load_config(name, stage=stage)
    plain = cfg.to_dict()
    assert plain["data"]["crop"] == list(cfg.data.crop)  # plain lists, as YAML and a safe checkpoint take
    assert yaml.safe_load(yaml.safe_dump(plain)) == plain
    assert config_from_dict(plain) == cfg and load_config(None, **plain) == cfg


def test_an_old_checkpoints_config_loads_with_defaults_for_the_keys_it_lacks():
    old = load_config("camvid-cpu").to_dict()
    for section, key in (("model", "teachers"), ("train", "attention_lr_mult"), ("method", "cps_warmup"),
                         ("method", "pseudo_labelled")):
        del old[section][key]
    for role in ("student", "global_teacher", "local_teacher"):  # before attention_residual existed
        del old["model"][role]["attention_residual"]
    old["train"]["amp"] = False  # saved as YAML read it, before the config typed it
    cfg = config_from_dict(old, ["train.iters=5"])
    default = load_config()
    assert cfg.model.teachers == default.model.teachers and cfg.method.cps_warmup == default.method.cps_warmup
    assert cfg.train.attention_lr_mult is None and cfg.method.pseudo_labelled is True
    assert cfg.model.global_teacher.attention_residual is False and cfg.model.global_teacher.attention == 2
    assert cfg.train.amp == "off" and cfg.train.iters == 5 and cfg.data.crop == (160, 224)
    with pytest.raises(ConfigError, match="unknown config key 'train.lrr'"):
        config_from_dict({"train": {"lrr": 1}})


def test_recorded_config_reads_a_checkpoints_config_or_none():
    cfg = load_config("demo")
    assert recorded_config({"config": cfg.to_dict()}) == cfg
    assert recorded_config({"config": None}) is None and recorded_config({}) is None


# -- choices: the schema's and the code's that acts on them agree ----------------------------------
@pytest.mark.filterwarnings("ignore:train.amp=")  # bf16/fp16 on a CPU: float32, as it warns
def test_the_schemas_choices_are_the_ones_the_code_takes():
    from typing import get_args

    import torch

    from igldt.config import schema
    from igldt.data.datasets import FORMATS
    from igldt.evaluate import MODES
    from igldt.models.deeplab import HEADS
    from igldt.train.optim import build_amp
    assert set(get_args(schema.Dataset)) == (set(FORMATS) - {"images"}) | {"demo"}  # images: unlabelled only
    assert get_args(schema.Head) == HEADS and get_args(schema.EvalMode) == MODES
    for mode in get_args(schema.AmpMode):
        build_amp(mode, torch.device("cpu"))  # refuses any other


def test_default_normalisation_is_the_imagenet_constant():
    """default.yaml's data.mean/std (what training uses) and igldt.constants (what an artefact that
    records none falls back to) say the same thing: the one normalisation of the pretrained backbones."""
    from igldt.constants import IMAGENET_MEAN, IMAGENET_STD
    cfg = load_config()
    assert cfg.data.mean == tuple(IMAGENET_MEAN) and cfg.data.std == tuple(IMAGENET_STD)
