"""What a run needs to stop at any step and resume exactly where it was, beyond what Lightning's checkpoints hold
(weights, optimizer states, buffers, loop counters) and the data module's position in the data (dcgan/data.py):
the random generators (RandomState), and a stop that saves first (StopOnSignal)."""

import logging
import random
import signal
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
import torch.distributed as dist

from dcgan.errors import UserFacingError
from dcgan.kinds import Seed

log = logging.getLogger(__name__)


def get_rng_state() -> dict:
    """torch's, CUDA's, NumPy's and Python's generators, as tensors and plain values (checkpoints load with weights_only)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": (name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class RandomState(pl.Callback):
    """Each rank's random generators in every checkpoint (`rng_states`, one per rank), put back just before the first
    resumed step: Lightning saves none, and a resumed run would draw other latent vectors, dropout masks and smoothed
    labels than the run that never stopped. On several ranks each draws from `seed + rank`: with one seed for all,
    the global batch would hold world_size copies of each fake image."""

    def __init__(self, seed: Seed):
        self.seed = seed
        self._loaded: list | None = None

    def on_train_start(self, trainer, pl_module):
        # After the data loader's first iterator and every other start-up step, just before the first batch.
        states, self._loaded = self._loaded, None
        if states is not None and len(states) == trainer.world_size:
            set_rng_state(states[trainer.global_rank])
            return
        if states is not None:
            log.warning(
                f"The checkpoint holds random states for {len(states)} ranks but this run has {trainer.world_size}: "
                "reseeding, so this resumed run will not repeat the original exactly."
            )
        if trainer.world_size > 1 or states is not None:
            pl.seed_everything(self.seed + trainer.global_rank, workers=True, verbose=False)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        # Every rank takes part (Lightning builds checkpoints on all ranks, rank 0 writes them).
        states = [get_rng_state()]
        if trainer.world_size > 1 and dist.is_initialized():
            states = [None] * trainer.world_size
            dist.all_gather_object(states, get_rng_state())
        checkpoint["rng_states"] = states

    def on_load_checkpoint(self, trainer, pl_module, checkpoint):
        self._loaded = checkpoint.get("rng_states")


class TrainingStopped(UserFacingError):
    """Raised after a signal asked training to stop and last.ckpt was written."""

    def __init__(self, signum: signal.Signals, step: int, checkpoint: Path):
        super().__init__(
            f"Stopped by {signum.name} after step {step}; saved {checkpoint}. Resume with "
            f"`python train.py ckpt_path={checkpoint}` and the same overrides as this run."
        )
        self.exit_code = 128 + signum  # the shell's convention: 143 for SIGTERM, 130 for Ctrl-C


class StopOnSignal(pl.Callback):
    """On SIGTERM (a cluster pre-empting the job, `kill`) or Ctrl-C, finish the current step, where a checkpoint is
    whole (both networks updated, the step counted), save `<checkpoint dir>/last.ckpt` and stop; a second Ctrl-C
    stops at once. Under DDP a signal to any rank stops all at the same step: agreeing is a collective that waits
    for the device, so there it runs at logging steps only, and the stop comes within trainer.log_every_n_steps."""

    def __init__(self):
        self.received: signal.Signals | None = None
        self._previous: dict = {}

    def _handle(self, signum, frame):
        if self.received == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: do not wait for the step to end
        self.received = signal.Signals(signum)
        log.warning("Received %s: stopping after this step and saving last.ckpt.", self.received.name)

    def on_train_start(self, trainer, pl_module):
        # Replaces Lightning's own SIGTERM handler for the run, which would stop without a checkpoint.
        self.received = None
        self._previous = {s: signal.signal(s, self._handle) for s in (signal.SIGTERM, signal.SIGINT)}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.world_size > 1 and trainer.log_every_n_steps > 0 and not pl_module.logging_step:
            return
        if not trainer.strategy.reduce_boolean_decision(self.received is not None, all=False):
            return
        path = Path(trainer.checkpoint_callback.dirpath) / "last.ckpt"
        trainer.save_checkpoint(path)
        # A rank that got no signal itself stops with the one that did.
        raise TrainingStopped(self.received or signal.SIGTERM, pl_module.step, path)

    def on_train_end(self, trainer, pl_module, exception=None):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    on_exception = on_train_end  # a stop by signal ends in an exception: the handlers are given back then too
