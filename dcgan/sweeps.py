"""summary.md, summary.csv and summary.png in a sweep's folder (`train.py -m ...`): every job, best first, with the
values it swept and its final metrics, written after each job and when the sweep ends. They are read from the files
the jobs leave (`.hydra/overrides.yaml`, `final_metrics.json`), so they work with every launcher, also one that runs
jobs on other machines, and when failed jobs keep the sweep from its end; a job without final_metrics.json failed
or is still running, and shows as such.
"""

import csv
import io
import json
import math
from pathlib import Path

import pytorch_lightning as pl
import yaml
from hydra.core.utils import JobReturn
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from dcgan.files import write_atomically
from dcgan.reports import plain_numbers, pyplot, read_scalars


def objective(metrics: dict) -> float:
    """What train.py returns, for sweepers to minimise: the FID when the run measured one, else the final
    gap |loss/d - loss/g| (the two losses are about equal when neither network dominates), NaN without either."""
    if "metric/fid" in metrics:
        return float(metrics["metric/fid"])
    if "loss/d" in metrics and "loss/g" in metrics:
        return abs(float(metrics["loss/d"]) - float(metrics["loss/g"]))
    return float("nan")


def write_final_metrics(trainer: pl.Trainer, output_dir: str, value: float) -> None:
    """`final_metrics.json` in the run folder: the last logged scalars, the objective (the summary reads it), and
    what a callback reports of the run in its `final_metrics` (its timing, its CUDA graphs)."""
    metrics = {key: float(tensor) for key, tensor in trainer.callback_metrics.items()}
    metrics.update(step=trainer.lightning_module.step, objective=value)
    for callback in trainer.callbacks:
        metrics.update(getattr(callback, "final_metrics", {}))
    (Path(output_dir) / "final_metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")


def read_jobs(sweep_dir: Path) -> list[dict]:
    """One row per job folder: its overrides as key -> value, and its final metrics or a status."""
    rows = []
    for overrides_file in sweep_dir.glob("*/.hydra/overrides.yaml"):
        job_dir = overrides_file.parent.parent
        overrides = dict(o.split("=", 1) for o in yaml.safe_load(overrides_file.read_text()) or [] if "=" in o)
        metrics_file = job_dir / "final_metrics.json"
        metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
        # Hydra names job folders <number>_<overrides>: the number stands for the folder in the table.
        number = job_dir.name.split("_", 1)[0]
        job = int(number) if number.isdigit() else job_dir.name
        rows.append({"job": job, "dir": job_dir, "overrides": overrides, "metrics": metrics})
    return sorted(rows, key=best_first)


def best_first(row: dict) -> tuple:
    """Finished jobs by their objective (the quality metric when measured), lowest first; then the others."""
    objective = row["metrics"].get("objective", math.nan)
    return (math.isnan(objective), 0 if math.isnan(objective) else objective, str(row["job"]).zfill(9))


def varying_overrides(rows: list[dict]) -> list[str]:
    """The override keys whose values differ between jobs (all of them for one job)."""
    keys = sorted({key for row in rows for key in row["overrides"]})
    return [k for k in keys if len({row["overrides"].get(k) for row in rows}) > 1] or keys


def summary_table(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    """Columns: the job, the overrides that differ between jobs, the metrics."""
    varying = varying_overrides(rows)
    numbers = {key for row in rows for key, value in row["metrics"].items() if isinstance(value, int | float)}
    metric_keys = sorted(numbers - {"objective"})
    header = ["job", *varying, "status", "objective", *metric_keys]
    table = []
    for row in rows:
        metrics = row["metrics"]
        status = "done" if metrics else "failed or unfinished"
        values = [metrics.get(key, "") for key in ["objective", *metric_keys]]
        cells = [row["job"], *(row["overrides"].get(k, "") for k in varying), status, *values]
        table.append([f"{cell:.6g}" if isinstance(cell, float) else str(cell) for cell in cells])
    return header, table


def write_summary(sweep_dir: Path) -> None:
    rows = read_jobs(sweep_dir)
    if not rows:
        return
    header, table = summary_table(rows)
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows([header, *table])
    # Jobs that end at the same time may write at once: each write replaces the file whole.
    write_atomically(sweep_dir / "summary.csv", lambda f: f.write(out.getvalue().encode()))
    best = rows[0]["job"]  # rows come best first, the jobs without an objective last
    scored = not math.isnan(rows[0]["metrics"].get("objective", math.nan))
    lines = [
        f"# Sweep {sweep_dir.name}: {len(rows)} jobs, best first",
        "",
        "`objective` is what train.py returns (lower is better; see docs/scaling.md, Sweeps). summary.png: the same, drawn.",
        f"Best: job {best} (its folder is {best}/)." if scored else "No job has finished yet.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + " --- |" * len(header),
        *("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in table),
    ]
    write_atomically(sweep_dir / "summary.md", lambda f: f.write(("\n".join(lines) + "\n").encode()))
    write_figure(sweep_dir / "summary.png", rows)  # last: it needs matplotlib, which a GPU check may lack


def write_figure(path: Path, rows: list[dict]) -> None:
    """Each job's objective (bars, best first) and, where the runs measured it, its quality metric per epoch."""
    varying = varying_overrides(rows)
    names = [f"{row['job']}: " + ", ".join(f"{k}={row['overrides'].get(k, '')}" for k in varying) for row in rows]
    objectives = [row["metrics"].get("objective", math.nan) for row in rows]
    plt = pyplot()
    fig, (bars, curves) = plt.subplots(1, 2, figsize=(13, 0.8 + 0.45 * max(len(rows), 6)), constrained_layout=True)
    bars.barh(names[::-1], objectives[::-1])
    bars.set(title="objective (lower is better; failed jobs have no bar)", xlabel="objective")
    for name, row in zip(names, rows, strict=True):
        scalars = read_scalars(row["dir"])
        if "metric/fid" in scalars:
            epoch_at_step = dict(scalars.get("epoch", []))
            steps, fids = zip(*scalars["metric/fid"], strict=True)
            curves.plot([epoch_at_step.get(s, math.nan) + 1 for s in steps], fids, marker="o", label=name)
    curves.set(title="Frechet distance per epoch", xlabel="epoch", yscale="log")
    plain_numbers(curves.yaxis)
    if curves.lines:
        curves.legend(fontsize="small")
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=80)
    plt.close(fig)
    write_atomically(path, lambda f: f.write(png.getvalue()))


class SweepSummary(Callback):
    """Hydra's callback (`hydra.callbacks` in conf/config.yaml) that writes the summary."""

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs) -> None:
        if config.hydra.mode == RunMode.MULTIRUN:  # not in the DDP ranks a sweep job starts, which are runs
            write_summary(Path(config.hydra.runtime.output_dir).parent)

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        write_summary(Path(config.hydra.sweep.dir))
