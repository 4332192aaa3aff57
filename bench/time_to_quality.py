"""The quality metric against wall-clock time: a project run against the classic loop, in one plot.

    python -m bench.time_to_quality --run outputs/runs/<run> --label "python train.py" \\
        --classic outputs/bench/classic_25.json --classic-images-per-s 447 --out docs/images/time_to_quality.png

The project run's points are its per-epoch `metric/fid` and `metric/min_digit_share`
from TensorBoard, at their wall-clock times since the run folder was created
(start-up and data loading included). The classic loop's points come from
`python -m bench.classic --json ...`; with `--classic-images-per-s` (the
benchmark's median, measured on a quiet machine) its epochs are placed at
epoch x 468 batches x 128 / that rate instead of at the times recorded, which
are only right when nothing else ran beside it.
"""

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from dcgan import cli  # noqa: E402
from dcgan.reports import plain_numbers, read_scalars  # noqa: E402

CLASSIC_IMAGES_PER_EPOCH = 468 * 128  # 60k digits in full batches of 128
TAGS = ("metric/fid", "metric/min_digit_share")


def project_points(run_dir: Path) -> dict[str, list[tuple[float, float]]]:
    """{tag: [(seconds since the run started, value)]} for the quality metrics of one run."""
    start = (run_dir / ".hydra").stat().st_mtime  # Hydra writes it first, before anything is built
    scalars = read_scalars(run_dir, x="wall_time")
    return {tag: [(time - start, value) for time, value in scalars[tag]] for tag in TAGS if tag in scalars}


def classic_points(path: Path, images_per_s: float | None) -> dict[str, list[tuple[float, float]]]:
    epochs = json.loads(path.read_text())["epochs"]
    at = lambda e: e["epoch"] * CLASSIC_IMAGES_PER_EPOCH / images_per_s if images_per_s else e["wall_s"]  # noqa: E731
    return {
        "metric/fid": [(at(e), e["fid"]) for e in epochs],
        "metric/min_digit_share": [(at(e), e["min_digit_share"]) for e in epochs],
    }


def main() -> None:
    parser = cli.ArgumentParser(prog="python -m bench.time_to_quality", description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, action="append", required=True, help="a train.py run folder (repeatable)")
    parser.add_argument("--label", action="append", help="one per --run (default: the folder's name)")
    parser.add_argument("--classic", type=Path, required=True, help="the JSON that bench.classic wrote")
    parser.add_argument("--classic-images-per-s", type=float, help="place the classic epochs at this rate")
    parser.add_argument("--out", type=Path, default=Path("time_to_quality.png"))
    args = parser.parse_args()
    if args.label and len(args.label) != len(args.run):
        parser.error(f"--label is given {len(args.label)} times for {len(args.run)} --run: give one per --run, or none")
    if args.classic_images_per_s is not None and args.classic_images_per_s <= 0:
        parser.error(f"--classic-images-per-s {args.classic_images_per_s:g} is no rate: pass the benchmark's images/s")

    runs = {}
    for label, run in zip(args.label or [run.name for run in args.run], args.run, strict=True):
        if not (run / ".hydra").is_dir():
            parser.error(f"--run {run} is not a train.py run folder (it has no .hydra/): pass one of outputs/runs/")
        runs[label] = project_points(run)
        if missing := [tag for tag in TAGS if not runs[label].get(tag)]:
            parser.error(
                f"--run {run} has no {' or '.join(missing)} in its TensorBoard log (tensorboard/): it scored no "
                "epoch; pass a run trained with the per-epoch metric (callbacks.quality)"
            )
    try:
        runs["classic loop (bench/classic.py)"] = classic_points(args.classic, args.classic_images_per_s)
    except (OSError, ValueError, KeyError, TypeError):
        parser.error(
            f"--classic {args.classic} is not the JSON that bench.classic writes: write it with "
            f"`python -m bench.classic --json {args.classic}`"
        )
    fig, (ax_fid, ax_share) = plt.subplots(1, 2, figsize=(11, 4))
    for label, points in runs.items():
        for ax, tag in ((ax_fid, "metric/fid"), (ax_share, "metric/min_digit_share")):
            minutes, values = zip(*[(t / 60, v) for t, v in points[tag]], strict=True)
            ax.plot(minutes, values, marker="o", markersize=3, label=label)
    ax_fid.set(xlabel="wall-clock minutes", ylabel="FID (classifier features, lower is better)", yscale="log")
    plain_numbers(ax_fid.yaxis)
    ax_share.axhline(0.07, color="grey", linestyle="--", linewidth=1, label="7%: every digit covered")
    ax_share.set(xlabel="wall-clock minutes", ylabel="share of the rarest digit")
    # Where the curves are not: FID falls from the upper left, the rarest share rises from the lower left.
    for ax, corner in ((ax_fid, "upper right"), (ax_share, "lower right")):
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small", loc=corner)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=100)
    print(f"written to {args.out}")


if __name__ == "__main__":
    cli.run(main)
