"""Bad input gets one clear paragraph from every entry point, before anything is built, and leaves earlier runs as
they were (dcgan/schema.py, dcgan/kinds.py, dcgan/cli.py).

Every key of every entry point's config is declared in its schema or, in a section Hydra builds, in its class's
constructor, and each one, given its kind's value out of the domain, is refused naming it (checked in this
process, key by key). The walk then runs the entry points
themselves as a user would: one key of each kind of value with its bad value, every required key left out, the
rules across keys, what this machine cannot do, amounts larger than what exists, Hydra's plugin settings, bad
files, and what Hydra refuses. Every case of the walk is a row of docs/robustness.md, which the last test checks
against the real messages (`UPDATE_DOCS=1 pytest tests/test_validation.py` rewrites it).
"""

import copy
import hashlib
import os
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf
from pydantic import BaseModel
from torchvision.datasets import MNIST

from dcgan import checkpoints, data, kinds, machine, metrics, schema
from dcgan.cli import annotations, at, check_values, example, field
from dcgan.data import MNIST_FILES
from dcgan.errors import BadInput, UserFacingError
from tests.helpers import CONF, REPO, TINY, load_checkpoint, run_here, run_script, run_train

DOC = REPO / "docs" / "robustness.md"
UNREACHABLE = "http://127.0.0.1:9/"  # the discard port: nothing listens, connections are refused
SCRIPTS = {"train": "config", "generate": "generate", "evaluate": "evaluate", "export": "export", "app": "app"}
SCHEMAS = {"train": schema.Train, "generate": schema.Generate, "evaluate": schema.Evaluate, "export": schema.Export}
SCHEMAS["app"] = schema.App
# train.py's every option of every group (trainer=ddp has keys the default composition lacks).
OPTIONS = {
    "train": [
        [],
        *(
            [f"{group.name}={option.stem}"]
            for group in sorted(CONF.iterdir())
            if group.is_dir() and group.name != "hydra"
            for option in sorted(group.glob("*.yaml"))
        ),
    ]
}


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
    """A command line of `entry` that is right in every key, for a case to spoil one key of (train.py's keeps
    every callback, so that the walk reaches their keys)."""
    common = [f"data.root={place.mnist}", f"classifier_path={place.tmp / 'classifier.pt'}"]
    return {
        "train": ["experiment=smoke", *common, f"output_root={place.tmp / 'outputs'}"],
        "generate": [f"ckpt_path={place.ckpt()}", f"output={place.tmp / 'samples.png'}"],
        "evaluate": ["real=true", *common],
        "export": [f"ckpt_path={place.ckpt()}", f"output_dir={place.tmp / 'export'}", *common],
        "app": [f"ckpt_path={place.ckpt()}"],
    }[entry]


def composed(entry: str, overrides: list[str]) -> dict:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(SCRIPTS[entry], overrides=overrides, return_hydra_config=False)
    return OmegaConf.to_container(cfg, resolve=False)


def leaf_keys(config: dict, prefix: str = "") -> list[str]:
    keys = []
    for key, value in config.items():
        if isinstance(value, dict) and value and "_target_" not in key:
            keys += leaf_keys(value, f"{prefix}{key}.")
        else:
            keys.append(prefix + key)
    return keys


def parsed(key: str, text: str):
    """`text` as Hydra reads it from the command line."""
    value = OverridesParser.create().parse_override(f"{key}={text}").value()
    return OmegaConf.to_container(OmegaConf.create({"v": value}))["v"]


@pytest.mark.parametrize("entry", SCRIPTS)
def test_every_key_of_every_entry_points_config_is_declared_in_its_schema(entry):
    """Every option of the groups too: a key conf/ has that neither the schema nor the built class's constructor
    declares, or one they require that conf/ lacks, fails here."""
    for options in OPTIONS.get(entry, [[]]):
        config = composed(entry, options)
        undeclared = [key for key in leaf_keys(config) if kinds.attempt(field, SCHEMAS[entry], key, config) is None]
        assert not undeclared, f"{entry} {options}: declare these in dcgan/schema.py or the constructor: {undeclared}"
        lacking = missing(SCHEMAS[entry], config)
        assert not lacking, f"{entry} {options}: conf/ lacks {lacking}"


def missing(schema_class, config: dict, prefix: str = "") -> list[str]:
    """The keys `schema_class`, or a built section's constructor, requires that `config` lacks."""
    found = []
    for name, declared in schema_class.model_fields.items():
        key = declared.alias or name
        if key not in config:
            found += [prefix + key] if declared.is_required() else []
        elif isinstance(config[key], dict):
            many = typing.get_origin(declared.annotation) is dict  # callbacks.<name>: a section each
            for name, value in config[key].items() if many else [(None, config[key])]:
                where = f"{prefix}{key}.{name}." if many else f"{prefix}{key}."
                if isinstance(value, dict):
                    inner = schema_of(declared, value)
                    found += missing(inner, value, where) if inner else []
    return found


def schema_of(declared, section: dict):
    """The schema of a section declared as `declared`: its own class, or its built class's constructor's."""
    inner = annotations(declared.annotation, declared.metadata)
    if (built := next((a for a in inner if isinstance(a, schema.Built)), None)) and "_target_" in section:
        return schema.arguments(section["_target_"], built.passed)
    return next((a for a in inner if isinstance(a, type) and issubclass(a, BaseModel)), None)


def every_key() -> dict[tuple[str, str], list[str]]:
    """(entry, key) -> the first options whose composition has the key."""
    keys = {}
    for entry in SCRIPTS:
        for options in OPTIONS.get(entry, [[]]):
            for key in leaf_keys(composed(entry, options)):
                keys.setdefault((entry, key), options)
    return {entry_key: options for entry_key, options in sorted(keys.items()) if not entry_key[1].endswith("_target_")}


KEYS = every_key()

# A value out of the domain of each kind, found by the example the kind gives (dcgan/kinds.py, and the kinds
# declared where they are used). A kind whose example is not here fails every test of this file, saying so.
OUT_OF_DOMAIN = {
    "8": "0", "2000": "-1", "42": "-1", "true": "maybe", "0.3": "1.5", "2e-4": "0", "0.1": "-1", "name": "''",
    "[0.5,0.999]": "[0.5,1.5]", "[0.8,1.0]": "[1.0,0.8]", "$HOME/dcgan-outputs": "/proc/dcgan", "o.png": "/proc/x.png",
    "o.json": "/proc/x.json", "5000": "60001", "10000": "1", "~/.cache/dcgan-mnist/mnist_classifier.pt": "/proc/c.pt",
    "outputs/runs/<run>/checkpoints/last.ckpt": "/nowhere.ckpt", "[a.ckpt]": "/nowhere.ckpt", "../shared/data": "/proc/mnist",
    "outputs/runs/<run>": "/nowhere", "cpu": "gpu0", "auto": "nonsense", "dcgan.module.DCGAN": "nowhere.Nothing",
    "10": "7", "200": "1", "1": "-2", "-1": "-2", "2": "0", "bf16-mixed": "nonsense", "00:00:30:00": "30min",
    "1000": "3", "0.25": "0", "[{_target_:dcgan.checkpoints.AtomicCheckpointIO}]": "[5]", "v1": "[1,2]",
    "[7]": "[12]", "interpolate": "nonsense", "12": "1", "[safetensors,onnx]": "[onnx,tflite]", "7860": "0",
    "4": "0", "600": "0", "0.5": "2", "minimize": "down",
}  # fmt: skip


def out_of_domain(entry: str, key: str, values: dict) -> str:
    kind = example(SCHEMAS[entry], key, values)
    assert kind in OUT_OF_DOMAIN, f"{entry}.py {key}: give its kind (example {kind}) a value in OUT_OF_DOMAIN"
    return OUT_OF_DOMAIN[kind]


@pytest.fixture(scope="module")
def right(tiny_run, mnist_root, tmp_path_factory) -> Callable[[str, tuple], dict]:
    """The resolved config of a command line of `entry` right in every key, with `options`: made once per
    module, each caller gets a copy to spoil."""
    place, made = Place(tmp_path_factory.mktemp("right"), mnist_root, tiny_run, None), {}

    def values(entry: str, options: tuple = ()) -> dict:
        if (entry, options) not in made:
            made[entry, options] = resolved(entry, [*valid_args(entry, place), *options])
            check_values(made[entry, options], SCHEMAS[entry])  # the command line the cases start from is right
        return copy.deepcopy(made[entry, options])

    return values


@pytest.mark.parametrize("entry, key", KEYS)
def test_each_key_given_its_kinds_bad_value_is_refused_naming_it(entry, key, right):
    options = tuple(KEYS[entry, key]) + (("trainer.accelerator=cpu",) if KEYS[entry, key] else ())
    values = right(entry, options)
    set_at(values, key, parsed(key, out_of_domain(entry, key, values)))
    with pytest.raises(UserFacingError) as refused:  # BadInput, or a checkpoint's own CheckpointError
        check_values(values, SCHEMAS[entry])
    assert str(refused.value).startswith(f"{key}="), str(refused.value)


def set_at(values: dict, key: str, value) -> None:
    *parents, leaf = key.split(".")
    (at(values, ".".join(parents)) if parents else values)[leaf] = value


def resolved(entry: str, args: list[str]) -> dict:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(SCRIPTS[entry], overrides=[*args, *(["output_dir=/tmp"] if entry == "train" else [])])
    return OmegaConf.to_container(cfg, resolve=True)


PROBES = (kinds.writable_folder, kinds.writable_file, checkpoints.readable_checkpoint, metrics.classifier_file)
PROBES += (data.mnist_root, schema.run_folder, checkpoints.checkpoints_or_runs)


@pytest.mark.parametrize("entry", SCRIPTS)
def test_each_keys_example_is_in_its_domain(entry, right):
    """What a refusal offers as the fix works: each key's example passes the schema (not a path's, which names a
    place on the reader's machine)."""
    for key in leaf_keys(right(entry)):
        declared = field(SCHEMAS[entry], key, right(entry))
        if any(getattr(part, "func", None) in PROBES for part in annotations(declared.annotation, declared.metadata)):
            continue
        values = right(entry)
        set_at(values, key, parsed(key, example(SCHEMAS[entry], key, values)))
        try:
            check_values(values, SCHEMAS[entry])
        except BadInput as err:
            assert not str(err).startswith(f"{key}="), str(err)


def invoke(entry: str, args: list[str], place: Place, capsys) -> tuple[int, str]:
    """`python <entry>.py <args>` in this process: its exit status and what it printed on stderr."""
    place.monkeypatch.chdir(REPO)
    place.monkeypatch.setattr(schema, "available_memory", lambda: 16 * 2**30)  # the same message on every machine
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
    """One key of each kind of value with that kind's bad value, and every required key left out."""
    cases = []
    for entry, schema_class in SCHEMAS.items():
        seen = set()
        config = composed(entry, [])
        for key in leaf_keys(config):
            if key.endswith("_target_") and key != "model._target_":
                continue
            kind = example(schema_class, key, config)  # each kind gives its own
            if kind in seen:
                continue
            seen.add(kind)
            override = f"{key}={out_of_domain(entry, key, config)}"
            cases.append(Case(entry, f"`{override}`", spoiled(entry, key, override), key))
        for key in required_keys(entry):
            args = lambda p, entry=entry, key=key: [a for a in valid_args(entry, p) if not a.startswith(f"{key}=")]  # noqa: E731
            cases.append(Case(entry, f"`{key}` left out", args, f"{key} is required: give it, e.g. {key}="))
    return cases


def spoiled(entry: str, key: str, override: str) -> Callable[[Place], list[str]]:
    return lambda p: [*(a for a in valid_args(entry, p) if not a.startswith(f"{key}=")), override]


def required_keys(entry: str) -> list[str]:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(SCRIPTS[entry])
    return [key for key in leaf_keys(OmegaConf.to_container(cfg)) if OmegaConf.is_missing(cfg, key)]


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
        flags = [m for m in made if m == "-m"]
        return flags + tiny + [a for m in made if m != "-m" for a in (m if isinstance(m, list) else [m])]

    return args


def with_args(entry: str, *extra: str | Callable[[Place], str]) -> Callable[[Place], list[str]]:
    return lambda p: [*valid_args(entry, p), *(e(p) if callable(e) else e for e in extra)]


def a_file(place: Place) -> Path:
    (place.tmp / "a-file").write_text("not a folder")
    return place.tmp / "a-file"


def format_2(checkpoint: dict) -> None:
    checkpoint["dcgan_format"] = 2


def sweep(*overrides: str) -> Callable[[Place], list[str]]:
    return train_with("-m", *overrides, "model.lr=1e-3,2e-3")


# The rules across keys, what this machine cannot do, amounts larger than what exists, Hydra's plugins, bad files,
# and what Hydra refuses (each of its own errors once: they are Hydra's parser's, the same for every key).
HAND_PICKED = [
    Case("train", "`trainer.limit_train_batches=0.0001` (a fraction of less than one batch)",
         train_with("trainer.limit_train_batches=0.0001"), "trainer.limit_train_batches=0.0001 keeps 0 of them"),
    Case("train", "`trainer=ddp trainer.accelerator=cpu trainer.devices=4 data.batch_size=20000` (no batch per rank)",
         train_with("trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=4", "data.batch_size=20000"),
         "each of the 4 rank(s) has 15000 training digits, 0 full batch(es)"),
    Case("train", "`model=cgan model.num_clusters=45`", train_with("model=cgan", "model.num_clusters=45"),
         "model.num_clusters=45 cannot work with model.num_digits=10"),
    Case("train", "`model.num_clusters=null model.num_digits=10` (the digits alone)",
         train_with("model.num_clusters=null", "model.num_digits=10"), "model.num_digits=10 needs model.num_clusters"),
    Case("train", "`trainer=ddp trainer.accelerator=cpu trainer.sync_batchnorm=true`",
         train_with("trainer=ddp", "trainer.accelerator=cpu", "trainer.sync_batchnorm=true"),
         "SyncBatchNorm does not run on the CPU"),
    # What this machine cannot do.
    Case("train", "`trainer=gpu` on a machine without a GPU", train_with("trainer=gpu"),
         "trainer.accelerator=gpu cannot be used: this machine has none"),
    Case("generate", "`device=cuda` on a machine without a GPU", with_args("generate", "device=cuda"),
         "device=cuda cannot be used: it asks for GPU 0, and PyTorch finds 0 GPU(s)"),
    Case("evaluate", "`device=cuda:1` on a machine without a second GPU", with_args("evaluate", "device=cuda:1"),
         "device=cuda:1 cannot be used: it asks for GPU 1"),
    # Amounts larger than what exists: refused at once, not worked on and then reported as done.
    Case("train", "`trainer.limit_train_batches=5000` (an epoch has 1875)",
         train_with("trainer.limit_train_batches=5000", "data.batch_size=32"),
         "trainer.limit_train_batches=5000 asks for more batches than an epoch has"),
    Case("evaluate", "`real=true num_samples=70000` (MNIST has 60,000 training digits)",
         with_args("evaluate", "num_samples=70000"), "num_samples=70000 cannot work"),
    Case("export", "`num_samples=70000`", with_args("export", "num_samples=70000"), "num_samples=70000 cannot work"),
    Case("train", "`callbacks.quality.num_samples=70000`", with_args("train", "callbacks.quality.num_samples=70000"),
         "callbacks.quality.num_samples=70000 cannot work"),
    # Hydra's plugins, checked before a sweep launches.
    Case("train", "`-m hydra/launcher=joblib hydra.launcher.n_jobs=0`",
         sweep("hydra/launcher=joblib", "hydra.launcher.n_jobs=0"), "hydra.launcher.n_jobs=0 cannot work"),
    Case("train", "`-m hydra/launcher=slurm hydra.launcher.timeout_min=0`",
         sweep("hydra/launcher=slurm", "hydra.launcher.timeout_min=0"), "hydra.launcher.timeout_min=0 cannot work"),
    Case("train", "`-m hydra/sweeper=lr_search hydra.sweeper.n_trials=0`",
         sweep("hydra/sweeper=lr_search", "hydra.sweeper.n_trials=0"), "hydra.sweeper.n_trials=0 cannot work"),
    Case("train", "`-m hydra/sweeper=lr_search hydra.sweeper.max_failure_rate=2`",
         sweep("hydra/sweeper=lr_search", "hydra.sweeper.max_failure_rate=2"),
         "hydra.sweeper.max_failure_rate=2.0 cannot work"),
    # Files.
    Case("train", "`data.root=` a folder that does not exist (offline)",
         train_with(offline, lambda p: f"data.root={p.tmp / 'no-such-folder'}"),
         "does not exist) and could not be downloaded"),
    Case("train", "`train-images-idx3-ubyte` cut to 1000 bytes",
         train_with(lambda p: mnist_copy(p, "train-images-idx3-ubyte", real_file(p, "train-images-idx3-ubyte")[:1000])),
         "is truncated or padded: 1000 bytes instead of 47040016"),
    Case("train", "`train-labels-idx1-ubyte` with another magic number",
         train_with(lambda p: mnist_copy(
             p, "train-labels-idx1-ubyte", b"\x00\x00\x08\x03" + real_file(p, "train-labels-idx1-ubyte")[4:]
         )), "starts with magic number 2051, not 2049"),
    Case("train", "`ckpt_path=` a checkpoint cut in half", train_with(lambda p: f"ckpt_path={truncated_checkpoint(p)}"),
         "is not a readable checkpoint"),
    Case("train", "`ckpt_path=` a checkpoint of `model.g_width=8`, resumed with `model.g_width=16`",
         train_with(lambda p: f"ckpt_path={p.ckpt()}", "model.g_width=16"),
         "was written by a different model: g_width=8 there but 16 here"),
    Case("generate", "`ckpt_path=` a checkpoint of format 2 (written up to commit fb79f5b)",
         lambda p: [f"ckpt_path={checkpoint_copy(p, format_2)}"], "git checkout 532c631"),
    Case("generate", "`num_samples=` more digits than memory holds", with_args("generate", "num_samples=10000000000"),
         "draws 10,000,000,000 digits at once, about 58,412.6 GiB, and this machine has 16.0 GiB available"),
    Case("generate", "`digits=[7]` for an unconditional model", with_args("generate", "digits=[7]"),
         "digits=[7] needs a conditional GAN"),
    Case("evaluate", "neither `ckpt_path` nor `real=true`", lambda p: [f"data.root={p.mnist}"],
         "evaluate.py needs something to score"),
    Case("evaluate", "`ckpt_path=` a folder without runs", lambda p: ["real=false", f"ckpt_path={p.tmp}"],
         "is a folder without runs"),
    Case("train", "`output_root=` below a file", train_with(lambda p: f"output_root={a_file(p) / 'outputs'}"),
         "is a file, not a folder. Point output_root at a folder"),
    # Hydra's own errors, as one paragraph each.
    Case("train", "`model.lrr=1e-3` (no such key)", train_with("model.lrr=1e-3"),
         "model.lrr is not a key of this config (did you mean model.lr?)"),
    Case("train", "`trainer=gpuu` (no such option)", train_with("trainer=gpuu"),
         "trainer=gpuu is not an option of the config group trainer: use one of cpu, ddp"),
    Case("train", "`+model.lrr=1e-3` (a key the model does not take)", train_with("+model.lrr=1e-3"),
         "model.lrr is not a key of this config (did you mean model.lr?)"),
    Case("train", "`+trainer.profile=simple` (not a Trainer argument)", train_with("+trainer.profile=simple"),
         "trainer.profile is not an argument of pytorch_lightning.Trainer (did you mean trainer.profiler?)"),
    Case("train", "`model.betas=[0.5]` (one value of two)", train_with("model.betas=[0.5]"),
         "model.betas=[0.5] has too few values. Use e.g. model.betas=[0.5,0.999]."),
    Case("train", "`~model.lr` (a required key deleted)", train_with("~model.lr"),
         "model.lr is required: give it, e.g. model.lr="),
    Case("train", "`experiment=seed_repro` (renamed)", train_with("experiment=seed_repro"),
         "experiment=seed_repro was renamed: write experiment=reference_script instead."),
    Case("train", "`callbacks.seed_files.enabled=true` (renamed)", train_with("callbacks.seed_files.enabled=true"),
         "callbacks.seed_files was renamed: write callbacks.reference_files instead."),
    Case("train", "`model.clusters=200` (renamed)", train_with("model.clusters=200"),
         "model.clusters was renamed: write model.num_clusters instead."),
    Case("train", "`+model.num_classes=10` (renamed)", train_with("+model.num_classes=10"),
         "model.num_classes was renamed: write model.num_digits instead."),
    Case("train", "`model.lr=[` (not an override Hydra can read)", train_with("model.lr=["),
         "The command line cannot be read"),
    Case("train", "`data.root=${nowhere}` (an interpolation of nothing)", train_with("data.root=${nowhere}"),
         "data.root=${nowhere} cannot be read: Interpolation key 'nowhere' not found"),
]  # fmt: skip
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
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a machine without a GPU, wherever this runs
    before = fingerprint(tiny_run)
    MESSAGES[name] = refusal(name, Place(tmp_path, mnist_root, tiny_run, monkeypatch), capsys)
    assert fingerprint(tiny_run) == before
    assert not list(tmp_path.glob("outputs/**/checkpoints"))  # nothing was trained


def robustness_doc(rows: list[tuple[str, str, str]]) -> str:
    lines = [
        "# Bad input and what each entry point says",
        "",
        "Generated by `tests/test_validation.py` from the real messages (`UPDATE_DOCS=1 pytest tests/test_validation.py`",
        "rewrites it). Each key is declared in `dcgan/schema.py` or in the constructor of the class its section builds,",
        "and the tests give each key its kind's value out of the domain; this table runs the entry points themselves as",
        "a user would: one key of each kind, every required key left out, the rules across keys, what the machine cannot",
        "do, amounts larger than what exists, Hydra's plugin settings, bad files and what Hydra refuses. Each is printed",
        "as `Error: <message>` on one line with a non-zero exit status and no traceback, before anything is built;",
        "earlier runs and their checkpoints are left as they were. `<tmp>` stands for the folder the test used.",
        "",
        "| script | bad input | message |",
        "| --- | --- | --- |",
        *(f"| {entry}.py | {what} | {message.replace('|', '/')} |" for entry, what, message in rows),
    ]
    return "\n".join(lines) + "\n"


def test_robustness_doc_lists_every_case_and_its_message(tiny_run, mnist_root, tmp_path_factory, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
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


def test_the_memory_a_process_can_have_is_this_machines():
    total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    assert 0 < machine.available_memory() <= total
