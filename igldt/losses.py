"""IGL-DT losses: one function per equation of METHOD.md (numbers in the docstrings).

Conventions
- `logits`: B x N x H x W (N classes, input size); `features`: B x C x h x w (decoder map, stride 4).
- Targets are int64 B x H x W with `IGNORE_INDEX` (255) for ignored pixels; ignored pixels are
  excluded everywhere ("Pixels labelled ignore are excluded everywhere").
- Every loss is computed in float32 (AMP autocast may hand in bf16/fp16 tensors: softmax, cosine
  and L1 of class averages lose too much in half precision).
- Composite losses return `(loss, terms)`; `terms` maps short names to detached scalars so the
  progress bar and metrics log can show each term separately.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import get_args

import torch
import torch.nn.functional as F

from igldt.config.schema import LossTerm, MethodConfig
from igldt.constants import IGNORE_INDEX

LOSS_TERMS = get_args(LossTerm)  # Table 3 ablation switches (cfg.method.losses): pseudo, glo, loc, dis


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def _soft_ce(logits: torch.Tensor, probs: torch.Tensor, ignore: torch.Tensor) -> torch.Tensor:
    """Pixel CE against a target distribution (`F.cross_entropy` with class-probability targets),
    averaged over the pixels not in `ignore` (B x H x W bool); 0 (still in the graph) when every
    pixel is ignored."""
    ce = F.cross_entropy(logits.float(), probs.float(), reduction="none")
    keep = (~ignore).to(ce.dtype)
    return (ce * keep).sum() / keep.sum().clamp_min(1)


def _ce(logits: torch.Tensor, target: torch.Tensor, class_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Pixel CE averaged over non-ignored pixels; 0 (still in the graph) when every pixel is ignored.
    `class_weight`: each pixel weighted by its target's class weight and the CE the weighted mean.

    `F.cross_entropy(..., ignore_index)` returns NaN for an all-ignored batch (0/0), which would count
    as a non-finite step; a crop of pure void is legitimate data, so it contributes zero instead.
    """
    logits = logits.float()
    valid = target != IGNORE_INDEX
    total = F.cross_entropy(logits, target, weight=class_weight, ignore_index=IGNORE_INDEX, reduction="sum")
    if class_weight is None:
        return total / valid.sum().clamp_min(1)
    return total / class_weight[target[valid]].sum().clamp_min(1e-12)


def align_features(f_student: torch.Tensor, f_teacher: torch.Tensor) -> torch.Tensor:
    """The teacher's feature map resized (bilinear) to the student's, when they differ.

    All three DeepLabV3+ share a 256-channel stride-4 decoder, so this is normally a no-op; it
    matters when backbones pad differently. Channel counts must match: that is a model error.
    """
    if f_student.shape[1] != f_teacher.shape[1]:
        raise ValueError(f"student features have {f_student.shape[1]} channels, teacher {f_teacher.shape[1]}: "
                         "the feature losses need the same decoder width for every role")
    if f_teacher.shape[-2:] != f_student.shape[-2:]:
        f_teacher = F.interpolate(f_teacher.float(), size=f_student.shape[-2:], mode="bilinear", align_corners=False)
    return f_teacher


def pseudo_labels(teacher_logits: torch.Tensor, threshold: float | None = None,
                  ignore_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Hard pseudo-labels Y = argmax(teacher logits), with pixels set to ignore where the teacher's
    confidence max(softmax) is below `threshold` (off when None) or where `ignore_mask` is True."""
    logits = teacher_logits.detach().float()
    if threshold is None:
        # max(1).indices, not argmax(1): the same first-maximum index, ~6x faster over a channel dim on CPU
        labels = logits.max(1).indices
    else:
        conf, labels = logits.softmax(1).max(1)
        labels = labels.masked_fill(conf < threshold, IGNORE_INDEX)
    if ignore_mask is not None:
        labels = labels.masked_fill(ignore_mask, IGNORE_INDEX)
    return labels


# ---------------------------------------------------------------------------------------------
# single equations
# ---------------------------------------------------------------------------------------------
def supervised_ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(6) L_sup = CE(student logits, ground truth); pixels equal to IGNORE_INDEX are excluded."""
    return _ce(logits, target)


def ohem_ce(logits: torch.Tensor, target: torch.Tensor, threshold: float = 0.7, min_kept: int = 20000) -> torch.Tensor:
    """(6-OHEM, a deviation: `method.sup_loss: ohem`) CE over the hard pixels only: those whose
    probability of their true class is at most `threshold`, and at least the `min_kept` hardest valid
    pixels of the batch (all of them when it has fewer), averaged over the pixels kept. UniMatch's
    `ProbOhemCrossEntropy2d` (thresh 0.7) as its Cityscapes recipe uses it: the easy road and sky
    pixels stop outweighing the rare classes."""
    logits = logits.float()
    valid = target != IGNORE_INDEX
    if int(valid.sum()) <= min_kept:
        return _ce(logits, target)
    p_true = logits.softmax(1).gather(1, target.clamp_max(logits.shape[1] - 1).unsqueeze(1))[:, 0].detach()
    p_valid = p_true[valid]
    kth = p_valid.kthvalue(max(min_kept, 1)).values  # the min_kept-th smallest true-class probability
    keep = valid & (p_true <= torch.maximum(kth, torch.tensor(threshold, device=kth.device)))
    return _ce(logits, target.masked_fill(~keep, IGNORE_INDEX))


def chosen_ce(choice: str, key: str, logits: torch.Tensor, target: torch.Tensor, opts: "LossConfig",
              class_weight: torch.Tensor | None = None) -> torch.Tensor:
    """CE against `target` as the config's `method.<key>` (`choice`) asks: `ce`, `ohem` (`ohem_ce`) or
    `median_freq`: each pixel weighted by its class's median-frequency weight `class_weight`
    (`class_balance.median_frequency_weights`, the classic CamVid recipe of SegNet), a weighted mean."""
    if choice == "ohem":
        return ohem_ce(logits, target, opts.ohem_threshold, opts.ohem_min_kept)
    if choice == "median_freq":
        if class_weight is None:
            raise ValueError(f"method.{key}=median_freq needs the labelled set's class weights")
        return _ce(logits, target, class_weight.to(logits.device))
    return _ce(logits, target)


def supervised_loss(logits: torch.Tensor, target: torch.Tensor, opts: "LossConfig",
                    class_weight: torch.Tensor | None = None) -> torch.Tensor:
    """(6) as `method.sup_loss` chooses (`chosen_ce`): `ce` is `supervised_ce`, METHOD.md's."""
    return chosen_ce(opts.sup_loss, "sup_loss", logits, target, opts, class_weight)


def _excluded(target: torch.Tensor | None, valid: torch.Tensor | None) -> torch.Tensor | None:
    """The pixels no pseudo-label term may use: ground-truth ignore and crop padding (None: none)."""
    ignore = None if target is None else target == IGNORE_INDEX
    if valid is not None:
        ignore = ~valid if ignore is None else ignore | ~valid
    return ignore


def pseudo_label_ce(student_logits: torch.Tensor, teacher_logits: torch.Tensor, threshold: float | None = None,
                    target: torch.Tensor | None = None, valid: torch.Tensor | None = None,
                    class_weight: torch.Tensor | None = None, soft: bool = False,
                    per_valid: bool = False) -> torch.Tensor:
    """(7) / (12) CE(S, Y_T) against the teacher's hard prediction Y_T = argmax(teacher logits).

    `threshold`: pixels where the teacher's max softmax is below it are ignored (off when None).
    `target`: the ground truth of labelled images; its ignore pixels are excluded here too.
    `valid`: B x H x W bool of unlabelled images, False where the crop is padding (no image there).
    `soft` (`method.pseudo_targets: soft`, a deviation): CE against the teacher's softmax instead of
    its argmax, so the student also learns the probability the teacher gives the classes it does not
    rank first (Hinton et al.'s distillation at temperature 1; docs/method.md).
    `per_valid` (`method.threshold_rule: valid`, a deviation): with a threshold, the CE of the pixels it
    keeps is summed and divided by all pixels it could have kept (not ignored, not padding), UniMatch's
    rule (U1): the teachers' weight grows with their confidence instead of a few sure pixels carrying
    the whole term.
    """
    ignore = _excluded(target, valid)
    if per_valid and threshold is not None and not soft:
        if class_weight is not None:
            raise ValueError("method.threshold_rule=valid takes unweighted CE")
        conf, hard = teacher_logits.detach().float().softmax(1).max(1)
        possible = torch.ones_like(hard, dtype=torch.bool) if ignore is None else ~ignore
        return confident_ce(student_logits, hard, conf, possible, threshold)
    labels = pseudo_labels(teacher_logits, threshold, ignore)
    if not soft:
        return _ce(student_logits, labels, class_weight)
    if class_weight is not None:
        raise ValueError("class-weighted CE takes hard labels; soft pseudo-targets have no class per pixel")
    # the hard labels' ignore pixels (threshold, ground-truth ignore, padding) are the soft term's too
    return _soft_ce(student_logits, teacher_logits.detach().float().softmax(1), labels == IGNORE_INDEX)


def student_pseudo_ce(student_logits: torch.Tensor, teacher: dict, opts: "LossConfig",
                      target: torch.Tensor | None = None, valid: torch.Tensor | None = None,
                      class_weight: torch.Tensor | None = None) -> torch.Tensor:
    """(7) / (12) One teacher's pseudo-label CE in the student's loss, as `method.pseudo_loss` chooses:
    `ce` (METHOD.md, `pseudo_label_ce`), `ohem` (a deviation: `ohem_ce` against the teacher's labels)
    or `median_freq` (a deviation: each pixel weighted by its pseudo-label's median-frequency weight
    `class_weight`, from the labelled images). The teachers label the pool's thin and rare classes
    as their neighbours (docs/experiments.md, section 25); weighted, a pixel taught "building" moves
    the student less than one taught "fence"."""
    t = teacher_pseudo_logits(teacher)
    if opts.pseudo_loss == "ce":
        return pseudo_label_ce(student_logits, t, opts.threshold, target, valid, soft=opts.soft,
                               per_valid=opts.per_valid)
    labels = pseudo_labels(t, opts.threshold, _excluded(target, valid))
    return chosen_ce(opts.pseudo_loss, "pseudo_loss", student_logits, labels, opts, class_weight)


def aligned_logits(logits: torch.Tensor, prior: torch.Tensor, predicted: torch.Tensor) -> torch.Tensor:
    """(DA, a deviation: `method.align`) A teacher's logits with its class distribution aligned to the
    labels': `logits + log(prior / predicted)`, i.e. its probabilities p_c rescaled by
    prior_c / predicted_c before the argmax of (7) and (12).

    `prior` (N): class frequencies of the labelled ground truth; `predicted` (N): the teacher's mean
    class probability on unlabelled pixels. Hard pseudo-labels favour the classes a network already
    predicts most, and a student taught four parts in five by them stops predicting the rare ones
    (docs/experiments.md, section 9); this is ReMixMatch's distribution alignment (Berthelot et al.
    2020), the remedy DARS (He et al. 2021) studies for segmentation pseudo-labels.
    """
    ratio = prior.float().clamp_min(1e-6) / predicted.float().clamp_min(1e-6)
    return logits.float() + ratio.log().view(1, -1, 1, 1)


def teacher_pseudo_logits(t: dict) -> torch.Tensor:
    """What a teacher's hard pseudo-labels are taken from: its aligned logits when the student stage
    added them (`"pseudo"`, see `aligned_logits`), else its logits."""
    return t.get("pseudo", t["logits"])


def global_context(logits: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """(1) K = GAP(softmax(logits)): B x N class scores, the mean class probability per image.

    `valid` (B x H x W bool) restricts the average to non-ignored pixels where a mask is known.
    """
    p = logits.float().softmax(1)
    if valid is None:
        return p.mean(dim=(2, 3))
    w = valid.unsqueeze(1).to(p.dtype)
    return (p * w).sum(dim=(2, 3)) / w.sum(dim=(2, 3)).clamp_min(1.0)


def global_context_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                        valid: torch.Tensor | None = None) -> torch.Tensor:
    """(2) L_Glo = mean_i |K_S,i - K_T,i|: L1 averaged over the N classes, then over the batch."""
    k_s = global_context(student_logits, valid)
    k_t = global_context(teacher_logits.detach(), valid)
    return (k_s - k_t).abs().mean(dim=1).mean()


def regional_correlation(features: torch.Tensor, grid: int | tuple[int, int],
                         weight: torch.Tensor | None = None) -> torch.Tensor:
    """(3) M: the cosine self-correlation of regional vectors, B x HvWv x HvWv.

    The feature map is pooled to an Hv x Wv grid (adaptive average pooling); each cell is one
    C-dimensional regional vector; M[a, b] = cos(v_a, v_b). `weight` (B x 1 x h x w, 1 where the
    position holds image, 0 on crop padding) makes each cell the mean over its image positions.
    """
    f = features.float()
    if weight is None:
        v = F.adaptive_avg_pool2d(f, grid).flatten(2)  # B x C x HvWv
    else:
        v = (F.adaptive_avg_pool2d(f * weight, grid) / F.adaptive_avg_pool2d(weight, grid).clamp_min(1e-6)).flatten(2)
    v = F.normalize(v, dim=1, eps=1e-8)
    return v.transpose(1, 2) @ v


def local_regional_loss(student_features: torch.Tensor, teacher_features: torch.Tensor,
                        grid: int | tuple[int, int] = 16, valid: torch.Tensor | None = None) -> torch.Tensor:
    """(4) L_Loc = mean((M_S - M_T)^2) over the batch and all HvWv x HvWv entries.

    `valid` (B x H x W bool, False on crop padding): the regional vectors average image positions
    only, and pairs with a cell made of padding alone are left out of the mean."""
    teacher_features = align_features(student_features, teacher_features.detach())
    if valid is None or bool(valid.all()):
        m_s = regional_correlation(student_features, grid)
        m_t = regional_correlation(teacher_features, grid)
        return (m_s - m_t).pow(2).mean()
    weight = feature_mask(valid, student_features.shape[-2:]).unsqueeze(1).float()
    m_s = regional_correlation(student_features, grid, weight)
    m_t = regional_correlation(teacher_features, grid, weight)
    cells = F.adaptive_avg_pool2d(weight, grid).flatten(1) > 0  # B x HvWv: cells holding image
    pairs = (cells[:, :, None] & cells[:, None, :]).float()
    return ((m_s - m_t).pow(2) * pairs).sum() / pairs.sum().clamp_min(1.0)


def feature_mask(valid: torch.Tensor, size) -> torch.Tensor:
    """A pixel mask (B x H x W bool) at a feature map's size (nearest): which positions hold image."""
    return F.interpolate(valid[:, None].float(), size=tuple(size), mode="nearest")[:, 0] > 0.5


def discrepancy_loss(student_features: torch.Tensor, teacher_features: torch.Tensor,
                     valid: torch.Tensor | None = None) -> torch.Tensor:
    """(5) L_Dis = 1 + cos(F_S, F_T): cosine along channels at each position, averaged over positions
    (and the batch). Minimising it pushes the student's features away from the teacher's, as written.
    `valid` (B x H x W bool, pixel resolution) restricts the average to positions holding image."""
    teacher_features = align_features(student_features, teacher_features.detach())
    d = 1.0 + F.cosine_similarity(student_features.float(), teacher_features.float(), dim=1, eps=1e-8)
    if valid is None:
        return d.mean()
    m = feature_mask(valid, d.shape[-2:]).to(d.dtype)
    return (d * m).sum() / m.sum().clamp_min(1.0)


# ---------------------------------------------------------------------------------------------
# composites
# ---------------------------------------------------------------------------------------------
@dataclass
class LossConfig:
    """The `method:` section as the losses read it."""
    alpha: float = 0.1
    grid: int = 16
    losses: frozenset = field(default_factory=lambda: frozenset(LOSS_TERMS))
    threshold: float | None = None
    threshold_rule: str = "kept"
    cps_weight: float = 1.5
    cps_rampup: int = 0
    cps_warmup: int = 0
    pseudo_labelled: bool = True
    align: bool = False
    cps_labelled: bool = True
    single_state: str = "half"
    cps_class_power: float | None = None
    cps_class_ratio: bool = False
    cps_threshold: float | None = None
    pseudo_targets: str = "hard"
    sup_loss: str = "ce"
    pseudo_loss: str = "ce"
    ohem_threshold: float = 0.7
    ohem_min_kept: int = 20000
    unimatch_threshold: float = 0.95
    unimatch_fp_dropout: float = 0.5

    @classmethod
    def from_cfg(cls, method: MethodConfig) -> "LossConfig":
        """The losses' view of a `method:` section, whose types and choices were checked at load."""
        if method.threshold is not None and not 0.0 <= method.threshold <= 1.0:
            raise ValueError(f"method.threshold={method.threshold}: a confidence in [0, 1], or null for off")
        if method.cps_class_power is not None and method.cps_class_power < 0:
            raise ValueError(f"method.cps_class_power={method.cps_class_power}: a power >= 0 (0.5: inverse square "
                             "root of the class frequency), or null for unweighted CPS")
        for key in ("ohem_threshold", "unimatch_threshold", "unimatch_fp_dropout", "cps_threshold"):
            if getattr(method, key) is not None and not 0.0 <= getattr(method, key) <= 1.0:
                raise ValueError(f"method.{key}={getattr(method, key)}: a value in [0, 1]")
        if method.ohem_min_kept < 1:
            raise ValueError(f"method.ohem_min_kept={method.ohem_min_kept}: at least 1 pixel")
        if method.pseudo_loss != "ce" and (method.pseudo_targets == "soft" or method.threshold_rule == "valid"):
            raise ValueError(f"method.pseudo_loss={method.pseudo_loss} takes hard pseudo-labels averaged over the "
                             "pixels kept: set method.pseudo_targets=hard and method.threshold_rule=kept, or "
                             "method.pseudo_loss=ce")
        if method.cps_class_ratio and method.cps_class_power is None:
            raise ValueError("method.cps_class_ratio=true weighs by (labelled / pseudo-label frequency)^p: "
                             "set method.cps_class_power too (e.g. 0.5)")
        return cls(alpha=method.alpha, grid=method.grid, losses=frozenset(method.losses), threshold=method.threshold,
                   threshold_rule=method.threshold_rule,
                   cps_weight=method.cps_weight, cps_rampup=method.cps_rampup, cps_warmup=method.cps_warmup,
                   pseudo_labelled=method.pseudo_labelled, align=method.align, cps_labelled=method.cps_labelled,
                   single_state=method.single_state, cps_class_power=method.cps_class_power,
                   cps_class_ratio=method.cps_class_ratio, cps_threshold=method.cps_threshold,
                   pseudo_targets=method.pseudo_targets,
                   sup_loss=method.sup_loss, pseudo_loss=method.pseudo_loss, ohem_threshold=method.ohem_threshold, ohem_min_kept=method.ohem_min_kept,
                   unimatch_threshold=method.unimatch_threshold, unimatch_fp_dropout=method.unimatch_fp_dropout)

    @property
    def per_valid(self) -> bool:
        """(7) and (12) under a threshold divide by all valid pixels (UniMatch's rule), not by the kept ones."""
        return self.threshold_rule == "valid"

    @property
    def soft(self) -> bool:
        """The student's pseudo-label CE of (7) and (12) takes the teachers' softmax, not their argmax."""
        return self.pseudo_targets == "soft"


def _zero(ref: torch.Tensor) -> torch.Tensor:
    # A zero that stays attached to the graph: DDP expects every parameter to receive a gradient.
    return ref.float().sum() * 0.0


def state1_loss(s: dict, t_su: dict, t_ru: dict, opts: LossConfig,
                valid: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """(9) L_s1 = L_Glo(S, T_SU) + alpha * L_Dis(S, T_RU). `valid`: see `unlabelled_loss`."""
    loss, terms = _zero(s["logits"]), {}
    if "glo" in opts.losses:
        glo = global_context_loss(s["logits"], t_su["logits"], valid)
        loss, terms["glo"] = loss + glo, glo.detach()
    if "dis" in opts.losses:
        dis = discrepancy_loss(s["features"], t_ru["features"], valid)
        loss, terms["dis"] = loss + opts.alpha * dis, dis.detach()
    return loss, terms


def state2_loss(s: dict, t_su: dict, t_ru: dict, opts: LossConfig,
                valid: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """(10) L_s2 = L_Loc(S, T_RU) + alpha * L_Dis(S, T_SU). `valid`: see `unlabelled_loss`."""
    loss, terms = _zero(s["logits"]), {}
    if "loc" in opts.losses:
        loc = local_regional_loss(s["features"], t_ru["features"], opts.grid, valid)
        loss, terms["loc"] = loss + loc, loc.detach()
    if "dis" in opts.losses:
        dis = discrepancy_loss(s["features"], t_su["features"], valid)
        loss, terms["dis"] = loss + opts.alpha * dis, dis.detach()
    return loss, terms


def swap_state(iteration: int) -> int:
    """(11) Which state iteration t uses (t counted from 1): 1 (L_s1) when t is odd, 2 (L_s2) when even."""
    if iteration < 1:
        raise ValueError(f"iteration t is counted from 1, got {iteration}")
    return 1 if iteration % 2 == 1 else 2


def unlabelled_feature_loss(iteration: int, s: dict, t_su: dict, t_ru: dict, opts: LossConfig,
                            valid: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """(11) Swap(L_s1, L_s2): L_s1 at odd iterations t, L_s2 at even ones.

    When an ablation keeps only one of L_Glo and L_Loc, `method.single_state` says what the swap does:
    `half` (the default, (11) as written) runs its state on its half of the iterations only, `every`
    runs that state at every iteration."""
    state = swap_state(iteration)
    if opts.single_state == "every" and ("glo" in opts.losses) != ("loc" in opts.losses):
        state = 1 if "glo" in opts.losses else 2
    return (state1_loss if state == 1 else state2_loss)(s, t_su, t_ru, opts, valid)


def labelled_loss(s: dict, t_su: dict, t_ru: dict, target: torch.Tensor,
                  opts: LossConfig, sup=supervised_ce,
                  class_weight: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """(8) L_l = L_sup + CE(S, Y_SU) + CE(S, Y_RU) on labelled images (GT ignore pixels excluded).

    The `pseudo` ablation switch names L_P^u (Table 3), the unlabelled pseudo-label term; the
    labelled pseudo-label CE of (7), L_P^l, has its own switch (`method.pseudo_labelled`, on as in
    METHOD.md): off, labelled images teach the student their ground truth alone.
    `sup`: (6) itself, `supervised_ce`, or its `method.sup_loss` variant (`supervised_loss`).
    `class_weight`: the labelled set's median-frequency weights, for `method.pseudo_loss: median_freq`.
    """
    sup = sup(s["logits"], target)
    if not opts.pseudo_labelled:
        return sup, {"sup": sup.detach()}
    pl = sum(student_pseudo_ce(s["logits"], t, opts, target, class_weight=class_weight) for t in (t_su, t_ru))
    return sup + pl, {"sup": sup.detach(), "pl_l": pl.detach()}


def unlabelled_loss(iteration: int, s: dict, t_su: dict, t_ru: dict, opts: LossConfig,
                    valid: torch.Tensor | None = None,
                    class_weight: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """(13) L_u = Swap(L_s1, L_s2) + CE(S, Y_SU) + CE(S, Y_RU) on unlabelled images ((12): the CE terms).

    `valid` (B x H x W bool, optional): False on crop padding, which holds no image; those pixels are
    excluded like ignore pixels (from the CE terms, the GAP of L_Glo and the average of L_Dis).
    `class_weight`: as in `labelled_loss`."""
    loss, terms = unlabelled_feature_loss(iteration, s, t_su, t_ru, opts, valid)
    if "pseudo" in opts.losses:
        pl = sum(student_pseudo_ce(s["logits"], t, opts, valid=valid, class_weight=class_weight) for t in (t_su, t_ru))
        loss, terms["pl_u"] = loss + pl, pl.detach()
    return loss, terms


def total_loss(iteration: int, s_l: dict, t_su_l: dict, t_ru_l: dict, target: torch.Tensor,
               s_u: dict, t_su_u: dict, t_ru_u: dict, opts: LossConfig,
               valid_u: torch.Tensor | None = None, sup=supervised_ce,
               class_weight: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """(14) L = L_l + L_u. `s_*`, `t_*` are model outputs {"logits", "features"} on the labelled
    (`_l`) and unlabelled (`_u`) images; `valid_u` marks the unlabelled pixels holding image;
    `class_weight`: the pseudo-label terms' weights (`student_pseudo_ce`)."""
    l_l, terms = labelled_loss(s_l, t_su_l, t_ru_l, target, opts, sup, class_weight)
    l_u, terms_u = unlabelled_loss(iteration, s_u, t_su_u, t_ru_u, opts, valid_u, class_weight)
    loss = l_l + l_u
    return loss, {**terms, **terms_u, "state": torch.tensor(float(swap_state(iteration))), "loss": loss.detach()}


def cutmix(x: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
    """`x` (B x ... x H x W) with the pixels inside each sample's CutMix `box` (B x H x W bool) taken
    from the next sample of the batch (rolled by one), so one batch supplies both images of each mix."""
    inside = box.view(box.shape[0], *([1] * (x.dim() - box.dim())), *box.shape[1:])
    return torch.where(inside, x.roll(1, dims=0), x)


def cps_loss(g_l: torch.Tensor, r_l: torch.Tensor, target: torch.Tensor, g_u: torch.Tensor | None,
             r_u: torch.Tensor | None, weight: float = 1.5, valid_u: torch.Tensor | None = None,
             labelled_too: bool = False, targets_u: tuple[torch.Tensor, torch.Tensor] | None = None,
             class_weight: torch.Tensor | None = None, sup=supervised_ce,
             threshold: float | None = None) -> tuple[torch.Tensor, dict]:
    """Stage 1 (CPS, Chen et al. 2021): CE on labelled images for both teachers, plus `weight` (lambda)
    times each teacher's CE against the other's hard prediction on unlabelled images, and with
    `labelled_too` on the labelled images as well (CPS's own code takes the cross CE over the whole
    batch, labelled and unlabelled, averaged over all its pixels; `method.cps_labelled`).

    `g_*` / `r_*`: logits of the global (T_SU) and local (T_RU) teacher on labelled / unlabelled images;
    `valid_u`: False on unlabelled crop padding (excluded). Without unlabelled logits (`g_u`, `r_u`
    None: the warm-up of `method.cps_warmup`) the loss is the two labelled CE terms alone.
    `targets_u`: the (global, local) logits the unlabelled hard labels are taken from, when they are
    not `g_u`, `r_u` themselves (CPS with CutMix: each network's prediction on the unmixed images,
    mixed like the images; `TeachersStage`).
    `class_weight`: the cross CE's pixels weighted by their pseudo-label's class weight
    (`class_balance.class_balance_weights`, `method.cps_class_power`); the labelled CE stays unweighted.
    `sup`: the labelled loss, (6) `supervised_ce` or its `method.sup_loss` variant (`supervised_loss`).
    `threshold` (`method.cps_threshold`, a deviation): each cross CE counts only the pixels where the
    partner's confidence reaches it, divided by all valid pixels (`confident_ce`, UniMatch's rule), so
    the pool's weight grows with the partners' confidence; not combined with `class_weight`.
    """
    sup_g, sup_r = sup(g_l, target), sup(r_l, target)
    if g_u is None or r_u is None:
        loss = sup_g + sup_r
        return loss, {"sup_g": sup_g.detach(), "sup_r": sup_r.detach(), "loss": loss.detach()}
    t_g, t_r = targets_u if targets_u is not None else (g_u, r_u)
    if labelled_too:
        g_u, r_u, t_g, t_r = torch.cat([g_l, g_u]), torch.cat([r_l, r_u]), torch.cat([g_l, t_g]), torch.cat([r_l, t_r])
        if valid_u is not None:
            valid_u = torch.cat([torch.ones_like(valid_u[:1]).expand(g_l.shape[0], -1, -1), valid_u])
    if threshold is not None:
        if class_weight is not None:
            raise ValueError("method.cps_threshold and method.cps_class_power do not combine; choose one")
        cps = (confident_ce(g_u, *weak_targets(t_r, valid_u), threshold)
               + confident_ce(r_u, *weak_targets(t_g, valid_u), threshold))
    else:
        cps = (pseudo_label_ce(g_u, t_r, valid=valid_u, class_weight=class_weight)
               + pseudo_label_ce(r_u, t_g, valid=valid_u, class_weight=class_weight))
    loss = sup_g + sup_r + weight * cps
    return loss, {"sup_g": sup_g.detach(), "sup_r": sup_r.detach(), "cps": cps.detach(), "loss": loss.detach()}


def cps_weight_at(iteration: int, weight: float, rampup: int = 0, warmup: int = 0) -> float:
    """The CPS weight lambda at iteration t: `weight` throughout when `rampup` and `warmup` are 0
    (CPS, METHOD.md). `warmup` W: 0 for t <= W (the teachers learn from labels alone first), then
    t counts from W. `rampup` R: the sigmoid ramp-up weight * exp(-5 (1 - t/R)^2) up to t = R
    (Laine & Aila 2017).

    Networks with new (random) heads give each other noise for pseudo-labels at first; weighted in
    from t = 1, that noise outweighs the labels and the teachers end below Sup-only
    (docs/results.md measures it on CamVid). The paper's presets keep the constant weight.
    """
    t = iteration - max(warmup, 0)
    if t <= 0 and warmup > 0:
        return 0.0
    if rampup <= 0 or t >= rampup:
        return weight
    return weight * math.exp(-5.0 * (1.0 - max(t, 0) / rampup) ** 2)


# ---------------------------------------------------------------------------------------------
# UniMatch (Yang et al., CVPR 2023; LiheYoung/UniMatch, unimatch.py): a baseline and a teacher recipe,
# not part of METHOD.md (docs/method.md). Numbered U1-U3 here.
# ---------------------------------------------------------------------------------------------
def weak_targets(weak_logits: torch.Tensor, valid: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(labels, confidence, valid) of the weak view's prediction, without gradient: argmax, max softmax,
    and the pixels holding image (all True without `valid`)."""
    p = weak_logits.detach().float().softmax(1)
    conf, labels = p.max(1)
    return labels, conf, torch.ones_like(labels, dtype=torch.bool) if valid is None else valid


def mixed_targets(targets: tuple[torch.Tensor, ...], box: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The weak targets of a CutMix'd strong view: inside each sample's `box` those of the image pasted
    there (the next sample of the batch, `cutmix`), outside its own."""
    return tuple(cutmix(t, box) for t in targets)


def confident_ce(logits: torch.Tensor, labels: torch.Tensor, conf: torch.Tensor, valid: torch.Tensor,
                 threshold: float) -> torch.Tensor:
    """(U1) UniMatch's unlabelled CE: CE(logits, labels) summed over the valid pixels whose confidence is
    at least `threshold`, divided by the number of valid pixels (not of confident ones), so the pool's
    weight grows with the network's confidence instead of starting at full strength."""
    ce = F.cross_entropy(logits.float(), labels, reduction="none")
    keep = (valid & (conf >= threshold)).to(ce.dtype)
    return (ce * keep).sum() / valid.sum().clamp_min(1)


def unimatch_loss(sup: torch.Tensor, s1: torch.Tensor, s2: torch.Tensor, fp: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """(U2) L = (L_x + 0.25 L_s1 + 0.25 L_s2 + 0.5 L_fp) / 2: the labelled loss, the two strong views
    (U1 against the weak view's CutMix'd targets) and the feature-perturbed weak view (U1 against the
    weak view's own targets), weighted as in UniMatch."""
    loss = (sup + 0.25 * s1 + 0.25 * s2 + 0.5 * fp) / 2.0
    return loss, {"sup": sup.detach(), "u_s": ((s1 + s2) / 2).detach(), "u_fp": fp.detach(), "loss": loss.detach()}


def strong_inputs(batch_u: dict) -> torch.Tensor:
    """UniMatch's two strong views of the unlabelled batch, each CutMix'd with the next sample's through
    its own box (`data` gives `image_s`, `image_s2`, `box`, `box2`), stacked: 2B x 3 x H x W."""
    return torch.cat([cutmix(batch_u["image_s"], batch_u["box"]), cutmix(batch_u["image_s2"], batch_u["box2"])])


def unimatch_losses(out: dict, logits_s: torch.Tensor, batch_l: dict, batch_u: dict, opts: LossConfig,
                    sup=supervised_ce) -> tuple[torch.Tensor, dict]:
    """(U3) One network's UniMatch loss from its two forwards: `out` on the labelled then weak unlabelled
    images with the feature-perturbed decode (`logits`, `logits_fp`), `logits_s` on `strong_inputs`.
    The targets of a strong view inside its box are those of the image pasted there, taken from the same
    weak forward (rolled by one) rather than from a third forward of a separate mix batch as UniMatch's
    script does: a quarter less compute, the same targets up to the BatchNorm mode they are predicted in.
    Also logs `mask`: the share of valid unlabelled pixels above the threshold."""
    n = batch_l["image"].shape[0]
    logits_w, logits_fp = out["logits"][n:], out["logits_fp"][n:]
    logits_s1, logits_s2 = logits_s.chunk(2)
    weak = weak_targets(logits_w, batch_u.get("valid"))
    t = opts.unimatch_threshold
    loss_s1 = confident_ce(logits_s1, *mixed_targets(weak, batch_u["box"]), t)
    loss_s2 = confident_ce(logits_s2, *mixed_targets(weak, batch_u["box2"]), t)
    loss_fp = confident_ce(logits_fp, *weak, t)
    loss, terms = unimatch_loss(sup(out["logits"][:n], batch_l["mask"]), loss_s1, loss_s2, loss_fp)
    _, conf, valid = weak
    terms["mask"] = ((conf >= t) & valid).sum() / valid.sum().clamp_min(1)
    return loss, terms
