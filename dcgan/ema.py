"""The exponential moving average of G's weights, which grids, metrics and generation draw with."""

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


class MovingAverage(AveragedModel):
    """torch's AveragedModel with exponential averaging of the weights and buffers (the same state and the same
    arithmetic), whose update never reads `n_averaged` back from the device: torch's own does, twice per call,
    and each read waits for the GPU. Whether the average has started is kept on the host."""

    def __init__(self, net: nn.Module, decay: float):
        super().__init__(net, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
        self.requires_grad_(False)
        self.started = False

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self.started = bool(self.n_averaged)  # one read per load instead of two per step

    @torch.no_grad()
    def update_parameters(self, model: nn.Module) -> None:
        averages, current = [*self.module.parameters(), *self.module.buffers()], [*model.parameters(), *model.buffers()]
        if not self.started:
            torch._foreach_copy_(averages, current)  # the first update copies
        else:  # floats by lerp, BatchNorm's step counters by their own rule: grouped by kind as torch does
            for floats in (True, False):
                pairs = [(a, c) for a, c in zip(averages, current, strict=True) if a.is_floating_point() == floats]
                if pairs:
                    self.multi_avg_fn(*map(list, zip(*pairs, strict=True)), None)
        self.n_averaged += 1
        self.started = True
