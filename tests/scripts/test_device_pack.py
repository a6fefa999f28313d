"""scripts/device: CamVid travels to a lent GPU as WebP and must decode back to the very same pixels."""
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

from tests.helpers import load_script

DEVICE = Path(__file__).resolve().parents[2] / "scripts" / "device"


def _pack():
    return load_script("scripts/device/pack.py")


def _camvid(root: Path, rng) -> None:
    for split, n in (("train", 3), ("val", 2)):
        for d in (split, split + "annot"):
            (root / d).mkdir(parents=True)
        for i in range(n):
            image = rng.integers(0, 256, (36, 48, 3), dtype=np.uint8)  # noise: the hardest case for a codec
            cv2.imwrite(str(root / split / f"0001TP_{i:06d}.png"), image)
            cv2.imwrite(str(root / (split + "annot") / f"0001TP_{i:06d}.png"),
                        rng.integers(0, 12, (36, 48), dtype=np.uint8))


def test_webp_round_trip_gives_back_every_pixel(tmp_path):
    src, packed, back = tmp_path / "camvid", tmp_path / "webp", tmp_path / "png"
    _camvid(src, np.random.default_rng(0))
    _pack().webp_tree(src, packed)
    assert len(list((packed / "train").glob("*.webp"))) == 3
    subprocess.run([sys.executable, str(DEVICE / "decode.py"), str(packed), str(back)], check=True,
                   capture_output=True)
    originals = sorted(src.glob("*/*.png"))
    assert len(originals) == 10
    for f in originals:
        restored = back / f.parent.name / f.name
        assert np.array_equal(cv2.imread(str(f), cv2.IMREAD_UNCHANGED), cv2.imread(str(restored), cv2.IMREAD_UNCHANGED)), f
