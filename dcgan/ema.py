"""The exponential moving average of G's weights, which grids, metrics and generation draw with."""

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel


class MovingAverage(AveragedModel):
    """torch's AveragedModel with exponential averaging of the weights and buffers, in three launches per update:
    the floats by one lerp (torch's own EMA arithmetic), BatchNorm's step counters copied from G (a BatchNorm with a
    momentum never reads them; torch mixes them at four kernels each), and the count of updates. It never reads
    that count back from the device either (torch's update does, twice, and each read waits for the GPU): whether
    the average has started is kept on the host."""

    def __init__(self, net: nn.Module, decay: float):
        super().__init__(net, use_buffers=True)
        self.requires_grad_(False)
        self.decay = decay
        self.started = False

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self.started = bool(self.n_averaged)  # one read per load instead of two per step

    @torch.no_grad()
    def update_parameters(self, model: nn.Module) -> None:
        averages, current = [*self.module.parameters(), *self.module.buffers()], [*model.parameters(), *model.buffers()]
        if not self.started:
            torch._foreach_copy_(averages, current)  # the first update copies
        else:
            floats = [(a, c) for a, c in zip(averages, current, strict=True) if a.is_floating_point()]
            counters = [(a, c) for a, c in zip(averages, current, strict=True) if not a.is_floating_point()]
            torch._foreach_lerp_(*map(list, zip(*floats, strict=True)), 1 - self.decay)
            if counters:
                torch._foreach_copy_(*map(list, zip(*counters, strict=True)))
        self.n_averaged += 1
        self.started = True
