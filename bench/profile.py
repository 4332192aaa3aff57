"""Where a training step's time goes: torch.profiler over a few steps, summarised per step.

On a GPU a step of these small networks is set by the host: how fast it launches work and where it waits for
the device. `step_summary` says so per step: the GPU's busy and idle time and its idle gaps, the host's launches
and waits, the slowest kernels, and the host ops that take the most time; on the CPU profiler, which sees no
device, the wall time and the host ops, with the device figures None (not measured), never 0. `python -m
bench.profile` also splits the host's time between DCGAN.update, which a CUDA graph replays in one launch, and
the rest of the step (Lightning's loop, the callbacks, the data), which no graph removes.

`StepProfile` is the Lightning callback that takes the profile (bench/throughput.py adds it by config), and
`step_done` serves a plain loop as well (bench/classic.py). Only torch.profiler's public API is read:
FunctionEvent's name, device_type, time_range, self_cpu_time_total and is_user_annotation, the same from torch
2.11 to 2.14 (torch's private Kineto events changed in between).
"""

import functools
import json
import re
import statistics
import tempfile
from collections import defaultdict
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile, record_function

from dcgan import cli
from dcgan.module import DCGAN
from dcgan.schema import Train
from dcgan.training import train

# The host range that marks the profiled steps: the summary reads its start and end in the profiler's own clock.
WINDOW = "bench.profile: profiled steps"
# The host range around each DCGAN.update (`python -m bench.profile` only).
UPDATE = "dcgan.update"
# Host calls that put work on the GPU's queue, and host calls that wait for the GPU (a blocking cudaMemcpy
# waits for the work queued before it: what .item() and .cpu() do).
LAUNCHES = {
    "cudaLaunchKernel",
    "cuLaunchKernel",
    "cuLaunchKernelEx",
    "cudaLaunchKernelExC",
    "cudaGraphLaunch",
    "cudaMemcpyAsync",
    "cudaMemsetAsync",
}
WAITS = {
    "cudaStreamSynchronize",
    "cuStreamSynchronize",
    "cudaDeviceSynchronize",
    "cuCtxSynchronize",
    "cudaEventSynchronize",
    "cuEventSynchronize",
    "cudaMemcpy",
}
# CUPTI names some runtime calls with their version, e.g. cudaLaunchKernelExC_v11060.
VERSION_SUFFIX = re.compile(r"_v\d+$")
# Idle stretches shorter than this are the GPU's own spacing between queued kernels, not the queue running dry.
IDLE_GAP_US = 5.0
TOP = 8
CONF = Path(__file__).resolve().parents[1] / "conf"


class StepProfile(pl.Callback):
    """torch.profiler over `steps` training steps after the first `skip` (at least 1: the first step allocates
    and tunes), with the GPU's activity too when the module is on one. `summary` is `step_summary`'s once the
    window has closed (None before); Hydra builds the callback, so a run's profile is found by its name in
    `StepProfile.named`."""

    named: dict[str, "StepProfile"] = {}

    def __init__(self, skip: int, steps: int, name: str = ""):
        if skip < 1 or steps < 1:
            raise ValueError(f"StepProfile needs skip >= 1 and steps >= 1, not skip={skip}, steps={steps}")
        self.skip, self.steps, self.done, self.summary = skip, steps, 0, None
        StepProfile.named[name] = self

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.step_done(pl_module.device)

    def step_done(self, device: torch.device | str) -> None:
        """Call after every training step: the window opens after step `skip` and closes after `skip + steps`."""
        self.done += 1
        cuda = torch.device(device).type == "cuda"
        if self.done == self.skip:
            if cuda:
                torch.cuda.synchronize()  # the window starts with nothing queued from the steps before it
            activities = [ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if cuda else [])]
            self.profiler = profile(activities=activities)
            self.profiler.__enter__()
            self.window = record_function(WINDOW)
            self.window.__enter__()
        elif self.done == self.skip + self.steps:
            self.window.__exit__(None, None, None)
            if cuda:  # after the window: this wait is the profiler's, not the steps'; the work it waits for counts
                torch.cuda.synchronize()
            self.profiler.__exit__(None, None, None)
            self.summary = step_summary(self.profiler.events(), self.steps)


def step_summary(events, steps: int) -> dict:
    """Per step of a profile that holds StepProfile's window: wall ms; the host's ms inside UPDATE ranges and
    outside them (None without such ranges); the GPU's busy ms (the union of its kernels, copies and memsets) and
    idle ms (wall minus busy), the idle gaps of at least IDLE_GAP_US and the largest; the host's launches, wall
    microseconds per launch and the launch calls' mean microseconds; its waits for the GPU and their ms; the
    slowest device names (calls, microseconds per call, share of busy time) and the host ops with the most self
    time. Without device events (the CPU profiler) every device figure is None."""
    window = next(e for e in events if e.name == WINDOW and e.device_type == DeviceType.CPU)
    start, end = window.time_range.start, window.time_range.end
    host = [
        e for e in events if e.device_type == DeviceType.CPU and e is not window and start <= e.time_range.start <= end
    ]
    updates = [e.time_range.elapsed_us() for e in host if e.name == UPDATE]
    # A record_function range also shows on the device's timeline, as an annotation spanning its kernels.
    device = [e for e in events if e.device_type != DeviceType.CPU and not getattr(e, "is_user_annotation", False)]
    busy, gaps, cursor = 0.0, [], start
    for a, b in sorted((e.time_range.start, e.time_range.end) for e in device):
        gaps.append(a - cursor)
        busy += max(0.0, b - max(a, cursor))  # overlapping work (several streams) counts once
        cursor = max(cursor, b)
    stop = max(end, cursor)  # the GPU may finish the window's work after the host has left it
    gaps = [gap for gap in [*gaps, stop - cursor] if gap >= IDLE_GAP_US]
    wall = stop - start
    summary = {
        "steps": steps,
        "wall_ms": wall / 1000 / steps,
        "update_host_ms": sum(updates) / 1000 / steps if updates else None,
        "other_host_ms": (end - start - sum(updates)) / 1000 / steps if updates else None,
        "top_cpu_ops": top_cpu_ops(host, steps),
    }
    if not device:
        keys = ("busy_ms", "idle_ms", "idle_gaps", "largest_gap_ms", "launches", "wall_us_per_launch")
        return summary | dict.fromkeys((*keys, "launch_call_us", "waits", "wait_ms", "slowest_kernels"))
    launches = [e.time_range.elapsed_us() for e in host if VERSION_SUFFIX.sub("", e.name) in LAUNCHES]
    waits = [e.time_range.elapsed_us() for e in host if VERSION_SUFFIX.sub("", e.name) in WAITS]
    return summary | {
        "busy_ms": busy / 1000 / steps,
        "idle_ms": (wall - busy) / 1000 / steps,
        "idle_gaps": len(gaps) / steps,
        "largest_gap_ms": max(gaps, default=0.0) / 1000,
        "launches": len(launches) / steps,
        "wall_us_per_launch": wall / len(launches) if launches else None,
        "launch_call_us": statistics.fmean(launches) if launches else None,
        "waits": len(waits) / steps,
        "wait_ms": sum(waits) / 1000 / steps,
        "slowest_kernels": slowest_kernels(device, busy, steps),
    }


def slowest_kernels(device: list, busy_us: float, steps: int) -> list[dict]:
    """The TOP device-side names (kernels, copies, memsets) by their total time."""
    times = defaultdict(list)
    for e in device:
        times[e.name].append(e.time_range.elapsed_us())
    ranked = sorted(times.items(), key=lambda item: -sum(item[1]))[:TOP]
    return [
        {
            "name": name,
            "calls_per_step": len(calls) / steps,
            "us_per_call": statistics.fmean(calls),
            "share_of_busy": sum(calls) / busy_us if busy_us else None,
        }
        for name, calls in ranked
    ]


def top_cpu_ops(host: list, steps: int) -> list[dict]:
    """The TOP host names by self time (their own time, not their children's): aten ops, CUDA runtime calls,
    record_function ranges such as the optimizers' steps."""
    self_us, calls = defaultdict(float), defaultdict(int)
    for e in host:
        self_us[e.name] += e.self_cpu_time_total
        calls[e.name] += 1
    ranked = sorted(self_us, key=lambda name: -self_us[name])[:TOP]
    return [
        {"name": name, "calls_per_step": calls[name] / steps, "self_ms_per_step": self_us[name] / 1000 / steps}
        for name in ranked
    ]


def update_as_a_range() -> None:
    """DCGAN.update inside an UPDATE range, in this process alone: its profile then splits the host's time."""
    update = DCGAN.update

    @functools.wraps(update)
    def ranged(self, *args, **kwargs):
        with record_function(UPDATE):
            return update(self, *args, **kwargs)

    DCGAN.update = ranged


def main() -> None:
    parser = cli.ArgumentParser(
        prog="python -m bench.profile", description="Where a training step of train.py's run goes, step by step."
    )
    parser.add_argument("--data-root", default="data", help="the folder that holds MNIST/raw/")
    parser.add_argument("--skip", type=cli.whole(1), default=30, help="training steps before the profile (30)")
    parser.add_argument("--steps", type=cli.whole(1), default=20, help="training steps profiled (20)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "overrides", nargs="*", help="train.py's overrides, e.g. trainer=gpu experiment=reference_script"
    )
    args = parser.parse_args()
    profile = {"_target_": "bench.profile.StepProfile", "skip": args.skip, "steps": args.steps}
    overrides = ["callbacks.quality=null", *args.overrides]
    update_as_a_range()
    train_steps(args.data_root, overrides, args.skip + args.steps, {"step_profile": profile})
    from bench.profile import StepProfile as Instantiated  # Hydra built it from bench.profile, not __main__

    summary = Instantiated.named[""].summary
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1) + "\n")
    print(f"{args.steps} steps after {args.skip}, {' '.join(args.overrides) or 'the default'}, per step:")
    for key, value in summary.items():
        if not isinstance(value, list):
            print(f"  {key:<20} {'not measured' if value is None else f'{value:.3f}'}")
    for key in ("top_cpu_ops", "slowest_kernels"):
        for row in summary[key] or []:
            print(
                f"  {key}: " + ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items())
            )


def train_steps(data_root: str, overrides: list[str], steps: int, callbacks: dict) -> str:
    """train.py's run of `overrides`, checked as train.py checks it, for `steps` training steps in a scratch run
    folder, with `callbacks` (name -> config) added: what bench.profile profiles and bench.throughput times. No
    pictures at its end (callbacks.report), which nobody would see there. Returns the precision it trained in
    (`auto` resolved)."""
    with tempfile.TemporaryDirectory() as out, initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        scratch = [f"output_dir={out}", f"data.root={data_root}", "callbacks.report=null"]
        cfg = compose("config", overrides=[*scratch, *overrides])
        cli.check(cfg, Train)
        OmegaConf.update(cfg, "trainer.max_steps", 2 * steps)  # both optimizers' steps
        OmegaConf.update(cfg, "trainer.max_epochs", -1)  # steps alone end it: no check allows that in train.py
        for name, callback in callbacks.items():
            OmegaConf.update(cfg, f"callbacks.{name}", callback, force_add=True)
        train(cfg)
        return cfg.trainer.precision


if __name__ == "__main__":
    cli.run(main)
