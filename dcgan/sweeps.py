"""A table of every job of a sweep (`train.py -m ...`): the values it swept and its final metrics.

SweepSummary is a Hydra callback (conf/hydra/callbacks/sweep_summary.yaml). It
writes summary.md and summary.csv into the sweep folder after each job and
again when the sweep ends, from the files the jobs leave in their folders:
`.hydra/overrides.yaml` (Hydra) and `final_metrics.json` (train.py). Reading
files rather than keeping results in memory makes it work with every launcher:
joblib and submitit run the jobs in other processes or on other machines, and a
sweep whose jobs failed never reaches on_multirun_end. A job that failed or is
still running has no final_metrics.json and shows as such.
"""

import csv
import io
import json
import math
import os
import tempfile
from pathlib import Path

import yaml
from hydra.core.utils import JobReturn
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig


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
        rows.append({"job": int(number) if number.isdigit() else job_dir.name, "overrides": overrides, "metrics": metrics})
    return sorted(rows, key=lambda row: (isinstance(row["job"], str), str(row["job"]).zfill(9)))


def summary_table(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    """Columns: the job, the overrides that differ between jobs (all of them for one job), the metrics."""
    keys = sorted({key for row in rows for key in row["overrides"]})
    varying = [k for k in keys if len({row["overrides"].get(k) for row in rows}) > 1] or keys
    metric_keys = sorted({key for row in rows for key in row["metrics"]} - {"objective"})
    header = ["job", *varying, "status", "objective", *metric_keys]
    table = []
    for row in rows:
        metrics = row["metrics"]
        status = "done" if metrics else "failed or unfinished"
        values = [metrics.get(key, "") for key in ["objective", *metric_keys]]
        cells = [row["job"], *(row["overrides"].get(k, "") for k in varying), status, *values]
        table.append([f"{cell:.6g}" if isinstance(cell, float) else str(cell) for cell in cells])
    return header, table


def write_atomically(path: Path, text: str) -> None:
    # Jobs that end at the same time may write at once: each write replaces the file whole.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def write_summary(sweep_dir: Path) -> None:
    rows = read_jobs(sweep_dir)
    if not rows:
        return
    header, table = summary_table(rows)
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows([header, *table])
    write_atomically(sweep_dir / "summary.csv", out.getvalue())
    done = [(float(r["metrics"]["objective"]), r["job"]) for r in rows if not math.isnan(r["metrics"].get("objective", math.nan))]
    lines = [
        f"# Sweep {sweep_dir.name}: {len(rows)} jobs",
        "",
        "`objective` is what train.py returns (lower is better; see README, Sweeps).",
        f"Best: job {min(done)[1]} (the folder whose name starts with {min(done)[1]}_)." if done else "No job has finished yet.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + " --- |" * len(header),
        *("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in table),
    ]
    write_atomically(sweep_dir / "summary.md", "\n".join(lines) + "\n")


class SweepSummary(Callback):
    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs) -> None:
        if config.hydra.mode == RunMode.MULTIRUN:  # not in the DDP ranks a sweep job starts, which are runs
            write_summary(Path(config.hydra.runtime.output_dir).parent)

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        write_summary(Path(config.hydra.sweep.dir))
