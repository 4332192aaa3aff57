"""Export a trained generator as files that load without this project (docs/export.md).

python export.py ckpt_path=<run>/checkpoints/last.ckpt          # every format -> <run>/export/step_NNNNNNN/
python export.py ckpt_path=... formats=[onnx] output_dir=gen    # some formats, into gen/
python export.py ckpt_path=... num_samples=2000                 # a quicker, noisier metric in MODEL_CARD.md
"""

from pathlib import Path

import hydra
from hydra.utils import to_absolute_path
from omegaconf import DictConfig, ListConfig

from dcgan import cli
from dcgan.checkpoints import read_checkpoint, saved_at
from dcgan.data import ensure_mnist
from dcgan.export import config, default_output, export, file_size
from dcgan.metrics import quality_and_floor
from dcgan.module import DCGAN
from dcgan.sampling import sample
from dcgan.schema import Export


@hydra.main(version_base="1.3", config_path="conf", config_name="export")
def main(cfg: DictConfig) -> None:
    cli.check(cfg, Export)
    formats = list(dict.fromkeys(cfg.formats if isinstance(cfg.formats, ListConfig) else [cfg.formats]))
    ckpt_path, data_root = Path(to_absolute_path(cfg.ckpt_path)), to_absolute_path(cfg.data.root)
    if cfg.num_samples:
        ensure_mnist(data_root)
    checkpoint = read_checkpoint(ckpt_path)
    gan, saved = DCGAN.from_checkpoint(checkpoint), saved_at(checkpoint, ckpt_path)
    generator = gan.digit_generator()  # on the CPU: exports are traced there and run anywhere
    output = Path(to_absolute_path(cfg.output_dir)) if cfg.output_dir else default_output(ckpt_path, saved["step"])
    scores = None
    if cfg.num_samples:
        quality, floor = quality_and_floor(cfg.classifier_path, data_root, cfg.num_samples, cfg.seed, copying=True)
        scores = quality.score(*sample(generator, cfg.num_samples, cfg.seed)), floor
    sizes = export(generator, config(gan, saved), formats, output, scores, cfg.num_samples, cfg.seed)
    for name, size in sizes.items():
        print(f"  {output / name}  {file_size(size)}")
    print(f"wrote {', '.join(formats)}, samples.png and MODEL_CARD.md to {output}")


if __name__ == "__main__":
    cli.run(main)
