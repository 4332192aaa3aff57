"""Training steps as CUDA graphs (dcgan/graphs.py): eager where they cannot work; and what the callback does around
the capture, on the CPU with a stand-in for CUDA's capture; on a GPU (`pytest -m gpu`, make gpu-check), the real
graphs against eager training."""

import json
import logging
import re

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.core.optimizer import LightningOptimizer
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves, tree_map

from dcgan import graphs
from dcgan.errors import UserFacingError
from dcgan.training import train
from tests.helpers import SMALL, compose_config, load_checkpoint

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
# 2 epochs of 6 steps of 16 images, fp32; instance noise until step 5, graphs from step 2 (after the resume: 8);
# no pictures at the end, which need matplotlib and tensorboard, which the GPU check's machine may lack.
RUN = (
    *SMALL,
    "callbacks.report=null",
    "trainer.limit_train_batches=6",
    "trainer.precision=32-true",
    "model.instance_noise_std=0.1",
    "model.instance_noise_anneal_steps=5",
    "model.ema_start_step=3",
    "callbacks.cuda_graph.warmup_steps=2",
)


def trained(tmp_path, name: str, *overrides: str) -> dict:
    train(compose_config(*RUN, *overrides, output_dir=str(tmp_path / name)))
    return load_checkpoint(tmp_path / name / "checkpoints" / "last.ckpt")


def assert_same_training(graphed: dict, eager: dict, **tolerance) -> None:
    assert graphed["global_step"] == eager["global_step"] == 2 * 12  # Lightning counted both updates of every step
    for part in ("state_dict", "optimizer_states"):
        flat_graphed, flat_eager = flatten(graphed[part]), flatten(eager[part])
        assert flat_graphed.keys() == flat_eager.keys()
        for key, value in flat_eager.items():
            if isinstance(value, torch.Tensor):
                torch.testing.assert_close(flat_graphed[key], value, msg=f"{part} {key}", **tolerance)
            elif not key.endswith(".capturable."):  # Adam's option, on while a graph trains
                assert flat_graphed[key] == value, f"{part} {key}"


def flatten(tree, prefix: str = "") -> dict:
    if isinstance(tree, dict):
        return {k: v for key, value in tree.items() for k, v in flatten(value, f"{prefix}{key}.").items()}
    if isinstance(tree, list | tuple):
        return {k: v for i, value in enumerate(tree) for k, v in flatten(value, f"{prefix}{i}.").items()}
    return {prefix: tree}


def test_where_graphs_cannot_work_one_line_says_why_and_training_is_eager(mnist_root, tmp_path, caplog, monkeypatch):
    data = f"data.root={mnist_root}"
    with caplog.at_level(logging.WARNING, logger="dcgan.graphs"):
        asked = trained(tmp_path, "asked", data, "callbacks.cuda_graph.enabled=true")
    assert caplog.messages == [
        "CUDA graphs are off: they need a CUDA GPU, and this run trains on the cpu. Training is eager."
    ]
    assert_same_training(asked, trained(tmp_path, "eager", data), rtol=0, atol=0)
    with pytest.raises(graphs.GraphsUnavailable) as refused:
        trained(tmp_path, "strict", data, "callbacks.cuda_graph.enabled=true", "callbacks.cuda_graph.strict=true")
    assert str(refused.value) == (
        "CUDA graphs cannot be used (callbacks.cuda_graph.strict=true): they need a CUDA GPU, and this run trains on "
        "the cpu."
    )


class Fingerprint(TorchDispatchMode):
    """What a CUDA graph holds of an update: each op, its other arguments (numbers, dtypes...) and its tensors'
    shapes and dtypes; for a tensor that lived before the replay (a weight, a buffer, an optimizer state, a graph
    input), which one, by its storage. A replay that would run other ops, numbers or storage than the capture did is
    one a real graph would get wrong: it replays the capture's."""

    def __init__(self):
        super().__init__()
        self.ops, self.made = [], set()  # made: the storages this replay allocated

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        described = tree_map(self.describe, (args, kwargs))
        out = func(*args, **kwargs)
        given = {leaf.untyped_storage().data_ptr() for leaf in tree_leaves((args, kwargs)) if torch.is_tensor(leaf)}
        self.made |= {leaf.untyped_storage().data_ptr() for leaf in tree_leaves(out) if torch.is_tensor(leaf)} - given
        self.ops.append((str(func), described))
        return out

    def describe(self, leaf):
        if not torch.is_tensor(leaf):
            return leaf if isinstance(leaf, int | float | bool | str | None) else str(leaf)
        storage = leaf.untyped_storage().data_ptr()
        return tuple(leaf.shape), leaf.dtype, None if storage in self.made else storage


def stand_in_capture(record):
    """CUDA's capture, as far as a CPU can show it: nothing runs at the capture; each replay runs the update's Python
    again on the graph's inputs, without Lightning counting its optimizer steps, as a graph's kernels never reach
    LightningOptimizer.step, and asserts that it ran what the first replay (the capture's step) ran: Fingerprint."""
    CAPTURES.append(record)
    fingerprints = []

    def uncounted(optimizer: LightningOptimizer, closure=None, **kwargs):
        return optimizer._strategy.optimizer_step(optimizer._optimizer, closure or (lambda: None), **kwargs)

    def replay() -> None:
        with pytest.MonkeyPatch.context() as patch, Fingerprint() as fingerprint:
            patch.setattr(LightningOptimizer, "step", uncounted)
            record()
        fingerprints.append(fingerprint.ops)
        first = fingerprints[0]
        for i, (captured, now) in enumerate(zip(first, fingerprint.ops, strict=False)):
            assert captured == now, f"replay {len(fingerprints)}, op {i}: the capture ran {captured}, this one {now}"
        assert len(first) == len(fingerprint.ops), (
            f"the capture ran {len(first)} ops, this replay {len(fingerprint.ops)}"
        )

    return replay


CAPTURES = []


@pytest.fixture
def stand_in(monkeypatch):
    """Graphs on the CPU: CUDA's capture stood in for by stand_in_capture, and nothing ruled out."""
    monkeypatch.setattr(graphs, "why_not", lambda trainer, module: None)
    monkeypatch.setattr(graphs, "capture", stand_in_capture)
    CAPTURES.clear()


def test_the_replayed_update_trains_as_eager_steps_do_and_resumes(mnist_root, tmp_path, stand_in):
    """Everything around the capture: graphs after the warm-up steps, a second one when the instance noise ends, the
    batch and the noise's std copied into the graph's inputs, two optimizer steps counted per replay, every replay
    running what its capture ran, the outputs logged, checkpoints and a resume in the middle: bitwise what eager
    training does (fp32); and the run says what its graphs did."""
    data = f"data.root={mnist_root}"
    graphed = trained(tmp_path, "graphed", data, "callbacks.cuda_graph.enabled=true")
    assert len(CAPTURES) == 2  # with noise from step 2, without from step 5
    reported = json.loads((tmp_path / "graphed" / "final_metrics.json").read_text())
    assert reported["cuda_graphs/captures"] == 2 and reported["cuda_graphs/replays"] == 10  # steps 3-12
    assert reported["cuda_graphs/off"] is None
    resumed = trained(
        tmp_path,
        "resumed",
        data,
        "callbacks.cuda_graph.enabled=true",
        f"ckpt_path={tmp_path / 'graphed' / 'checkpoints' / 'epoch_000.ckpt'}",
    )
    assert len(CAPTURES) == 3  # after the resume (step 6, no more noise): one
    eager = trained(tmp_path, "eager", data)
    assert_same_training(graphed, eager, rtol=0, atol=0)
    assert_same_training(resumed, eager, rtol=0, atol=0)
    assert graphed["callbacks"].keys() == eager["callbacks"].keys()


class ChangeAt(pl.Callback):
    """Before training step `step` (1-based), what a graph would not see: `what` is "lr" (halved, which the graph
    captures anew), "smoothing" (label smoothing's bounds, numbers the update reads from its hyperparameters), or
    "state" (D's Adam moment reallocated)."""

    def __init__(self, step: int, what: str):
        self.step, self.what = step, what

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if pl_module.step + 1 != self.step:
            return
        if self.what == "lr":
            for optimizer in trainer.optimizers:
                for group in optimizer.param_groups:
                    group["lr"] /= 2
        elif self.what == "smoothing":
            pl_module.hparams.label_smoothing = (0.7, 0.9)
        else:
            state = trainer.optimizers[1].state[trainer.optimizers[1].param_groups[0]["params"][0]]
            state["exp_avg"] = state["exp_avg"].clone()


def test_a_changed_learning_rate_is_captured_anew_and_trains_as_eager(mnist_root, tmp_path, stand_in):
    change = ("+callbacks.change._target_=tests.test_graphs.ChangeAt", "+callbacks.change.step=4")
    change += ("+callbacks.change.what=lr", f"data.root={mnist_root}")
    graphed = trained(tmp_path, "graphed", *change, "callbacks.cuda_graph.enabled=true")
    assert len(CAPTURES) == 3  # with noise from step 2, anew at step 4, without noise from step 5
    assert_same_training(graphed, trained(tmp_path, "eager", *change), rtol=0, atol=0)


@pytest.mark.parametrize("what", ["smoothing", "state"])
def test_a_replay_that_would_go_stale_in_a_real_graph_fails_on_the_cpu(what, mnist_root, tmp_path, stand_in):
    """The controls of the fingerprint: a number the update reads from its hyperparameters, and an optimizer state
    reallocated, each changed after the capture, where a real graph would replay the old ones."""
    change = ("+callbacks.change._target_=tests.test_graphs.ChangeAt", "+callbacks.change.step=4")
    with pytest.raises(AssertionError, match="replay 2, op"):
        trained(
            tmp_path,
            what,
            *change,
            f"+callbacks.change.what={what}",
            "model.label_smoothing=[0.8,1.0]",
            f"data.root={mnist_root}",
            "callbacks.cuda_graph.enabled=true",
        )


class AfterBackward(pl.Callback):
    def on_after_backward(self, trainer, pl_module):
        pass


def test_a_callback_whose_hook_a_replay_would_skip_is_refused_in_one_line(mnist_root, tmp_path, stand_in):
    with pytest.raises(graphs.GraphsUnavailable) as refused:
        trained(
            tmp_path,
            "refused",
            f"data.root={mnist_root}",
            "callbacks.cuda_graph.enabled=true",
            "+callbacks.mine._target_=tests.test_graphs.AfterBackward",
        )
    message = str(refused.value)
    assert message.startswith("callbacks.cuda_graph.enabled=true cannot train with AfterBackward.on_after_backward")
    assert "FiniteLosses" not in message and "\n" not in message  # its hooks launch kernels, which graphs keep


def test_a_failed_capture_trains_eagerly_and_says_why_or_with_strict_stops(mnist_root, tmp_path, monkeypatch, caplog):
    def failing_capture(record):
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(graphs, "why_not", lambda trainer, module: None)
    monkeypatch.setattr(graphs, "capture", failing_capture)
    data = f"data.root={mnist_root}"
    with caplog.at_level(logging.WARNING, logger="dcgan.graphs"):
        fell_back = trained(tmp_path, "fell_back", data, "callbacks.cuda_graph.enabled=true")
    reason = "the capture failed (operation not permitted when stream is capturing)"
    assert caplog.messages == [f"CUDA graphs are off: {reason}. Training is eager."]
    reported = json.loads((tmp_path / "fell_back" / "final_metrics.json").read_text())
    assert (reported["cuda_graphs/captures"], reported["cuda_graphs/replays"], reported["cuda_graphs/off"]) == (
        0,
        0,
        reason,
    )
    flat = flatten(fell_back["optimizer_states"])
    assert not any(value for key, value in flat.items() if key.endswith(".capturable."))  # put back for eager steps
    assert_same_training(fell_back, trained(tmp_path, "eager", data), rtol=0, atol=0)
    with pytest.raises(graphs.GraphsUnavailable, match=f"strict=true\\): {re.escape(reason)}"):
        trained(tmp_path, "strict", data, "callbacks.cuda_graph.enabled=true", "callbacks.cuda_graph.strict=true")


def largest_difference(a: dict, b: dict) -> float:
    """The largest difference between two runs' weights, buffers and Adam states."""
    flat_a, flat_b = (flatten({key: run[key] for key in ("state_dict", "optimizer_states")}) for run in (a, b))
    tensors = [key for key, value in flat_b.items() if isinstance(value, torch.Tensor) and value.is_floating_point()]
    return max((flat_a[key].double() - flat_b[key].double()).abs().max().item() for key in tensors)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("precision, steps, floor", [("32-true", 300, 1e-5), ("bf16-mixed", 12, 2e-2)])
def test_cuda_graph_training_matches_eager_training_on_the_gpu(precision, steps, floor, mnist_root, tmp_path):
    """Real captures and replays against eager steps on the GPU, and a resume in the middle: the weights and Adam
    states differ from eager training's no more than a second eager run's do (the GPU's own nondeterminism), or
    than the precision's rounding (the graph's noise std is a bf16 tensor where eager's is a number)."""
    common = (f"data.root={mnist_root}", "trainer=gpu", f"trainer.precision={precision}")
    common += (f"trainer.limit_train_batches={steps // 2}",)
    eager, again = (trained(tmp_path, name, *common) for name in ("eager", "again"))
    graphed = trained(tmp_path, "graphed", *common, "callbacks.cuda_graph.enabled=true")
    resumed = trained(
        tmp_path,
        "resumed",
        *common,
        "callbacks.cuda_graph.enabled=true",
        f"ckpt_path={tmp_path / 'graphed' / 'checkpoints' / 'epoch_000.ckpt'}",
    )
    bound = 10 * largest_difference(again, eager) + floor
    for run in (graphed, resumed):
        assert run["global_step"] == eager["global_step"] == 2 * steps
        assert largest_difference(run, eager) <= bound, (largest_difference(run, eager), bound)


class PoisonAt(pl.Callback):
    """Turns D's first weight into NaN before training step `step` (1-based): inside a graph too, since the graph
    reads the weights where they are."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if pl_module.step + 1 == self.step:
            with torch.no_grad():
                next(pl_module.discriminator.parameters()).fill_(float("nan"))


@pytest.mark.gpu
@needs_cuda
def test_the_nan_guard_stops_a_graphed_run_as_an_eager_one(mnist_root, tmp_path):
    """The guard's check of each update is inside the graph: a run whose D turns NaN under graphs stops at the next
    check, naming the loss, and keeps its last good checkpoint."""
    with pytest.raises(UserFacingError) as info:
        trained(
            tmp_path,
            "diverged",
            f"data.root={mnist_root}",
            "trainer=gpu",
            "callbacks.cuda_graph.enabled=true",
            "+callbacks.poison._target_=tests.test_graphs.PoisonAt",
            "+callbacks.poison.step=8",
        )
    assert "NaN or Inf" in str(info.value)
    saved = load_checkpoint(tmp_path / "diverged" / "checkpoints" / "last.ckpt")
    assert saved["global_step"] == 2 * 6 and all(torch.isfinite(t).all() for t in saved["state_dict"].values())
