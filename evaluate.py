"""The quality metric of trained generators (see dcgan/metrics.py), against the 10k MNIST test digits.

python evaluate.py ckpt_path=<run>/checkpoints/last.ckpt     # 10k generated digits
python evaluate.py ckpt_path=[a.ckpt,b.ckpt,c.ckpt]          # several runs (seeds): each, and mean and spread
python evaluate.py ckpt_path=outputs/multirun/<sweep>        # every job of a sweep, the same way
python evaluate.py real=true                                 # 10k real training digits: the floor
python evaluate.py ckpt_path=... output=metrics.json         # also as JSON
"""

import json
from pathlib import Path

import hydra
from hydra.utils import to_absolute_path
from omegaconf import DictConfig, ListConfig

from dcgan import cli
from dcgan.checkpoints import checkpoints_in, read_checkpoint
from dcgan.data import ensure_mnist
from dcgan.machine import resolve_device
from dcgan.metrics import quality_and_floor
from dcgan.module import load_generator
from dcgan.reports import format_runs, runs_summary
from dcgan.sampling import sample
from dcgan.schema import Evaluate


def checkpoint_paths(ckpt_path) -> list[Path]:
    """ckpt_path as a list of checkpoints: a folder stands for its runs' last.ckpt."""
    paths = [Path(to_absolute_path(p)) for p in (ckpt_path if isinstance(ckpt_path, ListConfig) else [ckpt_path])]
    return [found for path in paths for found in (checkpoints_in(path) if path.is_dir() else [path])]


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    cli.check(cfg, Evaluate)
    device, data_root = resolve_device(cfg.device), to_absolute_path(cfg.data.root)
    ensure_mnist(data_root)
    quality, floor = quality_and_floor(cfg.classifier_path, data_root, cfg.num_samples, cfg.seed, True, str(device))
    if cfg.real:
        results, floor = {"real training digits": floor}, None
    else:
        results = {}
        for path in checkpoint_paths(cfg.ckpt_path):
            generator = load_generator(read_checkpoint(path)).to(device)
            results[str(path)] = quality.score(*sample(generator, cfg.num_samples, cfg.seed))
    print(f"{cfg.num_samples} digits (seed {cfg.seed}) of each, against the 10k MNIST test digits:")
    print(format_runs(results, floor))
    if cfg.output:
        report = runs_summary(results) | ({"real_digits": floor} if floor else {})
        Path(to_absolute_path(cfg.output)).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    cli.run(main)
