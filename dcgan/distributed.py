"""Data-parallel training of a GAN with Lightning: each network is its own DDP module.

Lightning's DDPStrategy wraps the whole LightningModule in one
DistributedDataParallel. A GAN's D step then leaves G's parameters without
gradients (and the G step D's), and DDP, which expects every parameter of the
module it wraps to get a gradient in each backward, fails with "parameters
that were not used in producing the loss" (Lightning issues #20328, #20685,
#20866). `find_unused_parameters=True` hides that at the cost of a graph
traversal per backward.

GANDDPStrategy instead wraps each network (each child module with trainable
parameters: the generator and the discriminator) in a DDP module of its own,
as MMGeneration/MMEngine's MMSeparateDistributedDataParallel does. Every
backward then reaches all parameters of the DDP modules it involves: the D step
reaches D only (G's output is detached), the G step G only (toggled_optimizer
turns off D's requires_grad, so D's DDP module sees no gradients and reduces
nothing). Each network's gradients are averaged over the ranks by its own DDP
module, and the optimizers step on identical gradients, so the ranks stay equal.

The LightningModule itself is not wrapped. Only while `training_step` runs do
its `generator` and `discriminator` attributes point at the DDP wrappers, so
the module's code is the same as on one device, and everything else (grids,
checkpoints, metrics, which may run on rank 0 only) uses the plain networks:
a DDP forward can start a collective buffer broadcast, which would hang if only
rank 0 ran it.
"""

import json
import os
from contextlib import contextmanager

import torch.distributed as dist
from pytorch_lightning.strategies import DDPStrategy
from torch.nn.parallel import DistributedDataParallel


class GANDDPStrategy(DDPStrategy):
    """DDPStrategy that wraps each trainable child network of the LightningModule separately.

    Takes the same arguments as DDPStrategy (extra ones go to each DistributedDataParallel);
    DDP communication hooks and post-local-SGD model averaging are not wired to the wrappers.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.wrappers: dict[str, DistributedDataParallel] = {}

    def configure_ddp(self) -> None:
        module = self.lightning_module
        self.wrappers = {
            name: self._setup_model(child)
            for name, child in module.named_children()
            if any(p.requires_grad for p in child.parameters())
        }
        # self.model stays the LightningModule: Lightning then leaves backward and training_step alone.

    @contextmanager
    def _wrapped_networks(self):
        children = self.lightning_module._modules
        plain = {name: children[name] for name in self.wrappers}
        children.update(self.wrappers)
        try:
            yield
        finally:
            children.update(plain)

    def training_step(self, *args, **kwargs):
        with self._wrapped_networks():
            return super().training_step(*args, **kwargs)

    def teardown(self) -> None:
        self.wrappers = {}  # the reducers hold process-group state; drop them with the process group
        super().teardown()


# Lightning starts the other ranks of a node by running train.py again with the
# same command line plus `hydra.run.dir=<run dir>` (Hydra's own run.dir, which a
# sweep job does not use). In a sweep (`-m`) that command line is the whole
# sweep: each extra rank would start all jobs again, in other folders. So rank 0
# leaves the command line of its one job in the environment, which the ranks
# inherit, and each extra rank runs exactly that (see train.py's __main__).
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
