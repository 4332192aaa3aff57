"""One prepared check of a GPU machine, for the first GPU at hand (docs/benchmarks.md, "The GPU check").

    make gpu-check ARGS="OUT_DIR"              # on a machine with a CUDA GPU: within 8 minutes, install included
    make gpu-check ARGS="--dry-run OUT_DIR"    # every step on the CPU at toy sizes: proves the check itself

It installs .venv when it is missing (bench/install.py check): on the machine's own PyTorch when its python has
one, from wheels/ without a registry when that folder holds wheels (make wheels), and unpacks MNIST from there
when ../shared/data is absent. Then its steps, one process at a time, so that nothing shares the GPU with a timed
run, each under a time cap and all within a budget, most valuable first:

1. where an eager step's host time goes: inside DCGAN.update, which a CUDA graph replays in one launch, and
   outside it, which no graph removes (bench.profile on experiment=reference_script);
2. the tests that mean most on a GPU (`pytest -m gpu`: graphs against eager training, no waits per step);
3. timed: experiment=reference_script for 30 s eager, then graphed, each projected to its 150 epochs; the default,
   graphed, then scored (evaluate.py, after the real digits' floor, which trains the metric's classifier when
   missing); `python -m bench.throughput --device cuda --rounds 1`, which times a graph's replays by CUDA events;
4. sweeps of N graphed jobs at once, N = 1, 2, 3, 4 and 8 (hydra/launcher=gpu_jobs), while the budget lasts.

Graphed runs are strict on a GPU: a run that cannot use graphs fails, saying why. On the CPU (--dry-run) graphs
cannot run: those runs train eagerly and the table says why. No run draws pictures (callbacks.report=null), so
the check needs neither matplotlib nor tensorboard. It ends with one table, gpu_check.md and gpu_check.json in
OUT_DIR (each step's log beside them). It needs only the Python standard library: it runs before any install.
"""

import argparse
import gzip
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYTHON = str(REPO / ".venv" / "bin" / "python")
WHEELS = REPO / "wheels"
MNIST_ROOT = "../shared/data" if (REPO.parent / "shared" / "data" / "MNIST" / "raw").is_dir() else "data"
# Every step's environment: the tests find MNIST through $MNIST_ROOT, not data.root.
ENV = {**os.environ, "MNIST_ROOT": str((REPO / MNIST_ROOT).resolve())}
# Collecting every test module would import gradio, onnx and playwright: only these.
GPU_TESTS = ("tests/test_graphs.py", "tests/test_syncs.py")
EPOCH, EPOCHS = 60_000 // 128, 150  # experiment=reference_script: 150 epochs of 468 batches of 128
SWEEPS = (1, 2, 3, 4, 8)  # jobs at once
USAGE = 'make gpu-check ARGS="[--dry-run] [--budget SECONDS] OUT_DIR"'
COLUMNS = ("run", "status", "s", "steps/s", "epoch ends s", "graphs", "x eager", "waits/step", "more")


@dataclass
class Step:
    name: str
    cap_s: int  # the most it may take
    commands: list[list[str]]  # run one after the other; OUT stands for the output folder
    rows: Callable[["Step", Path], list[dict]]  # its rows of the table, read from what the commands wrote
    folder: str = ""  # below OUT: where its commands write
    needs_s: int = 30  # skipped when the budget has less left: it could say nothing in less
    result: dict = field(default_factory=dict)


def train(run: str, *overrides: str, sweep: bool = False) -> list[str]:
    root = [f"data.root={MNIST_ROOT}", f"output_root=OUT/{run}", "callbacks.report=null"]
    return [PYTHON, "train.py", *(["-m"] if sweep else []), *root, *overrides]


def evaluate(run: str, *settings: str) -> list[str]:
    return [PYTHON, "evaluate.py", f"data.root={MNIST_ROOT}", f"output=OUT/{run}/metrics.json", *settings]


def trained(name: str, run: str, cap_s: int, *overrides: str, scored: str = "") -> Step:
    """A training run in OUT/<run>, and with `scored` (evaluate.py's num_samples=...) evaluate.py on it."""
    commands = [train(run, *overrides), *([evaluate(run, f"ckpt_path=OUT/{run}", scored)] if scored else [])]
    return Step(name, cap_s, commands, runs, run)


def plan(dry_run: bool) -> list[Step]:
    """The steps in order. A dry run's are the same commands at toy sizes, on the CPU."""
    device = "trainer=cpu" if dry_run else "trainer=gpu"
    graphed = ["callbacks.cuda_graph.enabled=true", *([] if dry_run else ["callbacks.cuda_graph.strict=true"])]
    toy = ["trainer.max_epochs=1", "trainer.limit_train_batches=3", "callbacks.quality.num_samples=500"]
    digits = "num_samples=1000" if dry_run else "num_samples=10000"
    profile = [PYTHON, "-m", "bench.profile", "--data-root", MNIST_ROOT, "--json", "OUT/profile.json"]
    profile += [*(["--skip", "2", "--steps", "2"] if dry_run else []), "experiment=reference_script", device]
    pytest = [PYTHON, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", *GPU_TESTS]
    throughput = [PYTHON, "-m", "bench.throughput", "--data-root", MNIST_ROOT, "--json", "OUT/throughput.json"]
    throughput += ["--quick"] if dry_run else ["--device", "cuda", "--rounds", "1"]
    reference_script = ["experiment=reference_script", device, *(toy if dry_run else ["trainer.max_time=00:00:00:30"])]
    steps = [
        Step("profile: reference_script eager", 90, [profile], profile_rows),
        Step("gpu tests", 150, [pytest], test_rows),
        # Before the timed runs: it trains the metric's classifier where none is cached yet.
        Step("real digits", 90, [evaluate("real", "real=true", digits)], scores, "real"),
        trained("reference_script eager", "reference_script_eager", 90, *reference_script),
        trained("reference_script graphed", "reference_script_graphed", 90, *reference_script, *graphed),
        trained("default graphed", "default", 150, device, *graphed, *(toy if dry_run else []), scored=digits),
        Step("throughput", 200, [throughput], throughput_rows, needs_s=60),
    ]
    short = ["trainer.max_epochs=1", f"trainer.limit_train_batches={4 if dry_run else 1500}", "callbacks.quality=null"]
    for n in SWEEPS[:2] if dry_run else SWEEPS:  # learning rates within a factor of 2 of the default's 9e-4
        lrs = ",".join(f"{9e-4 * 2 ** ((i - (n - 1) / 2) / 8):.3g}" for i in range(n))
        launcher = ["hydra/launcher=gpu_jobs", f"hydra.launcher.n_jobs={n}", f"model.lr={lrs}"]
        command = train(f"sweep_{n}", *launcher, device, *graphed, *short, sweep=True)
        steps.append(Step(f"sweep: {n} at once", 120, [command], sweep_rows, f"sweep_{n}", needs_s=40))
    return steps


def final_metrics(folder: Path) -> list[dict]:
    return [json.loads(path.read_text()) for path in sorted(folder.glob("**/final_metrics.json"))]


def graphs(finals: list[dict]) -> str:
    """What the runs' CUDA graphs did: captures / replays, or why they were off."""
    if off := sorted({final["cuda_graphs/off"] for final in finals} - {None}):
        return f"off: {'; '.join(off)}"
    return f"{sum(f['cuda_graphs/captures'] for f in finals)} / {sum(f['cuda_graphs/replays'] for f in finals):,}"


def runs(step: Step, out: Path) -> list[dict]:
    """A training run from its final_metrics.json (steps/s without its start and epoch ends, and those apart), and
    its scores: experiment=reference_script's projected to its 150 epochs, at its steps/s and with epoch ends as this run
    saw them (one per epoch begun)."""
    (final,) = final_metrics(out / step.folder)
    rate = final["timing/steps_per_second"]
    row = {"steps/s": rate and round(rate, 1), "epoch ends s": round(final["timing/epoch_ends_seconds"], 2)}
    row |= {"graphs": graphs([final]), "steps": final["step"]}
    if step.name.startswith("reference_script") and rate:
        ends = final["timing/epoch_ends_seconds"] / max(1, math.ceil(final["step"] / EPOCH))
        row |= {
            "more": {"150 epochs s": round(EPOCHS * (EPOCH / row["steps/s"] + ends))},
            "eager": "reference_script eager",
        }
    if len(step.commands) == 2:
        row["more"] = {"train s": step.result["seconds"][0]} | scores(step, out)[0]["more"]
    return [row]


def scores(step: Step, out: Path) -> list[dict]:
    """evaluate.py's figures (with real=true, of the real digits: the metric's floor)."""
    found = json.loads((out / step.folder / "metrics.json").read_text())
    return [{"run": step.name, "more": {key: round(found[key], 3) for key in ("fid", "kid", "precision", "recall")}}]


def profile_rows(step: Step, out: Path) -> list[dict]:
    profile = json.loads((out / "profile.json").read_text())
    keys = ("update_host_ms", "other_host_ms", "busy_ms")  # busy: the GPU's, None on the CPU
    more = {key: round(profile[key], 3) for key in keys if profile[key] is not None}
    rate = round(1000 / profile["wall_ms"], 1)  # under the profiler, which costs time too
    return [{"run": step.name, "steps/s": rate, "waits/step": profile["waits"], "more": more}]


def test_rows(step: Step, out: Path) -> list[dict]:
    summary = (out / step.result["log"]).read_text().strip().splitlines()[-1]  # the line pytest ends with
    counts = re.findall(r"(\d+) (passed|failed|skipped|deselected|errors?)", summary)
    return [{"run": step.name, "more": {kind: int(n) for n, kind in counts}}]


def throughput_rows(step: Step, out: Path) -> list[dict]:
    """A row per contender: steps/s of 128 images; on a GPU the profile's waits and busy time, and a graph's
    replay timed by CUDA events."""
    report = json.loads((out / "throughput.json").read_text())
    rows = []
    for result in report["results"]:
        row = {"run": f"throughput: {result['name']}", "waits/step": result.get("waits")}
        row["more"] = {key: result[key] for key in ("busy_ms", "replay_ms") if result.get(key) is not None}
        if "failed" in result:
            row["status"] = f"failed: {result['failed']}"
        else:
            row["steps/s"] = round(result["images_per_s"] / report["settings"]["batch_size"], 1)
        if result["name"] in ("eager", "graphs"):
            row["eager"] = "throughput: eager"
        rows.append(row)
    return rows


def sweep_rows(step: Step, out: Path) -> list[dict]:
    """N jobs at once: a job's steps/s (its start and epoch ends left out) and epoch ends on average, all jobs'
    steps/s, and the sweep's wall time."""
    finals = final_metrics(out / step.folder)
    rates = [final["timing/steps_per_second"] for final in finals]
    ends = sum(final["timing/epoch_ends_seconds"] for final in finals) / len(finals)
    row = {"run": step.name, "steps/s": round(sum(rates) / len(rates), 1), "epoch ends s": round(ends, 2)}
    more = {"jobs": len(finals), "steps/s in all": round(sum(rates), 1), "wall s": step.result["seconds"][0]}
    return [row | {"graphs": graphs(finals), "more": more}]


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
    (out / step.folder).mkdir(exist_ok=True)
    started = time.monotonic()
    with open(log, "w") as f:
        for command in step.commands:
            command = [part.replace("OUT", str(out)) for part in command]
            f.write(f"$ {' '.join(command)}\n")
            f.flush()
            began = time.monotonic()
            try:
                timeout = max(cap_s - (began - started), 1)
                done = subprocess.run(command, cwd=REPO, env=ENV, stdout=f, stderr=subprocess.STDOUT, timeout=timeout)
            except subprocess.TimeoutExpired:
                step.result["status"] = "timed out"
                break
            step.result["seconds"].append(round(time.monotonic() - began, 1))
            if done.returncode != 0:
                step.result["status"] = f"failed (exit {done.returncode})"
                break


def table(steps: list[Step], out: Path) -> list[dict]:
    """The steps' rows, each with its step's status and seconds; x eager against the eager row it names."""
    rows = []
    for step in steps:
        status, seconds = step.result["status"], " + ".join(map(str, step.result.get("seconds", [])))
        found = []
        if status == "ok":
            try:
                found = step.rows(step, out)
            except (OSError, KeyError, ValueError, TypeError, IndexError, ZeroDivisionError) as err:
                status = f"ran, but its figures could not be read ({type(err).__name__}: {err})"
        for i, row in enumerate(found or [{}]):  # the step's status, unless a row has its own (a failed contender)
            rows.append({"run": step.name, "status": status, "s": "" if i else seconds} | row)
    rate = {row["run"]: row.get("steps/s") for row in rows}
    for row in rows:
        eager = rate.get(row.pop("eager", None))
        if eager and row.get("steps/s"):
            row["x eager"] = round(row["steps/s"] / eager, 2)
    return rows


def install(out: Path) -> dict:
    """.venv when it is missing, timed: what the check runs (bench/install.py check), on the python running the
    check, without a registry when wheels/ holds wheels. Its own marker: a later `make setup` installs the rest."""
    if any((REPO / ".venv" / marker).is_file() for marker in (".installed", ".gpu_check")):
        return {"status": "already installed", "seconds": 0}
    offline = ["--no-index", "--find-links", str(WHEELS)] if any(WHEELS.glob("*.whl")) else []
    began = time.monotonic()
    with open(out / "install.log", "w") as f:
        command = [sys.executable, "bench/install.py", "check", ".venv", *offline]
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


def cell(value) -> str:
    if isinstance(value, dict):
        return "; ".join(f"{key} {cell(v)}" for key, v in value.items())
    return "" if value is None else f"{value:,}" if isinstance(value, int) else str(value).replace("|", "/")


def markdown(report: dict) -> str:
    machine, ran_on = (", ".join(f"{k} {v}" for k, v in report[key].items()) for key in ("machine", "versions"))
    lines = [
        f"# GPU check{' (dry run on the CPU, toy sizes)' if report['dry_run'] else ''}",
        "",
        f"Machine: {machine}. Ran on: {ran_on}.",
        f"Install: {report['install']['status']} ({report['install']['seconds']} s). "
        f"Budget {report['budget_s']} s, used {report['used_s']} s. One process at a time; steps/s leave out each "
        "run's start and its epoch ends (epoch ends s); graphs: captures / replays, or why they were off.",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + " --- |" * len(COLUMNS),
        *("| " + " | ".join(cell(row.get(column)) for column in COLUMNS) + " |" for row in report["table"]),
    ]
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
    steps = plan(args.dry_run)
    for step in steps:
        left = started + args.budget - time.monotonic()
        cap = step.cap_s * (3 if args.dry_run else 1)  # a 2-core CPU takes minutes over the toy sizes
        if left < step.needs_s:
            step.result = {"status": f"skipped: {max(left, 0):.0f} s of the budget left, it needs {step.needs_s}"}
        else:
            print(f"{step.name} (up to {min(cap, left):.0f} s) ...", flush=True)
            run_step(step, out, min(cap, left))
            print(f"  {step.name}: {step.result['status']}", flush=True)
    report["table"] = table(steps, out)
    report["used_s"] = round(time.monotonic() - started, 1)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / "gpu_check.md").write_text(markdown(report))
    print(markdown(report))
    print(f"wrote {out / 'gpu_check.json'} and {out / 'gpu_check.md'}")
    failed = [row["run"] for row in report["table"] if not row["status"].startswith(("ok", "skipped"))]
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()
