"""``lrplan fit``, ``predict``, ``schedule`` and ``report``: the loss-curve commands."""

from __future__ import annotations

import logging

import click

from lrplan.cli.options import (
    echo_json,
    json_option,
    parse_steps,
    positive,
    sampler_options,
    seed_option,
    show_progress,
)
from lrplan.cli.render import diag_line

__all__ = ["fit", "predict", "report", "schedule"]

log = logging.getLogger("lrplan")


@click.command()
@click.argument("runs", type=click.Path(dir_okay=False))
@click.option("--meta", type=click.Path(dir_okay=False), help="Per-run metadata file.")
@click.option("--law", type=click.Choice(["auto", "multipower", "annealing"]), default="auto",
              show_default=True,
              help="Curve law; auto weighs every law by its held-out predictive score (stacking).")
@click.option("--priors", "priors_file", type=click.Path(dir_okay=False),
              help="TOML file overriding priors by name (of the law it names).")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Posterior file to write (NetCDF).")
@sampler_options(warmup=400)
@seed_option
@json_option
def fit(runs, meta, law, priors_file, output, chains, num_warmup, num_samples, seed, as_json):
    """Fit a loss-curve law to the runs in RUNS with NUTS and save the posterior."""
    from lrplan.curve.fit import fit_curves
    from lrplan.curve.io import save_fit
    from lrplan.curve.model import LAWS
    from lrplan.data import load_runs
    from lrplan.priors import load_priors, priors_by_law

    runset = load_runs(runs, meta=meta)
    # with --law auto, a priors file overrides the law it names
    priors = load_priors(law, priors_file) if law != "auto" else priors_by_law(LAWS, priors_file)
    result = fit_curves(runset, law=law, priors=priors, seed=seed, chains=chains,
                        num_warmup=num_warmup, num_samples=num_samples,
                        progress=show_progress(as_json))
    save_fit(result, output)
    doc = {"fit": str(output), "law": law, **result.to_json()}
    if as_json:
        echo_json(doc)
        return
    for note in result.config.notes:
        log.info(note)
    click.echo(f"{law} law fitted to {doc['runs']} runs ({doc['points']} points, "
               f"{doc['groups']} group(s)) -> {output}")
    for s in doc.get("laws", ()):
        click.echo(f"  {s['law']:<11} weight {s['weight']:.2f}  held-out elpd {s['elpd']:8.1f} "
                   f"+- {s['elpd_se']:.1f}" + ("" if s["sampled"] else "  (not sampled)"))
    click.echo(diag_line(result.diagnostics))


@click.command()
@click.argument("fit_file", metavar="FIT", type=click.Path(dir_okay=False))
@click.option("--lr-file", type=click.Path(dir_okay=False), help="CSV step,lr of the target.")
@click.option("--schedule", help="Schedule spec, e.g. cosine:final=0.1 or wsd:decay=0.2.")
@click.option("--steps", type=click.IntRange(1, 100_000_000), help="Total steps of the target.")
@click.option("--peak-lr", type=float, callback=positive, help="Peak LR of the target.")
@click.option("--warmup-steps", type=click.IntRange(0),
              help="Warmup steps (default: 0 for a spec, inferred from an LR file).")
@click.option("--params", type=float, callback=positive, help="Target model size N.")
@click.option("--tokens-per-step", type=float, callback=positive, help="Target batch in tokens.")
@click.option("--at-steps", callback=parse_steps, help="Comma-separated steps to predict.")
@seed_option
@json_option
def predict(fit_file, lr_file, schedule, steps, peak_lr, warmup_steps, params, tokens_per_step,
            at_steps, seed, as_json):
    """Predict the loss curve of a run under a schedule, with intervals, from a FIT."""
    from lrplan.curve.io import load_fit
    from lrplan.targets import TargetError, check_steps, predict_target, target_lr

    result = load_fit(fit_file)
    if (lr_file is None) == (schedule is None):
        raise click.UsageError("give either --lr-file or --schedule (with --steps and --peak-lr)")
    if schedule is not None and (steps is None or peak_lr is None):
        raise click.UsageError("--schedule needs --steps and --peak-lr")
    lr, warmup, source = target_lr(lr_file, schedule, steps=steps, peak_lr=peak_lr,
                                   warmup_steps=warmup_steps)
    if at_steps:
        try:
            check_steps(at_steps, len(lr), warmup)
        except TargetError as e:
            raise click.BadParameter(str(e), param_hint="--at-steps") from None
    predicted = predict_target(result, lr, at_steps, warmup_steps=warmup, source=source, params=params,
                               tokens_per_step=tokens_per_step, seed=seed)
    if as_json:
        echo_json(predicted.to_json())
        return
    pred = predicted.prediction
    for note in pred.notes:
        log.info(note)
    q = pred.quantiles()
    click.echo(f"{'step':>8} {'mean':>8} {'2.5%':>8} {'50%':>8} {'97.5%':>8}")
    for i, s in enumerate(pred.steps):
        click.echo(f"{s:>8d} {pred.mean[i]:8.4f} {q['0.025'][i]:8.4f} {q['0.5'][i]:8.4f} "
                   f"{q['0.975'][i]:8.4f}")
    f = predicted.to_json()["final_loss"]
    click.echo(f"final loss at step {pred.steps[-1]}: {f['mean']:.4f} "
               f"(95% {f['quantiles']['0.025']:.4f} - {f['quantiles']['0.975']:.4f})")
    click.echo(diag_line(result.diagnostics))


@click.command()
@click.argument("spec")
@click.option("--steps", required=True, type=click.IntRange(1, 100_000_000), help="Total steps.")
@click.option("--peak-lr", required=True, type=float, callback=positive, help="Peak LR.")
@click.option("--warmup-steps", default=0, show_default=True, type=click.IntRange(0))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="CSV file step,lr to write.")
def schedule(spec, steps, peak_lr, warmup_steps, output):
    """Write the per-step LR of schedule SPEC (e.g. 'wsd:decay=0.2,shape=sqrt') to a file."""
    from lrplan.schedules import lr_schedule, write_lr_file

    lr = lr_schedule(spec, steps=steps, peak_lr=peak_lr, warmup_steps=warmup_steps)
    write_lr_file(output, lr)
    click.echo(f"{spec}: {steps} steps, peak {peak_lr:g}, final {lr[-1]:.3g} -> {output}")


@click.command()
@click.argument("fit_file", metavar="FIT", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Report to write: .html (one self-contained file) or .md (+ a _files folder).")
@click.option("--runs", "runs_file", type=click.Path(dir_okay=False),
              help="The fitted runs file: draws each run's predictive band, residuals and PPC.")
@click.option("--meta", type=click.Path(dir_okay=False), help="Per-run metadata file of --runs.")
@click.option("--schedule", "schedules", multiple=True,
              help="Candidate schedule spec for the target (repeatable). Default: cosine:final=0.1, "
                   "wsd:decay=0.2 and constant at the longest fitted run's steps and peak LR.")
@click.option("--steps", type=click.IntRange(1, 100_000_000), help="Total steps of the target.")
@click.option("--peak-lr", type=float, callback=positive, help="Peak LR of the target.")
@click.option("--warmup-steps", type=click.IntRange(0), help="Warmup steps of the target.")
@click.option("--params", type=float, callback=positive, help="Target model size N.")
@click.option("--tokens-per-step", type=float, callback=positive, help="Target batch in tokens.")
@seed_option
def report(fit_file, output, runs_file, meta, schedules, steps, peak_lr, warmup_steps, params,
           tokens_per_step, seed):
    """Write an HTML or Markdown report of a FIT: data, fit quality, schedules, diagnostics."""
    from lrplan.curve.io import load_fit
    from lrplan.report.build import write_report
    from lrplan.report.document import check_report_path
    from lrplan.targets import report_results

    check_report_path(output)  # before any prediction
    runs = None
    if runs_file is not None:
        from lrplan.data import load_runs

        runs = load_runs(runs_file, meta=meta)
    results = report_results(load_fit(fit_file), runs=runs, schedules=list(schedules) or None,
                             steps=steps, peak_lr=peak_lr, warmup_steps=warmup_steps, params=params,
                             tokens_per_step=tokens_per_step, seed=seed)
    path = write_report(output, results)
    click.echo(f"Report written to {path}")
