"""A steady-state training step never waits for the device.

On a GPU every read of a device value by the host (`.item()`, `bool()`, `float()`, `.tolist()`, `.cpu()`,
`nonzero`...) empties the GPU's queue: the CPU stops launching kernels until the GPU has caught up. These
tests count such reads during real runs on the CPU, where a step is attributed everything from its
`on_train_batch_start` to the next one, and check that they happen only at logging steps, grid steps and
epoch ends (and before the first step).
"""

import collections
import traceback

import pytest
import pytorch_lightning as pl
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from dcgan.training import train
from tests.helpers import compose_config

# Ops that hand a device value to the host: item(), bool(), float(), int(), format() and C++ code alike reach
# _local_scalar_dense; nonzero also underlies boolean-mask indexing.
SYNC_OPS = {
    "aten._local_scalar_dense",
    "aten.nonzero",
    "aten.equal",
    "aten.masked_select",
    "aten.unique_dim",
    "aten._unique2",
}
# Reads that on the CPU reach no op at all. `.to()` counts only to the string "cpu": on a GPU run, the
# training device is not "cpu", but the host always is.
HOST_READS = ("tolist", "numpy", "cpu", "to")

STEPS_PER_EPOCH, LOG_EVERY, GRID_EVERY = 12, 5, 7
RUN = (
    "callbacks.report=null",  # no pictures: the GPU check's machine may lack matplotlib and tensorboard
    "trainer.max_epochs=2",
    f"trainer.limit_train_batches={STEPS_PER_EPOCH}",
    f"trainer.log_every_n_steps={LOG_EVERY}",
    f"callbacks.sample_grid.every_n_steps={GRID_EVERY}",
    "callbacks.sample_grid.every_n_epochs=1",
    "callbacks.quality=null",
    "callbacks.reference_files.enabled=false",
    "data.batch_size=16",
    "model.g_width=16",
    "model.d_width=16",
    "+callbacks.marks._target_=tests.test_syncs.StepMarks",
)


class Reads:
    """What read device values, by training step."""

    step = 0
    by_step: dict[int, list[str]] = collections.defaultdict(list)

    @classmethod
    def record(cls, what: str) -> None:
        # The first frame outside torch: the code that asked.
        frame = next(
            (
                f
                for f in reversed(traceback.extract_stack()[:-2])
                if "/torch/" not in f.filename and f.filename != __file__
            ),
            None,
        )
        where = f"{frame.filename.split('site-packages/')[-1]}:{frame.lineno} {frame.name}" if frame else "?"
        cls.by_step[cls.step].append(f"{what} from {where}")


class StepMarks(pl.Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        Reads.step = pl_module.step + 1


class CountSyncOps(TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if str(func.overloadpacket) in SYNC_OPS:
            Reads.record(str(func.overloadpacket))
        return func(*args, **(kwargs or {}))


def count_host_reads(monkeypatch) -> None:
    for name in HOST_READS:
        original = getattr(torch.Tensor, name)

        def read(self, *args, _original=original, _name=name, **kwargs):
            if _name != "to" or "cpu" in (*args[:1], kwargs.get("device")):
                Reads.record(f"Tensor.{_name}")
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, read)


def reads_by_step(monkeypatch, *overrides: str, output_dir: str) -> dict[int, list[str]]:
    Reads.step, Reads.by_step = 0, collections.defaultdict(list)
    cfg = compose_config(*overrides, *RUN, output_dir=output_dir)
    count_host_reads(monkeypatch)
    with CountSyncOps():
        train(cfg)
    monkeypatch.undo()
    return Reads.by_step


def allowed(step: int) -> bool:
    return step == 0 or any(step % n == 0 for n in (LOG_EVERY, GRID_EVERY, STEPS_PER_EPOCH))


@pytest.mark.parametrize(
    "recipe",
    [
        # The default recipe with its moving average of G started at step 3, and the reference recipe
        # (dropout, label smoothing, instance noise) that experiment=reference_script times.
        pytest.param(("experiment=smoke", "model.ema_start_step=3", "model.num_clusters=10"), marks=pytest.mark.gpu),
        pytest.param(("experiment=reference_script",), marks=pytest.mark.slow),
    ],
    ids=["default", "reference_script"],
)
def test_steps_read_nothing_from_the_device_except_at_logging_grid_and_epoch_end_steps(
    recipe, mnist_root, monkeypatch, tmp_path
):
    reads = reads_by_step(monkeypatch, f"data.root={mnist_root}", *recipe, output_dir=str(tmp_path))
    assert max(reads) == 2 * STEPS_PER_EPOCH
    steady = {step: collections.Counter(reads[step]) for step in range(1, 2 * STEPS_PER_EPOCH + 1) if not allowed(step)}
    assert len(steady) == 15
    assert not any(steady.values()), "\n".join(f"step {s}: {dict(c)}" for s, c in steady.items() if c)
    # The control: the reads that are allowed are seen (the log line, the progress bar, the NaN check).
    assert all(reads[step] for step in range(LOG_EVERY, 2 * STEPS_PER_EPOCH + 1, LOG_EVERY))


class SyncDebug(pl.Callback):
    """torch's sync debug mode in steady steps on a GPU: any wait for the device there raises. Set after CudaGraphs'
    batch-start hook (a capture synchronises, by design) and before the update; the first step, which makes what
    CUDA makes lazily, and the steps that may read (allowed) are left alone."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if pl_module.step + 1 > 1 and not allowed(pl_module.step + 1):
            torch.cuda.set_sync_debug_mode("error")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="the sync debug mode needs a GPU")
@pytest.mark.parametrize("graphed", [False, True], ids=["eager", "graphed"])
def test_steady_steps_on_a_gpu_never_wait_for_it(graphed, mnist_root, tmp_path):
    """No read and no wait either (a copy from the host's pageable memory, a synchronize), eager and graphed (strict:
    the graphs must have run)."""
    overrides = ("experiment=smoke", "model.ema_start_step=3", "model.num_clusters=10", "trainer=gpu")
    overrides += ("+callbacks.sync_debug._target_=tests.test_syncs.SyncDebug", f"data.root={mnist_root}")
    if graphed:
        overrides += ("callbacks.cuda_graph.enabled=true", "callbacks.cuda_graph.strict=true")
    train(compose_config(*overrides, *RUN, output_dir=str(tmp_path)))
