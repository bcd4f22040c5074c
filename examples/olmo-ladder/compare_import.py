"""Check `lrplan import` on the OLMo ladder's original W&B exports against convert.py's runs.

    python examples/olmo-ladder/compare_import.py PATH/TO/olmo-ladder

Imports each cosine ladder export (the files convert.py converts) with the W&B reader, the c4_en
loss named (the export logs eleven eval losses) and AI2's parameter counts from INDEX.csv as a
metadata file (with --warmup, convert.py's warmup steps too); everything else (steps, LR,
tokens, batch, peak LR, warmup) is read off the export. Loads both runs files with
`load_runs` and prints, per run, the largest differences: loss, logged LR, tokens, per-run
settings, and the per-step LR the curve model sees (the importer's, rebuilt from the logged
LR, against convert.py's cosine schedule).
"""

import argparse
import re
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from lrplan.data import load_runs
from lrplan.importers import import_runs, write_runs

LOSS = "eval/c4_en-validation/CrossEntropyLoss"
NAME = re.compile(r"^(\d+[MB])-(\d+(?:\.\d+)?)xC\.csv$")
HERE = Path(__file__).parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source", help="folder of the OLMo ladder copy (with INDEX.csv)")
    ap.add_argument("--warmup", action="store_true",
                    help="give the import convert.py's warmup (round(params / batch)) in the metadata "
                         "file too: the 5x and 10x runs log no LR during their warmup")
    args = ap.parse_args()
    src = Path(args.source)
    files = sorted(p for p in (src / "peteish-moreeval").glob("*.csv") if NAME.match(p.name))
    index = pd.read_csv(src / "INDEX.csv").set_index("file")
    params = [index.loc[f"peteish-moreeval/{p.name}", "n_params"] for p in files]
    old = load_runs(HERE / "runs.csv", meta=HERE / "meta.csv")
    raw_old = pd.read_csv(HERE / "runs.csv")
    meta = pd.DataFrame({"run": [p.stem for p in files], "params": params})
    if args.warmup:
        meta["warmup_steps"] = [old[p.stem].warmup_steps for p in files]
    with tempfile.TemporaryDirectory() as d:
        meta.to_csv(Path(d) / "meta.csv", index=False)
        imported = import_runs(files, format="wandb", loss=LOSS, meta=Path(d) / "meta.csv")
        write_runs(imported, Path(d) / "runs.csv")
        new = load_runs(Path(d) / "runs.csv")
        raw_new = pd.read_csv(Path(d) / "runs.csv")
    assert sorted(new.names) == sorted(old.names), (new.names, old.names)

    rows = []
    for r_old in old:
        r = new[r_old.name]
        a = raw_new[raw_new.run == r.name].reset_index(drop=True)
        b = raw_old[raw_old.run == r.name].reset_index(drop=True)
        same_steps = np.array_equal(r.steps, r_old.steps) and np.array_equal(a.step, b.step)
        rows.append({
            "run": r.name,
            "points": f"{r.n_points}/{r_old.n_points}",
            "steps equal": same_steps,
            "loss max|d|": float(np.max(np.abs(r.loss - r_old.loss))),
            "lr rel|d| (logged)": float(np.max(np.abs(a.lr - b.lr) / b.lr)),
            "tokens equal": bool(np.array_equal(a.tokens.to_numpy(), b.tokens.to_numpy())),
            "params": r.params == r_old.params,
            "batch": r.tokens_per_step == r_old.tokens_per_step,
            "peak rel|d|": abs(r.peak_lr / r_old.peak_lr - 1),
            "total": f"{r.total_steps}/{r_old.total_steps}",
            "warmup": f"{r.warmup_steps}/{r_old.warmup_steps}",
            "per-step lr max|d|/peak": float(np.max(np.abs(r.lr - r_old.lr)) / r_old.peak_lr),
            "per-step lr mean|d|/peak": float(np.mean(np.abs(r.lr - r_old.lr)) / r_old.peak_lr),
        })
    table = pd.DataFrame(rows)
    with pd.option_context("display.width", 250, "display.max_columns", 20):
        print(table.to_string(index=False, float_format=lambda x: f"{x:.2e}"))
    print(f"\n{len(table)} runs; steps identical in {int(table['steps equal'].sum())}, tokens in "
          f"{int(table['tokens equal'].sum())}, params in {int(table['params'].sum())}, batch in "
          f"{int(table['batch'].sum())}")
    print(f"loss: max |difference| {table['loss max|d|'].max():.2e} (convert.py rounds to 5 decimals)")
    print(f"logged LR: max relative difference {table['lr rel|d| (logged)'].max():.2e} (convert.py keeps 6 "
          f"significant digits); peak LR {table['peak rel|d|'].max():.2e}")
    w = table.warmup.str.split("/")
    print(f"warmup: equal in {int((w.str[0] == w.str[1]).sum())} of {len(table)} runs")
    print(f"per-step LR (rebuilt from the logged LR vs convert.py's cosine:final=0.1): max |d| "
          f"{table['per-step lr max|d|/peak'].max():.2e} of the peak, "
          f"mean {table['per-step lr mean|d|/peak'].mean():.2e}")
    print("\nnotes of the import on warmup:")
    for n in imported.notes:
        if "warmup" in n:
            print("  " + n)


if __name__ == "__main__":
    main()
