"""End to end: `python train.py` on real MNIST: what its console shows, and a resume from a checkpoint."""

import re

import pytest

from tests.helpers import SMOKE_STEPS, events, load_checkpoint, only_child, run_train


@pytest.mark.slow
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
    assert "| discriminator | Discriminator |" in console and "Total params" in console  # the parameter table
    for noise in (
        "💡 Tip",
        "LeafSpec",
        "not supported by the model summary",
        "Warning",
        "FLOPs",
        "Flops",
        "weights_only",
    ):
        assert noise not in console


@pytest.mark.slow
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
    # the resumed run logs and draws from step 21 on, not from 0
    assert min(e.step for e in events(resumed_run).Scalars("loss/d")) > SMOKE_STEPS
    assert sorted(p.name for p in (resumed_run / "samples").glob("*.png"))[0] == "step_0000025_epoch_003.png"
    assert load_checkpoint(saved)["global_step"] == before["global_step"]  # the old run is left as it was


@pytest.mark.slow
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


@pytest.mark.slow
def test_an_epoch_line_shows_the_metric_only_for_an_epoch_it_scored(mnist_root, classifier_path, tmp_path):
    result = run_train(
        "experiment=smoke",
        "trainer.max_epochs=4",
        "trainer.limit_train_batches=2",
        "model.g_width=8",
        "model.d_width=8",
        "model.num_clusters=10",
        "callbacks.quality.num_samples=500",
        "callbacks.quality.every_n_epochs=2",
        f"data.root={mnist_root}",
        f"output_root={tmp_path}",
    )
    lines = [line for line in (result.stdout + result.stderr).splitlines() if re.search(r"epoch \d/4 ended", line)]
    assert ["FID" in line for line in lines] == [False, True, False, True]  # 2 and 4 by the schedule, 4 as the last
