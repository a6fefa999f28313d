"""Checkpoints: round trip, atomic writes under a crash, safe loading, clear errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from igldt import checkpoint as ck
from igldt.checkpoint import (CheckpointError, load_checkpoint, load_model, load_teachers, save_checkpoint,
                              student_payload, teachers_payload)
from igldt.config import load_config
from igldt.models import build_segmenter

META = {"classes": ["sky", "road", "car"], "palette": np.array([[128, 128, 128], [128, 64, 128], [64, 0, 128]], np.uint8)}


def _files(folder):
    return sorted(p.name for p in folder.iterdir())


def test_student_round_trip(tmp_path, r18):
    cfg = load_config("demo")
    payload = student_payload(r18, None, META, cfg, miou=0.5, iteration=np.int64(7))
    path = save_checkpoint(tmp_path / "student.pt", payload)
    assert _files(tmp_path) == ["student.pt"]  # no temp file left behind
    model, meta = load_model(path)
    assert not model.training and "state_dict" not in meta
    assert meta["format"] == "igldt/1" and meta["kind"] == "student" and meta["ignore_index"] == 255
    assert meta["classes"] == META["classes"] and meta["palette"][1] == [128, 64, 128]
    assert meta["mean"] == pytest.approx([0.5, 0.5, 0.5]) and meta["stride"] == 16  # the demo preset's
    assert meta["arch"]["backbone"] == "resnet18"
    assert meta["config"]["model"]["student"]["backbone"] == "tf_efficientnet_lite0"
    assert set(meta["versions"]) >= {"torch", "timm", "igldt", "python"} and meta["iteration"] == 7
    x = torch.randn(1, 3, 40, 56)
    with torch.no_grad():
        torch.testing.assert_close(model(x)["logits"], r18(x)["logits"])


def test_teachers_round_trip(tmp_path, r18):
    swin = build_segmenter("swin_nano", 3).eval()
    path = save_checkpoint(tmp_path / "teachers.pt", teachers_payload(swin, r18, META, None, iteration=3))
    g, l, meta = load_teachers(path)
    assert meta["kind"] == "teachers" and meta["teachers"]["global"]["arch"]["backbone"] == "swin_nano"
    x = torch.randn(1, 3, 33, 45)
    with torch.no_grad():
        torch.testing.assert_close(g(x)["logits"], swin(x)["logits"])
        torch.testing.assert_close(l(x)["features"], r18(x)["features"])
    with pytest.raises(CheckpointError, match="'teachers' checkpoint; this needs student or supervised"):
        load_model(path)


def test_crash_during_write_keeps_old_file(tmp_path, r18, monkeypatch):
    path = tmp_path / "best.pt"
    save_checkpoint(path, student_payload(r18, None, META, None, miou=0.1))
    before = path.read_bytes()
    real_save = torch.save

    def dying_save(obj, f, *a, **k):
        f.write(b"PK\x03\x04 half a checkpoint")  # some bytes reach the temp file, then the "kill"
        raise KeyboardInterrupt

    monkeypatch.setattr(ck.torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, student_payload(r18, None, META, None, miou=0.9))
    monkeypatch.setattr(ck.torch, "save", real_save)
    assert path.read_bytes() == before and _files(tmp_path) == ["best.pt"]
    assert load_checkpoint(path)["miou"] == 0.1


class _Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):  # an unsafe load would create the marker file
        return (open, (self.marker, "w"))


def test_refuses_pickled_objects(tmp_path):
    path, marker = tmp_path / "evil.pt", tmp_path / "pwned"
    torch.save({"format": "igldt/1", "kind": "student", "x": _Payload(marker)}, path)
    with pytest.raises(CheckpointError, match="refusing to unpickle"):
        load_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize("content,match", [
    (None, "does not exist"),
    (b"", "corrupt or not a torch file"),
    (b"hello, not a checkpoint", "corrupt or not a torch file"),
    ("truncated", "corrupt or not a torch file"),
    ("state_dict", "not an igldt/1 checkpoint"),
    ("bad_kind", "unknown kind"),
])
def test_load_errors_are_one_line_and_name_the_file(tmp_path, r18, content, match):
    path = tmp_path / "x.pt"
    if content == "truncated":
        save_checkpoint(path, student_payload(r18, None, META, None))
        path.write_bytes(path.read_bytes()[:1000])
    elif content == "state_dict":
        torch.save(r18.state_dict(), path)
    elif content == "bad_kind":
        torch.save({"format": "igldt/1", "kind": "mystery"}, path)
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=match) as e:
        load_model(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_weights_that_do_not_fit_the_arch(tmp_path, r18):
    payload = student_payload(r18, {"backbone": "resnet34", "output_stride": 16, "num_classes": 3}, META, None)
    save_checkpoint(tmp_path / "s.pt", payload)
    with pytest.raises(CheckpointError, match="do not fit arch resnet34"):
        load_model(tmp_path / "s.pt")
