"""Shared options of the ``lrplan`` commands: validating callbacks, sampler and target options.

Also the two output helpers every command uses: `echo_json` (stdout: one JSON document) and
`show_progress` (NUTS's progress bar on stderr, only on a terminal).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import click

__all__ = ["echo_json", "json_option", "parse_numbers", "parse_params_range", "parse_steps",
           "positive", "positive_all", "report_path", "sampler_options", "seed_option",
           "show_progress", "target_options"]


def echo_json(doc: dict) -> None:
    """Print one JSON document on stdout (NaN refused: undefined numbers are null)."""
    click.echo(json.dumps(doc, indent=2, allow_nan=False))


def _comma_list(value, cast, what: str, example: str) -> list | None:
    """Positive finite values separated by commas, or None."""
    if value is None:
        return None
    try:
        values = [cast(s) for s in value.split(",") if s.strip()]
    except ValueError:
        raise click.BadParameter(f"give {what} separated by commas, e.g. {example}") from None
    if not values or min(values) <= 0 or not all(map(math.isfinite, values)):
        raise click.BadParameter(f"give positive {what}")
    return values


def parse_steps(ctx, param, value):
    """Callback: comma-separated positive integers, sorted and unique."""
    steps = _comma_list(value, int, "integers", "1000,2000,5000")
    return None if steps is None else sorted(set(steps))


def parse_numbers(ctx, param, value):
    """Callback: comma-separated positive numbers."""
    numbers = _comma_list(value, float, "numbers", "2e8,4e8")
    return None if numbers is None else tuple(numbers)


def parse_params_range(ctx, param, value):
    """Callback: LO,HI with LO < HI."""
    numbers = parse_numbers(ctx, param, value)
    if numbers is not None and (len(numbers) != 2 or numbers[0] >= numbers[1]):
        raise click.BadParameter("give LO,HI with LO < HI, e.g. 1e8,1e10")
    return numbers


def positive(ctx, param, value):
    """Callback: a number > 0 (or none)."""
    if value is not None and not value > 0:
        raise click.BadParameter("must be > 0")
    return value


def positive_all(ctx, param, values):
    """Callback: every value of a repeated option > 0."""
    for v in values:
        positive(ctx, param, v)
    return values


def report_path(ctx, param, value):
    """Callback: a report file, a known suffix in an existing folder (checked before any fit)."""
    if value is None:
        return None
    from lrplan.report.document import SUFFIXES

    path = Path(value)
    if path.suffix.lower() not in SUFFIXES:
        raise click.BadParameter(f"{value}: name the report .html (one self-contained file) or .md")
    if not path.parent.is_dir():
        raise click.BadParameter(f"{value}: folder {path.parent} does not exist; create it first")
    return path


seed_option = click.option("--seed", default=0, show_default=True, help="Random seed.")
json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")


def sampler_options(warmup: int, minimum: int = 50):
    """NUTS's --chains, --warmup and --samples, with the command's default warmup."""
    def add(f):
        f = click.option("--samples", "num_samples", default=1000, show_default=True,
                         type=click.IntRange(minimum))(f)
        f = click.option("--warmup", "num_warmup", default=warmup, show_default=True,
                         type=click.IntRange(minimum))(f)
        return click.option("--chains", default=2, show_default=True, type=click.IntRange(1, 16))(f)
    return add


def target_options(f):
    """RUNS and the target's size, tokens and batch: the arguments `plan` and `next` share."""
    for option in reversed((
        click.argument("runs", type=click.Path(dir_okay=False)),
        click.option("--meta", type=click.Path(dir_okay=False), help="Per-run metadata file."),
        click.option("--params", required=True, type=float, callback=positive, help="Target model size N."),
        click.option("--tokens", required=True, type=float, callback=positive,
                     help="Target training tokens D."),
        click.option("--tokens-per-step", type=float, callback=positive,
                     help="Target batch in tokens [default: the runs' batch, when they share one]."),
    )):
        f = option(f)
    return f


def show_progress(as_json: bool = False) -> bool:
    """NUTS progress bar on stderr: only on a terminal, and not with ``--quiet`` or ``--json``."""
    quiet = click.get_current_context().find_root().params.get("quiet")
    return sys.stderr.isatty() and not quiet and not as_json
