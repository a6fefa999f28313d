"""The training loop with tiny stand-in models and data: resume equivalence (after a real SIGINT),
swap parity across a resume, frozen teachers, non-finite losses, run-folder safety, periodic
resumable checkpoints (the SIGKILL test is tests/train/test_kill.py)."""
import os
import signal

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from igldt.checkpoint import load_checkpoint
from igldt.config import load_config
from igldt.train.logger import read_metrics
from igldt.train.loop import NonFiniteLossError, RunDirError, fit, prepare_run_dir
from igldt.train.stages import StudentStage, SupervisedStage, TeachersStage

N_CLASSES, H, W = 3, 16, 16


class Tiny(nn.Module):
    """{"logits", "features"} like DeepLabV3+: a stride-4 'backbone', dropout (so the RNG matters), a head."""

    def __init__(self, seed: int, width: int = 8, norm: str = "bn", dropout: float = 0.2):
        super().__init__()
        torch.manual_seed(seed)
        normal = nn.BatchNorm2d(width) if norm == "bn" else nn.GroupNorm(2, width)
        self.backbone = nn.Sequential(nn.Conv2d(3, width, 3, stride=4, padding=1), normal, nn.ReLU())
        self.drop = nn.Dropout2d(dropout)
        self.head = nn.Conv2d(width, N_CLASSES, 1)
        self.calls = 0
        self.on_forward = None  # test hook: called with the call count on training forwards

    def forward(self, x):
        if self.training:
            self.calls += 1
            if self.on_forward:
                self.on_forward(self)
        f = self.backbone(x)
        logits = F.interpolate(self.head(self.drop(f)), size=x.shape[-2:], mode="bilinear", align_corners=False)
        return {"logits": logits, "features": f}


class Synthetic(Dataset):
    """Images whose class is the brightest channel (learnable), a corner of ignore pixels."""

    def __init__(self, n: int, seed: int, labelled: bool):
        self.n, self.seed, self.labelled = n, seed, labelled

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(self.seed * 1000 + i)
        image = torch.randn(3, H, W, generator=g)
        if not self.labelled:
            return {"image": image}
        mask = image.argmax(0)
        mask[:2, :2] = 255
        return {"image": image, "mask": mask}


def loaders(batch=2, n_l=4, n_u=8):
    # shuffle=True: the order comes from the global torch RNG when each epoch's iterator starts,
    # which is what the stream must reproduce after a resume.
    return (DataLoader(Synthetic(n_l, 1, True), batch_size=batch, shuffle=True, drop_last=True),
            DataLoader(Synthetic(n_u, 2, False), batch_size=batch, shuffle=True, drop_last=True))


def config(**train):
    base = {"iters": 6, "log_every": 1, "val_every": 0, "amp": "off", "channels_last": False, "lr": 0.05,
            "head_lr_mult": 2.0, "max_nonfinite": 3}
    base.update(train)
    # CPS from the first iteration (no warm-up) so that a few steps exercise every term
    return load_config("demo", [f"train.{k}={v}" for k, v in base.items()] + ["method.grid=2", "method.cps_warmup=0"])


def student_stage(cfg, student_seed=0):
    return StudentStage(cfg, Tiny(student_seed), Tiny(10), Tiny(11))


def weights(stage):
    return {k: v.clone() for k, v in stage.modules()["student"].state_dict().items()}


def losses(run_dir):
    return [(r["iteration"], r["loss"], r.get("state")) for r in read_metrics(run_dir / "metrics.jsonl") if "loss" in r]


@pytest.mark.parametrize("accum", [1, 2])
def test_resume_after_sigint_matches_straight_run(tmp_path, accum):
    cfg = config(iters=6, accum=accum)
    straight = student_stage(cfg)
    r0 = fit(straight, loaders(), cfg, tmp_path / "a")
    assert r0.finished and r0.iteration == 6

    first = student_stage(cfg)
    k = 3  # Ctrl-C arrives during iteration k: the loop finishes it, saves last.pt, returns

    def interrupt(m):
        if m.calls == k * accum:
            os.kill(os.getpid(), signal.SIGINT)

    first.modules()["student"].on_forward = interrupt
    r1 = fit(first, loaders(), cfg, tmp_path / "b")
    assert r1.interrupted and r1.iteration == k
    ckpt = load_checkpoint(tmp_path / "b" / "last.pt", kinds=("resume",))
    assert ckpt["iteration"] == k and ckpt["stage"] == "student"

    resumed = student_stage(cfg, student_seed=99)  # different init: everything must come from last.pt
    r2 = fit(resumed, loaders(), cfg, tmp_path / "b", resume=ckpt)
    assert r2.finished and r2.iteration == 6

    a, b = losses(tmp_path / "a"), losses(tmp_path / "b")
    assert [x[0] for x in b] == list(range(1, 7))  # the log continues, no duplicated iterations
    for (it_a, loss_a, _), (it_b, loss_b, _) in zip(a, b):
        assert it_a == it_b and loss_a == pytest.approx(loss_b, rel=1e-6, abs=1e-7)
    # swap parity (11) by the global iteration, also after the resume
    assert [x[2] for x in b] == [1.0, 2.0, 1.0, 2.0, 1.0, 2.0]
    wa, wb = weights(straight), weights(resumed)
    for name in wa:
        assert torch.allclose(wa[name].float(), wb[name].float(), rtol=1e-6, atol=1e-7), name


def test_teachers_frozen_in_student_stage(tmp_path):
    cfg = config(iters=3)
    stage = student_stage(cfg)
    teachers = [stage.frozen["global"].model, stage.frozen["local"].model]
    before = [{k: v.clone() for k, v in t.state_dict().items()} for t in teachers]
    seen_modes = []
    teachers[0].forward_orig = teachers[0].forward

    def spy(x):
        seen_modes.append((teachers[0].training, torch.is_grad_enabled()))
        return teachers[0].forward_orig(x)

    teachers[0].forward = spy
    stage.train()  # the loop's .train() must not switch the teachers to training mode
    assert not any(t.training for t in teachers)
    s0 = weights(stage)
    fit(stage, loaders(), cfg, tmp_path / "s")
    assert seen_modes and all(mode == (False, False) for mode in seen_modes)
    for t, b in zip(teachers, before):
        assert all(not p.requires_grad and p.grad is None for p in t.parameters())
        for k, v in t.state_dict().items():  # weights and BatchNorm running statistics unchanged
            assert torch.equal(v, b[k]), k
    assert any(not torch.equal(v, s0[k]) for k, v in weights(stage).items())  # the student did learn


def test_other_stages_run_and_learn(tmp_path):
    cfg = config(iters=4)
    sup = SupervisedStage(cfg, Tiny(0))
    r = fit(sup, loaders(), cfg, tmp_path / "sup")
    assert r.finished and {"sup", "loss"} <= set(read_metrics(tmp_path / "sup" / "metrics.jsonl")[0])
    tea = TeachersStage(cfg, Tiny(1), Tiny(2))
    g0 = {k: v.clone() for k, v in tea.modules()["teachers"].state_dict().items()}
    r = fit(tea, loaders(), cfg, tmp_path / "tea")
    rec = read_metrics(tmp_path / "tea" / "metrics.jsonl")[0]
    assert r.finished and {"sup_g", "sup_r", "cps"} <= set(rec)
    changed = {k.split(".")[0] for k, v in tea.modules()["teachers"].state_dict().items() if not torch.equal(v, g0[k])}
    assert changed == {"global_teacher", "local_teacher"}  # both teachers trained jointly
    assert {g["name"] for g in tea.param_groups()} == {"global/backbone", "global/head", "local/backbone", "local/head"}


def test_head_lr_multiplier_and_poly_decay(tmp_path):
    cfg = config(iters=4, lr=0.1, head_lr_mult=10.0)
    stage = SupervisedStage(cfg, Tiny(0))
    fit(stage, loaders(), cfg, tmp_path / "p")
    lrs = [r["lr"] for r in read_metrics(tmp_path / "p" / "metrics.jsonl") if "lr" in r]
    assert lrs == pytest.approx([0.1 * (1 - i / 4) ** 0.9 for i in range(4)])
    names = {g["name"]: g["lr_mult"] for g in stage.param_groups()}
    assert names == {"student/backbone": 1.0, "student/head": 10.0}


def test_nonfinite_step_skipped_and_counted(tmp_path):
    cfg = config(iters=4)
    stage = SupervisedStage(cfg, Tiny(0))
    seen, saved = {}, {}

    def hook(m):
        # Iteration 2's forward runs with a NaN head bias (restored before iteration 3's forward).
        with torch.no_grad():
            if m.calls == 3:
                m.head.bias.copy_(saved["bias"])
            seen[m.calls] = {k: v.detach().clone() for k, v in m.named_parameters()}
            if m.calls == 2:
                saved["bias"] = m.head.bias.clone()
                m.head.bias.fill_(float("nan"))

    stage.modules()["student"].on_forward = hook
    r = fit(stage, loaders(), cfg, tmp_path / "n")
    assert r.finished and r.skipped == 1
    log = [x for x in read_metrics(tmp_path / "n" / "metrics.jsonl") if "skipped" in x]
    assert [x["skipped"] for x in log] == [0, 1, 1, 1]
    # no update on the skipped step: iteration 3 starts from the weights iteration 2 started from
    for k in seen[2]:
        assert torch.equal(seen[2][k], seen[3][k]), k
    assert not torch.equal(seen[1]["head.weight"], seen[2]["head.weight"])  # real steps do update
    assert all(torch.isfinite(v).all() for v in seen[4].values())


def test_nonfinite_limit_stops_with_message(tmp_path):
    cfg = config(iters=10, max_nonfinite=3)
    stage = SupervisedStage(cfg, Tiny(0))
    with torch.no_grad():
        stage.modules()["student"].head.bias.fill_(float("inf"))
    with pytest.raises(NonFiniteLossError, match=r"3 non-finite losses in a row.*iteration 3"):
        fit(stage, loaders(), cfg, tmp_path / "x")
    assert (tmp_path / "x" / "last.pt").is_file()


def test_run_dir_is_never_silently_reused(tmp_path):
    prepare_run_dir(tmp_path / "new", resuming=False, exist_ok=False)  # absent: fine
    (tmp_path / "old").mkdir()
    prepare_run_dir(tmp_path / "old", resuming=False, exist_ok=False)  # empty: fine
    (tmp_path / "old" / "last.pt").write_bytes(b"x")
    with pytest.raises(RunDirError, match="--resume"):
        prepare_run_dir(tmp_path / "old", resuming=False, exist_ok=False)
    prepare_run_dir(tmp_path / "old", resuming=True, exist_ok=False)
    prepare_run_dir(tmp_path / "old", resuming=False, exist_ok=True)


@pytest.mark.parametrize("every, seconds, expected", [
    (0, 0, [8]),  # only the end (no validation in these runs)
    (3, 0, [3, 6, 8]),
    (0, 25, [3, 6, 8]),  # 10 "seconds" an iteration: due once 25 have passed since the last save
    (2, 25, [2, 4, 6, 8]),  # the iteration saves reset the clock, so the time rule never fires
])
def test_periodic_resumable_checkpoints(tmp_path, monkeypatch, every, seconds, expected):
    import igldt.checkpoint
    import igldt.train.loop as loop
    now = [0.0]
    monkeypatch.setattr(loop, "clock", lambda: now[0])
    written = []
    real_save = igldt.checkpoint.save_checkpoint

    def spy(path, payload):
        if payload["kind"] == "resume":
            written.append(payload["iteration"])
        return real_save(path, payload)

    monkeypatch.setattr(igldt.checkpoint, "save_checkpoint", spy)
    cfg = config(iters=8, save_every=every, save_every_s=seconds)
    stage = SupervisedStage(cfg, Tiny(0))

    def tick(m):
        now[0] += 10.0

    stage.modules()["student"].on_forward = tick
    assert fit(stage, loaders(), cfg, tmp_path / "r").finished
    assert written == expected
    assert load_checkpoint(tmp_path / "r" / "last.pt")["iteration"] == 8


def test_negative_save_interval_is_refused(tmp_path):
    cfg = config(save_every=-1)
    with pytest.raises(ValueError, match="train.save_every=-1"):
        fit(SupervisedStage(cfg, Tiny(0)), loaders(), cfg, tmp_path / "x")


def test_resume_drops_a_log_line_torn_by_a_kill(tmp_path):
    cfg = config(iters=4, save_every=2)
    stage = SupervisedStage(cfg, Tiny(0))
    fit(stage, loaders(), cfg, tmp_path / "r")
    log = tmp_path / "r" / "metrics.jsonl"
    log.write_text(log.read_text() + '{"iteration": 5, "lo')  # a kill in the middle of a line
    assert [r["iteration"] for r in read_metrics(log)] == [1, 2, 3, 4]  # the torn line is skipped on read
    from igldt.train.loop import _truncate_log
    _truncate_log(log, 4)  # resuming from the save at iteration 4: only the torn line goes
    assert log.read_text().endswith("}\n") and [r["iteration"] for r in read_metrics(log)] == [1, 2, 3, 4]
    _truncate_log(log, 2)  # from the one at iteration 2: the lines after it go too
    assert [r["iteration"] for r in read_metrics(log)] == [1, 2]


def test_poly_schedule_with_linear_warmup():
    """train.warmup_iters: the rate climbs linearly to the poly curve over the first N updates, then follows it."""
    from igldt.train.optim import poly_factor

    assert poly_factor(0, 100, 0.9) == 1.0  # no warm-up: METHOD.md's plain poly
    assert poly_factor(0, 100, 0.9, warmup=10) == pytest.approx(0.1)
    assert poly_factor(4, 100, 0.9, warmup=10) == pytest.approx(0.5 * (1 - 4 / 100) ** 0.9)
    for it in (9, 10, 50, 99):
        assert poly_factor(it, 100, 0.9, warmup=10) == pytest.approx(poly_factor(it, 100, 0.9))
