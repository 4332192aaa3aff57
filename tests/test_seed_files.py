"""The reference script's files (SeedStyleFiles, experiment=seed_repro) from a real short training run."""

import pytest
import torch
from PIL import Image

from dcgan.checkpoints import load_gan
from dcgan.models import Discriminator, Generator
from tests.conftest import smoke_train
from tests.helpers import compose_config


@pytest.fixture(scope="module")
def seed_files(mnist_root, classifier_path, tmp_path_factory):
    """A smoke run (2 epochs) with the files every epoch and the image every 2, and a moving average from step 5."""
    return smoke_train(
        tmp_path_factory,
        "callbacks.seed_files.enabled=true",
        "callbacks.seed_files.weights_every_n_epochs=1",
        "callbacks.seed_files.image_every_n_epochs=2",
        "model.ema_start_step=5",
        f"data.root={mnist_root}",
        f"classifier_path={classifier_path}",
    )


def test_files_have_the_reference_names(seed_files):
    assert sorted(p.name for p in (seed_files / "seed_files").iterdir()) == [
        "discriminator_epoch_1.pth",
        "discriminator_epoch_2.pth",
        "generator_epoch_1.pth",
        "generator_epoch_2.pth",
        "image_at_epoch_0002.png",
    ]
    with Image.open(seed_files / "seed_files" / "image_at_epoch_0002.png") as image:
        assert image.size == (8 * 30 + 2, 8 * 30 + 2)  # the 64 fixed latent points, 8 to a row


def test_state_dicts_load_into_fresh_networks_and_hold_what_generate_draws_with(seed_files):
    gan = load_gan(seed_files / "checkpoints" / "last.ckpt")  # saved at the end of epoch 2, like the files
    hp = gan.hparams
    generator = Generator(hp.latent_dim, hp.g_width, hp.num_classes, hp.info_codes)
    generator.load_state_dict(torch.load(seed_files / "seed_files" / "generator_epoch_2.pth", weights_only=True))
    discriminator = Discriminator(
        hp.d_width, hp.d_dropout, hp.num_classes, hp.d_minibatch_std, hp.d_pack, hp.info_codes
    )
    discriminator.load_state_dict(
        torch.load(seed_files / "seed_files" / "discriminator_epoch_2.pth", weights_only=True)
    )
    z = torch.randn(4, hp.latent_dim)
    with torch.no_grad():
        torch.testing.assert_close(generator.eval()(z), gan.generate(z))  # the average, which has started
        assert (gan.generator.eval()(z) - gan.generate(z)).abs().max() > 1e-2  # and is not G's own weights
    torch.testing.assert_close(discriminator.state_dict(), gan.discriminator.state_dict())
    first = torch.load(seed_files / "seed_files" / "generator_epoch_1.pth", weights_only=True)
    assert any(not torch.equal(first[key], value) for key, value in generator.state_dict().items())


def test_off_by_default_and_on_in_seed_repro(smoke_run):
    assert not (smoke_run / "seed_files").exists()
    files = compose_config("experiment=seed_repro").callbacks.seed_files
    assert files.enabled and (files.weights_every_n_epochs, files.image_every_n_epochs) == (5, 10)
