"""Bad input gets one clear paragraph from every entry point, before anything is built, and leaves earlier runs as
they were (dcgan/validation.py, dcgan/cli.py).

The walk tries every key of every entry point's config with a value out of its domain, and every required key
left out, as a user would type them (the entry point's own main, in this process); then the combinations that
are each allowed alone but leave no work, and the bad files. Every case is a row of docs/robustness.md, which
the last test checks against the real messages (`UPDATE_DOCS=1 pytest tests/test_validation.py` rewrites it).
"""

import hashlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from torchvision.datasets import MNIST

from dcgan.data import MNIST_FILES
from dcgan.validation import DOMAINS, PathDomain
from tests.helpers import CONF, REPO, TINY, load_checkpoint, run_here, run_script, run_train

DOC = REPO / "docs" / "robustness.md"
UNREACHABLE = "http://127.0.0.1:9/"  # the discard port: nothing listens, connections are refused
SCRIPTS = {"train": "config", "generate": "generate", "evaluate": "evaluate", "export": "export", "app": "app"}
# Options whose keys the default composition lacks: the walk composes them to reach those keys.
OPTIONS = {"trainer.strategy._target_": ["trainer=ddp"], "trainer.sync_batchnorm": ["trainer=ddp"]}


@dataclass
class Place:
    """Where a case runs: a scratch folder, the real MNIST, an earlier run with its checkpoints, and a monkeypatch."""

    tmp: Path
    mnist: str
    run: Path
    monkeypatch: pytest.MonkeyPatch

    def ckpt(self) -> str:
        return str(self.run / "checkpoints" / "last.ckpt")


def valid_args(entry: str, place: Place) -> list[str]:
    """A command line of `entry` that is right in every key, for the walk to spoil one key of (train.py's keeps
    every callback, so that the walk reaches their keys)."""
    common = [f"data.root={place.mnist}", f"classifier_path={place.tmp / 'classifier.pt'}"]
    return {
        "train": ["experiment=smoke", *common, f"output_root={place.tmp / 'outputs'}"],
        "generate": [f"ckpt_path={place.ckpt()}", f"output={place.tmp / 'samples.png'}"],
        "evaluate": ["real=true", *common],
        "export": [f"ckpt_path={place.ckpt()}", f"output_dir={place.tmp / 'export'}", *common],
        "app": [f"ckpt_path={place.ckpt()}"],
    }[entry]


def invoke(entry: str, args: list[str], place: Place, capsys) -> tuple[int, str]:
    """`python <entry>.py <args>` in this process: its exit status and what it printed on stderr."""
    place.monkeypatch.chdir(REPO)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        run_here(f"{entry}.py", *args)
        raise AssertionError(f"{entry}.py {' '.join(args)} was accepted")
    return exited.value.code, capsys.readouterr().err


@dataclass
class Case:
    entry: str
    what: str  # the bad input, as the table shows it
    args: Callable[[Place], list[str]]  # the command line, from a place
    expected: str  # a part of the message


def walked_cases() -> list[Case]:
    """Every declared key with its domain's bad value, and every required key left out."""
    cases = []
    for entry, domains in DOMAINS.items():
        for key, domain in domains.items():
            override = f"{key}={domain.bad}"
            cases.append(
                Case(
                    entry,
                    f"`{override}`",
                    lambda p, entry=entry, key=key, override=override: [
                        *(a for a in valid_args(entry, p) if not a.startswith(f"{key}=")),
                        *OPTIONS.get(key, []),
                        override,
                    ],
                    key,
                )
            )
        for key in required_keys(entry):
            cases.append(
                Case(
                    entry,
                    f"`{key}` left out",
                    lambda p, entry=entry, key=key: [a for a in valid_args(entry, p) if not a.startswith(f"{key}=")],
                    f"{key} is required: give it, e.g. {key}=",
                )
            )
    return cases


def required_keys(entry: str) -> list[str]:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(SCRIPTS[entry])
    return [key for key in DOMAINS[entry] if OmegaConf.is_missing(cfg, key)]


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


def no_gpu(place: Place) -> list[str]:
    place.monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    place.monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    return []


def offline(place: Place) -> list[str]:
    place.monkeypatch.setattr(MNIST, "mirrors", [UNREACHABLE])
    return []


def checkpoint_copy(place: Place, change: Callable[[dict], None]) -> str:
    checkpoint = load_checkpoint(Path(place.ckpt()))
    change(checkpoint)
    torch.save(checkpoint, place.tmp / "other.ckpt")
    return str(place.tmp / "other.ckpt")


def truncated_checkpoint(place: Place) -> str:
    data = Path(place.ckpt()).read_bytes()
    (place.tmp / "cut.ckpt").write_bytes(data[: len(data) // 2])
    return str(place.tmp / "cut.ckpt")


def train_with(*overrides: str | Callable[[Place], list[str] | str]) -> Callable[[Place], list[str]]:
    """A tiny train.py run's command line and then `overrides` (each a string, or made from the place)."""

    def args(p: Place) -> list[str]:
        made = [o(p) if callable(o) else o for o in overrides]
        tiny = [*TINY, f"data.root={p.mnist}", f"output_root={p.tmp / 'outputs'}"]
        return tiny + [a for m in made for a in (m if isinstance(m, list) else [m])]

    return args


# The combinations that leave no work or cannot run, the files that are wrong, and what Hydra refuses.
HAND_PICKED = [
    Case(
        "train",
        "`data.batch_size=60001` (more than the training set)",
        train_with("data.batch_size=60001"),
        "data.batch_size=60001 leaves no batch to train on",
    ),
    Case(
        "train",
        "`trainer.limit_train_batches=0.0001` (a fraction of less than one batch)",
        train_with("trainer.limit_train_batches=0.0001"),
        "trainer.limit_train_batches=0.0001 keeps 0 of them",
    ),
    Case(
        "train",
        "`trainer=ddp trainer.accelerator=cpu trainer.devices=4 data.batch_size=20000` (no batch per rank)",
        train_with("trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=4", "data.batch_size=20000"),
        "each of the 4 rank(s) has 15000 training digits, 0 full batch(es)",
    ),
    Case(
        "train",
        "`model=cgan model.clusters=45`",
        train_with("model=cgan", "model.clusters=45"),
        "model.clusters=45 cannot work with model.num_classes=10",
    ),
    Case(
        "train",
        "`trainer=gpu` on a machine without a GPU",
        train_with(no_gpu, "trainer=gpu"),
        "asks for a GPU, but PyTorch finds none",
    ),
    Case(
        "train",
        "`trainer=ddp trainer.accelerator=cpu trainer.sync_batchnorm=true`",
        train_with("trainer=ddp", "trainer.accelerator=cpu", "trainer.sync_batchnorm=true"),
        "SyncBatchNorm does not run on the CPU",
    ),
    Case(
        "train",
        "`data.root=` a folder that does not exist (offline)",
        train_with(offline, lambda p: f"data.root={p.tmp / 'no-such-folder'}"),
        "does not exist) and could not be downloaded",
    ),
    Case(
        "train",
        "`train-images-idx3-ubyte` cut to 1000 bytes",
        train_with(lambda p: mnist_copy(p, "train-images-idx3-ubyte", real_file(p, "train-images-idx3-ubyte")[:1000])),
        "is truncated or padded: 1000 bytes instead of 47040016",
    ),
    Case(
        "train",
        "`train-labels-idx1-ubyte` with another magic number",
        train_with(
            lambda p: mnist_copy(
                p, "train-labels-idx1-ubyte", b"\x00\x00\x08\x03" + real_file(p, "train-labels-idx1-ubyte")[4:]
            )
        ),
        "starts with magic number 2051, not 2049",
    ),
    Case(
        "train",
        "`ckpt_path=` a checkpoint cut in half",
        train_with(lambda p: f"ckpt_path={truncated_checkpoint(p)}"),
        "is not a readable checkpoint",
    ),
    Case(
        "train",
        "`ckpt_path=` a checkpoint of `model.g_width=8`, resumed with `model.g_width=16`",
        train_with(lambda p: f"ckpt_path={p.ckpt()}", "model.g_width=16"),
        "was written by a different model: g_width=8 there but 16 here",
    ),
    Case(
        "train",
        "`ckpt_path=` a conditional GAN's checkpoint given to the default",
        train_with(lambda p: f"ckpt_path={checkpoint_copy(p, lambda c: c['hyper_parameters'].update(num_classes=10))}"),
        "num_classes=10 there but null here",
    ),
    Case(
        "generate",
        "`ckpt_path=` a checkpoint of a removed switch (InfoGAN's code)",
        lambda p: [f"ckpt_path={checkpoint_copy(p, removed_switch)}"],
        "git checkout c218713",
    ),
    Case(
        "generate",
        "`digits=[7]` for an unconditional model",
        lambda p: [*valid_args("generate", p), "digits=[7]"],
        "digits=[7] needs a conditional GAN",
    ),
    Case(
        "evaluate",
        "neither `ckpt_path` nor `real=true`",
        lambda p: [f"data.root={p.mnist}"],
        "evaluate.py needs something to score",
    ),
    Case(
        "evaluate",
        "`ckpt_path=` a folder without runs",
        lambda p: ["real=false", f"ckpt_path={p.tmp}"],
        "is a folder without runs",
    ),
    Case(
        "train",
        "`model.lrr=1e-3` (no such key)",
        train_with("model.lrr=1e-3"),
        "model.lrr is not a key of this config (did you mean model.lr?)",
    ),
    Case(
        "train",
        "`trainer=gpuu` (no such option)",
        train_with("trainer=gpuu"),
        "trainer=gpuu is not an option of the config group trainer: use one of cpu, ddp",
    ),
    Case(
        "train",
        "`model.lr=[` (not an override Hydra can read)",
        train_with("model.lr=["),
        "The command line cannot be read",
    ),
    Case(
        "train",
        "`data.root=${nowhere}` (an interpolation of nothing)",
        train_with("data.root=${nowhere}"),
        "data.root=${nowhere} cannot be read: Interpolation key 'nowhere' not found",
    ),
    Case(
        "train",
        "`output_root=` below a file",
        train_with(lambda p: f"output_root={a_file(p) / 'outputs'}"),
        "is a file, not a folder. Point output_root at a folder",
    ),
]


def a_file(place: Place) -> Path:
    (place.tmp / "a-file").write_text("not a folder")
    return place.tmp / "a-file"


def removed_switch(checkpoint: dict) -> None:
    checkpoint["hyper_parameters"]["info_codes"] = 10
    del checkpoint["dcgan_format"]


CASES = {f"{c.entry}: {c.what}": c for c in [*walked_cases(), *HAND_PICKED]}
MESSAGES: dict[str, str] = {}  # what each case printed, for the docs test


def fingerprint(folder: Path) -> dict:
    return {
        p.relative_to(folder): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def refusal(name: str, place: Place, capsys) -> str:
    """Run case `name`; check that it is refused as it should be; return its message."""
    case = CASES[name]
    code, stderr = invoke(case.entry, case.args(place), place, capsys)
    lines = stderr.strip().splitlines()
    assert code != 0 and lines, f"{name}: exit {code}, stderr {stderr!r}"
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "Traceback" not in stderr, f"{name}:\n{stderr}"
    assert case.expected in lines[0], f"{name}: {lines[0]}"
    return lines[0].removeprefix("Error: ")


@pytest.mark.parametrize("name", CASES)
def test_bad_input_gets_one_paragraph_and_leaves_the_earlier_run_alone(
    name, tiny_run, mnist_root, tmp_path, monkeypatch, capsys
):
    before = fingerprint(tiny_run)
    MESSAGES[name] = refusal(name, Place(tmp_path, mnist_root, tiny_run, monkeypatch), capsys)
    assert fingerprint(tiny_run) == before
    assert not list(tmp_path.glob("outputs/runs/*/checkpoints"))  # nothing was trained


@pytest.mark.parametrize("entry", SCRIPTS)
def test_every_key_of_every_entry_points_config_has_a_declared_domain(entry):
    undeclared = set()
    for options in ([], *OPTIONS.values(), ["model=cgan"]):
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose(SCRIPTS[entry], overrides=options if entry == "train" else [])
        flat = OmegaConf.to_container(cfg, resolve=False)
        undeclared |= {key for key in leaf_keys(flat) if key not in DOMAINS[entry]}
    assert not undeclared, f"declare these keys of {entry} in dcgan/validation.py's DOMAINS: {sorted(undeclared)}"


def leaf_keys(config: dict, prefix: str = "") -> list[str]:
    keys = []
    for key, value in config.items():
        if isinstance(value, dict) and value:
            keys += leaf_keys(value, f"{prefix}{key}.")
        else:
            keys.append(prefix + key)
    return keys


@pytest.mark.parametrize("entry, key", [(e, k) for e, domains in DOMAINS.items() for k in domains])
def test_each_domain_takes_its_example(entry, key):
    domain = DOMAINS[entry][key]
    if isinstance(domain, PathDomain):
        return  # a path's example names a place on the reader's machine; the walk tries the real paths
    example = compose_value(key, domain.example)
    assert domain.problem(example) is None, f"{key}={domain.example}: {domain.problem(example)}"


def compose_value(key: str, text: str):
    """`text` as Hydra reads it from the command line."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    value = OverridesParser.create().parse_override(f"{key}={text}").value()
    return OmegaConf.to_container(OmegaConf.create({"v": value}))["v"]


def robustness_doc(rows: list[tuple[str, str, str]]) -> str:
    lines = [
        "# Bad input and what each entry point says",
        "",
        "Generated by `tests/test_validation.py` from the real messages (`UPDATE_DOCS=1 pytest tests/test_validation.py`",
        "rewrites it): every key of every entry point's config with a value out of its domain (`dcgan/validation.py`),",
        "every required key left out, then the combinations that leave no work, bad files and what Hydra refuses.",
        "Each is printed as `Error: <message>` on one line with a non-zero exit status and no traceback, before",
        "anything is built; earlier runs and their checkpoints are left as they were. `<tmp>` stands for the folder",
        "the test used.",
        "",
        "| script | bad input | message |",
        "| --- | --- | --- |",
        *(f"| {entry}.py | {what} | {message.replace('|', '/')} |" for entry, what, message in rows),
    ]
    return "\n".join(lines) + "\n"


def test_robustness_doc_lists_every_case_and_its_message(tiny_run, mnist_root, tmp_path_factory, monkeypatch, capsys):
    rows = []
    for name, case in CASES.items():
        place = Place(tmp_path_factory.mktemp("case"), mnist_root, tiny_run, monkeypatch)
        if name not in MESSAGES:  # this test was run alone
            with monkeypatch.context() as patch:
                place.monkeypatch = patch
                MESSAGES[name] = refusal(name, place, capsys)
        message = MESSAGES[name]
        for path, placeholder in ((tiny_run, "<earlier run>"), (mnist_root, "<mnist>"), (REPO, "<repo>")):
            message = message.replace(str(path), placeholder)
        message = re.sub(r"/tmp/pytest-of-\w+/pytest-\d+/[^/ ]+", "<tmp>", message)
        message = re.sub(r"\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}", "<time>", message)  # a run folder's name
        rows.append((case.entry, case.what, message))
    text = robustness_doc(rows)
    if os.environ.get("UPDATE_DOCS") == "1":
        DOC.write_text(text)
    assert DOC.is_file() and DOC.read_text() == text, (
        "docs/robustness.md is stale: UPDATE_DOCS=1 pytest tests/test_validation.py"
    )


@pytest.mark.slow
def test_a_script_prints_one_paragraph_and_no_traceback_in_a_process_of_its_own(mnist_root, tmp_path):
    """What the walk checks in this process, once as a user sees it: `python generate.py` with nothing given."""
    result = run_train("model.lr=-2e-4", f"data.root={mnist_root}", f"output_root={tmp_path}", check=False)
    assert result.returncode == 1 and result.stderr.startswith("Error: model.lr=-0.0002 cannot work")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    result = run_script("generate.py", check=False, env={"HYDRA_FULL_ERROR": "0"})
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert (
        result.stderr
        == "Error: ckpt_path is required: give it, e.g. ckpt_path=outputs/runs/<run>/checkpoints/last.ckpt.\n"
    )


@pytest.mark.slow
def test_a_genuine_bug_keeps_its_traceback(mnist_root, tmp_path):
    # A callback that is no Lightning callback: Lightning calls its hooks on a config node, and OmegaConf raises.
    # The config was checked before the job: an error of OmegaConf's in the job is the code's, not the user's.
    result = run_train(
        *TINY,
        "+callbacks.broken._target_=builtins.dict",
        f"data.root={mnist_root}",
        f"output_root={tmp_path}",
        check=False,
    )
    assert result.returncode == 1 and "Traceback" in result.stderr and "omegaconf.errors" in result.stderr
