"""What a run reports: TensorBoard's HPARAMS row, pictures readable without TensorBoard (the progress GIF and
the training curves), and the quality metric's scores as text (evaluate.py, MODEL_CARD.md). Training writes
the pictures into its run folder at the end; `python -m dcgan.reports outputs/runs/<run>` (re)builds them.
"""

import os
import re
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from PIL import Image, ImageDraw, ImageOps
from pytorch_lightning.loggers import TensorBoardLogger

from dcgan.metrics import NEAREST_K, NUM_DIGITS

GRID_NAME = re.compile(r"step_(\d+)_epoch_(\d+)\.png")
# The HPARAMS table's metric columns: the quality metric and the scalars DCGAN.training_step logs.
HPARAM_METRICS = (
    *(f"metric/{name}" for name in ("fid", "kid", "precision", "recall", "min_digit_share")),
    *("loss/d", "loss/g", "d/real", "d/fake"),
)


def compared_settings(cfg: dict, prefix: str = "") -> dict:
    """The settings a person compares across runs, flat ({"model": {"lr": 1e-4}} -> {"model.lr": 1e-4}), as values
    TensorBoard shows; not the `_target_` classes, the same in every run, nor absolute paths, which always differ."""
    flat = {}
    for key, value in cfg.items():
        if isinstance(value, dict):
            flat |= compared_settings(value, f"{prefix}{key}.")
        elif not key.endswith("_target_") and not (isinstance(value, str) and os.path.isabs(value)):
            flat[prefix + key] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return flat


def log_hparams(logger: TensorBoardLogger, cfg: DictConfig) -> None:
    """Declare this run's row of TensorBoard's HPARAMS tab when it starts: its model, data, trainer and seed as
    columns and HPARAM_METRICS as metric columns, which TensorBoard fills with each scalar's last value as the run
    goes. (Lightning's log_hyperparams would also log a placeholder value for each metric, a false point on its curve.)"""
    try:
        from torch.utils.tensorboard.summary import hparams
    except ImportError:  # no tensorboard: Lightning's TensorBoardLogger writes with tensorboardX, as this does
        from tensorboardX.summary import hparams

    config = OmegaConf.to_container(cfg, resolve=True)
    settings = compared_settings({key: config[key] for key in ("model", "data", "trainer", "seed")})
    for summary in hparams(settings, dict.fromkeys(HPARAM_METRICS, 0.0)):
        logger.experiment.file_writer.add_summary(summary)


def write_progress_gif(run_dir: Path, frame_ms: int = 250, max_frames: int | None = None) -> Path | None:
    """progress.gif: the fixed-noise grids in training order, each frame labelled with its step and epoch.
    `max_frames` keeps an evenly spaced subset (always with the last grid), for small files."""
    found = [(m, p) for p in (run_dir / "samples").glob("*.png") if (m := GRID_NAME.fullmatch(p.name))]
    grids = sorted((int(m[1]), int(m[2]), p) for m, p in found)
    if not grids:
        return None
    if max_frames and len(grids) > max_frames:
        grids = [grids[round(i * (len(grids) - 1) / (max_frames - 1))] for i in range(max_frames)]
    frames = []
    for step, epoch, path in grids:
        with Image.open(path) as grid:  # with a black band of 14 pixels above it for the label
            frame = ImageOps.expand(grid.convert("L"), (0, 14, 0, 0), fill=0)
        ImageDraw.Draw(frame).text((3, 1), f"step {step}  epoch {epoch}", fill=255)
        frames.append(frame)
    durations = [frame_ms] * (len(frames) - 1) + [frame_ms * 8]  # linger on the final grid
    out = run_dir / "progress.gif"
    frames[0].save(out, save_all=True, append_images=frames[1:], duration=durations, loop=0, optimize=True)
    return out


def read_scalars(run_dir: Path, x: str = "step") -> dict[str, list[tuple[float, float]]]:
    """Every scalar the run logged to TensorBoard: tag -> [(x, value), ...] in x's order, x being each point's
    `step` or `wall_time` (seconds since 1970)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    series = {}
    for event_file in sorted(run_dir.glob("tensorboard/**/events.out.tfevents.*")):
        acc = EventAccumulator(str(event_file), size_guidance={"scalars": 0}).Reload()
        for tag in acc.Tags()["scalars"]:
            series.setdefault(tag, []).extend((getattr(e, x), e.value) for e in acc.Scalars(tag))
    return {tag: sorted(points) for tag, points in series.items()}


def plain_numbers(axis) -> None:
    """Label a log axis's ticks 3, 4, 10 rather than matplotlib's 3 x 10^0, 4 x 10^0, 10^1. (LogFormatter labels
    the minor ticks matplotlib would: ScalarFormatter would label all, and they overlap beyond one decade.)"""
    from matplotlib.ticker import LogFormatter, ScalarFormatter

    axis.set_major_formatter(ScalarFormatter())
    axis.set_minor_formatter(LogFormatter(labelOnlyBase=False))


def pyplot():
    """matplotlib's pyplot, drawing into files only (no display needed). Imported where a picture is drawn, and
    tensorboard where events are read: a run that draws none trains without them (make gpu-check's lean machine)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_curves(run_dir: Path) -> Path | None:
    """curves.png: losses and D's outputs over steps, and the quality metrics over epochs."""
    plt = pyplot()
    scalars = read_scalars(run_dir)
    if "loss/d" not in scalars:
        return None
    epoch_at_step = dict(scalars.get("epoch", []))  # Lightning logs the epoch next to every scalar
    fid = scalars.get("metric/fid", [])
    fig, axes = plt.subplots(1, 3 if fid else 2, figsize=(15 if fid else 10, 3.8), constrained_layout=True)
    for tag, label in (("loss/d", "loss_D"), ("loss/g", "loss_G")):
        axes[0].plot(*zip(*scalars[tag], strict=True), label=label)
    for tag, label in (("d/real", "D(x)"), ("d/fake", "D(G(z))")):
        axes[1].plot(*zip(*scalars[tag], strict=True), label=label)
    axes[0].set(title="Losses", xlabel="step")
    axes[1].set(title="Discriminator outputs", xlabel="step", ylim=(0, 1))
    if fid:
        epochs = [epoch_at_step.get(step, float("nan")) + 1 for step, _ in fid]
        axes[2].plot(epochs, [v for _, v in fid], marker="o", label="Frechet distance (lower is better)")
        if "floor/fid" in scalars:
            axes[2].axhline(scalars["floor/fid"][0][1], color="gray", linestyle="--", label="real digits")
        axes[2].set(title="Quality", xlabel="epoch", yscale="log")
        plain_numbers(axes[2].yaxis)
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend()
    out = run_dir / "curves.png"
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


# What evaluate.py prints of the scores, in order: the key, its label, and how a value is written.
FIGURES = (
    ("fid", "Frechet distance, FID (lower is better)", "{:.2f}"),
    ("kid", "kernel distance, KID (lower is better)", "{:.3f}"),
    ("precision", f"precision, k={NEAREST_K} (fakes that look real)", "{:.3f}"),
    ("recall", f"recall, k={NEAREST_K} (reals the fakes cover)", "{:.3f}"),
    ("density", f"density, k={NEAREST_K}", "{:.3f}"),
    ("coverage", f"coverage, k={NEAREST_K}", "{:.3f}"),
    ("copy_ratio", "nearest training digit, over test digits' (1: no copying)", "{:.3f}"),
    ("copies", "nearer a training digit than 99% of test digits", "{:.1%}"),
    ("confidence", "mean confidence of the classifier", "{:.3f}"),
    ("label_accuracy", "read as the digit asked for", "{:.3f}"),
    ("min_digit_share", "the rarest digit's share (10% is balance)", "{:.1%}"),
)


def figure(key: str, value: float) -> str:
    return next(spec for k, _, spec in FIGURES if k == key).format(value)


def format_scores(scores: dict[str, float], floor: dict[str, float] | None = None) -> str:
    """The scores as evaluate.py prints them (and MODEL_CARD.md shows them), beside real digits' (the floor)."""
    lines = [f"{'':<58}{'generated':>12}{'real digits' if floor else '':>14}"]
    for key, label, _ in FIGURES:
        if key in scores:
            real = figure(key, floor[key]) if floor and key in floor else ""
            lines.append(f"{label:<58}{figure(key, scores[key]):>12}{real:>14}")
    lines.append("digit shares: " + "  ".join(f"{d}: {scores[f'digit_{d}_share']:.1%}" for d in range(NUM_DIGITS)))
    return "\n".join(lines)


def runs_summary(results: dict[str, dict[str, float]]) -> dict:
    """One run's scores as they are; several runs' as {"runs": ..., "mean": ..., "std": ...} over the runs."""
    runs = list(results.values())
    if len(runs) == 1:
        return runs[0]
    keys = [key for key in runs[0] if all(key in scores for scores in runs)]
    values = {key: torch.tensor([scores[key] for scores in runs], dtype=torch.float64) for key in keys}
    return {
        "runs": results,
        "mean": {key: v.mean().item() for key, v in values.items()},
        "std": {key: v.std().item() for key, v in values.items()},
    }


def format_runs(results: dict[str, dict[str, float]], floor: dict[str, float] | None = None) -> str:
    """evaluate.py's report: one run's scores, or each figure's mean and spread (the standard deviation) over
    several runs (seeds, say) and each run's own; beside them real digits' (the floor)."""
    if len(results) == 1:
        ((name, scores),) = results.items()
        return f"{name}\n{format_scores(scores, floor)}"
    summary = runs_summary(results)
    header = f"{'':<58}{'mean +- std':>20}" + "".join(f"{f'run {i + 1}':>10}" for i in range(len(results)))
    lines = [
        *(f"run {i + 1}: {name}" for i, name in enumerate(results)),
        header + (f"{'real digits':>14}" if floor else ""),
    ]
    for key, label, _ in FIGURES:
        if key in summary["mean"]:
            spread = f"{figure(key, summary['mean'][key])} +- {figure(key, summary['std'][key])}"
            each = "".join(f"{figure(key, scores[key]):>10}" for scores in results.values())
            real = f"{figure(key, floor[key]):>14}" if floor and key in floor else ""
            lines.append(f"{label:<58}{spread:>20}{each}{real}")
    for d in range(NUM_DIGITS):
        key = f"digit_{d}_share"
        spread = f"{summary['mean'][key]:.1%} +- {summary['std'][key]:.1%}"
        lines.append(f"{f'share of the {d}':<58}{spread:>20}" + "".join(f"{s[key]:>10.1%}" for s in results.values()))
    return "\n".join(lines)


def main() -> None:
    """`python -m dcgan.reports RUN_DIR`. The command-line layer is imported here, so that importing the reports
    (training does, at a run's end) does not pull in the config checks."""
    from dcgan import cli

    parser = cli.ArgumentParser(
        prog="python -m dcgan.reports", description="Write progress.gif and curves.png into a run folder."
    )
    parser.add_argument("run_dir", type=Path, help="a run folder, e.g. outputs/runs/2026-11-22_13-05-41")
    parser.add_argument("--max-frames", type=cli.whole(2), default=None, help="keep at most this many GIF frames")
    args = parser.parse_args()
    if not (args.run_dir / "samples").is_dir():
        parser.error(
            f"run_dir {args.run_dir} is not a run folder: it has no samples/ folder of grids; pass a folder train.py "
            "wrote, e.g. outputs/runs/<run>"
        )
    for path in (write_progress_gif(args.run_dir, max_frames=args.max_frames), write_curves(args.run_dir)):
        if path:
            print(f"wrote {path}")


if __name__ == "__main__":
    from dcgan.cli import run

    run(main)
