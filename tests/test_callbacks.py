"""The training callbacks (dcgan/callbacks.py) in real short runs: the sample grids, the log lines of
train.log, and the reference script's files (ReferenceScriptFiles, experiment=reference_script)."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from dcgan.checkpoints import read_checkpoint
from dcgan.models import Discriminator, Generator
from dcgan.module import DCGAN, load_generator
from tests.conftest import smoke_train


@pytest.mark.slow
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


def test_cgan_grids_have_a_column_per_digit(tiny_cgan_run):
    with Image.open(sorted((tiny_cgan_run / "samples").glob("*.png"))[-1]) as grid:
        assert grid.size == (10 * 30 + 2, 8 * 30 + 2)  # 8 rows of the digits 0-9, as generate.py draws them


@pytest.mark.slow
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
    # The time the steps took apart from the epoch ends' (the metric above all), there and in final_metrics.json.
    final = json.loads((smoke_run / "final_metrics.json").read_text())
    timing = {key: value for key, value in final.items() if key.startswith("timing/")}
    assert 0 < timing["timing/epoch_ends_seconds"] < timing["timing/seconds"] and timing["timing/steps_per_second"] > 0
    assert f"{timing['timing/steps_per_second']:.1f} steps/s, epoch ends" in summary
    assert final["cuda_graphs/replays"] == 0 and final["cuda_graphs/off"] == "callbacks.cuda_graph.enabled=false"


@pytest.fixture(scope="module")
def reference_files(mnist_root, classifier_path, tmp_path_factory):
    """A smoke run (2 epochs) with the files every epoch and the image every 2, and a moving average from step 5."""
    return smoke_train(
        tmp_path_factory,
        "callbacks.reference_files.enabled=true",
        "callbacks.reference_files.weights_every_n_epochs=1",
        "callbacks.reference_files.image_every_n_epochs=2",
        "model.ema_start_step=5",
        f"data.root={mnist_root}",
        f"classifier_path={classifier_path}",
    )


@pytest.mark.slow
def test_files_have_the_reference_names(reference_files):
    assert sorted(p.name for p in (reference_files / "reference_files").iterdir()) == [
        "discriminator_epoch_1.pth",
        "discriminator_epoch_2.pth",
        "generator_epoch_1.pth",
        "generator_epoch_2.pth",
        "image_at_epoch_0002.png",
    ]
    with Image.open(reference_files / "reference_files" / "image_at_epoch_0002.png") as image:
        assert image.size == (8 * 30 + 2, 8 * 30 + 2)  # the 64 fixed latent points, 8 to a row


@pytest.mark.slow
def test_state_dicts_load_into_fresh_networks_and_hold_what_generate_draws_with(reference_files):
    checkpoint = read_checkpoint(
        reference_files / "checkpoints" / "last.ckpt"
    )  # saved at the end of epoch 2, as the files
    gan, drawing = DCGAN.from_checkpoint(checkpoint), load_generator(checkpoint)
    hp = gan.hparams
    generator = Generator(hp.latent_dim, hp.g_width, hp.num_clusters)
    generator.load_state_dict(
        torch.load(reference_files / "reference_files" / "generator_epoch_2.pth", weights_only=True)
    )
    discriminator = Discriminator(hp.d_width, hp.d_dropout, hp.num_clusters)
    discriminator.load_state_dict(
        torch.load(reference_files / "reference_files" / "discriminator_epoch_2.pth", weights_only=True)
    )
    z = torch.randn(4, hp.latent_dim)
    clusters = gan.cluster_prior(z) if gan.cluster_prior is not None else None  # the files hold G; the rule is its own
    with torch.no_grad():
        torch.testing.assert_close(generator.eval()(z, clusters), drawing(z))  # the average, which has started
        assert (gan.generator.eval()(z, clusters) - drawing(z)).abs().max() > 1e-2  # not G's own weights
    torch.testing.assert_close(discriminator.state_dict(), gan.discriminator.state_dict())
    first = torch.load(reference_files / "reference_files" / "generator_epoch_1.pth", weights_only=True)
    assert any(not torch.equal(first[key], value) for key, value in generator.state_dict().items())
