"""DDP: `torchrun --nproc_per_node 2` (gloo, CPU) trains the student stage on the same global batch
as one process (train.global_batch: each rank loads half), and its losses and weights match; its
validation is sharded over the ranks and scores exactly what one process scores on the same
weights; a time-based checkpoint that falls due on one rank only is written with both in step.

What makes the comparison meaningful: each rank sees half of every global batch (a sharded
sampler), so equality needs DDP's gradient all-reduce and the loop's loss all-reduce. The student
uses GroupNorm and no dropout, so its forward does not depend on how the batch is split (BatchNorm
statistics would differ per rank; SyncBatchNorm, the fix on GPUs, is CUDA-only in torch); the
frozen teachers use BatchNorm in eval mode, which is batch independent anyway. Every loss term is a
per-image mean with equal pixel counts per image, so the mean of the rank means is the global mean.
"""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # as a torchrun worker (a script) too: the stand-ins below come from tests.train
from tests.train.test_loop import N_CLASSES, Synthetic, Tiny, config, losses  # noqa: E402

import igldt.checkpoint  # noqa: E402
import igldt.train.loop as loop  # noqa: E402
from igldt.data.loaders import ShardedSampler, per_rank_batch  # noqa: E402
from igldt.train import distributed as D  # noqa: E402
from igldt.train.loop import fit, make_validator  # noqa: E402
from igldt.train.logger import read_metrics  # noqa: E402
from igldt.train.stages import StudentStage  # noqa: E402

ITERS, GLOBAL_BATCH = 3, 4


class ValSet:
    """Five labelled RGB images (an odd count: the shards differ in size), SegDataset's reading API."""
    classes = [f"c{i}" for i in range(N_CLASSES)]

    def __init__(self, indices=range(5)):
        self.indices = list(indices)

    def __len__(self):
        return len(self.indices)

    def subset(self, indices):
        return ValSet([self.indices[i] for i in indices])

    def load_image(self, i):
        return np.random.default_rng(self.indices[i]).integers(0, 256, (20, 24, 3), dtype=np.uint8)

    def load_mask(self, i):
        return self.load_image(i).argmax(-1).astype(np.uint8)


def student(state=None):
    model = Tiny(0, norm="gn", dropout=0.0)
    if state is not None:
        model.load_state_dict(state)
    return model


def run(out: Path, ctx: D.DistContext) -> StudentStage:
    cfg = config(iters=ITERS, batch_size=GLOBAL_BATCH, global_batch=True, save_every_s=500)
    per_rank = per_rank_batch(cfg.train, ctx.world)
    assert per_rank == GLOBAL_BATCH // ctx.world

    def loader(ds, seed):
        return DataLoader(ds, batch_size=per_rank, sampler=ShardedSampler(len(ds), ctx.rank, ctx.world, seed),
                          drop_last=True)

    stage = StudentStage(cfg, student(), Tiny(10), Tiny(11))
    fit(stage, (loader(Synthetic(8, 1, True), 0), loader(Synthetic(16, 2, False), 1)), cfg, out, ctx=ctx,
        val=make_validator(cfg, ValSet(), ctx))  # validates once, at the end
    return stage


def val_score(run_dir: Path) -> float:
    (record,) = [r for r in read_metrics(run_dir / "metrics.jsonl") if "val" in r]
    return record["val"]["miou_student"]


@pytest.mark.parametrize("failed, calls", [(False, ["barrier", "destroy"]), (True, ["destroy"])])
def test_teardown_waits_for_every_rank_after_a_clean_run_only(monkeypatch, failed, calls):
    """A rank leaving the group while a peer still works aborted at exit now and then; after a failure
    the peers may never reach a barrier, so none is awaited."""
    seen = []
    monkeypatch.setattr(D.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(D.dist, "barrier", lambda: seen.append("barrier"))
    monkeypatch.setattr(D.dist, "destroy_process_group", lambda: seen.append("destroy"))
    D.teardown(D.DistContext(0, 2, 0, torch.device("cpu"), initialised_here=True), failed=failed)
    assert seen == calls


@pytest.mark.slow
def test_ddp_two_processes_match_one(tmp_path):
    single = run(tmp_path / "single", D.DistContext())
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    # Own process group: on a timeout the launcher *and* its workers are killed, none left orphaned.
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             __file__, str(tmp_path / "ddp")],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _, stderr = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail("torchrun with 2 gloo workers did not finish in 240 s")
    assert proc.returncode == 0, stderr[-3000:]
    a, b = losses(tmp_path / "single"), losses(tmp_path / "ddp")
    assert len(a) == len(b) == ITERS  # rank 0 alone wrote the log
    for (it_a, loss_a, _), (it_b, loss_b, _) in zip(a, b):
        assert it_a == it_b and loss_b == pytest.approx(loss_a, rel=1e-5)
    ddp = torch.load(tmp_path / "ddp" / "student.pt")
    for k, v in single.modules()["student"].state_dict().items():
        assert torch.allclose(v, ddp[k], rtol=1e-4, atol=1e-6), k
    # The sharded validation's score is the whole set's, exactly: one process on the same weights.
    cfg = config(iters=ITERS)
    whole = make_validator(cfg, ValSet(), D.DistContext())(student(ddp).eval())
    shard0 = make_validator(cfg, ValSet(range(0, 5, 2)), D.DistContext())(student(ddp).eval())
    assert val_score(tmp_path / "ddp") == whole != shard0  # not rank 0's images alone
    assert val_score(tmp_path / "single") == pytest.approx(whole, abs=0.02)
    # Rank 1's clock said "save" after every step, rank 0's never: both saved, in step, each time.
    assert json.loads((tmp_path / "ddp" / "saves.json").read_text()) == list(range(1, ITERS + 1))


if __name__ == "__main__":  # one torchrun worker
    torch.set_num_threads(1)
    ctx = D.setup("cpu")
    assert ctx.world == 2, "launch with torchrun --nproc_per_node 2"
    saves, real_save = [], igldt.checkpoint.save_checkpoint
    if ctx.rank == 1:  # a clock that jumps 1000 s a reading: train.save_every_s=500 is due after every step
        ticks = iter(range(0, 10**9, 1000))
        loop.clock = lambda: float(next(ticks))
    else:  # rank 0's clock stands still, and it records the last.pt it writes
        loop.clock = lambda: 0.0

        def record(path, payload):
            if payload["kind"] == "resume":
                saves.append(payload["iteration"])
            return real_save(path, payload)

        igldt.checkpoint.save_checkpoint = record
    stage = run(Path(sys.argv[1]), ctx)
    if ctx.is_main:
        torch.save(stage.modules()["student"].state_dict(), Path(sys.argv[1]) / "student.pt")
        (Path(sys.argv[1]) / "saves.json").write_text(json.dumps(saves))
    del stage  # its DDP modules hold the process group: freed before the group is left, as in loop.train
    D.teardown(ctx)
