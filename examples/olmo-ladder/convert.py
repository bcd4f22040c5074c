"""Convert the OLMo ladder's W&B exports into lrplan's runs format (run by hand, never imported).

Reads the cosine ladder runs (``peteish-moreeval/<size>-<k>xC.csv``: sizes 190M .. 3B at 0.5, 1,
2, 5, 10 x Chinchilla tokens) of a copy of allenai/OLMo's ``scripts/scaling/data/`` and writes
``runs.csv`` (``run,step,lr,tokens,loss``) and ``meta.csv`` (one row per run) beside this file.

    python examples/olmo-ladder/convert.py PATH/TO/olmo-ladder [--out examples/olmo-ladder]

Conversion:
- loss = ``eval/c4_en-validation/CrossEntropyLoss`` (nats/token), rounded to 5 decimals; rows
  without it are dropped;
- lr = ``optim/learning_rate_group0`` (the LR actually used), tokens =
  ``throughput/total_tokens``; step = ``_step``;
- params = AI2's parameter count (INDEX.csv ``n_params``), tokens_per_step =
  ``batch_size_in_tokens``, peak_lr = ``learning_rate_peak``, total_steps = last logged step;
- warmup_steps = round(params / tokens_per_step) (the ladder warms up over as many tokens as
  the model has parameters; this matches the logged LR) and schedule ``cosine:final=0.1``;
- the ``1xC-rerun`` files (denser logging of the 1xC runs) and the eval-only ``peteish1/7/13``
  exports are left out.
"""

import argparse
import re
from pathlib import Path

import pandas as pd

LOSS = "eval/c4_en-validation/CrossEntropyLoss"
NAME = re.compile(r"^(\d+[MB])-(\d+(?:\.\d+)?)xC\.csv$")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source", help="folder of the shared OLMo ladder copy (with INDEX.csv)")
    ap.add_argument("--out", default=str(Path(__file__).parent))
    args = ap.parse_args()
    src = Path(args.source)
    index = pd.read_csv(src / "INDEX.csv").set_index("file")
    rows, meta = [], []
    for path in sorted((src / "peteish-moreeval").glob("*.csv")):
        m = NAME.match(path.name)
        if not m:
            continue
        run = path.stem
        d = pd.read_csv(path).dropna(subset=[LOSS])
        params = float(index.loc[f"peteish-moreeval/{path.name}", "n_params"])
        batch = float(d["batch_size_in_tokens"].iloc[0])
        peak = float(d["learning_rate_peak"].iloc[0])
        rows.append(pd.DataFrame({
            "run": run,
            "step": d["_step"].astype(int),
            "lr": d["optim/learning_rate_group0"].map(lambda v: float(f"{v:.6g}")),
            "tokens": d["throughput/total_tokens"].astype("int64"),
            "loss": d[LOSS].round(5),
        }))
        meta.append({"run": run, "params": int(params), "tokens_per_step": int(batch),
                     "peak_lr": float(f"{peak:.6g}"), "total_steps": int(d["_step"].max()),
                     "warmup_steps": int(round(params / batch)), "schedule": "cosine:final=0.1"})
    out = Path(args.out)
    pd.concat(rows, ignore_index=True).to_csv(out / "runs.csv", index=False)
    pd.DataFrame(meta).to_csv(out / "meta.csv", index=False)
    print(f"{len(meta)} runs, {sum(len(r) for r in rows)} rows -> {out}")


if __name__ == "__main__":
    main()
