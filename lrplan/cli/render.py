"""Text renderings the ``lrplan`` commands share: diagnostics line, plan, next runs."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from lrplan.bayes import Diagnostics
    from lrplan.transfer.decide import PlanResult
    from lrplan.transfer.nextrun import NextRunResult

__all__ = ["diag_line", "money", "print_next", "print_plan"]


def diag_line(d: Diagnostics) -> str:
    """One line of sampler diagnostics, with what to do when they fail."""
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


def money(x: float) -> str:
    """A number with 3 significant digits."""
    return f"{x:.3g}"


def print_plan(result: PlanResult) -> None:
    """The text of `lrplan plan`."""
    doc = result.to_json()
    t, lr, fl = doc["target"], doc["lr"], doc["final_loss"]
    q = lr["optimum"]["quantiles"]
    click.echo(f"Target: N={t['params']:.3g} params, D={t['tokens']:.3g} tokens, batch "
               f"{t['tokens_per_step']:.3g} tokens ({t['steps']} steps), schedule {t['schedule']}")
    click.echo(f"\n  recommended peak LR   {money(lr['recommended'])}")
    click.echo(f"  optimal LR (median)   {money(q['0.5'])}   80% {money(q['0.1'])}-{money(q['0.9'])}"
               f"   95% {money(q['0.025'])}-{money(q['0.975'])}")
    share = lr.get("optimum_variance_share") or {}
    if share:
        click.echo(f"  of its spread (variance of log lr*): law {share['law']:.0%}, this cell's own "
                   f"{share['cell']:.0%}, the law's miss beyond the runs {share['extrapolation']:.0%}")
    click.echo(f"  near-optimal band     {money(lr['band'][0])}-{money(lr['band'][1])}"
               f"   (expected excess loss < {lr['band_excess']:.2%})")
    click.echo(f"  divergence risk       {lr['divergence_probability']:.1%} at the recommended LR")
    fq = fl["quantiles"]
    click.echo(f"  final loss            {fl['mean']:.4f}   95% {fq['0.025']:.4f}-{fq['0.975']:.4f}")
    for c in lr["compare"]:
        e = c["excess_loss"]
        click.echo(f"  LR {money(c['lr']):>9} costs      {e['mean']:+.4f} nats "
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
    click.echo(diag_line(result.fit.diagnostics))
    notes = doc["notes"]
    for n in notes[:6]:
        click.echo(f"  note: {n}")
    if len(notes) > 6:
        click.echo(f"  ... and {len(notes) - 6} more notes (all in --json)")


def print_next(result: NextRunResult, top: int, brief: bool = False) -> None:
    """The ranking of `lrplan next`; ``brief`` leaves out what a plan printed just before."""
    doc = result.to_json()
    t, now = doc["target"], doc["now"]
    q = now["lr_optimum"]["quantiles"]
    if not brief:
        click.echo(f"Target: N={t['params']:.3g} params, D={t['tokens']:.3g} tokens, batch "
                   f"{t['tokens_per_step']:.3g} tokens, schedule {t['schedule']}")
        click.echo(f"  optimal LR now        {money(q['0.5'])}   80% {money(q['0.1'])}-{money(q['0.9'])}")
    click.echo(f"  now: sd of log lr* {now['log_lr_sd']:.3f}, sd of the expected final loss "
               f"{now['final_loss_sd']:.4f}; not knowing lr* costs {now['regret']:.4f} nats of "
               "expected excess final loss")
    what = "lr*'s" if doc["goal"] == "lr" else "the final loss's"
    click.echo(f"\nNext small sweeps, most of {what} variance removed per FLOP first "
               f"({len(result.table)} scored; cost: FLOPs as a share of the target's):")
    click.echo(f"  {'params':>8} {'tokens':>8} {'batch':>8} {'peak LRs':>22} {'cost':>9} "
               f"{'lr* sd after':>12} {'loss sd after':>13} {'excess after':>12}")
    for c in doc["candidates"][:top]:
        lrs = f"{len(c['lrs'])}: {money(min(c['lrs']))}-{money(max(c['lrs']))}"
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
        click.echo(diag_line(result.plan.fit.diagnostics))
    for n in (result.notes if brief else doc["notes"])[:6]:
        click.echo(f"  note: {n}")
