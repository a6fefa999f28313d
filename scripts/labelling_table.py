#!/usr/bin/env python
"""Which images to label next, measured on CamVid: add K images picked by each `igldt suggest` method to
a seeded split, train Sup-only on each enlarged split (same recipe, same budget, several training
seeds), and write the table of val mIoU (docs/labelling.md).

CamVid's pool images have masks, so labelling the picks is simulated by training on them. Random picks
are the control, averaged over several draws. The picks come from one teachers checkpoint (the
label-scarce table's, trained on the starting split); the lists `igldt suggest` writes are what
every run trains on, so any row can be re-run by hand:

    python scripts/labelling_table.py --teachers runs/l32/seed0/teachers-cps-t095/best.pt \
        --data ../shared/data/camvid --fraction 1/32 --count 11 --seeds 0 1 2 --iters 1600 \
        --out runs/label32 --results docs/labelling.md

A rerun skips every pick and run already done (its done.json, or its figure in the committed record
`--record`), so the table fills in over sessions, and over machines.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from camvid_table import sh
from run_record import REPO, default_record, finished, keep, machine, only_in_record, record_machine

# row -> (suggest --method, --diversity or None for --no-diverse); random rows are drawn several times (--draws)
PICKS = {"random": ("random", None), "disagreement": ("disagreement", None),
         "disagreement + diversity": ("disagreement", "kcenter"), "balanced + diversity": ("balanced", "kcenter"),
         "disagreement + clusters": ("disagreement", "clusters"), "entropy": ("entropy", None)}
DEFAULT_ROWS = ("random", "disagreement", "disagreement + diversity", "entropy")
DEFAULT_PICKS = "disagreement + diversity"  # what `igldt suggest --teachers` picks without options
STUDENT = "student"  # run folder of the IGL-DT student on the default picks (--student)
BEGIN, END = "<!-- table: scripts/labelling_table.py -->", "<!-- end of table -->"  # the text around them is kept


def slug(row: str, draw: int | None = None) -> str:
    name = row.replace(" + ", "-").replace(" ", "-")
    return f"{name}{draw}" if draw is not None else name


def pick_sets(rows, draws: int) -> list[tuple[str, str, int | None]]:
    """(row, folder name, random draw or None) of every pick set."""
    out = []
    for row in rows:
        for d in (range(draws) if PICKS[row][0] == "random" else [None]):
            out.append((row, slug(row, d), d))
    return out


def suggest_cmd(args, name: str, row: str, draw: int | None, out: Path) -> list[str]:
    method, diversity = PICKS[row]
    spread = ["--diverse", "--diversity", diversity] if diversity else ["--no-diverse"]
    return [sys.executable, "-m", "igldt.cli.main", "suggest", "--teachers", args.teachers, "--data", args.data,
            "--dataset", args.dataset, "--preset", args.preset, "-o", f"data.fraction={args.fraction_value}",
            "--count", str(args.count), "--method", method, *spread,
            "--seed", str(draw or 0), "--device", args.device, "--out", str(out / "picks" / name), "--exist-ok"]


def train_cmd(args, picks: Path | None, seed: int, run: Path, stage: str = "supervised") -> list[str]:
    """Sup-only (or, with stage="student", the IGL-DT student taught by `args.teachers`) on the starting
    split enlarged by `picks`, or on the starting split itself."""
    lists = (["-o", f"data.labelled_list={picks / 'labeled.txt'}", "-o", f"data.unlabelled_list={picks / 'unlabeled.txt'}"]
             if picks else ["-o", f"data.fraction={args.fraction_value}"])
    teachers = ["--teachers", args.teachers] if stage == "student" else []
    return [sys.executable, "-m", "igldt.cli.main", "train", "--stage", stage, *teachers, "--preset", args.preset,
            "--device", args.device, "--seed", str(seed), "--iters", str(args.iters), "-o", f"data.root={args.data}",
            "-o", f"data.dataset={args.dataset}",
            "-o", "train.val_every=200", *lists, *[a for o in args.overrides for a in ("-o", o)],
            "--out", str(run), "--exist-ok"]


def best(run: Path, record: dict | None = None) -> tuple[float, int | None] | None:
    """(best val mIoU, its iteration) of a finished run (its folder, else the committed record), else None."""
    got = finished(run, record)
    if not got or not got[1]:
        return None
    top = max(got[1], key=lambda r: r["miou_student"])
    return top["miou_student"], top["iteration"]


def mean_sd(xs: list[float]) -> str:
    if not xs:
        return ""
    return f"{100 * statistics.mean(xs):.2f} ± {100 * statistics.stdev(xs):.2f}" if len(xs) > 1 else f"{100 * xs[0]:.2f}"


def report(args, out: Path, sets, record: dict) -> list[str]:
    seeds = args.seeds
    base = {s: best(out / f"seed{s}" / "start", record) for s in seeds}
    per_row: dict[str, dict[int, float]] = {}
    for row in dict.fromkeys(r for r, _, _ in sets):
        for s in seeds:
            got = [best(out / f"seed{s}" / name, record) for r, name, _ in sets if r == row]
            if got and all(g is not None for g in got):
                per_row.setdefault(row, {})[s] = statistics.mean(g[0] for g in got)
    lines = [f"| picks ({args.count} images added to {args.fraction}) | "
             + " | ".join(f"seed {s}" for s in seeds) + " | mean ± sd | minus random |",
             "| --- | " + " | ".join("---" for _ in seeds) + " | --- | --- |"]
    if all(base.values()):
        lines.append("| none (the starting split) | " + " | ".join(f"{100 * base[s][0]:.2f}" for s in seeds)
                     + f" | {mean_sd([base[s][0] for s in seeds])} | |")
    rand = per_row.get("random", {})
    for row, by_seed in per_row.items():
        cells = [f"{100 * by_seed[s]:.2f}" if s in by_seed else "" for s in seeds]
        paired = [by_seed[s] - rand[s] for s in seeds if s in by_seed and s in rand]
        diff = "" if row == "random" or not paired else (
            f"{100 * statistics.mean(paired):+.2f} ({', '.join(f'{100 * d:+.2f}' for d in paired)})")
        lines.append(f"| {row}{f' (mean of {args.draws} draws)' if row == 'random' else ''} | " + " | ".join(cells)
                     + f" | {mean_sd([by_seed[s] for s in seeds if s in by_seed])} | {diff} |")
    walls = [json.loads((REPO / out / "picks" / name / "done.json").read_text())["wall"] for _, name, _ in sets
             if (REPO / out / "picks" / name / "done.json").exists()]
    student = {s: best(out / f"seed{s}" / STUDENT, record) for s in seeds}
    if args.student and any(student.values()):
        lines.append(f"| IGL-DT student on the {DEFAULT_PICKS} picks (teachers of the starting split) | "
                     + " | ".join(f"{100 * student[s][0]:.2f}" if student[s] else "" for s in seeds)
                     + f" | {mean_sd([student[s][0] for s in seeds if student[s]])} | |")
    lines += ["", *pick_contents(args, out, sets)]
    lines += ["", f"{args.dataset} val mIoU %, best validation of each Sup-only run (`--iters {args.iters}`, validated every 200 "
              f"iterations), on {machine(out)}. Picks by `igldt suggest` from `{args.teachers}`"
              + (f" ({statistics.mean(walls):.0f} s per ranking of the pool)" if walls else "")
              + f"; the lists and every run under `{out}`, each finished run's figure and every pick list also in "
              f"`{args.record}`. Paired differences per training seed in brackets."]
    picked = [(name, record["picks"][(out / "picks" / name).as_posix()]) for _, name, _ in sets
              if (out / "picks" / name).as_posix() in record["picks"]]
    if picked:
        lines += ["", "The picks, best first (`suggested.txt`):", "",
                  *[f"- {name}: {' '.join(ids)}" for name, ids in picked]]
    return lines


def pick_contents(args, out: Path, sets) -> list[str]:
    """What each pick set holds, from the pool's masks (which a real user would not have: measured only
    to explain the table): picks per group of ids (the id up to its first `_`: a CamVid recording) and
    each class's share of the picks' labelled pixels, beside the pool's own shares."""
    from collections import Counter

    import torch

    from igldt.class_balance import label_counts
    from igldt.data.datasets import build_dataset
    from igldt.data.splits import read_split_file, select
    train = build_dataset(args.dataset, args.data, "train")
    done = [(row, name) for row, name, _ in sets if (REPO / out / "picks" / name / "suggested.txt").exists()]
    if not done:
        return []
    pool = read_split_file(REPO / out / "picks" / done[0][1] / "suggested.txt") + read_split_file(
        REPO / out / "picks" / done[0][1] / "unlabeled.txt")

    def shares(ids: list[str]) -> tuple[Counter, torch.Tensor]:
        ds = select(train, ids)
        counts = sum(label_counts(torch.from_numpy(ds.load_mask(i)).long(), ds.num_classes) for i in range(len(ds)))
        return Counter(i.split("_")[0] for i in ids), 100 * counts / max(int(counts.sum()), 1)

    named = {"pool": shares(pool), **{name: shares(read_split_file(REPO / out / "picks" / name / "suggested.txt"))
                                      for _, name in done}}
    groups = sorted(named["pool"][0], key=lambda g: -named["pool"][0][g])
    lines = ["What the picks hold (from the pool's masks, to explain the table): picks per recording (the id "
             "before its first `_`; the pool's row: its images), and each class's share of the labelled pixels (%):",
             "", "| picks | " + " | ".join(groups) + " | " + " | ".join(train.classes) + " |",
             "| --- | " + " | ".join("---" for _ in [*groups, *train.classes]) + " |"]
    for name, (g, share) in named.items():
        lines.append(f"| {name} | " + " | ".join(str(g.get(k, 0)) for k in groups) + " | "
                     + " | ".join(f"{float(v):.1f}" for v in share) + " |")
    return lines


def write_between_markers(path: Path, table: str) -> None:
    """Replace what lies between BEGIN and END in `path` (appended with the markers when absent), atomically."""
    text = path.read_text() if path.exists() else ""
    block = f"{BEGIN}\n{table}\n{END}"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        text = text + ("\n" if text else "") + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_suffix(".tmp").write_text(text)
    path.with_suffix(".tmp").replace(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teachers", required=True, help="teachers checkpoint trained on the starting split")
    ap.add_argument("--data", required=True, help="CamVid root")
    ap.add_argument("--dataset", default="camvid")
    ap.add_argument("--fraction", default="1/32", help="the starting split (data.fraction, split seed 0)")
    ap.add_argument("--count", type=int, default=11, help="images added by each method")
    ap.add_argument("--rows", nargs="*", default=list(DEFAULT_ROWS), choices=list(PICKS))
    ap.add_argument("--draws", type=int, default=3, help="random draws (the control's average)")
    ap.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2], help="training seeds")
    ap.add_argument("--iters", type=int, default=1600)
    ap.add_argument("--preset", default="camvid-cpu")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("-o", "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--out", default="runs/label32")
    ap.add_argument("--results", default="docs/labelling.md")
    ap.add_argument("--record", help="committed record of finished runs and pick lists, read where a run folder "
                                      "is missing (default: beside --results, <name>-runs.json)")
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--student", action="store_true",
                    help=f"also the IGL-DT student on the {DEFAULT_PICKS} picks, taught by --teachers, every seed")
    args = ap.parse_args()
    if args.student and DEFAULT_PICKS not in args.rows:
        ap.error(f"--student trains on the {DEFAULT_PICKS!r} picks: add that row to --rows")
    num, _, den = args.fraction.partition("/")
    args.fraction_value = float(num) / float(den or 1)
    out = Path(args.out)
    args.record = args.record or str(default_record(args.results))
    sets = pick_sets(args.rows, args.draws)
    names = ["start", *(n for _, n, _ in sets), STUDENT]
    record_path = REPO / args.record
    runs_of = lambda: [out / f"seed{seed}" / name for seed in args.seeds for name in names]
    kept = lambda: keep(record_path, runs_of(), out, [out / "picks" / n for _, n, _ in sets])  # after every step
    if not args.report_only:
        record_machine(out, args.device)
        for row, name, draw in sets:
            folder = REPO / out / "picks" / name
            folder.mkdir(parents=True, exist_ok=True)
            sh(suggest_cmd(args, name, row, draw, out), folder.with_suffix(".log"), folder / "done.json")
            kept()
        for seed in args.seeds:
            runs = [("start", None, "supervised"), *((n, out / "picks" / n, "supervised") for _, n, _ in sets)]
            if args.student:
                runs.append((STUDENT, out / "picks" / slug(DEFAULT_PICKS), "student"))
            for name, picks, stage in runs:
                run = out / f"seed{seed}" / name
                if only_in_record(record_path, run):
                    continue
                (REPO / run).mkdir(parents=True, exist_ok=True)
                sh(train_cmd(args, picks, seed, run, stage), (REPO / run).with_suffix(".log"), REPO / run / "done.json")
                kept()
    record = kept()
    lines = report(args, out, sets, record)
    write_between_markers(REPO / args.results, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
