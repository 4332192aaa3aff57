"""Checkpoints (dcgan/checkpoints.py): what a run's checkpoints hold and when they are written, and a kill -9 in
the middle of writing one leaves the previous one whole."""

import signal
import subprocess
import sys

import pytest
import torch
from hydra.utils import instantiate

from dcgan.checkpoints import AtomicCheckpointIO, read_checkpoint, saved_at
from tests.helpers import REPO, SMOKE_STEPS, compose_config, load_checkpoint, only_child, run_train

# Saves version 1, then starts saving version 2 with a torch.save that stops half way and waits to be killed.
WRITER = """
import io, sys, time, torch
from dcgan.checkpoints import AtomicCheckpointIO
path, how = sys.argv[1], sys.argv[2]
AtomicCheckpointIO().save_checkpoint({"version": 1, "weights": torch.arange(100_000.0)}, path)
real_save = torch.save

def half_save(obj, f):
    buffer = io.BytesIO()
    real_save(obj, buffer)
    f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    f.flush()
    print("half written", flush=True)
    time.sleep(600)

torch.save = half_save
new = {"version": 2, "weights": -torch.arange(100_000.0)}
if how == "atomic":
    AtomicCheckpointIO().save_checkpoint(new, path)
else:  # what a plain torch.save(checkpoint, path) does
    with open(path, "wb") as f:
        torch.save(new, f)
"""


def kill_mid_write(path, how: str) -> None:
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), how], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    assert writer.stdout.readline() == "half written\n"
    writer.send_signal(signal.SIGKILL)
    writer.wait()


def test_kill_9_while_writing_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / "last.ckpt"
    kill_mid_write(path, "atomic")
    saved = torch.load(path, weights_only=True)
    assert saved["version"] == 1 and torch.equal(saved["weights"], torch.arange(100_000.0))
    (leftover,) = tmp_path.glob(".last.ckpt.*.tmp")  # the half-written new one, beside it
    AtomicCheckpointIO().save_checkpoint({"version": 3}, path)
    assert torch.load(path, weights_only=True) == {"version": 3}
    assert not leftover.exists()  # the next save clears it


def test_the_same_kill_corrupts_a_checkpoint_written_in_place(tmp_path):
    # The control: the test above would catch a non-atomic save.
    path = tmp_path / "last.ckpt"
    kill_mid_write(path, "in-place")
    with pytest.raises(RuntimeError):
        torch.load(path, weights_only=True)


@pytest.mark.parametrize("option", ["default", "ddp"])
def test_the_trainer_writes_checkpoints_atomically(option):
    trainer = instantiate(
        compose_config(f"trainer={option}", "trainer.accelerator=cpu", "trainer.precision=32-true").trainer
    )
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)


def test_last_checkpoint_holds_the_final_step_when_the_last_epoch_is_off_schedule(mnist_root, tmp_path):
    """Checkpoints every 5 epochs, 2 epochs run: last.ckpt is still written, at the final step."""
    run_train(
        "experiment=smoke",
        "trainer.limit_train_batches=3",
        "model.g_width=8",
        "model.d_width=8",
        "callbacks.quality=null",
        "callbacks.checkpoint.every_n_epochs=5",
        f"data.root={mnist_root}",
        f"output_root={tmp_path}",
    )
    checkpoints = only_child(tmp_path / "runs") / "checkpoints"
    assert [p.name for p in checkpoints.glob("*.ckpt")] == ["last.ckpt"]
    last = checkpoints / "last.ckpt"
    assert saved_at(read_checkpoint(last), last) == {"path": str(last), "step": 6, "epoch": 2}


def test_smoke_run_checkpoints_hold_both_networks_and_the_fixed_noise(smoke_run):
    ckpts = smoke_run / "checkpoints"
    assert {p.name for p in ckpts.glob("*.ckpt")} == {"epoch_000.ckpt", "epoch_001.ckpt", "last.ckpt"}
    last = load_checkpoint(ckpts / "last.ckpt")
    assert last["global_step"] == 2 * SMOKE_STEPS  # one D and one G optimizer step per training step
    assert last["state_dict"]["fixed_noise"].shape == (64, 100)
    assert any(k.startswith("generator.") for k in last["state_dict"])
    assert any(k.startswith("discriminator.") for k in last["state_dict"])
    assert len(last["optimizer_states"]) == 2
