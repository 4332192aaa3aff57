"""Bad input (dcgan/validation.py) gets one clear paragraph before any training starts, and leaves earlier runs
as they were.

Every case here is also a row of docs/robustness.md, which test_robustness_doc_lists_every_case_and_its_message
checks against the real messages (`UPDATE_DOCS=1 pytest tests/test_validation.py` rewrites it).
"""

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from hydra.errors import HydraException
from torchvision.datasets import MNIST

from dcgan.data import MNIST_FILES
from dcgan.errors import UserFacingError
from dcgan.validation import BadInput, check_checkpoint
from tests.helpers import REPO, compose_config, run_train
from train import train

DOC = REPO / "docs" / "robustness.md"
UNREACHABLE = "http://127.0.0.1:9/"  # the discard port: nothing listens, connections are refused
TINY = (
    "experiment=smoke",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "model.g_width=8",
    "model.d_width=8",
    "callbacks.progress_bar=null",
    "callbacks.model_summary=null",
)


@dataclass
class Place:
    """Where a case runs: a scratch folder, the real MNIST, and an earlier run with its checkpoints."""

    tmp: Path
    mnist: str
    run: Path
    monkeypatch: pytest.MonkeyPatch


def mnist_copy(place: Place, broken: str, content: bytes) -> str:
    """A data root whose MNIST files link to the real ones, except `broken`, which holds `content`."""
    raw = place.tmp / "mnist" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in MNIST_FILES:
        (raw / name).symlink_to(Path(place.mnist) / "MNIST" / "raw" / name)
    (raw / broken).unlink()
    (raw / broken).write_bytes(content)
    return f"data.root={place.tmp / 'mnist'}"


def real_file(place: Place, name: str) -> bytes:
    return (Path(place.mnist) / "MNIST" / "raw" / name).read_bytes()


def no_gpu(place: Place) -> None:
    place.monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    place.monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


def offline(place: Place) -> None:
    place.monkeypatch.setattr(MNIST, "mirrors", [UNREACHABLE])


def checkpoint_copy(place: Place, change: Callable[[dict], None]) -> str:
    checkpoint = torch.load(place.run / "checkpoints" / "last.ckpt", weights_only=True)
    change(checkpoint)
    torch.save(checkpoint, place.tmp / "other.ckpt")
    return f"ckpt_path={place.tmp / 'other.ckpt'}"


def truncated_checkpoint(place: Place) -> list[str]:
    data = (place.run / "checkpoints" / "last.ckpt").read_bytes()
    (place.tmp / "cut.ckpt").write_bytes(data[: len(data) // 2])
    return [f"ckpt_path={place.tmp / 'cut.ckpt'}"]


@dataclass
class Case:
    what: str  # the bad input, as the table shows it
    overrides: Callable[[Place], list[str]]
    expected: str  # a part of the message


CASES = {
    "negative-lr": Case(
        "`model.lr=-2e-4`", lambda p: ["model.lr=-2e-4"], "model.lr must be a positive number, got -0.0002"
    ),
    "zero-lr-d": Case("`model.lr_d=0`", lambda p: ["model.lr_d=0"], "model.lr_d must be a positive number, got 0"),
    "zero-batch": Case(
        "`data.batch_size=0`", lambda p: ["data.batch_size=0"], "data.batch_size must be a positive whole number, got 0"
    ),
    "negative-batch": Case("`data.batch_size=-32`", lambda p: ["data.batch_size=-32"], "got -32"),
    "pack-not-dividing-batch": Case(
        "`model.d_pack=3` with `data.batch_size=32`",
        lambda p: ["model.d_pack=3", "data.batch_size=32"],
        "model.d_pack=3 cannot pack data.batch_size=32 images",
    ),
    "pack-with-cgan": Case(
        "`model=cgan model.d_pack=2`",
        lambda p: ["model=cgan", "model.d_pack=2"],
        "1 when D also sees each image's label",
    ),
    "clusters-with-cgan": Case(
        "`model=cgan model.clusters=40`",
        lambda p: ["model=cgan", "model.clusters=40"],
        "model.clusters=40 is for an unconditional model",
    ),
    "info-codes-above-latent-dim": Case(
        "`model.info_codes=200`",
        lambda p: ["model.info_codes=200"],
        "model.info_codes=200 is not a number of categories",
    ),
    "zero-width": Case(
        "`model.g_width=0`",
        lambda p: ["model.g_width=0"],
        "model.g_width=0 cannot work: it must be a whole number >= 1",
    ),
    "dropout-one": Case("`model.d_dropout=1.5`", lambda p: ["model.d_dropout=1.5"], "model.d_dropout=1.5 cannot work"),
    "beta-one": Case(
        "`model.betas=[0.5,1.5]`", lambda p: ["model.betas=[0.5,1.5]"], "model.betas=[0.5, 1.5] cannot work"
    ),
    "smoothing-reversed": Case(
        "`model.label_smoothing=[1.0,0.8]`",
        lambda p: ["model.label_smoothing=[1.0,0.8]"],
        "model.label_smoothing=[1.0, 0.8] cannot work",
    ),
    "negative-noise": Case(
        "`model.instance_noise_std=-0.1`",
        lambda p: ["model.instance_noise_std=-0.1"],
        "model.instance_noise_std=-0.1 cannot work",
    ),
    "unknown-compile-mode": Case(
        "`model.compile=fast`", lambda p: ["model.compile=fast"], "model.compile=fast cannot work: it must be one of"
    ),
    "ema-decay-above-one": Case(
        "`model.ema_decay=2`", lambda p: ["model.ema_decay=2"], "model.ema_decay=2 cannot work"
    ),
    "unknown-sample-bn": Case(
        "`model.sample_bn=eval`", lambda p: ["model.sample_bn=eval"], "model.sample_bn=eval is not a way to sample"
    ),
    "unknown-accelerator": Case(
        "`trainer.accelerator=tpuu`",
        lambda p: ["trainer.accelerator=tpuu"],
        "trainer.accelerator=tpuu is not an accelerator",
    ),
    "gpu-without-gpu": Case(
        "`trainer=gpu` on a machine without a GPU",
        lambda p: no_gpu(p) or ["trainer=gpu"],
        "asks for a GPU, but PyTorch finds none",
    ),
    "sync-batchnorm-on-cpu": Case(
        "`trainer=ddp trainer.accelerator=cpu trainer.sync_batchnorm=true`",
        lambda p: ["trainer=ddp", "trainer.accelerator=cpu", "trainer.sync_batchnorm=true"],
        "SyncBatchNorm does not run on the CPU",
    ),
    "missing-data-root": Case(
        "`data.root=` a folder that does not exist (offline)",
        lambda p: offline(p) or [f"data.root={p.tmp / 'no-such-folder'}"],
        "does not exist) and could not be downloaded",
    ),
    "truncated-mnist": Case(
        "`train-images-idx3-ubyte` cut to 1000 bytes",
        lambda p: [mnist_copy(p, "train-images-idx3-ubyte", real_file(p, "train-images-idx3-ubyte")[:1000])],
        "is truncated or padded: 1000 bytes instead of 47040016",
    ),
    "wrong-magic": Case(
        "`train-labels-idx1-ubyte` with another magic number",
        lambda p: [
            mnist_copy(p, "train-labels-idx1-ubyte", b"\x00\x00\x08\x03" + real_file(p, "train-labels-idx1-ubyte")[4:])
        ],
        "starts with magic number 2051, not 2049",
    ),
    "missing-checkpoint": Case(
        "`ckpt_path=` a file that does not exist",
        lambda p: [f"ckpt_path={p.tmp / 'nope.ckpt'}"],
        "nope.ckpt does not exist",
    ),
    "corrupt-checkpoint": Case(
        "`ckpt_path=` a checkpoint cut in half", truncated_checkpoint, "is not a readable checkpoint"
    ),
    "other-widths": Case(
        "`ckpt_path=` a checkpoint of `model.g_width=8`, resumed with `model.g_width=16`",
        lambda p: [f"ckpt_path={p.run / 'checkpoints' / 'last.ckpt'}", "model.g_width=16"],
        "was written by a different model: g_width=8 there but 16 here",
    ),
    "conditional-gan-checkpoint": Case(
        "`ckpt_path=` a conditional GAN's checkpoint (`num_classes=10`) given to the DCGAN",
        lambda p: [checkpoint_copy(p, lambda c: c["hyper_parameters"].update(num_classes=10))],
        "num_classes=10 there but None here",
    ),
    "unknown-key": Case(
        "`model.lrr=1e-3` (no such key)", lambda p: ["model.lrr=1e-3"], "Could not override 'model.lrr'"
    ),
    "unknown-option": Case(
        "`trainer=gpuu` (no such option)", lambda p: ["trainer=gpuu"], "Could not find 'trainer/gpuu'"
    ),
}


def test_an_output_folder_that_cannot_be_made_is_refused_before_hydra_makes_it(tmp_path):
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    result = run_train("experiment=smoke", f"output_root={a_file / 'outputs'}", check=False)
    assert result.returncode == 1
    assert f"cannot be made: {a_file} is a file, not a folder. Point output_root at a folder" in result.stderr
    assert "Traceback" not in result.stderr and a_file.read_text() == "not a folder"


@pytest.fixture(scope="module")
def earlier_run(mnist_root, tmp_path_factory) -> Path:
    """A real run with checkpoints (tiny networks): what bad input must leave alone."""
    folder = tmp_path_factory.mktemp("earlier")
    train(compose_config(*TINY, f"data.root={mnist_root}", output_dir=str(folder)))
    return folder


def fingerprint(folder: Path) -> dict:
    return {
        p.relative_to(folder): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def message_for(case: Case, place: Place) -> str:
    """What train.py says about this bad input (the same paragraph it prints)."""
    overrides = [*TINY, f"data.root={place.mnist}", *case.overrides(place)]
    try:
        train(compose_config(*overrides, output_dir=str(place.tmp / "new-run")))
    except (UserFacingError, HydraException) as err:
        return str(err)
    raise AssertionError(f"{case.what} was accepted")


@pytest.mark.parametrize("name", CASES)
def test_bad_input_is_refused_before_training_with_a_clear_message(
    name, earlier_run, mnist_root, tmp_path, monkeypatch
):
    before = fingerprint(earlier_run)
    message = message_for(CASES[name], Place(tmp_path, mnist_root, earlier_run, monkeypatch))
    assert CASES[name].expected in message
    assert fingerprint(earlier_run) == before
    assert not (tmp_path / "new-run" / "checkpoints").exists() and not (tmp_path / "new-run" / "samples").exists()


def robustness_doc(rows: list[tuple[str, str]]) -> str:
    lines = [
        "# Bad input and what train.py says",
        "",
        "Generated by `tests/test_validation.py` from the real messages (`UPDATE_DOCS=1 pytest tests/test_validation.py`",
        "rewrites it). Each is printed as `Error: <message>` with exit status 1, before any training starts; earlier",
        "runs and their checkpoints are left as they were. `<tmp>` stands for the folder the test used.",
        "",
        "| bad input | message |",
        "| --- | --- |",
        *(f"| {what} | {message.replace('|', '/')} |" for what, message in rows),
    ]
    return "\n".join(lines) + "\n"


def test_robustness_doc_lists_every_case_and_its_message(earlier_run, mnist_root, tmp_path, monkeypatch):
    rows = []
    for name, case in CASES.items():
        place = Place(tmp_path / name, mnist_root, earlier_run, monkeypatch)
        place.tmp.mkdir()
        with monkeypatch.context() as patch:
            place.monkeypatch = patch
            message = message_for(case, place)
        for path, placeholder in (
            (place.tmp, "<tmp>"),
            (earlier_run, "<earlier run>"),
            (mnist_root, "<mnist>"),
            (REPO, "<repo>"),
        ):
            message = message.replace(str(path), placeholder)
        rows.append((case.what, " ".join(message.split())))  # Hydra's messages have line breaks and tabs
    text = robustness_doc(rows)
    if os.environ.get("UPDATE_DOCS") == "1":
        DOC.parent.mkdir(exist_ok=True)
        DOC.write_text(text)
    assert DOC.is_file() and DOC.read_text() == text, (
        "docs/robustness.md is stale: UPDATE_DOCS=1 pytest tests/test_validation.py"
    )


def test_resume_may_change_the_learning_rates_and_tricks(earlier_run):
    checkpoint = earlier_run / "checkpoints" / "last.ckpt"
    saved = torch.load(checkpoint, weights_only=True)["hyper_parameters"]
    check_checkpoint(str(checkpoint), {**saved, "lr": 1e-5, "lr_g": 1e-5, "lr_d": 1e-5, "d_dropout": 0.0})  # accepted
    with pytest.raises(BadInput, match="latent_dim=100 there but 64 here"):
        check_checkpoint(str(checkpoint), {**saved, "latent_dim": 64})


def test_train_py_prints_one_paragraph_and_leaves_the_earlier_run_alone(earlier_run, mnist_root):
    before = fingerprint(earlier_run)
    result = run_train("model.lr=-2e-4", f"data.root={mnist_root}", f"output_root={earlier_run}", check=False)
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()  # no traceback, no log lines: the paragraph alone
    assert line.startswith("Error: model.lr must be a positive number, got -0.0002.")
    after = fingerprint(earlier_run)
    assert {path: after[path] for path in before} == before  # beside it: only the new run's .hydra/ and log
    assert not list(earlier_run.glob("runs/*/checkpoints"))


def test_train_py_names_an_unknown_key_and_how_to_add_one(mnist_root, tmp_path):
    result = run_train(
        "model.lrr=1e-3",
        f"data.root={mnist_root}",
        f"output_root={tmp_path}",
        check=False,
        env={"HYDRA_FULL_ERROR": "0"},
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "Could not override 'model.lrr'" in result.stderr and "+model.lrr=" in result.stderr
    assert not tmp_path.joinpath("runs").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_train_py_on_a_machine_without_gpu_refuses_trainer_gpu(mnist_root, tmp_path):
    result = run_train("trainer=gpu", f"data.root={mnist_root}", f"output_root={tmp_path}", check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "trainer.accelerator=gpu asks for a GPU, but PyTorch finds none" in result.stderr
