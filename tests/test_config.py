import pytest

from igldt.config import ConfigError, available_presets, load_config


@pytest.mark.parametrize("name", available_presets())
def test_every_preset_loads_against_the_schema(name):
    cfg = load_config(name)
    assert cfg.model.student.backbone
    assert cfg.train.lr > 0


def test_required_presets_exist():
    assert {"voc-r50", "voc-r101", "cityscapes-r101", "camvid-cpu", "demo"} <= set(available_presets())


def test_overrides_are_typed_and_nested():
    cfg = load_config("camvid-cpu", ["train.lr=0.02", "data.crop=[64, 96]", "method.threshold=null",
                                     "model.student.backbone=resnet34", "method.losses=[pseudo, glo]"])
    assert cfg.train.lr == 0.02 and cfg.data.crop == [64, 96] and cfg.method.threshold is None
    assert cfg.model.student.backbone == "resnet34" and cfg.method.losses == ["pseudo", "glo"]
    # the preset's other student keys survive a partial override
    assert cfg.model.student.output_stride == 16


def test_paper_settings_follow_method_md():
    voc = load_config("voc-r50")
    assert (voc.train.lr, voc.train.momentum, voc.train.weight_decay, voc.train.poly_power) == (0.01, 0.9, 5e-4, 0.9)
    assert voc.train.epochs == 80 and voc.data.crop == [512, 512]
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
