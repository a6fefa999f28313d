"""scripts/labelling_table.py end to end on the tiny demo data: picks by two methods, the control's
draws, Sup-only on every enlarged split, the IGL-DT student on the default picks, the table and what
the picks hold written between its markers."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import torch

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "labelling_table.py"


def test_labelling_table_on_the_demo_data(tiny_demo, tmp_path):
    from igldt.checkpoint import save_checkpoint, teachers_payload
    from igldt.config import load_config
    from igldt.data import build_dataset
    from igldt.models import build_segmenter

    ds = build_dataset("demo", tiny_demo, "train")
    cfg = load_config("demo", [f"data.root={tiny_demo}", "data.fraction=0.5"])
    torch.manual_seed(0)
    nets = [build_segmenter("resnet18", len(ds.classes)).eval() for _ in range(2)]
    teachers = save_checkpoint(tmp_path / "teachers.pt", teachers_payload(*nets, {"classes": ds.classes, "palette": ds.palette}, cfg))
    results = tmp_path / "labelling.md"
    results.write_text("# Labelling\n\nintro kept\n")
    cmd = [sys.executable, str(SCRIPT), "--teachers", str(teachers), "--data", str(tiny_demo), "--dataset", "demo",
           "--preset", "demo", "--fraction", "1/2", "--count", "1", "--rows", "random", "disagreement + diversity", "--draws", "2",
           "--student",
           "--seeds", "0", "--iters", "2", "--out", str(tmp_path / "runs"), "--results", str(results),
           "-o", "data.crop=[32,48]", "-o", "train.batch_size=2", "-o", "data.workers=0"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    text = results.read_text()
    assert text.startswith("# Labelling\n\nintro kept\n") and "random (mean of 2 draws)" in text
    assert "| disagreement + diversity |" in text and "| none (the starting split) |" in text
    assert "| IGL-DT student on the disagreement + diversity picks" in text
    assert (tmp_path / "runs" / "seed0" / "student" / "best.pt").exists()
    holds = {line.split(" | ")[0][2:]: line for line in text.splitlines() if line.startswith(("| pool |", "| random0 |"))}
    shares = [float(v) for v in holds["pool"].strip(" |").split(" | ")[-len(ds.classes):]]
    assert abs(sum(shares) - 100) < 0.1  # every labelled pixel of the pool counted once
    assert "What the picks hold" in text and "random0" in holds
    for name in ("random0", "random1", "disagreement-diversity"):
        assert len((tmp_path / "runs" / "picks" / name / "labeled.txt").read_text().split()) == 5  # 4 labelled + 1
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600)  # every step done: only the report
    assert again.returncode == 0 and "done already" in again.stdout
    assert results.read_text().count("<!-- end of table -->") == 1
    # The committed record keeps every figure and pick list: a run folder lost with its machine is still in the table.
    record = json.loads((tmp_path / "labelling-runs.json").read_text())
    kept = record["runs"][f"{tmp_path / 'runs'}/seed0/random0"]
    assert kept["done"]["command"].startswith("igldt train --stage supervised") and kept["vals"][0]["miou_student"] >= 0
    picks = record["picks"][f"{tmp_path / 'runs'}/picks/disagreement-diversity"]
    listed = (tmp_path / "runs" / "picks" / "disagreement-diversity" / "suggested.txt").read_text()
    assert listed.startswith("#") and len(picks) == 1 and picks[0] in listed  # the ids alone, not the comment
    assert f"- disagreement-diversity: {picks[0]}" in results.read_text()
    table = results.read_text().split("<!-- end of table -->")[0]
    shutil.rmtree(tmp_path / "runs" / "seed0" / "random0")
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=600)  # not trained again: in the record
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "in the record already" in rerun.stdout and not (tmp_path / "runs" / "seed0" / "random0").exists()
    assert results.read_text().split("<!-- end of table -->")[0] == table
