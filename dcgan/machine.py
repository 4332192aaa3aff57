"""What the machine a run is on asks of it: the precision it computes in, the device it draws on, and how it keeps
freed memory.

`trainer.precision=auto` picks bf16 autocast where the hardware makes it fast, fp32 elsewhere.
bf16 autocast pays on CPUs with AVX-512 BF16 (or AMX) instructions and on GPUs
with bf16 units (Ampere and newer); elsewhere it is emulated and slower than fp32.
The weights and the optimizers stay fp32 either way (docs/benchmarks.md).
"""

import ctypes
import logging
from pathlib import Path

import torch
from omegaconf import DictConfig

log = logging.getLogger(__name__)

BF16_CPU_FLAGS = {"avx512_bf16", "amx_bf16"}


def cpu_flags() -> set[str]:
    """The CPU's feature flags as Linux lists them; empty elsewhere (no fast path is assumed)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    return {flag for line in text.splitlines() if line.startswith("flags") for flag in line.split(":", 1)[1].split()}


def uses_gpu(accelerator: str) -> bool:
    return accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())


def pick_precision(trainer_cfg: DictConfig) -> None:
    """Resolve `precision: auto` for the accelerator the run will use, and let bf16 fall back to fp16 mixed
    precision on GPUs without bf16 (before Ampere), where Lightning would refuse it."""
    gpu = uses_gpu(str(trainer_cfg.accelerator))
    if trainer_cfg.precision == "auto":
        fast = torch.cuda.is_bf16_supported() if gpu else bool(BF16_CPU_FLAGS & cpu_flags())
        trainer_cfg.precision = "bf16-mixed" if fast else "32-true"
        log.info("trainer.precision=auto: %s on this %s", trainer_cfg.precision, "GPU" if gpu else "CPU")
    elif str(trainer_cfg.precision).startswith("bf16") and gpu and not torch.cuda.is_bf16_supported():
        log.warning("This GPU has no bf16 support: using precision=16-mixed instead of %s", trainer_cfg.precision)
        trainer_cfg.precision = "16-mixed"


def resolve_device(name: str) -> torch.device:
    """`device=auto` -> the GPU when there is one, else the CPU; any other name as torch reads it ("cpu", "cuda:1")."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def keep_freed_memory() -> None:
    """Ask glibc to keep freed memory for reuse instead of handing each large block back to the OS.

    By default every tensor over 128 KiB is its own mmap, so each new activation is fresh pages that the
    kernel must fault in and zero; the cost is that the process keeps its peak memory (docs/benchmarks.md
    has both). Elsewhere than Linux with glibc, nothing changes.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # from malloc.h
    libc.mallopt(M_MMAP_THRESHOLD, 32 * 2**20)  # the largest glibc accepts on 64-bit
    libc.mallopt(M_TRIM_THRESHOLD, 2**30)
