"""`igldt demo`: the whole method on the embedded synthetic dataset, in minutes on a laptop CPU.

Sup-only baseline -> CPS teachers -> IGL-DT student -> ONNX export -> inference on the demo video,
then a summary table and where every artefact is.
"""
from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import click

from igldt.cli.common import hint, resolve_config


def _available(*modules: str) -> str | None:
    """None when every module can be imported, else the first missing one."""
    for m in modules:
        try:
            if importlib.util.find_spec(m) is None:
                return m
        except ModuleNotFoundError:
            return m
    return None


def _prepare(out: Path, exist_ok: bool) -> None:
    stages = [out / s for s in ("supervised", "teachers", "student") if (out / s).exists()]
    if stages and not exist_ok:
        raise click.UsageError(f"{out} already holds a demo run ({', '.join(p.name for p in stages)}); "
                               "pass --exist-ok to run it again there, or --out another folder")


@click.command("demo")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/demo"), show_default=True,
              help="Folder for the data, the three runs, the ONNX model and the inference video.")
@click.option("-o", "--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override any key of the demo preset, e.g. -o train.iters=40 for a quicker look.")
@click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda")
@click.option("--exist-ok", is_flag=True, help="Run again into an --out that holds a previous demo (overwrites it).")
@click.option("--skip-deploy", is_flag=True, help="Stop after training (no ONNX export, no video inference).")
@click.option("--data-only", is_flag=True, help="Only generate the demo dataset into OUT/data (seconds), then stop.")
def demo(out: Path, overrides, device: str, exist_ok: bool, skip_deploy: bool, data_only: bool) -> None:
    """Train Sup-only, the CPS teachers and the IGL-DT student on the demo data, export, infer.

    \b
    igldt demo                      # about 4 minutes on 2 CPU cores
    igldt demo -o train.iters=30    # a quick look
    igldt demo --data-only          # just the data, for igldt train --preset demo
    """
    start = time.perf_counter()
    _prepare(out, exist_ok)
    cfg = resolve_config("demo", [f"data.root={out / 'data'}", *overrides])
    ds = _demo_data(cfg)
    if data_only:
        click.echo(f"demo dataset: {ds.root} ({len(ds)} train images)")
        hint(f"igldt train --stage supervised --preset demo -o data.root={ds.root}")
        return
    data_root = Path(ds.root)
    click.secho(f"demo data: {data_root} ({len(ds)} train images, {len(ds.classes)} classes)", bold=True)
    results, times = _train_stages(cfg, out, device)
    artefacts = {"data": data_root, **{f"{s} run": out / s for s in results},
                 "student weights": results["student"].best}
    deploy_note = _deploy_unless_skipped(skip_deploy, results["student"].best, out, data_root, device, artefacts, times)
    _print_scores(results)
    _print_summary(times, time.perf_counter() - start, artefacts, deploy_note)
    click.secho("\nNext:", bold=True)
    click.echo("  igldt train --stage teachers --preset camvid-cpu     # real data (CamVid)")
    click.echo(f"  igldt evaluate --weights {results['student'].best}")


def _demo_data(cfg):
    """The demo dataset's train split, generated first where it is missing (seconds)."""
    from igldt.data import DataError, build_dataset, ensure_demo_dataset

    try:
        return build_dataset("demo", ensure_demo_dataset(cfg.data.root), "train")
    except DataError as e:
        raise click.ClickException(str(e)) from None


def _train_stages(cfg, out: Path, device: str) -> tuple[dict, dict]:
    """Sup-only, teachers, student, one after the other: ({stage: FitResult}, {stage: seconds})."""
    from igldt.train.loop import train as run

    results, times = {}, {}
    for stage in ("supervised", "teachers", "student"):
        click.secho(f"\n[{stage}] {cfg.train.iters} iterations", bold=True)
        t0 = time.perf_counter()
        teachers = out / "teachers" / "best.pt" if stage == "student" else None
        results[stage] = run(cfg, stage, out / stage, teachers=teachers, device=device, exist_ok=True)
        times[stage] = time.perf_counter() - t0
        if results[stage].interrupted:  # Ctrl-C: stop the whole demo, not just this stage
            click.secho(f"demo stopped during the {stage} stage; its resumable checkpoint is "
                        f"{results[stage].last} (`igldt demo --exist-ok` starts over)", fg="yellow")
            raise SystemExit(130)
    return results, times


def _deploy_unless_skipped(skip: bool, weights: Path, out: Path, data_root: Path, device: str,
                           artefacts: dict, times: dict) -> str | None:
    """Export and video inference (adding to `artefacts` and `times`); a note when skipped, else None."""
    if skip:
        return "skipped (--skip-deploy)"
    if (missing := _available("igldt.export.pipeline", "igldt.runtime", "onnx", "onnxruntime")) is not None:
        return f"skipped: {missing} is not installed (pip install 'igldt[cpu]')"
    t0 = time.perf_counter()
    onnx_path, video_dir = _deploy(weights, out, data_root, device)
    times["export + video"] = time.perf_counter() - t0
    artefacts["ONNX model"] = onnx_path
    if video_dir is None:
        return "video inference skipped: the demo data has no demo.mp4"
    artefacts["segmented video"] = video_dir
    return None


def _print_scores(results: dict) -> None:
    """Each model's best validation mIoU, and the student's gain over Sup-only."""
    click.secho("\nIGL-DT demo: val mIoU (%) on the synthetic street scenes", bold=True)
    rows = [("Sup-only (student net, labelled only)", results["supervised"].history, "miou_student"),
            ("CPS teacher T_SU (global)", results["teachers"].history, "miou_global"),
            ("CPS teacher T_RU (local)", results["teachers"].history, "miou_local"),
            ("teachers' ensemble", results["teachers"].history, "miou_ensemble"),
            ("IGL-DT student", results["student"].history, "miou_student")]
    best = {name: max((h[key] for h in history if key in h), default=None) for name, history, key in rows}
    for name, v in best.items():
        click.echo(f"  {name:<40} {'n/a' if v is None else f'{100 * v:6.2f}'}")
    sup, stu = best[rows[0][0]], best[rows[-1][0]]
    if sup is not None and stu is not None:
        click.echo(f"  {'student - Sup-only':<40} {100 * (stu - sup):+6.2f}")
    click.echo("  (the best of each run's validations; the student and Sup-only share one architecture)")


def _print_summary(times: dict, wall: float, artefacts: dict, deploy_note: str | None) -> None:
    click.secho("\nTimes", bold=True)
    for k, v in times.items():
        click.echo(f"  {k:<16} {v:7.1f} s")
    click.echo(f"  {'total':<16} {wall:7.1f} s")
    click.secho("\nArtefacts", bold=True)
    for k, v in artefacts.items():
        click.echo(f"  {k:<16} {v}")
    if deploy_note:
        click.echo(f"  deployment: {deploy_note}")


def _deploy(weights: Path, out: Path, data_root: Path, device: str) -> tuple[Path, Path | None]:
    """Export the student to ONNX (checked against PyTorch) and segment the demo video with it."""
    from igldt.cli.main import cli
    from igldt.export.pipeline import run_export

    onnx_path = out / "student.onnx"
    click.secho(f"\n[export] {weights} -> {onnx_path}", bold=True)
    res = run_export(weights, "onnx", out=onnx_path, force=True, check_count=4, demo_root=data_root, echo=click.echo)
    if res.check:
        diff = res.check.get("max_abs_logit_diff")
        click.echo(f"  ONNX Runtime vs PyTorch on {res.check['images']} images: pixel agreement "
                   f"{100 * res.check['pixel_agreement']:.2f}%" + (f", max |logit diff| {diff:.2e}" if diff is not None else ""))
    video = data_root / "demo.mp4"
    if not video.is_file():
        return onnx_path, None
    click.secho(f"\n[infer] {video}", bold=True)
    video_dir = out / "infer"
    # Through the `igldt infer` verb itself: exactly what a user runs on an edge box.
    cli.main(["infer", str(video), "--model", str(onnx_path), "--out", str(video_dir), "--exist-ok",
              "--save-video", "--device", "cpu" if device == "cpu" else "auto"], standalone_mode=False)
    return onnx_path, video_dir
