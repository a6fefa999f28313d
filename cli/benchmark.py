"""`igldt benchmark`: one table over artefacts (.pt, ONNX fp32/fp16/int8, TensorRT): status, size,
mIoU, p50/p90 latency and FPS on real images, after a warm-up."""
from __future__ import annotations

from pathlib import Path

import click


def _images(data, dataset, split, images_dir, first_meta, count):
    """Real images (and the labelled dataset for mIoU, when there is one)."""
    from igldt.data import build_dataset

    if images_dir:
        from igldt.runtime.preprocess import read_image
        from igldt.runtime.sources import list_images
        paths = list_images(images_dir)[:count]
        if not paths:
            raise click.UsageError(f"--images {images_dir}: no images inside")
        return [read_image(p) for p in paths], None, f"{len(paths)} images from {images_dir}"
    if not data:
        d = (first_meta or {}).get("dataset") or {}
        data, dataset, split = d.get("root"), dataset or d.get("name"), split or d.get("val_split")
    if not data:
        raise click.UsageError("no images to time: pass --data ROOT --dataset NAME (with labels, for mIoU) or --images DIR")
    try:
        ds = build_dataset(dataset or "folder", data, split or "val")
    except Exception as e:
        raise click.UsageError(f"--data {data} --dataset {dataset} --split {split}: {e}") from None
    n = min(count, len(ds))
    return [ds.load_image(i) for i in range(n)], ds, f"{dataset} {split or 'val'} at {data}"


@click.command()
@click.argument("artefacts", nargs=-1, required=True, type=click.Path())
@click.option("--data", default=None, metavar="ROOT", help="Labelled dataset root (for mIoU and timing images).")
@click.option("--dataset", default=None, metavar="NAME", help="voc | cityscapes | camvid | folder | demo")
@click.option("--split", default=None, help="Split to use (default: val).")
@click.option("--images", "images_dir", default=None, type=click.Path(file_okay=False), help="Unlabelled images to time on.")
@click.option("--limit", type=int, default=None, help="Images scored for mIoU (default: the whole split).")
@click.option("--runs", type=int, default=50, show_default=True, help="Timed calls per artefact.")
@click.option("--warmup", type=int, default=5, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--threads", type=int, default=None, help="CPU threads for ONNX Runtime (default: all).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None, help="Also write the rows as JSON.")
def benchmark(artefacts, data, dataset, split, images_dir, limit, runs, warmup, device, threads, json_out):
    """Compare deployment artefacts on the same real images: status, size, mIoU, latency, FPS."""
    from igldt.runtime import DeployError, Predictor
    from igldt.runtime.bench import measure_latency

    predictors, rows = {}, []
    for a in artefacts:
        try:
            predictors[a] = Predictor(a, device=device, threads=threads)
        except DeployError as e:
            predictors[a] = e
    first = next((p.meta for p in predictors.values() if not isinstance(p, Exception)), None)
    images, ds, desc = _images(data, dataset, split, images_dir, first, max(runs, 1))
    click.echo(f"Timing on {len(images)} real images ({desc}); {warmup} warm-up + {runs} timed calls each")
    for a in artefacts:
        p = predictors[a]
        size = Path(a).stat().st_size / 2**20 if Path(a).is_file() else float("nan")
        row = {"artefact": a, "size_mib": size}
        if isinstance(p, Exception):
            rows.append({**row, "status": f"error: {p}"})
            continue
        row.update(backend=p.backend.name, precision=p.meta.get("precision"), status="ok")
        try:
            if ds is not None:
                from igldt.export.parity import engine_miou
                row["miou"] = engine_miou(p, ds, limit)
            row.update(measure_latency(p, images, runs, warmup))
        except (DeployError, ValueError) as e:
            row["status"] = f"error: {e}"
        rows.append(row)

    def f(v, fmt):
        return format(v, fmt) if isinstance(v, (int, float)) and v == v else "-"

    w = max(len(r["artefact"]) for r in rows)
    head = f"{'artefact':<{w}}  {'backend':<11} {'prec':<5} {'status':<6} {'MiB':>7} {'mIoU':>6} {'p50 ms':>8} {'p90 ms':>8} {'FPS':>7}"
    click.echo(head)
    click.echo("-" * len(head))
    for r in rows:
        ok = r["status"] == "ok"
        click.echo(f"{r['artefact']:<{w}}  {r.get('backend', '-'):<11} {str(r.get('precision') or '-'):<5} "
                   f"{'ok' if ok else 'error':<6} {f(r['size_mib'], '7.1f'):>7} "
                   f"{f(100 * r['miou'] if r.get('miou') is not None else None, '6.2f'):>6} "
                   f"{f(r.get('p50_ms'), '8.1f'):>8} {f(r.get('p90_ms'), '8.1f'):>8} {f(r.get('fps'), '7.1f'):>7}")
    for r in rows:
        if r["status"] != "ok":
            click.echo(f"{r['artefact']}: {r['status']}")
    if json_out:
        from igldt.io import write_json_atomic
        write_json_atomic(json_out, rows)
        click.echo(f"rows: {json_out}")
