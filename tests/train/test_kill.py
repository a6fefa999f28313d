"""`igldt train` killed with SIGKILL between two periodic checkpoints (train.save_every), then
resumed with --resume, ends on exactly the weights of a run that was never interrupted.

The student stage (frozen teachers, the swap of (11) by iteration parity) through the real CLI,
data layer and models, on a tiny generated dataset, in subprocesses with one thread each (the
same arithmetic in every run, so equality is exact: torch.equal, not allclose).
"""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from igldt.checkpoint import load_checkpoint, save_checkpoint, teachers_payload
from igldt.data.demo import DEMO_CLASSES
from igldt.models import build_segmenter
from igldt.train.logger import read_metrics

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
ITERS, EVERY = 16, 4


def train_cmd(root: Path, teachers: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "igldt", "train", "--stage", "student", "--preset", "demo", "--device", "cpu",
            "--teachers", str(teachers), "--out", str(out), "--iters", str(ITERS), "--batch", "2", "--imgsz", "32",
            "--seed", "3", "--workers", "0", "-o", f"data.root={root}", "-o", "data.count=4",
            "-o", "data.fraction=null", "-o", f"train.save_every={EVERY}", "-o", "train.save_every_s=0",
            "-o", f"train.val_every={ITERS}", "-o", "train.log_every=1", "-o", "method.grid=4"]


def start(cmd: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.Popen(cmd, env=env, cwd=log.parent, stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def finish(proc: subprocess.Popen, log: Path, timeout: float = 240) -> None:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        pytest.fail(f"training did not finish in {timeout} s:\n{log.read_text()[-2000:]}")
    assert proc.returncode == 0, log.read_text()[-3000:]


def models(path: Path) -> dict:
    ckpt = load_checkpoint(path, kinds=("resume",))
    assert ckpt["iteration"] == ITERS
    return ckpt["models"]


def test_sigkill_between_saves_then_resume_gives_the_same_weights(tmp_path, tiny_demo):
    root = tiny_demo  # the session's: 4 labelled, 4 unlabelled, 2 val images at 32x48
    torch.manual_seed(0)
    teachers = tmp_path / "teachers.pt"
    save_checkpoint(teachers, teachers_payload(build_segmenter("resnet18", len(DEMO_CLASSES)),
                                               build_segmenter("resnet18", len(DEMO_CLASSES)),
                                               {"classes": DEMO_CLASSES, "palette": None}))

    straight = start(train_cmd(root, teachers, tmp_path / "straight"), tmp_path / "straight.log")
    killed_dir, log = tmp_path / "killed", tmp_path / "killed.log"
    victim = start(train_cmd(root, teachers, killed_dir), log)
    last = killed_dir / "last.pt"
    deadline = time.monotonic() + 240
    while not last.exists():  # the first periodic checkpoint (iteration EVERY): kill right after it
        assert victim.poll() is None, f"training ended before its first checkpoint:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, "no periodic checkpoint within 240 s"
        time.sleep(0.005)
    victim.send_signal(signal.SIGKILL)  # no handler can run: only what is on disk survives
    victim.wait()
    assert victim.returncode == -signal.SIGKILL
    saved = load_checkpoint(last, kinds=("resume",))["iteration"]
    assert 0 < saved < ITERS and saved % EVERY == 0  # killed mid-run, between two saves (or during one)
    assert not (killed_dir / "best.pt").exists()  # no validation had run: only the periodic save kept this
    (killed_dir / ".last.pt.leftover.tmp").write_bytes(b"half a checkpoint")  # as a kill during a write leaves

    resumed = start([sys.executable, "-m", "igldt", "train", "--stage", "student", "--resume", str(last),
                     "--device", "cpu"], tmp_path / "resumed.log")
    finish(resumed, tmp_path / "resumed.log")
    finish(straight, tmp_path / "straight.log")

    a, b = models(tmp_path / "straight" / "last.pt"), models(last)
    assert set(a) == set(b) == {"student"}
    for k, v in a["student"].items():
        assert torch.equal(v, b["student"][k]), k
    assert not list(killed_dir.glob(".last.pt.*.tmp"))
    log_a = [(r["iteration"], r["loss"], r["state"]) for r in read_metrics(tmp_path / "straight" / "metrics.jsonl")
             if "loss" in r]
    log_b = [(r["iteration"], r["loss"], r["state"]) for r in read_metrics(killed_dir / "metrics.jsonl") if "loss" in r]
    assert log_b == log_a and [r[0] for r in log_b] == list(range(1, ITERS + 1))  # no gap, no repeat
