"""What the machine asks of a run: the precision it computes in, the device it draws on, how it keeps freed memory."""

import ctypes
import logging
from pathlib import Path

import torch
from omegaconf import DictConfig

log = logging.getLogger(__name__)

# bf16 autocast pays on CPUs with these instructions and on GPUs with bf16 units (Ampere and newer); elsewhere it
# is emulated, slower than fp32 (docs/benchmarks.md).
BF16_CPU_FLAGS = {"avx512_bf16", "amx_bf16"}


def cpu_flags() -> set[str]:
    """The CPU's feature flags as Linux lists them; empty elsewhere (no fast path is assumed)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    return {flag for line in text.splitlines() if line.startswith("flags") for flag in line.split(":", 1)[1].split()}


def pick_precision(trainer_cfg: DictConfig) -> None:
    """Resolve `precision: auto` for the accelerator the run will use: bf16 autocast where it is fast, else fp32 (the
    weights and optimizers stay fp32 either way); and let bf16 fall back to fp16 mixed precision on GPUs without
    bf16, where Lightning would refuse it."""
    accelerator = str(trainer_cfg.accelerator)
    gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    if trainer_cfg.precision == "auto":
        fast = torch.cuda.is_bf16_supported() if gpu else bool(BF16_CPU_FLAGS & cpu_flags())
        trainer_cfg.precision = "bf16-mixed" if fast else "32-true"
        log.info("trainer.precision=auto: %s on this %s", trainer_cfg.precision, "GPU" if gpu else "CPU")
    elif str(trainer_cfg.precision).startswith("bf16") and gpu and not torch.cuda.is_bf16_supported():
        log.warning("This GPU has no bf16 support: using precision=16-mixed instead of %s", trainer_cfg.precision)
        trainer_cfg.precision = "16-mixed"


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
