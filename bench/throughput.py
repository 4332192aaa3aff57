"""Training throughput, side by side: this project against the classic loop users copy today.

    python -m bench.throughput                      # the table below, about 10 minutes on a 2-core CPU
    python -m bench.throughput --quick              # a few steps of each, to check that it runs (CI)
    python -m bench.throughput --json bench.json    # also write the figures as JSON
    python -m bench.throughput --variant "fp32: trainer.precision=32-true" --variant "bf16: trainer.precision=bf16-mixed"
    python -m bench.throughput --device cuda        # on a GPU: eager, compiled and CUDA graphs (docs/benchmarks.md)

It measures, in interleaved rounds (so that a slower minute of a shared machine
hits every contender alike), each run in a fresh process of its own:
- `classic`: bench/classic.py, a plain PyTorch loop over torchvision's MNIST with
  per-sample transforms and a DataLoader, on the project's default networks;
- `project` (and every `--variant`): `train.py`'s own `train()` with the Lightning
  Trainer, its real callbacks and TensorBoard logging, composed from conf/ with
  `experiment=seed_repro` (the classic loop's recipe and networks) and the
  variant's overrides; `project` itself is fp32, as the classic loop;
- the data path alone: the classic DataLoader against the in-memory data module.
Images per second are the median over fixed-length intervals after a warm-up;
each ratio divides by the classic figure of the same kind.

With `--device cuda` it times the project on the GPU instead (`experiment=seed_repro
trainer=gpu`): eager, `model.compile=true` and `model.compile=reduce-overhead`
(CUDA graphs), and every `--variant`. Besides images/s, a torch.profiler window
at the end of each run splits a step into compute (the time the GPU runs
kernels, copies or memsets) and wait (the rest of the step, when the GPU waits
for the host to launch work), and counts the host's launches and waits
(`cuda*Synchronize`, blocking copies) per step.
"""

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from bench.classic import classic_loader, train_classic
from dcgan.data import MNISTDataModule, ensure_mnist

CONF = Path(__file__).resolve().parent.parent / "conf"
# --device cuda: the contenders, the steps profiled after the timed ones, and experiment=seed_repro's length.
GPU_VARIANTS = {"eager": [], "compile": ["model.compile=true"], "graphs": ["model.compile=reduce-overhead"]}
PROFILE_STEPS = 50
SEED_REPRO_STEPS = 150 * (60_000 // 128)  # 150 epochs of 468 batches


class Clock(pl.Callback):
    """Call `tick()` after every step (as a Lightning callback it ticks by itself); `rates()` are the
    images/s of each interval of `interval` steps, the first `warmup` steps left out (compilation,
    allocation, first grids). A named clock can be found in `Clock.named` after a run."""

    named: dict[str, "Clock"] = {}

    def __init__(self, batch_size: int, warmup: int, interval: int, name: str | None = None):
        self.batch_size, self.warmup, self.interval = batch_size, warmup, interval
        self.times = []
        if name:
            Clock.named[name] = self

    def tick(self) -> None:
        step = len(self.times) + 1
        if step >= self.warmup and (step - self.warmup) % self.interval == 0 and torch.cuda.is_available():
            torch.cuda.synchronize()  # an interval ends when the GPU has done its work, not when it was queued
        self.times.append(time.perf_counter())

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.tick()

    def rates(self) -> list[float]:
        marks = self.times[self.warmup - 1 :: self.interval]
        return [self.interval * self.batch_size / (b - a) for a, b in zip(marks, marks[1:], strict=False)]


class GpuProfile(pl.Callback):
    """torch.profiler over the last `steps` of `total` training steps (after the Clock's intervals, which it would
    slow down): the GPU's busy time, the host's launches and its waits for the GPU, per step. A run's profile is
    found in `GpuProfile.named`, as its clock is in `Clock.named`."""

    named: dict[str, "GpuProfile"] = {}

    def __init__(self, total: int, steps: int, name: str):
        self.start, self.steps, self.done, self.result = total - steps, steps, 0, {}
        GpuProfile.named[name] = self

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.done == self.start:
            torch.cuda.synchronize()
            self.profiler = torch.profiler.profile(
                activities=[torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
            )
            self.profiler.__enter__()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.done += 1
        if self.done == self.start + self.steps:
            torch.cuda.synchronize()
            self.profiler.__exit__(None, None, None)
            self.result = device_summary(self.profiler.profiler.kineto_results.events(), self.steps)
            self.result["nvml_utilisation"] = nvml_utilisation()


WAITS = ("cudaStreamSynchronize", "cuStreamSynchronize", "cudaEventSynchronize", "cuEventSynchronize", "cudaMemcpy")


def device_summary(events, steps: int) -> dict:
    """Per step: the time the GPU was busy (the union of its kernels, copies and memsets), the host's launches
    (kernels and graphs) and its waits for the GPU's results."""
    work = sorted(
        (e.start_ns(), e.end_ns())
        for e in events
        if e.device_type() == torch.autograd.DeviceType.CUDA
        and e.activity_type() in ("kernel", "gpu_memcpy", "gpu_memset")
    )
    busy, end = 0, 0
    for a, b in work:  # overlapping intervals (several streams) count once
        busy += max(0, b - max(a, end))
        end = max(end, b)
    host = [e.name() for e in events if e.device_type() == torch.autograd.DeviceType.CPU]
    launches = sum("Launch" in name and name.startswith(("cuda", "cu")) for name in host)
    # What .item(), .cpu() and the like wait with; not cudaDeviceSynchronize, which the timing and the profiler use.
    waits = sum(name in WAITS for name in host)
    return {
        "compute_ms": busy / 1e6 / steps,
        "kernels": len(work) / steps,
        "launches": launches / steps,
        "waits": waits / steps,
    }


def nvml_utilisation() -> float | None:
    """NVML's GPU utilisation over its last sample period, when pynvml is installed (it is not pinned here)."""
    try:
        return float(torch.cuda.utilization())
    except (ModuleNotFoundError, RuntimeError):
        return None


def project_rates(
    name: str, overrides: list[str], data_root: str, steps: int, warmup: int, interval: int, profile_steps: int = 0
) -> list[float] | dict:
    """train.py's train() on `overrides`, for `steps` training steps; the images/s of each interval, and with
    `profile_steps` (on a GPU) also GpuProfile's figures for that many more steps at the end."""
    from dcgan.training import train

    with tempfile.TemporaryDirectory() as out, initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[
                f"output_dir={out}",
                f"data.root={data_root}",
                *overrides,
                f"trainer.max_steps={2 * (steps + profile_steps)}",
                "trainer.max_epochs=-1",  # both optimizers' steps
            ],
        )
        OmegaConf.update(
            cfg,
            "callbacks.clock",
            {
                "_target_": "bench.throughput.Clock",
                "name": name,
                "batch_size": cfg.data.batch_size,
                "warmup": warmup,
                "interval": interval,
            },
            force_add=True,
        )
        if profile_steps:
            OmegaConf.update(
                cfg,
                "callbacks.gpu_profile",
                {
                    "_target_": "bench.throughput.GpuProfile",
                    "name": name,
                    "total": steps + profile_steps,
                    "steps": profile_steps,
                },
                force_add=True,
            )
        train(cfg)
    # Hydra built the clock from `bench.throughput`, which under `python -m` is not this `__main__` module.
    from bench.throughput import Clock as InstantiatedClock
    from bench.throughput import GpuProfile as InstantiatedProfile

    rates = InstantiatedClock.named[name].rates()[: (steps - warmup) // interval]  # not the profiled steps
    return {"rates": rates, **InstantiatedProfile.named[name].result} if profile_steps else rates


def classic_rates(data_root: str, batch_size: int, steps: int, warmup: int, interval: int) -> list[float]:
    clock = Clock(batch_size, warmup, interval)
    train_classic(
        data_root,
        epochs=10**6,
        max_steps=steps,
        batch_size=batch_size,
        on_step=lambda step: clock.tick(),
        verbose=False,
    )
    return clock.rates()


def data_rates(kind: str, data_root: str, batch_size: int, steps: int, warmup: int, interval: int) -> list[float]:
    """Batches ready for the model (floats in [-1, 1]) per second, with no training at all."""
    clock = Clock(batch_size, warmup, interval)
    if kind == "classic":
        batches = classic_loader(data_root, batch_size)
        prepare = lambda batch: batch  # noqa: E731 -- its transforms already made floats
    else:
        dm = MNISTDataModule(data_root, batch_size, seed=0)
        dm.setup("fit")
        batches = dm.train_dataloader()
        prepare = lambda batch: dm.on_after_batch_transfer(batch, 0)  # noqa: E731
    while len(clock.times) < steps:
        for batch in batches:
            prepare(batch)
            clock.tick()
            if len(clock.times) == steps:
                break
    return clock.rates()


def cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    names = (
        [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")]
        if cpuinfo.exists()
        else []
    )
    return f"{names[0]} x{len(names)}" if names else platform.machine()


def measure_in_subprocess(
    kind: str, args: argparse.Namespace, name: str = "", overrides: list[str] = ()
) -> list[float]:
    """One measurement in a fresh Python process, so that nothing one contender sets up
    (train.py's allocator setting, compiled code, warm caches) helps or hinders the next."""
    command = [
        sys.executable,
        "-m",
        "bench.throughput",
        "--one",
        kind,
        "--data-root",
        args.data_root,
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
        "--interval",
        str(args.interval),
        "--batch-size",
        str(args.batch_size),
        "--device",
        args.device,
        "--name",
        name,
        *overrides,
    ]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{kind} {name} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def measure(kind: str, args: argparse.Namespace) -> list[float]:
    timing = (args.steps, args.warmup, args.interval)
    if kind == "classic":
        return classic_rates(args.data_root, args.batch_size, *timing)
    if kind == "project":
        return project_rates(
            args.name, args.overrides, args.data_root, *timing, PROFILE_STEPS if args.device == "cuda" else 0
        )
    data_timing = (10 * args.steps, 10 * args.warmup, 10 * args.interval)  # batches without training are quick
    return data_rates(kind.removeprefix("data-"), args.data_root, args.batch_size, *data_timing)


def gpu_main(args: argparse.Namespace) -> None:
    """The project on the GPU: images/s, and each step split into compute and wait (see the module's docstring)."""
    reference = ["experiment=seed_repro", "trainer=gpu", f"data.batch_size={args.batch_size}"]
    variants = dict(GPU_VARIANTS)
    for spec in args.variant:
        name, _, overrides = spec.partition(":")
        variants[name.strip()] = overrides.split()
    results: dict[str, list[dict]] = {name: [] for name in variants}
    for round_ in range(args.rounds):
        print(f"round {round_ + 1}/{args.rounds}", flush=True)
        for name, overrides in variants.items():
            results[name].append(measure_in_subprocess("project", args, name, [*reference, *overrides]))
    rows = []
    for name, runs in results.items():
        rates = [rate for run in runs for rate in run["rates"]]
        row = {
            "name": name,
            "overrides": " ".join(variants[name]),
            "images_per_s": round(statistics.median(rates), 1),
            "step_ms": round(1000 * args.batch_size / statistics.median(rates), 3),
            "rates": [round(r, 1) for r in rates],
        }
        for key in ("compute_ms", "kernels", "launches", "waits", "nvml_utilisation"):
            values = [run[key] for run in runs if run.get(key) is not None]
            row[key] = round(statistics.median(values), 3) if values else None
        row["wait_ms"] = round(row["step_ms"] - row["compute_ms"], 3)
        row["utilisation"] = round(row["compute_ms"] / row["step_ms"], 3)
        row["seed_repro_min"] = round(SEED_REPRO_STEPS * row["step_ms"] / 60_000, 1)
        rows.append(row)
    print(
        f"\n{'':10} {'images/s':>9} {'step ms':>8} {'compute':>8} {'wait':>7} {'busy':>6} {'NVML':>5} "
        f"{'kernels':>8} {'launches':>9} {'waits':>6} {'150 ep. min':>11}"
    )
    for r in rows:
        nvml = f"{r['nvml_utilisation']:.0f}%" if r["nvml_utilisation"] is not None else "n/a"
        print(
            f"{r['name']:10} {r['images_per_s']:>9.0f} {r['step_ms']:>8.2f} {r['compute_ms']:>8.2f} {r['wait_ms']:>7.2f} "
            f"{r['utilisation']:>6.0%} {nvml:>5} {r['kernels']:>8.0f} {r['launches']:>9.0f} {r['waits']:>6.1f} "
            f"{r['seed_repro_min']:>11.1f}"
        )
    print("(per step; 150 ep. min: experiment=seed_repro's training steps at this rate, without its per-epoch metric)")
    if args.json:
        machine = {"gpu": torch.cuda.get_device_name(), "cpu": cpu_name(), "torch": torch.__version__}
        settings = {k: getattr(args, k) for k in ("rounds", "steps", "warmup", "interval", "batch_size")}
        settings["profile_steps"] = PROFILE_STEPS
        Path(args.json).write_text(
            json.dumps({"machine": machine, "settings": settings, "results": rows}, indent=1) + "\n"
        )
        print(f"written to {args.json}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few steps of each, one round (for CI)")
    parser.add_argument("--data-root", default="data", help="the folder that holds MNIST/raw/")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="'NAME: OVERRIDE ...'",
        help="a project configuration to measure, as train.py overrides (repeatable)",
    )
    parser.add_argument(
        "--device",
        choices=["cpu", "cuda"],
        default="cpu",
        help="cuda: the project on the GPU, eager, compiled and with CUDA graphs",
    )
    parser.add_argument("--rounds", type=int, default=3, help="each contender runs once per round")
    parser.add_argument("--steps", type=int, help="training steps per run, warm-up included (100; 400 on cuda)")
    parser.add_argument("--warmup", type=int, help="(20; 100 on cuda, where compiling and graph capture take steps)")
    parser.add_argument("--interval", type=int, help="steps per timed interval (20; 50 on cuda)")
    parser.add_argument("--batch-size", type=int, default=128, help="of the classic loop and the data paths")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--one", choices=["classic", "project", "data-classic", "data-project"], help=argparse.SUPPRESS)
    parser.add_argument("--name", default="", help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit(
            f"bench.throughput --device cuda: torch {torch.__version__} finds no CUDA device on this "
            "machine (torch.cuda.is_available() is False); run it where a GPU is visible, or without --device."
        )
    # Fewer than an epoch of 128-image batches on the GPU (468), so that no epoch-end metric falls in the timing.
    defaults = (400, 100, 50) if args.device == "cuda" else (100, 20, 20)
    for key, default in zip(("steps", "warmup", "interval"), defaults, strict=True):
        setattr(args, key, default if getattr(args, key) is None else getattr(args, key))
    if args.one:  # a measurement run by measure_in_subprocess: its rates, as JSON, on the last line
        print(json.dumps(measure(args.one, args)))
        return
    if args.quick:
        args.rounds, args.steps, args.warmup, args.interval = 1, 12, 4, 4
    if args.device == "cuda":
        ensure_mnist(args.data_root)
        return gpu_main(args)

    ensure_mnist(args.data_root)  # downloaded when missing, or a clear message on what to do
    # The classic loop trains the reference recipe (bench/classic.py); every project row starts from it
    # too, so that both train the same networks on the same batches. `project` is fp32, as the classic loop.
    reference = ["experiment=seed_repro", f"data.batch_size={args.batch_size}"]
    variants = {"project": ["trainer.precision=32-true"]}
    for spec in args.variant:
        name, _, overrides = spec.partition(":")
        variants[name.strip()] = overrides.split()
    rates: dict[str, list[float]] = {name: [] for name in ["classic", *variants, "data: classic", "data: project"]}
    for round_ in range(args.rounds):
        print(f"round {round_ + 1}/{args.rounds}", flush=True)
        rates["classic"] += measure_in_subprocess("classic", args)
        for name, overrides in variants.items():
            rates[name] += measure_in_subprocess("project", args, name, [*reference, *overrides])
        for kind in ("classic", "project"):
            rates[f"data: {kind}"] += measure_in_subprocess(f"data-{kind}", args)

    medians = {name: statistics.median(values) for name, values in rates.items()}
    rows = []
    for name, median in medians.items():
        base = medians["data: classic" if name.startswith("data:") else "classic"]
        rows.append(
            {
                "name": name,
                "overrides": " ".join(variants.get(name, [])),
                "images_per_s": round(median, 1),
                "vs_classic": round(median / base, 2),
                "intervals": len(rates[name]),
                "rates": [round(rate, 1) for rate in rates[name]],
            }
        )  # round by round, for judging the noise
    print(f"\n{'':14} {'images/s':>10} {'x classic':>10} {'intervals':>10}")
    for row in rows:
        print(f"{row['name']:14} {row['images_per_s']:>10.1f} {row['vs_classic']:>10.2f} {row['intervals']:>10}")
    if args.json:
        machine = {
            "cpu": cpu_name(),
            "threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "torch": torch.__version__,
        }
        settings = {k: getattr(args, k) for k in ("rounds", "steps", "warmup", "interval", "batch_size")}
        Path(args.json).write_text(
            json.dumps({"machine": machine, "settings": settings, "results": rows}, indent=1) + "\n"
        )
        print(f"written to {args.json}")


if __name__ == "__main__":
    main()
