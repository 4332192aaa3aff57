"""A callback the tests add to real train.py runs (`+callbacks.probe._target_=tests.probes.RankProbe`).

Each rank writes what it saw to `<run folder>/probe/rank<r>.pt`: its weights at the
start and the end of training, the sample indices of its shard in each epoch,
the learning rates it trained with, and a fingerprint of its random stream.
"""

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
        loader = trainer.train_dataloader
        used = trainer.num_training_batches * loader.batch_size
        self.record["indices"][trainer.current_epoch] = list(loader.sampler)[:used]

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.record["rng"].append(torch.get_rng_state())

    def on_train_end(self, trainer, pl_module):
        self.record["end"] = self.weights(pl_module)
        folder = Path(trainer.default_root_dir) / "probe"
        folder.mkdir(parents=True, exist_ok=True)
        torch.save(self.record, folder / f"rank{trainer.global_rank}.pt")
