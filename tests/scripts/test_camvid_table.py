"""scripts/camvid_table.py: --budget scales every step together, --iters sets one, the table and curve on demo data."""
from pathlib import Path

from igldt.config import load_config

from tests.helpers import load_script

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "camvid_table.py"


def _table():
    return load_script("scripts/camvid_table.py")


def _iters(overrides, stage=None):
    cfg = load_config("camvid-cpu", overrides, stage=stage)
    return cfg.train.iters, cfg.method.cps_warmup


def test_budget_scales_every_step_and_the_teachers_labels_only_phase():
    table = _table()
    student, _ = _iters([])
    teachers, warmup = _iters([], "teachers")
    one, two = table.budget_overrides("camvid-cpu", [], 1), table.budget_overrides("camvid-cpu", [], 2)
    long = [f"train.iters={teachers}"]  # Sup-only's long baseline and UniMatch run the longest stage's count
    assert {k: v for k, v in one.items() if v} == {"supervised-long": long, "unimatch": long}
    for step in ("supervised", "student"):
        assert _iters(two[step])[0] == 2 * student
    for step in ("teachers", "cps"):
        assert _iters(two[step], "teachers") == (2 * teachers, 2 * warmup)
    assert _iters(two["supervised-long"])[0] == 2 * teachers
    # a variant scales as its stage does: a CPS variant's labels-only phase too
    assert _iters(two["teachers-cps-t095"], "teachers") == (2 * teachers, 2 * warmup)
    assert _iters(two["supervised-ohem"])[0] == 2 * student


def test_iters_sets_a_step_outright_and_scales_its_labels_only_phase():
    table = _table()
    teachers, warmup = _iters([], "teachers")
    steps = table.budget_overrides("camvid-cpu", [], 1, {"unimatch": 1600, "teachers-unimatch": 2 * teachers})
    assert _iters(steps["unimatch"])[0] == 1600
    assert _iters(steps["teachers-unimatch"], "teachers") == (2 * teachers, 2 * warmup)
    assert _iters(steps["supervised-long"])[0] == teachers  # the longest stage's count by default
    assert table.fraction_label(0.03125) == "1/32" and table.fraction_label(0.3) == "0.3"


def test_table_at_a_tiny_fraction_on_the_demo_data(tiny_demo, tmp_path):
    """The script end to end on the tiny demo data: three steps of two iterations each, the table and
    the curve plot written, every step's command and wall time recorded."""
    import json
    import subprocess
    import sys

    results = tmp_path / "results.md"
    cmd = [sys.executable, str(SCRIPT), "--preset", "demo", "--data", str(tiny_demo), "--fraction", "1/2",
           "--out", str(tmp_path / "runs"), "--results", str(results),
           "--stages", "supervised", "supervised-long", "unimatch",
           "--iters", "supervised=2", "supervised-long=3", "unimatch=2",
           "-o", "data.crop=[32,48]", "-o", "train.batch_size=2", "-o", "data.workers=0"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    text = results.read_text()
    assert "# Results: demo, 1/2 labels" in text and "4 of 8 images" in text
    for row in ("| Sup-only |", "| Sup-only, longest budget |", "| UniMatch |"):
        assert row in text, row
    assert "supervised 2, supervised-long 3, unimatch 2" in text
    assert (tmp_path / "results-curve.png").stat().st_size > 1000
    done = json.loads((tmp_path / "runs" / "seed0" / "unimatch" / "done.json").read_text())
    assert done["command"].startswith("igldt train --stage unimatch") and done["wall"] > 0
    assert "runs/seed0/unimatch" in (tmp_path / "results-runs.json").read_text()  # the record, beside the results
    # A run folder gone and no record of it: the rewrite would drop its figures, so it is refused unless asked.
    import shutil
    shutil.rmtree(tmp_path / "runs" / "seed0" / "unimatch")
    report = [*cmd, "--report-only", "--record", str(tmp_path / "empty-runs.json")]
    refused = subprocess.run(report, capture_output=True, text=True, timeout=600)
    assert refused.returncode != 0 and "pass --replace" in refused.stderr and results.read_text() == text
    assert subprocess.run([*report, "--replace"], capture_output=True, text=True, timeout=600).returncode == 0
    assert "| UniMatch |" not in results.read_text()


def test_a_cut_step_resumes_from_its_last_checkpoint(tmp_path, monkeypatch):
    """A step whose run folder holds last.pt but no done.json (the session ended in it) continues with
    --resume and without --preset; done.json records the step's own command; a step never started runs
    as it is."""
    table = _table()
    calls = []
    monkeypatch.setattr(table, "sh", lambda cmd, log, done, record=None: calls.append((cmd, record)) or 0.0)
    out = tmp_path / "runs"
    (out / "seed0" / "supervised").mkdir(parents=True)
    (out / "seed0" / "supervised" / "last.pt").write_bytes(b"")
    table.run_seed(0, out, "demo", [], "cpu", stages=("supervised", "unimatch"))
    (cut, record), (fresh, none) = calls
    assert cut[cut.index("--resume") + 1] == str(out / "seed0" / "supervised" / "last.pt")
    assert "--preset" not in cut and record[record.index("--preset") + 1] == "demo"
    assert [a for a in cut if a != "--resume" and not a.endswith("last.pt")] == [
        a for i, a in enumerate(record) if a != "--preset" and (i == 0 or record[i - 1] != "--preset")]
    assert "--resume" not in fresh and none is None


def test_a_student_variant_learns_from_the_teachers_its_step_names(tmp_path, monkeypatch):
    """`student-ohem-mfpl-ohem-teachers` learns from the seed's `teachers-ohem-t095`, the plain student
    from the seed's CPS teachers, and a --teachers file overrides both (teachers shared across seeds)."""
    table = _table()
    calls = []
    monkeypatch.setattr(table, "sh", lambda cmd, log, done, record=None: calls.append(cmd) or 0.0)
    out = tmp_path / "runs"
    stages = ("student", "student-ohem-mfpl-ohem-teachers")
    table.run_seed(1, out, "demo", [], "cpu", stages=stages)
    table.run_seed(1, out, "demo", [], "cpu", stages=stages, teachers="shared/best.pt")
    mentors = [cmd[cmd.index("--teachers") + 1] for cmd in calls]
    assert mentors == [str(out / "seed1" / "teachers" / "best.pt"),
                       str(out / "seed1" / "teachers-ohem-t095" / "best.pt"), "shared/best.pt", "shared/best.pt"]


def test_a_run_whose_best_is_its_last_validation_is_still_rising():
    still_rising = _table().still_rising
    assert still_rising([(200, 0.40), (400, 0.50), (600, 0.55)])
    assert not still_rising([(200, 0.40), (400, 0.56), (600, 0.55)])  # peaked before its end
    assert not still_rising([(200, 0.40)])                             # one validation: no verdict
    assert not still_rising([])


def test_the_record_keeps_a_runs_figures_when_its_folder_is_gone(tmp_path, monkeypatch):
    """keep() writes every finished run's done.json and validations into the committed record; with the
    folder gone, collect() gives the same table and run_seed does not train it again."""
    import json
    import shutil

    table = _table()
    out, record = tmp_path / "runs", tmp_path / "results-runs.json"
    run = out / "seed0" / "supervised"
    run.mkdir(parents=True)
    (run / "done.json").write_text(json.dumps({"wall": 12.0, "command": "igldt train --stage supervised"}))
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in [
        {"iteration": 10, "loss": 1.0},
        {"iteration": 200, "val": {"miou_student": 0.41, "score": 0.41, "class_iou": {"sky": 0.9}}},
        {"iteration": 400, "val": {"miou_student": 0.47, "score": 0.47, "class_iou": {"sky": 0.92}}}]) + "\n")
    assert table.default_record("docs/results.md") == Path("docs/results-runs.json")
    before = table.collect(out, table.keep(record, table.seed_runs(out, table.load_record(record), table.STAGES), out))
    assert before[0]["val"]["Sup-only"] == 0.47 and before[0]["curves"]["Sup-only"] == [(200, 0.41), (400, 0.47)]
    shutil.rmtree(out / "seed0")
    kept = table.load_record(record)
    assert table.collect(out, kept) == before and table.collect(out) == {}
    calls = []
    monkeypatch.setattr(table, "sh", lambda cmd, log, done, record=None: calls.append(cmd) or 0.0)
    table.run_seed(0, out, "demo", [], "cpu", stages=("supervised", "unimatch"), record=record)
    assert [c[c.index("--stage") + 1] for c in calls] == ["unimatch"]  # Sup-only is in the record


def test_figures_counts_the_numeric_cells_of_table_rows():
    figures = _table().figures
    assert figures(["| row | 51.71 | 49.74 ↑ | n/a | 50.73 ± 1.39 |", "| --- | --- |", "text 12.5", "| +0.39 (+0.39) |"]) == 4
