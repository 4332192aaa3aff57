"""app.py in a real browser: app.py started as a user starts it, on a free port, and Debian's Chromium driven by
Playwright through each of its features, for a real DCGAN and a real CGAN smoke run (its refusals of bad input
are tests/test_validation.py's). `-s` prints the page's times; `UPDATE_DOCS=1` saves its screenshots into docs/images/ (docs/app.md),
and `APP_RUN=outputs/runs/<run>` runs the DCGAN test on a trained run instead, as the screenshots were taken."""

import os
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from contextlib import contextmanager
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dcgan.sampling import grid_columns, requested_digits, sample, save_grid, walk
from tests.helpers import REPO, generator_of

pytestmark = pytest.mark.slow  # app.py in a process of its own, and a browser

DOCS_IMAGES = REPO / "docs" / "images"
# A new image in #id: loaded, and other than the one shown before (`old`); its address and size in pixels.
NEW_IMAGE = """([id, old]) => { const img = document.querySelector(`#${id} img`);
  return img && img.src !== old && img.complete && img.naturalWidth > 0 && [img.src, img.naturalWidth, img.naturalHeight]; }"""


def grid_size(n: int, columns: int) -> tuple[int, int]:
    """The pixel size of a grid of n digits: 28 pixels each, 2 apart and around (as tests/test_callbacks.py checks)."""
    return columns * 30 + 2, -(-n // columns) * 30 + 2


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("Playwright is not installed: .venv/bin/pip install -r requirements.txt")
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).is_file():
        pytest.fail(
            "Chromium is not installed: apt-get install -y chromium (Debian's package, which .ci/run installs; "
            "Playwright cannot download its own browser here)"
        )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])  # as root it needs this
        yield browser
        browser.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_app(ckpt: Path, log: Path):
    """`python app.py ckpt_path=<ckpt> port=<free>` until the block ends; yields its address, the time it was
    started and the seconds until it answered."""
    port, started = free_port(), time.perf_counter()
    ckpt = ckpt.relative_to(REPO) if ckpt.is_relative_to(REPO) else ckpt  # as the page names it
    with open(log, "w") as out:
        process = subprocess.Popen(
            [sys.executable, "app.py", f"ckpt_path={ckpt}", f"port={port}"],
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "HYDRA_FULL_ERROR": "1"},
        )
    try:
        while True:
            assert process.poll() is None, f"app.py exited:\n{log.read_text()[-3000:]}"
            assert time.perf_counter() - started < 120, (
                f"app.py did not answer in 2 minutes:\n{log.read_text()[-3000:]}"
            )
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)
                break
            except OSError:
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/", started, time.perf_counter() - started
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert process.returncode == 0, f"app.py did not stop cleanly on SIGTERM:\n{log.read_text()[-3000:]}"


class Page:
    """The app's page in Chromium, with what the tests do on it."""

    def __init__(self, browser, url: str, downloads: Path):
        self.page = browser.new_page(viewport={"width": 1100, "height": 860})
        self.page.goto(url)
        self.downloads, self.shown = downloads, {}

    def image(self, id: str, timeout: float = 30) -> tuple[int, int]:
        """The pixel size of the next new image in #id (waiting for it)."""
        src, width, height = self.page.wait_for_function(
            NEW_IMAGE, arg=[id, self.shown.get(id)], timeout=timeout * 1000
        ).json_value()
        self.shown[id] = src
        return width, height

    def timed(self, button: str, id: str) -> tuple[tuple[int, int], float]:
        """Click `button`; the new image in #id and the seconds from the click until it was shown."""
        started = time.perf_counter()
        self.page.locator(f"#{button}").click()
        return self.image(id), time.perf_counter() - started

    def set(self, id: str, value) -> None:
        """Type into the number box or move the slider #id."""
        self.page.locator(f"#{id} input[type=range], #{id} input[type=number]").first.fill(str(value))

    def tab(self, name: str) -> None:
        self.page.get_by_role("tab", name=name).click()

    def pixels(self, id: str, name: str | None = None) -> np.ndarray:
        """The PNG behind #id's download button, as the user saves it (named `name`, which says what it shows)."""
        with self.page.expect_download() as download:
            self.page.locator(f"#{id} button[aria-label='Download']").click()
        path = self.downloads / download.value.suggested_filename
        assert name is None or path.name == name
        download.value.save_as(path)
        with Image.open(path) as picture:
            assert picture.format == "PNG"
            return np.asarray(picture)

    def fetched(self, id: str) -> Image.Image:
        """The file #id shows, as the browser fetched it."""
        return Image.open(BytesIO(self.page.request.get(self.shown[id]).body()))

    def caption(self) -> str:
        return self.page.locator("#progress_caption").inner_text()

    def drawn(self, images: torch.Tensor, columns: int) -> np.ndarray:
        """The grid generate.py writes for these images, as pixels."""
        save_grid(images, self.downloads / "expected.png", columns)
        with Image.open(self.downloads / "expected.png") as picture:
            return np.asarray(picture)

    def screenshot(self, name: str) -> None:
        if os.environ.get("UPDATE_DOCS") == "1":
            # Gradio dims an output while a request is pending and fades it back in: wait until it is whole.
            self.page.wait_for_function("() => !document.querySelector('.pending')")
            self.page.wait_for_timeout(500)
            self.page.screenshot(path=DOCS_IMAGES / name)


def assert_same_grid(shown: np.ndarray, expected: np.ndarray) -> None:
    """The same PNG grid, up to 1 of 255 in a few pixels: another process's convolutions may round differently."""
    assert shown.shape == expected.shape
    diff = np.abs(shown.astype(int) - expected)
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01, f"{(diff > 0).sum()} pixels differ, by up to {diff.max()}"


def check_progress(page: Page, run: Path, gan) -> None:
    """The progress tab: the slider spans the run's sample grids, then its checkpoints, from first to last."""
    page.tab("Progress")
    grids = sorted((run / "samples").glob("*.png"))
    with Image.open(grids[0]) as first:
        grid_shape = first.size
    assert page.image("progress") == grid_shape and f"{len(grids)} of {len(grids)}" in page.caption()  # the last
    page.set("progress_index", 0)
    assert page.image("progress") == grid_shape and f"1 of {len(grids)}" in page.caption()
    with Image.open(grids[0]) as first:
        assert np.array_equal(page.pixels("progress"), np.asarray(first))  # the file itself

    checkpoints = sorted((run / "checkpoints").glob("epoch*.ckpt")) + [run / "checkpoints" / "last.ckpt"]
    page.page.get_by_role("radio", name="checkpoints").check()
    columns = grid_columns(gan)
    assert page.image("progress") == grid_size(columns**2, columns)
    assert f"{len(checkpoints)} of {len(checkpoints)}" in page.caption() and "last.ckpt" in page.caption()
    page.set("progress_index", 0)
    assert page.image("progress") == grid_size(columns**2, columns)
    first = generator_of(checkpoints[0])
    assert f"1 of {len(checkpoints)}" in page.caption() and checkpoints[0].name in page.caption()
    assert_same_grid(
        page.pixels("progress", f"{checkpoints[0].stem}_seed0.png"),
        page.drawn(sample(first, columns**2, seed=0)[0], columns),
    )
    page.screenshot("app_progress.png")


def test_dcgan_page_draws_grids_walks_and_progress(browser, request, tmp_path):
    run = REPO / (os.environ.get("APP_RUN") or request.getfixturevalue("smoke_run"))  # REPO / absolute: absolute
    ckpt = run / "checkpoints" / "last.ckpt"
    gan = generator_of(ckpt)
    with running_app(ckpt, tmp_path / "app.log") as (url, started, answered):
        page = Page(browser, url, tmp_path)
        assert page.image("grid", timeout=60) == (242, 242)  # drawn on load: 64 digits, 8 to a row
        first_image = time.perf_counter() - started
        assert not page.page.locator("#grid_digits").is_visible()  # no digits to pick: unconditional

        grid_times = []
        for seed in range(1, 6):
            page.set("grid_seed", seed)
            shape, seconds = page.timed("grid_draw", "grid")
            assert shape == (242, 242)
            grid_times.append(seconds)
        page.set("grid_count", 20)
        assert page.timed("grid_draw", "grid")[0] == grid_size(20, 8)
        assert_same_grid(
            page.pixels("grid", "grid_seed5_20.png"), page.drawn(sample(gan, 20, seed=5)[0], 8)
        )  # generate.py's grid
        page.set("grid_count", 64)
        page.timed("grid_draw", "grid")
        page.screenshot("app_grid.png")

        page.tab("Walk")
        assert page.image("walk_strip") == grid_size(16, 16)  # drawn on load: 16 steps
        walk_times = []
        for seed in range(2, 7):
            page.set("walk_b", seed)
            shape, seconds = page.timed("walk_go", "walk_strip")
            assert shape == grid_size(16, 16)
            walk_times.append(seconds)
        page.set("walk_steps", 6)
        assert page.timed("walk_go", "walk_strip")[0] == grid_size(6, 6)
        assert page.image("walk_gif") == (32, 32)  # one digit and its border per frame
        assert page.fetched("walk_gif").n_frames == 10  # 6 steps there, 4 back
        ends = torch.stack([torch.randn(100, generator=torch.Generator().manual_seed(s)) for s in (0, 6)])
        assert_same_grid(page.pixels("walk_strip", "walk_seed0_to_6_6.png"), page.drawn(walk(gan, ends[None], 6)[0], 6))
        page.set("walk_steps", 12)
        page.timed("walk_go", "walk_strip")
        page.screenshot("app_walk.png")

        check_progress(page, run, gan)
    print(
        f"\napp.py on {run}: answering {answered:.1f} s and first grid shown {first_image:.1f} s after launch; "
        "per request, click to image shown: "
        f"grid of 64 median {statistics.median(grid_times):.3f} s (max {max(grid_times):.3f}), walk of 16 "
        f"median {statistics.median(walk_times):.3f} s (max {max(walk_times):.3f})"
    )


def test_cgan_page_draws_the_digits_picked(browser, cgan_smoke_run, tmp_path):
    ckpt = cgan_smoke_run / "checkpoints" / "last.ckpt"
    gan = generator_of(ckpt)
    with running_app(ckpt, tmp_path / "app.log") as (url, _, _):
        page = Page(browser, url, tmp_path)
        assert page.image("grid", timeout=60) == grid_size(100, 10)  # a column per digit
        for digit in (3, 7):
            page.page.locator("#grid_digits").get_by_label(str(digit)).check()
        page.set("grid_seed", 4)
        page.set("grid_count", 20)
        assert page.timed("grid_draw", "grid")[0] == grid_size(20, 10)
        sevens_and_threes = sample(gan, 20, seed=4, digits=requested_digits(gan, [3, 7], 20))[0]
        assert_same_grid(page.pixels("grid", "grid_seed4_20_digits37.png"), page.drawn(sevens_and_threes, 10))

        page.tab("Walk")
        assert page.image("walk_strip") == grid_size(16, 16)
        page.page.locator("#walk_digit input").click()
        page.page.get_by_role("option", name="7").click()
        page.set("walk_steps", 8)
        assert page.timed("walk_go", "walk_strip")[0] == grid_size(8, 8)
        assert page.image("walk_gif") == (32, 32) and page.fetched("walk_gif").n_frames == 14
        ends = torch.stack([torch.randn(100, generator=torch.Generator().manual_seed(s)) for s in (0, 1)])
        assert_same_grid(
            page.pixels("walk_strip", "walk_seed0_to_1_8_digits7.png"), page.drawn(walk(gan, ends[None], 8, [7])[0], 8)
        )

        check_progress(page, cgan_smoke_run, gan)


def test_requests_at_once_leave_the_model_as_loaded(smoke_run, tmp_path):
    """The page answers its events in threads at once (on load: the grid, the walk and the progress together),
    with no lock: its generator is in eval mode, and drawing changes nothing in it."""
    from app import Demo

    demo = Demo(smoke_run / "checkpoints" / "last.ckpt", smoke_run, tmp_path)
    loaded = {key: value.clone() for key, value in demo.generator.state_dict().items()}
    expected = sample(demo.generator, 100, seed=1)[0]

    failures = []

    def requests():  # the same requests in each thread: they write the same files at once
        try:
            for seed in range(10):
                demo.grid(seed, 100)
                demo.walk(seed, seed + 1, 8)
        except Exception as err:  # a thread's exception would otherwise only be a warning
            failures.append(err)

    threads = [threading.Thread(target=requests) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures
    changed = [key for key, value in demo.generator.state_dict().items() if not torch.equal(value, loaded[key])]
    assert not changed, f"drawing at once changed {changed}"
    assert torch.equal(sample(demo.generator, 100, seed=1)[0], expected)
