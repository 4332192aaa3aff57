"""ByteDropout: the rate it drops at, the scale of what it keeps, and the memory layout it keeps."""

import pytest
import torch

from dcgan.dropout import ByteDropout


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])  # bf16: what it sees under trainer=cpu
def test_byte_dropout_drops_p_rounded_to_256ths_and_rescales_the_rest(memory_format, dtype):
    torch.manual_seed(0)
    dropout = ByteDropout(0.3)
    x = torch.rand(64, 32, 14, 14).add_(1).to(dtype).contiguous(memory_format=memory_format).requires_grad_()
    y = dropout(x)
    assert y.dtype == dtype
    dropped = (y == 0).float().mean().item()
    assert abs(dropped - 77 / 256) < 0.003  # 0.3 rounded to 77/256; 400k draws: std 0.0007
    assert y.is_contiguous(memory_format=memory_format)
    kept = y != 0
    torch.testing.assert_close(y[kept], x[kept] * (256 / 179))
    y.sum().backward()
    torch.testing.assert_close(x.grad, kept.to(dtype) * (256 / 179))
    # A new mask each call; none in eval mode.
    assert not torch.equal(dropout(x) != 0, kept)
    assert torch.equal(dropout.eval()(x), x)
