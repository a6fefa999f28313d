"""The three training stages. Each says which models train, their parameter groups, what one step
computes, which model is validated and what the exported checkpoint holds. The loop (loop.py)
does everything else the same way for all three.

- `SupervisedStage`: the student architecture on labelled images only (the "Sup-only" baseline).
- `TeachersStage`: T_SU and T_RU trained jointly with CPS (METHOD.md stage 1); one checkpoint holds both.
- `StudentStage`: teachers frozen (eval mode, no gradients), the student learns with (6)-(14).
- `UniMatchStage`: the student architecture trained with UniMatch (U1-U3 in losses.py), a baseline; with
  `method.teacher_recipe: unimatch` the teachers stage trains each teacher that way instead of CPS.

Every stage's labelled loss is (6) as `method.sup_loss` chooses (`Stage.sup`).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from igldt import class_balance as CB
from igldt import losses as L
from igldt.checkpoint import load_teachers, student_payload, teachers_payload
from igldt.config import Config
from igldt.models import build_role, param_groups
from igldt.train.distributed import DistContext, all_reduce_sum, unwrap, wrap

Outputs = dict  # {"logits": B x N x H x W, "features": B x C x h x w}
# last.pt's models entries for TeachersStage's running class frequencies (class-balanced CPS)
CLASS_FREQ_KEY, PSEUDO_FREQ_KEY = "cps_class_freq", "cps_pseudo_freq"


def _split(out: Outputs, n: int) -> tuple[Outputs, Outputs]:
    """Outputs of a concatenated (labelled + unlabelled) batch, split back into the two parts."""
    return {k: v[:n] for k, v in out.items()}, {k: v[n:] for k, v in out.items()}


def _groups(model: nn.Module, prefix: str, head_lr_mult: float, attention_lr_mult: float | None = None) -> list[dict]:
    groups = param_groups(model, head_lr_mult=head_lr_mult, attention_lr_mult=attention_lr_mult)
    return [{**g, "name": f"{prefix}/{g['name']}"} for g in groups if g["params"]]


class Frozen(nn.Module):
    """A teacher that stays frozen: no parameter requires grad, the forward runs under no_grad, and
    it stays in eval mode (BatchNorm running statistics, no dropout) whatever `.train()` is called with."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.model.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> "Frozen":
        return super().train(False)

    def forward(self, x: torch.Tensor) -> Outputs:
        with torch.no_grad():  # not inference_mode: its outputs enter autograd graphs (as constants)
            return self.model(x)


def ensemble_logits(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Two segmenters' class probabilities averaged, returned as log-probabilities (so argmax and
    softmax read them as logits)."""
    return ((a.float().softmax(1) + b.float().softmax(1)) / 2).clamp_min(1e-12).log()


class Ensemble(nn.Module):
    """What the teachers predict together (`ensemble_logits`), measured before the student stage."""

    def __init__(self, a: nn.Module, b: nn.Module):
        super().__init__()
        self.a, self.b = a, b

    def forward(self, x: torch.Tensor) -> Outputs:
        return {"logits": ensemble_logits(self.a(x)["logits"], self.b(x)["logits"])}


class TeacherPair(nn.Module):
    """T_SU and T_RU as one module, so one DDP wrapper and one optimiser train both."""

    def __init__(self, global_teacher: nn.Module, local_teacher: nn.Module):
        super().__init__()
        self.global_teacher = global_teacher
        self.local_teacher = local_teacher

    def forward(self, x: torch.Tensor, fp_dropout: float = 0.0) -> tuple[Outputs, Outputs]:
        kw = {"fp_dropout": fp_dropout} if fp_dropout else {}  # UniMatch's feature perturbation only
        return self.global_teacher(x, **kw), self.local_teacher(x, **kw)


class Stage:
    name = ""
    kind = ""  # checkpoint kind of best.pt
    uses_unlabelled = False
    mixes = False  # uses data.cutmix's boxes (the teachers' CPS); the other stages refuse it

    def __init__(self, cfg: Config, trainable: dict[str, nn.Module], class_weight: torch.Tensor | None = None):
        if self.uses_unlabelled and cfg.data.cutmix and not self.mixes:
            raise ValueError(f"data.cutmix: the {self.name} stage has no CutMix in its losses (METHOD.md; only the "
                             "teachers' CPS can use it); set data.cutmix=false for this stage")
        self.cfg = cfg
        self.opts = L.LossConfig.from_cfg(cfg.method)
        self.class_weight = class_weight  # median-frequency weights (method.sup_loss / pseudo_loss: median_freq)
        self._raw = dict(trainable)
        self.run: dict[str, nn.Module] = dict(trainable)  # what step() calls: DDP-wrapped when distributed
        self.frozen: dict[str, nn.Module] = {}
        self.ctx: DistContext | None = None  # set by distribute()

    @classmethod
    def views(cls, cfg: Config) -> tuple[int, int]:
        """(strong views, CutMix boxes) each unlabelled crop needs: what data.strong / data.cutmix ask for."""
        return int(cfg.data.strong), int(cfg.data.cutmix)

    def sup(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """(6) on labelled images, as `method.sup_loss` chooses (`losses.supervised_loss`)."""
        return L.supervised_loss(logits, target, self.opts, self.class_weight)

    # -- placement -------------------------------------------------------------------------------
    def modules(self) -> dict[str, nn.Module]:
        """Trainable models, unwrapped (what gets saved)."""
        return {k: unwrap(m) for k, m in self.run.items()}

    def to(self, device: torch.device, channels_last: bool = False) -> "Stage":
        fmt = torch.channels_last if channels_last else torch.preserve_format
        for m in [*self.run.values(), *self.frozen.values()]:
            m.to(device=device, memory_format=fmt)
        return self

    def distribute(self, ctx: DistContext, sync_bn: bool = False) -> None:
        self.ctx = ctx
        self.run = {k: wrap(m, ctx, sync_bn) for k, m in self.run.items()}

    def train(self) -> None:
        for m in self.run.values():
            m.train()
        for m in self.frozen.values():
            m.train()  # Frozen keeps itself in eval mode

    def eval(self) -> None:
        for m in [*self.run.values(), *self.frozen.values()]:
            m.eval()

    # -- optimisation ----------------------------------------------------------------------------
    def param_groups(self) -> list[dict]:
        mult, att = self._lr_mults()
        return [g for k, m in self.modules().items() for g in _groups(m, k, mult, att)]

    def _lr_mults(self) -> tuple[float, float | None]:
        return self.cfg.train.head_lr_mult, self.cfg.train.attention_lr_mult

    def step(self, batch_l: dict, batch_u: dict | None, iteration: int) -> tuple[torch.Tensor, dict]:
        raise NotImplementedError

    # -- state -----------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {k: m.state_dict() for k, m in self.modules().items()}

    def load_state_dict(self, state: dict) -> None:
        mods = self.modules()
        if set(state) != set(mods):
            raise ValueError(f"checkpoint holds models {sorted(state)}, the {self.name} stage trains {sorted(mods)}")
        for k, m in mods.items():
            m.load_state_dict(state[k])

    # -- validation / export ---------------------------------------------------------------------
    def validated(self) -> dict[str, nn.Module]:
        """Models validated, by the name their mIoU is logged under."""
        return {"student": self.modules()["student"]}

    def validate(self, evaluate: Callable[[nn.Module], float]) -> dict:
        """mIoU of each validated model, `score` (what decides the best checkpoint) and, where the
        evaluator gives it (`metrics.MIoU`), `class_iou`: each model's per-class IoU."""
        self.eval()
        try:
            results = {k: evaluate(m) for k, m in self.validated().items()}
        finally:
            self.train()
        scores: dict = {f"miou_{k}": float(v) for k, v in results.items()}
        scores["score"] = sum(scores.values()) / len(scores)
        per_class = {k: v.per_class for k, v in results.items() if hasattr(v, "per_class")}
        if per_class:
            scores["class_iou"] = per_class
        return scores

    def export_payload(self, meta: dict) -> dict:
        """best.pt for this stage (export-ready); `meta` has classes, palette, mean, std, config."""
        return student_payload(self.modules()["student"], None, kind=self.kind, **meta)


class SupervisedStage(Stage):
    """Sup-only: the student network trained with (6) on labelled images alone."""
    name, kind = "supervised", "supervised"
    uses_unlabelled = False

    def __init__(self, cfg: Config, student: nn.Module, class_weight: torch.Tensor | None = None):
        super().__init__(cfg, {"student": student}, class_weight)

    def step(self, batch_l, batch_u, iteration):
        out = self.run["student"](batch_l["image"])
        loss = self.sup(out["logits"], batch_l["mask"])
        return loss, {"sup": loss.detach(), "loss": loss.detach()}


class TeachersStage(Stage):
    """Stage 1: T_SU and T_RU trained jointly with cross pseudo supervision (weight method.cps_weight);
    with data.cutmix, CPS with CutMix as in the CPS paper's CutMix experiments. With
    `method.teacher_recipe: unimatch`, each teacher learns on its own with UniMatch instead (`_unimatch`)."""
    name, kind = "teachers", "teachers"
    uses_unlabelled, mixes = True, True

    def __init__(self, cfg: Config, global_teacher: nn.Module, local_teacher: nn.Module,
                 class_weight: torch.Tensor | None = None):
        super().__init__(cfg, {"teachers": TeacherPair(global_teacher, local_teacher)}, class_weight)
        self.class_freq: torch.Tensor | None = None   # labelled class frequency (method.cps_class_power)
        self.pseudo_freq: torch.Tensor | None = None  # cross pseudo-labels' class frequency (cps_class_ratio)

    def _sum_ranks(self, counts: torch.Tensor) -> torch.Tensor:
        """Per-class pixel counts summed over ranks, so that every rank weighs alike."""
        if self.ctx is None or not self.ctx.distributed:
            return counts
        return torch.from_numpy(all_reduce_sum(counts.cpu().numpy(), self.ctx)).to(counts.device)

    def _class_weight(self, target: torch.Tensor, classes: int,
                      pseudo: list[torch.Tensor] | None = None) -> torch.Tensor | None:
        """Class-balanced CPS (`method.cps_class_power` p; off when null): update the running labelled
        class frequency with this batch (from the first iteration, warm-up included) and, with
        `method.cps_class_ratio`, the frequency of the cross `pseudo`-labels; return the cross CE's
        class weights (`class_balance.class_balance_weights`)."""
        if self.opts.cps_class_power is None:
            return None
        self.class_freq = CB.running_class_frequency(self._sum_ranks(CB.label_counts(target, classes)), self.class_freq)
        if not self.opts.cps_class_ratio:
            return CB.class_balance_weights(self.class_freq, self.opts.cps_class_power)
        if not pseudo:
            return None  # warm-up: no cross pseudo-labels yet
        counts = sum(CB.label_counts(p, classes) for p in pseudo)
        self.pseudo_freq = CB.running_class_frequency(self._sum_ranks(counts), self.pseudo_freq)
        return CB.class_balance_weights(self.class_freq, self.opts.cps_class_power, self.pseudo_freq)

    def state_dict(self) -> dict:
        state = super().state_dict()
        for key, value in ((CLASS_FREQ_KEY, self.class_freq), (PSEUDO_FREQ_KEY, self.pseudo_freq)):
            if value is not None:  # resumes weigh the cross CE as the run did
                state[key] = value.detach().cpu()
        return state

    def load_state_dict(self, state: dict) -> None:
        state = dict(state)
        self.class_freq, self.pseudo_freq = state.pop(CLASS_FREQ_KEY, None), state.pop(PSEUDO_FREQ_KEY, None)
        super().load_state_dict(state)

    def param_groups(self) -> list[dict]:
        pair, (mult, att) = self.modules()["teachers"], self._lr_mults()
        return _groups(pair.global_teacher, "global", mult, att) + _groups(pair.local_teacher, "local", mult, att)

    @classmethod
    def views(cls, cfg: Config) -> tuple[int, int]:
        return UniMatchStage.views(cfg) if cfg.method.teacher_recipe == "unimatch" else super().views(cfg)

    def step(self, batch_l, batch_u, iteration):
        if self.cfg.method.teacher_recipe == "unimatch":
            return self._unimatch(batch_l, batch_u)
        n = batch_l["image"].shape[0]
        lam = L.cps_weight_at(iteration, self.opts.cps_weight, self.opts.cps_rampup, self.opts.cps_warmup)
        if lam == 0.0:  # labelled-only warm-up (method.cps_warmup): an unlabelled forward would add nothing
            g_l, r_l = self.run["teachers"](batch_l["image"])
            self._class_weight(batch_l["mask"], g_l["logits"].shape[1])  # the frequencies count from the start
            loss, terms = L.cps_loss(g_l["logits"], r_l["logits"], batch_l["mask"], None, None, lam, sup=self.sup)
            return loss, {**terms, "lambda": torch.tensor(lam)}
        x_u, valid, targets = batch_u["image"], batch_u.get("valid"), None
        if "box" in batch_u:
            x_u, valid, targets = self._mixed(batch_u)
        # One forward per teacher over labelled + unlabelled: one graph per step, as DDP expects.
        g, r = self.run["teachers"](torch.cat([batch_l["image"], x_u]))
        (g_l, g_u), (r_l, r_u) = _split(g, n), _split(r, n)
        cross = self._cross_labels(g_u, r_u, valid, targets)
        weight = self._class_weight(batch_l["mask"], g_l["logits"].shape[1], cross)
        loss, terms = L.cps_loss(g_l["logits"], r_l["logits"], batch_l["mask"], g_u["logits"], r_u["logits"],
                                 lam, valid, self.opts.cps_labelled, targets, weight, sup=self.sup,
                                 threshold=self.opts.cps_threshold)
        return loss, {**terms, "lambda": torch.tensor(lam)}

    def _unimatch(self, batch_l, batch_u):
        """`method.teacher_recipe: unimatch`: each teacher learns with UniMatch (U3) on the same batches,
        no cross supervision; two forwards of the pair per step, as UniMatch makes of its network."""
        pair = self.run["teachers"]
        outs = pair(torch.cat([batch_l["image"], batch_u["image"]]), self.opts.unimatch_fp_dropout)
        strong = pair(L.strong_inputs(batch_u))
        (g, g_terms), (r, r_terms) = (L.unimatch_losses(o, s["logits"], batch_l, batch_u, self.opts, self.sup)
                                      for o, s in zip(outs, strong))
        terms = {**{f"{k}_g": v for k, v in g_terms.items() if k != "loss"},
                 **{f"{k}_r": v for k, v in r_terms.items() if k != "loss"}}
        return g + r, {**terms, "loss": (g + r).detach()}

    def _cross_labels(self, g_u: Outputs, r_u: Outputs, valid: torch.Tensor | None, targets) -> list[torch.Tensor]:
        """The hard labels each teacher gives the other on the unlabelled images (padding ignored), for
        `method.cps_class_ratio`; none when it is off."""
        if not self.opts.cps_class_ratio:
            return []
        ignore = None if valid is None else ~valid
        return [L.pseudo_labels(t, ignore_mask=ignore) for t in (targets or (g_u["logits"], r_u["logits"]))]

    def _mixed(self, batch_u: dict) -> tuple[torch.Tensor, torch.Tensor | None, tuple]:
        """CPS with CutMix (the CPS paper's CutMix setting, TorchSemiSeg's train.py): each teacher labels
        the unmixed images without gradient, then images, those logits and the valid maps are mixed
        alike (`losses.cutmix`), and each teacher learns on the mixed images from the other's mixed labels.
        The labelling pass runs the unwrapped pair in train mode, as CPS does (its BatchNorm sees it)."""
        box = batch_u["box"]
        with torch.no_grad():
            g0, r0 = self.modules()["teachers"](batch_u["image"])
        valid = batch_u.get("valid")
        return (L.cutmix(batch_u["image"], box), None if valid is None else L.cutmix(valid, box),
                (L.cutmix(g0["logits"], box), L.cutmix(r0["logits"], box)))

    def validated(self) -> dict[str, nn.Module]:
        pair = self.modules()["teachers"]
        return {"global": pair.global_teacher, "local": pair.local_teacher,
                "ensemble": Ensemble(pair.global_teacher, pair.local_teacher)}

    def export_payload(self, meta: dict) -> dict:
        pair = self.modules()["teachers"]
        return teachers_payload(pair.global_teacher, pair.local_teacher, **meta)


class Aligner(nn.Module):
    """The running class frequencies `method.align` needs (`losses.aligned_logits`): of the labelled
    ground truth (`prior`) and of each teacher's probabilities on unlabelled pixels (`predicted`),
    exponential moving averages over the batches (summed over ranks first under DDP), saved in last.pt."""

    def __init__(self, num_classes: int, teachers: int = 2):
        super().__init__()
        self.register_buffer("prior", torch.zeros(num_classes))
        self.register_buffer("predicted", torch.zeros(teachers, num_classes))
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))

    def _ema(self, old: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
        # CB.FREQUENCY_MOMENTUM: a horizon of ~100 iterations, steadier than one batch, follows training
        return new if int(self.updates) == 0 else CB.FREQUENCY_MOMENTUM * old + (1 - CB.FREQUENCY_MOMENTUM) * new

    @torch.no_grad()
    def forward(self, target: torch.Tensor, teachers: list[Outputs], n: int,
                valid: torch.Tensor | None = None) -> list[Outputs]:
        """Update the frequencies from this batch (`n` labelled images first) and return each teacher's
        outputs with its aligned logits added under "pseudo"."""
        classes = self.prior.numel()
        gt = CB.label_counts(target, classes).float()
        pred = []
        for t in teachers:
            p = t["logits"][n:].float().softmax(1)
            w = torch.ones_like(p[:, :1]) if valid is None else valid.unsqueeze(1).to(p.dtype)
            pred.append(torch.cat([(p * w).sum(dim=(0, 2, 3)), w.sum().view(1)]))
        stats = torch.cat([gt, *pred])
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(stats)
        gt, pred = stats[:classes], stats[classes:].view(len(teachers), classes + 1)
        self.prior.copy_(self._ema(self.prior, gt / gt.sum().clamp_min(1)))
        self.predicted.copy_(self._ema(self.predicted, pred[:, :classes] / pred[:, classes:].clamp_min(1)))
        self.updates += 1
        return [{**t, "pseudo": L.aligned_logits(t["logits"], self.prior, self.predicted[i])}
                for i, t in enumerate(teachers)]


class StudentStage(Stage):
    """Stage 2: the student learns from the frozen teachers with L = L_l + L_u, (6)-(14)."""
    name, kind = "student", "student"
    uses_unlabelled = True
    teachers_path: str | None = None

    def __init__(self, cfg: Config, student: nn.Module, global_teacher: nn.Module, local_teacher: nn.Module,
                 class_weight: torch.Tensor | None = None):
        super().__init__(cfg, {"student": student}, class_weight)
        self.frozen = {"global": Frozen(global_teacher), "local": Frozen(local_teacher)}
        self.aligner = Aligner(student.num_classes) if self.opts.align else None

    def to(self, device: torch.device, channels_last: bool = False) -> "StudentStage":
        if self.aligner is not None:
            self.aligner.to(device)
        return super().to(device, channels_last)

    def state_dict(self) -> dict:
        state = super().state_dict()
        return state if self.aligner is None else {**state, "align": self.aligner.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        state = dict(state)
        align = state.pop("align", None)
        if (align is None) != (self.aligner is None):
            raise ValueError("method.align differs from the run being resumed; resume with its setting")
        super().load_state_dict(state)
        if align is not None:
            self.aligner.load_state_dict(align)

    def step(self, batch_l, batch_u, iteration):
        n = batch_l["image"].shape[0]
        x_t = torch.cat([batch_l["image"], batch_u["image"]])
        # With data.strong the student sees the strong view of unlabelled images, the teachers the
        # weak one (photometric only, so the pixels and feature positions still correspond).
        x_s = torch.cat([batch_l["image"], batch_u.get("image_s", batch_u["image"])])
        s = self.run["student"](x_s)
        su, ru = self.frozen["global"](x_t), self.frozen["local"](x_t)
        if self.aligner is not None:
            su, ru = self.aligner(batch_l["mask"], [su, ru], n, batch_u.get("valid"))
        (s_l, s_u), (su_l, su_u), (ru_l, ru_u) = _split(s, n), _split(su, n), _split(ru, n)
        return L.total_loss(iteration, s_l, su_l, ru_l, batch_l["mask"], s_u, su_u, ru_u, self.opts,
                            batch_u.get("valid"), self.sup, self.class_weight)


class UniMatchStage(Stage):
    """The UniMatch baseline (Yang et al., CVPR 2023): the student network learns from its labels and,
    on unlabelled images, from its own confident weak-view predictions through two CutMix'd strong
    views and a feature-perturbed decode (U1-U3, losses.py)."""
    name, kind = "unimatch", "unimatch"
    uses_unlabelled, mixes = True, True

    def __init__(self, cfg: Config, student: nn.Module, class_weight: torch.Tensor | None = None):
        super().__init__(cfg, {"student": student}, class_weight)

    @classmethod
    def views(cls, cfg: Config) -> tuple[int, int]:
        return 2, 2  # two strong views, each CutMix'd with its own box

    def step(self, batch_l, batch_u, iteration):
        model = self.run["student"]
        out = model(torch.cat([batch_l["image"], batch_u["image"]]), fp_dropout=self.opts.unimatch_fp_dropout)
        return L.unimatch_losses(out, model(L.strong_inputs(batch_u))["logits"], batch_l, batch_u, self.opts, self.sup)


STAGES = {"supervised": SupervisedStage, "teachers": TeachersStage, "student": StudentStage,
          "unimatch": UniMatchStage}


def build_stage(cfg: Config, name: str, num_classes: int, teachers: str | None = None,
                class_weight: torch.Tensor | None = None) -> Stage:
    """The stage `name` with its models built from `cfg.model` (the student stage loads both
    teachers from the teachers checkpoint `teachers`, whose arch it reads from the file).
    `class_weight`: (6)'s median-frequency weights, for `method.sup_loss: median_freq`."""
    if name not in STAGES:
        raise ValueError(f"--stage {name}: choose one of {', '.join(STAGES)}")
    if name in ("supervised", "unimatch"):
        return STAGES[name](cfg, build_role(cfg, "student", num_classes), class_weight)
    if name == "teachers":
        return TeachersStage(cfg, build_role(cfg, "global_teacher", num_classes),
                             build_role(cfg, "local_teacher", num_classes), class_weight)
    if not teachers:
        raise ValueError("the student stage needs the teachers: pass --teachers runs/teachers/best.pt "
                         "(from `igldt train --stage teachers`)")
    g, r, meta = load_teachers(teachers)
    for role, m in (("global", g), ("local", r)):
        if m.num_classes != num_classes:
            raise ValueError(f"--teachers {teachers}: the {role} teacher predicts {m.num_classes} classes, "
                             f"the dataset has {num_classes}; train teachers on this dataset")
    stage = StudentStage(cfg, build_role(cfg, "student", num_classes), g, r, class_weight)
    stage.teachers_path = str(teachers)  # recorded in last.pt so a resume finds the same teachers
    return stage
