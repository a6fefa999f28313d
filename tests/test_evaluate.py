"""Inference modes (whole / center / slide), `evaluate`, and the `igldt evaluate` command."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from igldt.checkpoint import save_checkpoint, student_payload
from igldt.cli.main import cli
from igldt.config import load_config
from igldt.evaluate import evaluate, make_predictor, predict_logits, window_starts

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class Pointwise(nn.Module):
    """Per-pixel model (1x1 conv): any tiling of the image gives exactly the whole-image logits."""

    num_classes = 3

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 3, 1)

    def forward(self, x):
        return {"logits": self.conv(x)}


def test_window_starts_are_edge_aligned():
    assert window_starts(10, 4, 3) == [0, 3, 6]
    assert window_starts(10, 4, 4) == [0, 4, 6]  # last window moved back to touch the edge
    assert window_starts(8, 4, 4) == [0, 4]
    assert window_starts(3, 4, 2) == [0]


@pytest.mark.parametrize("crop", [(70, 90), (80, 96)])
def test_single_window_equals_whole(r18, crop):
    # (80, 96) is larger than the image: the window pads exactly as the model pads internally.
    x = torch.randn(1, 3, 70, 90)
    with torch.no_grad():
        whole = predict_logits(r18, x, "whole")
        slide = predict_logits(r18, x, "slide", crop=crop, stride=(16, 16))
    assert slide.shape == whole.shape == (1, 3, 70, 90)
    torch.testing.assert_close(slide, whole)


def test_overlapping_windows_average_to_whole():
    model, x = Pointwise(), torch.randn(2, 3, 37, 50)
    with torch.no_grad():
        slide = predict_logits(model, x, "slide", crop=(16, 20), stride=(7, 9))
        torch.testing.assert_close(slide, model(x)["logits"])
        small = predict_logits(model, x, "slide", crop=(64, 20), stride=(64, 20))  # taller than the image
        torch.testing.assert_close(small, model(x)["logits"])


def test_center_mode_predicts_the_centre_window(r18):
    x = torch.randn(1, 3, 60, 80)
    with torch.no_grad():
        out = predict_logits(r18, x, "center", crop=(32, 48))
        torch.testing.assert_close(out, r18(x[..., 14:46, 16:64])["logits"])
    with pytest.raises(ValueError, match="crop"):
        predict_logits(r18, x, "center")
    with pytest.raises(ValueError, match="mode"):
        predict_logits(r18, x, "tiles", crop=(8, 8))


class _Data:
    classes = ["a", "b", "c"]

    def __init__(self, n=2, h=30, w=40):
        rng = np.random.default_rng(1)
        self.images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]
        self.masks = [rng.integers(0, 3, (h, w)).astype(np.uint8) for _ in range(n)]

    def __len__(self):
        return len(self.images)

    def load_image(self, i):
        return self.images[i]

    def load_mask(self, i):
        return self.masks[i]


def test_evaluate_report_and_modes():
    model, ds = Pointwise().train(), _Data()
    pred = make_predictor(model, MEAN, STD)(ds.images[0])
    assert pred.dtype == np.uint8 and pred.shape == (30, 40)
    whole = evaluate(model, ds, MEAN, STD)
    assert model.training  # restored for the training loop
    assert whole["images"] == 2 and whole["pixels"] == 2 * 30 * 40 and whole["mode"] == "whole"
    assert set(whole["iou"]) == {"a", "b", "c"} and 0 <= whole["miou"] <= 1
    assert np.asarray(whole["confusion"]).sum() == whole["pixels"]  # the counts, for redrawing a report
    slide = evaluate(model, ds, MEAN, STD, mode="slide", crop=(16, 16))
    assert slide["miou"] == pytest.approx(whole["miou"]) and slide["stride"] == [10, 10]
    center = evaluate(model, ds, MEAN, STD, mode="center", crop=(10, 20))
    assert center["pixels"] == 2 * 10 * 20 and center["crop"] == [10, 20]
    with pytest.raises(ValueError, match="crop"):
        evaluate(model, ds, MEAN, STD, mode="slide")


def _folder_dataset(root, n=2, h=36, w=52):
    from igldt.data import write_classes_yaml

    rng = np.random.default_rng(0)
    (root / "images" / "val").mkdir(parents=True)
    (root / "masks" / "val").mkdir(parents=True)
    palette = np.array([[128, 128, 128], [128, 64, 128], [64, 0, 128]], np.uint8)
    write_classes_yaml(root / "classes.yaml", ["sky", "road", "car"], palette)
    for i in range(n):
        cv2.imwrite(str(root / "images" / "val" / f"f{i}.png"), rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        mask = rng.integers(0, 3, (h, w)).astype(np.uint8)
        mask[:3] = 255
        cv2.imwrite(str(root / "masks" / "val" / f"f{i}.png"), mask)
    return palette


def test_evaluate_cli(tmp_path, r18):
    data = tmp_path / "data"
    palette = _folder_dataset(data)
    weights = tmp_path / "run" / "student.pt"
    recorded = load_config(None, data={"dataset": "folder", "root": str(data), "val_split": "val"},
                           train={"eval_mode": "whole"})
    save_checkpoint(weights, student_payload(r18, None, {"classes": ["sky", "road", "car"], "palette": palette},
                                             recorded))
    runner = CliRunner()
    res = runner.invoke(cli, ["evaluate", "--weights", str(weights), "--device", "cpu"])  # data from checkpoint
    assert res.exit_code == 0, res.output
    assert "mIoU" in res.output and "road" in res.output
    report_path = tmp_path / "run" / "student.eval-folder-val-whole.json"
    report = json.loads(report_path.read_text())
    assert report["images"] == 2 and report["pixels"] == 2 * 33 * 52 and report["engine"] == "torch"
    assert report["arch"]["backbone"] == "resnet18" and set(report["iou"]) == {"sky", "road", "car"}
    confusion = cv2.imread(str(tmp_path / "run" / "student.eval-folder-val-whole.confusion.png"))
    samples = cv2.imread(str(tmp_path / "run" / "student.eval-folder-val-whole.samples.png"))
    assert confusion is not None and samples is not None and "figures:" in res.output
    assert samples.shape[0] > 2 * 36 * 320 // 52  # both images (fewer than the default 4), a row each

    again = runner.invoke(cli, ["evaluate", "--weights", str(weights), "--device", "cpu"])
    assert again.exit_code != 0 and "already exists" in again.output and "--force" in again.output

    out = tmp_path / "slide.json"
    res = runner.invoke(cli, ["evaluate", "--weights", str(weights), "--data", str(data), "--dataset", "folder",
                              "--split", "val", "--mode", "slide", "--crop", "32", "32", "--stride", "16", "16",
                              "--out", str(out), "--device", "cpu", "--samples", "0"])
    assert res.exit_code == 0, res.output
    assert json.loads(out.read_text())["stride"] == [16, 16]
    assert (tmp_path / "slide.confusion.png").is_file() and not (tmp_path / "slide.samples.png").exists()
    res = runner.invoke(cli, ["evaluate", "--weights", str(weights), "--samples", "-1"])
    assert res.exit_code != 0 and "--samples" in res.output

    res = runner.invoke(cli, ["evaluate", "--weights", str(weights), "--mode", "center", "--force"])
    assert res.exit_code != 0 and "--crop" in res.output
    res = runner.invoke(cli, ["evaluate", "--weights", str(tmp_path / "missing.pt")])
    assert res.exit_code != 0 and "missing.pt does not exist" in res.output
