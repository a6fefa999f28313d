"""UniMatch's losses (U1-U3), OHEM and median-frequency CE against hand computations on tiny tensors;
the UniMatch stage and teacher recipe through the real loop on the tiny demo data."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from igldt import losses as L
from igldt.class_balance import median_frequency_weights
from igldt.config import load_config
from igldt.constants import IGNORE_INDEX


def _ce(logits: list[float], label: int) -> float:
    return -logits[label] + math.log(sum(math.exp(v) for v in logits))


def test_confident_ce_sums_confident_pixels_and_divides_by_valid_ones():
    """Three pixels: confident and valid (counted), unconfident (left out of the sum), padding (left out
    of the sum and of the count): the mean is over the 2 valid pixels, not the 1 confident one."""
    logits = torch.tensor([[[[2.0, 0.0, 1.0]], [[0.0, 1.0, 3.0]]]])  # 1 x 2 classes x 1 x 3
    labels = torch.tensor([[[0, 1, 1]]])
    conf = torch.tensor([[[0.97, 0.60, 0.99]]])
    valid = torch.tensor([[[True, True, False]]])
    got = L.confident_ce(logits, labels, conf, valid, threshold=0.95)
    assert got.item() == pytest.approx(_ce([2.0, 0.0], 0) / 2, rel=1e-6)
    assert L.confident_ce(logits, labels, conf, valid, threshold=0.5).item() == pytest.approx(
        (_ce([2.0, 0.0], 0) + _ce([0.0, 1.0], 1)) / 2, rel=1e-6)


def test_weak_targets_and_their_cutmix():
    logits = torch.tensor([[[[1.0, 0.0]], [[0.0, 3.0]]], [[[5.0, 0.0]], [[0.0, 0.0]]]])  # 2 x 2 x 1 x 2
    labels, conf, valid = L.weak_targets(logits, torch.tensor([[[True, False]], [[True, True]]]))
    assert labels.tolist() == [[[0, 1]], [[0, 0]]]
    assert conf[0, 0, 1].item() == pytest.approx(math.exp(3) / (1 + math.exp(3)))
    box = torch.tensor([[[False, True]], [[False, False]]])  # sample 0's second pixel comes from sample 1
    ml, mc, mv = L.mixed_targets((labels, conf, valid), box)
    assert ml.tolist() == [[[0, 0]], [[0, 0]]] and mv.tolist() == [[[True, True]], [[True, True]]]
    assert mc[0, 0, 1] == conf[1, 0, 1] and mc[1, 0, 1] == conf[1, 0, 1]


def test_unimatch_weights_the_terms_as_the_reference():
    """(L_x + 0.25 L_s1 + 0.25 L_s2 + 0.5 L_fp) / 2."""
    loss, terms = L.unimatch_loss(torch.tensor(1.0), torch.tensor(2.0), torch.tensor(4.0), torch.tensor(8.0))
    assert loss.item() == pytest.approx((1 + 0.5 + 1 + 4) / 2)
    assert terms["u_s"].item() == pytest.approx(3.0) and terms["u_fp"].item() == pytest.approx(8.0)


def _opts(**kw):
    return L.LossConfig.from_cfg(load_config(None, [f"method.{k}={v}" for k, v in kw.items()]).method)


def test_unimatch_losses_from_two_forwards_by_hand():
    """A batch of 1 labelled + 2 unlabelled 1x2 images, logits given: each term recomputed by hand."""
    torch.manual_seed(0)
    n_cls = 3
    out = {"logits": torch.randn(3, n_cls, 1, 2) * 3, "logits_fp": torch.randn(3, n_cls, 1, 2)}
    logits_s = torch.randn(4, n_cls, 1, 2)
    box = torch.tensor([[[True, False]], [[False, False]]])
    box2 = torch.zeros(2, 1, 2, dtype=torch.bool)
    valid = torch.tensor([[[True, True]], [[True, False]]])
    batch_l = {"image": torch.zeros(1, 3, 1, 2), "mask": torch.tensor([[[1, IGNORE_INDEX]]])}
    batch_u = {"valid": valid, "box": box, "box2": box2}
    for t in (0.0, 0.6, 1.0):
        loss, terms = L.unimatch_losses(out, logits_s, batch_l, batch_u, _opts(unimatch_threshold=t))
        p = out["logits"][1:].softmax(1)
        conf, lab = p.max(1)

        def term(logits, lab, conf, valid):
            total = sum(_ce(logits[i, :, 0, j].tolist(), int(lab[i, 0, j]))
                        for i in range(2) for j in range(2) if valid[i, 0, j] and conf[i, 0, j] >= t)
            return total / int(valid.sum())

        mix = lambda x: torch.where(box, x.roll(1, 0), x)  # noqa: E731
        s1 = term(logits_s[:2], mix(lab), mix(conf), mix(valid))
        s2 = term(logits_s[2:], lab, conf, valid)
        fp = term(out["logits_fp"][1:], lab, conf, valid)
        sup = _ce(out["logits"][0, :, 0, 0].tolist(), 1)
        assert loss.item() == pytest.approx((sup + 0.25 * s1 + 0.25 * s2 + 0.5 * fp) / 2, rel=1e-5), t
        assert terms["mask"].item() == pytest.approx(float(((conf >= t) & valid).sum()) / 3)
    assert terms["u_s"].item() == 0.0 and terms["u_fp"].item() == 0.0  # t = 1.0: no pixel that sure


def test_ohem_keeps_the_hard_pixels_and_at_least_min_kept():
    """Four valid pixels whose true-class probabilities are 0.9, 0.5, 0.8, 0.3 (and one void):
    at threshold 0.7 the two below it; with min_kept 3 the three hardest."""
    p_true = [0.9, 0.5, 0.8, 0.3]
    # two classes: logit of the true class log(p / (1 - p)), the other 0
    logits = torch.tensor([[[math.log(p / (1 - p)) for p in p_true] + [0.0], [0.0] * 5]]).view(1, 2, 1, 5)
    target = torch.tensor([[[0, 0, 0, 0, IGNORE_INDEX]]])
    ce = [-math.log(p) for p in p_true]
    assert L.ohem_ce(logits, target, 0.7, min_kept=1).item() == pytest.approx((ce[1] + ce[3]) / 2, rel=1e-5)
    assert L.ohem_ce(logits, target, 0.7, min_kept=3).item() == pytest.approx((ce[1] + ce[2] + ce[3]) / 3, rel=1e-5)
    assert L.ohem_ce(logits, target, 0.7, min_kept=4).item() == pytest.approx(sum(ce) / 4, rel=1e-5)  # all
    assert L.supervised_loss(logits, target, _opts(sup_loss="ohem", ohem_min_kept=1)).item() == pytest.approx(
        (ce[1] + ce[3]) / 2, rel=1e-5)


def test_median_frequency_weights_by_hand():
    """Class 0: 6 pixels over the 8 of the two images holding it; class 1: 1 of the 4 of the one image
    holding it; class 2: 1 of 4; class 3 absent. f = (0.75, 0.25, 0.25), median 0.25."""
    masks = [np.array([[0, 0], [0, 1]]), np.array([[0, 0], [2, IGNORE_INDEX]])]
    # image 2 holds 3 labelled pixels (void left out): class 0 over 4 + 3 = 7 pixels
    w = median_frequency_weights(masks, 4)
    f = [5 / 7, 1 / 4, 1 / 3]
    med = sorted(f)[1]
    assert w[:3].tolist() == pytest.approx([med / v for v in f], rel=1e-6)
    assert w[3].item() == pytest.approx(max(med / v for v in f), rel=1e-6)
    logits = torch.randn(2, 4, 2, 2)
    target = torch.from_numpy(np.stack(masks)).long()
    got = L.supervised_loss(logits, target, _opts(sup_loss="median_freq"), w)
    ce = torch.nn.functional.cross_entropy(logits, target, weight=w, ignore_index=IGNORE_INDEX)
    assert got.item() == pytest.approx(ce.item(), rel=1e-6)  # torch's weighted mean is the same recipe
    with pytest.raises(ValueError, match="class weights"):
        L.supervised_loss(logits, target, _opts(sup_loss="median_freq"))


def test_student_pseudo_label_terms_as_pseudo_loss_chooses():
    """(7)/(12) with `method.pseudo_loss`: the teacher's argmax labels (0, 1, 1, and a padding pixel
    left out), then plain CE, median-frequency weighted CE, or OHEM over the student's hard pixels."""
    teacher = {"logits": torch.tensor([[[[4.0, 0.0, 0.0, 5.0]], [[0.0, 3.0, 2.0, 0.0]]]])}  # 1 x 2 x 1 x 4
    p_true = [0.9, 0.4, 0.6]  # the student's probability of each valid pixel's pseudo-label
    student = torch.tensor([[[[math.log(0.9 / 0.1), math.log(0.6 / 0.4), math.log(0.4 / 0.6), 0.0]],
                             [[0.0, 0.0, 0.0, 0.0]]]])
    valid = torch.tensor([[[True, True, True, False]]])
    ce = [-math.log(p) for p in p_true]
    w = torch.tensor([0.5, 2.0])
    got = {k: L.student_pseudo_ce(student, teacher, _opts(pseudo_loss=k, ohem_min_kept=1), valid=valid,
                                  class_weight=w).item() for k in ("ce", "median_freq", "ohem")}
    assert got["ce"] == pytest.approx(sum(ce) / 3, rel=1e-5)
    assert got["median_freq"] == pytest.approx((0.5 * ce[0] + 2 * ce[1] + 2 * ce[2]) / 4.5, rel=1e-5)
    assert got["ohem"] == pytest.approx((ce[1] + ce[2]) / 2, rel=1e-5)  # 0.4 and 0.6 are below 0.7
    with pytest.raises(ValueError, match="class weights"):
        L.student_pseudo_ce(student, teacher, _opts(pseudo_loss="median_freq"), valid=valid)
    with pytest.raises(ValueError, match="pseudo_targets=hard"):
        _opts(pseudo_loss="ohem", pseudo_targets="soft")


def test_feature_perturbed_decode_leaves_the_clean_prediction():
    from igldt.models import build_segmenter

    torch.manual_seed(0)
    m = build_segmenter("resnet18", 3, 16).eval()
    x = torch.randn(2, 3, 40, 56)
    with torch.no_grad():
        clean, both = m(x), m(x, fp_dropout=0.5)
    assert torch.allclose(clean["logits"], both["logits"], atol=1e-5) and "logits_fp" not in clean
    assert both["logits_fp"].shape == clean["logits"].shape and not torch.allclose(both["logits_fp"], clean["logits"])


def test_unlabelled_set_gives_two_strong_views_and_two_boxes(tiny_demo):
    from igldt.data.loaders import build_train_loaders
    from igldt.train.stages import STAGES

    cfg = load_config("demo", [f"data.root={tiny_demo}", "data.crop=[32,48]", "data.workers=0", "train.batch_size=2"])
    assert STAGES["unimatch"].views(cfg) == (2, 2) and STAGES["supervised"].views(cfg) == (0, 0)
    _, unl = build_train_loaders(cfg, views=(2, 2))
    batch = next(iter(unl))
    assert {"image", "valid", "image_s", "image_s2", "box", "box2"} <= set(batch)
    assert not torch.equal(batch["image_s"], batch["image_s2"])  # two draws of the perturbation


@pytest.mark.parametrize("stage, extra", [("unimatch", []), ("teachers", ["method.teacher_recipe=unimatch"]),
                                          ("supervised", ["method.sup_loss=median_freq"])])
def test_stages_train_through_the_loop(tiny_demo, tmp_path, stage, extra):
    from igldt.train.logger import read_metrics
    from igldt.train.loop import train

    cfg = load_config("demo", [f"data.root={tiny_demo}", "data.crop=[32,48]", "data.workers=0", "train.batch_size=2",
                               "train.iters=3", "train.val_every=3", "model.student.pretrained=false",
                               "model.global_teacher.pretrained=false", "model.local_teacher.pretrained=false",
                               "model.student.weights=null", "model.global_teacher.weights=null",
                               "model.local_teacher.weights=null", *extra], stage=stage)
    r = train(cfg, stage, tmp_path / stage, device="cpu")
    rec = read_metrics(tmp_path / stage / "metrics.jsonl")[0]
    assert r.finished and r.best is not None and np.isfinite(rec["loss"])
    if stage == "unimatch":
        assert {"sup", "u_s", "u_fp", "mask"} <= set(rec)
    if stage == "teachers":
        assert {"u_s_g", "u_fp_r", "mask_g"} <= set(rec) and "cps" not in rec


def test_cps_threshold_counts_confident_cross_labels_over_all_valid_pixels():
    """method.cps_threshold: each teacher's cross CE is U1 against the other's confident argmax."""
    torch.manual_seed(1)
    g_l, r_l = torch.randn(1, 3, 2, 2), torch.randn(1, 3, 2, 2)
    g_u, r_u = torch.randn(2, 3, 2, 2) * 3, torch.randn(2, 3, 2, 2) * 3
    target = torch.zeros(1, 2, 2, dtype=torch.long)
    valid = torch.ones(2, 2, 2, dtype=torch.bool)
    valid[1, 1] = False
    loss, terms = L.cps_loss(g_l, r_l, target, g_u, r_u, 1.5, valid, threshold=0.8)

    def cross(student, partner):
        conf, lab = partner.softmax(1).max(1)
        total = sum(_ce(student[i, :, y, x].tolist(), int(lab[i, y, x])) for i in range(2) for y in range(2)
                    for x in range(2) if valid[i, y, x] and conf[i, y, x] >= 0.8)
        return total / int(valid.sum())

    expected = cross(g_u, r_u) + cross(r_u, g_u)
    assert terms["cps"].item() == pytest.approx(expected, rel=1e-5)
    sup = L.supervised_ce(g_l, target) + L.supervised_ce(r_l, target)
    assert loss.item() == pytest.approx(sup.item() + 1.5 * expected, rel=1e-5)
    with pytest.raises(ValueError, match="do not combine"):
        L.cps_loss(g_l, r_l, target, g_u, r_u, 1.5, valid, class_weight=torch.ones(3), threshold=0.8)


def test_keep_validated_keeps_every_validated_model(tiny_demo, tmp_path):
    from igldt.checkpoint import load_model
    from igldt.train.loop import train

    cfg = load_config("demo", [f"data.root={tiny_demo}", "data.crop=[32,48]", "data.workers=0", "train.batch_size=2",
                               "train.iters=4", "train.val_every=2", "train.keep_validated=true",
                               "model.student.pretrained=false", "model.student.weights=null"])
    train(cfg, "supervised", tmp_path / "run", device="cpu")
    kept = sorted(p.name for p in (tmp_path / "run").glob("val_*.pt"))
    assert kept == ["val_000002.pt", "val_000004.pt"]
    _, meta = load_model(tmp_path / "run" / "val_000002.pt")
    assert meta["iteration"] == 2
