"""The benchmarks (bench/) run: bench.throughput's quick table and JSON with a failed contender's row, its
one-line refusal without a GPU; the step profile (bench/profile.py) of real training steps on the CPU, and its GPU
arithmetic on events with known times; every tool's refusal of a bad argument in one paragraph. The GPU check's
tests are in tests/test_gpu_check.py."""

import json

import pytest
import torch
from omegaconf import OmegaConf
from torch.autograd import DeviceType
from torch.autograd.profiler_util import FunctionEvent

from bench.classic import DROPOUT, LATENT_DIM, WIDTH, script_networks
from bench.profile import UPDATE, WINDOW, StepProfile, step_summary
from dcgan.machine import cpu_kind
from tests.helpers import SMALL, compose_config, dcgan, run_script

DEVICE_FIGURES = (
    "busy_ms",
    "idle_ms",
    "idle_gaps",
    "largest_gap_ms",
    "launches",
    "wall_us_per_launch",
    "launch_call_us",
    "waits",
    "wait_ms",
    "slowest_kernels",
)


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
        "--variant",
        "broken: model.no_such_key=1",
        timeout=600,
    )
    print(result.stdout[-1500:])  # the table, in CI's log
    assert result.stdout.startswith(f"CPU: {cpu_kind()}, ")  # a CPU figure names its kind of CPU
    table = result.stdout[result.stdout.index("images/s") :]
    for name in ("classic", "project", "plain", "data: classic", "data: project"):
        assert f"\n{name} " in table
    assert "\nbroken         failed: model.no_such_key is not a key of this config" in table
    rows = {row["name"]: row for row in json.loads(out.read_text())["results"]}
    assert "model.no_such_key" in rows.pop("broken")["failed"]  # and every other contender was measured:
    assert rows["classic"]["vs_classic"] == 1.0 and rows["data: classic"]["vs_classic"] == 1.0
    assert rows["plain"]["overrides"] == "model.channels_last=false model.fused_adam=false"
    assert rows["classic"]["precision"] == rows["project"]["precision"] == "32-true"
    assert all(row["images_per_s"] > 0 and row["intervals"] >= 2 and row["vs_classic"] > 0 for row in rows.values())


def test_the_classic_loop_trains_the_scripts_own_networks_of_the_projects_sizes():
    """The yardstick: the project's unconditional DCGAN at the script's width, layer for layer and weight for weight,
    written as the script writes it: torch's dropout, and G's first layer a transposed convolution."""
    script_g, script_d = script_networks()
    project = dcgan(g_width=WIDTH, d_width=WIDTH, d_dropout=DROPOUT, num_clusters=None, ema_decay=None)
    for script, ours in ((script_g, project.generator), (script_d, project.discriminator)):
        assert sorted(p.numel() for p in script.parameters()) == sorted(p.numel() for p in ours.parameters())
    assert isinstance(script_g[1], torch.nn.ConvTranspose2d)
    assert {type(m) for m in script_d if isinstance(m, torch.nn.Dropout)} == {torch.nn.Dropout}
    z = torch.randn(3, LATENT_DIM)
    assert script_g(z).shape == (3, 1, 28, 28) and script_d(script_g(z)).shape == (3,)


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_gpu_benchmark_says_in_one_line_that_there_is_no_gpu():
    result = run_script("-m", "bench.throughput", "--device", "cuda", check=False)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith("Error: ") and "finds no CUDA device" in result.stderr
    assert result.stderr.strip().count("\n") == 0


def test_step_profile_of_real_training_steps_on_the_cpu_reports_wall_time_and_the_ops_that_take_it(
    mnist_root, tmp_path
):
    from dcgan.training import train

    cfg = compose_config(*SMALL, f"data.root={mnist_root}", output_dir=str(tmp_path))
    profile = {"_target_": "bench.profile.StepProfile", "name": "cpu steps", "skip": 1, "steps": 2}
    OmegaConf.update(cfg, "callbacks.step_profile", profile, force_add=True)
    train(cfg)
    summary = StepProfile.named["cpu steps"].summary
    assert summary["steps"] == 2 and summary["wall_ms"] > 0
    assert all(summary[key] is None for key in DEVICE_FIGURES)  # not measured, so not 0
    assert summary["update_host_ms"] is None is summary["other_host_ms"]  # no update ranges: python -m bench.profile's
    ops = summary["top_cpu_ops"]
    assert len(ops) == 8 and all(op["calls_per_step"] > 0 and op["self_ms_per_step"] > 0 for op in ops)
    assert [op["self_ms_per_step"] for op in ops] == sorted((op["self_ms_per_step"] for op in ops), reverse=True)
    assert sum(op["self_ms_per_step"] for op in ops) <= summary["wall_ms"]
    assert any(op["name"].startswith("aten::") and "convolution" in op["name"] for op in ops), ops


def test_step_summary_of_a_gpu_profile_unions_busy_time_and_counts_gaps_launches_waits_and_kernels():
    """On torch's own FunctionEvent objects, as the CUDA profiler makes them, with known times (us), 2 steps."""

    def event(name, start, end, device=DeviceType.CPU, annotation=False):
        return FunctionEvent(
            id=0,
            name=name,
            thread=1,
            start_us=start,
            end_us=end,
            device_type=device,
            use_device="cuda",
            is_user_annotation=annotation,
        )

    cuda = DeviceType.CUDA
    events = [
        event(WINDOW, 0, 1000),
        event(UPDATE, 2, 302),  # the host inside DCGAN.update, twice
        event(UPDATE, 500, 700),
        event("aten::mm", 5, 60),
        event("cudaLaunchKernel", 10, 14),
        event("cudaLaunchKernelExC_v11060", 20, 26),
        event("cudaGraphLaunch", 30, 40),
        event("cudaMemcpyAsync", 50, 52),
        event("cudaStreamSynchronize", 800, 900),
        event("cudaMemcpy", 910, 950),  # a blocking copy: a wait
        event("cudaDeviceSynchronize", 1010, 1150),  # after the window: the profiler's own
        event("gemm", 100, 300, cuda),
        event("Memcpy HtoD (Pinned -> Device)", 200, 400, cuda),  # overlaps the gemm: counted once
        event("gemm", 402, 500, cuda),  # 2 us after the copy: the GPU's own spacing, not a gap
        event("relu", 600, 700, cuda),
        event("late", 1000, 1150, cuda),  # still running when the host left the window
        event("Optimizer.step#Adam.step", 0, 1100, cuda, annotation=True),  # a range on the device, not work
    ]
    summary = step_summary(events, steps=2)
    busy = 300 + 98 + 100 + 150
    expected = {
        "wall_ms": 1.150 / 2,
        "update_host_ms": 0.5 / 2,
        "other_host_ms": 0.5 / 2,  # the host's window less its updates; the GPU's tail after it is no host time
        "busy_ms": busy / 1000 / 2,
        "idle_ms": (1150 - busy) / 1000 / 2,
        "idle_gaps": 3 / 2,  # 0-100, 500-600, 700-1000
        "largest_gap_ms": 0.3,
        "launches": 4 / 2,
        "wall_us_per_launch": 1150 / 4,
        "launch_call_us": (4 + 6 + 10 + 2) / 4,
        "waits": 2 / 2,
        "wait_ms": (100 + 40) / 1000 / 2,
    }
    assert {key: summary[key] for key in expected} == pytest.approx(expected)
    kernels = summary["slowest_kernels"]
    assert [k["name"] for k in kernels] == ["gemm", "Memcpy HtoD (Pinned -> Device)", "late", "relu"]
    assert kernels[0] == pytest.approx(
        {"name": "gemm", "calls_per_step": 1.0, "us_per_call": 149.0, "share_of_busy": 298 / busy}
    )
    ops = [op["name"] for op in summary["top_cpu_ops"]]
    assert ops[:4] == [UPDATE, "cudaStreamSynchronize", "aten::mm", "cudaMemcpy"] and "cudaDeviceSynchronize" not in ops
    assert summary["top_cpu_ops"][1]["self_ms_per_step"] == pytest.approx(0.05)


@pytest.mark.slow
@pytest.mark.parametrize(
    "tool, args, named",
    [
        ("bench.throughput", ["--steps", "10", "--warmup", "8", "--interval", "4"], "--steps 10"),
        ("bench.throughput", ["--variant", "fp32"], "--variant 'fp32'"),
        ("bench.throughput", ["--rounds", "0"], "--rounds"),
        ("bench.classic", ["--epochs", "0"], "--epochs"),
        ("bench.time_to_quality", ["--run", "{tmp}", "--classic", "{tmp}/classic.json"], "--run {tmp}"),
        ("bench.recipe_plot", ["{tmp}/trials.csv"], "trials {tmp}/trials.csv"),
        ("dcgan.reports", ["{tmp}"], "run_dir {tmp}"),
        ("bench.profile", ["--steps", "0"], "--steps"),
        ("bench.profile", ["model.lr=-1"], "model.lr=-1"),
    ],
)
def test_each_tool_refuses_a_bad_argument_in_one_paragraph_that_names_it(tool, args, named, tmp_path):
    result = run_script("-m", tool, *(arg.format(tmp=tmp_path) for arg in args), check=False, timeout=120)
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0 and len(lines) == 1 and lines[0].startswith("Error: "), result.stderr[-2000:]
    assert named.format(tmp=tmp_path) in lines[0] and "Traceback" not in result.stderr


@pytest.mark.slow
def test_profile_tool_prints_where_a_step_goes(mnist_root, tmp_path):
    """`python -m bench.profile`: a real run of train.py's, its steps profiled, the host's time split at
    DCGAN.update; on the CPU the device's figures are said to be unmeasured, not 0."""
    figures = tmp_path / "profile.json"
    result = run_script(
        "-m", "bench.profile", "--data-root", mnist_root, "--skip", "2", "--steps", "2", "--json", str(figures), *SMALL
    )
    assert "2 steps after 2" in result.stdout and "busy_ms              not measured" in result.stdout
    assert "top_cpu_ops: name aten::" in result.stdout and "update_host_ms" in result.stdout
    summary = json.loads(figures.read_text())
    assert 0 < summary["update_host_ms"] and 0 < summary["other_host_ms"]
    assert summary["update_host_ms"] + summary["other_host_ms"] == pytest.approx(summary["wall_ms"])  # the CPU's
