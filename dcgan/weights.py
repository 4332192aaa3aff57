"""Plain copies of a trained GAN's weights, for files that other code loads: exports and seed-style files."""

import torch
from torch import nn

from dcgan.models import Generator
from dcgan.module import DCGAN


def sampling_generator(gan: DCGAN) -> Generator:
    """The generator DCGAN.generate draws with: the averaged G once averaging has started, else G itself."""
    averaging = gan.generator_ema is not None and gan.generator_ema.n_averaged > 0  # the test in DCGAN.generate
    return gan.generator_ema.module if averaging else gan.generator


def plain_state_dict(net: nn.Module) -> dict[str, torch.Tensor]:
    """`net`'s weights and buffers as contiguous CPU tensors (channels_last training leaves them strided),
    which safetensors requires and any loader takes."""
    return {key: value.detach().cpu().contiguous() for key, value in net.state_dict().items()}
