"""`igldt train` end to end with the real data layer and models on a tiny demo dataset:
supervised -> teachers -> student, the checkpoints each writes, resume, refusals."""
import shutil

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from igldt.checkpoint import load_checkpoint, load_model, load_teachers
from igldt.cli.main import cli
from igldt.data.demo import make_demo_dataset
from igldt.train.logger import read_metrics

pytestmark = pytest.mark.slow


def opts(root):
    return ["--preset", "demo", "--device", "cpu", "-o", f"data.root={root}", "-o", "data.crop=[32,32]",
            "-o", "data.count=4", "-o", "data.fraction=null", "-o", "train.batch_size=2", "-o", "train.iters=2",
            "-o", "train.val_every=2", "-o", "train.log_every=1", "-o", "method.grid=4"]


def invoke(*args):
    res = CliRunner().invoke(cli, ["train", *map(str, args)], catch_exceptions=False)
    return res.exit_code, res.output


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("stages")
    root = make_demo_dataset(base / "data", n_labelled_train=4, n_unlabelled_train=4, n_val=2, size=(32, 48),
                             video_frames=0)
    out = {}
    for stage in ("supervised", "teachers", "student"):
        extra = ["--teachers", base / "teachers" / "best.pt"] if stage == "student" else []
        code, text = invoke("--stage", stage, *opts(root), "--out", base / stage, *extra)
        assert code == 0, text
        out[stage] = (base / stage, text)
    return base, root, out


def test_each_stage_writes_export_ready_best_and_resumable_last(runs):
    base, _, out = runs
    sup, _ = load_model(base / "supervised" / "best.pt")
    assert sup.arch["backbone"] == "resnet18"
    g, r, meta = load_teachers(base / "teachers" / "best.pt")
    assert g.arch["backbone"] == "swin_nano" and r.arch["backbone"] == "resnet18" and len(meta["classes"]) == 7
    student = load_checkpoint(base / "student" / "best.pt", kinds=("student",))
    assert {"arch", "state_dict", "classes", "palette", "mean", "std"} <= set(student)
    assert "teachers" not in student and "optimizer" not in student  # what export needs, nothing more
    for stage in out:
        last = load_checkpoint(base / stage / "last.pt", kinds=("resume",))
        assert last["iteration"] == 2 and last["stage"] == stage
        assert (base / stage / "metrics.png").is_file()
        assert any("val" in r for r in read_metrics(base / stage / "metrics.jsonl"))
    # the student run logs every term of (14), alternating glo / loc by iteration parity
    rec = [r for r in read_metrics(base / "student" / "metrics.jsonl") if "loss" in r]
    assert [r["state"] for r in rec] == [1.0, 2.0] and "glo" in rec[0] and "loc" in rec[1]
    assert "igldt train --stage student --teachers" in out["teachers"][1]
    assert "igldt export --weights" in out["student"][1]


def test_rerun_refuses_then_resume_extends(runs):
    base, root, _ = runs
    code, text = invoke("--stage", "supervised", *opts(root), "--out", base / "supervised")
    assert code == 2 and "--resume" in text and "already holds a run" in text
    run = base / "supervised-copy"
    shutil.copytree(base / "supervised", run)
    code, text = invoke("--stage", "supervised", "--resume", run / "last.pt", "-o", "train.iters=3", "--device", "cpu")
    assert code == 0, text
    assert load_checkpoint(run / "last.pt")["iteration"] == 3
    assert [r["iteration"] for r in read_metrics(run / "metrics.jsonl") if "loss" in r] == [1, 2, 3]


def test_student_needs_matching_teachers(runs, tmp_path):
    base, root, _ = runs
    code, text = invoke("--stage", "student", *opts(root), "--out", tmp_path / "s",
                        "--teachers", base / "supervised" / "best.pt")
    assert code == 2 and "teachers" in text


def test_training_refuses_bad_data(runs, tmp_path):
    _, root, _ = runs
    bad = tmp_path / "bad"
    shutil.copytree(root, bad)
    mask = next((bad / "masks" / "val").glob("*.png"))
    cv2.imwrite(str(mask), np.full((32, 48), 9, np.uint8))  # 9 is not one of the 7 demo classes
    code, text = invoke("--stage", "supervised", *opts(bad), "--out", tmp_path / "run")
    assert code != 0 and "bad_labels" in text and mask.name in text
    assert not (tmp_path / "run" / "last.pt").exists()


def test_demo_end_to_end(tmp_path):
    """`igldt demo` at a tiny size: three stages, summary table, ONNX export, segmented video."""
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--device", "cpu", "-o", "train.iters=1", "-o", "data.crop=[32,48]",
            "-o", "train.batch_size=2"]
    res = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    for row in ("Sup-only", "CPS teacher T_SU", "CPS teacher T_RU", "IGL-DT student"):
        assert row in res.output
    assert (out / "student" / "best.pt").is_file() and (out / "teachers" / "best.pt").is_file()
    if "deployment: skipped" not in res.output:
        assert (out / "student.onnx").is_file() and any((out / "infer").rglob("*.mp4"))
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 2 and "--exist-ok" in again.output  # a second run never overwrites silently
