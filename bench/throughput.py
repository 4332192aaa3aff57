"""Training throughput, side by side: this project against the classic loop users copy today.

    python -m bench.throughput                      # the table below, within 10 minutes on 2 AVX2 cores
    python -m bench.throughput --quick              # a few steps of each, to check that it runs (CI)
    python -m bench.throughput --json bench.json    # also write the figures as JSON
    python -m bench.throughput --variant "fp32: trainer.precision=32-true" --variant "bf16: trainer.precision=bf16-mixed"
    python -m bench.throughput --device cuda        # on a GPU, and where its steps spend their time

It measures, in interleaved rounds (so that a slower minute of a shared machine
hits every contender alike), each run in a fresh process of its own:
- `classic`: bench/classic.py, a plain PyTorch loop over torchvision's MNIST with
  per-sample transforms and a DataLoader, on the reference script's own networks, fp32;
- `project` (and every `--variant`): `train.py`'s own `train()` with the Lightning
  Trainer, its real callbacks and TensorBoard logging, composed from conf/ with
  `experiment=reference_script` (the classic loop's recipe and networks) and the
  variant's overrides; `project` itself is fp32, as the classic loop;
- the data path alone: the classic DataLoader against the in-memory data module.
Images per second are the median over fixed-length intervals after a warm-up;
each ratio divides by the classic figure of the same kind. A contender that fails
is shown as failed, with its reason, and the others are still measured.

With `--device cuda` the contenders are the classic loop on the GPU, `project fp32`, `eager`
(`experiment=reference_script trainer=gpu`, bf16), `graphs` (the same with CUDA graphs) and every `--variant`; each
row adds bench/profile.py's summary of PROFILE_STEPS more steps: where the GPU idles, the host's launches and
waits, the slowest kernel; and for a graphed row, REPLAYS_TIMED replays of its graph timed by CUDA events.
"""

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytorch_lightning as pl
import torch

from bench.classic import classic_loader, require_gpu, train_classic
from bench.profile import StepProfile, train_steps
from dcgan import cli
from dcgan.data import MNISTDataModule, ensure_mnist
from dcgan.graphs import Replay
from dcgan.machine import cpu_kind

PROFILE_STEPS = 50  # --device cuda: the steps profiled after the timed ones
REPLAYS_TIMED = 100  # --device cuda: then a graphed run's replays timed back to back by CUDA events
# --device cuda: the project's contenders, as overrides of experiment=reference_script trainer=gpu.
GPU_CONTENDERS = {
    "project fp32": ["trainer.precision=32-true"],
    "eager": [],
    "graphs": ["callbacks.cuda_graph.enabled=true", "callbacks.cuda_graph.strict=true"],  # graphs, or the reason
}
# The GPU table's columns (heading, row key, format); from `profiled` on, the profile's medians over the rounds.
GPU_COLUMNS = (
    ("images/s", "images_per_s", ".0f"),
    ("x classic", "vs_classic", ".2f"),
    ("step ms", "step_ms", ".2f"),
    ("profiled", "wall_ms", ".2f"),
    ("busy ms", "busy_ms", ".2f"),
    ("replay ms", "replay_ms", ".3f"),
    ("idle ms", "idle_ms", ".2f"),
    ("gaps", "idle_gaps", ".1f"),
    ("largest", "largest_gap_ms", ".2f"),
    ("launches", "launches", ".0f"),
    ("us/launch", "wall_us_per_launch", ".1f"),
    ("call us", "launch_call_us", ".1f"),
    ("waits", "waits", ".1f"),
    ("wait ms", "wait_ms", ".2f"),
)
PROFILE_FIGURES = [key for _, key, _ in GPU_COLUMNS[3:] if key != "replay_ms"]


class Clock(pl.Callback):
    """Call `tick()` after every step (as a Lightning callback it ticks by itself); `rates()` are the images/s of
    each interval of `interval` steps within the first `steps`, the first `warmup` steps left out (compilation,
    allocation, first grids). A named clock can be found in `Clock.named` after a run."""

    named: dict[str, "Clock"] = {}

    def __init__(self, batch_size: int, warmup: int, interval: int, steps: int, name: str | None = None):
        self.batch_size, self.warmup, self.interval, self.steps = batch_size, warmup, interval, steps
        self.times = []
        if name:
            Clock.named[name] = self

    def tick(self, device: torch.device | str = "cpu") -> None:
        step = len(self.times) + 1
        if step > self.steps:
            return  # the profiled steps: a synchronize here would show in their profile as a wait
        if torch.device(device).type == "cuda" and step >= self.warmup and (step - self.warmup) % self.interval == 0:
            torch.cuda.synchronize()  # an interval ends when the GPU has done its work, not when it was queued
        self.times.append(time.perf_counter())

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.tick(pl_module.device)

    def rates(self) -> list[float]:
        marks = self.times[self.warmup - 1 :: self.interval]
        return [self.interval * self.batch_size / (b - a) for a, b in zip(marks, marks[1:], strict=False)]


class ReplayTimer(pl.Callback):
    """After step `at`, `replays` replays of the update's CUDA graph back to back, timed by CUDA events: what a
    replay costs the GPU by its own clock, beside the profile's busy time, which a profiler attached after the
    capture may miss. `ms` (per replay) stays None where the update is not a graph. The replays train on."""

    named: dict[str, "ReplayTimer"] = {}

    def __init__(self, at: int, replays: int, name: str):
        self.at, self.replays, self.done, self.ms = at, replays, 0, None
        ReplayTimer.named[name] = self

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.done += 1
        replay = pl_module.__dict__.get("update")  # CudaGraphs' Replay, set on the module for the step
        if self.done != self.at or not isinstance(replay, Replay):
            return
        start, end = (torch.cuda.Event(enable_timing=True) for _ in range(2))
        start.record()
        for _ in range(self.replays):
            replay.replay()
        end.record()
        end.synchronize()
        self.ms = start.elapsed_time(end) / self.replays


def project_rates(
    name: str, overrides: list[str], data_root: str, steps: int, warmup: int, interval: int, profile_steps: int
) -> dict:
    """train.py's train() on `overrides` for `steps` training steps: the images/s of each interval, and with
    `profile_steps` the profile of that many more steps (bench/profile.py), then a graph's replays timed."""
    clock = {"_target_": "bench.throughput.Clock", "name": name, "batch_size": "${data.batch_size}", "steps": steps}
    callbacks = {"clock": clock | {"warmup": warmup, "interval": interval}}
    if profile_steps:
        callbacks["step_profile"] = {
            "_target_": "bench.profile.StepProfile",
            "name": name,
            "skip": steps,
            "steps": profile_steps,
        }
        at = steps + profile_steps  # after the profile's window has closed
        callbacks["replay_timer"] = {"_target_": "bench.throughput.ReplayTimer", "name": name, "at": at}
        callbacks["replay_timer"]["replays"] = REPLAYS_TIMED
    precision = train_steps(data_root, overrides, steps + profile_steps, callbacks)
    # Hydra built these from `bench.throughput`, which under `python -m` is not this `__main__` module.
    from bench.throughput import Clock as InstantiatedClock
    from bench.throughput import ReplayTimer as InstantiatedTimer

    summary = StepProfile.named[name].summary if profile_steps else None
    replay_ms = InstantiatedTimer.named[name].ms if profile_steps else None
    rates = InstantiatedClock.named[name].rates()
    return {"rates": rates, "precision": precision, "profile": summary, "replay_ms": replay_ms}


def classic_rates(
    data_root: str, batch_size: int, steps: int, warmup: int, interval: int, device: str, profile_steps: int
) -> dict:
    clock = Clock(batch_size, warmup, interval, steps)
    profile = StepProfile(skip=steps, steps=profile_steps) if profile_steps else None

    def on_step(step: int) -> None:
        clock.tick(device)
        if profile:
            profile.step_done(device)

    train_classic(
        data_root,
        epochs=10**6,
        max_steps=steps + profile_steps,
        batch_size=batch_size,
        on_step=on_step,
        verbose=False,
        device=device,
    )
    return {"rates": clock.rates(), "precision": "32-true", "profile": profile.summary if profile else None}


def data_rates(kind: str, data_root: str, batch_size: int, steps: int, warmup: int, interval: int) -> dict:
    """Batches ready for the model (floats in [-1, 1]) per second, with no training at all."""
    clock = Clock(batch_size, warmup, interval, steps)
    if kind == "classic":
        batches = classic_loader(data_root, batch_size)
        prepare = lambda batch: batch  # noqa: E731 -- its transforms already made floats
    else:
        dm = MNISTDataModule(data_root, batch_size, seed=0, num_clusters=None, num_digits=None, cache_dir=None)
        dm.setup("fit")
        batches = dm.train_dataloader()
        prepare = lambda batch: dm.on_after_batch_transfer(batch, 0)  # noqa: E731
    while len(clock.times) < steps:
        for batch in batches:
            prepare(batch)
            clock.tick()
            if len(clock.times) == steps:
                break
    return {"rates": clock.rates()}


def measure(kind: str, args: argparse.Namespace) -> dict:
    timing = (args.steps, args.warmup, args.interval)
    profile_steps = PROFILE_STEPS if args.device == "cuda" else 0
    if kind == "classic":
        return classic_rates(args.data_root, args.batch_size, *timing, args.device, profile_steps)
    if kind == "project":
        return project_rates(args.name, args.overrides, args.data_root, *timing, profile_steps)
    data_timing = (10 * args.steps, 10 * args.warmup, 10 * args.interval)  # batches without training are quick
    return data_rates(kind.removeprefix("data-"), args.data_root, args.batch_size, *data_timing)


def measure_in_subprocess(kind: str, args: argparse.Namespace, name: str, overrides: list[str]) -> dict:
    """One measurement in a fresh Python process, so that nothing one contender sets up (train.py's allocator
    setting, compiled code, warm caches) helps or hinders the next; {"failed": its one-line reason} if it fails."""
    timing = ["--steps", str(args.steps), "--warmup", str(args.warmup), "--interval", str(args.interval)]
    command = [sys.executable, "-m", "bench.throughput", "--one", kind, "--data-root", args.data_root, *timing]
    command += ["--batch-size", str(args.batch_size), "--device", args.device, "--name", name, *overrides]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode == 0:
        return json.loads(result.stdout.strip().splitlines()[-1])
    # Its `Error: ...` paragraph (dcgan.cli), else the last line of its traceback.
    lines = [line.strip() for line in result.stderr.splitlines() if line.strip()]
    errors = [line.removeprefix("Error: ") for line in lines if line.startswith("Error: ")]
    return {"failed": (errors or lines or [f"exit status {result.returncode}"])[-1]}


def run_rounds(
    contenders: dict[str, tuple[str, list[str]]], reference: list[str], args: argparse.Namespace
) -> dict[str, list[dict]]:
    """Each contender (name: its kind and overrides; a project's start from `reference`) once per round, in
    turn; one that failed is not run again."""
    runs = {name: [] for name in contenders}
    for round_ in range(args.rounds):
        print(f"round {round_ + 1}/{args.rounds}", flush=True)
        for name, (kind, overrides) in contenders.items():
            if any("failed" in run for run in runs[name]):
                continue
            run = measure_in_subprocess(kind, args, name, [*reference, *overrides] if kind == "project" else [])
            runs[name].append(run)
            if "failed" in run:
                print(f"{name} failed: {run['failed']}", flush=True)
    return runs


def rates_of(runs: list[dict]) -> list[float] | None:
    """Every interval's images/s of a contender's runs; None if one of them failed."""
    return None if any("failed" in run for run in runs) else [rate for run in runs for rate in run["rates"]]


def result_row(name: str, overrides: list[str], runs: list[dict], base_runs: list[dict]) -> dict:
    """A contender's row: its median images/s, its ratio to `base_runs` (the classic loop of the same
    kind, in the same run), the medians of its profile's figures over the rounds, and the slowest kernels and
    host ops of its last round."""
    row = {"name": name, "overrides": " ".join(overrides)}
    rates, base = rates_of(runs), rates_of(base_runs)
    if rates is None:
        return row | {"failed": next(run["failed"] for run in runs if "failed" in run)}
    median = statistics.median(rates)
    row |= {
        "precision": runs[-1].get("precision", ""),  # the data paths train nothing
        "images_per_s": round(median, 1),
        "vs_classic": round(median / statistics.median(base), 2) if base else None,
        "intervals": len(rates),
        "rates": [round(rate, 1) for rate in rates],  # round by round, for judging the noise
    }
    profiles = [run["profile"] for run in runs if run.get("profile")]
    if profiles:
        for key in PROFILE_FIGURES:
            values = [profile[key] for profile in profiles if profile[key] is not None]
            row[key] = round(statistics.median(values), 3) if values else None
        row |= {key: profiles[-1][key] for key in ("slowest_kernels", "top_cpu_ops")}
    if replays := [run["replay_ms"] for run in runs if run.get("replay_ms") is not None]:
        row["replay_ms"] = round(statistics.median(replays), 4)
    return row


def figure(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def cpu_main(args: argparse.Namespace) -> None:
    ensure_mnist(args.data_root)  # downloaded when missing, or a clear message on what to do
    # A CPU figure belongs to its kind of CPU: with and without bf16 units the ratios differ several-fold.
    print(f"CPU: {cpu_kind()}, {torch.get_num_threads()} threads, torch {torch.__version__}", flush=True)
    # The classic loop trains the reference recipe (bench/classic.py); every project row starts from it too, on
    # the CPU as the classic loop (even where a GPU is visible), so that both train the same networks alike.
    reference = ["experiment=reference_script", "trainer.accelerator=cpu", f"data.batch_size={args.batch_size}"]
    contenders = {
        "classic": ("classic", []),
        "project": ("project", ["trainer.precision=32-true"]),
        **{name: ("project", overrides) for name, overrides in args.variants.items()},
        "data: classic": ("data-classic", []),
        "data: project": ("data-project", []),
    }
    runs = run_rounds(contenders, reference, args)
    rows = [
        result_row(name, overrides, runs[name], runs["data: classic" if kind.startswith("data") else "classic"])
        for name, (kind, overrides) in contenders.items()
    ]
    print(f"\n{'':14} {'images/s':>10} {'x classic':>10} {'intervals':>10}  precision")
    for row in rows:
        if "failed" in row:
            print(f"{row['name']:14} failed: {row['failed']}")
        else:
            ratio = figure(row["vs_classic"], ".2f")
            print(
                f"{row['name']:14} {row['images_per_s']:>10.1f} {ratio:>10} {row['intervals']:>10}  {row['precision']}"
            )
    write_json(args, rows)


def gpu_main(args: argparse.Namespace) -> None:
    ensure_mnist(args.data_root)
    reference = ["experiment=reference_script", "trainer=gpu", f"data.batch_size={args.batch_size}"]
    contenders = {"classic": ("classic", [])}
    contenders |= {name: ("project", overrides) for name, overrides in {**GPU_CONTENDERS, **args.variants}.items()}
    runs = run_rounds(contenders, reference, args)
    rows = [result_row(name, overrides, runs[name], runs["classic"]) for name, (_, overrides) in contenders.items()]
    for row in rows:
        if "images_per_s" in row:
            row["step_ms"] = round(1000 * args.batch_size / row["images_per_s"], 3)
    print(f"\n{'':13}" + "".join(f" {heading:>9}" for heading, _, _ in GPU_COLUMNS))
    for row in rows:
        if "failed" in row:
            print(f"{row['name']:13} failed: {row['failed']}")
            continue
        print(f"{row['name']:13}" + "".join(f" {figure(row.get(key), spec):>9}" for _, key, spec in GPU_COLUMNS))
        if kernel := (row.get("slowest_kernels") or [None])[0]:
            share = figure(kernel["share_of_busy"], ".0%")
            print(f"{'':13} slowest kernel: {kernel['name'][:70]} ({share} of busy, {kernel['us_per_call']:.1f} us)")
    print(
        "(per step; profiled: its wall time under the profiler, busy + idle; gaps: the GPU idle 5 us or more; "
        "replay ms: a graph's replay by CUDA events; us/launch: the step's wall time per launch; call us: a launch "
        "call's own; waits: the host's for the GPU)"
    )
    write_json(args, rows)


def write_json(args: argparse.Namespace, rows: list[dict]) -> None:
    if not args.json:
        return
    machine = {
        "cpu": cpu_name(),
        "cpu_kind": cpu_kind(),
        "threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "torch": torch.__version__,
    }
    settings = {k: getattr(args, k) for k in ("device", "rounds", "steps", "warmup", "interval", "batch_size")}
    if args.device == "cuda":
        settings |= {"profile_steps": PROFILE_STEPS, "replays_timed": REPLAYS_TIMED}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"machine": machine, "settings": settings, "results": rows}, indent=1) + "\n")
    print(f"written to {args.json}")


def cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    names = (
        [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")]
        if cpuinfo.exists()
        else []
    )
    return f"{names[0]} x{len(names)}" if names else platform.machine()


def parse_args():
    parser = cli.ArgumentParser(prog="python -m bench.throughput", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few steps of each, one round (for CI)")
    parser.add_argument("--data-root", default="data", help="the folder that holds MNIST/raw/")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="'NAME: OVERRIDE ...'",
        help="a project configuration to measure, as train.py overrides (repeatable)",
    )
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="cuda: on the GPU, profiled")
    parser.add_argument("--rounds", type=cli.whole(1), default=3, help="each contender runs once per round")
    parser.add_argument(
        "--steps", type=cli.whole(1), help="training steps per run, warm-up included (100; 400 on cuda)"
    )
    parser.add_argument("--warmup", type=cli.whole(1), help="(20; 100 on cuda, where graph capture takes steps)")
    parser.add_argument("--interval", type=cli.whole(1), help="steps per timed interval (20; 50 on cuda)")
    parser.add_argument("--batch-size", type=cli.whole(1), default=128, help="of the classic loop and the data paths")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--one", choices=["classic", "project", "data-classic", "data-project"], help=argparse.SUPPRESS)
    parser.add_argument("--name", default="", help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    # Fewer than an epoch of 128-image batches on the GPU (468), so that no epoch-end metric falls in the timing.
    defaults = (400, 100, 50) if args.device == "cuda" else (100, 20, 20)
    for key, default in zip(("steps", "warmup", "interval"), defaults, strict=True):
        setattr(args, key, default if getattr(args, key) is None else getattr(args, key))
    if args.quick:
        args.rounds, args.steps, args.warmup, args.interval = 1, 12, 4, 4
    if args.steps < args.warmup + args.interval:
        parser.error(
            f"--steps {args.steps} is fewer than --warmup {args.warmup} plus one --interval {args.interval}, so no "
            f"interval would be timed; pass --steps {args.warmup + args.interval} or more, or a shorter --warmup"
        )
    args.variants = {}
    for spec in args.variant:
        name, colon, overrides = (part.strip() for part in spec.partition(":"))
        taken = {"classic", "project", *GPU_CONTENDERS, *args.variants}
        if not colon or not name or name in taken or name.startswith("data:"):
            parser.error(
                f"--variant {spec!r} needs a new name, a colon and train.py overrides, e.g. --variant "
                f"'bf16: trainer.precision=bf16-mixed' (names taken: {', '.join(sorted(taken))})"
            )
        args.variants[name] = overrides.split()
    if args.device == "cuda":
        require_gpu(parser.prog)
    return args


def main() -> None:
    args = parse_args()
    if args.one:  # a measurement run by measure_in_subprocess: its figures, as JSON, on the last line
        print(json.dumps(measure(args.one, args)))
    elif args.device == "cuda":
        gpu_main(args)
    else:
        cpu_main(args)


if __name__ == "__main__":
    cli.run(main)
