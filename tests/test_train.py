"""End to end: `python train.py` on real MNIST writes grids, TensorBoard logs and checkpoints, resumes, and sweeps."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

from dcgan.machine import BF16_CPU_FLAGS, cpu_flags
from tests.helpers import compose_config, load_checkpoint, only_child, run_train

SCALARS = {"loss/d", "loss/g", "d/real", "d/fake"}
SMOKE_STEPS = 20  # experiment=smoke: 2 epochs of 10 training steps


def events(run: Path) -> EventAccumulator:
    (event_file,) = (run / "tensorboard").glob("events.out.tfevents.*")
    return EventAccumulator(str(event_file), size_guidance={"scalars": 0, "images": 0}).Reload()


def test_smoke_run_writes_sample_grids_named_by_step(smoke_run):
    grids = sorted((smoke_run / "samples").glob("*.png"))
    # every 5 steps, and at each epoch end (steps 10 and 20 coincide with the 5-step grids)
    assert [g.name for g in grids] == [
        "step_0000005_epoch_001.png",
        "step_0000010_epoch_001.png",
        "step_0000015_epoch_002.png",
        "step_0000020_epoch_002.png",
    ]
    with Image.open(grids[-1]) as grid:
        assert grid.size == (8 * 30 + 2, 8 * 30 + 2)  # 8x8 digits of 28 px, 2 px padding
        pixels = np.asarray(grid.convert("L"), dtype=np.float32)
    assert pixels.std() > 10  # an image with content, not a blank


def test_smoke_run_picks_its_precision_from_the_cpu(smoke_run):
    expected = "bf16-mixed" if BF16_CPU_FLAGS & cpu_flags() else "32-true"
    assert f"trainer.precision=auto: {expected} on this CPU" in (smoke_run / "train.log").read_text()


def test_smoke_run_log_shows_losses_metric_and_summary_like_the_reference_script(smoke_run):
    text = (smoke_run / "train.log").read_text()  # written by logging, so also when stdout is not a terminal
    steps = [int(line.split("step ")[1].split(",")[0]) for line in text.splitlines() if "loss_D" in line]
    assert steps == [5, 10, 15, 20]  # experiment=smoke: trainer.log_every_n_steps=5
    assert all(k in text for k in ("loss_G", "D(x)", "D(G(z))"))
    for epoch, step in ((1, 10), (2, 20)):
        assert f"epoch {epoch}/2 ended at step {step}" in text
    assert text.count(": FID ") == 3 and "rarest digit" in text  # two epochs and the summary
    summary = text[text.index("Training ended at step 20 after") :]
    last = smoke_run / "checkpoints" / "last.ckpt"
    assert f"python train.py ckpt_path={last}" in summary and f"python evaluate.py ckpt_path={last}" in summary


def test_console_shows_the_run_without_lightnings_tip_or_warnings_a_user_cannot_act_on(
    mnist_root, classifier_path, tmp_path
):
    result = run_train(
        "experiment=smoke",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=5",
        "model.g_width=8",
        "model.d_width=8",
        "callbacks.quality=null",
        f"data.root={mnist_root}",
        f"output_root={tmp_path}",
    )
    console = result.stdout + result.stderr
    assert "step 5, epoch 1: loss_D" in console and "Training ended at step 5" in console
    for noise in ("💡 Tip", "LeafSpec", "not supported by the model summary", "Warning"):
        assert noise not in console


def test_smoke_run_logs_the_four_scalars_the_grids_and_hparams_to_tensorboard(smoke_run):
    acc = events(smoke_run)
    assert SCALARS <= set(acc.Tags()["scalars"])
    for tag in SCALARS:
        steps = [e.step for e in acc.Scalars(tag)]
        assert steps and max(steps) <= SMOKE_STEPS  # steps count training steps (batches)
    d_real = [e.value for e in acc.Scalars("d/real")]
    assert all(0 < v < 1 for v in d_real)
    assert [e.step for e in acc.Images("samples")] == [5, 10, 15, 20]
    # the quality metric, once per epoch
    assert len(acc.Scalars("metric/fid")) == 2 and all(e.value > 0 for e in acc.Scalars("metric/fid"))
    assert {f"digits/{d}" for d in range(10)} <= set(acc.Tags()["scalars"])
    content = acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = HParamsPluginData.FromString(content).session_start_info.hparams
    composed = compose_config("experiment=smoke")  # what the run was given
    assert hparams["model.lr"].number_value == pytest.approx(composed.model.lr)
    assert hparams["data.batch_size"].number_value == composed.data.batch_size
    assert "model._target_" not in hparams and "data.root" not in hparams  # the same in every run, or a path
    experiment = HParamsPluginData.FromString(acc.PluginTagToContent("hparams")["_hparams_/experiment"]).experiment
    assert {m.name.tag for m in experiment.metric_infos} == SCALARS | {"metric/fid", "metric/min_digit_share"}


def test_smoke_run_checkpoints_hold_both_networks_and_the_fixed_noise(smoke_run):
    ckpts = smoke_run / "checkpoints"
    assert {p.name for p in ckpts.glob("*.ckpt")} == {"epoch_000.ckpt", "epoch_001.ckpt", "last.ckpt"}
    last = load_checkpoint(ckpts / "last.ckpt")
    assert last["global_step"] == 2 * SMOKE_STEPS  # one D and one G optimizer step per training step
    assert last["state_dict"]["fixed_noise"].shape == (64, 100)
    assert any(k.startswith("generator.") for k in last["state_dict"])
    assert any(k.startswith("discriminator.") for k in last["state_dict"])
    assert len(last["optimizer_states"]) == 2


def test_resume_continues_at_the_saved_step(smoke_run, mnist_root, classifier_path, tmp_path):
    saved = smoke_run / "checkpoints" / "last.ckpt"
    before = load_checkpoint(saved)
    run_train(
        "experiment=smoke",
        "trainer.max_epochs=3",
        f"ckpt_path={saved}",
        f"data.root={mnist_root}",
        f"classifier_path={classifier_path}",
        f"output_root={tmp_path}",
    )
    resumed_run = only_child(tmp_path / "runs")
    after = load_checkpoint(resumed_run / "checkpoints" / "last.ckpt")
    assert after["global_step"] == before["global_step"] + 2 * 10  # one more epoch of 10 steps
    assert after["epoch"] == before["epoch"] + 1
    assert torch.equal(after["state_dict"]["fixed_noise"], before["state_dict"]["fixed_noise"])
    # the resumed run logs and draws from step 21 on, not from 0
    assert min(e.step for e in events(resumed_run).Scalars("loss/d")) > SMOKE_STEPS
    assert sorted(p.name for p in (resumed_run / "samples").glob("*.png"))[0] == "step_0000025_epoch_003.png"
    assert load_checkpoint(saved)["global_step"] == before["global_step"]  # the old run is left as it was


def test_resume_trains_with_the_learning_rates_it_is_given(smoke_run, mnist_root, classifier_path, tmp_path):
    # Adam's saved state holds the old rates; the config's must win, or "resume with a lower lr" does nothing.
    saved = smoke_run / "checkpoints" / "last.ckpt"
    run_train(
        f"ckpt_path={saved}",
        "experiment=smoke",
        "trainer.max_epochs=3",
        "model.lr=1e-5",
        "model.betas=[0.3,0.9]",
        f"data.root={mnist_root}",
        f"classifier_path={classifier_path}",
        f"output_root={tmp_path}",
    )
    resumed = load_checkpoint(only_child(tmp_path / "runs") / "checkpoints" / "last.ckpt")
    assert load_checkpoint(saved)["optimizer_states"][0]["param_groups"][0]["lr"] != 1e-5
    for state in resumed["optimizer_states"]:
        assert [(g["lr"], tuple(g["betas"])) for g in state["param_groups"]] == [(1e-5, (0.3, 0.9))]


def test_multirun_gives_one_numbered_folder_per_job_and_lists_its_values(mnist_root, classifier_path, tmp_path):
    run_train(
        "-m",
        "experiment=smoke",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
        "model.lr=1e-4,4e-4",
        f"data.root={mnist_root}",
        f"classifier_path={classifier_path}",
        f"output_root={tmp_path}",
    )
    sweep = only_child(tmp_path / "multirun")
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert [job.name for job in jobs] == ["0", "1"]
    rows = [
        line
        for line in (sweep / "summary.md").read_text().splitlines()
        if line.startswith("| ") and "model.lr" not in line
    ]
    assert {row.split(" | ")[1] for row in rows if row.split(" | ")[0] in ("| 0", "| 1")} == {"0.0001", "0.0004"}
    for job, lr in zip(jobs, (1e-4, 4e-4), strict=True):
        ckpt = load_checkpoint(job / "checkpoints" / "last.ckpt")
        assert [state["param_groups"][0]["lr"] for state in ckpt["optimizer_states"]] == [lr, lr]
        assert (job / "tensorboard").is_dir() and list((job / "samples").glob("*.png"))
