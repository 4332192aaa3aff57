"""Each training update as one CUDA graph: D's and G's forward, backward and Adam steps, captured once, replayed.

On a GPU these small networks leave the device waiting while the host launches a step's couple of hundred
kernels one by one; a graph launches them at once. CudaGraphs captures DCGAN.update after `warmup_steps` eager
steps (Adam's state and the GPU libraries' workspaces exist by then), then each step copies its batch into the
graph's inputs and replays it; the moving average of G, logging and the callbacks stay eager. A graph replays
kernels, none of the Python around them, so:
- the update depends on the step only through its inputs: the instance noise's std is one, and a second graph is
  captured once the noise has annealed away; the optimizers' settings (lr, betas, eps) are numbers in the graph,
  so a change of them is captured anew;
- the update reads nothing back from the device (tests/test_syncs.py), which a capture cannot do;
- a callback's per-step hooks inside the update (REPLAY_SKIPS) would run at the capture only: such a callback is
  refused, unless its hooks only launch device work, which the graph keeps (FiniteLosses);
- Lightning counts optimizer steps in Python (LightningOptimizer.step): the capture runs in on_train_batch_start,
  where Lightning counts nothing, and each replay counts its steps here.
Where a graph cannot work one line says why and training is eager: on the CPU, under DDP (its all-reduce is not
captured), under fp16's loss scaler (it skips steps from the host), without fused Adam (the NaN guard then waits
for the device); a capture that fails ends the same way. With `strict` each of these is an error instead.
"""

import logging
from collections.abc import Callable

import pytorch_lightning as pl
import torch

from dcgan.errors import UserFacingError, first_line
from dcgan.guards import FiniteLosses
from dcgan.kinds import Count, Flag

log = logging.getLogger(__name__)

# The hooks Lightning calls from inside the update (manual_backward, optimizer.step): a replay runs none of them.
REPLAY_SKIPS = ("on_before_backward", "on_after_backward", "on_before_optimizer_step", "on_before_zero_grad")
# Callbacks whose hooks there only launch kernels, which the capture records and every replay runs.
CAPTURED_CALLBACKS = (FiniteLosses,)


class GraphsUnavailable(UserFacingError):
    """callbacks.cuda_graph.strict=true, and the run cannot train with CUDA graphs. The message says why."""


def capture(record: Callable[[], None]) -> Callable[[], None]:
    """Capture the kernels `record` launches in a CUDA graph (they do not run now); return what replays them."""
    graph, stream = torch.cuda.CUDAGraph(), torch.cuda.current_stream()
    try:
        with torch.cuda.graph(graph):
            record()
    except BaseException:
        torch.cuda.set_stream(stream)  # a capture that fails to end leaves its own stream current
        raise
    return graph.replay


def optimizer_settings(trainer: pl.Trainer) -> list[tuple]:
    """What a graph holds of the optimizers as numbers: each group's lr, betas, eps and weight decay."""
    keys = ("lr", "betas", "eps", "weight_decay")
    return [tuple(group[key] for key in keys) for optimizer in trainer.optimizers for group in optimizer.param_groups]


class Replay:
    """DCGAN.update captured for one batch shape, with or without instance noise; called as DCGAN.update is."""

    def __init__(self, trainer: pl.Trainer, module: pl.LightningModule, batch, noise_std: float | None):
        real, clusters = batch
        self.trainer, self.module = trainer, module
        self.real, self.clusters = real.clone(), clusters.clone()  # the graph's inputs: each step copies into them
        self.noise_std = None if noise_std is None else torch.tensor(noise_std, device=real.device)
        self.settings = optimizer_settings(trainer)
        self.outputs, self.replayed = None, 0
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
        if optimizer_settings(self.trainer) != self.settings:  # changed since the step began: eager now, and
            return type(self.module).update(self.module, real, clusters, noise_std)  # captured anew next step
        self.replayed += 1
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


def skipped_hooks(trainer: pl.Trainer) -> list[str]:
    """The per-step hooks of the run's callbacks that a replay would not run (CAPTURED_CALLBACKS' aside)."""
    return [
        f"{type(callback).__name__}.{hook}"
        for callback in trainer.callbacks
        if not isinstance(callback, CAPTURED_CALLBACKS)
        for hook in REPLAY_SKIPS
        if getattr(type(callback), hook) is not getattr(pl.Callback, hook)
    ]


class CudaGraphs(pl.Callback):
    """With `enabled`, train with DCGAN.update as CUDA graphs (see above) from `warmup_steps` steps into the run (or
    into a resumed one) on; with `strict`, a run that cannot (or a capture that fails) is an error, not eager.
    `captures` and `replayed` count the run's graphs and the steps they trained, `off` says why there were none;
    `final_metrics` has them for final_metrics.json."""

    def __init__(self, enabled: Flag, warmup_steps: Count, strict: Flag):
        self.enabled, self.warmup_steps, self.strict = enabled, warmup_steps, strict
        self.replays: dict[bool, Replay] = {}  # with instance noise or without -> its graph
        self.first_step: int | None = None  # the first step replayed; None: eager throughout
        self.captures, self.retired = 0, 0  # retired: the steps trained by graphs no longer in use
        self.off = "callbacks.cuda_graph.enabled=false"

    @property
    def replayed(self) -> int:
        return self.retired + sum(replay.replayed for replay in self.replays.values())

    @property
    def final_metrics(self) -> dict:
        return {
            "cuda_graphs/captures": self.captures,
            "cuda_graphs/replays": self.replayed,
            "cuda_graphs/off": self.off,
        }

    def on_train_start(self, trainer, pl_module):
        if not self.enabled:
            return
        if hooks := skipped_hooks(trainer):
            raise GraphsUnavailable(
                f"callbacks.cuda_graph.enabled=true cannot train with {', '.join(hooks)}: a CUDA graph replays the "
                "update's kernels, not its Python, so that hook would run once, at the capture. Drop the callback, "
                "or train without graphs (callbacks.cuda_graph.enabled=false)."
            )
        if reason := why_not(trainer, pl_module):
            self.fall_back(reason)
            return
        self.off = None
        self.first_step = pl_module.step + self.warmup_steps

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.first_step is None or pl_module.step < self.first_step:
            return
        noise_std = pl_module.instance_noise()
        replay = self.replays.get(noise_std is not None)
        if replay is None or replay.settings != optimizer_settings(trainer):
            if replay is not None:
                log.info("The optimizers' settings changed at step %d: the update is captured anew", pl_module.step)
                self.retired += replay.replayed
            try:
                replay = self.replays[noise_std is not None] = Replay(trainer, pl_module, batch, noise_std)
            except RuntimeError as err:
                self.stop(pl_module, trainer)
                self.fall_back(f"the capture failed ({first_line(err)})")
                return
            self.captures += 1
        pl_module.update = replay  # training_step calls `self.update`: this step, the graph

    def fall_back(self, reason: str) -> None:
        if self.strict:
            raise GraphsUnavailable(f"CUDA graphs cannot be used (callbacks.cuda_graph.strict=true): {reason}.")
        log.warning("CUDA graphs are off: %s. Training is eager.", reason)
        self.off = reason

    def stop(self, pl_module, trainer=None) -> None:
        pl_module.__dict__.pop("update", None)  # DCGAN.update again
        self.retired, self.replays, self.first_step = self.replayed, {}, None
        for optimizer in trainer.optimizers if trainer else ():
            for group in optimizer.param_groups:
                group["capturable"] = False

    def on_train_end(self, trainer, pl_module):
        self.stop(pl_module)
        if self.enabled and not self.off:
            log.info("CUDA graphs: %d captures, %s replays", self.captures, f"{self.replayed:,}")

    def on_exception(self, trainer, pl_module, exception):
        self.stop(pl_module)
