"""Evaluation figures (OpenCV + numpy): confusion matrix, sample grid, atomic PNG files, no torch."""
from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
import pytest

from igldt.figures import (BLUES, EMPTY, PAD, RED, TILE_WIDTH, Sample, SampleKeeper, cell_size, draw_confusion,
                           draw_samples, error_tile, figure_paths, row_normalised, spread, write_figures)
from igldt.metrics import IGNORE, ConfusionMatrix
from igldt.palette import voc_palette

CAMVID = ["sky", "building", "pole", "road", "sidewalk", "tree", "sign", "fence", "car", "pedestrian", "bicyclist"]


def count_colour(img: np.ndarray, rgb) -> int:
    return int(np.all(img == np.asarray(rgb, np.uint8), axis=-1).sum())


def test_spread_and_sample_keeper():
    assert spread(100, 4) == [0, 33, 66, 99] and spread(3, 4) == [0, 1, 2] and spread(10, 1) == [0]
    assert spread(0, 4) == [] and spread(10, 0) == []
    keep = SampleKeeper(2, 5)
    for i in range(5):
        keep(i, np.full((2, 2, 3), i, np.uint8), np.zeros((2, 2), np.uint8), np.zeros((2, 2), np.uint8))
    assert [int(s.image[0, 0, 0]) for s in keep.samples] == [0, 4]


def test_row_normalised_keeps_absent_classes_apart():
    norm = row_normalised([[3, 1], [0, 0]])
    np.testing.assert_allclose(norm[0], [0.75, 0.25])
    assert np.isnan(norm[1]).all()  # no ground truth: grey, not 0 %


@pytest.mark.parametrize("classes", [CAMVID, [f"class{i}" for i in range(21)]])
def test_confusion_figure_is_readable_and_row_normalised(classes):
    n = len(classes)
    cm = ConfusionMatrix.from_counts(np.diag(np.arange(1, n + 1) * 1000))  # perfect, very unequal rows
    cm.matrix[n - 1] = 0  # last class absent from the ground truth
    img = draw_confusion(cm, classes)
    cell = cell_size(n)
    assert cell >= 32 and img.shape[0] <= 1200 and img.shape[1] <= 1200  # numbers fit, fits a screen
    filled = (cell - 1) ** 2
    dark = count_colour(img, BLUES[-1])  # 100 % cells, whatever the row's pixel count (then "100" in white)
    assert (n - 1) * 0.6 * filled < dark < n * 2 * filled  # n-1 diagonal cells and their IoU cells
    assert count_colour(img, EMPTY) >= n * 0.9 * filled  # the absent class: a grey row


def first_dark_column(img: np.ndarray) -> int:
    return int(np.nonzero(np.all(img == BLUES[-1].astype(np.uint8), axis=-1).any(0))[0][0])


def test_class_names_on_both_axes():
    cm = ConfusionMatrix.from_counts([[5, 0], [0, 7]])
    short = draw_confusion(cm, ["a", "b"])
    long = draw_confusion(cm, ["a", "a much longer class name"])
    assert long.shape[0] > short.shape[0] + 80  # column names, written vertically below the matrix
    assert first_dark_column(long) > first_dark_column(short) + 80  # row names, left of it
    with pytest.raises(ValueError, match="3 class names for a 2-class"):
        draw_confusion(cm, ["a", "b", "c"])


def test_error_tile_marks_wrong_red_and_ignore_black():
    image = np.full((4, 6, 3), 200, np.uint8)
    mask = np.zeros((4, 6), np.uint8)
    mask[0] = IGNORE
    pred = np.zeros((4, 6), np.uint8)
    pred[:, :2] = 1  # wrong on the left, but the top row is ignored
    tile = error_tile(image, mask, pred)
    assert np.all(tile[1:, :2] == RED) and np.all(tile[0] == 0)
    assert np.all(tile[1:, 2:] == tile[1, 2]) and 0 < tile[1, 2, 0] < 200 and tile[1, 2, 0] != RED[0]


def test_sample_grid_has_a_row_per_sample():
    rng = np.random.default_rng(0)
    samples = []
    for h, w in ((30, 40), (20, 80)):
        mask = rng.integers(0, 3, (h, w)).astype(np.uint8)
        samples.append(Sample(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), mask, mask))
    grid = draw_samples(samples, ["a", "b", "c"], voc_palette(3))
    assert grid.shape[1] == 4 * TILE_WIDTH + 3 * PAD + 2 * PAD
    assert grid.shape[0] > TILE_WIDTH * 30 // 40 + TILE_WIDTH * 20 // 80
    assert count_colour(grid, RED) < 300  # perfect predictions: red only in the legend's swatch
    with pytest.raises(ValueError, match="no samples"):
        draw_samples([], ["a"], voc_palette(1))


def test_write_figures_replaces_files_whole(tmp_path):
    report = tmp_path / "best.eval-camvid-val-whole.json"
    conf, grid = figure_paths(report)
    assert (conf.name, grid.name) == ("best.eval-camvid-val-whole.confusion.png", "best.eval-camvid-val-whole.samples.png")
    conf.write_bytes(b"old")
    cm = ConfusionMatrix.from_counts([[5, 1], [2, 7]])
    assert write_figures(cm, [], ["a", "b"], None, conf, grid) == [conf]  # no samples kept: no grid
    mask = np.zeros((8, 8), np.uint8)
    write_figures(cm, [Sample(np.zeros((8, 8, 3), np.uint8), mask, mask)], ["a", "b"], None, conf, grid)
    assert cv2.imread(str(conf)) is not None and cv2.imread(str(grid)) is not None
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([conf.name, grid.name])  # no temp files left


def test_figures_module_does_not_import_torch():
    code = ("import sys\nclass B:\n def find_spec(self, n, p=None, t=None):\n"
            "  if n == 'torch' or n.startswith('torch.'): raise ImportError('blocked')\n"
            "sys.meta_path.insert(0, B())\nimport igldt.figures\nprint('OK')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.stdout.strip() == "OK", r.stderr[-2000:]
