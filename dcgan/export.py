"""A trained generator as files that load without this project (export.py writes them, docs/export.md).

Every file holds the generator that DCGAN.digit_generator gives, and draws what it draws: the same digits for
the same z (and digits). Each file is read back and checked for that before the export counts as done, and
everything is written in a folder beside the output first, so that a failure leaves the output as it was.
"""

import inspect
import json
import os
import tempfile
import time
import warnings
from pathlib import Path
from string import Template

import numpy as np
import onnx
import onnxruntime
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file, save

from dcgan.checkpoints import plain_state_dict, run_folder
from dcgan.errors import UserFacingError
from dcgan.models import ClusterPrior, DigitGenerator, Generator, Project, one_hot, quantile_cuts
from dcgan.module import DCGAN
from dcgan.reports import format_scores
from dcgan.sampling import grid_columns, latents, requested_digits, save_sample_grid
from dcgan.schema import Format

FILES: dict[Format, tuple[str, ...]] = {
    "safetensors": ("generator.safetensors", "generator.json", "generator.py"),
    "torchscript": ("generator.pt",),
    "onnx": ("generator.onnx",),
}
TOLERANCE = 1e-4  # fp32: the same digits, up to rounding in another order of the same operations
EXAMPLE_BATCH = 2  # what the exporters trace with; torch.export would fix a batch of 1 as a constant
TEMPLATES = Path(__file__).parent / "templates"
# Warnings that say nothing about the files written: torch 2.14 marks torch.jit deprecated (a FutureWarning at
# each call) but runs it; z and digits share the batch axis, which the ONNX exporter names once, and says so.
UNINFORMATIVE = (r"`torch\.jit\.\w+` is deprecated", "# The axis name: batch will not be used")


class ExportError(UserFacingError):
    """A file that does not draw what the checkpoint draws. The message says which and by how much."""


def default_output(ckpt_path: Path, step: int) -> Path:
    """<run>/export/step_<step>: beside checkpoints/, one folder per training state, so no export replaces another."""
    return run_folder(ckpt_path) / "export" / f"step_{step:07d}"


def example_inputs(generator: DigitGenerator, n: int, seed: int) -> tuple[torch.Tensor, ...]:
    """(z,) or, for a conditional model, (z, digits): seed `seed`'s n latent points, and digits 0-9 in turn."""
    digits = requested_digits(generator, None, n)
    return (latents(n, generator.latent_dim, seed),) + (() if digits is None else (digits,))


def config(gan: DCGAN, saved: dict) -> dict:
    """generator.json: what rebuilds `gan`'s digit generator (DigitGenerator.build's arguments), which of its
    weights it holds, how it is fed, and where it came from (`saved`: dcgan.checkpoints.saved_at's)."""
    hp = gan.hparams
    if gan.averaging:
        weights = f"the moving average of G's weights (ema_decay {hp.ema_decay}, from step {hp.ema_start_step})"
    elif hp.ema_decay is None:
        weights = "G's own weights (this run kept no moving average)"
    else:
        weights = f"G's own weights (the moving average starts at step {hp.ema_start_step})"
    return {
        "generator": {name: hp[name] for name in inspect.signature(DigitGenerator.build).parameters},
        "weights": weights,
        "inputs": {"z": f"float32 (N, {hp.latent_dim}), standard normal"}
        | ({"digits": f"int64 (N,), 0-{gan.num_digits - 1}"} if gan.num_digits else {}),
        "output": "images: float32 (N, 1, 28, 28) in [-1, 1], -1 = background",
        "checkpoint": saved["path"],
        "step": saved["step"],
        "epoch": saved["epoch"],
        "hparams": dict(hp),
    }


def write(fmt: Format, generator: DigitGenerator, folder: Path, settings: dict) -> None:
    """Write format `fmt`'s FILES into `folder` (`settings`: generator.json's); the exporters trace a batch of
    EXAMPLE_BATCH."""
    inputs = example_inputs(generator, EXAMPLE_BATCH, seed=1)
    if fmt == "safetensors":  # with generator.py, DigitGenerator's code: the weights load without this project
        # save() and write_bytes rather than save_file, which leaves the file readable by its owner only
        (folder / "generator.safetensors").write_bytes(save(plain_state_dict(generator)))
        (folder / "generator.json").write_text(json.dumps(settings, indent=2) + "\n")
        code = "\n\n".join(
            map(inspect.getsource, (one_hot, Project, Generator, quantile_cuts, ClusterPrior, DigitGenerator))
        )
        (folder / "generator.py").write_text((TEMPLATES / "generator.py.txt").read_text() + code)
    elif fmt == "torchscript":
        torch.jit.trace(generator, inputs).save(str(folder / "generator.pt"))
    else:  # dynamo=True: the TorchScript-based exporter is deprecated in torch 2.14.
        names, batch = ["z", "digits"][: len(inputs)], torch.export.Dim("batch")
        torch.onnx.export(
            generator,
            inputs,
            str(folder / "generator.onnx"),
            dynamo=True,
            input_names=names,
            output_names=["images"],
            dynamic_shapes={name: {0: batch} for name in names},
            external_data=False,  # one file: the weights are a few MB
            verbose=False,
        )


@torch.no_grad()
def check(fmt: Format, generator: DigitGenerator, folder: Path) -> None:
    """Raise ExportError unless format `fmt`'s file in `folder`, loaded anew (safetensors as MODEL_CARD.md says,
    built from generator.json: it must suffice), draws what `generator` draws for a batch of another size than the
    traced one (the batch axis must be dynamic)."""
    inputs = example_inputs(generator, 2 * EXAMPLE_BATCH + 1, seed=2)
    if fmt == "safetensors":
        loaded = DigitGenerator.build(**json.loads((folder / "generator.json").read_text())["generator"])
        loaded.load_state_dict(load_file(folder / "generator.safetensors"))
        got = loaded.eval()(*inputs)
    elif fmt == "torchscript":
        got = torch.jit.load(str(folder / "generator.pt"))(*inputs)
    else:
        path = str(folder / "generator.onnx")
        onnx.checker.check_model(path, full_check=True)  # a well-formed graph with consistent types and shapes
        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        feed = {spec.name: tensor.numpy() for spec, tensor in zip(session.get_inputs(), inputs, strict=True)}
        got = torch.from_numpy(np.asarray(session.run(["images"], feed)[0]))
    expected = generator(*inputs)
    error = (got - expected).abs().max().item() if got.shape == expected.shape else float("inf")
    if not error <= TOLERANCE:
        raise ExportError(
            f"{FILES[fmt][0]} does not draw what the checkpoint draws: its images of shape {tuple(got.shape)} differ "
            f"from the checkpoint's {tuple(expected.shape)} by up to {error:.2g} (more than {TOLERANCE}). Nothing was "
            f"written to the output folder. This is a bug of export.py or of this torch's exporter: leave {fmt} out "
            f"(e.g. formats=[safetensors]) to export the others."
        )


def file_size(size: int) -> str:
    return f"{size / 2**20:.1f} MiB" if size >= 2**20 else f"{size / 2**10:.1f} KiB"


def model_card(
    generator: DigitGenerator, settings: dict, sizes: dict[str, int], scores: tuple | None, n: int, seed: int
) -> str:
    """MODEL_CARD.md, from templates/: `settings` are generator.json's, `n` is num_samples, the rest as in export()."""
    conditional = bool(generator.num_digits)
    quality = Template((TEMPLATES / ("quality.md" if scores else "quality_not_measured.md")).read_text())
    return Template((TEMPLATES / "model_card.md").read_text()).substitute(
        settings,  # checkpoint, step, epoch, output and weights as generator.json has them
        kind=" (conditional: pick the digit)" if conditional else "",
        arguments=settings["generator"],
        parameters=f"{sum(p.numel() for p in generator.parameters()):,}",
        inputs="; ".join(f"`{name}` {what}" for name, what in settings["inputs"].items()),
        generator=generator,
        quality=quality.substitute(scores=format_scores(*scores) if scores else "", n=n, seed=seed).rstrip(),
        digits=grid_columns(generator) ** 2,
        seed=seed,
        columns=", each column one digit 0-9" if conditional else "",
        files="\n".join(f"| `{name}` | {file_size(size)} |" for name, size in sizes.items()),
        latent_dim=generator.latent_dim,
        digit_input="\ndigits = np.arange(16) % 10  # the digit of each image (int64)" if conditional else "",
        torch_inputs=", ".join(f"torch.from_numpy({name})" for name in settings["inputs"]),
        feed="{" + ", ".join(f'"{name}": {name}' for name in settings["inputs"]) + "}",
        hparams=OmegaConf.to_yaml(settings["hparams"]).rstrip(),
    )


def export(
    generator: DigitGenerator,
    settings: dict,
    formats: list[Format],
    output: Path,
    scores: tuple | None,
    num_samples: int,
    seed: int,
) -> dict[str, int]:
    """Write `formats`, samples.png (from `seed`) and MODEL_CARD.md (with the `scores` of `num_samples` digits
    from `seed` and of as many real digits, or None) into `output`; return each file's size. `settings` are
    generator.json's (config)."""
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(".tmp", f".{output.name}.", output.parent, ignore_cleanup_errors=True) as tmp:
        staging = Path(tmp)  # .<output's name>.<random>.tmp beside it: os.replace moves files within one file system
        for fmt in formats:
            started = time.perf_counter()
            with warnings.catch_warnings():
                for message in UNINFORMATIVE:
                    warnings.filterwarnings("ignore", message)
                write(fmt, generator, staging, settings)
                check(fmt, generator, staging)
            print(f"{fmt:<12} written and checked in {time.perf_counter() - started:.1f} s")
        save_sample_grid(generator, grid_columns(generator) ** 2, seed, staging / "samples.png")
        sizes = {name: (staging / name).stat().st_size for fmt in formats for name in FILES[fmt]}
        card = model_card(generator, settings, sizes, scores, num_samples, seed)
        (staging / "MODEL_CARD.md").write_text(card)
        output.mkdir(exist_ok=True)
        for path in sorted(staging.iterdir()):
            os.replace(path, output / path.name)  # files of the same names (an export of this step) are replaced
    return sizes
