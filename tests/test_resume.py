"""Never lose a run: a run stopped by a signal and resumed ends bitwise equal to one that never stopped."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dcgan.errors import UserFacingError
from dcgan.training import train
from tests.helpers import REPO, SMALL, compose_config, load_checkpoint, only_child, run_train

# 2 epochs of 4 steps, small networks, deterministic kernels.
SHORT = (*SMALL, "trainer.max_epochs=2", "trainer.deterministic=true")


def run(tmp_path: Path, name: str, *overrides: str) -> Path:
    """train.py's train() in this process on `overrides`; its last.ckpt."""
    train(compose_config(*SHORT, *overrides, output_dir=str(tmp_path / name)))
    return tmp_path / name / "checkpoints" / "last.ckpt"


def stop_at(tmp_path: Path, name: str, step: int, *overrides: str, signum=signal.SIGTERM) -> Path:
    with pytest.raises(UserFacingError) as info:
        run(
            tmp_path,
            name,
            "+callbacks.stop._target_=tests.probes.SignalAt",
            f"+callbacks.stop.step={step}",
            f"+callbacks.stop.signum={int(signum)}",
            *overrides,
        )
    assert info.value.exit_code == 128 + signum
    assert f"Stopped by {signum.name} after step {step}" in str(info.value)
    return tmp_path / name / "checkpoints" / "last.ckpt"


def assert_same_state(a: dict, b: dict) -> None:
    assert a["global_step"] == b["global_step"] and a["epoch"] == b["epoch"]
    for name, tensor in a["state_dict"].items():
        assert torch.equal(tensor, b["state_dict"][name]), name  # bitwise: weights, BatchNorm stats, fixed noise
    for opt_a, opt_b in zip(a["optimizer_states"], b["optimizer_states"], strict=True):
        for param, state in opt_a["state"].items():
            for key, value in state.items():
                assert torch.equal(value, opt_b["state"][param][key]), (param, key)
    assert torch.equal(a["rng_states"][0]["torch"], b["rng_states"][0]["torch"])


@pytest.mark.parametrize("stop", [3, 4], ids=["mid-epoch", "epoch-end"])
def test_stop_and_resume_equals_training_straight_through(stop, mnist_root, tmp_path):
    common = (f"data.root={mnist_root}",)
    straight = run(tmp_path, "straight", *common)
    stopped = stop_at(tmp_path, "stopped", stop, *common)
    assert load_checkpoint(stopped)["global_step"] == 2 * stop
    resumed = run(tmp_path, "resumed", f"ckpt_path={stopped}", *common)
    assert_same_state(load_checkpoint(straight), load_checkpoint(resumed))


def test_without_restoring_the_random_state_the_resumed_run_differs(mnist_root, tmp_path):
    # The control that shows the test above can fail: the same, less the RandomState callback.
    common = (f"data.root={mnist_root}", "~callbacks.random_state")
    straight = load_checkpoint(run(tmp_path, "straight", *common))
    resumed = load_checkpoint(
        run(tmp_path, "resumed", f"ckpt_path={stop_at(tmp_path, 'stopped', 3, *common)}", *common)
    )
    assert not torch.equal(
        straight["state_dict"]["generator.net.0.weight"], resumed["state_dict"]["generator.net.0.weight"]
    )


def test_ctrl_c_saves_a_resumable_checkpoint(mnist_root, tmp_path):
    before = signal.getsignal(
        signal.SIGINT
    )  # Python's default, or SIG_IGN where the shell started pytest in the background
    stopped = stop_at(tmp_path, "stopped", 2, f"data.root={mnist_root}", signum=signal.SIGINT)
    assert load_checkpoint(stopped)["global_step"] == 2 * 2
    assert (
        load_checkpoint(run(tmp_path, "resumed", f"ckpt_path={stopped}", f"data.root={mnist_root}"))["global_step"]
        == 2 * 8
    )
    assert signal.getsignal(signal.SIGINT) is before  # the handlers are given back


@pytest.mark.slow
def test_sigterm_to_a_real_training_process_saves_a_checkpoint_it_resumes_from(mnist_root, tmp_path):
    # A run far too long to end by itself; SIGTERM once it has drawn the grid of step 5.
    long_run = ("experiment=smoke", "trainer.max_epochs=100", f"data.root={mnist_root}")
    process = subprocess.Popen(
        [sys.executable, "train.py", *long_run, f"output_root={tmp_path / 'first'}"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 300  # a safety net for a broken run, not a measurement
    while not list((tmp_path / "first").glob("runs/*/samples/step_0000005_*.png")):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 128 + signal.SIGTERM
    assert "Error: Stopped by SIGTERM after step" in stderr and "Traceback" not in stderr
    saved = only_child(tmp_path / "first" / "runs") / "checkpoints" / "last.ckpt"
    stopped_at = load_checkpoint(saved)["global_step"] // 2
    assert stopped_at >= 5 and f"after step {stopped_at};" in stderr

    # Resume (the same overrides, to the end of the epoch after): it continues at the next step.
    epochs = stopped_at // 10 + 1
    run_train(*long_run, f"trainer.max_epochs={epochs}", f"ckpt_path={saved}", f"output_root={tmp_path / 'second'}")
    resumed = only_child(tmp_path / "second" / "runs")
    assert load_checkpoint(resumed / "checkpoints" / "last.ckpt")["global_step"] == 2 * 10 * epochs
    first_grid = sorted((resumed / "samples").glob("*.png"))[0].name
    assert int(first_grid[5:12]) > stopped_at
