"""The ``lrplan`` command line: parse arguments, call the library, render the result.

Results go to stdout (``--json``: one JSON document and nothing else); logs and progress go to
stderr. Every `LrplanError` becomes one line on stderr and exit status 2.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from pathlib import Path

import click

from lrplan.errors import LrplanError

__all__ = ["main", "cli"]

log = logging.getLogger("lrplan")


def _setup_jax(chains: int = 2) -> None:
    """Configure JAX before its first import: one CPU device per chain, x64, a compile cache."""
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


def _echo_json(doc: dict) -> None:
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


def _parse_steps(ctx, param, value):
    steps = _comma_list(value, int, "integers", "1000,2000,5000")
    return None if steps is None else sorted(set(steps))


def _parse_numbers(ctx, param, value):
    numbers = _comma_list(value, float, "numbers", "2e8,4e8")
    return None if numbers is None else tuple(numbers)


def _positive(ctx, param, value):
    if value is not None and not value > 0:
        raise click.BadParameter("must be > 0")
    return value


def _positive_all(ctx, param, values):
    for v in values:
        _positive(ctx, param, v)
    return values


def _report_path(ctx, param, value):
    """A report file: a known suffix in an existing folder (checked before any fit)."""
    if value is None:
        return None
    from lrplan.report.build import SUFFIXES

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


def _show_progress(as_json: bool = False) -> bool:
    """NUTS progress bar on stderr: only on a terminal, and not with ``--quiet`` or ``--json``."""
    quiet = click.get_current_context().find_root().params.get("quiet")
    return sys.stderr.isatty() and not quiet and not as_json


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


# ------------------------------------------------------------------------- fit


@cli.command()
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
    from lrplan.curve.fit import fit_curves, save_fit
    from lrplan.data import load_runs

    runset = load_runs(runs, meta=meta)
    priors = _fit_priors(law, priors_file)
    result = fit_curves(runset, law=law, priors=priors, seed=seed, chains=chains,
                        num_warmup=num_warmup, num_samples=num_samples,
                        progress=_show_progress(as_json))
    save_fit(result, output)
    d = result.diagnostics
    doc = {"fit": str(output), "law": law, "runs": len(set(result.observed["run"])),
           "points": int(len(result.observed["step"])), "groups": len(result.config.groups),
           **_law_doc(result), "diagnostics": d.to_json(), "notes": list(result.config.notes)}
    if as_json:
        _echo_json(doc)
        return
    for note in result.config.notes:
        log.info(note)
    click.echo(f"{law} law fitted to {doc['runs']} runs ({doc['points']} points, "
               f"{doc['groups']} group(s)) -> {output}")
    for s in doc.get("laws", ()):
        click.echo(f"  {s['law']:<11} weight {s['weight']:.2f}  held-out elpd {s['elpd']:8.1f} "
                   f"+- {s['elpd_se']:.1f}" + ("" if s["sampled"] else "  (not sampled)"))
    click.echo(_diag_line(d))


def _fit_priors(law: str, priors_file):
    """The priors of a fit: with --law auto, a priors file overrides the law it names."""
    from lrplan.curve.model import LAWS
    from lrplan.priors import load_priors, priors_by_law

    return load_priors(law, priors_file) if law != "auto" else priors_by_law(LAWS, priors_file)


def _law_doc(result) -> dict:
    """The fit's law part of `fit --json`: each law's discrepancy, noise, weight and score."""
    fits = getattr(result, "fits", (result,))
    per_law = {f.law: {"discrepancy": f.config.discrepancy,
                       "discrepancy_anneal": f.config.discrepancy_anneal,
                       "discrepancy_growth": f.config.discrepancy_growth,
                       "noise": f.config.noise} for f in fits}
    if len(per_law) == 1 and not hasattr(result, "scores"):
        return next(iter(per_law.values()))
    weights = {f.law: w for f, w in zip(fits, result.weights, strict=True)}
    return {**per_law[result.main.law], "weights": weights,
            "laws": [{**s.to_json(), **per_law.get(s.law, {})} for s in result.scores]}


def _diag_line(d) -> str:
    line = (f"R-hat max {d.r_hat_max:.3f}, bulk ESS min {d.ess_bulk_min:.0f}, "
            f"divergences {d.divergences}")
    if d.ok:
        return f"{line} (ok)"
    advice = []
    if not d.mixed:
        advice.append("the chains have not mixed: fit again with more --warmup and --samples")
    if d.divergences:
        advice.append("divergent transitions: the draws may miss part of the posterior, often "
                      "where the data leave parameters loose (see the notes)")
    advice += list(getattr(d, "misfit", ()))
    return f"{line} (WARNING: {'; '.join(advice)})"


# ------------------------------------------------------------------------- predict


def _target_lr(lr_file, schedule, steps, peak_lr, warmup_steps):
    """Per-step LR of the target and its warmup, from an LR file or a schedule spec."""
    import numpy as np

    from lrplan.schedules import lr_schedule, read_lr_file

    if (lr_file is None) == (schedule is None):
        raise click.UsageError("give either --lr-file or --schedule (with --steps and --peak-lr)")
    if lr_file is not None:
        lr = read_lr_file(lr_file)
        if warmup_steps is None:
            # a linear warmup ends where the LR first reaches its maximum
            warmup_steps = int(np.argmax(lr >= lr.max())) + 1 if lr[0] < lr.max() else 0
        return lr, warmup_steps, {"lr_file": str(lr_file)}
    if steps is None or peak_lr is None:
        raise click.UsageError("--schedule needs --steps and --peak-lr")
    warmup_steps = warmup_steps or 0
    lr = lr_schedule(schedule, steps=steps, peak_lr=peak_lr, warmup_steps=warmup_steps)
    return lr, warmup_steps, {"schedule": schedule}


def _default_steps(total: int, warmup: int, n: int = 50):
    import numpy as np

    first = max(warmup, 1)
    return sorted(set(np.linspace(first, total, n).round().astype(int).tolist()))


@cli.command()
@click.argument("fit_file", metavar="FIT", type=click.Path(dir_okay=False))
@click.option("--lr-file", type=click.Path(dir_okay=False), help="CSV step,lr of the target.")
@click.option("--schedule", help="Schedule spec, e.g. cosine:final=0.1 or wsd:decay=0.2.")
@click.option("--steps", type=click.IntRange(1, 100_000_000), help="Total steps of the target.")
@click.option("--peak-lr", type=float, callback=_positive, help="Peak LR of the target.")
@click.option("--warmup-steps", type=click.IntRange(0),
              help="Warmup steps (default: 0 for a spec, inferred from an LR file).")
@click.option("--params", type=float, callback=_positive, help="Target model size N.")
@click.option("--tokens-per-step", type=float, callback=_positive, help="Target batch in tokens.")
@click.option("--at-steps", callback=_parse_steps, help="Comma-separated steps to predict.")
@seed_option
@json_option
def predict(fit_file, lr_file, schedule, steps, peak_lr, warmup_steps, params, tokens_per_step,
            at_steps, seed, as_json):
    """Predict the loss curve of a run under a schedule, with intervals, from a FIT."""
    from lrplan.curve.fit import load_fit
    from lrplan.curve.predict import predict_curve, summarize

    result = load_fit(fit_file)
    lr, warmup, source = _target_lr(lr_file, schedule, steps, peak_lr, warmup_steps)
    total = len(lr)
    at = at_steps or _default_steps(total, warmup)
    bad = [s for s in at if s > total or s < max(warmup, 1)]
    if bad:
        raise click.BadParameter(f"step {bad[0]} is outside [{max(warmup, 1)}, {total}] "
                                 "(after warmup, within the schedule)", param_hint="--at-steps")
    pred = predict_curve(result, lr, at, warmup_steps=warmup, params=params,
                         tokens_per_step=tokens_per_step, seed=seed)
    q = pred.quantiles()
    doc = {
        "target": {**source, "steps": total, "peak_lr": float(lr.max()), "warmup_steps": warmup,
                   "params": params, "tokens_per_step": tokens_per_step,
                   "group": "fitted" if pred.group is not None else "new"},
        "curve": {"step": [int(s) for s in at], "mean": pred.mean.tolist(),
                  "quantiles": {k: v.tolist() for k, v in q.items()}},
        "final_loss": summarize(pred.final),
        "diagnostics": result.diagnostics.to_json(),
        "notes": list(pred.notes),
    }
    if as_json:
        _echo_json(doc)
        return
    for note in pred.notes:
        log.info(note)
    click.echo(f"{'step':>8} {'mean':>8} {'2.5%':>8} {'50%':>8} {'97.5%':>8}")
    for i, s in enumerate(at):
        click.echo(f"{s:>8d} {pred.mean[i]:8.4f} {q['0.025'][i]:8.4f} {q['0.5'][i]:8.4f} "
                   f"{q['0.975'][i]:8.4f}")
    f = doc["final_loss"]
    click.echo(f"final loss at step {at[-1]}: {f['mean']:.4f} "
               f"(95% {f['quantiles']['0.025']:.4f} - {f['quantiles']['0.975']:.4f})")
    click.echo(_diag_line(result.diagnostics))


# ------------------------------------------------------------------------- schedule


@cli.command()
@click.argument("spec")
@click.option("--steps", required=True, type=click.IntRange(1, 100_000_000), help="Total steps.")
@click.option("--peak-lr", required=True, type=float, callback=_positive, help="Peak LR.")
@click.option("--warmup-steps", default=0, show_default=True, type=click.IntRange(0))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="CSV file step,lr to write.")
def schedule(spec, steps, peak_lr, warmup_steps, output):
    """Write the per-step LR of schedule SPEC (e.g. 'wsd:decay=0.2,shape=sqrt') to a file."""
    from lrplan.schedules import lr_schedule, write_lr_file

    lr = lr_schedule(spec, steps=steps, peak_lr=peak_lr, warmup_steps=warmup_steps)
    write_lr_file(output, lr)
    click.echo(f"{spec}: {steps} steps, peak {peak_lr:g}, final {lr[-1]:.3g} -> {output}")


# ------------------------------------------------------------------------- report


@cli.command()
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
@click.option("--peak-lr", type=float, callback=_positive, help="Peak LR of the target.")
@click.option("--warmup-steps", type=click.IntRange(0), help="Warmup steps of the target.")
@click.option("--params", type=float, callback=_positive, help="Target model size N.")
@click.option("--tokens-per-step", type=float, callback=_positive, help="Target batch in tokens.")
@seed_option
def report(fit_file, output, runs_file, meta, schedules, steps, peak_lr, warmup_steps, params,
           tokens_per_step, seed):
    """Write an HTML or Markdown report of a FIT: data, fit quality, schedules, diagnostics."""
    from lrplan.curve.fit import load_fit
    from lrplan.report.build import write_report

    runs = None
    if runs_file is not None:
        from lrplan.data import load_runs

        runs = load_runs(runs_file, meta=meta)
    path = write_report(output, load_fit(fit_file), runs=runs, schedules=list(schedules) or None,
                        steps=steps, peak_lr=peak_lr, warmup_steps=warmup_steps, params=params,
                        tokens_per_step=tokens_per_step, seed=seed)
    click.echo(f"Report written to {path}")


# ------------------------------------------------------------------------- demo


# ------------------------------------------------------------------------- plan


def _default_schedule(runs) -> tuple[str, float]:
    """The runs' most common schedule spec and median warmup fraction (for the target)."""
    from collections import Counter

    specs = Counter(r.schedule for r in runs if r.schedule)
    spec = specs.most_common(1)[0][0] if specs else "cosine:final=0.1"
    fractions = sorted(r.warmup_steps / r.total_steps for r in runs if r.total_steps)
    return spec, fractions[len(fractions) // 2] if fractions else 0.0


def _money(x: float) -> str:
    return f"{x:.3g}"


def _print_plan(result) -> None:
    doc = result.to_json()
    t, lr, fl = doc["target"], doc["lr"], doc["final_loss"]
    q = lr["optimum"]["quantiles"]
    click.echo(f"Target: N={t['params']:.3g} params, D={t['tokens']:.3g} tokens, batch "
               f"{t['tokens_per_step']:.3g} tokens ({t['steps']} steps), schedule {t['schedule']}")
    click.echo(f"\n  recommended peak LR   {_money(lr['recommended'])}")
    click.echo(f"  optimal LR (median)   {_money(q['0.5'])}   80% {_money(q['0.1'])}-{_money(q['0.9'])}"
               f"   95% {_money(q['0.025'])}-{_money(q['0.975'])}")
    share = lr.get("optimum_variance_share") or {}
    if share:
        click.echo(f"  of its spread (variance of log lr*): law {share['law']:.0%}, this cell's own "
                   f"{share['cell']:.0%}, the law's miss beyond the runs {share['extrapolation']:.0%}")
    click.echo(f"  near-optimal band     {_money(lr['band'][0])}-{_money(lr['band'][1])}"
               f"   (expected excess loss < {lr['band_excess']:.2%})")
    click.echo(f"  divergence risk       {lr['divergence_probability']:.1%} at the recommended LR")
    fq = fl["quantiles"]
    click.echo(f"  final loss            {fl['mean']:.4f}   95% {fq['0.025']:.4f}-{fq['0.975']:.4f}")
    for c in lr["compare"]:
        e = c["excess_loss"]
        click.echo(f"  LR {_money(c['lr']):>9} costs      {e['mean']:+.4f} nats "
                   f"({c['excess_relative']:+.2%}; 95% {e['quantiles']['0.025']:+.4f} to "
                   f"{e['quantiles']['0.975']:+.4f}); final loss {c['final_loss']['mean']:.4f}")
    if len(result.curves) > 1:
        click.echo("\n  schedule                      final loss at the recommended LR")
        for spec, c in result.curves.items():
            cq = c.quantiles()
            click.echo(f"  {spec:28} {c.final.mean():.4f}   95% {cq['0.025'][-1]:.4f}-{cq['0.975'][-1]:.4f}")
    m = doc["model"]
    click.echo(f"\nModel: {m['lr_law']} lr*, {m['bowl']} bowl; {m['runs']} runs "
               f"({m['diverged_runs']} diverged), {m['points']} loss points")
    ex = m["exponents"]
    click.echo("  lr* ~ N^{:.3f} D^{:.3f} B^{:.3f}".format(
        ex["c_n"]["quantiles"]["0.5"], ex["c_d"]["quantiles"]["0.5"], ex["c_b"]["quantiles"]["0.5"]))
    if m["loo"]:
        click.echo("  LOO (leave one run out):  " + ", ".join(
            f"{v['variant']} {v['elpd_loo']:.1f}" + (f" (-{v['elpd_diff']:.1f} +- {v['dse']:.1f})"
                                                    if v['elpd_diff'] else "")
            for v in m["loo"]))
    click.echo(_diag_line(result.fit.diagnostics))
    notes = doc["notes"]
    for n in notes[:6]:
        click.echo(f"  note: {n}")
    if len(notes) > 6:
        click.echo(f"  ... and {len(notes) - 6} more notes (all in --json)")


def target_options(f):
    """RUNS and the target's size, tokens and batch: the arguments `plan` and `next` share."""
    for option in reversed((
        click.argument("runs", type=click.Path(dir_okay=False)),
        click.option("--meta", type=click.Path(dir_okay=False), help="Per-run metadata file."),
        click.option("--params", required=True, type=float, callback=_positive, help="Target model size N."),
        click.option("--tokens", required=True, type=float, callback=_positive,
                     help="Target training tokens D."),
        click.option("--tokens-per-step", type=float, callback=_positive,
                     help="Target batch in tokens [default: the runs' batch, when they share one]."),
    )):
        f = option(f)
    return f


def _plan_target(runset, points, *, params, tokens, tokens_per_step, schedules, warmup_steps):
    """The target run of a plan, with the runs' batch, schedule and warmup fraction as defaults."""
    from lrplan.transfer.decide import Target

    batches = set(points["tokens_per_step"])
    if tokens_per_step is None:
        if len(batches) > 1:
            raise click.UsageError("the runs use several batch sizes: give the target's --tokens-per-step")
        tokens_per_step = batches.pop()
    spec, warm_frac = _default_schedule(runset)
    schedules = tuple(schedules) or (spec,)
    steps = max(int(round(tokens / tokens_per_step)), 1)
    warmup_steps = int(round(warm_frac * steps)) if warmup_steps is None else warmup_steps
    target = Target(params=params, tokens=tokens, tokens_per_step=tokens_per_step,
                    schedule=schedules[0], steps=steps, warmup_steps=warmup_steps)
    target.lr_shape()  # a bad spec fails before the fit
    return target, schedules[1:]


@cli.command()
@target_options
@click.option("--schedule", "schedules", multiple=True,
              help="Target schedule spec; repeat to compare candidates (the first decides) "
                   "[default: the runs' most common].")
@click.option("--warmup-steps", type=click.IntRange(0),
              help="Target warmup steps [default: the runs' median warmup fraction].")
@click.option("--compare-lr", "compare_lrs", multiple=True, type=float, callback=_positive_all,
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
@click.option("--report", "report_file", type=click.Path(dir_okay=False), callback=_report_path,
              help="Also write a report of the plan: .html (one self-contained file) or .md "
                   "(+ a _files folder of figures).")
@seed_option
@json_option
def plan(runs, meta, params, tokens, tokens_per_step, schedules, warmup_steps, compare_lrs, variants,
         priors_file, batch_mode, chains, num_warmup, num_samples, report_file, seed, as_json):
    """Fit the LR-transfer law to RUNS and recommend the peak LR of a target run."""
    from lrplan.data import load_runs
    from lrplan.priors import load_priors
    from lrplan.transfer.calibrate import calibrate_transfer
    from lrplan.transfer.decide import plan as decide_plan
    from lrplan.transfer.fit import compare_variants, fit_transfer, transfer_points

    runset = load_runs(runs, meta=meta)
    points, notes = transfer_points(runset)
    provisional = tokens_per_step
    if batch_mode == "auto" and provisional is None:  # decided after the fit
        provisional = math.exp(sum(map(math.log, points["tokens_per_step"])) / len(points))
    target, others = _plan_target(runset, points, params=params, tokens=tokens,
                                  tokens_per_step=provisional, schedules=schedules,
                                  warmup_steps=warmup_steps)
    kwargs = dict(priors=load_priors("transfer", priors_file), seed=seed, chains=chains,
                  num_warmup=num_warmup, num_samples=num_samples,
                  progress=_show_progress(as_json), notes=tuple(runset.excluded) + tuple(notes))
    if variants == "compare":
        fit, _ = compare_variants(points, **kwargs)
    else:
        fit = fit_transfer(points, **kwargs)
    fit = calibrate_transfer(fit, seed=seed)
    batch_plan = None
    if batch_mode == "auto":
        from lrplan.transfer.batch import plan_batch
        from lrplan.transfer.decide import target_unannealed

        batch_plan = plan_batch(fit, params, tokens, unannealed=target_unannealed(fit, target),
                                compare=() if tokens_per_step is None else (tokens_per_step,), seed=seed)
        target, others = _plan_target(runset, points, params=params, tokens=tokens,
                                      tokens_per_step=batch_plan.recommended, schedules=schedules,
                                      warmup_steps=warmup_steps)
    result = decide_plan(fit, target, compare_lrs=tuple(compare_lrs), schedules=others, seed=seed)
    if as_json:
        doc = result.to_json()
        if batch_plan is not None:
            doc["batch"] = batch_plan.to_json()
        _echo_json(doc)
    else:
        _print_plan(result)
        if batch_plan is not None:
            from lrplan.transfer.batch import render_batch_text

            click.echo("\nBatch (--batch auto):\n" + render_batch_text(batch_plan))
    if report_file is not None:
        from dataclasses import replace

        from lrplan.report.build import build_report, save_report

        built = build_report(None, plan=result, seed=seed)
        if batch_plan is not None:
            from lrplan.report.budget import batch_section

            built = replace(built, sections=(*built.sections, batch_section(batch_plan)))
        path = save_report(built, report_file)
        click.echo(f"Report written to {path}", err=as_json)


# ------------------------------------------------------------------------- budget


def _params_range(ctx, param, value):
    numbers = _parse_numbers(ctx, param, value)
    if numbers is not None and (len(numbers) != 2 or numbers[0] >= numbers[1]):
        raise click.BadParameter("give LO,HI with LO < HI, e.g. 1e8,1e10")
    return numbers


@cli.command()
@click.argument("runs", type=click.Path(dir_okay=False))
@click.option("--meta", type=click.Path(dir_okay=False), help="Per-run metadata file.")
@click.option("--flops", required=True, type=float, callback=_positive, help="Compute budget C in FLOPs.")
@click.option("--flops-per-token", "fpt", default="6N", show_default=True,
              help="FLOPs per training token as a multiple of N plus a constant, e.g. 6N+2.4e9.")
@click.option("--params-range", callback=_params_range,
              help="Sizes considered, LO,HI [default: 1 to 1000 tokens per parameter].")
@click.option("--compare", "compare", multiple=True, type=float, callback=_positive_all,
              help="A model size to price against the recommendation (repeatable).")
@click.option("--max-excess", type=float, callback=_positive,
              help="Leave out runs more than this fraction above the best loss at their budget.")
@click.option("--calibrate/--no-calibrate", default=True, show_default=True,
              help="Calibrate the law's miss by leave-budget-out refits (else its prior).")
@click.option("--priors", "priors_file", type=click.Path(dir_okay=False),
              help="TOML overriding budget priors by name.")
@sampler_options(warmup=1000)
@click.option("--report", "report_file", type=click.Path(dir_okay=False), callback=_report_path,
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
                         num_samples=num_samples, progress=_show_progress(as_json))
    click.echo(json.dumps(result.to_json(), indent=2, allow_nan=False) if as_json else render_text(result))
    if report_file is not None:
        path = write_budget_report(report_file, result)
        click.echo(f"Report written to {path}", err=as_json)


def _print_next(result, top: int, brief: bool = False) -> None:
    """The ranking of `lrplan next`; ``brief`` leaves out what a plan printed just before."""
    doc = result.to_json()
    t, now = doc["target"], doc["now"]
    q = now["lr_optimum"]["quantiles"]
    if not brief:
        click.echo(f"Target: N={t['params']:.3g} params, D={t['tokens']:.3g} tokens, batch "
                   f"{t['tokens_per_step']:.3g} tokens, schedule {t['schedule']}")
        click.echo(f"  optimal LR now        {_money(q['0.5'])}   80% {_money(q['0.1'])}-{_money(q['0.9'])}")
    click.echo(f"  now: sd of log lr* {now['log_lr_sd']:.3f}, sd of the expected final loss "
               f"{now['final_loss_sd']:.4f}; not knowing lr* costs {now['regret']:.4f} nats of "
               "expected excess final loss")
    what = "lr*'s" if doc["goal"] == "lr" else "the final loss's"
    click.echo(f"\nNext small sweeps, most of {what} variance removed per FLOP first "
               f"({len(result.table)} scored; cost: FLOPs as a share of the target's):")
    click.echo(f"  {'params':>8} {'tokens':>8} {'batch':>8} {'peak LRs':>22} {'cost':>9} "
               f"{'lr* sd after':>12} {'loss sd after':>13} {'excess after':>12}")
    for c in doc["candidates"][:top]:
        lrs = f"{len(c['lrs'])}: {_money(min(c['lrs']))}-{_money(max(c['lrs']))}"
        click.echo(f"  {c['params']:8.3g} {c['tokens']:8.3g} {c['tokens_per_step']:8.3g} {lrs:>22} "
                   f"{c['flops_share']:9.2%} {c['lr_sd_after']:12.3f} {c['loss_sd_after']:13.4f} "
                   f"{c['regret_after']:12.4f}")
    key = "lr_sd_after" if doc["goal"] == "lr" else "loss_sd_after"
    best = result.table.loc[result.table[key].idxmin()]
    click.echo(f"  most informative at any cost: N={best['params']:.3g}, D={best['tokens']:.3g} "
               f"({best['flops_share']:.2%} of the target's compute): sd of log lr* "
               f"{now['log_lr_sd']:.3f} -> {best['lr_sd_after']:.3f}, of the final loss "
               f"{now['final_loss_sd']:.4f} -> {best['loss_sd_after']:.4f}")
    if not brief:
        click.echo(_diag_line(result.plan.fit.diagnostics))
    for n in (result.notes if brief else doc["notes"])[:6]:
        click.echo(f"  note: {n}")


@cli.command(name="next")
@target_options
@click.option("--schedule", help="Target schedule spec [default: the runs' most common].")
@click.option("--warmup-steps", type=click.IntRange(0),
              help="Target warmup steps [default: the runs' median warmup fraction].")
@click.option("--sizes", callback=_parse_numbers,
              help="Candidate sizes N, comma-separated [default: the fitted sizes and twice the largest].")
@click.option("--horizons", callback=_parse_numbers,
              help="Candidate tokens D, comma-separated [default: the fitted horizons].")
@click.option("--lr-factors", default="0.5,1,2", show_default=True, callback=_parse_numbers,
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
    from lrplan.data import load_runs
    from lrplan.priors import load_priors
    from lrplan.transfer.decide import plan as decide_plan
    from lrplan.transfer.fit import fit_transfer, transfer_points
    from lrplan.transfer.nextrun import default_candidates, next_run

    runset = load_runs(runs, meta=meta)
    points, notes = transfer_points(runset)
    target, _ = _plan_target(runset, points, params=params, tokens=tokens,
                             tokens_per_step=tokens_per_step, schedules=(schedule,) if schedule else (),
                             warmup_steps=warmup_steps)
    fit = fit_transfer(points, priors=load_priors("transfer", priors_file), seed=seed, chains=chains,
                       num_warmup=num_warmup, num_samples=num_samples, progress=_show_progress(as_json),
                       notes=tuple(runset.excluded) + tuple(notes))
    candidates = default_candidates(fit, sizes, horizons, target.tokens_per_step, lr_factors)
    result = next_run(decide_plan(fit, target, seed=seed), candidates, goal=goal, seed=seed)
    if as_json:
        doc = result.to_json()
        doc["candidates"] = doc["candidates"][:top]
        _echo_json(doc)
    else:
        _print_next(result, top)


@cli.command()
@click.option("--out", "out_dir", default="lrplan-demo", show_default=True,
              type=click.Path(file_okay=False), help="Folder for the demo's outputs.")
@seed_option
def demo(out_dir, seed):
    """Fit the bundled 100M curves and LR sweep: held-out predictions, a 1.2B LR plan, next runs."""
    import numpy as np

    from lrplan.curve.fit import fit_curves, save_fit
    from lrplan.curve.predict import predict_curve
    from lrplan.examples import multipower_example, sweep_example
    from lrplan.report.build import write_report
    from lrplan.transfer.decide import plan as decide_plan
    from lrplan.transfer.fit import fit_transfer, transfer_points
    from lrplan.transfer.nextrun import next_run

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train, test = multipower_example("100M")
    click.echo(f"Fitting the curve laws to {len(train)} runs of a 100M model "
               f"({', '.join(r.name for r in train)}), weighed by held-out score ...", err=True)
    result = fit_curves(train, seed=seed, progress=_show_progress())
    save_fit(result, out / "fit.nc")
    click.echo("Law weights: " + ", ".join(f"{s.law} {s.weight:.2f}" for s in result.scores))
    click.echo(_diag_line(result.diagnostics))
    click.echo(f"\nPredicting {len(test)} schedules it did not see:")
    click.echo(f"{'run':28} {'final obs':>9} {'predicted':>9} {'95% interval':>17} "
               f"{'mean err':>8} {'cover95':>7}")
    for r in test:
        keep = r.steps >= max(r.warmup_steps, 1)
        pred = predict_curve(result, r.lr, r.steps[keep], warmup_steps=r.warmup_steps, seed=seed)
        q = pred.quantiles()
        y = r.loss[keep]
        err = np.mean(np.abs(pred.law.mean(axis=0) - y) / y)
        cover = np.mean((y >= q["0.025"]) & (y <= q["0.975"]))
        name = r.name + ("*" if pred.extrapolates else "")
        click.echo(f"{name:28} {y[-1]:9.4f} {pred.mean[-1]:9.4f} "
                   f"{q['0.025'][-1]:8.4f}-{q['0.975'][-1]:8.4f} {err:8.2%} {cover:7.0%}")
    click.echo("* goes beyond the LR area of the longest fitted run: there the law extrapolates "
               "and its intervals can be optimistic")
    click.echo(f"\nPosterior saved to {out / 'fit.nc'}")

    sweep = sweep_example()
    points, notes = transfer_points(sweep)
    click.echo(f"\nFitting the LR-transfer law to the bundled sweep ({len(sweep)} final-only runs) ...",
               err=True)
    tfit = fit_transfer(points, seed=seed, progress=_show_progress(),
                        notes=tuple(sweep.excluded) + tuple(notes))
    target, others = _plan_target(sweep, points, params=1.2e9, tokens=2e10, tokens_per_step=5e5,
                                  schedules=("cosine:final=0.1",), warmup_steps=None)
    planned = decide_plan(tfit, target, compare_lrs=(3e-3,), schedules=others, seed=seed)
    click.echo()
    _print_plan(planned)
    click.echo()
    _print_next(next_run(planned, seed=seed), top=3, brief=True)
    report = write_report(out / "report.html", result, plan=planned, runs=train, seed=seed)
    click.echo(f"\nReport written to {report}")


# ------------------------------------------------------------------------- backtest


@cli.command()
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
        bt.write_report(report_file, bt.to_markdown(result))
    if as_json:
        _echo_json(bt.to_json(result))
        return
    for note in result.notes:
        log.info(note)
    click.echo(bt.markdown_table(result.summary))
    click.echo("fit wall time: " + ", ".join(f"{k} {v:.1f} s" for k, v in result.timings.items()))


# ------------------------------------------------------------------------- import


@cli.command(name="import")
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
@click.option("--params", type=float, callback=_positive, help="Non-embedding parameters of every run.")
@click.option("--tokens-per-step", type=float, callback=_positive, help="Batch in tokens of every run.")
@click.option("--seq-len", type=float, callback=_positive, help="Sequence length (for a batch in sequences).")
@click.option("--peak-lr", type=float, callback=_positive, help="Peak LR of every run.")
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
        _echo_json({"output": str(output), **imported.to_json()})
        return
    for note in imported.notes:
        log.info(note)
    click.echo(f"{len(imported.runs)} run(s), {len(imported.frame)} rows -> {output}")
    for r in imported.runs:
        click.echo(f"  {r.name}: loss {r.loss_key!r} ({r.loss_kind}), lr {r.lr_key!r}, "
                   f"{r.rows} points")


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


def main(argv=None) -> None:
    """Console entry point."""
    import warnings

    # ArviZ announces its 1.0 refactor once a day on import; stderr is for lrplan's own news
    warnings.filterwarnings("ignore", message=r"\s*ArviZ is undergoing", category=FutureWarning)
    _setup_jax()
    cli.main(args=argv, prog_name="lrplan")
