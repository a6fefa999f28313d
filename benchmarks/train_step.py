"""Time one student-stage training step, part by part, at a preset's crop and batch.

    python benchmarks/train_step.py                      # camvid-cpu on CPU, 2 threads
    python benchmarks/train_step.py --preset demo --steps 3
    python benchmarks/train_step.py --device cuda --preset voc-r50

Parts: student forward, each (frozen) teacher forward, the losses (6)-(14), student backward,
optimiser step. The whole step is then timed again without breaks in between and reported as a
ratio of the sum of its parts (about 1.0: nothing outside the parts costs time; on CUDA the parts
are synchronised, so the whole step may come out below their sum). Inputs are synthetic tensors of
the preset's `data.crop` and `train.batch_size` (labelled + as many unlabelled); models are randomly
initialised (speed does not depend on the weights). Warm-up steps first, then the median of each part.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

CLASSES = {"camvid": 11, "voc": 21, "cityscapes": 19, "demo": 7}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="camvid-cpu")
    ap.add_argument("-o", "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--classes", type=int, default=None, help="default: by data.dataset (camvid 11, voc 21, ...)")
    args = ap.parse_args(argv)

    from igldt import losses as L
    from igldt.config import load_config
    from igldt.models import build_role
    from igldt.train.optim import build_amp, build_optimizer
    from igldt.train.stages import StudentStage

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = load_config(args.preset, args.overrides)
    dev = torch.device(args.device)
    n_cls = args.classes or CLASSES.get(cfg.data.dataset, 21)
    (h, w), b = cfg.data.crop, int(cfg.train.batch_size)
    stage = StudentStage(cfg, build_role(cfg, "student", n_cls), build_role(cfg, "global_teacher", n_cls),
                         build_role(cfg, "local_teacher", n_cls)).to(dev)
    stage.train()
    opt = build_optimizer(stage.param_groups(), cfg.train)
    amp = build_amp(cfg.train.amp, dev)
    student, t_su, t_ru = stage.run["student"], stage.frozen["global"], stage.frozen["local"]
    x_l, x_u = torch.randn(b, 3, h, w, device=dev), torch.randn(b, 3, h, w, device=dev)
    y = torch.randint(0, n_cls, (b, h, w), device=dev)
    x = torch.cat([x_l, x_u])

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def timed(fn):
        sync()
        t = time.perf_counter()
        out = fn()
        sync()
        return out, time.perf_counter() - t

    parts: dict[str, list[float]] = {k: [] for k in
                                     ("student forward", "global teacher forward", "local teacher forward",
                                      "losses", "student backward", "optimiser")}
    whole: list[float] = []
    cpu: list[float] = []
    for i in range(args.warmup + args.steps):
        it = i + 1
        with amp.autocast():
            s, t1 = timed(lambda: student(x))
            su, t2 = timed(lambda: t_su(x))
            ru, t3 = timed(lambda: t_ru(x))

            def loss_fn():
                split = [({k: v[:b] for k, v in o.items()}, {k: v[b:] for k, v in o.items()}) for o in (s, su, ru)]
                (s_l, s_u), (su_l, su_u), (ru_l, ru_u) = split
                return L.total_loss(it, s_l, su_l, ru_l, y, s_u, su_u, ru_u, stage.opts)[0]
            loss, t4 = timed(loss_fn)
        _, t5 = timed(lambda: amp.scaler.scale(loss).backward())

        def step():
            amp.scaler.step(opt)
            amp.scaler.update()
            opt.zero_grad(set_to_none=True)
        _, t6 = timed(step)

        def full():  # the loop's step, no timing breaks
            with amp.autocast():
                loss_, _ = stage.step({"image": x_l, "mask": y}, {"image": x_u}, it)
            amp.scaler.scale(loss_).backward()
            step()
        c0 = time.process_time()
        _, tw = timed(full)
        c1 = time.process_time()
        if i >= args.warmup:
            cpu.append(c1 - c0)
            for k, v in zip(parts, (t1, t2, t3, t4, t5, t6)):
                parts[k].append(v)
            whole.append(tw)

    med = {k: statistics.median(v) * 1000 for k, v in parts.items()}
    total = statistics.median(whole) * 1000
    print(f"student stage step, preset {args.preset}: batch {b}+{b} at {h}x{w}, {n_cls} classes, device {dev}, "
          f"{torch.get_num_threads()} threads, amp {amp.name}; median of {args.steps} after {args.warmup} warm-up")
    print(f"  student {cfg.model.student.backbone} | global teacher {stage.frozen['global'].model.arch['backbone']}"
          f" | local teacher {stage.frozen['local'].model.arch['backbone']}")
    for k, v in med.items():
        print(f"  {k:<24}{v:10.1f} ms")
    parts_sum = sum(med.values())
    print(f"  {'sum of parts':<24}{parts_sum:10.1f} ms")
    print(f"  {'whole step':<24}{total:10.1f} ms   ratio whole / sum of parts = {total / parts_sum:.2f}")
    # CPU seconds per wall second: about the thread count on an idle machine, less when shared
    print(f"  {'whole step CPU time':<24}{statistics.median(cpu) * 1000:10.1f} ms   "
          f"(busy threads {statistics.median(cpu) * 1000 / total:.2f} of {torch.get_num_threads()})")


if __name__ == "__main__":
    main()
