"""Training throughput on a small CPU: one run on every core, against one run per core on one thread each.

    python benchmarks/train_lanes.py --data ../shared/data/camvid          # camvid-cpu Sup-only, 1/32, 120 iterations
    python benchmarks/train_lanes.py --data ROOT --lanes 2 --iters 200 -o data.fraction=0.125

The experiment tables (scripts/camvid_table.py, scripts/labelling_table.py) are many independent runs. Two
of them at once with torch's default thread count oversubscribe the cores and slow each other 3-5x; with
one thread each (OMP_NUM_THREADS=1) they may do more work an hour than one run on all cores, because small
convolutions at batch 4 do not scale across threads. This measures it: seconds per iteration from each
run's metrics.jsonl (its second logged point to its last, so start-up is left out), and iterations per
second of all lanes together. Run it on idle cores.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path


def train(out: Path, threads: int, args) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    cmd = [sys.executable, "-m", "igldt.cli.main", "train", "--stage", "supervised", "--preset", args.preset,
           "--device", "cpu", "--seed", "0", "--iters", str(args.iters), "-o", f"data.root={args.data}",
           "-o", "train.val_every=1000000", *[a for o in args.overrides for a in ("-o", o)], "--out", str(out)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)


def seconds_per_iteration(run: Path) -> float:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if '"time"' in line]
    if len(rows) < 3:
        sys.exit(f"{run}: too few logged iterations to time; raise --iters")
    first, last = rows[1], rows[-1]
    return (last["time"] - first["time"]) / (last["iteration"] - first["iteration"])


def lanes(n: int, threads: int, root: Path, args) -> list[float]:
    runs = [root / f"{n}x{threads}-{k}" for k in range(n)]
    procs = [train(run, threads, args) for run in runs]
    try:
        failed = [p.wait() != 0 for p in procs]
    finally:  # interrupted: no run outlives the benchmark
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    if any(failed):
        sys.exit(f"a training run failed; rerun one by hand: igldt train --stage supervised --preset {args.preset} ...")
    return [seconds_per_iteration(run) for run in runs]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="dataset root (data.root)")
    ap.add_argument("--preset", default="camvid-cpu")
    ap.add_argument("--iters", type=int, default=120)
    ap.add_argument("--lanes", type=int, default=os.cpu_count() or 2, help="runs at once, one thread each")
    ap.add_argument("-o", "--set", dest="overrides", action="append", default=["data.fraction=0.03125"],
                    metavar="KEY=VALUE")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="train_lanes_") as tmp:
        one = lanes(1, args.lanes, Path(tmp), args)[0]
        many = lanes(args.lanes, 1, Path(tmp), args)
    print(f"1 run on {args.lanes} threads: {one:.3f} s/it, {1 / one:.2f} it/s")
    together = sum(1 / s for s in many)
    print(f"{args.lanes} runs on 1 thread each: {', '.join(f'{s:.3f}' for s in many)} s/it, {together:.2f} it/s "
          f"together ({together * one:.2f}x the single run's throughput)")


if __name__ == "__main__":
    main()
