"""The benchmarks (bench/) run: bench.throughput's quick table and JSON, its one-line refusal without a GPU,
and its GPU profile's summary. The GPU check's tests are in tests/test_gpu_check.py."""

import json
from types import SimpleNamespace

import pytest
import torch

from bench.throughput import device_summary
from tests.helpers import run_script


@pytest.mark.slow
def test_throughput_benchmark_quick_mode_prints_its_table_and_writes_json(mnist_root, tmp_path):
    out = tmp_path / "bench.json"
    result = run_script(
        "-m",
        "bench.throughput",
        "--quick",
        "--data-root",
        mnist_root,
        "--json",
        str(out),
        "--variant",
        "plain: model.channels_last=false model.fused_adam=false",
        timeout=600,
    )
    print(result.stdout[-1500:])  # the table, in CI's log
    table = result.stdout[result.stdout.index("images/s") :]
    for name in ("classic", "project", "plain", "data: classic", "data: project"):
        assert f"\n{name} " in table
    rows = {row["name"]: row for row in json.loads(out.read_text())["results"]}
    assert rows["classic"]["vs_classic"] == 1.0 and rows["data: classic"]["vs_classic"] == 1.0
    assert rows["plain"]["overrides"] == "model.channels_last=false model.fused_adam=false"
    assert all(row["images_per_s"] > 0 and row["intervals"] >= 2 for row in rows.values())


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_gpu_benchmark_says_in_one_line_that_there_is_no_gpu():
    result = run_script("-m", "bench.throughput", "--device", "cuda", check=False)
    assert result.returncode == 1 and result.stdout == ""
    assert "finds no CUDA device" in result.stderr and result.stderr.strip().count("\n") == 0


def test_gpu_profile_summary_counts_busy_time_once_launches_and_waits():
    def event(name, device, activity="cuda_runtime", start=0, end=0):  # as torch.profiler's kineto results hold them
        return SimpleNamespace(
            name=lambda: name,
            device_type=lambda: device,
            activity_type=lambda: activity,
            start_ns=lambda: start,
            end_ns=lambda: end,
        )

    cpu, cuda = torch.autograd.DeviceType.CPU, torch.autograd.DeviceType.CUDA
    events = [
        event("gemm", cuda, "kernel", 0, 2_000_000),
        event("copy", cuda, "gpu_memcpy", 1_000_000, 3_000_000),
        event("gemm", cuda, "kernel", 5_000_000, 6_000_000),
        event("note", cuda, "gpu_user_annotation", 0, 9_000_000),
        event("cudaLaunchKernel", cpu),
        event("cudaGraphLaunch", cpu),
        event("aten::mm", cpu, "cpu_op"),
        event("cudaStreamSynchronize", cpu),
        event("cudaDeviceSynchronize", cpu),  # the benchmark's own, not counted
    ]
    summary = device_summary(events, steps=2)
    assert summary == {"compute_ms": 2.0, "kernels": 1.5, "launches": 1.0, "waits": 0.5}
