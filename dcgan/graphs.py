"""Each training update as one CUDA graph: D's and G's forward, backward and Adam steps, captured once, replayed.

On a GPU these small networks leave the device waiting while the host launches a step's couple of hundred
kernels one by one; a graph launches them at once. CudaGraphs captures DCGAN.update after `warmup_steps` eager
steps (Adam's state and the GPU libraries' workspaces exist by then), then each step copies its batch into the
graph's inputs and replays it; the moving average of G, logging and the callbacks stay eager. A graph replays
kernels, none of the Python around them, so:
- the update depends on the step only through its inputs: the instance noise's std is one, and a second graph is
  captured once the noise has annealed away; the learning rate is the one at the capture;
- the update reads nothing back from the device (tests/test_syncs.py), which a capture cannot do;
- Lightning counts optimizer steps in Python (LightningOptimizer.step): the capture runs in on_train_batch_start,
  where Lightning counts nothing, and each replay counts its steps here.
Where a graph cannot work one line says why and training is eager: on the CPU, under DDP (its all-reduce is not
captured), under fp16's loss scaler (it skips steps from the host), without fused Adam (the NaN guard then waits
for the device); a capture that fails ends the same way.
"""

import logging
from collections.abc import Callable

import pytorch_lightning as pl
import torch

from dcgan.errors import first_line

log = logging.getLogger(__name__)


def capture(record: Callable[[], None]) -> Callable[[], None]:
    """Capture the kernels `record` launches in a CUDA graph (they do not run now); return what replays them."""
    graph = torch.cuda.CUDAGraph()
    torch.cuda.synchronize()
    with torch.cuda.graph(graph):
        record()
    return graph.replay


class Replay:
    """DCGAN.update captured for one batch shape, with or without instance noise; called as DCGAN.update is."""

    def __init__(self, trainer: pl.Trainer, module: pl.LightningModule, batch, noise_std: float | None):
        real, clusters = batch
        self.trainer = trainer
        self.real, self.clusters = real.clone(), clusters.clone()  # the graph's inputs: each step copies into them
        self.noise_std = None if noise_std is None else torch.tensor(noise_std, device=real.device)
        self.outputs = None
        for optimizer in trainer.optimizers:
            for group in optimizer.param_groups:
                group["capturable"] = True  # Adam keeps its step count and bias correction on the device

        def record() -> None:  # DCGAN.update itself: an instance's `update` may already be a Replay
            self.outputs = type(module).update(module, self.real, self.clusters, self.noise_std)

        device = real.device.type
        with (
            trainer.precision_plugin.forward_context(),
            # The same autocast, without its cache of casts, which would outlive the capture.
            torch.autocast(device, torch.get_autocast_dtype(device), torch.is_autocast_enabled(device), False),
        ):
            self.replay = capture(record)

    def __call__(self, real: torch.Tensor, clusters: torch.Tensor, noise_std: float | None):
        self.real.copy_(real)
        self.clusters.copy_(clusters)
        if self.noise_std is not None:
            self.noise_std.fill_(noise_std)
        self.replay()
        progress = self.trainer.fit_loop.epoch_loop.manual_optimization.optim_step_progress
        for _ in self.trainer.optimizers:  # what LightningOptimizer.step counts, once per optimizer
            progress.increment_ready()
            progress.increment_completed()
        return self.outputs


def why_not(trainer: pl.Trainer, module: pl.LightningModule) -> str | None:
    """Why this run cannot train with CUDA graphs, or None."""
    if module.device.type != "cuda":
        return f"they need a CUDA GPU, and this run trains on the {module.device.type}"
    if trainer.world_size > 1:
        return f"this run trains on {trainer.world_size} processes, and DDP's averaging of gradients is not captured"
    if trainer.scaler is not None:
        return f"trainer.precision={trainer.precision}'s loss scaler decides on the host whether to skip a step"
    if not module.hparams.fused_adam:
        return "model.fused_adam=false: the NaN guard then waits for the device before each update"
    return None


class CudaGraphs(pl.Callback):
    """With `enabled`, train with DCGAN.update as CUDA graphs (see above) from `warmup_steps` steps into the run (or
    into a resumed one) on."""

    def __init__(self, enabled: bool, warmup_steps: int):
        self.enabled = enabled
        self.warmup_steps = warmup_steps
        self.replays: dict[bool, Replay] = {}  # with instance noise or without -> its graph
        self.first_step: int | None = None  # the first step replayed; None: eager throughout

    def on_train_start(self, trainer, pl_module):
        self.replays, self.first_step = {}, None
        if not self.enabled:
            return
        if reason := why_not(trainer, pl_module):
            log.warning("CUDA graphs are off: %s. Training is eager.", reason)
            return
        self.first_step = pl_module.step + self.warmup_steps

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.first_step is None or pl_module.step < self.first_step:
            return
        noise_std = pl_module.instance_noise()
        if (noise_std is not None) not in self.replays:
            try:
                self.replays[noise_std is not None] = Replay(trainer, pl_module, batch, noise_std)
            except RuntimeError as err:
                reason = first_line(err)
                log.warning("CUDA graphs are off: the capture failed (%s). Training goes on eagerly.", reason)
                self.stop(pl_module)
                return
        # training_step calls `self.update`: this step, the graph.
        pl_module.update = self.replays[noise_std is not None]

    def stop(self, pl_module) -> None:
        pl_module.__dict__.pop("update", None)  # DCGAN.update again
        self.replays, self.first_step = {}, None

    def on_train_end(self, trainer, pl_module):
        self.stop(pl_module)

    def on_exception(self, trainer, pl_module, exception):
        self.stop(pl_module)
