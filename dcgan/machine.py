"""What the machine has and asks of a run: its GPUs and free memory (a value it cannot do is refused before the
run), the precision a run computes in, the device it draws on, how it keeps freed memory."""

import ctypes
import json
import logging
import os
import re
import statistics
import time
from pathlib import Path
from typing import Annotated

import torch
from omegaconf import DictConfig
from pydantic import AfterValidator, Field
from pytorch_lightning.accelerators import AcceleratorRegistry
from torch import nn

from dcgan.files import write_atomically

log = logging.getLogger(__name__)

# A CPU computes bf16 fast only with these instructions; without them bf16 autocast is emulated, many times slower
# than fp32 (docs/benchmarks.md). With them it may still be slow, where oneDNN is held to an older instruction set
# (ONEDNN_MAX_CPU_ISA): `cpu_bf16_speedup` measures it.
BF16_CPU_FLAGS = {"avx512_bf16", "amx_bf16"}
BF16_MIN_SPEEDUP = 1.1  # bf16 autocast must beat fp32 by this much: it rounds, so a tie goes to fp32


def cpu_flags() -> set[str]:
    """The CPU's feature flags as Linux lists them; empty elsewhere (no fast path is assumed)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    return {flag for line in text.splitlines() if line.startswith("flags") for flag in line.split(":", 1)[1].split()}


def cpu_kind() -> str:
    """The kind of CPU a speed figure belongs to (docs/benchmarks.md names each figure's): what it has of AVX2,
    AVX-512 and bf16 instructions, e.g. "AMD EPYC, AVX2 only"."""
    flags = cpu_flags()
    if BF16_CPU_FLAGS & flags:
        kind = "AVX-512 BF16" if "avx512_bf16" in flags else "AMX BF16"
    elif "avx512f" in flags:
        kind = "AVX-512 without BF16"
    else:
        kind = "AVX2 only" if "avx2" in flags else "no AVX2"
    return f"{cpu_model()}, {kind}"


def cpu_model() -> str:
    """The CPU's model name as Linux gives it ("AMD EPYC", "Intel(R) Xeon(R) ..."); the machine's kind elsewhere."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), os.uname().machine)


def cpu_bf16_speedup(cache_dir: str | Path) -> float:
    """How many times faster a convolution like D's trains (forward and backward) in bf16 autocast than in fp32 on
    this CPU: measured once (well under a second), then read from `cache_dir`, per CPU model, torch version,
    thread count and the instruction sets oneDNN and ATen are held to, so that a machine keeps its answer."""
    isa = [os.environ.get(name, "") for name in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY")]
    key = f"{cpu_model()} | torch {torch.__version__} | {torch.get_num_threads()} threads | ISA {isa[0]}/{isa[1]}"
    path = Path(cache_dir).expanduser() / "cpu_bf16_speedup.json"
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        known = {}
    if key not in known:
        known[key] = measure_bf16_speedup()
        try:
            write_atomically(path, lambda f: f.write(json.dumps(known, indent=1).encode()))
        except OSError as err:  # measured again next time: a fraction of a second
            log.warning("The bf16 measurement could not be kept in %s (%s).", path, err.strerror)
    return known[key]


def measure_bf16_speedup(pairs: int = 7) -> float:
    """fp32's time over bf16 autocast's for D's widest convolution at batch 16, forward and backward, channels_last,
    in alternating pairs (median); stops early once bf16 is plainly slower. Leaves torch's random stream as it was."""
    with torch.random.fork_rng(devices=[]):
        conv = nn.Conv2d(64, 128, kernel_size=4, stride=2, padding=1).to(memory_format=torch.channels_last)
        x = torch.randn(16, 64, 14, 14).to(memory_format=torch.channels_last).requires_grad_()

    def seconds(bf16: bool) -> float:
        start = time.perf_counter()
        with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            conv(x).float().sum().backward()
        return time.perf_counter() - start

    seconds(False), seconds(True)  # oneDNN builds its kernels on first use
    ratios = []
    for _ in range(pairs):
        ratios.append(seconds(False) / seconds(True))
        if ratios[-1] < 0.5:  # emulated: no need to wait for more
            break
    return statistics.median(ratios)


def pick_precision(trainer_cfg: DictConfig, cache_dir: str | Path) -> None:
    """Resolve `precision: auto` for the accelerator the run will use: bf16 autocast where it is fast, else fp32 (the
    weights and optimizers stay fp32 either way), and say why in the log; warn when bf16 is asked of a CPU that
    emulates it; and let bf16 fall back to fp16 mixed precision on GPUs without bf16, where Lightning would refuse
    it. `cache_dir` keeps the CPU's measurement (cpu_bf16_speedup)."""
    accelerator = str(trainer_cfg.accelerator)
    gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    precision = str(trainer_cfg.precision)
    if gpu:
        if precision == "auto":
            trainer_cfg.precision = "bf16-mixed" if torch.cuda.is_bf16_supported() else "32-true"
            log.info("trainer.precision=auto: %s on this GPU", trainer_cfg.precision)
        elif precision.startswith("bf16") and not torch.cuda.is_bf16_supported():
            log.warning("This GPU has no bf16 support: using precision=16-mixed instead of %s", precision)
            trainer_cfg.precision = "16-mixed"
        return
    units = BF16_CPU_FLAGS & cpu_flags()
    if precision == "auto":
        if units:
            speedup = cpu_bf16_speedup(cache_dir)
            fast = speedup >= BF16_MIN_SPEEDUP
            why = f"it has {' and '.join(sorted(units))}, and bf16 autocast measured {speedup:.2f}x fp32's speed here"
        else:
            fast = False
            why = f"it has no bf16 instructions ({' or '.join(sorted(BF16_CPU_FLAGS))}), so bf16 would be emulated"
        trainer_cfg.precision = "bf16-mixed" if fast else "32-true"
        log.info("trainer.precision=auto: %s on this CPU (%s): %s", trainer_cfg.precision, cpu_kind(), why)
    elif precision.startswith("bf16") and not units:
        log.warning(
            "trainer.precision=%s on a CPU without bf16 instructions (%s): bf16 is emulated here, many times slower "
            "than fp32. trainer.precision=auto picks the fastest precision for this CPU.",
            precision,
            " or ".join(sorted(BF16_CPU_FLAGS)),
        )


def gpus() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def available_memory() -> int:
    """The bytes a process can have now: Linux's MemAvailable, elsewhere the free pages."""
    try:
        return int(re.search(r"MemAvailable:\s+(\d+) kB", Path("/proc/meminfo").read_text())[1]) * 1024
    except (OSError, TypeError):
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


# A value within its domain that this machine cannot do is refused before the run, not after minutes of it.
def available_device(value: str) -> str:
    """generate.py's and evaluate.py's device: auto, cpu, cuda or cuda:<n>, on this machine."""
    found = re.fullmatch(r"auto|cpu|cuda(?::(\d+))?", value)
    if not found:
        raise ValueError("it must be auto (the GPU when there is one), cpu, cuda or cuda:<n>. Use e.g. {key}=cpu")
    if value.startswith("cuda") and int(found[1] or 0) >= gpus():
        raise ValueError(
            f"it asks for GPU {int(found[1] or 0)}, and PyTorch finds {gpus()} GPU(s) on this machine. Use "
            "{key}=cpu, or {key}=auto, which takes a GPU only when there is one"
        )
    return value


def available_accelerator(value: str) -> str:
    names = ["auto", "gpu", *sorted(AcceleratorRegistry.available_accelerators())]
    if value not in names:
        raise ValueError(f"it must be one of {', '.join(names)}. Use e.g. {{key}}=auto")
    if value != "auto" and not AcceleratorRegistry.get("cuda" if value == "gpu" else value).is_available():
        raise ValueError(
            "this machine has none: PyTorch finds no such device here. Train on the CPU with trainer=cpu, or use "
            "{key}=auto, which takes a GPU only when there is one"
        )
    return value


Device = Annotated[str, AfterValidator(available_device), Field(examples=["cpu"])]
Accelerator = Annotated[str, AfterValidator(available_accelerator), Field(examples=["auto"])]


def resolve_device(name: str) -> torch.device:
    """`device=auto` -> the GPU when there is one, else the CPU; any other name as torch reads it ("cpu", "cuda:1")."""
    return torch.device(("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name)


def keep_freed_memory() -> None:
    """Ask glibc to keep freed memory for reuse instead of handing each large block back to the OS: by default every
    tensor over 128 KiB is its own mmap, fresh pages the kernel must fault in and zero; the cost is that the process
    keeps its peak memory (docs/benchmarks.md). Elsewhere than Linux with glibc, nothing changes."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # from malloc.h
    libc.mallopt(M_MMAP_THRESHOLD, 32 * 2**20)  # the largest glibc accepts on 64-bit
    libc.mallopt(M_TRIM_THRESHOLD, 2**30)
