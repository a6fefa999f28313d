#!/usr/bin/env python
"""CamVid at 1/8 labels (46 of 367) on CPU: Sup-only, the CPS teachers and the IGL-DT student,
each evaluated on CamVid val; writes docs/results.md with the table, the exact commands and times.

    python scripts/camvid_table.py                          # the whole table (budget: 90 min, 2 cores)
    python scripts/camvid_table.py -o train.iters=4 --out runs/camvid-smoke --results /tmp/smoke.md

Every stage runs as the `igldt` command a user would type (the commands go into the results),
with the `camvid-cpu` preset; `-o key=value` overrides are passed to every stage.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def sh(cmd: list[str], log: Path) -> float:
    """Run `cmd`, tee its output to `log`, return the wall time; stop the script on failure."""
    print("$ " + shlex.join(cmd), flush=True)
    t0 = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)
        for line in proc.stdout:
            f.write(line)
            if "\r" not in line:  # progress bars go to the log only
                sys.stdout.write(line)
        proc.wait()
    if proc.returncode != 0:
        sys.exit(f"command failed (exit {proc.returncode}); see {log}")
    return time.perf_counter() - t0


def final_val(run: Path) -> dict:
    vals = [json.loads(x)["val"] for x in (run / "metrics.jsonl").read_text().splitlines() if '"val"' in x]
    if not vals:
        sys.exit(f"{run}/metrics.jsonl has no validation record")
    return vals[-1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/camvid", help="folder of the three runs (relative to the repo)")
    ap.add_argument("--results", default="docs/results.md")
    ap.add_argument("--preset", default="camvid-cpu")
    ap.add_argument("-o", "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--exist-ok", action="store_true", help="overwrite runs already in --out")
    args = ap.parse_args()

    out = Path(args.out)
    (REPO / out).mkdir(parents=True, exist_ok=True)
    igldt = [sys.executable, "-m", "igldt.cli.main"]
    common = ["--preset", args.preset, "--device", args.device] + [a for o in args.overrides for a in ("-o", o)]
    if args.exist_ok:
        common.append("--exist-ok")
    commands: list[tuple[str, list[str], float]] = []
    start = time.perf_counter()

    def stage(name: str, *extra: str) -> None:
        cmd = igldt + ["train", "--stage", name, *common, "--out", str(out / name), *extra]
        commands.append((name, cmd, sh(cmd, REPO / out / f"{name}.log")))

    stage("supervised")
    stage("teachers")
    stage("student", "--teachers", str(out / "teachers" / "best.pt"))
    report = out / "student" / "best.eval.json"
    cmd = igldt + ["evaluate", "--weights", str(out / "student" / "best.pt"), "--device", args.device,
                   "--out", str(report), "--force"]
    commands.append(("evaluate student", cmd, sh(cmd, REPO / out / "evaluate.log")))
    wall = time.perf_counter() - start

    sup, tea, stu = (final_val(REPO / out / s) for s in ("supervised", "teachers", "student"))
    ev = json.loads((REPO / report).read_text())
    from igldt.config import load_config
    cfg = load_config(args.preset, args.overrides)
    m = cfg.model
    g_bb, l_bb = ((m.global_teacher.backbone,) * 2 if m.teachers == "dual-global" else
                  (m.local_teacher.backbone,) * 2 if m.teachers == "dual-local" else
                  (m.global_teacher.backbone, m.local_teacher.backbone))
    rows = [("Sup-only (labelled images only)", m.student.backbone, sup["miou_student"]),
            ("CPS teacher T_SU (global)", g_bb, tea["miou_global"]),
            ("CPS teacher T_RU (local)", l_bb, tea["miou_local"]),
            ("IGL-DT student", m.student.backbone, stu["miou_student"])]

    def pct(v):
        return "n/a" if v is None else f"{100 * v:.2f}"

    lines = [
        "# Results: CamVid, 1/8 labels, CPU",
        "",
        f"Written by `scripts/camvid_table.py` on {dt.datetime.now().isoformat(timespec='minutes')}; "
        f"machine: {platform.machine()}, {os.cpu_count()} CPU cores visible, Python {platform.python_version()}, "
        f"torch {__import__('torch').__version__}; device `{args.device}`.",
        "",
        f"Labelled: {cfg.data.fraction} of CamVid train (seeded split, seed {cfg.data.split_seed}); the rest of "
        "train is the unlabelled set. Every model starts from random weights (`pretrained: false`, no "
        "download), so the numbers are far below published CamVid results; what the table shows is the "
        "three stages running end to end on real data within the budget.",
        "",
        "| model | backbone | CamVid val mIoU (%) |",
        "| --- | --- | --- |",
        *[f"| {n} | {b} | {pct(v)} |" for n, b, v in rows],
        "",
        f"Validation: whole {len(ev.get('iou', {}))}-class images of CamVid val ({ev.get('images')} images), "
        "ignore (void) excluded, the final weights of each run (validated once, at the end). "
        f"`igldt evaluate` on the exported student checkpoint gives {pct(ev.get('miou'))} "
        "(the same weights through the deployment path of the checkpoint).",
        "",
        "Per-class IoU of the student (%): " + ", ".join(f"{k} {pct(v)}" for k, v in ev.get("iou", {}).items()),
        "",
        "## Settings",
        "",
        f"Preset `{args.preset}`" + (f" with overrides {', '.join(f'`{o}`' for o in args.overrides)}" if args.overrides else "")
        + f": crop {cfg.data.crop}, batch {cfg.train.batch_size} labelled + {cfg.train.batch_size} unlabelled, "
        f"{cfg.train.iters} iterations per stage, SGD lr {cfg.train.lr} (poly 0.9), losses {cfg.method.losses}, "
        f"alpha {cfg.method.alpha}, grid {cfg.method.grid}, CPS weight {cfg.method.cps_weight}.",
        "",
        "## Commands and wall time",
        "",
        "| step | wall time |",
        "| --- | --- |",
        *[f"| {n} | {t / 60:.1f} min |" for n, _, t in commands],
        f"| **total** | **{wall / 60:.1f} min** |",
        "",
        "```sh",
        *[shlex.join(["igldt", *c[3:]]) for _, c, _ in commands],
        "```",
        "",
    ]
    path = REPO / args.results
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(lines))
    os.replace(tmp, path)
    print("\n".join(lines[8:8 + len(rows) + 2]))
    print(f"total {wall / 60:.1f} min; results: {path}")


if __name__ == "__main__":
    main()
