"""Checkpoints (dcgan/checkpoints.py): what a run's checkpoints hold and when they are written, that a kill -9
loses at most the epoch in progress and never half a file, and that older checkpoints are upgraded, or refused
when they used a switch that was removed."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate

from dcgan.checkpoints import AtomicCheckpointIO, CheckpointError, read_checkpoint, saved_at
from dcgan.training import train
from tests.helpers import REPO, SMOKE_STEPS, TINY, compose_config, generator_of, load_checkpoint, only_child, run_train
from tests.test_resume import assert_same_state

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


@pytest.mark.slow
def test_kill_9_while_writing_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / "last.ckpt"
    kill_mid_write(path, "atomic")
    saved = torch.load(path, weights_only=True)
    assert saved["version"] == 1 and torch.equal(saved["weights"], torch.arange(100_000.0))
    (leftover,) = tmp_path.glob(".last.ckpt.*.tmp")  # the half-written new one, beside it
    AtomicCheckpointIO().save_checkpoint({"version": 3}, path)
    assert torch.load(path, weights_only=True) == {"version": 3}
    assert not leftover.exists()  # the next save clears it


@pytest.mark.slow
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


def test_a_runs_checkpoints_end_with_its_last_step(tiny_run):
    """tiny_run: 2 epochs of 2 steps, a periodic checkpoint at each epoch end (experiment=smoke)."""
    checkpoints = tiny_run / "checkpoints"
    assert {p.name for p in checkpoints.glob("*.ckpt")} == {"epoch_000.ckpt", "epoch_001.ckpt", "last.ckpt"}
    last = checkpoints / "last.ckpt"
    assert saved_at(read_checkpoint(last), last) == {"path": str(last), "step": 4, "epoch": 2}


class LastCheckpointSteps(pl.Callback):
    """The training step last.ckpt holds at the start of each epoch (the previous epoch's end wrote it), in `seen`."""

    seen: list[int] = []

    def on_train_epoch_start(self, trainer, pl_module):
        last = Path(trainer.checkpoint_callback.dirpath) / "last.ckpt"
        LastCheckpointSteps.seen.append(load_checkpoint(last)["global_step"] // 2 if last.is_file() else 0)


def test_last_ckpt_follows_each_epoch_between_periodic_checkpoints(mnist_root, tmp_path):
    LastCheckpointSteps.seen = []
    train(
        compose_config(
            *TINY,
            "trainer.max_epochs=3",
            "callbacks.checkpoint.every_n_epochs=5",
            "+callbacks.last_steps._target_=tests.test_checkpoints.LastCheckpointSteps",
            f"data.root={mnist_root}",
            output_dir=str(tmp_path),
        )
    )
    assert LastCheckpointSteps.seen == [0, 2, 4]  # epochs 1 and 2 ended at steps 2 and 4
    assert [p.name for p in (tmp_path / "checkpoints").glob("*.ckpt")] == ["last.ckpt"]  # no periodic one yet
    assert load_checkpoint(tmp_path / "checkpoints" / "last.ckpt")["global_step"] == 2 * 6


@pytest.mark.slow
def test_a_kill_9_in_the_second_epoch_leaves_the_first_epochs_last_ckpt_to_resume_from(mnist_root, tmp_path):
    run = ("experiment=smoke", "trainer.max_epochs=3", "callbacks.quality=null", f"data.root={mnist_root}")
    process = subprocess.Popen(
        [
            sys.executable,
            "train.py",
            *run,
            "callbacks.checkpoint.every_n_epochs=5",
            f"output_root={tmp_path / 'killed'}",
        ],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300  # a safety net for a broken run, not a measurement
    while not list((tmp_path / "killed").glob("runs/*/samples/step_0000015_*.png")):  # in epoch 2 (steps 11-20)
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    last = only_child(tmp_path / "killed" / "runs") / "checkpoints" / "last.ckpt"
    assert saved_at(read_checkpoint(last), last)["step"] == 10  # the end of epoch 1
    run_train(*run, f"ckpt_path={last}", f"output_root={tmp_path / 'resumed'}")
    resumed = only_child(tmp_path / "resumed" / "runs") / "checkpoints" / "last.ckpt"
    assert load_checkpoint(resumed)["global_step"] == 2 * 3 * 10  # where a run straight through ends


@pytest.mark.slow
def test_smoke_run_checkpoints_hold_both_networks_and_their_optimizers(smoke_run):
    ckpts = smoke_run / "checkpoints"
    assert {p.name for p in ckpts.glob("*.ckpt")} == {"epoch_000.ckpt", "epoch_001.ckpt", "last.ckpt"}
    last = load_checkpoint(ckpts / "last.ckpt")
    assert last["global_step"] == 2 * SMOKE_STEPS  # one D and one G optimizer step per training step
    assert any(k.startswith("generator.") for k in last["state_dict"])
    assert any(k.startswith("discriminator.") for k in last["state_dict"])
    assert len(last["optimizer_states"]) == 2 and last["dcgan_format"] == 5


def format_4(checkpoint: dict) -> dict:
    """`checkpoint` as the project wrote it before format 5: the counts were `clusters` and `num_classes`, and D's
    embedding of a cluster `class_projection`."""
    for section in ("hyper_parameters", "datamodule_hyper_parameters"):
        names = {"num_clusters": "clusters", "num_digits": "num_classes"}
        checkpoint[section] = {names.get(key, key): value for key, value in checkpoint[section].items()}
    state = checkpoint["state_dict"]
    if "discriminator.cluster_projection.weight" in state:
        state["discriminator.class_projection.weight"] = state.pop("discriminator.cluster_projection.weight")
    checkpoint["dcgan_format"] = 4
    return checkpoint


def format_3(checkpoint: dict) -> dict:
    """`checkpoint` as the project wrote it up to commit 532c631 (format 3): format 4's names, and G's first layer
    was a ConvTranspose2d, its weight (in, out, 7, 7) in G, in the average of G and in Adam's moments of it."""
    checkpoint = format_4(checkpoint)

    def as_conv(weight: torch.Tensor) -> torch.Tensor:
        return weight.T.reshape(weight.shape[1], -1, 7, 7)

    state = checkpoint["state_dict"]
    for key in ("generator.net.0.weight", "generator_ema.module.net.0.weight"):
        if key in state:
            state[key] = as_conv(state[key])
    moments = checkpoint["optimizer_states"][0]["state"][0]
    moments |= {name: as_conv(moments[name]) for name in ("exp_avg", "exp_avg_sq")}
    checkpoint["dcgan_format"] = 3
    return checkpoint


@pytest.mark.parametrize("older", [format_3, format_4])
def test_an_older_checkpoint_is_upgraded_and_draws_what_it_drew(older, tiny_run, tiny_cgan_run, tmp_path):
    for run in (tiny_run, tiny_cgan_run):
        current = run / "checkpoints" / "last.ckpt"
        old = tmp_path / "old.ckpt"
        torch.save(older(load_checkpoint(current)), old)
        upgraded = read_checkpoint(old)
        assert upgraded["dcgan_format"] == 5
        assert upgraded["state_dict"].keys() == load_checkpoint(current)["state_dict"].keys()
        assert upgraded["hyper_parameters"] == load_checkpoint(current)["hyper_parameters"]
        z, digits = torch.randn(6, 100), torch.arange(6) if upgraded["hyper_parameters"]["num_digits"] else None
        then, now = (generator_of(path) for path in (old, current))
        with torch.no_grad():
            torch.testing.assert_close(then(z, digits), now(z, digits), rtol=0, atol=0)


@pytest.mark.parametrize("written_as", [1, 2])
def test_an_older_format_is_refused_naming_the_commit_that_reads_it(written_as, tiny_run, tmp_path):
    checkpoint = load_checkpoint(tiny_run / "checkpoints" / "last.ckpt")
    if written_as == 1:
        del checkpoint["dcgan_format"]  # format 1 had no number
    else:
        checkpoint["dcgan_format"] = 2
    torch.save(checkpoint, tmp_path / "old.ckpt")
    with pytest.raises(CheckpointError) as refused:
        read_checkpoint(tmp_path / "old.ckpt")
    message = str(refused.value)
    assert message.startswith(f"ckpt_path={tmp_path / 'old.ckpt'} cannot be used: it is a checkpoint of format")
    assert f"format {written_as}" in message and "`git checkout 532c631`" in message and "\n" not in message


def test_training_resumes_from_a_format_3_checkpoint_as_from_todays(mnist_root, tmp_path):
    run = ("experiment=smoke", *TINY, "trainer.deterministic=true", f"data.root={mnist_root}")
    train(compose_config(*run, "trainer.max_epochs=1", output_dir=str(tmp_path / "first")))
    current = tmp_path / "first" / "checkpoints" / "last.ckpt"
    old = tmp_path / "old.ckpt"
    torch.save(format_3(load_checkpoint(current)), old)
    for name, path in (("from_old", old), ("from_current", current)):
        train(compose_config(*run, f"ckpt_path={path}", output_dir=str(tmp_path / name)))
    assert_same_state(
        *(load_checkpoint(tmp_path / name / "checkpoints" / "last.ckpt") for name in ("from_old", "from_current"))
    )
