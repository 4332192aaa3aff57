"""Callbacks the tests add to real train.py runs, e.g. `+callbacks.probe._target_=tests.probes.RankProbe`.

RankProbe: each rank writes what it saw to `<run folder>/probe/rank<r>.pt`: its weights at the
start and the end of training, the sample indices of its shard in each epoch, the learning
rates it trained with, and its random state before each step.
SignalAt: a signal to the training process itself at a given step.
DivergeAt: learning rates that make the run diverge from a given step on.
"""

import os
import signal
from pathlib import Path

import pytorch_lightning as pl
import torch


class RankProbe(pl.Callback):
    def __init__(self):
        self.record = {"indices": {}, "rng": []}

    @staticmethod
    def weights(pl_module):
        return {name: p.detach().clone() for name, p in pl_module.named_parameters()}

    def on_train_start(self, trainer, pl_module):
        self.record["start"] = self.weights(pl_module)
        self.record["world_size"] = trainer.world_size
        self.record["lr"] = [opt.param_groups[0]["lr"] for opt in trainer.optimizers]

    def on_train_epoch_start(self, trainer, pl_module):
        batches = list(trainer.train_dataloader.sampler)[: trainer.num_training_batches]
        self.record["indices"][trainer.current_epoch] = torch.cat(batches).tolist()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.record["rng"].append(torch.get_rng_state())

    def on_train_end(self, trainer, pl_module):
        self.record["end"] = self.weights(pl_module)
        folder = Path(trainer.default_root_dir) / "probe"
        folder.mkdir(parents=True, exist_ok=True)
        torch.save(self.record, folder / f"rank{trainer.global_rank}.pt")


class SignalAt(pl.Callback):
    """Sends `signum` to this very process during training step `step` (1-based), as `kill` or Ctrl-C would."""

    def __init__(self, step: int, signum: int = signal.SIGTERM):
        self.step, self.signum = step, signum

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if pl_module.step + 1 == self.step:
            os.kill(os.getpid(), self.signum)


class DivergeAt(pl.Callback):
    """Sets every learning rate to 1e20 at training step `step` (1-based): the next update blows the weights up."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if pl_module.step + 1 == self.step:
            for optimizer in trainer.optimizers:
                for group in optimizer.param_groups:
                    group["lr"] = 1e20
