"""The ``lrplan`` click group: logging options, the one error funnel, JAX set-up, entry point.

Results go to stdout (``--json``: one JSON document and nothing else); logs and progress go to
stderr. Every `LrplanError` and usage error becomes one line on stderr and exit status 2, here
and nowhere else. The subcommands live in `lrplan.cli.curves` (fit, predict, schedule,
report), `lrplan.cli.plan` (plan, next, budget) and `lrplan.cli.study` (backtest, import, demo).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import click

from lrplan.cli import curves, study
from lrplan.cli import plan as plan_commands
from lrplan.errors import LrplanError

__all__ = ["cli", "main", "setup_jax"]


def setup_jax(chains: int = 2) -> None:
    """Configure JAX before its first use: one CPU device per chain, x64, a compile cache."""
    flag = f"--xla_force_host_platform_device_count={max(chains, 1)}"
    if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + flag).strip()
    import jax

    jax.config.update("jax_enable_x64", True)
    cache = os.environ.get("LRPLAN_CACHE_DIR") or str(Path.home() / ".cache" / "lrplan" / "jax")
    try:
        Path(cache).mkdir(parents=True, exist_ok=True)
        jax.config.update("jax_compilation_cache_dir", cache)
        # every program: a fit's programs are shared across fits and processes (lrplan.bayes),
        # and most compile in under the default 1 s
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    except OSError:  # a read-only home only costs compile time
        pass


class _Group(click.Group):
    """Turns every `LrplanError` and usage error into one line on stderr and exit status 2."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except LrplanError as e:
            click.echo(f"lrplan: error: {e}", err=True)
            ctx.exit(2)
        except click.UsageError as e:
            where = e.ctx.command_path if e.ctx is not None else ctx.command_path
            click.echo(f"lrplan: error: {e.format_message()} (see `{where} --help`)", err=True)
            ctx.exit(2)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="lrplan")
@click.option("-v", "--verbose", count=True, help="More log output on stderr.")
@click.option("-q", "--quiet", is_flag=True, help="Only errors on stderr.")
def cli(verbose: int, quiet: bool) -> None:
    """Plan a large training run's learning rate and loss from a few small runs."""
    level = logging.ERROR if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    logging.basicConfig(level=level, format="lrplan: %(message)s", stream=sys.stderr)
    for noisy in ("jax", "absl", "numpyro", "arviz", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


for _command in (curves.fit, curves.predict, curves.schedule, curves.report, plan_commands.plan,
                 plan_commands.next_, plan_commands.budget, study.backtest, study.import_, study.demo):
    cli.add_command(_command)


def main(argv=None) -> None:
    """Console entry point."""
    import warnings

    # ArviZ announces its 1.0 refactor once a day on import; stderr is for lrplan's own news
    warnings.filterwarnings("ignore", message=r"\s*ArviZ is undergoing", category=FutureWarning)
    setup_jax()
    cli.main(args=argv, prog_name="lrplan")
