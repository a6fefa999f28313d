"""`igldt demo`: the data-only step, the whole demo end to end (three stages, export, segmented video),
and the deployment skips it reports instead of leaving them to be noticed."""
import importlib.util
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

import igldt.train.loop as loop
from igldt.cli.main import cli
from igldt.data.demo import MANIFEST, VIDEO

from tests.helpers import video_frames


def test_demo_data_only_generates_the_data_and_stops(tmp_path):
    res = CliRunner().invoke(cli, ["demo", "--data-only", "--out", str(tmp_path / "demo")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "demo" / "data" / MANIFEST).is_file() and "igldt train --stage supervised --preset demo" in res.output
    assert not (tmp_path / "demo" / "supervised").exists()


@pytest.mark.slow
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
    # The suite runs with the export and cpu extras (README, .ci/run): deployment is part of the demo,
    # and each of its steps ran. No skip note of any kind ("deployment: skipped ...", or "deployment:
    # video inference skipped ..." when the data has no video).
    assert "deployment:" not in res.output, res.output
    onnx_path, video_dir = out / "student.onnx", out / "infer"
    assert f"[export] {out / 'student' / 'best.pt'} -> {onnx_path}" in res.output, res.output
    assert "ONNX Runtime vs PyTorch on 4 images: pixel agreement" in res.output  # the export's own check ran
    assert f"[infer] {out / 'data' / VIDEO}" in res.output and "export + video" in res.output
    assert re.search(rf"ONNX model +{re.escape(str(onnx_path))}\n", res.output), res.output
    assert re.search(rf"segmented video +{re.escape(str(video_dir))}\n", res.output), res.output
    assert onnx_path.is_file() and (out / "student.onnx.json").is_file()
    # the segmented video: every frame of the demo video, at its size
    (video,) = video_dir.rglob("*.mp4")
    source, segmented = video_frames(out / "data" / VIDEO), video_frames(video)
    assert len(source) == 48 and len(segmented) == len(source)
    assert segmented[0].shape == source[0].shape
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 2 and "--exist-ok" in again.output  # a second run never overwrites silently


@pytest.fixture
def stub_training(monkeypatch):
    """`igldt demo`'s three stages replaced by a stub (the real ones: test_demo_end_to_end)."""
    def fake_train(cfg, stage, out_dir, **kw):
        out_dir = Path(out_dir)
        return loop.FitResult(out_dir, stage, 1, 1, best_score=0.5, last=out_dir / "last.pt", best=out_dir / "best.pt",
                              history=[{"miou_student": 0.5, "miou_global": 0.5, "miou_local": 0.5,
                                        "miou_ensemble": 0.5}])

    monkeypatch.setattr(loop, "train", fake_train)


@pytest.mark.parametrize("why", ["--skip-deploy", "no-onnxruntime"])
def test_demo_says_when_it_skips_deployment(tmp_path, demo_data, stub_training, monkeypatch, why):
    """Without deployment the demo ends as usual and says so, in its artefact list: no ONNX model and
    no video left to be noticed missing."""
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--device", "cpu", "-o", f"data.root={demo_data}"]
    if why == "--skip-deploy":
        args.append("--skip-deploy")
        note = "deployment: skipped (--skip-deploy)"
    else:
        real = importlib.util.find_spec
        monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))
        note = "deployment: skipped: onnxruntime is not installed (pip install 'igldt[cpu]')"
    res = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert note in res.output and "IGL-DT student" in res.output
    assert "[export]" not in res.output and "[infer]" not in res.output and "ONNX model" not in res.output
    assert not (out / "student.onnx").exists() and not (out / "infer").exists()
