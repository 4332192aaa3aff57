"""Draw digits from a trained generator.

python generate.py ckpt_path=<run>/checkpoints/last.ckpt                  # 8x8 grid -> samples.png
python generate.py ckpt_path=... num_samples=1000 output=samples.npz     # uint8 digits [+ labels]
python generate.py ckpt_path=... mode=interpolate output=walks.png       # latent walks, one per row
python generate.py ckpt_path=... digits=[7] output=sevens.png            # conditional models only
"""

from pathlib import Path

import hydra
import numpy as np
from hydra.utils import to_absolute_path
from omegaconf import DictConfig

from dcgan import cli
from dcgan.checkpoints import read_checkpoint
from dcgan.data import to_uint8
from dcgan.machine import resolve_device
from dcgan.module import load_generator
from dcgan.sampling import grid_columns, requested_digits, sample, save_grid, walks
from dcgan.schema import Generate


@hydra.main(version_base="1.3", config_path="conf", config_name="generate")
def main(cfg: DictConfig) -> None:
    cli.check(cfg, Generate)
    output = Path(to_absolute_path(cfg.output))
    generator = load_generator(read_checkpoint(to_absolute_path(cfg.ckpt_path))).to(resolve_device(cfg.device))
    if cfg.mode == "sample":
        digits = requested_digits(generator, cfg.digits, cfg.num_samples)
        images, digits = sample(generator, cfg.num_samples, cfg.seed, digits)
        columns = cfg.nrow or grid_columns(generator)
    else:  # interpolate
        (images, digits), columns = walks(generator, cfg.walks, cfg.steps, cfg.seed, cfg.digits), cfg.steps
    output.parent.mkdir(parents=True, exist_ok=True)
    if output.suffix == ".npz":
        arrays = {"images": to_uint8(images).numpy()} | ({} if digits is None else {"digits": digits.numpy()})
        np.savez_compressed(output, **arrays)
    else:
        save_grid(images, output, columns)
    print(f"wrote {len(images)} digits to {output}")


if __name__ == "__main__":
    cli.run(main)
