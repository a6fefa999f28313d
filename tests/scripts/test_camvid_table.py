"""scripts/camvid_table.py --budget: every step's iterations scale together, the recipe's proportions stay."""
import importlib.util
from pathlib import Path

from igldt.config import load_config

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "camvid_table.py"


def _table():
    spec = importlib.util.spec_from_file_location("camvid_table", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _iters(overrides, stage=None):
    cfg = load_config("camvid-cpu", overrides, stage=stage)
    return cfg.train.iters, cfg.method.cps_warmup


def test_budget_scales_every_step_and_the_teachers_labels_only_phase():
    table = _table()
    student, _ = _iters([])
    teachers, warmup = _iters([], "teachers")
    one, two = table.budget_overrides("camvid-cpu", [], 1), table.budget_overrides("camvid-cpu", [], 2)
    assert {k: v for k, v in one.items() if v} == {"supervised-long": [f"train.iters={teachers}"]}
    for step in ("supervised", "student"):
        assert _iters(two[step])[0] == 2 * student
    for step in ("teachers", "cps"):
        assert _iters(two[step], "teachers") == (2 * teachers, 2 * warmup)
    assert _iters(two["supervised-long"])[0] == 2 * teachers
