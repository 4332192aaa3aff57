"""What a run reports: TensorBoard's HPARAMS row, and pictures readable without TensorBoard (the progress
GIF and the training curves).

Training writes the pictures into its run folder at the end; to (re)build them for any run folder:

    python -m dcgan.reports outputs/runs/<run>
"""

import os
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402
from pytorch_lightning.loggers import TensorBoardLogger  # noqa: E402
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402
from torch.utils.tensorboard.summary import hparams  # noqa: E402

from dcgan import cli  # noqa: E402

GRID_NAME = re.compile(r"step_(\d+)_epoch_(\d+)\.png")
LABEL_HEIGHT = 14
# The HPARAMS table's metric columns: the quality metric and the scalars DCGAN.training_step logs.
HPARAM_METRICS = (
    "metric/fid",
    "metric/kid",
    "metric/precision",
    "metric/recall",
    "metric/min_digit_share",
    "loss/d",
    "loss/g",
    "d/real",
    "d/fake",
)


def flatten(cfg: dict, prefix: str = "") -> dict:
    """{"model": {"lr": 1e-4}} -> {"model.lr": 1e-4}; values TensorBoard cannot show become strings."""
    flat = {}
    for key, value in cfg.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return flat


def compared_settings(cfg: DictConfig) -> dict:
    """The settings a person compares across runs: model, data, trainer and seed, flat; not the `_target_`
    classes, which are the same in every run, nor absolute paths, which differ in every run."""
    config = OmegaConf.to_container(cfg, resolve=True)
    flat = flatten({key: config[key] for key in ("model", "data", "trainer", "seed")})
    return {
        key: value
        for key, value in flat.items()
        if not key.endswith("_target_") and not (isinstance(value, str) and os.path.isabs(value))
    }


def log_hparams(logger: TensorBoardLogger, cfg: DictConfig) -> None:
    """Declare this run's row of TensorBoard's HPARAMS tab when it starts: its settings as columns and
    HPARAM_METRICS as metric columns, which TensorBoard fills with each scalar's last value as the run goes.
    (Lightning's log_hyperparams would also log a placeholder value for each metric, a false point on its curve.)"""
    for summary in hparams(compared_settings(cfg), dict.fromkeys(HPARAM_METRICS, 0.0)):
        logger.experiment.file_writer.add_summary(summary)


def sample_grids(run_dir: Path) -> list[tuple[int, int, Path]]:
    """(step, epoch, path) of each sample grid in the run, in training order."""
    found = [(m, p) for p in (run_dir / "samples").glob("*.png") if (m := GRID_NAME.fullmatch(p.name))]
    return sorted((int(m[1]), int(m[2]), p) for m, p in found)


def write_progress_gif(run_dir: Path, frame_ms: int = 250, max_frames: int | None = None) -> Path | None:
    """progress.gif: the fixed-noise grids in training order, each frame labelled with its step and epoch.

    `max_frames` keeps an evenly spaced subset (always with the last grid), for small files.
    """
    grids = sample_grids(run_dir)
    if not grids:
        return None
    if max_frames and len(grids) > max_frames:
        last = len(grids) - 1
        grids = [grids[round(i * last / (max_frames - 1))] for i in range(max_frames)]
    frames = []
    for step, epoch, path in grids:
        with Image.open(path) as grid:
            frame = Image.new("L", (grid.width, grid.height + LABEL_HEIGHT), color=0)
            frame.paste(grid.convert("L"), (0, LABEL_HEIGHT))
        ImageDraw.Draw(frame).text((3, 1), f"step {step}  epoch {epoch}", fill=255)
        frames.append(frame)
    durations = [frame_ms] * (len(frames) - 1) + [frame_ms * 8]  # linger on the final grid
    out = run_dir / "progress.gif"
    frames[0].save(out, save_all=True, append_images=frames[1:], duration=durations, loop=0, optimize=True)
    return out


def read_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar the run logged to TensorBoard: tag -> [(step, value), ...]."""
    series = {}
    for event_file in sorted((run_dir / "tensorboard").glob("events.out.tfevents.*")):
        acc = EventAccumulator(str(event_file), size_guidance={"scalars": 0}).Reload()
        for tag in acc.Tags()["scalars"]:
            series.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
    return {tag: sorted(points) for tag, points in series.items()}


def write_curves(run_dir: Path) -> Path | None:
    """curves.png: losses and D's outputs over steps, and the quality metrics over epochs."""
    scalars = read_scalars(run_dir)
    if "loss/d" not in scalars:
        return None
    epoch_at_step = dict(scalars.get("epoch", []))  # Lightning logs the epoch next to every scalar
    fid = scalars.get("metric/fid", [])
    fig, axes = plt.subplots(1, 3 if fid else 2, figsize=(15 if fid else 10, 3.8), constrained_layout=True)
    for tag, label in (("loss/d", "loss_D"), ("loss/g", "loss_G")):
        axes[0].plot(*zip(*scalars[tag], strict=True), label=label)
    axes[0].set(title="Losses", xlabel="step")
    for tag, label in (("d/real", "D(x)"), ("d/fake", "D(G(z))")):
        axes[1].plot(*zip(*scalars[tag], strict=True), label=label)
    axes[1].set(title="Discriminator outputs", xlabel="step", ylim=(0, 1))
    if fid:
        epochs = [epoch_at_step.get(step, float("nan")) + 1 for step, _ in fid]
        axes[2].plot(epochs, [v for _, v in fid], marker="o", label="Frechet distance (lower is better)")
        if "floor/fid" in scalars:
            axes[2].axhline(scalars["floor/fid"][0][1], color="gray", linestyle="--", label="real digits")
        axes[2].set(title="Quality", xlabel="epoch", yscale="log")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend()
    out = run_dir / "curves.png"
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def main() -> None:
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
    cli.run(main)
