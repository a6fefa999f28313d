"""`igldt split` and `igldt check-data` through click."""
from __future__ import annotations

import cv2
import numpy as np
from click.testing import CliRunner

from igldt.cli.main import cli
from igldt.data import make_demo_dataset, make_split, read_split_file

SMALL = dict(n_labelled_train=2, n_unlabelled_train=6, n_val=2, size=(32, 40), video_frames=0)


def test_split_command(tmp_path):
    root = make_demo_dataset(tmp_path / "d", **SMALL)
    out = tmp_path / "s"
    r = CliRunner().invoke(cli, ["split", "--data", str(root), "--dataset", "folder", "--fraction", "1/4",
                                 "--seed", "2", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "8 items -> 2 labelled, 6 unlabelled" in r.output and "igldt train" in r.output
    ids = [f"train_{i:04d}" for i in range(8)]
    assert read_split_file(out / "labeled.txt") == make_split(ids, fraction="1/4", seed=2)[0]
    again = CliRunner().invoke(cli, ["split", "--data", str(root), "--count", "3", "--out", str(out)])
    assert again.exit_code == 1 and "--force" in again.output
    assert len(read_split_file(out / "labeled.txt")) == 2
    forced = CliRunner().invoke(cli, ["split", "--data", str(root), "--count", "3", "--out", str(out), "--force"])
    assert forced.exit_code == 0 and len(read_split_file(out / "labeled.txt")) == 3
    both = CliRunner().invoke(cli, ["split", "--data", str(root), "--count", "3", "--fraction", "1/2"])
    assert both.exit_code == 2 and "exactly one" in both.output
    missing = CliRunner().invoke(cli, ["split", "--data", str(tmp_path / "nope"), "--dataset", "camvid",
                                       "--count", "1"])
    assert missing.exit_code == 1 and "does not exist" in missing.output


def test_check_data_command(tmp_path):
    root = make_demo_dataset(tmp_path / "d", **SMALL)
    ok = CliRunner().invoke(cli, ["check-data", "--data", str(root)])
    assert ok.exit_code == 0, ok.output
    assert "folder 'train'" in ok.output and "OK: 8 items checked" in ok.output and "OK: 2 items" in ok.output
    m = cv2.imread(str(root / "masks" / "val" / "val_0001.png"), -1)
    m[0, :4] = 42
    cv2.imwrite(str(root / "masks" / "val" / "val_0001.png"), m)
    cv2.imwrite(str(root / "masks" / "train" / "train_0003.png"), np.zeros((5, 5), np.uint8))
    bad = CliRunner().invoke(cli, ["check-data", "--data", str(root), "--dataset", "folder"])
    assert bad.exit_code == 1
    assert "[bad_labels]" in bad.output and "42 (4 px)" in bad.output and "[size_mismatch]" in bad.output
    only = CliRunner().invoke(cli, ["check-data", "--data", str(root), "--split", "nosuch"])
    assert only.exit_code == 1 and "split 'nosuch' not found" in only.output
