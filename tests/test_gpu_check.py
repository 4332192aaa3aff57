"""The GPU check (bench/gpu_check.py): its dry run on the CPU, and its one-line refusal without a GPU."""

import json
import subprocess

import pytest
import torch

from tests.helpers import REPO


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_gpu_check_says_in_one_line_that_there_is_no_gpu(tmp_path):
    result = subprocess.run(["make", "gpu-check", f"ARGS={tmp_path}"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode != 0 and "make gpu-check needs a machine with an NVIDIA GPU" in result.stderr
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_gpu_check_dry_run_runs_every_step_on_the_cpu_and_reports_its_figures(classifier_path, tmp_path):
    """make gpu-check ARGS="--dry-run OUT_DIR": what a GPU machine will run, at toy sizes, on the CPU."""
    result = subprocess.run(
        ["make", "gpu-check", f"ARGS=--dry-run {tmp_path}"], cwd=REPO, capture_output=True, text=True, timeout=1800
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    steps = {step["name"]: step for step in report["steps"]}
    assert list(steps) == [
        "tests and a short run",
        "default",
        "experiment=gpu",
        "throughput",
        "seed_repro for a minute",
        "lr sweep",
        "experiment=best",
    ]
    assert all(step["status"] == "ok" for step in steps.values()), steps
    assert steps["tests and a short run"]["figures"]["tests"]["passed"] >= 1
    for name in ("default", "experiment=gpu", "experiment=best"):
        assert {"train s", "fid", "kid", "precision", "recall", "min_digit_share", "steps"} <= steps[name][
            "figures"
        ].keys()
    assert steps["throughput"]["figures"]["project"]["images_per_s"] > 0
    assert steps["seed_repro for a minute"]["figures"]["projected 150 epochs min"] > 0
    assert steps["lr sweep"]["figures"]["jobs at once"] == 2
    table = (tmp_path / "gpu_check.md").read_text()
    assert "dry run on the CPU" in table and all(f"| {name} | ok |" in table for name in steps)
