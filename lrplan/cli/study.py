"""``lrplan backtest``, ``import`` and ``demo``: scoring lrplan, reading tracker logs, a tour."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from lrplan.cli.options import echo_json, json_option, positive, sampler_options, seed_option, show_progress
from lrplan.cli.render import diag_line, print_next, print_plan
from lrplan.errors import LrplanError

__all__ = ["backtest", "demo", "import_"]

log = logging.getLogger("lrplan")


@click.command()
@click.argument("runs", type=click.Path(dir_okay=False))
@click.option("--meta", type=click.Path(dir_okay=False), help="Per-run metadata file.")
@click.option("--holdout", required=True,
              help="Runs to predict: schedule:NAME1,NAME2 (or a glob), horizon:STEPS, "
                   "horizon:tokens=D, horizon:ratio=TOKENS_PER_PARAM, size:N or size:rolling; "
                   "join clauses with ';'.")
@click.option("--law", type=click.Choice(["auto", "multipower", "annealing"]), default="auto",
              show_default=True, help="Curve law of lrplan's fits (auto: weighed by held-out score).")
@sampler_options(warmup=400, minimum=10)
@click.option("--bootstrap", "n_boot", default=100, show_default=True, type=click.IntRange(1),
              help="Bootstrap refits of the Huber baseline.")
@click.option("--report", "report_file", type=click.Path(dir_okay=False),
              help="Markdown file for the summary and per-run tables.")
@click.option("--jobs", default=1, show_default=True, type=click.IntRange(1),
              help="Fit the folds of a curve backtest in this many processes (same tables).")
@click.option("--cluster", metavar="ADDRESS",
              help="Fit the folds of a curve backtest on a Dask cluster, e.g. tcp://host:8786 (pip install "
                   "'lrplan[cluster]').")
@seed_option
@json_option
def backtest(runs, meta, holdout, law, chains, num_warmup, num_samples, n_boot, report_file, jobs,
             cluster, seed, as_json):
    """Hold runs of RUNS out, fit lrplan and the baselines on the rest, score the predictions."""
    from lrplan.data import load_runs
    from lrplan.evaluate import backtest as bt

    runset = load_runs(runs, meta=meta)
    if all(r.final_only for r in runset):
        recommend = bt.transfer_recommender(seed=seed, chains=chains, num_warmup=num_warmup,
                                            num_samples=num_samples)
        result = bt.backtest_sweep(bt.sweep_frame(runset), holdout, recommend=recommend)
    elif cluster:
        with _dask_client(cluster) as client:
            result = bt.backtest_curves(runset, holdout, law=law, seed=seed, chains=chains,
                                        num_warmup=num_warmup, num_samples=num_samples,
                                        n_boot=n_boot, executor=client.get_executor())
    else:
        result = bt.backtest_curves(runset, holdout, law=law, seed=seed, chains=chains,
                                    num_warmup=num_warmup, num_samples=num_samples, n_boot=n_boot,
                                    jobs=jobs)
    if report_file:
        bt.write_report(report_file, result.to_markdown())
    if as_json:
        echo_json(result.to_json())
        return
    for note in result.notes:
        log.info(note)
    click.echo(bt.markdown_table(result.summary))
    click.echo("fit wall time: " + ", ".join(f"{k} {v:.1f} s" for k, v in result.timings.items()))


def _dask_client(address: str):
    """A Dask client of the cluster at ``address``; a missing package or cluster is one line."""
    try:
        from distributed import Client
    except ImportError:
        raise LrplanError("--cluster needs Dask: pip install 'lrplan[cluster]'") from None
    try:
        return Client(address, timeout="20s")
    except OSError as e:
        raise LrplanError(f"--cluster {address}: no Dask scheduler answers ({e})") from None


@click.command(name="import")
@click.argument("sources", nargs=-1, required=True, type=click.Path())
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Runs file to write (.csv, .parquet or .jsonl).")
@click.option("--format", "fmt", type=click.Choice(["auto", "wandb", "tensorboard", "hf", "mlflow", "csv"]),
              default="auto", show_default=True, help="Format of the SOURCES.")
@click.option("--loss", "loss_key", help="Key of the loss [default: an eval loss, else a train loss].")
@click.option("--lr", "lr_key", help="Key of the logged LR [default: lr, learning_rate, ...].")
@click.option("--step", "step_key", help="Step column of a table [default: iter, global_step, step, _step].")
@click.option("--tokens", "tokens_key", help="Key of the cumulative tokens seen.")
@click.option("--run", "run_names", multiple=True, help="Name of each run found, in order (repeat).")
@click.option("--run-column", help="Column of run ids in a csv table [default: run, if present].")
@click.option("--config", "configs", multiple=True, type=click.Path(dir_okay=False),
              help="W&B run config JSON, one per source in order [default: NAME.config.json beside it].")
@click.option("--meta", type=click.Path(dir_okay=False),
              help="Per-run metadata file (run, params, ...): its values win over the logs'.")
@click.option("--params", type=float, callback=positive, help="Non-embedding parameters of every run.")
@click.option("--tokens-per-step", type=float, callback=positive, help="Batch in tokens of every run.")
@click.option("--seq-len", type=float, callback=positive, help="Sequence length (for a batch in sequences).")
@click.option("--peak-lr", type=float, callback=positive, help="Peak LR of every run.")
@click.option("--warmup-steps", type=click.IntRange(0), help="Warmup steps of every run.")
@click.option("--schedule", help="Schedule spec of every run (used where the logged LR is sparse).")
@click.option("--loss-unit", type=click.Choice(["nats", "bits", "perplexity"]), default="nats",
              show_default=True, help="Unit of the logged loss (converted to nats/token).")
@click.option("--duplicates", type=click.Choice(["error", "last"]), default="error", show_default=True,
              help="A step logged twice with different values (a resumed run): refuse, or keep the later.")
@json_option
def import_(sources, output, fmt, loss_key, lr_key, step_key, tokens_key, run_names, run_column, configs,
            meta, params, tokens_per_step, seq_len, peak_lr, warmup_steps, schedule, loss_unit, duplicates,
            as_json):
    """Turn tracker logs (W&B, TensorBoard, HF Trainer, MLflow, CSV) in SOURCES into a runs file."""
    from lrplan.importers import import_runs, write_runs

    settings = {"params": params, "tokens_per_step": tokens_per_step, "peak_lr": peak_lr,
                "warmup_steps": warmup_steps, "schedule": schedule}
    imported = import_runs(sources, format=fmt, loss=loss_key, lr=lr_key, step=step_key,
                           tokens=tokens_key, run_names=run_names, run_column=run_column,
                           configs=configs, meta=meta, settings=settings, seq_len=seq_len,
                           loss_unit=loss_unit, duplicates=duplicates)
    write_runs(imported, output)
    if as_json:
        echo_json({"output": str(output), **imported.to_json()})
        return
    for note in imported.notes:
        log.info(note)
    click.echo(f"{len(imported.runs)} run(s), {len(imported.frame)} rows -> {output}")
    for r in imported.runs:
        click.echo(f"  {r.name}: loss {r.loss_key!r} ({r.loss_kind}), lr {r.lr_key!r}, "
                   f"{r.rows} points")


@click.command()
@click.option("--out", "out_dir", default="lrplan-demo", show_default=True,
              type=click.Path(file_okay=False), help="Folder for the demo's outputs.")
@seed_option
def demo(out_dir, seed):
    """Fit the bundled 100M curves and LR sweep: held-out predictions, a 1.2B LR plan, next runs."""
    from lrplan.api import plan as plan_lr
    from lrplan.curve.fit import fit_curves
    from lrplan.curve.io import save_fit
    from lrplan.curve.predict import predict_curve
    from lrplan.evaluate.metrics import coverage, curve_errors
    from lrplan.examples import multipower_example, sweep_example
    from lrplan.report.build import write_report
    from lrplan.targets import report_results
    from lrplan.transfer.nextrun import next_run

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train, test = multipower_example("100M")
    click.echo(f"Fitting the curve laws to {len(train)} runs of a 100M model "
               f"({', '.join(r.name for r in train)}), weighed by held-out score ...", err=True)
    result = fit_curves(train, seed=seed, progress=show_progress())
    save_fit(result, out / "fit.nc")
    click.echo("Law weights: " + ", ".join(f"{s.law} {s.weight:.2f}" for s in result.scores))
    click.echo(diag_line(result.diagnostics))
    click.echo(f"\nPredicting {len(test)} schedules it did not see:")
    click.echo(f"{'run':28} {'final obs':>9} {'predicted':>9} {'95% interval':>17} "
               f"{'mean err':>8} {'cover95':>7}")
    for r in test:
        keep = r.steps >= max(r.warmup_steps, 1)
        pred = predict_curve(result, r.lr, r.steps[keep], warmup_steps=r.warmup_steps, seed=seed)
        q = pred.quantiles()
        y = r.loss[keep]
        err, _ = curve_errors(pred.law.mean(axis=0), y)
        cover = coverage(pred.draws, y, 0.95)
        name = r.name + ("*" if pred.extrapolates else "")
        click.echo(f"{name:28} {y[-1]:9.4f} {pred.mean[-1]:9.4f} "
                   f"{q['0.025'][-1]:8.4f}-{q['0.975'][-1]:8.4f} {err:8.2%} {cover:7.0%}")
    click.echo("* goes beyond the LR area of the longest fitted run: there the law extrapolates "
               "and its intervals can be optimistic")
    click.echo(f"\nPosterior saved to {out / 'fit.nc'}")

    sweep = sweep_example()
    click.echo(f"\nFitting the LR-transfer law to the bundled sweep ({len(sweep)} final-only runs) ...",
               err=True)
    planned = plan_lr(sweep, params=1.2e9, tokens=2e10, tokens_per_step=5e5, schedules=("cosine:final=0.1",),
                      compare_lrs=(3e-3,), calibrate=False, seed=seed, progress=show_progress())
    click.echo()
    print_plan(planned)
    click.echo()
    nxt = next_run(planned, seed=seed)
    print_next(nxt, top=3, brief=True)
    results = report_results(result, plan=planned, runs=train, next_runs=nxt, seed=seed)
    report = write_report(out / "report.html", results)
    click.echo(f"\nReport written to {report}")
