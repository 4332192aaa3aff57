"""One prepared check of a GPU machine, for the first GPU at hand (docs/benchmarks.md, "The GPU check").

    make gpu-check ARGS="OUT_DIR"              # on a machine with a CUDA GPU: about 8 minutes, install included
    make gpu-check ARGS="--dry-run OUT_DIR"    # every step on the CPU at toy sizes: proves the check itself

It installs .venv when it is missing, on the machine's own PyTorch when its python has one (bench/install.py),
from wheels/ without a registry when that folder holds wheels (make wheels), and unpacks MNIST from there when
../shared/data is absent. Then its steps, most valuable first, each in a process of its own under a time cap,
within a total budget, so that a run cut short still has the most important figures:

1. the tests that mean most on a GPU (`pytest -m gpu` on tests/test_graphs.py and tests/test_syncs.py);
2. side by side on the one GPU: the default (`python train.py trainer=gpu`) and experiment=gpu, each timed,
   then scored with evaluate.py (10k digits); beside them, experiment=seed_repro for 30 s (the minutes it
   projects for its 150 epochs), then `python -m bench.throughput --device cuda --rounds 1`;
3. a learning-rate sweep of N jobs at once for N = 1, 2, 4, 8 and 16 (hydra/launcher=gpu_jobs);
4. experiment=best, timed and scored, when the budget leaves it room (--budget 900).

It writes gpu_check.json and gpu_check.md into OUT_DIR, with the versions it ran on and each step's log beside
them. It needs only the Python standard library itself, so that it runs before anything is installed.
"""

import argparse
import gzip
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYTHON = str(REPO / ".venv" / "bin" / "python")
WHEELS = REPO / "wheels"
MNIST_ROOT = "../shared/data" if (REPO.parent / "shared" / "data" / "MNIST" / "raw").is_dir() else "data"
# Left out of the check's install, which then needs nothing wheels/ lacks: it runs no export, demo page, other
# launcher or sweeper, or linter. `make setup` later installs them beside it.
NOT_RUN = (
    "hydra-submitit-launcher hydra-optuna-sweeper optuna safetensors onnx onnxscript onnxruntime gradio playwright ruff"
)
# Collecting every test module would import gradio, onnx and playwright: only these, where they exist yet.
GPU_TESTS = ("tests/test_graphs.py", "tests/test_syncs.py")
SEED_REPRO_STEPS = 150 * (60_000 // 128)  # experiment=seed_repro: 150 epochs of 468 batches of 128
USAGE = 'make gpu-check ARGS="[--dry-run] [--budget SECONDS] OUT_DIR"'
DEVICE = {False: "trainer=gpu", True: "trainer=cpu"}  # by dry_run


@dataclass
class Step:
    name: str
    cap_s: int  # the most it may take
    commands: list[list[str]]  # run one after the other; OUT stands for the output folder
    figures: object = None  # (step, out_dir) -> dict of figures, read from what the commands wrote
    run: str = ""  # the folder below OUT its training run writes into
    needs_s: int = 30  # skipped when the budget has less left: it could say nothing in less
    result: dict = field(default_factory=dict)


def train(run: str, *overrides: str, sweep: bool = False) -> list[str]:
    root = [f"data.root={MNIST_ROOT}", f"output_root=OUT/{run}"]
    return [PYTHON, "train.py", *(["-m"] if sweep else []), *root, *overrides]


def evaluate(run: str, num_samples: int) -> list[str]:
    where = [f"ckpt_path=OUT/{run}", f"data.root={MNIST_ROOT}", f"output=OUT/{run}/metrics.json"]
    return [PYTHON, "evaluate.py", *where, f"num_samples={num_samples}"]


def scored_run(name: str, run: str, cap_s: int, dry_run: bool, *overrides: str, needs_s: int = 30) -> Step:
    """A training run timed, then evaluate.py on it (a dry run's: a few steps, 1,000 digits)."""
    toy = ["trainer.max_epochs=1", "trainer.limit_train_batches=4", "callbacks.quality.num_samples=500"]
    commands = [
        train(run, *overrides, DEVICE[dry_run], *(toy if dry_run else [])),
        evaluate(run, 1000 if dry_run else 10_000),
    ]
    return Step(name, cap_s, commands, timed_and_scored, run, needs_s)


def seed_repro(dry_run: bool) -> Step:
    """experiment=seed_repro for 30 s; its steps per second project the 150 epochs (a dry run: 3 steps, each logged)."""
    toy = ["trainer.max_epochs=1", "trainer.limit_train_batches=3", "trainer.log_every_n_steps=1"]
    overrides = ["experiment=seed_repro", DEVICE[dry_run], *(toy if dry_run else ["trainer.max_time=00:00:00:30"])]
    return Step("seed_repro projection", 75, [train("seed_repro", *overrides)], seed_repro_projection, "seed_repro")


def throughput(dry_run: bool) -> Step:
    command = [PYTHON, "-m", "bench.throughput", "--data-root", MNIST_ROOT, "--json", "OUT/throughput.json"]
    command += ["--quick"] if dry_run else ["--device", "cuda", "--rounds", "1"]
    return Step("throughput", 180, [command], throughput_figures)


def sweep(dry_run: bool) -> Step:
    """N learning rates at once on the one device, for each N: short jobs (a few hundred steps, no metric)."""
    jobs = (1, 2) if dry_run else (1, 2, 4, 8, 16)
    short = ["trainer.max_epochs=1", f"trainer.limit_train_batches={4 if dry_run else 300}", "callbacks.quality=null"]
    short += ["trainer.log_every_n_steps=1"] if dry_run else []
    commands = []
    for n in jobs:  # learning rates within a factor of 2 of the default's 9e-4 either way: none diverges early
        lrs = ",".join(f"{9e-4 * 2 ** ((i - (n - 1) / 2) / 8):.3g}" for i in range(n))
        launcher = ["hydra/launcher=gpu_jobs", f"hydra.launcher.n_jobs={n}", f"model.lr={lrs}"]
        commands.append(train(f"sweep_{n}", *launcher, DEVICE[dry_run], *short, sweep=True))
    return Step("sweep: N jobs at once", 180, commands, lambda step, out: sweep_figures(step, out, jobs))


def steps(dry_run: bool) -> list[list[list[Step]]]:
    """Groups of lanes, most valuable first: a group's lanes run side by side, a lane's steps one after another.
    The timed runs share the device, as the sweep's jobs do; the sweep step says what that costs each."""
    files = [name for name in GPU_TESTS if (REPO / name).is_file()]
    pytest = [PYTHON, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", *files]
    return [
        [[Step("gpu tests", 120, [pytest], tests)]],
        [
            [scored_run("default", "default", 240, dry_run)],
            [scored_run("experiment=gpu", "gpu", 300, dry_run, "experiment=gpu")],
            [seed_repro(dry_run), throughput(dry_run)],
        ],
        [[sweep(dry_run)]],
        [[scored_run("experiment=best", "best", 420, dry_run, "experiment=best", needs_s=30 if dry_run else 360)]],
    ]


def tests(step: Step, out: Path) -> dict:
    summary = (out / step.result["log"]).read_text().strip().splitlines()[-1]  # the line pytest ends with
    counts = re.findall(r"(\d+) (passed|failed|skipped|deselected|errors?)", summary)
    return {"tests": {kind: int(n) for n, kind in counts}}


def timed_and_scored(step: Step, out: Path) -> dict:
    run = out / step.run
    figures = {"train s": step.result["seconds"][0], "evaluate s": step.result["seconds"][1]}
    metrics = json.loads(Path(run, "metrics.json").read_text())
    for key in ("fid", "kid", "precision", "recall", "min_digit_share", "copy_ratio"):
        figures[key] = round(metrics[key], 4)
    final = json.loads(next(Path(run).glob("runs/*/final_metrics.json")).read_text())
    figures["steps"] = final["step"]
    return figures


def throughput_figures(step: Step, out: Path) -> dict:
    rows = json.loads((out / "throughput.json").read_text())["results"]
    scalar = (int, float, str, bool)
    return {row["name"]: {k: v for k, v in row.items() if k != "name" and isinstance(v, scalar)} for row in rows}


def steps_per_s(log: Path) -> float:
    """From a run's train.log: steps per second between its first and last logged step, start-up left out."""
    pattern = r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]\[dcgan\.callbacks\]\[INFO\] - step (\d+),"
    found = re.findall(pattern, log.read_text(), re.MULTILINE)
    (t0, s0), (t1, s1) = found[0], found[-1]
    seconds = (
        datetime.strptime(t1, "%Y-%m-%d %H:%M:%S,%f") - datetime.strptime(t0, "%Y-%m-%d %H:%M:%S,%f")
    ).total_seconds()
    if int(s1) <= int(s0) or seconds <= 0:
        raise ValueError(f"{log} logged too few steps to time ({len(found)} lines)")
    return (int(s1) - int(s0)) / seconds


def seed_repro_projection(step: Step, out: Path) -> dict:
    run = out / step.run
    rate = steps_per_s(next(run.glob("runs/*/train.log")))
    final = json.loads(next(run.glob("runs/*/final_metrics.json")).read_text())
    return {
        "steps": final["step"],
        "steps/s": round(rate, 1),  # the per-epoch metric and checkpoints included, the start-up not
        "projected 150 epochs min": round(SEED_REPRO_STEPS / rate / 60, 1),
    }


def sweep_figures(step: Step, out: Path, jobs: tuple[int, ...]) -> dict:
    """For each N that finished: its wall time, against one job's, and each job's steps per second."""
    rounds = {}
    for n, seconds in zip(jobs, step.result["seconds"], strict=False):
        rates = [steps_per_s(log) for log in (out / f"sweep_{n}").glob("multirun/*/*/train.log")]
        rounds[f"{n} at once"] = {
            "wall s": seconds,
            "vs one job": round(seconds / step.result["seconds"][0], 2),
            "steps/s per job": round(sum(rates) / len(rates), 1),
            "steps/s in all": round(sum(rates), 1),
        }
    return rounds


def machine() -> dict:
    gpu = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True).stdout.strip() if has_gpu() else None
    return {"gpu": gpu, "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()}


def has_gpu() -> bool:
    return (
        shutil.which("nvidia-smi") is not None
        and subprocess.run(["nvidia-smi", "-L"], capture_output=True).returncode == 0
    )


def versions() -> dict:
    """What .venv runs on: Python, torch, its CUDA, Lightning, the GPU, its driver."""
    code = (
        "import json, platform, torch, pytorch_lightning as pl; print(json.dumps({'python': platform.python_version(), "
        "'torch': torch.__version__, 'cuda': torch.version.cuda, 'lightning': pl.__version__, 'torch from': "
        "torch.__path__[0], 'gpu': torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}))"
    )
    done = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True)
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["no output"])[-1]}
    found = json.loads(done.stdout.strip().splitlines()[-1])
    query = ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]
    found["driver"] = subprocess.run(query, capture_output=True, text=True).stdout.split("\n")[0] if has_gpu() else None
    return found


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
    if step.figures and step.result["seconds"]:  # a sweep cut short still has the rounds it finished
        try:
            step.result["figures"] = step.figures(step, out)
        except (OSError, KeyError, ValueError, StopIteration, IndexError, ZeroDivisionError) as err:
            if step.result["status"] == "ok":
                step.result["status"] = f"ran, but its figures could not be read ({type(err).__name__}: {err})"


def run_lane(lane: list[Step], out: Path, deadline: float, beside: list[str]) -> None:
    for step in lane:
        left = deadline - time.monotonic()
        if left < step.needs_s:
            step.result = {"status": f"skipped: {max(left, 0):.0f} s of the budget left, it needs {step.needs_s}"}
        else:
            print(f"{step.name} (up to {min(step.cap_s, left):.0f} s) ...", flush=True)
            run_step(step, out, min(step.cap_s, left))
            print(f"  {step.name}: {step.result['status']}", flush=True)
        step.result["beside"] = beside


def run_group(lanes: list[list[Step]], out: Path, deadline: float) -> None:
    """The group's lanes side by side, each in a thread of its own (the work is in the processes they start)."""
    names = [[step.name for step in lane] for lane in lanes]
    threads = [
        threading.Thread(target=run_lane, args=(lane, out, deadline, sum(names[:i] + names[i + 1 :], [])))
        for i, lane in enumerate(lanes)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def install(out: Path) -> dict:
    """.venv when it is missing, timed: what the check runs of requirements.txt, on the python running the check,
    without a registry when wheels/ holds wheels. Its own marker: a later `make setup` installs the rest."""
    if any((REPO / ".venv" / marker).is_file() for marker in (".installed", ".gpu_check")):
        return {"status": "already installed", "seconds": 0}
    lines = [line.strip() for line in (REPO / "requirements.txt").read_text().splitlines()]
    needed = [
        line for line in lines if line and line[0] != "#" and re.split(r"[=<>!~\[; ]", line)[0] not in NOT_RUN.split()
    ]
    (out / "requirements.txt").write_text("\n".join(needed) + "\n")
    offline = ["--no-index", "--find-links", str(WHEELS)] if any(WHEELS.glob("*.whl")) else []
    began = time.monotonic()
    with open(out / "install.log", "w") as f:
        command = [sys.executable, "bench/install.py", "setup", ".venv", str(out / "requirements.txt"), *offline]
        done = subprocess.run(command, cwd=REPO, stdout=f, stderr=subprocess.STDOUT)
    said = (out / "install.log").read_text().splitlines()
    ours = [line for line in said if line.startswith(("make setup:", "Error:"))][-1:]
    pips = [line for line in said if line.startswith("ERROR:")][:1] if done.returncode else []  # what pip lacked
    how = (pips or ours or [""])[0]
    if done.returncode == 0:
        (REPO / ".venv" / ".gpu_check").touch()
    return {
        "status": "ok" if done.returncode == 0 else "failed",
        "seconds": round(time.monotonic() - began, 1),
        "from": "wheels/, no registry" if offline else "a registry",
        "how": how,
    }


def unpack_mnist() -> None:
    """MNIST into data/MNIST/raw from wheels/mnist/ (make wheels), where ../shared/data does not hold it."""
    raw = REPO / "data" / "MNIST" / "raw"
    for packed in sorted((WHEELS / "mnist").glob("*.gz")) if MNIST_ROOT == "data" else []:
        if not (raw / packed.stem).is_file():
            raw.mkdir(parents=True, exist_ok=True)
            with gzip.open(packed) as src, open(raw / f"{packed.stem}.part", "wb") as dst:
                shutil.copyfileobj(src, dst)
            os.replace(raw / f"{packed.stem}.part", raw / packed.stem)


def markdown(report: dict) -> str:
    ran_on = ", ".join(f"{key} {value}" for key, value in report["versions"].items())
    lines = [
        f"# GPU check{' (dry run on the CPU, toy sizes)' if report['dry_run'] else ''}",
        "",
        f"Machine: {report['machine']}. Ran on: {ran_on}.",
        f"Install: {report['install']['status']} ({report['install']['seconds']} s). "
        f"Budget {report['budget_s']} s, used {report['used_s']} s.",
        "",
        "| step | status | seconds | ran beside | figures |",
        "| --- | --- | --- | --- | --- |",
    ]
    for step in report["steps"]:
        figures = json.dumps(step.get("figures", {})).replace("|", "/")
        seconds = " + ".join(map(str, step.get("seconds", [])))
        lines.append(f"| {step['name']} | {step['status']} | {seconds} | {', '.join(step['beside'])} | {figures} |")
    return "\n".join(lines) + "\n"


class Arguments(argparse.ArgumentParser):
    """argparse whose errors are one line, `Error: ...`, exit 2, as dcgan.cli's (which needs the install)."""

    def error(self, message: str):
        if "required: out_dir" in message:
            message = "make gpu-check needs OUT_DIR, the folder its report and logs go into"
        print(f"Error: {message}. Run it as {USAGE}.", file=sys.stderr)
        raise SystemExit(2)


def seconds(text: str) -> int:
    if not text.isdigit() or int(text) == 0:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a whole number of seconds above 0: the budget counts the install and every step, "
            "e.g. --budget 480 (the default; 1800 with --dry-run)"
        )
    return int(text)


def main() -> None:
    parser = Arguments(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path, help="where gpu_check.json, gpu_check.md and the steps' logs go")
    parser.add_argument("--dry-run", action="store_true", help="every step on the CPU, at toy sizes")
    parser.add_argument("--budget", type=seconds, help="seconds for the install and all steps (480; dry run 1800)")
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
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        parser.error(f"OUT_DIR {args.out_dir} cannot be made ({err.strerror}): give a folder this user may write")
    started = time.monotonic()
    report = {"dry_run": args.dry_run, "machine": machine(), "budget_s": args.budget, "install": install(out)}
    if report["install"]["status"] == "failed":
        how = f" ({report['install']['how'].removeprefix('Error: ')})" if report["install"]["how"] else ""
        print(f"Error: the install failed{how}; its log is {out / 'install.log'}", file=sys.stderr)
        raise SystemExit(1)
    print(
        f"install: {report['install']['status']} ({report['install']['seconds']} s) {report['install'].get('how', '')}"
    )
    unpack_mnist()
    report["versions"] = versions()
    print(f"ran on: {json.dumps(report['versions'])}", flush=True)
    groups = steps(args.dry_run)
    for step in (step for lanes in groups for lane in lanes for step in lane) if args.dry_run else []:
        step.cap_s *= 3  # a busy 2-core CPU takes minutes over the toy sizes: the caps are a GPU's
    for lanes in groups:
        run_group(lanes, out, started + args.budget)
    report["steps"] = [{"name": s.name, **s.result} for lanes in groups for lane in lanes for s in lane]
    report["used_s"] = round(time.monotonic() - started, 1)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / "gpu_check.md").write_text(markdown(report))
    print(f"wrote {out / 'gpu_check.json'} and {out / 'gpu_check.md'}")
    failed = [s["name"] for s in report["steps"] if not s["status"].startswith(("ok", "skipped"))]
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()
