"""Data-parallel training of a GAN with Lightning: each network is its own DDP module.

Lightning's DDPStrategy wraps the whole LightningModule in one DistributedDataParallel, which expects every
parameter to get a gradient in each backward; a GAN's D step leaves G's without (and the G step D's), and DDP fails
with "parameters that were not used in producing the loss" (Lightning issues #20328, #20685, #20866), or with
`find_unused_parameters=True` pays a graph traversal per backward. GANDDPStrategy wraps each network in a DDP
module of its own, as MMEngine's MMSeparateDistributedDataParallel does: the D step reaches D only (G's output is
detached), the G step G only (toggled_optimizer turns off D's requires_grad, so D's DDP module reduces nothing),
and each network's gradients are averaged by its own module, so the ranks stay equal.
"""

import json
import os
from contextlib import contextmanager

import torch.distributed as dist
from pytorch_lightning.strategies import DDPStrategy
from torch.nn.parallel import DistributedDataParallel


class GANDDPStrategy(DDPStrategy):
    """DDPStrategy that wraps each child network with trainable parameters in its own DistributedDataParallel
    (extra arguments go to each; DDP communication hooks and post-local-SGD averaging are not wired to them).
    Only while `training_step` runs do the module's networks point at the wrappers: its code is the same as on one
    device, and all else (grids, checkpoints, metrics, maybe on rank 0 only) uses the plain networks, since a DDP
    forward can start a collective buffer broadcast, which would hang if only rank 0 ran it."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.wrappers: dict[str, DistributedDataParallel] = {}

    def configure_ddp(self) -> None:
        # self.model stays the LightningModule: Lightning then leaves backward and training_step alone.
        self.wrappers = {
            name: self._setup_model(child)
            for name, child in self.lightning_module.named_children()
            if any(p.requires_grad for p in child.parameters())
        }

    def training_step(self, *args, **kwargs):
        children = self.lightning_module._modules
        plain = {name: children[name] for name in self.wrappers}
        children.update(self.wrappers)
        try:
            return super().training_step(*args, **kwargs)
        finally:
            children.update(plain)

    def teardown(self) -> None:
        self.wrappers = {}  # the reducers hold process-group state; drop them with the process group
        super().teardown()


# Lightning starts a node's other ranks by running train.py again with the same command line plus
# `hydra.run.dir=<run dir>`; in a sweep (`-m`) that would start the whole sweep again in each. So rank 0 leaves its
# one job's command line in the environment, which the ranks inherit, and each runs exactly that (train.py).
JOB_ARGV = "DCGAN_DDP_JOB_ARGV"


def remember_job_argv(task_overrides: list[str], output_dir: str) -> None:
    """In rank 0 of a Hydra job: how the job's other ranks must call train.py (same overrides, same folder)."""
    # Quoted: a folder under an output_root= path with '=' or ',' would otherwise be split by Hydra's override grammar.
    quoted = '"' + output_dir.replace('"', '\\"') + '"'
    os.environ[JOB_ARGV] = json.dumps([*task_overrides, f"hydra.run.dir={quoted}", "hydra.output_subdir=null"])


def ddp_rank_argv(argv: list[str]) -> list[str]:
    """The command line a rank > 0 runs: its job's, when rank 0 left one (else `argv` unchanged)."""
    local_rank = os.environ.get("LOCAL_RANK", "0")
    if local_rank == "0" or JOB_ARGV not in os.environ:
        return argv
    # The job name keeps each rank's log apart: train_ddp_process_1.log beside rank 0's train.log.
    return [argv[0], *json.loads(os.environ[JOB_ARGV]), f"hydra.job.name=train_ddp_process_{local_rank}"]


@contextmanager
def ddp_job_scope():
    """Leave the process as it was for the next job of a sweep run in the same process (Hydra's basic and
    joblib launchers): Lightning's launcher sets LOCAL_RANK, WORLD_SIZE, MASTER_PORT... in os.environ (with
    LOCAL_RANK set, the next job would think its ranks already exist) and keeps the process group open."""
    saved = dict(os.environ)
    try:
        yield
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
        os.environ.clear()
        os.environ.update(saved)
