"""A local web page to try a trained generator (docs/app.md): a grid of digits from a seed (a conditional model
draws the digits picked), a walk through latent space between two seeds, and a run's progress epoch by epoch.

    python app.py ckpt_path=<run>/checkpoints/last.ckpt          # http://127.0.0.1:7860
    python app.py ckpt_path=... port=8000 host=0.0.0.0           # another port, open to other machines
    python app.py ckpt_path=... run_dir=outputs/runs/<run>       # the progress of another run
"""

import functools
import re
import signal
import tempfile
from pathlib import Path

import gradio as gr
import hydra
import torch
from hydra.utils import to_absolute_path
from omegaconf import DictConfig
from PIL import Image

from dcgan import cli
from dcgan.checkpoints import read_checkpoint, run_folder, saved_at
from dcgan.errors import UserFacingError
from dcgan.files import write_atomically
from dcgan.module import load_generator
from dcgan.sampling import grid_columns, latents, save_grid, save_sample_grid, walk
from dcgan.schema import App

# The digits fill their boxes (a 242-pixel grid is small on a screen), scaled up in sharp pixels, not blurred.
CSS = (
    ".digits .image-frame, .digits img { width: 100%; height: 100%; object-fit: contain; image-rendering: pixelated; }"
)
# The images the page shows: the files Demo drew, downloadable, filling their boxes (CSS).
IMAGE = dict(
    type="filepath", format="png", interactive=False, buttons=["download", "fullscreen"], elem_classes="digits"
)
SOURCES = ("sample grids", "checkpoints")


class PageError(UserFacingError):
    """The page cannot start where it was asked to. The message says what to do instead."""


def checkpoint(path: Path):
    """A checkpoint's generator (on the CPU) and when it was saved, read once while the file stays the same (a
    last.ckpt training rewrites is read again): the progress slider returns to the same ones, and reading is most
    of the time."""
    return read_once(path, path.stat().st_mtime_ns if path.is_file() else None)


@functools.lru_cache(maxsize=16)
def read_once(path: Path, mtime_ns: int | None):
    checkpoint = read_checkpoint(path)
    return load_generator(checkpoint), saved_at(checkpoint, path)


def box_value(value, name: str, low: int = 0) -> int:
    """A number box's value (a float) as an int, or a message on the page (a box left empty gives None)."""
    if value is None or value < low or value != int(value):
        raise gr.Error(f"{name} is {value}; give a whole number, {low} or more.")
    return int(value)


def tag(digits) -> str:
    """The digits asked for, for file names: the download is named after what it shows."""
    return f"_digits{''.join(map(str, sorted(digits)))}" if digits else ""


class Demo:
    """What the page's controls call: each draws on the CPU and returns the PNG (or GIF) the page shows."""

    def __init__(self, ckpt: Path, run: Path, out: Path):
        self.run, self.out = run, out
        self.generator, self.saved = checkpoint(ckpt)  # in eval mode: the page's events may draw at once

    def grid(self, seed, num_samples, digits=None) -> str:
        """`num_samples` digits from `seed`, as generate.py draws them: a conditional model draws `digits` in turn."""
        seed, n = box_value(seed, "The seed"), box_value(num_samples, "The number of digits", 1)
        path = self.out / f"grid_seed{seed}_{n}{tag(digits)}.png"
        save_sample_grid(self.generator, n, seed, path, digits=digits or None)
        return str(path)

    def walk(self, seed_a, seed_b, steps, digit=None) -> tuple[str, str]:
        """`steps` digits along the great circle from seed A's latent point to seed B's: a GIF and a strip."""
        a, b = box_value(seed_a, "Seed A"), box_value(seed_b, "Seed B")
        steps, digits = box_value(steps, "The number of steps", 2), None if digit is None else [int(digit)]
        ends = torch.cat([latents(1, self.generator.latent_dim, seed) for seed in (a, b)])  # each seed's point
        images, _ = walk(self.generator, ends[None], steps, digits)
        strip = self.out / f"walk_seed{a}_to_{b}_{steps}{tag(digits)}.png"
        save_grid(images, strip, steps)
        with Image.open(strip) as picture:  # each frame is a cell of the strip, with its 2-pixel border
            frames = [picture.crop((30 * i, 0, 30 * i + 32, 32)).convert("L") for i in range(steps)]
        gif, there_and_back = strip.with_suffix(".gif"), frames[1:] + frames[-2:0:-1]  # then again: loop=0
        write_atomically(
            gif, lambda f: frames[0].save(f, "GIF", save_all=True, append_images=there_and_back, duration=100, loop=0)
        )
        return str(gif), str(strip)

    def items(self, source: str) -> list[Path]:
        """The run's sample grids (samples/step_NNNNNNN_epoch_NNN.png) or checkpoints (epoch_NNN.ckpt, then
        last.ckpt), in training order; listed anew each time, so a run still training shows its newest."""
        if source == "checkpoints":
            return sorted(self.run.glob("checkpoints/epoch*.ckpt")) + sorted(self.run.glob("checkpoints/last.ckpt"))
        return sorted(self.run.glob("samples/*.png"))

    def progress(self, source: str, index, seed) -> tuple[str | None, str]:
        """The `index`-th grid or checkpoint of the run, and a line saying where in training it is."""
        items = self.items(source)
        if not items:
            kind = "checkpoints/epoch_NNN.ckpt" if source == "checkpoints" else "samples/*.png"
            return None, f"`{self.run}` has no {kind}. Start the page with run_dir=<a run folder> to see another run."
        position = min(box_value(index, "The position"), len(items) - 1)
        item = items[position]
        where = f"`{item.relative_to(self.run)}`, {position + 1} of {len(items)}"
        if source == "sample grids":
            match = re.search(r"step_(\d+)_epoch_(\d+)", item.name)
            when = f"step {int(match[1])}, epoch {int(match[2])}" if match else item.stem
            return str(item), f"{when}: the fixed noise, as training drew it ({where})"
        try:
            generator, saved = checkpoint(item)
        except UserFacingError as err:  # a damaged checkpoint of the run: its message, on the page
            raise gr.Error(str(err)) from None
        seed, n = box_value(seed, "The seed"), grid_columns(generator) ** 2
        path = self.out / f"{item.stem}_seed{seed}.png"
        save_sample_grid(generator, n, seed, path)
        return str(path), f"step {saved['step']}, epoch {saved['epoch']}: {n} digits from seed {seed} ({where})"

    def pick_source(self, source: str, seed):
        """Another source: the slider spans its items and starts at the last, the end of training."""
        last = max(len(self.items(source)) - 1, 0)
        return gr.Slider(maximum=last, value=last), *self.progress(source, last, seed)


def grid_tab(demo: Demo, blocks: gr.Blocks) -> None:
    """Digits from a seed, as many as asked; a conditional model's are the digits ticked."""
    classes, columns = demo.generator.num_digits or 0, grid_columns(demo.generator)
    with gr.Tab("Grid", elem_id="tab_grid"):
        with gr.Row():
            seed = gr.Number(0, label="Seed", precision=0, minimum=0, elem_id="grid_seed")
            count = gr.Slider(1, 256, value=columns**2, step=1, label="Digits", elem_id="grid_count")
            label = "Which digits (none ticked: all, in turn)"
            digits = gr.CheckboxGroup(list(range(classes)), visible=bool(classes), label=label, elem_id="grid_digits")
        draw = gr.Button("Draw", variant="primary", elem_id="grid_draw")
        grid = gr.Image(**IMAGE, label=f"Grid, {columns} to a row", elem_id="grid", height=480)
    for trigger in (draw.click, seed.submit, blocks.load):
        trigger(demo.grid, [seed, count, digits], grid)


def walk_tab(demo: Demo, blocks: gr.Blocks) -> None:
    """A walk from one seed's latent point to another's; a conditional model draws the digit picked."""
    classes = demo.generator.num_digits or 0
    with gr.Tab("Walk", elem_id="tab_walk"):
        with gr.Row():
            seed_a = gr.Number(0, label="From seed", precision=0, minimum=0, elem_id="walk_a")
            seed_b = gr.Number(1, label="To seed", precision=0, minimum=0, elem_id="walk_b")
            steps = gr.Slider(2, 32, value=16, step=1, label="Steps", elem_id="walk_steps")
            first = 0 if classes else None
            digit = gr.Dropdown(
                list(range(classes)), value=first, visible=bool(classes), label="Digit", elem_id="walk_digit"
            )
        go = gr.Button("Walk", variant="primary", elem_id="walk_go")
        with gr.Row():
            animation = gr.Image(**IMAGE, label="The walk, there and back (GIF)", elem_id="walk_gif", height=240)
            label = "Its steps, from the first seed to the second"
            strip = gr.Image(**IMAGE, label=label, elem_id="walk_strip", height=240, scale=3)
    for trigger in (go.click, blocks.load):
        trigger(demo.walk, [seed_a, seed_b, steps, digit], [animation, strip])


def progress_tab(demo: Demo, blocks: gr.Blocks, run_name: str) -> None:
    """The run's sample grids or checkpoints on a slider, from the start of training to its end."""
    source = SOURCES[0] if demo.items(SOURCES[0]) else SOURCES[1]
    last = max(len(demo.items(source)) - 1, 0)
    with gr.Tab("Progress", elem_id="tab_progress"):
        with gr.Row():
            sources = gr.Radio(list(SOURCES), value=source, label=f"Of {run_name}", elem_id="progress_source")
            label = "From the start of training to its end"
            position = gr.Slider(0, last, value=last, step=1, label=label, elem_id="progress_index")
            seed = gr.Number(0, label="Seed (checkpoints)", precision=0, minimum=0, elem_id="progress_seed")
        caption = gr.Markdown(elem_id="progress_caption")
        shown = gr.Image(**IMAGE, label="Progress", elem_id="progress", height=480)
    sources.change(demo.pick_source, [sources, seed], [position, shown, caption])
    for trigger in (position.change, seed.submit, blocks.load):
        trigger(demo.progress, [sources, position, seed], [shown, caption], trigger_mode="always_last")


def page(demo: Demo, ckpt_name: str, run_name: str) -> gr.Blocks:
    """The page; it names the checkpoint and the run as the user gave them."""
    kind = "a conditional GAN: pick the digits" if demo.generator.num_digits else "an unconditional DCGAN"
    # delete_cache: the copies Gradio serves go when the page stops, and those an hour old every hour
    with gr.Blocks(title="DCGAN digits", analytics_enabled=False, delete_cache=(3600, 3600)) as blocks:
        gr.Markdown(
            f"## DCGAN digits\n`{ckpt_name}`: {kind}; saved at training step {demo.saved['step']} "
            f"(epoch {demo.saved['epoch']}). Each image's download button saves it as a PNG."
        )
        grid_tab(demo, blocks)
        walk_tab(demo, blocks)
        progress_tab(demo, blocks, run_name)
    return blocks


@hydra.main(version_base="1.3", config_path="conf", config_name="app")
def main(cfg: DictConfig) -> None:
    cli.check(cfg, App)
    ckpt = Path(to_absolute_path(cfg.ckpt_path))
    run = Path(to_absolute_path(cfg.run_dir)) if cfg.run_dir else run_folder(ckpt)

    with tempfile.TemporaryDirectory(prefix="dcgan-app-") as out:  # the images drawn, gone when the page stops
        run_name = cfg.run_dir or str(run_folder(Path(cfg.ckpt_path)))
        blocks = page(Demo(ckpt, run, Path(out)), cfg.ckpt_path, run_name)
        try:
            blocks.launch(
                server_name=cfg.host,
                server_port=cfg.port,
                prevent_thread_lock=True,
                quiet=True,
                show_error=True,
                allowed_paths=[str(run / "samples")],
                css=CSS,
                footer_links=[],
            )
        except OSError:
            raise PageError(
                f"The page cannot start on host={cfg.host} port={cfg.port}: the port is taken (by another "
                f"program, or another app.py) or the host is not an address of this machine. Pick another, e.g. "
                f"port={cfg.port + 1}."
            ) from None
        print(f"The page is at http://{cfg.host}:{cfg.port} (Ctrl-C stops it)", flush=True)
        signal.signal(signal.SIGTERM, signal.default_int_handler)  # a kill stops it as Ctrl-C does, tidying up
        blocks.block_thread()


if __name__ == "__main__":
    cli.run(main)
