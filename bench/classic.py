"""The classic loop that users copy today, as the yardstick for our speed and quality.

A plain PyTorch DCGAN training loop in the style of pytorch/examples `dcgan/main.py`
and the `dcgan_mnist.py` script this project replaces: torchvision's MNIST with
per-sample transforms (PIL -> ToTensor -> Normalize) behind a DataLoader, and per
batch one D step and one G step with the same tricks as `dcgan.module.DCGAN`
(label smoothing U(0.8, 1), annealed Gaussian noise on D's inputs, dropout in D),
Adam(2e-4, betas 0.5/0.999), BCE-with-logits, and `Loss_D`/`Loss_G` printed every
100 batches. The networks are the script's own, written as it writes them: the layers and sizes of this project's
unconditional DCGAN, with torch's dropout and a transposed convolution for G's first layer, in fp32 on the CPU or
a GPU (there with pinned batches copied without waiting, as the PyTorch examples do). They are copied here, not
imported, so that a speed-up of the project's networks (dcgan/models.py) speeds up only the project.

    python -m bench.classic --epochs 25 --json outputs/bench/classic_25.json
    python -m bench.classic --device cuda --epochs 25

scores the generator after every epoch with the project's quality metric (the
scoring time is left out of the wall-clock times it records).
"""

import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from torchvision import transforms
from torchvision.datasets import MNIST

from dcgan import cli
from dcgan.errors import UserFacingError
from dcgan.models import init_dcgan_weights
from dcgan.module import instance_noise_std

# The reference script's recipe, stated here so that no change of the project's configs moves the yardstick.
LATENT_DIM, WIDTH, DROPOUT = 100, 64, 0.3
LR, BETAS = 2e-4, (0.5, 0.999)
SMOOTHING = (0.8, 1.0)  # real targets drawn from U(0.8, 1)
NOISE_STD, NOISE_STEPS = 0.1, 2000  # instance noise, falling to 0 over 2,000 steps


def script_networks() -> tuple[nn.Module, nn.Module]:
    """G: z (N, LATENT_DIM) -> images (N, 1, 28, 28); D: images -> one logit each (N,)."""
    generator = nn.Sequential(
        nn.Unflatten(1, (LATENT_DIM, 1, 1)),
        nn.ConvTranspose2d(LATENT_DIM, 2 * WIDTH, kernel_size=7, bias=False),
        nn.BatchNorm2d(2 * WIDTH),
        nn.ReLU(inplace=True),
        nn.ConvTranspose2d(2 * WIDTH, WIDTH, kernel_size=4, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(WIDTH),
        nn.ReLU(inplace=True),
        nn.ConvTranspose2d(WIDTH, 1, kernel_size=4, stride=2, padding=1),
        nn.Tanh(),
    )
    discriminator = nn.Sequential(
        nn.Conv2d(1, WIDTH, kernel_size=4, stride=2, padding=1),
        nn.LeakyReLU(0.2, inplace=True),
        nn.Dropout(DROPOUT),
        nn.Conv2d(WIDTH, 2 * WIDTH, kernel_size=4, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(2 * WIDTH),
        nn.LeakyReLU(0.2, inplace=True),
        nn.Dropout(DROPOUT),
        nn.Conv2d(2 * WIDTH, 1, kernel_size=7),
        nn.Flatten(0),
    )
    return generator, discriminator


def classic_loader(root: str, batch_size: int = 128, num_workers: int = 2, pin_memory: bool = False) -> DataLoader:
    """torchvision's MNIST, each image converted from PIL and normalised to [-1, 1] on its own."""
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))])
    dataset = MNIST(root, train=True, transform=transform)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        pin_memory=pin_memory,
    )


def train_classic(
    root: str,
    epochs: int = 1,
    max_steps: int | None = None,
    batch_size: int = 128,
    num_workers: int = 2,
    seed: int = 42,
    on_step=None,
    on_epoch_end=None,
    verbose: bool = True,
    device: str = "cpu",
):
    """Train G and D the classic way on `device`. `on_step(step)` is called after every batch,
    `on_epoch_end(epoch, netG)` after every epoch; returns the generator."""
    torch.manual_seed(seed)
    device = torch.device(device)
    netG, netD = (net.to(device) for net in script_networks())
    netG.apply(init_dcgan_weights)
    netD.apply(init_dcgan_weights)
    optG = torch.optim.Adam(netG.parameters(), lr=LR, betas=BETAS)
    optD = torch.optim.Adam(netD.parameters(), lr=LR, betas=BETAS)
    loader = classic_loader(root, batch_size, num_workers, pin_memory=device.type == "cuda")
    step = 0
    for epoch in range(epochs):
        for i, (real, _) in enumerate(loader):
            real = real.to(device, non_blocking=True)
            n = real.size(0)
            std = instance_noise_std(step, NOISE_STD, NOISE_STEPS)
            fake = netG(torch.randn(n, LATENT_DIM, device=device))

            # D: real (smoothed targets) vs fake
            optD.zero_grad()
            out_real = netD(real + std * torch.randn_like(real))
            out_fake = netD(fake.detach() + std * torch.randn_like(fake))
            lossD = F.binary_cross_entropy_with_logits(
                out_real, torch.empty(n, device=device).uniform_(*SMOOTHING)
            ) + F.binary_cross_entropy_with_logits(out_fake, torch.zeros(n, device=device))
            lossD.backward()
            optD.step()

            # G: non-saturating loss
            optG.zero_grad()
            out = netD(fake + std * torch.randn_like(fake))
            lossG = F.binary_cross_entropy_with_logits(out, torch.ones(n, device=device))
            lossG.backward()
            optG.step()

            step += 1
            if verbose and i % 100 == 0:
                print(f"[{epoch}/{epochs}][{i}/{len(loader)}] Loss_D: {lossD.item():.4f} Loss_G: {lossG.item():.4f}")
            if on_step is not None:
                on_step(step)
            if max_steps is not None and step >= max_steps:
                return netG
        if on_epoch_end is not None:
            on_epoch_end(epoch, netG)
    return netG


def require_gpu(prog: str) -> None:
    """Refuse `--device cuda` at once, in one paragraph, where torch sees no GPU."""
    if not torch.cuda.is_available():
        raise UserFacingError(
            f"{prog} --device cuda: torch {torch.__version__} finds no CUDA device on this machine "
            "(torch.cuda.is_available() is False); run it where a GPU is visible, or without --device."
        )


def main() -> None:
    from dcgan.metrics import MIN_SAMPLES

    parser = cli.ArgumentParser(prog="python -m bench.classic", description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=cli.whole(1), default=25)
    parser.add_argument("--data-root", default="data")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where the networks train")
    parser.add_argument("--classifier", default="~/.cache/dcgan-mnist/mnist_classifier.pt")
    parser.add_argument(
        "--num-samples", type=cli.whole(MIN_SAMPLES), default=5000, help="generated digits scored after each epoch"
    )
    parser.add_argument("--json", help="write the per-epoch figures here")
    args = parser.parse_args()
    if args.device == "cuda":
        require_gpu(parser.prog)

    from dcgan.data import ensure_mnist
    from dcgan.metrics import SampleQuality, load_classifier

    ensure_mnist(args.data_root)

    quality = SampleQuality(load_classifier(args.classifier, args.data_root), args.data_root, copying=False)
    z = torch.randn(args.num_samples, LATENT_DIM, generator=torch.Generator().manual_seed(0)).to(args.device)
    history, start, paused = [], time.perf_counter(), 0.0

    def score(epoch, netG):
        nonlocal paused
        t0 = time.perf_counter()
        netG.eval()
        with torch.no_grad():
            images = torch.cat([netG(chunk) for chunk in z.split(500)])
        netG.train()
        scores = quality.score(images)
        wall = t0 - start - paused
        paused += time.perf_counter() - t0
        history.append({"epoch": epoch + 1, "wall_s": round(wall, 1), **{k: round(v, 4) for k, v in scores.items()}})
        print(
            f"epoch {epoch + 1}: {wall:.0f} s, FID {scores['fid']:.1f}, min digit share {scores['min_digit_share']:.3f}"
        )
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps({"threads": torch.get_num_threads(), "epochs": history}, indent=1))

    train_classic(args.data_root, epochs=args.epochs, on_epoch_end=score, device=args.device)


if __name__ == "__main__":
    cli.run(main)
