"""Export a trained generator as files that load without this project (docs/export.md).

python export.py ckpt_path=<run>/checkpoints/last.ckpt          # every format -> <run>/export/step_NNNNNNN/
python export.py ckpt_path=... formats=[onnx] output_dir=gen    # some formats, into gen/
python export.py ckpt_path=... num_samples=2000                 # a quicker, noisier metric in MODEL_CARD.md
"""

import os
import shutil
import time
import uuid
from pathlib import Path

import hydra
from hydra.utils import to_absolute_path
from omegaconf import DictConfig, ListConfig, OmegaConf

from dcgan.checkpoints import gan_from, read_checkpoint, run_folder, saved_at
from dcgan.data import ensure_mnist
from dcgan.errors import UserFacingError
from dcgan.export import FILES, FORMATS, config, rebuild, write
from dcgan.metrics import REAL_DIGITS_FID, SampleQuality, load_classifier
from evaluate import format_scores
from generate import grid_columns, save_grid


def chosen_formats(formats) -> list[str]:
    """cfg.formats as a list (formats=onnx is one), each a known format."""
    chosen = list(formats) if isinstance(formats, (list, ListConfig)) else [formats]
    unknown = [f for f in chosen if f not in FORMATS]
    if unknown or not chosen:
        raise SystemExit(
            f"Error: formats={chosen} {'has the unknown format ' + repr(unknown[0]) if unknown else 'is empty'}; "
            f"the formats are {', '.join(FORMATS)}. Pick some, e.g. formats=[safetensors,onnx], or leave formats out for all."
        )
    return list(dict.fromkeys(chosen))


def default_output(ckpt_path: Path, step: int) -> Path:
    """<run>/export/step_<step>: beside checkpoints/, one folder per training state, so no export replaces another."""
    return run_folder(ckpt_path) / "export" / f"step_{step:07d}"


def file_size(size: int) -> str:
    return f"{size / 2**20:.1f} MiB" if size >= 2**20 else f"{size / 2**10:.1f} KiB"


def usage(gan, settings: dict) -> str:
    """MODEL_CARD.md's loading snippets: a batch of inputs, then one block per file (the tests run them)."""
    labels = "\nlabels = np.arange(16) % 10  # the digit of each image (int64)" if gan.num_classes else ""
    inputs = "torch.from_numpy(z), torch.from_numpy(labels)" if gan.num_classes else "torch.from_numpy(z)"
    feed = '{"z": z, "labels": labels}' if gan.num_classes else '{"z": z}'
    batch = settings["sample_bn"] == "batch"
    batch_import = ", use_batch_statistics" if batch else ""
    batch_line = "\nuse_batch_statistics(G)  # this model normalises with each batch's own statistics" if batch else ""
    return f"""Run the first block, then any of the others, in this folder; none needs the DCGAN project.

```python
import numpy as np

z = np.random.default_rng(0).standard_normal((16, {gan.hparams.latent_dim}), dtype=np.float32)  # any batch size{labels}
```

`generator.safetensors` with `generator.json` (torch and safetensors; `generator.py` is dcgan.models.Generator's code):

```python
import json

import torch
from safetensors.torch import load_file

from generator import Generator{batch_import}

config = json.load(open("generator.json"))
G = Generator(**config["generator"])
G.load_state_dict(load_file("generator.safetensors"))
G.eval(){batch_line}
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


def model_card(gan, settings: dict, sizes: dict[str, int], scores: dict | None, cfg: DictConfig) -> str:
    generator = rebuild(gan)
    parameters = sum(p.numel() for p in generator.parameters())
    inputs = "; ".join(f"`{name}` {what}" for name, what in settings["inputs"].items())
    sampling = (
        "its running statistics (eval mode)" if settings["sample_bn"] == "running" else "each batch's own statistics"
    )
    if scores:
        quality = (
            f"```\n{format_scores(scores)}\n```\n\n{cfg.num_samples} digits (seed {cfg.seed}) against the 10k "
            f"MNIST test digits, as `python evaluate.py ckpt_path=... num_samples={cfg.num_samples} seed={cfg.seed}` "
            f"scores them: lower FID is better, and real digits score {REAL_DIGITS_FID} (the project's docs/metric.md)."
        )
    else:
        quality = "Not measured (exported with num_samples=0): `python evaluate.py ckpt_path=...` measures it."
    files = "\n".join(f"| `{name}` | {file_size(size)} |" for name, size in sizes.items())
    return f"""# DCGAN generator for MNIST digits{" (conditional: pick the digit)" if gan.num_classes else ""}

Exported from `{settings["checkpoint"]}`, saved at training step {settings["step"]} (epoch {settings["epoch"]}).

## Architecture

`Generator(**{settings["generator"]})` of dcgan/models.py, {parameters:,} parameters. Inputs: {inputs}.
Output: {settings["output"]}. Weights: {settings["weights"]}. BatchNorm when sampling: {sampling}.

```
{generator}
```

## Quality

{quality}

## Samples

![Samples](samples.png)

`samples.png`: {grid_columns(gan) ** 2} digits from seed {cfg.seed}{", each row the digits 0-9" if gan.num_classes else ""}.

## Files

| file | size |
| --- | --- |
{files}

## Loading

{usage(gan, settings)}

## Training config

```yaml
{OmegaConf.to_yaml(settings["hparams"]).rstrip()}
```
"""


@hydra.main(version_base="1.3", config_path="conf", config_name="export")
def main(cfg: DictConfig) -> None:
    formats = chosen_formats(cfg.formats)
    if not isinstance(cfg.num_samples, int) or cfg.num_samples < 0:
        raise SystemExit(f"Error: num_samples={cfg.num_samples} must be a whole number >= 0 (0 leaves the metric out).")
    ckpt_path, data_root = Path(to_absolute_path(cfg.ckpt_path)), to_absolute_path(cfg.data.root)
    try:
        checkpoint = read_checkpoint(ckpt_path)
        if cfg.num_samples:
            ensure_mnist(data_root)
    except UserFacingError as err:
        raise SystemExit(f"Error: {err}") from None
    gan = gan_from(checkpoint)  # on the CPU: exports are traced there and run anywhere
    saved = saved_at(checkpoint, ckpt_path)
    output = Path(to_absolute_path(cfg.output_dir)) if cfg.output_dir else default_output(ckpt_path, saved["step"])

    # Everything goes to a new folder beside the output first and moves in when all is written and checked:
    # a failure leaves the output folder as it was.
    staging = output.parent / f".{output.name}.{uuid.uuid4().hex[:8]}.tmp"
    staging.mkdir(parents=True)
    try:
        for fmt in formats:
            started = time.perf_counter()
            write(fmt, gan, staging, saved)
            print(f"{fmt:<12} written and checked in {time.perf_counter() - started:.1f} s")
        scores = None
        if cfg.num_samples:
            quality = SampleQuality(load_classifier(cfg.classifier_path, data_root), data_root)
            scores = quality.score(*gan.sample(cfg.num_samples, seed=cfg.seed))
        save_grid(gan.sample(grid_columns(gan) ** 2, seed=cfg.seed)[0], staging / "samples.png", grid_columns(gan))
        sizes = {name: (staging / name).stat().st_size for fmt in formats for name in FILES[fmt]}
        (staging / "MODEL_CARD.md").write_text(model_card(gan, config(gan, saved), sizes, scores, cfg))
        output.mkdir(parents=True, exist_ok=True)
        for path in sorted(staging.iterdir()):
            os.replace(path, output / path.name)  # files of the same names (an export of this step) are replaced
    except UserFacingError as err:
        raise SystemExit(f"Error: {err}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    for name, size in sizes.items():
        print(f"  {output / name}  {file_size(size)}")
    print(f"wrote {', '.join(formats)}, samples.png and MODEL_CARD.md to {output}")


if __name__ == "__main__":
    main()
