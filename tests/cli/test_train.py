"""`igldt train`'s first-class flags: the config keys they set, their precedence over the preset,
a --resume checkpoint's config and -o, and their one-line errors. The training itself is replaced
by a stub that records what it was given (the real runs: tests/train/test_stages.py, tests/train/test_kill.py)."""
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import igldt.train.loop as loop
from igldt.checkpoint import save_checkpoint
from igldt.cli.main import cli
from igldt.config import load_config


@pytest.fixture
def calls(monkeypatch):
    seen = []

    def fake_train(cfg, stage, out_dir, **kw):
        seen.append({"cfg": cfg, "stage": stage, "out": out_dir, **kw})
        return loop.FitResult(Path(out_dir), stage, 1, 1, best_score=0.5, last=Path(out_dir) / "last.pt",
                              best=Path(out_dir) / "best.pt")

    monkeypatch.setattr(loop, "train", fake_train)
    return seen


def invoke(tmp_path, *args):
    res = CliRunner().invoke(cli, ["train", "--out", str(tmp_path / "run"), *map(str, args)])
    return res.exit_code, res.output


def test_flags_set_their_keys_over_the_preset(tmp_path, calls):
    code, out = invoke(tmp_path, "--stage", "teachers", "--preset", "camvid-cpu", "--iters", 7, "--batch", 3,
                       "--imgsz", 64, 96, "--lr", 0.02, "--workers", 0, "--seed", 5, "-o", "train.poly_power=0.8")
    assert code == 0, out
    (call,) = calls
    t, d = call["cfg"].train, call["cfg"].data
    assert (t.iters, t.batch_size, t.lr, t.seed, d.crop, d.workers) == (7, 3, 0.02, 5, (64, 96), 0)
    assert t.poly_power == 0.8  # -o still sets any other key
    assert d.mean == (0.5, 0.5, 0.5) and t.val_every == 600  # the rest comes from the preset
    # the next step repeats the flags as typed
    assert "--preset camvid-cpu --iters 7 --batch 3 --imgsz 64x96 --lr 0.02 --workers 0 --seed 5 -o train.poly_power=0.8" in out


def test_epochs_replaces_a_presets_iteration_count(tmp_path, calls):
    assert load_config("camvid-cpu").train.iters == 600  # iters would win over epochs
    code, out = invoke(tmp_path, "--stage", "supervised", "--preset", "camvid-cpu", "--epochs", 3)
    assert code == 0, out
    t = calls[0]["cfg"].train
    assert t.epochs == 3 and t.iters is None


@pytest.mark.parametrize("value, crop", [("64", (64, 64)), ("64x96", (64, 96)), ("64X96", (64, 96)),
                                         ("64,96", (64, 96)), (["64", "96"], (64, 96))])
def test_imgsz_forms(tmp_path, calls, value, crop):
    values = value if isinstance(value, list) else [value]
    code, out = invoke(tmp_path, "--stage", "supervised", "--preset", "demo", "--imgsz", *values, "--seed", 1)
    assert code == 0, out
    assert calls[0]["cfg"].data.crop == crop and calls[0]["cfg"].train.seed == 1


@pytest.mark.parametrize("args, flag", [
    (["--batch", "0"], "--batch"), (["--iters", "0"], "--iters"), (["--epochs", "x"], "--epochs"),
    (["--imgsz", "0"], "--imgsz"), (["--imgsz", "64x"], "--imgsz"), (["--imgsz", "64x96x3"], "--imgsz"),
    (["--lr", "0"], "--lr"), (["--lr", "nan"], "--lr"), (["--lr", "inf"], "--lr"), (["--workers", "-1"], "--workers"),
    (["--seed", "-1"], "--seed"),
])
def test_bad_values_are_one_line_errors_naming_the_flag(tmp_path, calls, args, flag):
    code, out = invoke(tmp_path, "--stage", "supervised", "--preset", "demo", *args)
    assert code == 2 and not calls
    error = [line for line in out.splitlines() if line.startswith("Error:")]
    assert len(error) == 1 and flag in error[0], out


@pytest.mark.parametrize("args, match", [
    (["--iters", "5", "--epochs", "2"], "--iters and --epochs both set the run's length"),
    (["--batch", "4", "-o", "train.batch_size=3"], "--batch and -o train.batch_size=3 both set train.batch_size"),
    (["--epochs", "2", "-o", "train.iters=9"], "--epochs and -o train.iters=9 both set train.iters"),
    (["--imgsz", "64", "-o", "data.crop=[32,32]"], "both set data.crop"),
])
def test_conflicts_are_refused(tmp_path, calls, args, match):
    code, out = invoke(tmp_path, "--stage", "supervised", "--preset", "demo", *args)
    assert code == 2 and not calls and match in out, out


def test_flags_apply_over_a_resumed_runs_config(tmp_path, calls):
    cfg = load_config("demo", ["train.iters=10", "train.lr=0.03"])
    last = save_checkpoint(tmp_path / "old" / "last.pt", {"format": "igldt/1", "kind": "resume", "stage": "supervised",
                                                          "config": cfg.to_dict()})
    code, out = invoke(tmp_path, "--stage", "supervised", "--resume", last, "--iters", 40)
    assert code == 0, out
    t = calls[0]["cfg"].train
    assert t.iters == 40 and t.lr == 0.03 and calls[0]["resume"]["kind"] == "resume"


def test_help_lists_the_flags(calls):
    out = CliRunner().invoke(cli, ["train", "--help"]).output
    for flag in ("--iters", "--epochs", "--batch", "--imgsz", "--lr", "--workers", "--seed", "-o, --set"):
        assert flag in out


def test_command_imports_without_torch():
    code = "import sys, igldt.cli.train; assert 'torch' not in sys.modules, 'torch imported'"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_each_stage_gets_its_presets_stage_section(tmp_path, calls):
    for stage in ("teachers", "supervised"):
        code, out = invoke(tmp_path, "--stage", stage, "--preset", "camvid-cpu", "--exist-ok")
        assert code == 0, out
    teachers, supervised = (c["cfg"] for c in calls)
    assert (teachers.train.iters, teachers.method.cps_warmup) == (1200, 600)
    assert (supervised.train.iters, supervised.method.cps_warmup) == (600, 0)
