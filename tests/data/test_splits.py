"""Split protocol: published line formats, seeded determinism, writing, selecting."""
from __future__ import annotations

import subprocess
import sys
from fractions import Fraction

import cv2
import numpy as np
import pytest

from igldt.data import DataError, build_dataset, make_split, parse_fraction, read_split_file, select, write_split
from igldt.data.splits import labelled_count, line_to_id


@pytest.mark.parametrize("line, expected", [
    ("JPEGImages/2007_000032.jpg SegmentationClass/2007_000032.png", "2007_000032"),
    ("/JPEGImages/2007_000032.jpg /SegmentationClassAug/2007_000032.png", "2007_000032"),
    ("2007_000032", "2007_000032"),
    ("leftImg8bit/train/aachen/aachen_000000_000019_leftImg8bit.png "
     "gtFine/train/aachen/aachen_000000_000019_gtFine_labelTrainIds.png", "aachen_000000_000019"),
    ("train/0001TP_006690.png trainannot/0001TP_006690.png", "0001TP_006690"),
    ("/SegNet/CamVid/train/0001TP_006690.png /SegNet/CamVid/trainannot/0001TP_006690.png", "0001TP_006690"),
])
def test_published_line_formats(tmp_path, line, expected):
    f = tmp_path / "split.txt"
    f.write_text(f"# a comment\n\n{line}\r\n")
    assert read_split_file(f) == [expected]
    assert line_to_id(line.split()[0]) == expected


def test_read_split_file_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_split_file(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("\n# nothing\n")
    with pytest.raises(DataError, match="lists no ids"):
        read_split_file(tmp_path / "empty.txt")
    (tmp_path / "dup.txt").write_text("a\nb\nJPEGImages/a.jpg SegmentationClass/a.png\n")
    with pytest.raises(DataError, match=r"dup.txt:3: id 'a' already listed on line 1"):
        read_split_file(tmp_path / "dup.txt")


IDS = [f"img{i:03d}" for i in range(20)]


def test_make_split_pinned_and_order_independent():
    # Pinned output of PCG64(seed 0) over the sorted ids: a change of algorithm must show here.
    lab, unl = make_split(IDS, count=5, seed=0)
    assert lab == ["img002", "img004", "img006", "img013", "img019"]
    assert sorted(lab + unl) == IDS and not set(lab) & set(unl)
    shuffled = list(reversed(IDS))
    assert make_split(shuffled, count=5, seed=0) == (lab, unl)
    assert make_split(IDS, count=5, seed=1)[0] != lab


def test_make_split_fraction_forms_and_counts():
    ids = [f"x{i}" for i in range(367)]
    assert len(make_split(ids, fraction="1/8")[0]) == 46  # the CamVid protocol counts
    assert [labelled_count(367, f) for f in ("1/16", 0.25, "50%")] == [23, 92, 184]
    assert make_split(ids, fraction="1/8", seed=4) == make_split(ids, fraction=0.125, seed=4)
    assert parse_fraction("1/8") == parse_fraction(0.125) == parse_fraction("12.5%") == Fraction(1, 8)
    for bad in ("0", "1.5", "abc", "1/0"):
        with pytest.raises(DataError, match="fraction"):
            parse_fraction(bad)
    with pytest.raises(DataError, match="exactly one"):
        make_split(ids)
    with pytest.raises(DataError, match="exactly one"):
        make_split(ids, fraction=0.5, count=3)
    with pytest.raises(DataError, match="count 400"):
        make_split(ids, count=400)
    with pytest.raises(DataError, match="duplicates"):
        make_split(["a", "a", "b"], count=1)


def test_make_split_same_in_a_fresh_process():
    """No hash randomisation or global state: another interpreter gives the same split."""
    code = ("from igldt.data import make_split; "
            "print(','.join(make_split([f'img{i:03d}' for i in range(20)], fraction='1/4', seed=7)[0]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONHASHSEED": "123", "PATH": ""}).stdout.strip()
    assert out.split(",") == make_split(IDS, fraction="1/4", seed=7)[0]


def test_write_split_atomic_and_no_silent_overwrite(tmp_path):
    lab, unl = make_split(IDS, count=4, seed=0)
    a, b = write_split(tmp_path / "s", lab, unl)
    assert (a.name, b.name) == ("labeled.txt", "unlabeled.txt")
    assert read_split_file(a) == lab and read_split_file(b) == unl
    with pytest.raises(DataError, match="already exist"):
        write_split(tmp_path / "s", unl, lab)
    assert read_split_file(a) == lab  # untouched
    write_split(tmp_path / "s", unl[:2], lab, force=True)
    assert read_split_file(a) == unl[:2]
    assert [p.name for p in (tmp_path / "s").iterdir() if p.name.startswith(".")] == []
    with pytest.raises(DataError, match="both labelled and unlabelled"):
        write_split(tmp_path / "t", ["a"], ["a"])


def test_select_view_and_unknown_ids(tmp_path):
    for split in ("train",):
        for n in ("a", "b", "c"):
            (tmp_path / split).mkdir(exist_ok=True)
            (tmp_path / f"{split}annot").mkdir(exist_ok=True)
            cv2.imwrite(str(tmp_path / split / f"{n}.png"), np.zeros((4, 4, 3), np.uint8))
            cv2.imwrite(str(tmp_path / f"{split}annot" / f"{n}.png"), np.zeros((4, 4), np.uint8))
    ds = build_dataset("camvid", tmp_path, "train")
    view = select(ds, ["c", "a"])
    assert view.ids == ["c", "a"] and len(ds) == 3 and view.classes == ds.classes
    assert view.load_mask(0).shape == (4, 4)
    with pytest.raises(DataError, match=r"1 of 2 ids are not in camvid split 'train'.*first: zz"):
        select(ds, ["a", "zz"])
