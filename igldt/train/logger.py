"""Run logging (rank 0 only): tqdm bar with every loss term, `metrics.jsonl`, TensorBoard when
installed, and a PNG of the loss terms and validation mIoU at the end."""
from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

from matplotlib.figure import Figure
from tqdm import tqdm


class RunLogger:
    def __init__(self, out_dir: Path, total: int, start: int = 0, enabled: bool = True, desc: str = "train"):
        self.out_dir = Path(out_dir)
        self.enabled = enabled
        self.path = self.out_dir / "metrics.jsonl"
        self.bar = None
        self.tb = None
        if not enabled:
            return
        # Append: a resumed run continues the same log (entries before the resume point stay valid).
        self._file = open(self.path, "a", buffering=1)
        # Not a terminal (nohup, CI, a pipe): a line every 30 s instead of a flood of carriage returns.
        interval = 0.1 if sys.stderr.isatty() else 30.0
        self.bar = tqdm(total=total, initial=start, desc=desc, dynamic_ncols=True, unit="it", mininterval=interval)
        try:  # optional dependency
            from torch.utils.tensorboard import SummaryWriter
            self.tb = SummaryWriter(str(self.out_dir / "tb"))
        except Exception:  # noqa: BLE001 - tensorboard absent or broken: the JSONL log is the record
            self.tb = None
        self._t0 = time.perf_counter()

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        self._file.write(json.dumps({**record, "time": round(time.perf_counter() - self._t0, 3)}) + "\n")

    def train(self, iteration: int, epoch: int, lr: float, terms: dict[str, float], skipped: int) -> None:
        if not self.enabled:
            return
        self.write({"iteration": iteration, "epoch": epoch, "lr": lr, **terms, "skipped": skipped})
        shown = {k: f"{v:.3f}" for k, v in terms.items() if k != "state"}
        self.bar.set_postfix(lr=f"{lr:.2e}", **shown, refresh=False)
        if self.tb:
            for k, v in terms.items():
                self.tb.add_scalar(f"loss/{k}", v, iteration)
            self.tb.add_scalar("lr", lr, iteration)

    def val(self, iteration: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        self.write({"iteration": iteration, "val": metrics})
        scalars = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}  # not class_iou
        self.bar.write(f"iter {iteration}: " + ", ".join(f"{k} {v:.4f}" for k, v in scalars.items()))
        if self.tb:
            for k, v in scalars.items():
                self.tb.add_scalar(f"val/{k}", v, iteration)

    def message(self, text: str) -> None:
        if self.enabled:
            (self.bar.write if self.bar else print)(text)

    def advance(self, n: int = 1) -> None:
        if self.enabled:
            self.bar.update(n)

    def close(self) -> None:
        if not self.enabled:
            return
        self.bar.close()
        self._file.close()
        if self.tb:
            self.tb.close()


def read_metrics(path: Path) -> list[dict]:
    path = Path(path)
    if not path.exists():
        return []
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    records = []
    for k, line in enumerate(lines):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if k < len(lines) - 1:
                raise
            # a process killed mid-write leaves a torn last line; a resume truncates the log past it
    return records


def plot_metrics(path: Path, out_png: Path) -> Path | None:
    """Loss terms against iterations and validation scores, from metrics.jsonl, as one PNG."""
    records = read_metrics(path)
    if not records:
        return None
    skip = {"iteration", "epoch", "lr", "time", "skipped", "state", "val"}
    train = [r for r in records if "val" not in r]
    val = [r for r in records if "val" in r]
    fig = Figure(figsize=(11, 4))  # not pyplot: no global backend or figure registry to touch
    ax1, ax2 = fig.subplots(1, 2)
    keys = sorted({k for r in train for k in r if k not in skip})
    for k in keys:
        pts = [(r["iteration"], r[k]) for r in train if k in r and math.isfinite(r[k])]
        if pts:
            ax1.plot(*zip(*pts), label=k, lw=1)
    ax1.set(xlabel="iteration", ylabel="loss", title="loss terms")
    if keys:
        ax1.legend(fontsize=7)
    vkeys = sorted({k for r in val for k, v in r["val"].items() if isinstance(v, (int, float))})
    for k in vkeys:
        pts = [(r["iteration"], r["val"][k]) for r in val if k in r["val"]]
        ax2.plot(*zip(*pts), marker="o", label=k)
    ax2.set(xlabel="iteration", ylabel="score", title="validation")
    if vkeys:
        ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    return Path(out_png)
