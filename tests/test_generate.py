"""generate.py on checkpoints of real (short) training runs: arrays, grids and latent walks, and its messages
for a bad checkpoint or impossible options."""

import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers import last_ckpt, run_script


def test_npz_holds_uint8_digits_like_mnist(smoke_run, tmp_path):
    out = tmp_path / "samples.npz"
    run_script("generate.py", f"ckpt_path={last_ckpt(smoke_run)}", "num_samples=100", f"output={out}")
    data = np.load(out)
    assert set(data.files) == {"images"}  # an unconditional model has no labels
    assert data["images"].shape == (100, 28, 28) and data["images"].dtype == np.uint8


def test_conditional_npz_honours_requested_digits(cgan_smoke_run, tmp_path):
    out = tmp_path / "digits.npz"
    run_script(
        "generate.py", f"ckpt_path={last_ckpt(cgan_smoke_run)}", "num_samples=30", "digits=[3,7]", f"output={out}"
    )
    data = np.load(out)
    assert data["images"].shape == (30, 28, 28) and data["images"].dtype == np.uint8
    assert data["labels"].tolist() == [3, 7] * 15
    default = tmp_path / "default.npz"
    run_script("generate.py", f"ckpt_path={last_ckpt(cgan_smoke_run)}", "num_samples=25", f"output={default}")
    assert np.load(default)["labels"].tolist() == list(range(10)) * 2 + [0, 1, 2, 3, 4]  # balanced 0-9 cycle


def test_grid_and_interpolation_pngs(cgan_smoke_run, tmp_path):
    ckpt = last_ckpt(cgan_smoke_run)
    run_script("generate.py", f"ckpt_path={ckpt}", "num_samples=40", f"output={tmp_path / 'grid.png'}")
    with Image.open(tmp_path / "grid.png") as grid:
        assert grid.size == (10 * 30 + 2, 4 * 30 + 2)  # conditional: 10 columns, one per digit
    run_script(
        "generate.py", f"ckpt_path={ckpt}", "mode=interpolate", "walks=3", "steps=6", f"output={tmp_path / 'walks.png'}"
    )
    with Image.open(tmp_path / "walks.png") as walks:
        assert walks.size == (6 * 30 + 2, 3 * 30 + 2)  # one walk per row


def test_slerp_stays_on_the_arc_between_its_ends():
    import torch

    from generate import slerp

    z0, z1 = torch.randn(100), torch.randn(100)
    path = slerp(z0, z1, torch.linspace(0, 1, 7))
    torch.testing.assert_close(path[0], z0)
    torch.testing.assert_close(path[-1], z1)
    # on the great circle the norm stays between the ends' (a straight line would dip in the middle)
    assert path.norm(dim=1).min() >= min(z0.norm(), z1.norm()) - 1e-4


@pytest.mark.parametrize("damage", ["truncated", "missing"])
def test_bad_checkpoint_gets_a_clear_error(smoke_run, tmp_path, damage):
    bad = tmp_path / "bad.ckpt"
    if damage == "truncated":
        bad.write_bytes(last_ckpt(smoke_run).read_bytes()[:5000])
    result = run_script("generate.py", f"ckpt_path={bad}", f"output={tmp_path / 'x.png'}", check=False)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert str(bad) in result.stderr
    assert ("is not a readable checkpoint" if damage == "truncated" else "does not exist") in result.stderr
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize(
    "option, message",
    [
        ("num_samples=0", "num_samples=0 must be a whole number >= 1"),
        ("steps=1", "steps=1 must be a whole number >= 2"),
        ("nrow=0", "nrow=0 must be a whole number >= 1"),
        pytest.param(
            "device=cuda",
            "device=cuda asks for a GPU",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="there is a GPU here"),
        ),
    ],
)
def test_impossible_options_get_one_line_naming_them(smoke_run, tmp_path, option, message):
    result = run_script(
        "generate.py", f"ckpt_path={last_ckpt(smoke_run)}", option, f"output={tmp_path / 'x.png'}", check=False
    )
    assert result.returncode != 0 and message in result.stderr
    assert not (tmp_path / "x.png").exists()
