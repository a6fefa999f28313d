"""benchmarks/train_lanes.py: seconds per iteration from a run's metrics.jsonl, start-up left out."""
import json

import pytest

from tests.helpers import load_script


def _module():
    return load_script("benchmarks/train_lanes.py")


def test_seconds_per_iteration_leaves_the_first_logged_point_out(tmp_path):
    rows = [{"iteration": 10, "time": 30.0},  # start-up (model build, first batches) inside its 30 s
            {"iteration": 20, "time": 35.0}, {"iteration": 30, "time": 40.5}, {"iteration": 40, "time": 46.0}]
    lines = [json.dumps(r) for r in rows[:2]] + ['{"iteration": 20, "val": {"miou_student": 0.5}}'] \
        + [json.dumps(r) for r in rows[2:]]
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    assert _module().seconds_per_iteration(tmp_path) == pytest.approx((46.0 - 35.0) / 20)


def test_too_short_a_run_says_what_to_do(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"iteration": 10, "time": 3.0}\n')
    with pytest.raises(SystemExit, match="raise --iters"):
        _module().seconds_per_iteration(tmp_path)
