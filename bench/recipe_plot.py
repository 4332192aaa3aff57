"""The recipe search, drawn: the FID each trial reached against each setting it searched, one panel per key.

    python -m bench.recipe_plot docs/recipe_trials.csv --out docs/images/recipe_search.png

The CSV has one row per trial: `round`, the searched keys (as in a sweep's
summary.csv, e.g. `model.lr_g`), `fid`, and any other measured columns (not
drawn). Keys with many numeric values (the learning rates) get a log axis; the
others are categories. A trial above `--fid-max` (a diverged one) is drawn as a
triangle at the top.
"""

import csv
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from dcgan import cli  # noqa: E402


def main() -> None:
    parser = cli.ArgumentParser(prog="python -m bench.recipe_plot", description=__doc__.split("\n\n")[0])
    parser.add_argument("trials", type=Path, help="CSV: round, the searched keys, fid")
    parser.add_argument("--out", type=Path, default=Path("recipe_search.png"))
    parser.add_argument("--fid-max", type=float, default=400.0, help="the top of the FID axis")
    args = parser.parse_args()
    if args.fid_max <= 0:
        parser.error(f"--fid-max {args.fid_max:g} is no FID: pass a positive top for the axis, e.g. 400")
    if not args.trials.is_file():
        parser.error(f"trials {args.trials} is not a file: pass the CSV of the trials, e.g. docs/recipe_trials.csv")

    rows = list(csv.DictReader(args.trials.open()))
    columns = rows[0].keys() if rows else set()
    keys = [k for k in columns if k.startswith(("model.", "data.", "trainer.")) and len({r[k] for r in rows}) > 1]
    if not keys or not {"round", "fid"} <= columns:
        parser.error(
            f"trials {args.trials} needs a row per trial with the columns round, fid and at least one searched key "
            "(model.*, data.*, trainer.*) that varies, as docs/recipe_trials.csv has"
        )
    rounds = sorted({r["round"] for r in rows})
    cols = 4
    fig, axes = plt.subplots(
        math.ceil(len(keys) / cols),
        cols,
        figsize=(3.2 * cols, 2.6 * math.ceil(len(keys) / cols)),
        sharey=True,
        constrained_layout=True,
        squeeze=False,
    )
    for ax, key in zip(axes.flat, keys, strict=False):
        values = [r[key] for r in rows]
        numeric = all(v.replace(".", "", 1).replace("e-", "", 1).isdigit() for v in values)
        if numeric and len(set(values)) > 6:  # a continuous range: place trials at their values
            position = {v: float(v) for v in values}
            ax.set_xscale("log")
        else:  # categories, in order
            order = sorted(set(values), key=lambda v: (not numeric, float(v) if numeric else v))
            position = {v: i for i, v in enumerate(order)}
            ax.set_xticks(range(len(order)), order, fontsize="small")
        for i, round_ in enumerate(rounds):
            picked = [r for r in rows if r["round"] == round_]
            below = [r for r in picked if float(r["fid"]) <= args.fid_max]
            above = [r for r in picked if float(r["fid"]) > args.fid_max]
            ax.scatter(
                [position[r[key]] for r in below],
                [float(r["fid"]) for r in below],
                s=18,
                color=f"C{i}",
                label=f"round {round_}",
            )
            ax.scatter([position[r[key]] for r in above], [args.fid_max] * len(above), s=30, color=f"C{i}", marker="^")
        ax.set(title=key, yscale="log", ylim=(None, args.fid_max * 1.1))
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(keys) :]:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_ylabel("FID at the budget (5k)")
    axes.flat[0].legend(fontsize="small")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=90)
    print(f"written to {args.out}")


if __name__ == "__main__":
    cli.run(main)
