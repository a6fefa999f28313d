"""What a table script's runs leave that outlives them: each run's done.json and validations, the
machine they ran on, and the committed record (beside the results file) that keeps those figures and
the pick lists when the run folders are gone (another machine), so a table is rewritten without
losing a figure and a step in the record is not trained again. Shared by camvid_table.py and
labelling_table.py."""
from __future__ import annotations

import json
import os
import platform
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DONE = "done.json"    # per finished step: {"wall": seconds, "command": ...}; a rerun skips the step


def vals(run: Path) -> list[dict]:
    """Every validation record of a run (iteration and mIoU per validated model)."""
    path = run / "metrics.jsonl"
    if not path.exists():
        return []
    return [{"iteration": r.get("iteration"), **r["val"]} for r in map(json.loads, path.read_text().splitlines())
            if "val" in r]


def record_machine(out: Path, device: str) -> None:
    """Write what the runs train on (`<out>/machine.json`) for the report's header."""
    import torch
    info = {"platform": platform.machine(), "cores": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__, "device": device,
            "gpu": torch.cuda.get_device_name(0) if device.startswith("cuda") else None}
    (REPO / out).mkdir(parents=True, exist_ok=True)
    (REPO / out / "machine.json").write_text(json.dumps(info))


def machine(out: Path) -> str:
    path = REPO / out / "machine.json"
    if not path.exists():
        return "an unrecorded machine"
    m = json.loads(path.read_text())
    where = f"one {m['gpu']} GPU" if m.get("gpu") else "CPU"
    return (f"{where} ({m['platform']}, {m['cores']} CPU cores, Python {m['python']}, torch {m['torch']})")


def load_record(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {"runs": {}, "picks": {}}


def default_record(results: str | Path) -> Path:
    """Where a results file's record lives: beside it, `<name>-runs.json`."""
    results = Path(results)
    return results.with_name(f"{results.stem}-runs.json")


def finished(run: Path, record: dict | None = None) -> tuple[dict, list[dict]] | None:
    """(its done.json, its validation records) of a finished run: from its folder, else from `record`
    (keyed by the run's path as given, relative to the repository), else None."""
    if (REPO / run / DONE).exists():
        return json.loads((REPO / run / DONE).read_text()), vals(REPO / run)
    kept = (record or {}).get("runs", {}).get(run.as_posix())
    return (kept["done"], kept["vals"]) if kept else None


def keep(path: Path, runs, out: Path, picks=()) -> dict:
    """The record at `path` with every finished run of `runs` (its done.json, validation records and
    the machine it ran on) and every pick list of `picks` (folders holding a suggested.txt) added:
    committed beside the results, it keeps the table's figures and lists when the run folders are
    gone (another machine) and spares their reruns. Written atomically."""
    from igldt.data.splits import read_split_file

    record = load_record(path)
    where = machine(out)
    for run in runs:
        if (REPO / run / DONE).exists():
            done, records = finished(run)
            record["runs"][run.as_posix()] = {"done": done, "vals": records, "machine": where}
    for folder in picks:
        if (REPO / folder / "suggested.txt").exists():
            record["picks"][folder.as_posix()] = read_split_file(REPO / folder / "suggested.txt")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_suffix(".tmp").write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    path.with_suffix(".tmp").replace(path)
    return record


def only_in_record(path: Path, run: Path) -> bool:
    """True (and says so) when `run` is finished in the record at `path` but has no folder here: a table
    takes its figures from the record and does not train it again."""
    if (REPO / run / DONE).exists() or run.as_posix() not in load_record(path)["runs"]:
        return False
    print(f"in the record already: {run}", flush=True)
    return True


def seed_runs(out: Path, record: dict, names) -> list[Path]:
    """Every `<out>/seed<S>/<name>` with a folder here or an entry in the record."""
    seeds = {int(f.name[4:]) for f in (REPO / out).glob("seed*") if f.name[4:].isdigit()}
    seeds |= {int(Path(k).parent.name[4:]) for k in record["runs"] if Path(k).parent.parent == out}
    return [out / f"seed{s}" / n for s in sorted(seeds) for n in names]
