"""The embedded demo dataset: generated, complete, reusable, and never half-written."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from igldt.data import DataError, build_dataset, check_dataset, make_demo_dataset, read_split_file
from igldt.data.demo import DEMO_CLASSES, MANIFEST, VIDEO

from tests.helpers import video_frames

SMALL = dict(n_labelled_train=3, n_unlabelled_train=5, n_val=2, size=(48, 64), video_frames=6)


def test_default_demo_dataset(demo_data_timed):
    root, seconds = demo_data_timed  # make_demo_dataset(root) with the defaults, once for the session (conftest)
    assert seconds < 20  # "a few seconds" on a loaded 2-core box
    train, val = build_dataset("demo", root, "train"), build_dataset("demo", root, "val")
    assert (len(train), len(val)) == (64, 24)
    assert train.classes == DEMO_CLASSES and 6 <= len(train.classes) <= 8 and train.ignore_index == 255
    assert train.load_image(0).shape == (96, 128, 3)
    counts = np.zeros(256, np.int64)
    for i in range(len(train)):
        counts += np.bincount(train.load_mask(i).ravel(), minlength=256)
    assert (counts[: len(DEMO_CLASSES)] > 0).all(), "every class appears in the train masks"
    assert counts[len(DEMO_CLASSES):255].sum() == 0
    lab = read_split_file(root / "splits" / "labeled.txt")
    unl = read_split_file(root / "splits" / "unlabeled.txt")
    assert len(lab) == 16 and len(unl) == 48 and sorted(lab + unl) == train.ids
    assert build_dataset("demo", root, "labeled").ids == lab
    assert check_dataset(val) == []
    frames = video_frames(root / VIDEO)
    assert len(frames) == 48 and frames[0].shape == (96, 128, 3)
    assert not np.array_equal(frames[0], frames[-1])


def test_not_trivially_colour_separable(tmp_path):
    """The same colour bin holds pixels of several classes (texture, lighting, grey objects)."""
    root = make_demo_dataset(tmp_path / "d", **SMALL)
    ds = build_dataset("demo", root, "train")
    pairs = set()
    for i in range(len(ds)):
        img, m = ds.load_image(i) // 32, ds.load_mask(i)
        key = (img[..., 0].astype(int) * 64 + img[..., 1] * 8 + img[..., 2])[m != 255]
        for k, c in set(zip(key.tolist(), m[m != 255].tolist())):
            pairs.add((k, c))
    bins = {}
    for k, c in pairs:
        bins.setdefault(k, set()).add(c)
    assert sum(len(v) > 1 for v in bins.values()) > 5


def test_deterministic_reused_and_refuses_foreign_folders(tmp_path):
    a = make_demo_dataset(tmp_path / "a", seed=3, **SMALL)
    b = make_demo_dataset(tmp_path / "b", seed=3, **SMALL)
    for split in ("train", "val"):
        for p in sorted((a / "masks" / split).iterdir()):
            assert np.array_equal(cv2.imread(str(p), -1), cv2.imread(str(b / "masks" / split / p.name), -1))
        for p in sorted((a / "images" / split).iterdir()):
            assert p.read_bytes() == (b / "images" / split / p.name).read_bytes()
    stamp = (a / MANIFEST).stat().st_mtime_ns
    assert make_demo_dataset(tmp_path / "a", seed=3, **SMALL) == a
    assert (a / MANIFEST).stat().st_mtime_ns == stamp  # reused, not regenerated
    assert json.loads((a / MANIFEST).read_text())["params"]["seed"] == 3
    with pytest.raises(DataError, match="other settings"):
        make_demo_dataset(tmp_path / "a", seed=4, **SMALL)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "precious.txt").write_text("keep")
    with pytest.raises(DataError, match="not a demo dataset"):
        make_demo_dataset(tmp_path / "mine", **SMALL)
    assert (tmp_path / "mine" / "precious.txt").read_text() == "keep"
    next((a / "images" / "train").iterdir()).unlink()
    with pytest.raises(DataError, match="incomplete"):
        make_demo_dataset(tmp_path / "a", seed=3, **SMALL)
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_failed_generation_leaves_nothing(tmp_path, monkeypatch):
    import igldt.data.demo as demo

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(demo, "write_split", boom)
    with pytest.raises(RuntimeError):
        make_demo_dataset(tmp_path / "x", **SMALL)
    assert list(tmp_path.iterdir()) == []


def test_reading_the_demo_dataset_never_generates_it(tmp_path):
    """Generating the demo data is an explicit step: build_dataset only reads, and says how to generate."""
    with pytest.raises(DataError, match="igldt demo --data-only"):
        build_dataset("demo", tmp_path / "none", "train")
    assert not (tmp_path / "none").exists()


def test_demo_images_are_the_val_images_rendered_in_memory(tmp_path):
    from igldt.data.demo import demo_images
    root = make_demo_dataset(tmp_path / "d", **SMALL)
    val = build_dataset("demo", root, "val")
    images = demo_images(2, size=SMALL["size"])
    assert all(np.array_equal(im, val.load_image(i)) for i, im in enumerate(images))


def test_export_check_falls_back_to_scenes_in_memory_and_writes_nothing(tmp_path, monkeypatch):
    from igldt.export.images import check_images
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    loaders, names, desc = check_images({"config": {"data": {"dataset": "camvid", "root": str(tmp_path / "gone")}}},
                                        None, 3)
    assert len(loaders) == 3 and loaders[0]().shape == (96, 128, 3) and "in memory" in desc
    assert not (tmp_path / "home").exists()
