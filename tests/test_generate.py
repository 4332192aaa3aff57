"""generate.py on checkpoints of real (short) training runs: arrays, grids and latent walks. Its refusals of bad
input are tests/test_validation.py's."""

import logging

import numpy as np
import torch
from PIL import Image

from dcgan.sampling import sample, slerp
from tests.helpers import generator_of, last_ckpt, run_here


def test_npz_holds_uint8_digits_like_mnist_drawn_as_sample_draws_them(tiny_run, tmp_path):
    out = tmp_path / "samples.npz"
    run_here("generate.py", f"ckpt_path={last_ckpt(tiny_run)}", "num_samples=100", "seed=3", f"output={out}")
    data = np.load(out)
    assert set(data.files) == {"images"}  # an unconditional model has no digits
    assert data["images"].shape == (100, 28, 28) and data["images"].dtype == np.uint8
    images, _ = sample(generator_of(last_ckpt(tiny_run)), 100, seed=3)
    assert np.array_equal(data["images"], ((images.squeeze(1) + 1) * 127.5).round().clamp(0, 255).byte().numpy())
    # The scripts configure no logging of their own, and turn off none: the project's warnings still reach the user.
    assert not logging.getLogger("dcgan.graphs").disabled and not logging.getLogger("dcgan.machine").disabled


def test_conditional_npz_honours_requested_digits(tiny_cgan_run, tmp_path):
    out = tmp_path / "digits.npz"
    run_here("generate.py", f"ckpt_path={last_ckpt(tiny_cgan_run)}", "num_samples=30", "digits=[3,7]", f"output={out}")
    data = np.load(out)
    assert data["images"].shape == (30, 28, 28) and data["images"].dtype == np.uint8
    assert data["digits"].tolist() == [3, 7] * 15
    default = tmp_path / "default.npz"
    run_here("generate.py", f"ckpt_path={last_ckpt(tiny_cgan_run)}", "num_samples=25", f"output={default}")
    assert np.load(default)["digits"].tolist() == list(range(10)) * 2 + [0, 1, 2, 3, 4]  # every digit in turn


def test_grid_and_interpolation_pngs(tiny_cgan_run, tmp_path):
    ckpt = last_ckpt(tiny_cgan_run)
    run_here("generate.py", f"ckpt_path={ckpt}", "num_samples=40", f"output={tmp_path / 'grid.png'}")
    with Image.open(tmp_path / "grid.png") as grid:
        assert grid.size == (10 * 30 + 2, 4 * 30 + 2)  # conditional: 10 columns, one per digit
    walks = tmp_path / "walks.npz"
    run_here("generate.py", f"ckpt_path={ckpt}", "mode=interpolate", "walks=3", "steps=6", f"output={walks}")
    assert np.load(walks)["digits"].tolist() == [0] * 6 + [1] * 6 + [2] * 6  # one digit per walk
    run_here(
        "generate.py", f"ckpt_path={ckpt}", "mode=interpolate", "walks=3", "steps=6", f"output={tmp_path / 'w.png'}"
    )
    with Image.open(tmp_path / "w.png") as png:
        assert png.size == (6 * 30 + 2, 3 * 30 + 2)  # one walk per row


def test_slerp_stays_on_the_arc_between_its_ends():
    z0, z1 = torch.randn(100), torch.randn(100)
    path = slerp(z0, z1, torch.linspace(0, 1, 7))
    torch.testing.assert_close(path[0], z0)
    torch.testing.assert_close(path[-1], z1)
    # on the great circle the norm stays between the ends' (a straight line would dip in the middle)
    assert path.norm(dim=1).min() >= min(z0.norm(), z1.norm()) - 1e-4
