"""DDP: `torchrun --nproc_per_node 2` (gloo, CPU) trains the student stage on the same global batch
as one process, and its losses and weights match.

What makes the comparison meaningful: each rank sees half of every global batch (a sharded
sampler), so equality needs DDP's gradient all-reduce and the loop's loss all-reduce. The student
uses GroupNorm and no dropout, so its forward does not depend on how the batch is split (BatchNorm
statistics would differ per rank; SyncBatchNorm, the fix on GPUs, is CUDA-only in torch); the
frozen teachers use BatchNorm in eval mode, which is batch independent anyway. Every loss term is a
per-image mean with equal pixel counts per image, so the mean of the rank means is the global mean.
"""
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).parent))
from test_train_loop import Synthetic, Tiny, config, losses  # noqa: E402

from igldt.data.loaders import ShardedSampler  # noqa: E402
from igldt.train import distributed as D  # noqa: E402
from igldt.train.loop import fit  # noqa: E402
from igldt.train.stages import StudentStage  # noqa: E402

ITERS, GLOBAL_BATCH = 3, 4


def run(out: Path, ctx: D.DistContext) -> StudentStage:
    per_rank = GLOBAL_BATCH // ctx.world
    cfg = config(iters=ITERS, batch_size=per_rank)

    def loader(ds, seed):
        return DataLoader(ds, batch_size=per_rank, sampler=ShardedSampler(len(ds), ctx.rank, ctx.world, seed),
                          drop_last=True)

    stage = StudentStage(cfg, Tiny(0, norm="gn", dropout=0.0), Tiny(10), Tiny(11))
    fit(stage, (loader(Synthetic(8, 1, True), 0), loader(Synthetic(16, 2, False), 1)), cfg, out, ctx=ctx)
    return stage


@pytest.mark.slow
def test_ddp_two_processes_match_one(tmp_path):
    single = run(tmp_path / "single", D.DistContext())
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
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


if __name__ == "__main__":  # one torchrun worker
    torch.set_num_threads(1)
    ctx = D.setup("cpu")
    assert ctx.world == 2, "launch with torchrun --nproc_per_node 2"
    stage = run(Path(sys.argv[1]), ctx)
    if ctx.is_main:
        torch.save(stage.modules()["student"].state_dict(), Path(sys.argv[1]) / "student.pt")
    D.teardown(ctx)
