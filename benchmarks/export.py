"""Wall time and peak memory of `igldt export`, as a user runs it, for the two Lite0 students of the presets.

    python benchmarks/export.py --data ../shared/data/camvid              # every variant, both students
    python benchmarks/export.py --data ../shared/data/camvid --baseline   # fp32 dynamic as before (minutes)
    python benchmarks/export.py --weights runs/student/best.pt --variants fp32 int8

Each export is the CLI in a fresh process (`python -m igldt export ...`: imports, checkpoint, export, the
check against PyTorch on 8 real images, sidecar), timed from outside; its peak RSS comes from `os.wait4`.
Without `--weights` the students are the `camvid-cpu` and `demo` presets' networks on their ImageNet
weights (the export's cost does not depend on training), saved with their preset's config so that INT8
calibrates on the images a trained student would (CamVid's unlabelled pool; the demo data, generated
into `--work` where missing). `--baseline` runs the fp32 dynamic export with the network as built
(`igldt.models.exportable` bypassed): the "before" of the export issue. Targets: fp32 dynamic <= 15 s,
INT8 (64 calibration images) <= 60 s on 2 cores. Run it on idle cores.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# name -> extra `igldt export` arguments
VARIANTS = {
    "fp32": [],
    "fp32-static": ["--static"],
    "fp16": ["--precision", "fp16"],
    "int8": ["--precision", "int8"],
    "int8-tensorrt": ["--precision", "int8", "--int8-target", "tensorrt"],
    "labels-baked": ["--output", "labels", "--bake-preprocess"],
}
TARGETS_S = {"fp32": 15.0, "int8": 60.0}
# the CLI with `exportable` replaced by the identity: what `igldt export` did before it existed
BASELINE = ("import sys, igldt.models as m; m.exportable = lambda model, probe: (model, {}); "
            "from igldt.cli.main import cli; sys.argv[0] = 'igldt'; cli()")


def make_student(preset: str, out: Path, data_root: Path) -> Path:
    """The preset's student on its pretrained weights, saved as an export-ready checkpoint in `out`."""
    from igldt.checkpoint import save_checkpoint, student_payload
    from igldt.config import load_config
    from igldt.data import build_dataset, ensure_demo_dataset
    from igldt.models import build_role

    if preset == "demo":
        data_root = ensure_demo_dataset(data_root)
    cfg = load_config(preset, [f"data.root={data_root}"])
    ds = build_dataset(cfg.data.dataset, cfg.data.root, cfg.data.train_split)
    model = build_role(cfg, "student", len(ds.classes)).eval()
    meta = {"classes": ds.classes, "palette": ds.palette}
    return save_checkpoint(out / f"{preset}-student.pt", student_payload(model, None, meta, cfg))


def run_export(weights: Path, variant: str, out: Path, baseline: bool) -> tuple[float, float, int]:
    """(wall seconds, peak RSS in GiB, exit code) of one export in a fresh process."""
    args = ["export", "--weights", str(weights), "--out", str(out / f"{weights.stem}-{variant}.onnx"), "--force",
            *VARIANTS[variant]]
    cmd = [sys.executable, "-c", BASELINE, *args] if baseline else [sys.executable, "-m", "igldt", *args]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code:
        print(output[-2000:], file=sys.stderr)
    return wall, usage.ru_maxrss / 2**20, code


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("data/camvid"), help="CamVid root (the camvid-cpu student's data)")
    ap.add_argument("--weights", type=Path, nargs="*", help="students to export (default: the two presets' students)")
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--baseline", action="store_true", help="fp32 dynamic with the network as built (the 'before')")
    ap.add_argument("--work", type=Path, default=Path("runs/bench-export"))
    a = ap.parse_args()

    a.work.mkdir(parents=True, exist_ok=True)
    weights = a.weights or [make_student("camvid-cpu", a.work, a.data.resolve()),
                            make_student("demo", a.work, (a.work / "demo-data").resolve())]
    variants = ["fp32"] if a.baseline else a.variants
    print(f"{'student':<24} {'export':<22} {'wall s':>7} {'peak GiB':>9}  target", flush=True)
    failed = False
    for w in weights:
        for v in variants:
            wall, peak, code = run_export(w, v, a.work, a.baseline)
            target = TARGETS_S.get(v)
            verdict = "" if target is None or a.baseline else f"<= {target:.0f} s {'PASS' if wall <= target else 'FAIL'}"
            if code:
                verdict, failed = f"exit {code}", True
            name = f"{v}{' (baseline)' if a.baseline else ''}"
            print(f"{w.stem:<24} {name:<22} {wall:7.1f} {peak:9.2f}  {verdict}", flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
