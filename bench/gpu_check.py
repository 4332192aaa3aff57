"""One prepared check of a GPU machine, for the first GPU at hand (docs/benchmarks.md, "The GPU check").

    make gpu-check ARGS="OUT_DIR"              # on a machine with a CUDA GPU: under 10 minutes, install included
    make gpu-check ARGS="--dry-run OUT_DIR"    # every step on the CPU at toy sizes: proves the check itself

It installs .venv when it is missing, then runs its steps most valuable first, each in a process of its own
under a time cap, within a total budget, so that a run cut short still has the most important figures:

1. the tests that mean most on a GPU (`pytest -m gpu`: CUDA graphs against eager training, no host syncs per
   step on the real device) and a short real run of the default with trainer=gpu;
2. the default, `python train.py trainer=gpu`, timed, then scored with evaluate.py (10k digits);
3. experiment=gpu, the GPU preset, timed and scored the same way;
4. python -m bench.throughput --device cuda: eager, compiled and CUDA graphs, images/s, compute and wait;
5. experiment=seed_repro trainer=gpu for a minute, and the time it projects for all 150 epochs;
6. a learning-rate sweep of 4 jobs at once on the one GPU (Hydra's joblib launcher), against one job alone;
7. experiment=best, timed and scored.

It writes gpu_check.json and gpu_check.md into OUT_DIR, with each step's log beside them. It needs only the
Python standard library itself, so that it runs before anything is installed.
"""

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYTHON = str(REPO / ".venv" / "bin" / "python")
MNIST_ROOT = "../shared/data" if (REPO.parent / "shared" / "data" / "MNIST" / "raw").is_dir() else "data"


@dataclass
class Step:
    name: str
    cap_s: int  # the most it may take
    commands: list[list[str]]  # run one after the other; OUT stands for the output folder
    figures: object = None  # (step, out_dir) -> dict of figures, read from what the commands wrote
    run: str = ""  # the folder below OUT its training run writes into
    result: dict = field(default_factory=dict)


def train(run: str, *overrides: str, sweep: bool = False) -> list[str]:
    return [
        PYTHON,
        "train.py",
        *(["-m"] if sweep else []),
        f"data.root={MNIST_ROOT}",
        f"output_root=OUT/{run}",
        *overrides,
    ]


def evaluate(run: str, num_samples: int) -> list[str]:
    return [
        PYTHON,
        "evaluate.py",
        f"ckpt_path=OUT/{run}",
        f"data.root={MNIST_ROOT}",
        f"num_samples={num_samples}",
        f"output=OUT/{run}/metrics.json",
    ]


def scored_run(name: str, run: str, cap_s: int, dry_run: bool, *overrides: str) -> Step:
    """A training run timed, then evaluate.py on it (a dry run's: a few steps, 1,000 digits)."""
    device = ["trainer=cpu"] if dry_run else ["trainer=gpu"]
    toy = ["trainer.max_epochs=1", "trainer.limit_train_batches=4", "callbacks.quality.num_samples=500"]
    commands = [train(run, *overrides, *device, *(toy if dry_run else [])), evaluate(run, 1000 if dry_run else 10_000)]
    return Step(name, cap_s, commands, timed_and_scored, run)


def steps(dry_run: bool) -> list[Step]:
    """The steps, most valuable first; a dry run's at toy sizes on the CPU."""
    device = ["trainer=cpu"] if dry_run else ["trainer=gpu"]
    short = ["trainer.max_epochs=1", f"trainer.limit_train_batches={4 if dry_run else 200}"]
    sweep_lrs = "model.lr=3e-4,6e-4" if dry_run else "model.lr=3e-4,6e-4,9e-4,1.2e-3"
    jobs = 2 if dry_run else 4
    return [
        Step(
            "tests and a short run",
            180,
            [
                [PYTHON, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider"],
                train("short", *device, *short, "callbacks.quality=null"),
            ],
            tests_and_run,
        ),
        scored_run("default", "default", 240, dry_run),
        scored_run("experiment=gpu", "gpu", 240, dry_run, "experiment=gpu"),
        Step(
            "throughput",
            240,
            [
                [PYTHON, "-m", "bench.throughput", "--data-root", MNIST_ROOT, "--json", "OUT/throughput.json"]
                + (["--quick"] if dry_run else ["--device", "cuda", "--rounds", "1"])
            ],
            throughput,
        ),
        Step(
            "seed_repro for a minute",
            120,
            [
                train(
                    "seed_repro", "experiment=seed_repro", *device, f"trainer.max_time=00:00:00:{10 if dry_run else 60}"
                )
            ],
            seed_repro_projection,
            "seed_repro",
        ),
        Step(
            "lr sweep",
            240,
            [
                train("one_job", *device, *short, "callbacks.quality=null"),
                train(
                    "sweep",
                    "hydra/launcher=joblib",
                    f"hydra.launcher.n_jobs={jobs}",
                    *device,
                    *short,
                    "callbacks.quality=null",
                    sweep_lrs,
                    sweep=True,
                ),
            ],
            sweep_against_one,
        ),
        scored_run("experiment=best", "best", 300, dry_run, "experiment=best"),
    ]


def tests_and_run(step: Step, out: Path) -> dict:
    log = (out / step.result["log"]).read_text()
    pytest_summary = log[: log.index("$ ", 2)].strip().splitlines()[-1]  # the line pytest ends with
    counts = re.findall(r"(\d+) (passed|failed|skipped|deselected|errors?)", pytest_summary)
    return {"tests": {kind: int(n) for n, kind in counts}, "short run s": step.result["seconds"][1]}


def timed_and_scored(step: Step, out: Path) -> dict:
    run = out / step.run
    figures = {"train s": step.result["seconds"][0], "evaluate s": step.result["seconds"][1]}
    metrics = json.loads(Path(run, "metrics.json").read_text())
    for key in ("fid", "kid", "precision", "recall", "min_digit_share", "copy_ratio"):
        figures[key] = round(metrics[key], 4)
    final = json.loads(next(Path(run).glob("runs/*/final_metrics.json")).read_text())
    figures["steps"] = final["step"]
    return figures


def throughput(step: Step, out: Path) -> dict:
    rows = json.loads((out / "throughput.json").read_text())["results"]
    keys = ("images_per_s", "step_ms", "compute_ms", "wait_ms", "launches", "waits", "vs_classic")
    return {row["name"]: {key: row[key] for key in keys if key in row} for row in rows}


def seed_repro_projection(step: Step, out: Path) -> dict:
    final = json.loads(next((out / step.run).glob("runs/*/final_metrics.json")).read_text())
    seconds, steps_done = step.result["seconds"][0], final["step"]
    total = 150 * (60_000 // 128)  # experiment=seed_repro: 150 epochs of 468 batches of 128
    return {
        "steps": steps_done,
        "train s": seconds,
        "projected 150 epochs min": round(total * seconds / max(steps_done, 1) / 60, 1),
    }


def sweep_against_one(step: Step, out: Path) -> dict:
    one, sweep = step.result["seconds"]
    jobs = len(list((out / "sweep").glob("multirun/*/[0-9]*/")))
    return {"one job s": one, "jobs at once": jobs, "sweep s": sweep, "sweep / one job": round(sweep / one, 2)}


def machine() -> dict:
    gpu = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True).stdout.strip() if has_gpu() else None
    return {"gpu": gpu, "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()}


def has_gpu() -> bool:
    return (
        shutil.which("nvidia-smi") is not None
        and subprocess.run(["nvidia-smi", "-L"], capture_output=True).returncode == 0
    )


def run_step(step: Step, out: Path, cap_s: float) -> None:
    """Run the step's commands in order under `cap_s` seconds in all; record each one's seconds and the status."""
    log = out / f"{re.sub(r'[^a-z0-9]+', '_', step.name.lower()).strip('_')}.log"
    step.result = {"status": "ok", "seconds": [], "log": log.name}
    started = time.monotonic()
    with open(log, "w") as f:
        for command in step.commands:
            command = [part.replace("OUT", str(out)) for part in command]
            f.write(f"$ {' '.join(command)}\n")
            f.flush()
            began = time.monotonic()
            try:
                done = subprocess.run(
                    command, cwd=REPO, stdout=f, stderr=subprocess.STDOUT, timeout=max(cap_s - (began - started), 1)
                )
            except subprocess.TimeoutExpired:
                step.result["status"] = "timed out"
                break
            step.result["seconds"].append(round(time.monotonic() - began, 1))
            if done.returncode != 0:
                step.result["status"] = f"failed (exit {done.returncode})"
                break
    step.result["log_tail"] = log.read_text()[-2000:]
    if step.result["status"] == "ok" and step.figures:
        try:
            step.result["figures"] = step.figures(step, out)
        except (OSError, KeyError, ValueError, StopIteration, IndexError) as err:
            step.result["status"] = f"ran, but its figures could not be read ({type(err).__name__}: {err})"


def install(out: Path) -> dict:
    """.venv from requirements.txt when it is missing (make setup), timed."""
    if (REPO / ".venv" / ".installed").is_file():
        return {"status": "already installed", "seconds": 0}
    began = time.monotonic()
    with open(out / "install.log", "w") as f:
        done = subprocess.run(["make", "setup"], cwd=REPO, stdout=f, stderr=subprocess.STDOUT)
    return {"status": "ok" if done.returncode == 0 else "failed", "seconds": round(time.monotonic() - began, 1)}


def markdown(report: dict) -> str:
    lines = [
        f"# GPU check{' (dry run on the CPU, toy sizes)' if report['dry_run'] else ''}",
        "",
        f"Machine: {report['machine']}. Install: {report['install']['status']} ({report['install']['seconds']} s). "
        f"Budget {report['budget_s']} s, used {report['used_s']} s.",
        "",
        "| step | status | seconds | figures |",
        "| --- | --- | --- | --- |",
    ]
    for step in report["steps"]:
        figures = json.dumps(step.get("figures", {})).replace("|", "/")
        seconds = " + ".join(map(str, step.get("seconds", [])))
        lines.append(f"| {step['name']} | {step['status']} | {seconds} | {figures} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path, help="where gpu_check.json, gpu_check.md and the steps' logs go")
    parser.add_argument("--dry-run", action="store_true", help="every step on the CPU, at toy sizes")
    parser.add_argument(
        "--budget", type=int, help="seconds for the install and all steps (480: 8 minutes; dry run 1800)"
    )
    args = parser.parse_args()
    args.budget = args.budget or (1800 if args.dry_run else 480)  # a CPU takes longer over the toy sizes
    if not args.dry_run and not has_gpu():
        print(
            "Error: make gpu-check needs a machine with an NVIDIA GPU (nvidia-smi finds none here); "
            'make gpu-check ARGS="--dry-run OUT_DIR" runs every step on the CPU.',
            file=sys.stderr,
        )
        raise SystemExit(1)
    out = args.out_dir.absolute()
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    report = {"dry_run": args.dry_run, "machine": machine(), "budget_s": args.budget, "install": install(out)}
    if report["install"]["status"] == "failed":
        print(f"Error: the install failed; see {out / 'install.log'}", file=sys.stderr)
        raise SystemExit(1)
    report["steps"] = []
    for step in steps(args.dry_run):
        left = args.budget - (time.monotonic() - started)
        if left < 30:  # not enough for any step to say anything
            step.result = {"status": f"skipped: {max(left, 0):.0f} s of the budget left"}
        else:
            print(f"{step.name} (up to {min(step.cap_s, left):.0f} s) ...", flush=True)
            run_step(step, out, min(step.cap_s, left))
            print(f"  {step.result['status']}", flush=True)
        report["steps"].append({"name": step.name, **{k: v for k, v in step.result.items() if k != "log_tail"}})
    report["used_s"] = round(time.monotonic() - started, 1)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / "gpu_check.md").write_text(markdown(report))
    print(f"wrote {out / 'gpu_check.json'} and {out / 'gpu_check.md'}")
    failed = [s["name"] for s in report["steps"] if not s["status"].startswith(("ok", "skipped"))]
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()
