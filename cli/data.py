"""`igldt split` and `igldt check-data`: prepare and vet a dataset before any training."""
from __future__ import annotations

from pathlib import Path

import click

from .common import hint

FORMATS = ["voc", "cityscapes", "camvid", "folder", "demo", "images"]


def _dataset(name: str | None, root: Path, split: str):
    from igldt.data import DataError, build_dataset, detect_format

    try:
        return build_dataset(name or detect_format(root), root, split)
    except DataError as e:
        raise click.ClickException(str(e)) from None


def _label(fraction: str | None, count: int | None) -> str:
    return f"{fraction.replace('/', '-').replace('%', 'pct')}" if fraction else f"{count}"


@click.command(context_settings={"show_default": True})
@click.option("--data", "root", required=True, type=click.Path(path_type=Path), help="Dataset root folder.")
@click.option("--dataset", "name", type=click.Choice(FORMATS), default=None,
              help="Format; guessed from the folder layout when omitted.")
@click.option("--split", default="train", help="Split to divide into labelled and unlabelled ids.")
@click.option("--fraction", default=None, metavar="F", help="Labelled fraction: 1/8, 0.125 or 12.5%.")
@click.option("--count", type=click.IntRange(min=1), default=None, help="Exact number of labelled items.")
@click.option("--seed", type=int, default=0, help="Split seed (same seed, same split on any machine).")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Output folder [default: splits/<dataset>/<fraction|count>_seed<seed>].")
@click.option("--force", is_flag=True, help="Replace existing labeled.txt / unlabeled.txt in --out.")
def split(root: Path, name: str | None, split: str, fraction: str | None, count: int | None, seed: int,
          out: Path | None, force: bool) -> None:
    """Write a seeded labelled/unlabelled split (labeled.txt, unlabeled.txt) of a dataset split."""
    from igldt.data import DataError, make_split, write_split

    if (fraction is None) == (count is None):
        raise click.UsageError("give exactly one of --fraction (e.g. 1/8) or --count (e.g. 46)")
    ds = _dataset(name, root, split)
    out = out or Path("splits") / ds.name / f"{_label(fraction, count)}_seed{seed}"
    try:
        labelled, unlabelled = make_split(ds.ids, fraction=fraction, count=count, seed=seed)
        lab_path, unl_path = write_split(out, labelled, unlabelled, force=force)
    except DataError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"{ds.name} '{split}': {len(ds)} items -> {len(labelled)} labelled, {len(unlabelled)} unlabelled "
               f"(seed {seed})")
    click.echo(f"  {lab_path}\n  {unl_path}")
    dataset = name or ds.name
    hint(f"igldt check-data --data {root} --dataset {dataset} --split {split}",
         f"igldt train --stage teachers -o data.dataset={dataset} -o data.root={root} "
         f"-o data.labelled_list={lab_path} -o data.unlabelled_list={unl_path}")


@click.command("check-data")
@click.option("--data", "root", required=True, type=click.Path(path_type=Path), help="Dataset root folder.")
@click.option("--dataset", "name", type=click.Choice(FORMATS), default=None,
              help="Format; guessed from the folder layout when omitted.")
@click.option("--split", "splits", multiple=True, help="Split(s) to check [default: train and val].")
@click.option("--allow-unlabelled", is_flag=True, help="Images without a mask are not a problem (unlabelled data).")
@click.option("--workers", type=click.IntRange(min=1), default=None, help="Reader threads [default: 2 x cores, max 8].")
def check_data(root: Path, name: str | None, splits: tuple[str, ...], allow_unlabelled: bool,
               workers: int | None) -> None:
    """Check every image and mask of a dataset; list all problems and exit 1 if any."""
    from igldt.data import DataError, build_dataset, check_dataset, detect_format, format_report

    try:
        fmt = name or detect_format(root)
    except DataError as e:
        raise click.ClickException(str(e)) from None
    wanted = list(splits) or (["all"] if fmt == "images" else ["train", "val"])
    failed = False
    for sp in wanted:
        try:
            ds = build_dataset(fmt, root, sp)
        except DataError as e:
            if splits:  # asked for explicitly: a missing split is an error
                raise click.ClickException(str(e)) from None
            click.echo(f"{fmt} '{sp}': skipped ({e})")
            continue
        require = not (allow_unlabelled or fmt == "images")
        problems = check_dataset(ds, require_masks=require, workers=workers)
        click.secho(f"{fmt} '{sp}' at {ds.root}: {len(ds)} items, {ds.num_classes} classes", bold=True)
        click.echo(format_report(problems, len(ds)))
        failed |= bool(problems)
    if failed:
        raise SystemExit(1)
    hint(f"igldt split --data {root} --dataset {fmt} --fraction 1/8 --seed 0")
