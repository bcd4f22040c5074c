"""``lrplan plan``, ``next`` and ``budget``: the LR-transfer and compute-budget commands."""

from __future__ import annotations

import click

from lrplan.cli.options import (
    echo_json,
    json_option,
    parse_numbers,
    parse_params_range,
    positive,
    positive_all,
    report_path,
    sampler_options,
    seed_option,
    show_progress,
    target_options,
)
from lrplan.cli.render import print_next, print_plan

__all__ = ["budget", "next_", "plan"]


@click.command()
@target_options
@click.option("--schedule", "schedules", multiple=True,
              help="Target schedule spec; repeat to compare candidates (the first decides) "
                   "[default: the runs' most common].")
@click.option("--warmup-steps", type=click.IntRange(0),
              help="Target warmup steps [default: the runs' median warmup fraction].")
@click.option("--compare-lr", "compare_lrs", multiple=True, type=float, callback=positive_all,
              help="An LR to price against the recommendation (repeatable).")
@click.option("--variants", type=click.Choice(["default", "compare"]), default="default",
              show_default=True,
              help="'compare' fits log-linear and curved lr* laws with symmetric and asymmetric "
                   "bowls, ranks them by LOO and decides with the best.")
@click.option("--priors", "priors_file", type=click.Path(dir_okay=False),
              help="TOML overriding transfer priors by name.")
@click.option("--batch", "batch_mode", type=click.Choice(["given", "auto"]), default="given",
              show_default=True,
              help="'auto' chooses the target's batch (--tokens-per-step is then priced against it).")
@sampler_options(warmup=1000)
@click.option("--report", "report_file", type=click.Path(dir_okay=False), callback=report_path,
              help="Also write a report of the plan: .html (one self-contained file) or .md "
                   "(+ a _files folder of figures).")
@seed_option
@json_option
def plan(runs, meta, params, tokens, tokens_per_step, schedules, warmup_steps, compare_lrs, variants,
         priors_file, batch_mode, chains, num_warmup, num_samples, report_file, seed, as_json):
    """Fit the LR-transfer law to RUNS and recommend the peak LR of a target run."""
    from lrplan.api import plan as plan_lr
    from lrplan.data import load_runs
    from lrplan.priors import load_priors

    result = plan_lr(load_runs(runs, meta=meta), params=params, tokens=tokens,
                     tokens_per_step=tokens_per_step, schedules=schedules, warmup_steps=warmup_steps,
                     compare_lrs=compare_lrs, variants=variants,
                     priors=load_priors("transfer", priors_file), batch=batch_mode, seed=seed,
                     chains=chains, num_warmup=num_warmup, num_samples=num_samples,
                     progress=show_progress(as_json))
    batch_plan = result.batch
    if as_json:
        echo_json(result.to_json())
    else:
        print_plan(result)
        if batch_plan is not None:
            from lrplan.transfer.batch import render_batch_text

            click.echo("\nBatch (--batch auto):\n" + render_batch_text(batch_plan))
    if report_file is not None:
        from dataclasses import replace

        from lrplan.report.build import build_report
        from lrplan.report.document import save_report
        from lrplan.targets import report_results

        built = build_report(report_results(plan=result, seed=seed))
        if batch_plan is not None:
            from lrplan.report.budget import batch_section

            built = replace(built, sections=(*built.sections, batch_section(batch_plan)))
        path = save_report(built, report_file)
        click.echo(f"Report written to {path}", err=as_json)


@click.command(name="next")
@target_options
@click.option("--schedule", help="Target schedule spec [default: the runs' most common].")
@click.option("--warmup-steps", type=click.IntRange(0),
              help="Target warmup steps [default: the runs' median warmup fraction].")
@click.option("--sizes", callback=parse_numbers,
              help="Candidate sizes N, comma-separated [default: the fitted sizes and twice the largest].")
@click.option("--horizons", callback=parse_numbers,
              help="Candidate tokens D, comma-separated [default: the fitted horizons].")
@click.option("--lr-factors", default="0.5,1,2", show_default=True, callback=parse_numbers,
              help="The peak LRs of each candidate sweep, as multiples of its median optimal LR.")
@click.option("--goal", type=click.Choice(["lr", "loss"]), default="lr", show_default=True,
              help="Rank by the uncertainty of the target's optimal LR, or of its final loss.")
@click.option("--top", default=10, show_default=True, type=click.IntRange(1), help="Candidates shown.")
@click.option("--priors", "priors_file", type=click.Path(dir_okay=False),
              help="TOML overriding transfer priors by name.")
@sampler_options(warmup=1000)
@seed_option
@json_option
def next_(runs, meta, params, tokens, tokens_per_step, schedule, warmup_steps, sizes, horizons,
          lr_factors, goal, top, priors_file, chains, num_warmup, num_samples, seed, as_json):
    """Fit the LR-transfer law to RUNS and rank the next small runs by what they would teach.

    A candidate is a small sweep (a few peak LRs at one size and horizon), scored by how much
    of the uncertainty of the target's optimal LR (or final loss) it would remove per FLOP,
    from simulated outcomes of its runs.
    """
    from lrplan.api import next_runs
    from lrplan.api import plan as plan_lr
    from lrplan.data import load_runs
    from lrplan.priors import load_priors

    planned = plan_lr(load_runs(runs, meta=meta), params=params, tokens=tokens,
                      tokens_per_step=tokens_per_step, schedules=(schedule,) if schedule else (),
                      warmup_steps=warmup_steps, priors=load_priors("transfer", priors_file),
                      calibrate=False, seed=seed, chains=chains, num_warmup=num_warmup,
                      num_samples=num_samples, progress=show_progress(as_json))
    result = next_runs(planned, sizes=sizes, horizons=horizons, lr_factors=lr_factors, goal=goal, seed=seed)
    if as_json:
        doc = result.to_json()
        doc["candidates"] = doc["candidates"][:top]
        echo_json(doc)
    else:
        print_next(result, top)


@click.command()
@click.argument("runs", type=click.Path(dir_okay=False))
@click.option("--meta", type=click.Path(dir_okay=False), help="Per-run metadata file.")
@click.option("--flops", required=True, type=float, callback=positive, help="Compute budget C in FLOPs.")
@click.option("--flops-per-token", "fpt", default="6N", show_default=True,
              help="FLOPs per training token as a multiple of N plus a constant, e.g. 6N+2.4e9.")
@click.option("--params-range", callback=parse_params_range,
              help="Sizes considered, LO,HI [default: 1 to 1000 tokens per parameter].")
@click.option("--compare", "compare", multiple=True, type=float, callback=positive_all,
              help="A model size to price against the recommendation (repeatable).")
@click.option("--max-excess", type=float, callback=positive,
              help="Leave out runs more than this fraction above the best loss at their budget.")
@click.option("--calibrate/--no-calibrate", default=True, show_default=True,
              help="Calibrate the law's miss by leave-budget-out refits (else its prior).")
@click.option("--priors", "priors_file", type=click.Path(dir_okay=False),
              help="TOML overriding budget priors by name.")
@sampler_options(warmup=1000)
@click.option("--report", "report_file", type=click.Path(dir_okay=False), callback=report_path,
              help="Also write a report: .html or .md.")
@seed_option
@json_option
def budget(runs, meta, flops, fpt, params_range, compare, max_excess, calibrate, priors_file, chains,
           num_warmup, num_samples, report_file, seed, as_json):
    """Choose the model size and tokens that minimise the expected loss at a FLOP budget."""
    from lrplan.budget import parse_flops_per_token, plan_budget
    from lrplan.data import load_runs
    from lrplan.priors import load_priors
    from lrplan.report.budget import render_text, write_budget_report

    per_token = parse_flops_per_token(fpt)
    priors = load_priors("budget", priors_file)
    runset = load_runs(runs, meta=meta)
    result = plan_budget(runset, flops, fpt=per_token, params_range=params_range,
                         compare=tuple(compare), max_excess=max_excess, calibrate=calibrate,
                         priors=priors, seed=seed, chains=chains, num_warmup=num_warmup,
                         num_samples=num_samples, progress=show_progress(as_json))
    if as_json:
        echo_json(result.to_json())
    else:
        click.echo(render_text(result))
    if report_file is not None:
        path = write_budget_report(report_file, result)
        click.echo(f"Report written to {path}", err=as_json)
