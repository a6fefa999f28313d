"""Every METHOD.md loss against a hand computation on tiny tensors (ignore pixels included)."""
import math
from dataclasses import replace

import pytest
import torch

from igldt import class_balance as CB
from igldt import losses as L
from igldt.config import config_from_dict, load_config

IGN = L.IGNORE_INDEX


def logsoftmax(v):
    m = max(v)
    lse = m + math.log(sum(math.exp(y - m) for y in v))
    return [x - lse for x in v]


def softmax(v):
    e = [math.exp(x) for x in v]
    return [x / sum(e) for x in e]


def test_supervised_ce_excludes_ignore_and_survives_all_ignored():
    # 3 classes, 1 image of 1x3 pixels; pixel 2 ignored
    px = [[2.0, 0.0, -1.0], [0.5, 0.5, 3.0], [9.0, -9.0, 0.0]]
    logits = torch.tensor(px).T.reshape(1, 3, 1, 3).requires_grad_()
    target = torch.tensor([[[0, 2, IGN]]])
    want = -(logsoftmax(px[0])[0] + logsoftmax(px[1])[2]) / 2
    assert L.supervised_ce(logits, target).item() == pytest.approx(want, rel=1e-6)
    allign = L.supervised_ce(logits, torch.full_like(target, IGN))
    assert allign.item() == 0.0
    allign.backward()  # still attached to the graph, finite gradient
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() == 0


def test_pseudo_label_ce_argmax_threshold_and_gt_ignore():
    s_px = [[1.0, 0.0], [0.0, 2.0], [0.3, 0.1]]
    t_px = [[0.0, 5.0], [0.1, 0.0], [4.0, 0.0]]  # argmax: 1, 0, 0; confidences: high, ~0.52, high
    s = torch.tensor(s_px).T.reshape(1, 2, 1, 3)
    t = torch.tensor(t_px).T.reshape(1, 2, 1, 3)
    ce = [-logsoftmax(s_px[0])[1], -logsoftmax(s_px[1])[0], -logsoftmax(s_px[2])[0]]
    assert L.pseudo_label_ce(s, t).item() == pytest.approx(sum(ce) / 3, rel=1e-6)
    # threshold 0.9 drops pixel 1 (teacher confidence softmax([0.1, 0]) = 0.525)
    assert L.pseudo_label_ce(s, t, threshold=0.9).item() == pytest.approx((ce[0] + ce[2]) / 2, rel=1e-6)
    # ground-truth ignore on a labelled image drops pixel 0 as well
    gt = torch.tensor([[[IGN, 1, 1]]])
    assert L.pseudo_label_ce(s, t, threshold=0.9, target=gt).item() == pytest.approx(ce[2], rel=1e-6)
    labels = L.pseudo_labels(t, 0.9, gt == IGN)
    assert labels.tolist() == [[[IGN, IGN, 0]]]


def test_soft_pseudo_targets_are_the_ce_against_the_teachers_softmax():
    s_px = [[1.0, 0.0], [0.0, 2.0], [0.3, 0.1]]
    t_px = [[0.0, 5.0], [0.1, 0.0], [4.0, 0.0]]
    s = torch.tensor(s_px).T.reshape(1, 2, 1, 3)
    t = torch.tensor(t_px).T.reshape(1, 2, 1, 3)
    ce = [-sum(p * q for p, q in zip(softmax(t_px[i]), logsoftmax(s_px[i]))) for i in range(3)]
    assert L.pseudo_label_ce(s, t, soft=True).item() == pytest.approx(sum(ce) / 3, rel=1e-6)
    # the threshold and the ground truth's ignore pixels drop pixels as for hard labels
    gt = torch.tensor([[[IGN, 1, 1]]])
    assert L.pseudo_label_ce(s, t, threshold=0.9, target=gt, soft=True).item() == pytest.approx(ce[2], rel=1e-6)
    # a confident teacher's softmax is its argmax: soft and hard agree
    assert L.pseudo_label_ce(s, t * 1000, soft=True).item() == pytest.approx(L.pseudo_label_ce(s, t).item(), rel=1e-5)
    with pytest.raises(ValueError, match="hard labels"):
        L.pseudo_label_ce(s, t, soft=True, class_weight=torch.ones(2))


def test_pseudo_targets_switch_reaches_both_pseudo_label_terms():
    s, su, ru = (_outs(i) for i in range(3))
    target = s["logits"].argmax(1)
    soft = L.LossConfig(grid=2, pseudo_targets="soft")
    _, hard_terms = L.total_loss(1, s, su, ru, target, s, su, ru, L.LossConfig(grid=2))
    _, soft_terms = L.total_loss(1, s, su, ru, target, s, su, ru, soft)
    want = sum(L.pseudo_label_ce(s["logits"], t["logits"], soft=True) for t in (su, ru))
    for key in ("pl_l", "pl_u"):
        assert soft_terms[key].item() == pytest.approx(want.item(), rel=1e-6)
        assert soft_terms[key].item() != pytest.approx(hard_terms[key].item(), rel=1e-3)
    method = load_config().method
    assert L.LossConfig.from_cfg(method).soft is False  # METHOD.md's hard labels by default
    assert L.LossConfig.from_cfg(replace(method, pseudo_targets="soft")).soft


def test_global_context_loss_by_hand_with_mask():
    s_px = [[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]  # 2 pixels, 3 classes
    t_px = [[0.0, 2.0, 0.0], [0.0, 0.0, 1.0]]
    s = torch.tensor(s_px).T.reshape(1, 3, 1, 2)
    t = torch.tensor(t_px).T.reshape(1, 3, 1, 2)
    ps = [softmax(v) for v in s_px]
    pt = [softmax(v) for v in t_px]
    ks = [(ps[0][c] + ps[1][c]) / 2 for c in range(3)]
    kt = [(pt[0][c] + pt[1][c]) / 2 for c in range(3)]
    want = sum(abs(a - b) for a, b in zip(ks, kt)) / 3
    assert L.global_context_loss(s, t).item() == pytest.approx(want, rel=1e-6)
    # only pixel 0 valid: K = that pixel's probabilities
    valid = torch.tensor([[[True, False]]])
    want_m = sum(abs(a - b) for a, b in zip(ps[0], pt[0])) / 3
    assert L.global_context_loss(s, t, valid).item() == pytest.approx(want_m, rel=1e-6)
    # batch mean: a second identical-to-teacher image halves the loss
    s2, t2 = torch.cat([s, t]), torch.cat([t, t])
    assert L.global_context_loss(s2, t2).item() == pytest.approx(want / 2, rel=1e-6)


def test_regional_correlation_and_local_loss_by_hand():
    # 2 channels, 2x4 map pooled to a 1x2 grid: left cell mean (1,0), right cell mean (1,1)
    f = torch.tensor([[[1.0, 1.0, 2.0, 0.0], [1.0, 1.0, 0.0, 2.0]],
                      [[0.0, 0.0, 0.0, 2.0], [0.0, 0.0, 2.0, 0.0]]]).unsqueeze(0)
    m = L.regional_correlation(f, (1, 2))
    c = 1 / math.sqrt(2)
    assert m.shape == (1, 2, 2)
    assert torch.allclose(m[0], torch.tensor([[1.0, c], [c, 1.0]]), atol=1e-6)
    # teacher with orthogonal cells: M_T = I -> mean((M_S - M_T)^2) = 2 c^2 / 4
    g = torch.tensor([[[1.0, 1.0, 0.0, 0.0]] * 2, [[0.0, 0.0, 1.0, 1.0]] * 2]).unsqueeze(0)
    assert L.local_regional_loss(f, g, grid=(1, 2)).item() == pytest.approx(2 * c * c / 4, rel=1e-6)
    assert L.local_regional_loss(f, f, grid=(1, 2)).item() == pytest.approx(0.0, abs=1e-7)


def test_discrepancy_sign_and_value():
    a = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)
    b = torch.tensor([0.0, 1.0, 0.0]).view(1, 3, 1, 1)
    same = torch.cat([a, a], dim=3)
    mixed = torch.cat([a, b], dim=3)
    # positions: cos 1 and cos 0 -> mean(1 + cos) = (2 + 1) / 2
    assert L.discrepancy_loss(same, mixed).item() == pytest.approx(1.5, rel=1e-6)
    assert L.discrepancy_loss(a, -a).item() == pytest.approx(0.0, abs=1e-7)
    # teacher at another resolution is resized to the student's map
    big = a.expand(1, 3, 4, 4)
    assert L.discrepancy_loss(a.expand(1, 3, 2, 2), big).item() == pytest.approx(2.0, rel=1e-6)
    with pytest.raises(ValueError, match="channels"):
        L.discrepancy_loss(a, torch.zeros(1, 4, 1, 1))


def test_swap_state_parity():
    assert [L.swap_state(t) for t in range(1, 6)] == [1, 2, 1, 2, 1]
    with pytest.raises(ValueError):
        L.swap_state(0)


def _outs(seed, b=2, n=3, h=8, w=8, c=4):
    g = torch.Generator().manual_seed(seed)
    return {"logits": torch.randn(b, n, h, w, generator=g), "features": torch.randn(b, c, h // 4, w // 4, generator=g)}


def test_total_loss_composes_equations_8_to_14():
    opts = L.LossConfig(alpha=0.1, grid=2)
    s_l, su_l, ru_l, s_u, su_u, ru_u = (_outs(i) for i in range(6))
    target = torch.randint(0, 3, (2, 8, 8), generator=torch.Generator().manual_seed(9))
    target[0, :2] = IGN
    sup = L.supervised_ce(s_l["logits"], target)
    l_l = sup + L.pseudo_label_ce(s_l["logits"], su_l["logits"], None, target) \
        + L.pseudo_label_ce(s_l["logits"], ru_l["logits"], None, target)
    pl_u = L.pseudo_label_ce(s_u["logits"], su_u["logits"]) + L.pseudo_label_ce(s_u["logits"], ru_u["logits"])
    s1 = L.global_context_loss(s_u["logits"], su_u["logits"]) + 0.1 * L.discrepancy_loss(s_u["features"], ru_u["features"])
    s2 = L.local_regional_loss(s_u["features"], ru_u["features"], 2) + 0.1 * L.discrepancy_loss(s_u["features"], su_u["features"])
    for t, state in ((1, s1), (2, s2), (7, s1)):
        loss, terms = L.total_loss(t, s_l, su_l, ru_l, target, s_u, su_u, ru_u, opts)
        assert loss.item() == pytest.approx((l_l + state + pl_u).item(), rel=1e-6)
        assert terms["state"].item() == L.swap_state(t)
    # Table 3 ablation: pseudo only -> no feature terms at all
    only = L.LossConfig(alpha=0.1, grid=2, losses=frozenset({"pseudo"}))
    for t in (1, 2):
        loss, terms = L.total_loss(t, s_l, su_l, ru_l, target, s_u, su_u, ru_u, only)
        assert loss.item() == pytest.approx((l_l + pl_u).item(), rel=1e-6)
        assert not {"glo", "loc", "dis"} & set(terms)
    # no pseudo: L_u is the swap term alone, L_l unchanged
    nopl = L.LossConfig(alpha=0.1, grid=2, losses=frozenset({"glo", "loc", "dis"}))
    loss, terms = L.total_loss(2, s_l, su_l, ru_l, target, s_u, su_u, ru_u, nopl)
    assert loss.item() == pytest.approx((l_l + s2).item(), rel=1e-6) and "pl_u" not in terms


def test_teachers_receive_no_gradient_through_losses():
    s = {k: v.requires_grad_() for k, v in _outs(0).items()}
    t = {k: v.requires_grad_() for k, v in _outs(1).items()}
    opts = L.LossConfig(grid=2)
    loss = sum(L.unlabelled_loss(i, s, t, t, opts)[0] for i in (1, 2))
    loss.backward()
    assert t["logits"].grad is None and t["features"].grad is None
    assert s["logits"].grad.abs().sum() > 0 and s["features"].grad.abs().sum() > 0


def test_cps_loss_by_hand():
    g_l, r_l, g_u, r_u = (_outs(i)["logits"] for i in range(4))
    y = torch.randint(0, 3, (2, 8, 8))
    y[1, 3] = IGN
    loss, terms = L.cps_loss(g_l, r_l, y, g_u, r_u, weight=1.5)
    want = (torch.nn.functional.cross_entropy(g_l, y, ignore_index=IGN)
            + torch.nn.functional.cross_entropy(r_l, y, ignore_index=IGN)
            + 1.5 * (torch.nn.functional.cross_entropy(g_u, r_u.argmax(1))
                     + torch.nn.functional.cross_entropy(r_u, g_u.argmax(1))))
    assert loss.item() == pytest.approx(want.item(), rel=1e-6)
    assert set(terms) == {"sup_g", "sup_r", "cps", "loss"}


def test_loss_config_rejects_unknown_terms():
    with pytest.raises(ValueError, match="glob"):  # when the config loads (ConfigError is a ValueError)
        load_config(None, ["method.losses=[pseudo, glob]"])
    assert L.LossConfig.from_cfg(load_config(None, ["method.losses=[glo]"]).method).losses == frozenset({"glo"})


def test_unlabelled_padding_is_excluded():
    """`valid` (False on crop padding of unlabelled images) removes pixels like ignore does."""
    s, t = _outs(0, b=1), _outs(1, b=1)
    valid = torch.ones(1, 8, 8, dtype=torch.bool)
    valid[:, :, 4:] = False  # right half is padding
    half = lambda o: {"logits": o["logits"][..., :4], "features": o["features"][..., :1]}  # noqa: E731
    sh, th = half(s), half(t)
    assert L.pseudo_label_ce(s["logits"], t["logits"], valid=valid).item() == \
        pytest.approx(L.pseudo_label_ce(sh["logits"], th["logits"]).item(), rel=1e-6)
    assert L.global_context_loss(s["logits"], t["logits"], valid).item() == \
        pytest.approx(L.global_context_loss(sh["logits"], th["logits"]).item(), rel=1e-6)
    assert L.discrepancy_loss(s["features"], t["features"], valid).item() == \
        pytest.approx(L.discrepancy_loss(sh["features"], th["features"]).item(), rel=1e-6)
    full = L.unlabelled_loss(1, s, t, t, L.LossConfig(grid=2))[0]
    masked = L.unlabelled_loss(1, s, t, t, L.LossConfig(grid=2), valid)[0]
    assert full.item() != pytest.approx(masked.item())


def test_cps_weight_ramp_up():
    # 0 = the constant lambda of CPS (METHOD.md); otherwise exp(-5 (1 - t/T)^2), full weight from t = T
    assert L.cps_weight_at(1, 1.5, 0) == 1.5 and L.cps_weight_at(10**6, 1.5, 0) == 1.5
    assert L.cps_weight_at(0, 1.5, 100) == pytest.approx(1.5 * math.exp(-5))
    assert L.cps_weight_at(50, 1.5, 100) == pytest.approx(1.5 * math.exp(-5 * 0.25))
    assert L.cps_weight_at(100, 1.5, 100) == 1.5 and L.cps_weight_at(250, 1.5, 100) == 1.5
    ramp = [L.cps_weight_at(t, 1.5, 100) for t in range(1, 101)]
    assert all(a < b for a, b in zip(ramp, ramp[1:]))


def test_teacher_stage_uses_the_ramped_weight():
    from igldt.train.stages import TeachersStage

    class Const(torch.nn.Module):  # fixed logits: the CPS term is the same at every t
        def __init__(self, seed):
            super().__init__()
            self.w = torch.nn.Parameter(torch.randn(1, 3, 1, 1, generator=torch.Generator().manual_seed(seed)))

        def forward(self, x):
            logits = self.w.expand(x.shape[0], 3, *x.shape[-2:]) + x[:, :1]
            return {"logits": logits, "features": logits}

    cfg = load_config(None, ["method.grid=2", "method.cps_rampup=10"])
    stage = TeachersStage(cfg, Const(0), Const(1))
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(2))
    bl, bu = {"image": x, "mask": torch.zeros(2, 4, 4, dtype=torch.long)}, {"image": x.flip(0)}
    for t in (1, 5, 10, 20):
        loss, terms = stage.step(bl, bu, t)
        lam = L.cps_weight_at(t, 1.5, 10)
        assert float(terms["lambda"]) == pytest.approx(lam)
        assert loss.item() == pytest.approx(float(terms["sup_g"] + terms["sup_r"] + lam * terms["cps"]), rel=1e-6)


def test_cps_warmup_holds_lambda_at_zero_then_ramps():
    assert [L.cps_weight_at(t, 1.5, 0, 3) for t in (1, 3, 4, 100)] == [0.0, 0.0, 1.5, 1.5]
    assert L.cps_weight_at(3 + 50, 1.5, 100, 3) == pytest.approx(L.cps_weight_at(50, 1.5, 100))
    assert L.cps_weight_at(2, 1.5, 100, 3) == 0.0


def test_pseudo_labelled_switch_leaves_labelled_images_their_ground_truth_alone():
    s, su, ru = (_outs(i) for i in range(3))
    target = s["logits"].argmax(1)
    target[..., 0] = IGN
    on, terms_on = L.labelled_loss(s, su, ru, target, L.LossConfig(grid=2))
    off, terms_off = L.labelled_loss(s, su, ru, target, L.LossConfig(grid=2, pseudo_labelled=False))
    assert off.item() == pytest.approx(L.supervised_ce(s["logits"], target).item(), rel=1e-6)
    assert on.item() == pytest.approx((off + terms_on["pl_l"]).item(), rel=1e-6) and terms_on["pl_l"] > 0
    assert "pl_l" not in terms_off
    method = load_config().method
    assert L.LossConfig.from_cfg(replace(method, pseudo_labelled=False)).pseudo_labelled is False
    # on by default, also for the config of a run saved before the switch existed
    assert L.LossConfig.from_cfg(method).pseudo_labelled is True
    saved = load_config().to_dict()
    del saved["method"]["pseudo_labelled"]
    assert L.LossConfig.from_cfg(config_from_dict(saved).method).pseudo_labelled


def test_aligned_logits_give_an_under_predicted_class_its_share_back():
    # class 1 is everywhere the runner-up by a small margin: argmax never picks it
    logits = torch.zeros(1, 3, 4, 4)
    logits[:, 0] = 1.0
    logits[:, 1] = 0.8
    assert (logits.argmax(1) == 0).all()
    same = torch.tensor([0.5, 0.3, 0.2])
    assert torch.equal(L.aligned_logits(logits, same, same).argmax(1), logits.argmax(1))
    # the labels hold class 1 at 50%, the teacher's probabilities at 10%: rescaled by 5, it wins
    aligned = L.aligned_logits(logits, torch.tensor([0.4, 0.5, 0.1]), torch.tensor([0.8, 0.1, 0.1]))
    assert (aligned.argmax(1) == 1).all()
    # the hard labels of (7)/(12) come from the aligned logits when a stage supplies them
    s = torch.zeros(1, 3, 4, 4)
    t = {"logits": logits, "pseudo": aligned}
    want = L.pseudo_label_ce(s, aligned)
    assert L.unlabelled_loss(1, {"logits": s, "features": s}, t, t,
                             L.LossConfig(losses=frozenset({"pseudo"})))[1]["pl_u"].item() == pytest.approx(2 * want.item())


def test_cps_on_labelled_images_too_is_the_cross_ce_over_the_whole_batch():
    """method.cps_labelled (CPS's own code): the cross CE over labelled + unlabelled images together,
    averaged over all their pixels; unlabelled padding still excluded."""
    g_l, r_l, g_u, r_u = (_outs(i)["logits"] for i in range(4))
    y = torch.randint(0, 3, (2, 8, 8))
    valid = torch.ones(2, 8, 8, dtype=torch.bool)
    valid[0, :, 6:] = False
    loss, terms = L.cps_loss(g_l, r_l, y, g_u, r_u, weight=1.5, valid_u=valid, labelled_too=True)
    g, r = torch.cat([g_l, g_u]), torch.cat([r_l, r_u])
    keep = torch.cat([torch.ones(2, 8, 8, dtype=torch.bool), valid])
    ce = lambda a, b: torch.nn.functional.cross_entropy(a, torch.where(keep, b.argmax(1), IGN), ignore_index=IGN)
    assert terms["cps"].item() == pytest.approx((ce(g, r) + ce(r, g)).item(), rel=1e-6)
    only_u, _ = L.cps_loss(g_l, r_l, y, g_u, r_u, weight=1.5, valid_u=valid)
    assert only_u.item() != pytest.approx(loss.item())
    assert L.LossConfig.from_cfg(load_config().method).cps_labelled is True
    assert L.LossConfig.from_cfg(load_config("camvid-cpu").method).cps_labelled is False


def test_local_regional_loss_ignores_crop_padding():
    """L_Loc with `valid`: what the padded positions hold changes nothing, cells of padding alone drop
    out, and an all-valid mask is the unmasked loss bit for bit."""
    s, t = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    valid = torch.ones(2, 8, 8, dtype=torch.bool)
    assert torch.equal(L.local_regional_loss(s, t, 2, valid), L.local_regional_loss(s, t, 2))
    valid[0, :, 5:] = False  # image 0: its right 3 columns are padding (a whole grid cell of 4 and part of another)
    masked = L.local_regional_loss(s, t, 4, valid)
    s2, t2 = s.clone(), t.clone()
    s2[0, :, :, 5:] = 100.0
    t2[0, :, :, 5:] = -7.0
    assert L.local_regional_loss(s2, t2, 4, valid).item() == pytest.approx(masked.item(), rel=1e-5)
    assert L.local_regional_loss(s2, t2, 4).item() != pytest.approx(masked.item(), rel=1e-3)


def test_single_state_every_runs_the_lone_feature_loss_at_every_iteration():
    s, t = _outs(0), _outs(1)
    glo_only = dict(losses=frozenset({"glo"}), grid=2)
    half = L.LossConfig(**glo_only)
    every = L.LossConfig(**glo_only, single_state="every")
    assert "glo" not in L.unlabelled_feature_loss(2, s, t, t, half)[1]  # (11): L_s2 at even t
    assert "glo" in L.unlabelled_feature_loss(2, s, t, t, every)[1]
    assert "loc" in L.unlabelled_feature_loss(1, s, t, t, L.LossConfig(losses=frozenset({"loc"}), grid=2,
                                                                        single_state="every"))[1]
    both = L.LossConfig(grid=2, single_state="every")  # both on: the swap as written
    assert "glo" not in L.unlabelled_feature_loss(2, s, t, t, both)[1]
    with pytest.raises(ValueError, match="single_state"):  # when the config loads
        load_config(None, ["method.single_state=always"])


def test_cutmix_takes_the_box_from_the_next_sample_of_the_batch():
    x = torch.arange(3.0).view(3, 1, 1, 1).expand(3, 2, 4, 4).clone()
    box = torch.zeros(3, 4, 4, dtype=torch.bool)
    box[0, :2, :2] = True
    mixed = L.cutmix(x, box)
    assert torch.equal(mixed[0, :, :2, :2], torch.full((2, 2, 2), 2.0))  # sample 0's box from sample 2 (rolled)
    assert torch.equal(mixed[0, :, 2:], x[0, :, 2:]) and torch.equal(mixed[1:], x[1:])
    assert torch.equal(L.cutmix(x[:, 0], box), mixed[:, 0])  # B x H x W maps (valid, labels) mix alike


def test_teachers_learn_on_mixed_images_from_each_others_mixed_labels():
    """data.cutmix in the teachers stage: CPS with CutMix. Each teacher labels the unmixed images, the
    labels are mixed like the images, and each teacher's prediction on the mixed images learns the other's."""
    from igldt.train.stages import StudentStage, TeachersStage

    class Pixelwise(torch.nn.Module):  # a 1x1 conv: its prediction at a pixel depends on that pixel alone
        def __init__(self, seed):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 3, 1)
            torch.nn.init.normal_(self.conv.weight, generator=torch.Generator().manual_seed(seed))

        def forward(self, x):
            logits = self.conv(x)
            return {"logits": logits, "features": logits}

    cfg = load_config(None, ["method.grid=2", "method.cps_labelled=false", "data.cutmix=true"])
    g, r = Pixelwise(0), Pixelwise(1)
    stage = TeachersStage(cfg, g, r)
    gen = torch.Generator().manual_seed(2)
    x_l, x_u = torch.randn(2, 3, 4, 4, generator=gen), torch.randn(2, 3, 4, 4, generator=gen)
    box = torch.zeros(2, 4, 4, dtype=torch.bool)
    box[1, 1:3, :] = True
    bl = {"image": x_l, "mask": torch.zeros(2, 4, 4, dtype=torch.long)}
    loss, terms = stage.step(bl, {"image": x_u, "valid": torch.ones(2, 4, 4, dtype=torch.bool), "box": box}, 1)
    mixed = L.cutmix(x_u, box)
    with torch.no_grad():  # a pixelwise net labels a mixed pixel as it labelled the pixel it came from
        want = (L.pseudo_label_ce(g(mixed)["logits"], r(mixed)["logits"])
                + L.pseudo_label_ce(r(mixed)["logits"], g(mixed)["logits"]))
    assert terms["cps"].item() == pytest.approx(want.item(), rel=1e-6)
    loss.backward()
    assert g.conv.weight.grad is not None and r.conv.weight.grad is not None
    plain, _ = TeachersStage(cfg, g, r).step(bl, {"image": x_u}, 1)  # no boxes: plain CPS
    assert plain.item() != pytest.approx(loss.item())
    with pytest.raises(ValueError, match="data.cutmix"):
        StudentStage(cfg, Pixelwise(3), g, r)


def test_class_balance_weights_keep_the_mean_and_favour_rare_classes():
    """Class-balanced CPS (method.cps_class_power): w_c = f_c^-p with sum_c f_c w_c = 1, an unseen
    class floored; p = 0 is plain CPS; the running frequency is an EMA started at the first batch."""
    f = torch.tensor([0.7, 0.2, 0.1, 0.0])
    w = CB.class_balance_weights(f, 0.5)
    assert (f * w).sum().item() == pytest.approx(1.0)
    assert w[3] > w[2] > w[1] > w[0]
    assert (w[2] / w[0]).item() == pytest.approx((0.7 / 0.1) ** 0.5)
    assert (w[3] / w[0]).item() == pytest.approx((0.7 / CB.FREQUENCY_FLOOR) ** 0.5)
    assert torch.allclose(CB.class_balance_weights(f, 0.0), torch.ones(4))
    y = torch.tensor([[0, 0, 1, IGN]])
    counts = CB.label_counts(y, 3)
    assert counts.tolist() == [2, 1, 0]
    first = CB.running_class_frequency(counts)
    assert torch.allclose(first, torch.tensor([2 / 3, 1 / 3, 0.0]))
    second = CB.running_class_frequency(torch.tensor([0, 0, 4]), first)
    assert torch.allclose(second, CB.FREQUENCY_MOMENTUM * first + (1 - CB.FREQUENCY_MOMENTUM) * torch.tensor([0.0, 0, 1]))


def test_ratio_weights_pull_pseudo_labels_toward_the_labelled_distribution():
    """method.cps_class_ratio: w_c = (f_c / g_c)^p with sum_c g_c w_c = 1: a class the pseudo-labels
    over-predict weighs less, one they under-predict weighs more, a matching one keeps its share."""
    f = torch.tensor([0.6, 0.3, 0.1])
    w = CB.class_balance_weights(f, 0.5, pseudo_freq=f)
    assert torch.allclose(w, torch.ones(3))
    g = torch.tensor([0.6, 0.1, 0.3])  # class 1 under-predicted (erased), class 2 over-predicted
    w = CB.class_balance_weights(f, 0.5, pseudo_freq=g)
    assert (g * w).sum().item() == pytest.approx(1.0)
    assert w[1] > w[0] > w[2]
    assert (w[1] / w[2]).item() == pytest.approx(((0.3 / 0.1) / (0.1 / 0.3)) ** 0.5)
    with pytest.raises(ValueError, match="cps_class_power"):
        L.LossConfig.from_cfg(load_config(overrides=["method.cps_class_ratio=true"]).method)


def test_class_weighted_cross_ce_is_the_weighted_mean_over_pseudo_labels():
    """cps_loss with class weights: each cross pixel weighted by its pseudo-label's class weight,
    averaged with those weights (equal weights: plain CPS); the labelled CE stays unweighted."""
    g_l, r_l, g_u, r_u = (_outs(i)["logits"] for i in range(4))
    y = torch.randint(0, 3, (2, 8, 8))
    plain, t0 = L.cps_loss(g_l, r_l, y, g_u, r_u, weight=1.5)
    same, t1 = L.cps_loss(g_l, r_l, y, g_u, r_u, weight=1.5, class_weight=torch.full((3,), 2.0))
    assert same.item() == pytest.approx(plain.item(), rel=1e-6)
    w = torch.tensor([0.5, 1.0, 3.0])
    _, terms = L.cps_loss(g_l, r_l, y, g_u, r_u, weight=1.5, class_weight=w)
    ce = torch.nn.functional.cross_entropy

    def weighted(s, t):
        lab = t.argmax(1)
        return (ce(s, lab, reduction="none") * w[lab]).sum() / w[lab].sum()
    assert terms["cps"].item() == pytest.approx((weighted(g_u, r_u) + weighted(r_u, g_u)).item(), rel=1e-6)
    assert terms["sup_g"].item() == pytest.approx(t0["sup_g"].item())
    with pytest.raises(ValueError, match="cps_class_power"):
        L.LossConfig.from_cfg(load_config(overrides=["method.cps_class_power=-1"]).method)


def test_pseudo_label_ce_under_the_valid_rule_divides_by_every_valid_pixel():
    """`method.threshold_rule: valid`: the CE of the pixels the threshold keeps, summed over them and
    divided by every pixel not ignored (UniMatch's rule), by hand on 4 pixels."""
    # teacher: class 0 at 0.99 and 0.97 confidence, class 1 at 0.6 and 0.9 (p = softmax of the logits)
    p_teacher = torch.tensor([[0.99, 0.4, 0.97, 0.1], [0.01, 0.6, 0.03, 0.9]]).view(1, 2, 2, 2)
    student = torch.tensor([[0.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 2.0]]).view(1, 2, 2, 2)
    target = torch.tensor([[0, 1], [255, 1]])  # the third pixel is ground-truth void
    ce0 = -math.log(1 / (1 + math.e ** 0))  # pixel 0: student logits (0, 0), teacher class 0
    kept_sum = ce0  # pixel 2 (0.97) is void, pixels 1 and 3 are below 0.95
    got = L.pseudo_label_ce(student, p_teacher.log(), threshold=0.95, target=target, per_valid=True)
    assert abs(float(got) - kept_sum / 3) < 1e-6  # divided by the 3 non-void pixels, not by the 1 kept
    mean_kept = L.pseudo_label_ce(student, p_teacher.log(), threshold=0.95, target=target)
    assert abs(float(mean_kept) - kept_sum / 1) < 1e-6  # the default rule: the mean over the kept pixel
