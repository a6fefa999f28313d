#!/usr/bin/env python
"""Which loss term drives the IGL-DT student? Gradient norm of each term of (6)-(13) over the
student's parameters, on one batch of the preset's data, with the given teachers.

    python scripts/gradient_share.py runs/camvid/seed0/teachers/best.pt [--student best.pt] [-o key=value ...]
"""
import argparse

import torch
from igldt.config import load_config
from igldt.models import build_role
from igldt.checkpoint import load_teachers
from igldt.data.loaders import build_train_loaders
from igldt import losses as L
from igldt.train.stages import Frozen
ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
ap.add_argument("teachers")
ap.add_argument("--student", default=None, help="a student checkpoint (default: a fresh student of the preset)")
ap.add_argument("--preset", default="camvid-cpu")
ap.add_argument("-o", dest="overrides", action="append", default=[])
args = ap.parse_args()
ckpt = args.student
cfg = load_config(args.preset, ["data.workers=0", *args.overrides])
g, r, _ = load_teachers(args.teachers)
g, r = Frozen(g), Frozen(r)
s = build_role(cfg, "student", g.model.num_classes)
if ckpt:
    from igldt.checkpoint import load_model
    s = load_model(ckpt)[0]
s.train()
lab, unl = build_train_loaders(cfg, 0, 1)
bl, bu = next(iter(lab)), next(iter(unl))
opts = L.LossConfig.from_cfg(cfg.method)
n = bl["image"].shape[0]
x = torch.cat([bl["image"], bu["image"]])
so = s(x); go = g(x); ro = r(x)
sp = lambda o: ({k: v[:n] for k, v in o.items()}, {k: v[n:] for k, v in o.items()})
(sl, su), (gl, gu), (rl, ru) = sp(so), sp(go), sp(ro)
valid = bu.get("valid")
terms = {
 "sup (6)": L.supervised_ce(sl["logits"], bl["mask"]),
 "CE(S,Y_SU) labelled": L.pseudo_label_ce(sl["logits"], gl["logits"], opts.threshold, bl["mask"]),
 "CE(S,Y_RU) labelled": L.pseudo_label_ce(sl["logits"], rl["logits"], opts.threshold, bl["mask"]),
 "CE(S,Y_SU) unlabelled": L.pseudo_label_ce(su["logits"], gu["logits"], opts.threshold, valid=valid),
 "CE(S,Y_RU) unlabelled": L.pseudo_label_ce(su["logits"], ru["logits"], opts.threshold, valid=valid),
 "L_Glo": L.global_context_loss(su["logits"], gu["logits"], valid),
 "alpha*L_Dis(S,T_RU)": opts.alpha * L.discrepancy_loss(su["features"], ru["features"], valid),
 "L_Loc": L.local_regional_loss(su["features"], ru["features"], opts.grid),
 "alpha*L_Dis(S,T_SU)": opts.alpha * L.discrepancy_loss(su["features"], gu["features"], valid),
}
params = [p for p in s.parameters() if p.requires_grad]
norms = {}
for k, v in terms.items():
    gr = torch.autograd.grad(v, params, retain_graph=True, allow_unused=True)
    norms[k] = torch.sqrt(sum((x.float() ** 2).sum() for x in gr if x is not None)).item()
ref = norms["sup (6)"]
for k, v in terms.items():
    print(f"{k:26s} value {v.item():8.4f}   grad norm {norms[k]:8.4f}   ({norms[k] / ref:5.2f} x sup)")
