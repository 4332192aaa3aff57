"""Helpers shared by the tests: run train.py as a user would, and find its outputs."""

import os
import runpy
import subprocess
import sys
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from dcgan.checkpoints import read_checkpoint
from dcgan.module import load_generator

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
SMOKE_STEPS = 20  # experiment=smoke (conftest.py's smoke_run): 2 epochs of 10 training steps


def quick(steps: int, width: int) -> tuple[str, ...]:
    """Overrides of a real run quick enough for a test's own process: `steps` training steps per epoch of networks
    `width` wide, without the metric, the progress bar or the parameter table."""
    return (
        "experiment=smoke",
        f"trainer.limit_train_batches={steps}",
        f"model.g_width={width}",
        f"model.d_width={width}",
        "model.num_clusters=10",  # k-means into 200 clusters takes seconds; 10 is as real and quick
        "callbacks.quality=null",
        "callbacks.progress_bar=null",
        "callbacks.model_summary=null",
    )


SMALL = (*quick(4, 16), "data.batch_size=16", "callbacks.sample_grid.every_n_steps=null")
# conftest.py's tiny_run, and what tests start from to train a few quick steps in their own process.
TINY = (*quick(2, 8), "trainer.log_every_n_steps=1")


def compose_config(*overrides: str, output_dir: str = "/tmp/unused"):
    """The config train.py would get for these overrides, with `output_dir` as its run folder."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=[f"output_dir={output_dir}", *overrides])


def dcgan(**settings):
    """The model conf/model/cluster_dcgan.yaml (the default) makes, with `settings` changed: what a test does not set
    is the project's."""
    return instantiate(compose_config().model, **settings)


def data_module(root: str, batch_size: int = 32, seed: int = 0, num_clusters: int | None = None, num_digits=None):
    """The data module conf/data/mnist.yaml makes, on `root`, with each digit's cluster of `clusters` [within each of
    `num_digits` digits] or, without clusters, its digit."""
    data = compose_config(f"data.root={root}", f"data.batch_size={batch_size}", f"seed={seed}").data
    return instantiate(data, num_clusters=num_clusters, num_digits=num_digits)


def run_train(*overrides: str, env: dict | None = None, check: bool = True, timeout: int = 600):
    """Run `python train.py <overrides>` from the repo root, as a user would."""
    return run_script("train.py", *overrides, env=env, check=check, timeout=timeout)


def run_script(script: str, *args: str, env: dict | None = None, check: bool = True, timeout: int = 600):
    """Run `python <script> <args>` from the repo root, as a user would; fail with its output unless check=False."""
    result = subprocess.run(
        [sys.executable, script, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "HYDRA_FULL_ERROR": "1", **(env or {})},
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{script} {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    return result


def run_here(script: str, *args: str) -> None:
    """`python <script> <args>` in this process: the script's own `__main__`, as the shell would run it (quicker
    than a process of its own). A refusal raises SystemExit, as it exits the process."""
    saved_argv, saved_env = sys.argv, os.environ.get("HYDRA_FULL_ERROR")
    sys.argv = [script, *args]
    try:
        runpy.run_path(str(REPO / script), run_name="__main__")
    finally:
        sys.argv = saved_argv
        os.environ.pop("HYDRA_FULL_ERROR", None)  # dcgan.cli.run sets it
        if saved_env is not None:
            os.environ["HYDRA_FULL_ERROR"] = saved_env


def only_child(folder: Path) -> Path:
    children = [p for p in folder.iterdir() if p.is_dir()]
    assert len(children) == 1, f"expected one folder in {folder}, found {children}"
    return children[0]


def load_checkpoint(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)  # plain tensors and containers only


def last_ckpt(run: Path) -> Path:
    return run / "checkpoints" / "last.ckpt"


def generator_of(ckpt: Path):
    """What the checkpoint draws with (a DigitGenerator in eval mode), loaded as generate.py loads it."""
    return load_generator(read_checkpoint(ckpt))


def events(run: Path):
    """The run's TensorBoard log, with every scalar and image it holds (an EventAccumulator)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # the GPU check lacks it

    (event_file,) = (run / "tensorboard").glob("events.out.tfevents.*")
    return EventAccumulator(str(event_file), size_guidance={"scalars": 0, "images": 0}).Reload()
