"""Draw digits from a trained generator.

python generate.py ckpt_path=<run>/checkpoints/last.ckpt                  # 8x8 grid -> samples.png
python generate.py ckpt_path=... num_samples=1000 output=samples.npz     # uint8 digits [+ labels]
python generate.py ckpt_path=... mode=interpolate output=walks.png       # latent walks, one per row
python generate.py ckpt_path=... digits=[7] output=sevens.png            # conditional models only
"""

from pathlib import Path

import hydra
import numpy as np
import torch
from hydra.utils import to_absolute_path
from omegaconf import DictConfig
from torchvision.utils import save_image

from dcgan.checkpoints import load_gan
from dcgan.data import to_uint8
from dcgan.errors import UserFacingError
from dcgan.module import resolve_device

OUTPUT_KINDS = (".png", ".npz")


def slerp(z0: torch.Tensor, z1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between latents z0 and z1 (D,) at fractions t (T,): (T, D).

    Gaussian latents concentrate near a sphere; walking along it, rather than on the
    straight line through its inside, keeps every point typical of what G was trained on.
    """
    cos_omega = torch.dot(z0 / z0.norm(), z1 / z1.norm()).clamp(-1, 1)
    omega = torch.arccos(cos_omega)
    if omega.abs() < 1e-4:  # (nearly) the same direction: the straight line is the arc
        return torch.lerp(z0, z1, t[:, None])
    return (torch.sin((1 - t) * omega)[:, None] * z0 + torch.sin(t * omega)[:, None] * z1) / torch.sin(omega)


def grid_columns(model) -> int:
    """Digits per grid row: 10 for a conditional model (a column per digit), else 8."""
    return 10 if model.num_classes else 8


def save_grid(images: torch.Tensor, output: Path, nrow: int) -> None:
    """Images in [-1, 1] as one PNG grid, `nrow` to a row, 2 pixels apart."""
    save_image(images, output, nrow=nrow, normalize=True, value_range=(-1, 1), padding=2)


def requested_labels(model, digits, n: int) -> torch.Tensor | None:
    """The labels to draw for a conditional model: `digits` cycled over n samples (None: 0-9)."""
    if not model.num_classes:
        if digits is not None:
            raise SystemExit("Error: digits=... needs a conditional model (trained with model=cgan); this one is not.")
        return None
    digits = torch.tensor(list(digits) if digits is not None else range(model.num_classes))
    if digits.numel() == 0 or digits.min() < 0 or digits.max() >= model.num_classes:
        raise SystemExit(
            f"Error: digits={list(digits.tolist())} must be a non-empty list of digits 0-{model.num_classes - 1}."
        )
    return digits[torch.arange(n) % len(digits)]


def walk(model, ends: torch.Tensor, steps: int, digits=None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`steps` images along the great circle between each pair of latent points in `ends` (W, 2, D), walk after
    walk; a conditional model draws one digit per walk (`digits` cycled, as requested_labels does)."""
    t = torch.linspace(0, 1, steps)
    z = torch.cat([slerp(a, b, t) for a, b in ends]).to(model.device)
    walk_labels = requested_labels(model, digits, len(ends))
    labels = None if walk_labels is None else walk_labels.repeat_interleave(steps).to(model.device)
    return model.generate(z, labels), labels


def interpolate(model, cfg: DictConfig) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`walks` rows of `steps` images along great-circle paths between random latent points."""
    rng = torch.Generator().manual_seed(cfg.seed)
    return walk(model, torch.randn(cfg.walks, 2, model.hparams.latent_dim, generator=rng), cfg.steps, cfg.digits)


def option_problem(cfg: DictConfig) -> str | None:
    """What is wrong with the options before anything is loaded or written, or None."""
    counts = {"num_samples": 1, "walks": 1, "steps": 2} | ({"nrow": 1} if cfg.nrow is not None else {})
    for key, low in counts.items():
        value = cfg[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            return f"{key}={value} must be a whole number >= {low}; see conf/generate.yaml, e.g. {key}={max(low, 8)}."
    if Path(cfg.output).suffix not in OUTPUT_KINDS:
        return f"output={cfg.output} must end in .png (a grid) or .npz (uint8 arrays)."
    if cfg.device != "auto" and str(cfg.device).startswith("cuda") and not torch.cuda.is_available():
        return f"device={cfg.device} asks for a GPU, but PyTorch finds none here; use device=auto or device=cpu."
    return None


@hydra.main(version_base="1.3", config_path="conf", config_name="generate")
def main(cfg: DictConfig) -> None:
    if problem := option_problem(cfg):
        raise SystemExit(f"Error: {problem}")
    output = Path(to_absolute_path(cfg.output))
    try:
        model = load_gan(to_absolute_path(cfg.ckpt_path), map_location=resolve_device(cfg.device))
    except UserFacingError as err:
        raise SystemExit(f"Error: {err}") from None

    if cfg.mode == "sample":
        labels = requested_labels(model, cfg.digits, cfg.num_samples)
        images, labels = model.sample(cfg.num_samples, seed=cfg.seed, labels=labels)
        nrow = cfg.nrow or grid_columns(model)
    elif cfg.mode == "interpolate":
        images, labels = interpolate(model, cfg)
        nrow = cfg.steps
    else:
        raise SystemExit(f"Error: mode={cfg.mode} is not a mode; use mode=sample or mode=interpolate.")

    output.parent.mkdir(parents=True, exist_ok=True)
    if output.suffix == ".npz":
        arrays = {"images": to_uint8(images).cpu().numpy()}
        if labels is not None:
            arrays["labels"] = labels.cpu().numpy()
        np.savez_compressed(output, **arrays)
    else:
        save_grid(images, output, nrow)
    print(f"wrote {len(images)} digits to {output}")


if __name__ == "__main__":
    main()
