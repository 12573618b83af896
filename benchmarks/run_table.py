"""A markdown table of finished (or running) training runs, read from their run folders.

    python benchmarks/run_table.py runs/bonn/wrn22-* --field model_kwargs.lam --field model_kwargs.theta

One row per run: the chosen recipe fields, epochs done / planned, seed, the test accuracy at the
best validation epoch (the figure we report: nothing is picked on test), the last epoch's test
accuracy, the best validation accuracy, and the wall time. Reads ``recipe.json`` and
``metrics.csv`` only.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path


def _get(d: dict, dotted: str):
    for part in dotted.split("."):
        if not isinstance(d, dict) or part not in d:
            return "—"
        d = d[part]
    return d


def row(run: Path, fields: list[str]) -> list[str]:
    recipe = json.loads((run / "recipe.json").read_text())
    with open(run / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return [run.name, *[str(_get(recipe, k)) for k in fields], f"0/{recipe['epochs']}", "—", "—", "—", "—", "—"]
    best = max(rows, key=lambda r: float(r["val_acc"]))
    last = rows[-1]
    return [run.name, *[str(_get(recipe, k)) for k in fields], f"{len(rows)}/{recipe['epochs']}", str(recipe["seed"]),
            f"{100 * float(best['test_acc']):.2f} % (ep {int(best['epoch']) + 1})", f"{100 * float(last['test_acc']):.2f} %",
            f"{100 * float(best['val_acc']):.2f} %", f"{float(last['wall_s']) / 60:.1f} min"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--field", action="append", default=[], help="recipe field to show (dotted for nested)")
    a = ap.parse_args()
    head = ["run", *a.field, "epochs", "seed", "test at best val", "test, last epoch", "best val", "wall"]
    print("| " + " | ".join(head) + " |")
    print("| " + " | ".join("---" for _ in head) + " |")
    for run in a.runs:
        if (run / "recipe.json").is_file() and (run / "metrics.csv").is_file():
            print("| " + " | ".join(row(run, a.field)) + " |")


if __name__ == "__main__":
    main()
