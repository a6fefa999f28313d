"""CamVid travelled as lossless WebP (checked pixel-equal before packing); write it back as PNG."""
import sys, os, glob, shutil
from multiprocessing import Pool
import cv2

src, dst = sys.argv[1], sys.argv[2]

def one(f):
    split = os.path.basename(os.path.dirname(f))
    im = cv2.imread(f, cv2.IMREAD_UNCHANGED)
    assert im is not None, f
    assert cv2.imwrite(os.path.join(dst, split, os.path.basename(f)[:-5] + ".png"), im), f

if __name__ == "__main__":
    for d in ("train", "val"):
        os.makedirs(os.path.join(dst, d), exist_ok=True)
    for d in ("trainannot", "valannot"):
        shutil.copytree(os.path.join(src, d), os.path.join(dst, d), dirs_exist_ok=True)
    files = sorted(glob.glob(os.path.join(src, "*", "*.webp")))
    with Pool(os.cpu_count()) as p:
        p.map(one, files)
    print({d: len(os.listdir(os.path.join(dst, d))) for d in os.listdir(dst)})
