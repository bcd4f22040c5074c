"""Benchmark: speed, compilations and memory of lrplan's fits, beside a baseline in the same run.

Every figure is measured in a fresh Python process (``--worker TASK`` below), so a cold
start is cold and a "second process" reuses only the persistent compilation cache (a fresh
temporary folder per benchmark run). Figures:

Wall and CPU seconds (the process's own; less sensitive to other load than wall time),
XLA compilations (persistent-cache hits excluded) and cache hits:

- ``fit100m``: the default fit (``law="auto"``: both laws' point fits and held-out
  calibration, then NUTS, 2 chains x 1000 draws) of Luo et al.'s 100M split (3 curves), in a
  cold process and again in a second process: wall time, XLA compilations, cache hits;
- ``olmo2``: the multi-power fit of OLMo's two smallest sizes (10 runs);
- ``plan``: ``lrplan plan`` on the bundled sweep, cold and warm (second process);
- ``memory``: ``--fits`` small fits (two short simulated curves, annealing law, 1 chain x 30
  draws) in one process: compilations after the first fit, memory maps and RSS after the
  10th and the last fit, and their growth.

Baselines in the same run: the practitioners' point fit + block bootstrap
(`lrplan.evaluate.baselines.bootstrap_curves`, ``--boot`` refits, 100 by default) of the same
100M split and the same small fits, and, with ``--ref REF`` (a git revision, e.g. the commit
before this benchmark), the same tasks run by that revision's lrplan from a temporary
``git worktree`` (the figures of "today's code"). Ratios are this code's figure over the baseline's.

    python examples/benchmark_speed.py [--tasks fit100m,olmo2,plan,memory] [--fits 100]
        [--ref a612bb8] [--ref-fits 15] [--boot 100]

Wall times depend on the machine's load: the script prints the load average beside them.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()
REPO = HERE.parent.parent


# ----------------------------------------------------------------------------- workers


def _setup(cache_dir):
    os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax

    jax.config.update("jax_enable_x64", True)
    if cache_dir:
        jax.config.update("jax_compilation_cache_dir", cache_dir)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    counts = {"compiles": 0, "cache_hits": 0}

    def on_duration(event, duration, **kw):
        if event.endswith("backend_compile_duration"):
            counts["compiles"] += 1

    def on_event(event, **kw):
        if event == "/jax/compilation_cache/cache_hits":
            counts["cache_hits"] += 1

    jax.monitoring.register_event_duration_secs_listener(on_duration)
    jax.monitoring.register_event_listener(on_event)
    return counts


def _maps():
    with open("/proc/self/maps") as f:
        return sum(1 for _ in f)


def _rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _small_runs(i):
    from lrplan.data import RunSet, load_runs
    from lrplan.evaluate.simulate import simulate_curves

    runs, meta = simulate_curves("annealing", dict(L0=2.9, A=0.9, alpha=0.5, C=0.25),
                                 {"cos": "cosine:final=0.1", "const": "constant"},
                                 steps=2000 + 100 * (i % 5), peak_lr=1e-3, warmup_steps=100,
                                 every=100, noise=0.002, seed=i)
    with tempfile.TemporaryDirectory() as d:
        runs.to_csv(Path(d) / "r.csv", index=False)
        meta.to_csv(Path(d) / "m.csv", index=False)
        rs = load_runs(Path(d) / "r.csv", meta=Path(d) / "m.csv")
    return RunSet(runs=rs.runs, source="simulated", excluded=())


def _olmo_two_sizes():
    from lrplan.data import RunSet
    from lrplan.examples import olmo_ladder_example

    runs = olmo_ladder_example()
    sizes = sorted({r.params for r in runs})[:2]
    return RunSet(runs=tuple(r for r in runs if r.params in sizes), source=runs.source, excluded=())


def _boot(runs, i=0, n_boot=100):
    from lrplan.evaluate.baselines import bootstrap_curves

    r = runs.runs[0]
    bootstrap_curves(list(runs), [(r.name, r.lr, r.steps, r.warmup_steps, r.params)],
                     law="annealing", n_boot=n_boot, seed=i)


def worker(task, cache_dir, fits, n_boot=100):
    """Run one task in this process and print its figures as one JSON line."""
    counts = _setup(cache_dir)
    out = {}
    t0, c0 = time.perf_counter(), time.process_time()
    if task == "fit100m":
        from lrplan.curve.fit import fit_curves
        from lrplan.examples import multipower_example

        fit_curves(multipower_example("100M")[0], seed=0)
    elif task == "boot100m":
        from lrplan.examples import multipower_example

        _boot(multipower_example("100M")[0], n_boot=n_boot)
    elif task == "olmo2":
        from lrplan.curve.fit import fit_curves

        fit_curves(_olmo_two_sizes(), law="multipower", seed=0)
    elif task == "plan":
        from lrplan.cli import cli

        sweep = REPO / "examples" / "sweep" / "runs.csv"
        try:
            cli.main(args=[ "plan", str(sweep), "--params", "1.2e9", "--tokens", "2e10",
                           "--json"], standalone_mode=False)
        finally:
            sys.stdout.flush()
    elif task in ("memory", "boot_memory"):
        from lrplan.curve.fit import fit_curves

        per_fit = []
        for i in range(fits):
            c = counts["compiles"]
            runs = _small_runs(i)
            if task == "memory":
                fit_curves(runs, law="annealing", seed=i, chains=1, num_warmup=30, num_samples=30)
            else:
                _boot(runs, i, n_boot)
            per_fit.append(counts["compiles"] - c)
            if i + 1 == 10:
                out["maps_10"], out["rss_10"] = _maps(), _rss_mb()
            print(f"  fit {i + 1}: {per_fit[-1]} compilations, {_maps()} maps, {_rss_mb():.0f} MB",
                  file=sys.stderr, flush=True)
        out.update(maps_last=_maps(), rss_last=_rss_mb(), compiles_first=per_fit[0],
                   compiles_after_max=max(per_fit[1:], default=0),
                   compiles_after_mean=sum(per_fit[1:]) / max(len(per_fit) - 1, 1))
    else:
        raise SystemExit(f"unknown task {task}")
    # XLA's compile event fires for persistent-cache hits too: compilations are the rest
    out.update(seconds=time.perf_counter() - t0, cpu_seconds=time.process_time() - c0,
               compile_requests=counts["compiles"], cache_hits=counts["cache_hits"],
               compiles=counts["compiles"] - counts["cache_hits"])
    print("RESULT " + json.dumps(out), flush=True)


# ----------------------------------------------------------------------------- driver


def run_worker(task, cache_dir, fits, pythonpath=None, n_boot=100):
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, str(HERE), "--worker", task, "--cache", cache_dir, "--fits", str(fits),
           "--boot", str(n_boot)]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=REPO)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
    if p.returncode or not lines:
        return {"error": (p.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(lines[-1][len("RESULT "):])


def _load():
    return os.getloadavg()[0]


def fmt(x, unit=""):
    if x is None:
        return "-"
    return f"{x:.1f}{unit}" if isinstance(x, float) else f"{x}{unit}"


def row(what, mine, base, key, unit=""):
    a, b = mine.get(key), (base or {}).get(key)
    ratio = f"{a / b:.2f}" if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else "-"
    print(f"| {what} | {fmt(a, unit)} | {fmt(b, unit)} | {ratio} |", flush=True)


def growth(r):
    if "maps_10" not in r:
        return r
    return {**r, "maps_growth_%": 100.0 * (r["maps_last"] / r["maps_10"] - 1.0),
            "rss_growth_%": 100.0 * (r["rss_last"] / r["rss_10"] - 1.0)}


def main(argv=None) -> dict[str, list[dict]]:
    """Print the tables; return each task's figures (this code's runs, then the ref's)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", default="fit100m,olmo2,plan,memory")
    ap.add_argument("--fits", type=int, default=100, help="small fits in the memory task")
    ap.add_argument("--ref", help="git revision whose lrplan is the 'today' baseline")
    ap.add_argument("--ref-fits", type=int, default=15, help="small fits for --ref (it is slow)")
    ap.add_argument("--boot", type=int, default=100, help="bootstrap refits of the baseline's fits")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--cache", default="", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker(args.worker, args.cache, args.fits, args.boot)

    ref_path = None
    tmp = tempfile.TemporaryDirectory()
    if args.ref:
        ref_path = str(Path(tmp.name) / "ref")
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-q", ref_path, args.ref],
                       check=True)

    def both(task, fits, ref_fits, label):
        """This code's figures (cold, then a second process), and the ref's."""
        memory = task in ("memory", "boot_memory")
        cache = "" if memory else tempfile.mkdtemp(dir=tmp.name)  # memory: no persistent cache
        mine = [run_worker(task, cache, fits, n_boot=args.boot)]
        if task not in ("memory", "boot_memory"):
            mine.append(run_worker(task, cache, fits, n_boot=args.boot))
        ref = []
        if ref_path:
            rcache = "" if memory else tempfile.mkdtemp(dir=tmp.name)
            ref = [run_worker(task, rcache, ref_fits, ref_path, n_boot=args.boot)]
            if task not in ("memory", "boot_memory"):
                ref.append(run_worker(task, rcache, ref_fits, ref_path, n_boot=args.boot))
        print(f"\n{label} (load average {_load():.1f})", flush=True)
        return mine, ref

    print(f"lrplan speed benchmark; ref = {args.ref or 'none'}; load average {_load():.1f}", flush=True)
    tasks = args.tasks.split(",")
    results = {}
    nan = float("nan")
    boot = None
    if "fit100m" in tasks:
        boot = run_worker("boot100m", "", 0, n_boot=args.boot)
    for task in tasks:
        label = {"fit100m": "Default fit of Luo et al.'s 100M split",
                 "olmo2": "Multi-power fit of OLMo's two smallest sizes",
                 "plan": "lrplan plan on the bundled sweep",
                 "memory": f"{args.fits} small fits in one process"}[task]
        mine, ref = both(task, args.fits, args.ref_fits, label)
        results[task] = mine + ref
        base = ref[0] if ref else None
        print(f"| figure | this code | {'ref ' + args.ref if ref else 'baseline'} | ratio |")
        print("|---|---|---|---|")
        if task == "memory":
            m = growth(mine[0])
            b = growth(base) if base else None
            for key in ("compiles_first", "compiles_after_max", "compiles_after_mean", "maps_10",
                        "maps_last", "maps_growth_%", "rss_10", "rss_last", "rss_growth_%", "seconds",
                        "cpu_seconds"):
                row(key, m, b, key)
            if ref:
                print(f"(ref ran {args.ref_fits} fits, this code {args.fits})")
            bm = growth(run_worker("boot_memory", "", min(args.fits, 30), n_boot=args.boot))
            results["boot_memory"] = [bm]
            print(f"practitioners' bootstrap, {min(args.fits, 30)} fits: maps {bm.get('maps_10')} -> "
                  f"{bm.get('maps_last')} ({fmt(bm.get('maps_growth_%'), '%')}), compilations after "
                  f"the first {fmt(bm.get('compiles_after_mean'))} per fit")
            continue
        for i, when in enumerate(("cold", "second process")):
            for key in ("seconds", "cpu_seconds", "compiles", "cache_hits"):
                row(f"{when}: {key}", mine[i], ref[i] if ref else None, key)
        if task == "fit100m" and boot:
            print(f"practitioners' point fit + {args.boot} bootstrap refits, cold: "
                  f"{fmt(boot.get('seconds'))} s, "
                  f"{fmt(boot.get('cpu_seconds'))} CPU s, {boot.get('compiles')} compilations; this "
                  f"code's cold fit takes {mine[0].get('seconds', nan) / boot.get('seconds', nan):.1f}x "
                  "its wall time")
    if ref_path:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", ref_path])
    tmp.cleanup()
    return results


if __name__ == "__main__":
    main()
