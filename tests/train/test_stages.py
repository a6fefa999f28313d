"""`igldt train` end to end with the real data layer and models on a tiny demo dataset:
supervised -> teachers -> student, the checkpoints each writes, resume, refusals."""
import shutil

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from igldt.checkpoint import load_checkpoint, load_model, load_teachers
from igldt.cli.main import cli
from igldt.config import load_config
from igldt.train.logger import read_metrics

pytestmark = pytest.mark.slow


def opts(root):
    return ["--preset", "demo", "--device", "cpu", "-o", f"data.root={root}", "-o", "data.crop=[32,32]",
            "-o", "data.count=4", "-o", "data.fraction=null", "-o", "train.batch_size=2", "-o", "train.iters=2",
            "-o", "train.val_every=2", "-o", "train.log_every=1", "-o", "method.grid=4"]


def invoke(*args):
    res = CliRunner().invoke(cli, ["train", *map(str, args)], catch_exceptions=False)
    return res.exit_code, res.output


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_demo):
    base, root = tmp_path_factory.mktemp("stages"), tiny_demo
    out = {}
    for stage in ("supervised", "teachers", "student"):
        extra = ["--teachers", base / "teachers" / "best.pt"] if stage == "student" else []
        code, text = invoke("--stage", stage, *opts(root), "--out", base / stage, *extra)
        assert code == 0, text
        out[stage] = (base / stage, text)
    return base, root, out


def test_each_stage_writes_export_ready_best_and_resumable_last(runs):
    base, _, out = runs
    sup, _ = load_model(base / "supervised" / "best.pt")
    assert sup.arch["backbone"] == "tf_efficientnet_lite0" and sup.arch["head"] == "separable"
    g, r, meta = load_teachers(base / "teachers" / "best.pt")
    roles = load_config("demo").model  # the networks the demo preset names, as built and saved
    assert g.arch["backbone"] == roles.global_teacher.backbone and g.arch["attention"] == 2
    assert r.arch["backbone"] == roles.local_teacher.backbone and r.arch["attention"] == 0
    assert len(meta["classes"]) == 7
    val = [r for r in read_metrics(base / "teachers" / "metrics.jsonl") if "val" in r][-1]["val"]
    assert {"miou_global", "miou_local", "miou_ensemble"} <= set(val)
    # each validation logs every model's per-class IoU, whose mean (over the classes present) is its mIoU
    assert set(val["class_iou"]) == {"global", "local", "ensemble"}
    for name, per_class in val["class_iou"].items():
        assert list(per_class) == list(meta["classes"])
        present = [v for v in per_class.values() if v is not None]
        assert abs(np.mean(present) - val[f"miou_{name}"]) < 1e-3
    student = load_checkpoint(base / "student" / "best.pt", kinds=("student",))
    assert {"arch", "state_dict", "classes", "palette", "mean", "std"} <= set(student)
    assert "teachers" not in student and "optimizer" not in student  # what export needs, nothing more
    for stage in out:
        last = load_checkpoint(base / stage / "last.pt", kinds=("resume",))
        assert last["iteration"] == 2 and last["stage"] == stage
        assert (base / stage / "metrics.png").is_file()
        assert any("val" in r for r in read_metrics(base / stage / "metrics.jsonl"))
    # the student run logs every term of (14), alternating glo / loc by iteration parity
    rec = [r for r in read_metrics(base / "student" / "metrics.jsonl") if "loss" in r]
    assert [r["state"] for r in rec] == [1.0, 2.0] and "glo" in rec[0] and "loc" in rec[1]
    assert "igldt train --stage student --teachers" in out["teachers"][1]
    assert "igldt export --weights" in out["student"][1]


def test_camvid_preset_trains_on_the_demo_models(runs, tmp_path):
    """camvid-cpu builds the demo's networks (one recipe): a tiny supervised run of it on tiny data."""
    from igldt.config import load_config
    assert load_config("camvid-cpu").model == load_config("demo").model
    _, root, _ = runs
    args = [a if a != "demo" else "camvid-cpu" for a in opts(root)] + ["-o", "data.dataset=demo",
                                                                          "-o", f"data.root={root}"]
    code, text = invoke("--stage", "supervised", *args, "--out", tmp_path / "sup")
    assert code == 0, text
    assert load_model(tmp_path / "sup" / "best.pt")[1]["mean"] == [0.5, 0.5, 0.5]  # EfficientNet-Lite's input scaling


def test_rerun_refuses_then_resume_extends(runs):
    base, root, _ = runs
    code, text = invoke("--stage", "supervised", *opts(root), "--out", base / "supervised")
    assert code == 2 and "--resume" in text and "already holds a run" in text
    run = base / "supervised-copy"
    shutil.copytree(base / "supervised", run)
    code, text = invoke("--stage", "supervised", "--resume", run / "last.pt", "-o", "train.iters=3", "--device", "cpu")
    assert code == 0, text
    assert load_checkpoint(run / "last.pt")["iteration"] == 3
    assert [r["iteration"] for r in read_metrics(run / "metrics.jsonl") if "loss" in r] == [1, 2, 3]


def test_student_needs_matching_teachers(runs, tmp_path):
    base, root, _ = runs
    code, text = invoke("--stage", "student", *opts(root), "--out", tmp_path / "s",
                        "--teachers", base / "supervised" / "best.pt")
    assert code == 2 and "teachers" in text


def test_training_refuses_bad_data(runs, tmp_path):
    _, root, _ = runs
    bad = tmp_path / "bad"
    shutil.copytree(root, bad)
    mask = next((bad / "masks" / "val").glob("*.png"))
    cv2.imwrite(str(mask), np.full((32, 48), 9, np.uint8))  # 9 is not one of the 7 demo classes
    code, text = invoke("--stage", "supervised", *opts(bad), "--out", tmp_path / "run")
    assert code != 0 and "bad_labels" in text and mask.name in text
    assert not (tmp_path / "run" / "last.pt").exists()


def test_cps_pair_is_symmetric():
    """Two identical networks in the teachers stage get identical losses, gradients and updates: a
    gap between the two teachers comes from their architectures or initialisations, not the code."""
    import torch
    from igldt.config import load_config
    from igldt.models import build_role
    from igldt.train.optim import build_optimizer, build_scheduler
    from igldt.train.stages import TeachersStage
    cfg = load_config("demo", ["model.teachers=dual-local", "model.local_teacher={backbone: resnet18}"])
    g, r = build_role(cfg, "global_teacher", 5), build_role(cfg, "local_teacher", 5)
    r.load_state_dict(g.state_dict())
    for m in [*g.modules(), *r.modules()]:
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0  # dropout draws differ between the two forwards by design
    stage = TeachersStage(cfg, g, r)
    stage.train()
    opt = build_optimizer(stage.param_groups(), cfg.train)
    sched = build_scheduler(opt, 4, 0.9)
    gen = torch.Generator().manual_seed(0)
    for t in (1, 2):
        bl = {"image": torch.randn(2, 3, 32, 48, generator=gen), "mask": torch.randint(0, 5, (2, 32, 48), generator=gen)}
        bu = {"image": torch.randn(2, 3, 32, 48, generator=gen)}
        opt.zero_grad()
        loss, terms = stage.step(bl, bu, t)
        loss.backward()
        assert float(terms["sup_g"]) == float(terms["sup_r"])
        opt.step()
        sched.step()
    for (k, a), b in zip(g.state_dict().items(), r.state_dict().values()):
        assert torch.equal(a, b), k


def test_each_validation_draws_figures_into_the_run_folder(runs):
    base, _, out = runs
    for stage in out:
        confusion = cv2.imread(str(base / stage / "confusion.png"))
        samples = cv2.imread(str(base / stage / "samples.png"))
        assert confusion is not None and samples is not None, stage
        assert samples.shape[0] > 2 * 32 * 320 // 48  # both validation images, a row each
        assert not list((base / stage).glob(".*.tmp"))  # written through a temp file, then renamed


def test_alignment_tracks_the_class_frequencies_and_resumes():
    """method.align: the student stage keeps running class frequencies of the labels and of each
    teacher, adds the aligned logits the pseudo-labels are taken from, and saves them in its state."""
    import torch
    from igldt.config import load_config
    from igldt.models import build_role
    from igldt.train.stages import StudentStage
    small = ["model.student={backbone: resnet18}", "model.global_teacher={backbone: resnet18}",
             "model.local_teacher={backbone: resnet18}", "method.grid=4"]
    cfg = load_config("demo", ["method.align=true", *small])
    stage = StudentStage(cfg, build_role(cfg, "student", 3), build_role(cfg, "global_teacher", 3),
                         build_role(cfg, "local_teacher", 3))
    stage.train()
    gen = torch.Generator().manual_seed(0)
    mask = torch.zeros(2, 32, 48, dtype=torch.long)
    mask[:, :8] = 2
    mask[:, -4:] = 255  # ignored pixels do not count
    bl = {"image": torch.randn(2, 3, 32, 48, generator=gen), "mask": mask}
    bu = {"image": torch.randn(2, 3, 32, 48, generator=gen)}
    loss, _ = stage.step(bl, bu, 1)
    assert torch.isfinite(loss)
    prior = stage.aligner.prior
    assert torch.allclose(prior, torch.tensor([20 / 28, 0.0, 8 / 28]))
    assert torch.allclose(stage.aligner.predicted.sum(1), torch.ones(2))
    state = stage.state_dict()
    other = StudentStage(cfg, build_role(cfg, "student", 3), build_role(cfg, "global_teacher", 3),
                         build_role(cfg, "local_teacher", 3))
    other.load_state_dict(state)
    assert torch.equal(other.aligner.prior, prior) and int(other.aligner.updates) == 1
    plain = load_config("demo", small)
    with pytest.raises(ValueError, match="method.align differs"):
        StudentStage(plain, build_role(plain, "student", 3), build_role(plain, "global_teacher", 3),
                     build_role(plain, "local_teacher", 3)).load_state_dict(state)


def test_student_weighs_its_pseudo_labels_with_the_label_weights():
    """method.pseudo_loss=median_freq: the student stage hands the labelled set's weights to (7) and
    (12) (a different loss from plain CE on the same batch), and refuses to run without them."""
    import torch
    from igldt.config import load_config
    from igldt.models import build_role
    from igldt.train.stages import StudentStage
    small = ["model.student={backbone: resnet18}", "model.global_teacher={backbone: resnet18}",
             "model.local_teacher={backbone: resnet18}", "method.grid=4"]
    gen = torch.Generator().manual_seed(0)
    bl = {"image": torch.randn(2, 3, 32, 48, generator=gen), "mask": torch.randint(0, 3, (2, 32, 48), generator=gen)}
    bu = {"image": torch.randn(2, 3, 32, 48, generator=gen)}
    losses = {}
    for name, weight in (("ce", None), ("median_freq", torch.tensor([0.2, 1.0, 5.0]))):
        cfg = load_config("demo", [f"method.pseudo_loss={name}", *small])
        torch.manual_seed(0)
        stage = StudentStage(cfg, build_role(cfg, "student", 3), build_role(cfg, "global_teacher", 3),
                             build_role(cfg, "local_teacher", 3), class_weight=weight)
        stage.train()
        _, terms = stage.step(bl, bu, 1)
        losses[name] = (terms["sup"].item(), terms["pl_u"].item())
    assert losses["ce"][0] == pytest.approx(losses["median_freq"][0])  # (6) stays plain CE
    assert losses["ce"][1] != pytest.approx(losses["median_freq"][1])
    with pytest.raises(ValueError, match="class weights"):
        stage.class_weight = None
        stage.step(bl, bu, 1)


def test_class_balanced_cps_counts_labels_from_the_start_and_resumes():
    """method.cps_class_power: the teachers stage keeps the labelled class frequency from its first
    (warm-up) step, weighs the cross CE by it once CPS starts, and saves it for a resume."""
    import torch
    from igldt.models import build_role
    from igldt.train.stages import CLASS_FREQ_KEY, TeachersStage
    small = ["model.teachers=dual-local", "model.local_teacher={backbone: resnet18}", "method.cps_warmup=1"]

    def stage(power, *more):
        cfg = load_config("demo", [*small, f"method.cps_class_power={power}", *more])
        torch.manual_seed(0)
        s = TeachersStage(cfg, build_role(cfg, "global_teacher", 3), build_role(cfg, "local_teacher", 3))
        s.train()
        return s
    mask = torch.zeros(2, 32, 48, dtype=torch.long)
    mask[:, :8] = 2
    mask[:, -4:] = 255
    gen = torch.Generator().manual_seed(0)
    bl = {"image": torch.randn(2, 3, 32, 48, generator=gen), "mask": mask}
    bu = {"image": torch.randn(2, 3, 32, 48, generator=gen)}
    weighted, plain = stage(0.5), stage("null")
    for s in (weighted, plain):
        s.step(bl, bu, 1)  # warm-up: labels only, the frequency starts counting
    assert torch.allclose(weighted.class_freq, torch.tensor([20 / 28, 0.0, 8 / 28]))
    assert CLASS_FREQ_KEY not in plain.state_dict()
    torch.manual_seed(1)  # the same dropout draws in both
    _, tw = weighted.step(bl, bu, 2)
    torch.manual_seed(1)
    _, tp = plain.step(bl, bu, 2)
    assert float(tw["sup_g"]) == pytest.approx(float(tp["sup_g"])) and float(tw["cps"]) != pytest.approx(float(tp["cps"]))
    state = weighted.state_dict()
    other = stage(0.5)
    other.load_state_dict(state)
    assert torch.equal(other.class_freq, weighted.class_freq)
    # method.cps_class_ratio: the cross pseudo-labels' frequency from CPS's first step on, also resumed
    ratio = stage("0.5", "method.cps_class_ratio=true")
    ratio.step(bl, bu, 1)
    assert ratio.pseudo_freq is None
    _, tr = ratio.step(bl, bu, 2)
    assert ratio.pseudo_freq.sum().item() == pytest.approx(1.0) and torch.isfinite(tr["cps"])
    again = stage("0.5", "method.cps_class_ratio=true")
    again.load_state_dict(ratio.state_dict())
    assert torch.equal(again.pseudo_freq, ratio.pseudo_freq)
