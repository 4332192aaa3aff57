"""The quality metric of a trained generator (see dcgan/metrics.py).

python evaluate.py ckpt_path=<run>/checkpoints/last.ckpt     # 10k generated digits vs the test split
python evaluate.py real=true                                 # 10k real training digits: the floor
python evaluate.py ckpt_path=... output=metrics.json         # also as JSON
"""

import json
from pathlib import Path

import hydra
import torch
from hydra.utils import to_absolute_path
from omegaconf import DictConfig

from dcgan.checkpoints import load_gan
from dcgan.data import ensure_mnist, load_mnist_tensors, to_model_range
from dcgan.errors import UserFacingError
from dcgan.metrics import SampleQuality, load_classifier
from dcgan.module import resolve_device


def real_digits(data_root: str, num_samples: int, seed: int) -> torch.Tensor:
    """`num_samples` training digits drawn at random: what a perfect generator would produce."""
    images, _ = load_mnist_tensors(data_root, train=True)
    pick = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:num_samples]
    return to_model_range(images[pick])


def format_scores(scores: dict[str, float]) -> str:
    lines = [
        f"{'Frechet distance (fid)':<28}{scores['fid']:10.3f}",
        f"{'mean confidence':<28}{scores['confidence']:10.3f}",
    ]
    if "label_accuracy" in scores:
        lines.append(f"{'label accuracy':<28}{scores['label_accuracy']:10.3f}")
    lines.append(f"{'smallest digit share':<28}{scores['min_digit_share']:10.3f}")
    lines.append("digit shares: " + "  ".join(f"{d}: {scores[f'digit_{d}_share']:.1%}" for d in range(10)))
    return "\n".join(lines)


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> dict[str, float]:
    if not cfg.real and not cfg.ckpt_path:
        raise SystemExit("Error: give ckpt_path=<run>/checkpoints/last.ckpt to score a generator, or real=true.")
    device = resolve_device(cfg.device)
    data_root = to_absolute_path(cfg.data.root)
    try:
        ensure_mnist(data_root)
        model = None if cfg.real else load_gan(to_absolute_path(cfg.ckpt_path), map_location=device)
    except UserFacingError as err:
        raise SystemExit(f"Error: {err}") from None

    quality = SampleQuality(load_classifier(cfg.classifier_path, data_root, device=str(device)), data_root)
    if model is None:
        images, labels = real_digits(data_root, cfg.num_samples, cfg.seed), None
    else:
        images, labels = model.sample(cfg.num_samples, seed=cfg.seed)
    scores = quality.score(images, labels)

    source = "real training digits" if cfg.real else cfg.ckpt_path
    print(f"{cfg.num_samples} {'digits from ' if model else ''}{source} vs the 10k MNIST test digits:")
    print(format_scores(scores))
    if cfg.output:
        Path(to_absolute_path(cfg.output)).write_text(json.dumps(scores, indent=2) + "\n")
    return scores


if __name__ == "__main__":
    main()
