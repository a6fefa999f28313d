"""Small helpers shared by the CLI verbs."""
from __future__ import annotations

import click

from igldt.config import ConfigError, load_config


def config_options(f):
    """--preset / --config / -o key=value, shared by every verb that reads a training config."""
    f = click.option("-o", "--set", "overrides", multiple=True, metavar="KEY=VALUE",
                     help="Override any config key, e.g. -o train.lr=0.02 -o data.crop=[256,256].")(f)
    f = click.option("--preset", default=None, metavar="NAME|FILE.yaml",
                     help="Preset name (voc-r50, voc-r101, cityscapes-r101, camvid-cpu, demo) or a YAML file.")(f)
    return f


def resolve_config(preset, overrides, stage=None, **sections):
    try:
        return load_config(preset, overrides, stage, **sections)
    except ConfigError as e:
        raise click.UsageError(str(e)) from None


def hint(*commands: str) -> None:
    """Print the next commands a user is likely to run, Ultralytics style."""
    click.secho("Next:", bold=True)
    for c in commands:
        click.echo(f"  {c}")
