"""The run's checkpoints for `fit` (loop.py): `last.pt` (kind "resume") and `best.pt`.

`restore` reads back what `Checkpointer.save_last` writes, so the resume format lives here in one
place. A resume needs, beside the models (loaded by the loop before DDP wraps them): optimiser
(momentum), schedule, AMP scaler, iteration (which also fixes the student's swap parity), best
score, history, skipped updates and, per rank, the RNG states, data positions, the log's running
window and the non-finite streak. With all of them the resumed run ends on the same weights, bit
for bit, as the uninterrupted one (tests/train/test_kill.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from igldt import checkpoint  # save_checkpoint read at each call: tests substitute it to watch the writes
from igldt.config import Config
from igldt.train import distributed as D
from igldt.train.logger import RunLogger
from igldt.train.stream import capture_rng, restore_rng
from igldt.train.training import Training

RESUME_FORMAT = "igldt/1"


@dataclass
class TrainState:
    """What `fit` counts as it goes, all of it in last.pt."""
    it: int = 0  # updates done; update t is counted from 1
    best: float | None = None  # the best validation score so far
    skipped: int = 0  # updates skipped for a non-finite loss
    consecutive: int = 0  # ... of them in a row (train.max_nonfinite)
    history: list = field(default_factory=list)  # validation records
    # term -> [sum, updates] since the last log line (glo/loc appear on alternate iterations)
    window: dict = field(default_factory=dict)


def restore(train: Training, resume: dict) -> TrainState:
    """Continue from a loaded last.pt: the optimiser, schedule and scaler states, the counters, and
    this rank's data positions and RNG states (rank 0's when the number of processes changed)."""
    train.optimizer.load_state_dict(resume["optimizer"])
    train.scheduler.load_state_dict(resume["scheduler"])
    train.amp.scaler.load_state_dict(resume["scaler"])
    ctx, ranks = train.ctx, resume["ranks"]
    mine = ranks[ctx.rank] if len(ranks) == ctx.world else ranks[0]
    if len(ranks) != ctx.world and ctx.is_main:
        print(f"warning: resuming a {len(ranks)}-process run on {ctx.world}: data order continues, "
              "but not bit for bit")
    state = TrainState(int(resume["iteration"]), resume["best"], int(resume["skipped"]),
                       consecutive=int(mine.get("consecutive", 0)), history=list(resume.get("history", [])),
                       window={k: list(v) for k, v in mine.get("window", {}).items()})  # the log's running means
    train.stream.restore(mine["stream"])  # re-opens the data iterators where they were
    restore_rng(mine["rng"])  # then the RNG exactly as at the checkpoint
    return state


def remove_stale_temp_files(out_dir: Path) -> None:
    """A kill during a checkpoint write leaves the atomic writer's temp file (`.last.pt.*.tmp`): drop them."""
    for name in ("last.pt", "best.pt"):
        for tmp in out_dir.glob(f".{name}.*.tmp"):
            tmp.unlink(missing_ok=True)


class Checkpointer:
    """Writes `out_dir`/last.pt and best.pt, always atomically (`save_checkpoint`), and keeps the
    validation record (`state.best`, `state.history`).

    Every method is called on every rank at the same point of the loop: last.pt gathers the ranks'
    states, the time rule is agreed on, and each write ends at a barrier. Rank 0 writes; `last` and
    `best` are the paths it has written (None elsewhere).
    """

    def __init__(self, out_dir: Path, train: Training, state: TrainState, cfg: Config, meta: dict | None, *,
                 every: int, every_s: float, clock: Callable[[], float]):
        self.out_dir, self.train, self.state, self.cfg, self.meta = out_dir, train, state, cfg, meta
        self.every, self.every_s, self.clock = every, every_s, clock  # train.save_every, save_every_s (0: off)
        self.last: Path | None = None
        self.best: Path | None = None
        self._saved_it, self._saved_time = None, clock()  # the last last.pt written

    def save_last(self) -> None:
        st, tr, ctx = self.state, self.train, self.train.ctx
        if self._saved_it == st.it:  # e.g. the end of a run that has just validated: already on disk
            return
        # Per rank: RNG states, data positions, the log's running window and the non-finite streak.
        mine = {"rng": capture_rng(), "stream": tr.stream.state(), "consecutive": st.consecutive,
                "window": {k: list(v) for k, v in st.window.items()}}
        ranks = D.gather_object(mine, ctx)
        if ctx.is_main:
            checkpoint.save_checkpoint(self.out_dir / "last.pt", {
                "format": RESUME_FORMAT, "kind": "resume", "stage": tr.stage.name, "iteration": st.it,
                "total": tr.total, "models": tr.stage.state_dict(), "optimizer": tr.optimizer.state_dict(),
                "scheduler": tr.scheduler.state_dict(), "scaler": tr.amp.scaler.state_dict(), "ranks": ranks,
                "best": st.best, "skipped": st.skipped, "history": st.history, "config": self.cfg.to_dict(),
                "teachers": getattr(tr.stage, "teachers_path", None)})
            self.last = self.out_dir / "last.pt"
        D.barrier(ctx)
        self._saved_it, self._saved_time = st.it, self.clock()

    def due(self) -> bool:
        """A periodic last.pt now? By iteration count, or by time on any rank (all ranks agree)."""
        if self.every and self.state.it % self.every == 0:
            return True
        return bool(self.every_s) and D.any_true(self.clock() - self._saved_time >= self.every_s, self.train.ctx)

    def save_best(self, score: float | None, name: str = "best.pt") -> None:
        """The stage's export payload as `name` (best.pt; `val_<iteration>.pt` with train.keep_validated)."""
        if self.train.ctx.is_main and self.meta is not None:
            payload = self.train.stage.export_payload({**self.meta, "miou": score, "iteration": self.state.it})
            checkpoint.save_checkpoint(self.out_dir / name, payload)
            if name == "best.pt":
                self.best = self.out_dir / name
        D.barrier(self.train.ctx)

    def validate(self, val: Callable, log: RunLogger) -> None:
        """Validate, log and record the scores; a new best score writes best.pt."""
        st = self.state
        scores = D.broadcast_object(self.train.stage.validate(val), self.train.ctx)  # every rank validates (its shard)
        st.history.append({"iteration": st.it, **scores})
        log.val(st.it, scores)
        if self.cfg.train.keep_validated:  # every validated model kept, for studies over the curve
            self.save_best(scores["score"], f"val_{st.it:06d}.pt")
        if st.best is None or scores["score"] > st.best:
            st.best = scores["score"]
            self.save_best(st.best)
