"""A trained generator as files that load without this project (export.py writes them, docs/export.md).

Every file holds the generator that DCGAN.generate draws with, and draws what it draws: the same digits for
the same z (and labels). Each writer reads its file back and checks that before the export counts as done, and
everything is written in a folder beside the output first, so that a failure leaves the output as it was.
"""

import inspect
import json
import os
import shutil
import time
import uuid
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file, save

from dcgan import models
from dcgan.checkpoints import plain_state_dict, run_folder
from dcgan.errors import UserFacingError
from dcgan.models import DigitGenerator
from dcgan.module import DCGAN
from dcgan.reports import format_scores
from dcgan.sampling import grid_columns, sample, save_grid

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


def default_output(ckpt_path: Path, step: int) -> Path:
    """<run>/export/step_<step>: beside checkpoints/, one folder per training state, so no export replaces another."""
    return run_folder(ckpt_path) / "export" / f"step_{step:07d}"


def generator_arguments(gan: DCGAN) -> dict:
    """DigitGenerator.build(**these) has the shape of `gan`'s generator and cluster prior."""
    return {name: gan.hparams[name] for name in inspect.signature(DigitGenerator.build).parameters}


def rebuild(gan: DCGAN) -> DigitGenerator:
    """A fresh DigitGenerator from generator_arguments and the sampling weights, in eval mode: it samples as `gan`
    does. Building it the way generator.json tells a user to also checks that the JSON suffices."""
    generator = DigitGenerator.build(**generator_arguments(gan))
    generator.load_state_dict(plain_state_dict(DigitGenerator(gan.sampling_generator, gan.cluster_prior)))
    return generator.eval()


def example_inputs(gan: DCGAN, n: int, seed: int) -> tuple[torch.Tensor, ...]:
    """(z,) or, for a conditional model, (z, labels): n seeded latent points and digits."""
    rng = torch.Generator().manual_seed(seed)
    z = torch.randn(n, gan.hparams.latent_dim, generator=rng)
    return (z, torch.randint(0, gan.num_classes, (n,), generator=rng)) if gan.num_classes else (z,)


def input_names(gan: DCGAN) -> list[str]:
    return ["z", "labels"] if gan.num_classes else ["z"]


def config(gan: DCGAN, saved: dict) -> dict:
    """generator.json: what rebuilds the generator, how it is fed, and where it came from."""
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
        "inputs": {"z": f"float32 (N, {hp.latent_dim}), standard normal"}
        | ({"labels": f"int64 (N,), digits 0-{gan.num_classes - 1}"} if gan.num_classes else {}),
        "output": "images: float32 (N, 1, 28, 28) in [-1, 1], -1 = background",
        "checkpoint": saved["path"],
        "step": saved["step"],
        "epoch": saved["epoch"],
        "hparams": dict(hp),
    }


def write_safetensors(gan: DCGAN, folder: Path, saved: dict) -> None:
    """The weights, generator.json, and generator.py: dcgan.models.DigitGenerator's code, copied from this project,
    so that the weights load wherever torch and safetensors are installed."""
    # save() and write_bytes rather than save_file, which leaves the file readable by its owner only
    (folder / "generator.safetensors").write_bytes(save(plain_state_dict(rebuild(gan))))
    (folder / "generator.json").write_text(json.dumps(config(gan, saved), indent=2) + "\n")
    parts = (models.one_hot, models.Generator, models.quantile_cuts, models.ClusterPrior, DigitGenerator)
    (folder / "generator.py").write_text(
        '"""dcgan.models.DigitGenerator and its parts, copied by export.py with the weights beside it (MODEL_CARD.md '
        'loads them)."""\n\nimport torch\nfrom torch import nn\n\n\n' + "\n\n".join(map(inspect.getsource, parts))
    )


def load_safetensors(folder: Path) -> DigitGenerator:
    """What MODEL_CARD.md tells a user to do, with this project's DigitGenerator."""
    settings = json.loads((folder / "generator.json").read_text())
    generator = DigitGenerator.build(**settings["generator"])
    generator.load_state_dict(load_file(folder / "generator.safetensors"))
    return generator.eval()


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
    # dynamo=True: the TorchScript-based exporter is deprecated in torch 2.14.
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
            external_data=False,  # one file: the weights are a few MB
            verbose=False,
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


def write(fmt: str, gan: DCGAN, folder: Path, saved: dict) -> None:
    """Write format `fmt` into `folder` and check that, loaded anew, it draws what `gan` draws for a batch
    of another size than the traced one (the batch axis must be dynamic)."""
    if fmt == "safetensors":
        write_safetensors(gan, folder, saved)
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


def file_size(size: int) -> str:
    return f"{size / 2**20:.1f} MiB" if size >= 2**20 else f"{size / 2**10:.1f} KiB"


def usage(gan: DCGAN) -> str:
    """MODEL_CARD.md's loading snippets: a batch of inputs, then one block per file (the tests run them)."""
    labels = "\nlabels = np.arange(16) % 10  # the digit of each image (int64)" if gan.num_classes else ""
    inputs = "torch.from_numpy(z), torch.from_numpy(labels)" if gan.num_classes else "torch.from_numpy(z)"
    feed = '{"z": z, "labels": labels}' if gan.num_classes else '{"z": z}'
    return f"""Run the first block, then any of the others, in this folder; none needs the DCGAN project.

```python
import numpy as np

z = np.random.default_rng(0).standard_normal((16, {gan.hparams.latent_dim}), dtype=np.float32)  # any batch size{labels}
```

`generator.safetensors` with `generator.json` (torch and safetensors; `generator.py` is dcgan.models.DigitGenerator's code):

```python
import json

import torch
from safetensors.torch import load_file

from generator import DigitGenerator

config = json.load(open("generator.json"))
G = DigitGenerator.build(**config["generator"])
G.load_state_dict(load_file("generator.safetensors"))
G.eval()
with torch.no_grad():
    images = G({inputs}).numpy()  # (16, 1, 28, 28) in [-1, 1]
```

`generator.pt` (torch only; torch 2.14 warns that torch.jit is deprecated, and runs it):

```python
import torch

G = torch.jit.load("generator.pt")
with torch.no_grad():
    images = G({inputs}).numpy()
```

`generator.onnx` (onnxruntime, or any ONNX runtime; the batch axis is dynamic):

```python
import onnxruntime

session = onnxruntime.InferenceSession("generator.onnx")
images = session.run(["images"], {feed})[0]
```

As a picture: `PIL.Image.fromarray(((images[0, 0] + 1) * 127.5).round().astype(np.uint8))`."""


def model_card(gan: DCGAN, settings: dict, sizes: dict[str, int], scores: tuple | None, n: int, seed: int) -> str:
    generator = rebuild(gan)
    parameters = sum(p.numel() for p in generator.parameters())
    inputs = "; ".join(f"`{name}` {what}" for name, what in settings["inputs"].items())
    if scores:
        quality = (
            f"```\n{format_scores(*scores)}\n```\n\n{n} digits (seed {seed}) against the 10k MNIST test digits, in "
            f"the features of an MNIST classifier, as `python evaluate.py ckpt_path=... num_samples={n} seed={seed}` "
            f"scores them, beside {n} real training digits: the floor (the project's docs/metric.md)."
        )
    else:
        quality = "Not measured (exported with num_samples=0): `python evaluate.py ckpt_path=...` measures it."
    files = "\n".join(f"| `{name}` | {file_size(size)} |" for name, size in sizes.items())
    kind = " (conditional: pick the digit)" if gan.num_classes else ""
    return f"""# DCGAN generator for MNIST digits{kind}

Exported from `{settings["checkpoint"]}`, saved at training step {settings["step"]} (epoch {settings["epoch"]}).

## Architecture

`DigitGenerator.build(**{settings["generator"]})` of dcgan/models.py, {parameters:,} parameters. Inputs: {inputs}.
Output: {settings["output"]}. Weights: {settings["weights"]}. BatchNorm when sampling: its running statistics (eval mode).

```
{generator}
```

## Quality

{quality}

## Samples

![Samples](samples.png)

`samples.png`: {grid_columns(gan) ** 2} digits from seed {seed}{", each column one digit 0-9" if gan.num_classes else ""}.

## Files

| file | size |
| --- | --- |
{files}

## Loading

{usage(gan)}

## Training config

```yaml
{OmegaConf.to_yaml(settings["hparams"]).rstrip()}
```
"""


def export(
    gan: DCGAN, saved: dict, formats: list[str], output: Path, scores: tuple | None, num_samples: int, seed: int
) -> dict[str, int]:
    """Write `formats`, samples.png (from `seed`) and MODEL_CARD.md (with the `scores` of `num_samples` digits
    from `seed` and of as many real digits, or None) into `output`; return each file's size. `saved` is where and
    when the checkpoint was saved (dcgan.checkpoints.saved_at)."""
    staging = output.parent / f".{output.name}.{uuid.uuid4().hex[:8]}.tmp"
    staging.mkdir(parents=True)
    try:
        for fmt in formats:
            started = time.perf_counter()
            write(fmt, gan, staging, saved)
            print(f"{fmt:<12} written and checked in {time.perf_counter() - started:.1f} s")
        columns = grid_columns(gan)
        save_grid(sample(gan, columns**2, seed)[0], staging / "samples.png", columns)
        sizes = {name: (staging / name).stat().st_size for fmt in formats for name in FILES[fmt]}
        (staging / "MODEL_CARD.md").write_text(model_card(gan, config(gan, saved), sizes, scores, num_samples, seed))
        output.mkdir(parents=True, exist_ok=True)
        for path in sorted(staging.iterdir()):
            os.replace(path, output / path.name)  # files of the same names (an export of this step) are replaced
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return sizes
