"""export.py on checkpoints of real (short) training runs: each format, loaded as MODEL_CARD.md says in a
process that cannot import this project, draws what the checkpoint's generator draws; and its bad-input messages."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from dcgan.checkpoints import read_checkpoint
from dcgan.module import DCGAN, load_generator
from tests.conftest import smoke_train
from tests.helpers import last_ckpt, run_script

pytestmark = pytest.mark.slow  # real runs, export.py in a process of its own, and a loader in another

# Runs in the export folder (sys.path[0] is that folder): the card's first block, with the test's inputs put
# in place of its own, then each file's block, for two batch sizes.
LOADER = r"""
import importlib.util, re, sys
from pathlib import Path
import numpy as np

blocks = re.findall(r"```python\n(.*?)```", Path("MODEL_CARD.md").read_text(), re.S)
given, results = np.load(sys.argv[1]), {}
for name in ("generator.safetensors", "generator.pt", "generator.onnx"):
    (block,) = [b for b in blocks[1:] if f'"{name}"' in b]
    for n in (5, 1):
        scope = {}
        exec(blocks[0], scope)
        scope.update({key: given[key][:n] for key in given.files})
        exec(block, scope)
        results[f"{name}/{n}"] = scope["images"]
assert importlib.util.find_spec("dcgan") is None, "dcgan is importable here"
assert not [m for m in sys.modules if m.split(".")[0] == "dcgan"], "dcgan was imported"
np.savez(sys.argv[2], **results)
"""


@pytest.fixture(scope="module")
def averaged_run(mnist_root, classifier_path, tmp_path_factory):
    """The default (clusters that z picks) with what the smoke run lacks: a moving average that has started."""
    return smoke_train(
        tmp_path_factory, "model.ema_start_step=5", f"data.root={mnist_root}", f"classifier_path={classifier_path}"
    )


def export(ckpt, output, *args, check=True):
    return run_script("export.py", f"ckpt_path={ckpt}", f"output_dir={output}", *args, check=check)


@pytest.mark.parametrize("run_name", ["smoke_run", "cgan_smoke_run", "averaged_run"])
def test_each_format_draws_what_generate_draws_without_dcgan(run_name, request, tmp_path):
    run = request.getfixturevalue(run_name)
    folder = tmp_path / "export"
    export(last_ckpt(run), folder, "num_samples=0")

    checkpoint = read_checkpoint(last_ckpt(run))
    gan, drawing = DCGAN.from_checkpoint(checkpoint), load_generator(checkpoint)
    rng = torch.Generator().manual_seed(7)
    inputs = {"z": torch.randn(5, gan.hparams.latent_dim, generator=rng)}
    if gan.num_digits:
        inputs["digits"] = torch.tensor([3, 0, 9, 3, 7])
    np.savez(tmp_path / "inputs.npz", **{key: value.numpy() for key, value in inputs.items()})
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "-c", LOADER, str(tmp_path / "inputs.npz"), str(tmp_path / "out.npz")],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]

    drawn = np.load(tmp_path / "out.npz")
    assert len(drawn.files) == 6
    for key in drawn.files:
        n = int(key.split("/")[1])
        with torch.no_grad():
            expected = drawing(*(value[:n] for value in inputs.values()))
        torch.testing.assert_close(
            torch.from_numpy(drawn[key]), expected, atol=1e-4, rtol=0, msg=lambda message, key=key: f"{key}: {message}"
        )

    settings = json.loads((folder / "generator.json").read_text())
    assert settings["generator"] == {
        "latent_dim": 100,
        "g_width": gan.hparams.g_width,
        "num_digits": gan.hparams.num_digits,
        "num_clusters": gan.hparams.num_clusters,
    }
    if run_name == "averaged_run":  # the test can tell G from its average
        assert gan.generator_ema.n_averaged > 0
        with torch.no_grad():
            own = gan.generator.eval()(inputs["z"], gan.cluster_prior(inputs["z"]))
            assert (own - drawing(inputs["z"])).abs().max() > 1e-2


def test_card_grid_and_metric_match_evaluate_and_default_folder(cgan_smoke_run, mnist_root, classifier_path, tmp_path):
    # A copy of the run's checkpoint, so that the default folder (beside checkpoints/) is this test's own.
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    shutil.copy(last_ckpt(cgan_smoke_run), ckpt)
    metric = [f"data.root={mnist_root}", f"classifier_path={classifier_path}", "num_samples=500"]
    run_script("export.py", f"ckpt_path={ckpt}", *metric)
    folder = tmp_path / "run" / "export" / "step_0000020"  # 2 epochs of 10 steps
    assert sorted(p.name for p in folder.iterdir()) == [
        "MODEL_CARD.md",
        "generator.json",
        "generator.onnx",
        "generator.pt",
        "generator.py",
        "generator.safetensors",
        "samples.png",
    ]
    assert sorted(p.name for p in folder.parent.iterdir()) == ["step_0000020"]  # no staging folder left behind

    card = (folder / "MODEL_CARD.md").read_text()
    printed = run_script("evaluate.py", f"ckpt_path={ckpt}", *metric).stdout.strip().splitlines()
    evaluated = printed[2:]  # after its header and the checkpoint's name
    assert any(line.startswith("read as the digit asked for") for line in evaluated)
    assert "\n".join(evaluated) in card  # every figure, beside real digits', as evaluate.py prints them
    assert "training step 20 (epoch 2)" in card and "num_digits: 10" in card
    with Image.open(folder / "samples.png") as grid:
        assert grid.size == (10 * 30 + 2, 10 * 30 + 2)  # 100 digits, a column per digit


def test_only_the_formats_asked_for(smoke_run, tmp_path):
    export(last_ckpt(smoke_run), tmp_path / "out", "formats=onnx", "num_samples=0")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["MODEL_CARD.md", "generator.onnx", "samples.png"]
