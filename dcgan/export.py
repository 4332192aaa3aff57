"""A trained generator as files that load without this project (export.py writes them, docs/export.md).

Every file holds the generator that DCGAN.generate draws with, and samples as it does: the same digits for
the same z (and labels). Each writer reads its file back and checks that before the export counts as done.
"""

import inspect
import json
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import torch
from safetensors.torch import load_file, save
from torch import nn

from dcgan.checkpoints import plain_state_dict
from dcgan.errors import UserFacingError
from dcgan.models import Generator
from dcgan.module import DCGAN

FORMATS = ("safetensors", "torchscript", "onnx")
FILES = {
    "safetensors": ("generator.safetensors", "generator.json", "generator.py"),
    "torchscript": ("generator.pt",),
    "onnx": ("generator.onnx",),
}
TOLERANCE = 1e-4  # fp32: the same digits, up to rounding in another order of the same operations
EXAMPLE_BATCH = 2  # what the exporters trace with; torch.export would fix a batch of 1 as a constant


class ExportError(UserFacingError):
    """A file that does not draw what the checkpoint draws. The message says which and by how much."""


def generator_arguments(gan: DCGAN) -> dict:
    """Generator(**these) has the shape of `gan`'s generator."""
    hp = gan.hparams
    return {
        "latent_dim": hp.latent_dim,
        "width": hp.g_width,
        "num_classes": hp.num_classes,
        "info_codes": hp.get("info_codes"),
        "clusters": hp.get("clusters"),
    }


def use_batch_statistics(generator: Generator) -> None:
    """sample_bn="batch": without running statistics, BatchNorm in eval mode normalises with each batch's own,
    as DCGAN.generate does for such a model; traced in this state, the exported graphs do the same."""
    for m in generator.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean = m.running_var = None


def rebuild(gan: DCGAN) -> Generator:
    """A fresh Generator from generator_arguments and the sampling weights, ready to sample as `gan` does.
    Building it the way generator.json tells a user to also checks that the JSON suffices."""
    generator = Generator(**generator_arguments(gan))
    generator.load_state_dict(plain_state_dict(gan.sampling_generator))
    generator.eval()
    if gan.hparams.sample_bn == "batch":
        use_batch_statistics(generator)
    return generator


def example_inputs(gan: DCGAN, n: int, seed: int) -> tuple[torch.Tensor, ...]:
    """(z,) or, for a conditional model, (z, labels): n seeded latent points and digits."""
    rng = torch.Generator().manual_seed(seed)
    z = torch.randn(n, gan.hparams.latent_dim, generator=rng)
    return (z, torch.randint(0, gan.num_classes, (n,), generator=rng)) if gan.num_classes else (z,)


def input_names(gan: DCGAN) -> list[str]:
    return ["z", "labels"] if gan.num_classes else ["z"]


def config(gan: DCGAN, checkpoint: dict) -> dict:
    """generator.json: what rebuilds the generator, how it samples, and where it came from."""
    hp = gan.hparams
    if gan.sampling_generator is not gan.generator:
        weights = f"the moving average of G's weights (ema_decay {hp.ema_decay}, from step {hp.ema_start_step})"
    elif hp.ema_decay is None:
        weights = "G's own weights (this run kept no moving average)"
    else:
        weights = f"G's own weights (the moving average starts at step {hp.ema_start_step})"
    return {
        "generator": generator_arguments(gan),
        "weights": weights,
        "sample_bn": hp.sample_bn,  # running: G.eval(); batch: also use_batch_statistics (generator.py)
        "inputs": {"z": f"float32 (N, {hp.latent_dim}), standard normal"}
        | ({"labels": f"int64 (N,), digits 0-{gan.num_classes - 1}"} if gan.num_classes else {}),
        "output": "images: float32 (N, 1, 28, 28) in [-1, 1], -1 = background",
        "checkpoint": checkpoint["path"],
        "step": checkpoint["step"],
        "epoch": checkpoint["epoch"],
        "hparams": dict(hp),
    }


def write_safetensors(gan: DCGAN, folder: Path, checkpoint: dict) -> None:
    """The weights, generator.json, and generator.py: dcgan.models.Generator's code (and use_batch_statistics),
    copied from this project, so that the weights load wherever torch and safetensors are installed."""
    # save() and write_bytes rather than save_file, which leaves the file readable by its owner only
    (folder / "generator.safetensors").write_bytes(save(plain_state_dict(gan.sampling_generator)))
    (folder / "generator.json").write_text(json.dumps(config(gan, checkpoint), indent=2) + "\n")
    source = "\n\n".join(inspect.getsource(code) for code in (Generator, use_batch_statistics))
    (folder / "generator.py").write_text(
        '"""dcgan.models.Generator, copied by export.py with the weights beside it (MODEL_CARD.md loads them)."""\n\n'
        "import torch\nimport torch.nn.functional as F\nfrom torch import nn\n\n\n" + source
    )


def load_safetensors(folder: Path) -> Generator:
    """What MODEL_CARD.md tells a user to do, with this project's Generator."""
    settings = json.loads((folder / "generator.json").read_text())
    generator = Generator(**settings["generator"])
    generator.load_state_dict(load_file(folder / "generator.safetensors"))
    generator.eval()
    if settings["sample_bn"] == "batch":
        use_batch_statistics(generator)
    return generator


# torch 2.14 marks torch.jit deprecated (a FutureWarning at each call) but runs it.
JIT_DEPRECATED = r"`torch\.jit\.\w+` is deprecated"
# z and labels share the batch axis; the exporter names it once, and says so.
AXIS_NAMED_ONCE = "# The axis name: batch will not be used"


@contextmanager
def without_warnings(message: str):
    """Hide the warnings that start with `message`: they say nothing about the files written."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message)
        yield


def write_torchscript(gan: DCGAN, folder: Path) -> None:
    with without_warnings(JIT_DEPRECATED):
        traced = torch.jit.trace(rebuild(gan), example_inputs(gan, EXAMPLE_BATCH, seed=1))
        traced.save(str(folder / "generator.pt"))


def write_onnx(gan: DCGAN, folder: Path) -> None:
    # dynamo=True: the TorchScript-based exporter is deprecated in torch 2.14 and fails on batch-statistics BatchNorm.
    batch = torch.export.Dim("batch")
    with without_warnings(AXIS_NAMED_ONCE):
        torch.onnx.export(
            rebuild(gan),
            example_inputs(gan, EXAMPLE_BATCH, seed=1),
            str(folder / "generator.onnx"),
            dynamo=True,
            input_names=input_names(gan),
            output_names=["images"],
            dynamic_shapes={name: {0: batch} for name in input_names(gan)},
            external_data=False,
            verbose=False,  # one file: the weights are a few MB
        )


def draw(fmt: str, folder: Path, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Images from the written file of format `fmt`, loaded anew."""
    if fmt == "safetensors":
        with torch.no_grad():
            return load_safetensors(folder)(*inputs)
    if fmt == "torchscript":
        with without_warnings(JIT_DEPRECATED), torch.no_grad():
            return torch.jit.load(str(folder / "generator.pt"))(*inputs)
    path = str(folder / "generator.onnx")
    onnx.checker.check_model(path, full_check=True)  # a well-formed graph with consistent types and shapes
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    feed = {spec.name: tensor.numpy() for spec, tensor in zip(session.get_inputs(), inputs, strict=True)}
    return torch.from_numpy(np.asarray(session.run(["images"], feed)[0]))


def write(fmt: str, gan: DCGAN, folder: Path, checkpoint: dict) -> None:
    """Write format `fmt` into `folder` and check that, loaded anew, it draws what `gan` draws for a batch
    of another size than the traced one (the batch axis must be dynamic)."""
    if fmt == "safetensors":
        write_safetensors(gan, folder, checkpoint)
    elif fmt == "torchscript":
        write_torchscript(gan, folder)
    else:
        write_onnx(gan, folder)
    inputs = example_inputs(gan, 2 * EXAMPLE_BATCH + 1, seed=2)
    expected, got = gan.generate(*inputs), draw(fmt, folder, inputs)
    error = (got - expected).abs().max().item() if got.shape == expected.shape else float("inf")
    if not error <= TOLERANCE:
        raise ExportError(
            f"{FILES[fmt][0]} does not draw what the checkpoint draws: its images of shape {tuple(got.shape)} differ "
            f"from DCGAN.generate's {tuple(expected.shape)} by up to {error:.2g} (more than {TOLERANCE}). Nothing was "
            f"written to the output folder. This is a bug of export.py or of this torch's exporter: leave {fmt} out "
            f"(e.g. formats=[safetensors]) to export the others."
        )
