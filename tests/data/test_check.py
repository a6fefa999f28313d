"""Validation reports every problem kind, all at once."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from igldt.data import DataError, FolderDataset, assert_valid, check_dataset, format_report
from igldt.data.datasets import Item


def write(root: Path, name: str, image: np.ndarray | None, mask: np.ndarray | None) -> None:
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    if image is not None:
        cv2.imwrite(str(root / "images" / f"{name}.png"), image)
    if mask is not None:
        cv2.imwrite(str(root / "masks" / f"{name}.png"), mask)


@pytest.fixture
def bad_folder(tmp_path: Path) -> Path:
    (tmp_path / "classes.yaml").write_text("classes: [bg, fg, edge]\n")
    good = np.zeros((8, 10), np.uint8)
    good[0, 0] = 255
    write(tmp_path, "ok", np.zeros((8, 10, 3), np.uint8), good)
    write(tmp_path, "nomask", np.zeros((8, 10, 3), np.uint8), None)
    write(tmp_path, "small", np.zeros((8, 10, 3), np.uint8), np.zeros((4, 5), np.uint8))
    labels = np.zeros((8, 10), np.uint8)
    labels[0, :3] = 7
    labels[1, :2] = 9
    write(tmp_path, "labels", np.zeros((8, 10, 3), np.uint8), labels)
    (tmp_path / "images" / "corrupt.png").write_bytes(b"\x89PNG broken")
    write(tmp_path, "corrupt", None, np.zeros((8, 10), np.uint8))
    write(tmp_path, "badmask", np.zeros((8, 10, 3), np.uint8), None)
    (tmp_path / "masks" / "badmask.png").write_bytes(b"garbage")
    return tmp_path


def test_every_problem_reported_at_once(bad_folder):
    ds = FolderDataset(bad_folder, "train")
    problems = check_dataset(ds, workers=2)
    kinds = {p.id: p.kind for p in problems}
    assert kinds == {"nomask": "missing_mask", "small": "size_mismatch", "labels": "bad_labels",
                     "corrupt": "unreadable_image", "badmask": "unreadable_mask"}
    bad = next(p for p in problems if p.kind == "bad_labels")
    assert "7 (3 px)" in bad.message and "9 (2 px)" in bad.message and "labels.png" in bad.message
    assert "10x8" in next(p for p in problems if p.kind == "size_mismatch").message
    report = format_report(problems, len(ds))
    lines = report.splitlines()
    assert len(lines) == len(problems) + 1
    assert lines[-1].startswith("5 problems in 6 items:") and "1 missing_mask" in lines[-1]
    # unlabelled images are fine when masks are not required
    assert "missing_mask" not in {p.kind for p in check_dataset(ds, require_masks=False)}


def test_duplicate_ids_and_empty(bad_folder):
    ds = FolderDataset(bad_folder, "train")
    ok = ds.subset([ds.ids.index("ok")])
    assert check_dataset(ok) == [] and format_report([], 1) == "OK: 1 items checked, no problems"
    dup = ok.subset([0])
    dup.items = [ok.items[0], Item("ok", ok.items[0].image, ok.items[0].mask)]
    assert [p.kind for p in check_dataset(dup)] == ["duplicate_id"]
    assert [p.kind for p in check_dataset(ok.subset([]))] == ["empty"]


def test_colour_mask_with_unknown_colour_is_reported(tmp_path):
    (tmp_path / "classes.yaml").write_text("classes: {bg: [0, 0, 0], fg: [255, 0, 0]}\n")
    m = np.zeros((4, 4, 3), np.uint8)
    m[0, 0] = (0, 0, 255)  # fg (BGR)
    m[1, 1] = (5, 200, 9)  # not a class colour
    write(tmp_path, "a", np.zeros((4, 4, 3), np.uint8), m)
    problems = check_dataset(FolderDataset(tmp_path, "train"))
    assert [p.kind for p in problems] == ["unreadable_mask"]
    assert "(9,200,5)" in problems[0].message


def test_assert_valid_raises_with_full_report(bad_folder):
    ds = FolderDataset(bad_folder, "train")
    with pytest.raises(DataError) as e:
        assert_valid(ds)
    msg = str(e.value)
    assert isinstance(e.value, ValueError)
    for kind in ("missing_mask", "size_mismatch", "bad_labels", "unreadable_image", "unreadable_mask"):
        assert kind in msg
    assert_valid(ds.subset([ds.ids.index("ok")]))
