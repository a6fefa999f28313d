"""`igldt suggest`: which unlabelled images to label next, from where the two teachers disagree."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from igldt.cli.common import config_options, hint

SHEET_ROWS = 24  # picks drawn in suggested.png (all are in suggested.txt and scores.csv)
OUTPUTS = ("suggested.txt", "labeled.txt", "unlabeled.txt", "scores.csv", "suggested.png")


def load_networks(teachers: Path | None, weights: Path | None, device):
    """([global, local] or [one network], checkpoint meta); one-line errors for a wrong checkpoint."""
    from igldt.checkpoint import CheckpointError, load_checkpoint, load_model, load_teachers

    try:
        if teachers is not None:
            kind = load_checkpoint(teachers).get("kind")
            if kind != "teachers":
                raise click.UsageError(f"--teachers {teachers} is a '{kind}' checkpoint, not two teachers; "
                                       "pass the teachers stage's best.pt, or this file as --weights (entropy only)")
            g, l, meta = load_teachers(teachers, device)
            return [g, l], meta
        model, meta = load_model(weights, device)
        return [model], meta
    except CheckpointError as e:
        raise click.UsageError(str(e)) from None


def pool_config(meta: dict, preset: str | None, overrides: tuple[str, ...], data: str | None, dataset: str | None):
    """The config whose unlabelled pool is ranked: the checkpoint's own training config (or --preset),
    then -o overrides, --data and --dataset, so the pool is the one a run with that config trains on."""
    from igldt.config import ConfigError, config_from_dict, load_config

    extra = [*overrides, *([f"data.root={data}"] if data else []), *([f"data.dataset={dataset}"] if dataset else [])]
    try:
        if preset is None and meta.get("config"):
            return config_from_dict(meta["config"], extra)
        return load_config(preset, extra)
    except ConfigError as e:
        raise click.UsageError(str(e)) from None


def refuse_overwrite(out: Path, exist_ok: bool) -> None:
    taken = [out / f for f in OUTPUTS if (out / f).exists()]
    if taken and not exist_ok:
        raise click.UsageError(f"--out {out} already holds {taken[0].name}; pass --exist-ok to replace it or another --out")


@click.command("suggest")
@click.option("--teachers", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="Teachers checkpoint (`igldt train --stage teachers`): ranks by their disagreement.")
@click.option("--weights", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="A single network's checkpoint instead: ranks by its entropy.")
@click.option("--data", default=None, metavar="ROOT", help="Dataset root. Default: the checkpoint's data.root.")
@click.option("--dataset", default=None, metavar="NAME", help="Dataset name. Default: the checkpoint's.")
@config_options
@click.option("--count", "-k", type=click.IntRange(min=1), default=10, show_default=True, help="Images to suggest.")
@click.option("--method", type=click.Choice(["disagreement", "balanced", "kl", "entropy", "random"]),
              default=None, help="disagreement: share of pixels whose teachers' classes differ (default with "
              "teachers); balanced: the same, class-balanced; kl: symmetric KL of their softmaxes; entropy: of "
              "the ensemble (default with --weights); random: the control.")
@click.option("--diverse/--no-diverse", default=True, show_default=True,
              help="Pick from the --shortlist x count best-ranked images those far apart (pooled decoder "
                   "features): near-duplicate video frames give one pick, not several.")
# the choices are suggest.DIVERSITY, written out: importing igldt.suggest loads torch (tests check they agree)
@click.option("--diversity", type=click.Choice(["kcenter", "clusters"]), default="kcenter", show_default=True,
              help="With --diverse: kcenter: from the --shortlist, picks far apart; clusters: the pool in --count "
                   "k-means clusters of its features, the highest-scored image of each (picks follow the pool's "
                   "make-up).")
@click.option("--shortlist", type=click.IntRange(min=1), default=3, show_default=True,
              help="With --diverse: how many times --count best-ranked images the picks come from.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of --method random.")
@click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda | cuda:N")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/suggest"), show_default=True)
@click.option("--exist-ok", is_flag=True, help="Replace the outputs of an earlier suggest in --out.")
def suggest(teachers, weights, data, dataset, preset, overrides, count, method, diverse, diversity, shortlist, seed,
            device, out, exist_ok) -> None:
    """Rank the unlabelled pool and write the images to label next.

    Writes OUT/suggested.txt (the picks' ids, the split-list format `igldt train` reads), OUT/labeled.txt
    and OUT/unlabeled.txt (the labelled list the pool came from plus the picks, and the pool without
    them: train on those two once the picks are labelled), OUT/scores.csv (every pool image, its scores and rank) and OUT/suggested.png (each pick with the
    teachers' labels and their disagreement heat map).
    \b
    igldt suggest --teachers runs/teachers/best.pt --count 10
    igldt suggest --teachers best.pt --data ../camvid --dataset camvid -o data.fraction=1/32 --out runs/round1
    """
    import numpy as np
    from tqdm import tqdm

    from igldt import suggest as S
    from igldt.data import DataError
    from igldt.data.loaders import train_datasets
    from igldt.evaluate import resolve_device
    from igldt.figures import write_png
    from igldt.io import write_text_atomic

    if (teachers is None) == (weights is None):
        raise click.UsageError("pass --teachers CHECKPOINT (two teachers) or --weights CHECKPOINT (one network)")
    method = method or ("disagreement" if teachers else "entropy")
    if weights is not None and method not in S.TEACHERLESS:
        raise click.UsageError(f"--method {method} needs two teachers (--teachers); with --weights use entropy or random")
    refuse_overwrite(out, exist_ok)
    dev = resolve_device(device)
    networks, meta = load_networks(teachers, weights, dev)
    cfg = pool_config(meta, preset, overrides, data, dataset)
    try:
        labelled, pool = train_datasets(cfg.data)
    except (DataError, OSError) as e:
        raise click.UsageError(f"the pool of --data {cfg.data.root} --dataset {cfg.data.dataset}: {e}") from None
    if pool is None or len(pool) == 0:
        raise click.UsageError(f"the unlabelled pool of {cfg.data.root} is empty: every image is labelled "
                               "(set data.fraction, data.count or data.labelled_list to leave some unlabelled)")
    if count > len(pool):
        raise click.UsageError(f"--count {count} is larger than the unlabelled pool ({len(pool)} images)")
    mean, std = meta.get("mean", cfg.data.mean), meta.get("std", cfg.data.std)
    classes = list(meta.get("classes") or pool.classes)
    with tqdm(total=len(pool), desc="suggest", unit="img", file=sys.stderr, disable=not sys.stderr.isatty()) as bar:
        result = S.score_pool(networks, pool, mean, std, dev, progress=lambda i: bar.update(1))
    picks, order = S.suggest(result, count, method, diverse, shortlist, seed, diversity)
    diverse = diverse and method != "random"

    out.mkdir(parents=True, exist_ok=True)
    spread = (", diverse" + (f" ({diversity})" if diversity == "clusters" else "")) if diverse else ""
    header = (f"# igldt suggest: {count} images by {method}{spread} from "
              f"{teachers or weights}; append to your labelled list and train again\n")
    write_text_atomic(out / "suggested.txt", header + "".join(f"{result.ids[i]}\n" for i in picks))
    write_text_atomic(out / "labeled.txt", "".join(f"{i}\n" for i in [*labelled.ids, *(result.ids[i] for i in picks)]))
    chosen = set(picks)
    write_text_atomic(out / "unlabeled.txt", "".join(f"{x}\n" for i, x in enumerate(result.ids) if i not in chosen))
    write_text_atomic(out / "scores.csv", S.scores_table(result, order, picks, classes))
    palette = np.asarray(meta.get("palette") or pool.palette, np.uint8).reshape(-1, 3)
    rows = []
    for rank, i in enumerate(picks[:SHEET_ROWS], 1):
        image = pool.load_image(i)
        p_g, p_l, _ = S.predict_pair(networks, image, mean, std, dev)
        rows.append(S.sheet_row(rank, result.ids[i], image, p_g, p_l, result.stats[i], classes, palette, 320))
    write_png(out / "suggested.png", S.draw_sheet(rows, len(networks) == 2, classes, palette, 320))

    click.secho(f"{len(picks)} of {len(pool)} unlabelled images by {method}"
                + ((f", diverse (from the {shortlist * count} best)" if diversity == "kcenter" else
                    f", one from each of {count} clusters of the pool") if diverse else "")
                + f"; closest two picks {S.closest_pair(result.features[picks]):.3f} apart (cosine distance of "
                  f"pooled features; the pool's median nearest neighbour {S.median_nearest(result.features):.3f})",
                bold=True)
    for rank, i in enumerate(picks[:5], 1):
        s = result.scores
        click.echo(f"  #{rank} {result.ids[i]}  disagreement {s['disagreement'][i]:.3f}  entropy {s['entropy'][i]:.3f}"
                   f"  {S.top_pair_text(result.stats[i], classes)}")
    click.echo(f"written: {', '.join(str(out / f) for f in OUTPUTS)}")
    click.echo(f"Label the images of {out / 'suggested.txt'}, then train on the enlarged split:")
    hint(f"igldt train --stage teachers{f' --preset {preset}' if preset else ''} -o data.root={cfg.data.root} "
         f"-o data.dataset={cfg.data.dataset} -o data.labelled_list={out / 'labeled.txt'} "
         f"-o data.unlabelled_list={out / 'unlabeled.txt'}")
