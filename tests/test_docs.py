"""Every code block of the README and docs/*.md is run or checked, so that a snippet cannot rot.

A fenced block is `python` (run), `bash` (each command checked without doing its work), or `text`/`yaml`
(output, trees, configs: skipped by kind). A shell command is checked by what it is:
- `python train.py|generate.py|evaluate.py|export.py|app.py <overrides>`: the entry point's config composed
  with the overrides (placeholders such as `<run>` replaced by a real tiny run's paths; each job of a `-m`
  sweep, and the launcher's and sweeper's settings) and validated by its schema and rules, as the entry point
  does before it builds anything. A command meant for a GPU (`trainer=gpu`, `device=cuda`...) is validated with
  torch.cuda reporting 16 GPUs: this checks the config, not the GPU;
- `python -m bench.<tool>` and `python -m dcgan.reports`: their arguments, parsed by the tool's own parser (and
  the train.py overrides a tool takes, validated as above);
- `python -m pytest`: the test files it names exist; `make <target>`: the Makefile has the target (and a
  gpu-check's ARGS parse); `tensorboard`: it is installed beside this python.
Beside the blocks: every commit the docs name exists, every path, link and heading they point to exists, every
picture in docs/images is shown, every dcgan.<module>.<name> they (and pyproject.toml) name exists,
docs/configs.md names every group, option and callback of conf/, and the docs keep to their line budgets.
"""

import argparse
import importlib
import itertools
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep, Transformer
from omegaconf import OmegaConf

from dcgan import schema
from dcgan.cli import check_plugins, check_values
from tests.helpers import CONF, REPO, TINY, compose_config, generator_of, run_here

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
KINDS = {"bash", "python", "text", "yaml"}
FENCE = re.compile(r"^```(\S*)\n(.*?)^```\s*$", re.M | re.S)
DOCS_LINES, README_LINES = 1200, 125  # the docs stay a reference, the README a front page
ENTRY_POINTS = {
    "train.py": ("config", schema.Train),
    "generate.py": ("generate", schema.Generate),
    "evaluate.py": ("evaluate", schema.Evaluate),
    "export.py": ("export", schema.Export),
    "app.py": ("app", schema.App),
}
TOOLS = re.compile(r"bench\.\w+|dcgan\.reports")  # the tools run with python -m, each with its own parser
MAKE_TOOLS = {"gpu-check": "bench.gpu_check"}  # a target whose ARGS are a tool's arguments
GPUS = 16  # what torch.cuda reports while a GPU command is validated
ALL_AT_ONCE = 64  # a sweep of more jobs than this is checked one swept value at a time (Optuna samples anyway)
# The tiny run's architecture: a resume of `<run>` gives the first run's model settings, as docs/faults.md says.
TINY_MODEL = tuple(o for o in TINY if o.startswith("model."))


@dataclass
class Block:
    page: str
    line: int
    kind: str
    text: str

    def __str__(self) -> str:
        return f"{self.page}:{self.line}"


def blocks() -> list[Block]:
    found = []
    for page in PAGES:
        text = page.read_text()
        for match in FENCE.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            found.append(Block(str(page.relative_to(REPO)), line, match[1], match[2]))
    return found


BLOCKS = blocks()


def commands(block: Block) -> list[list[str]]:
    """The block's commands, each as shell words: continued lines joined, comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", block.text)
    joined = re.sub(r"<[^<>\n]*>", lambda m: m[0].replace(" ", "\0"), joined)  # a placeholder is one word
    split = (shlex.split(line, comments=True) for line in joined.splitlines())
    return [[w.replace("\0", " ") for w in words] for words in split if words]


COMMANDS = [
    (f"{block} {' '.join(words)[:60]}", words) for block in BLOCKS if block.kind == "bash" for words in commands(block)
]


def test_every_block_says_its_kind():
    unmarked = [f"{b} ```{b.kind}" for b in BLOCKS if b.kind not in KINDS]
    assert not unmarked, f"mark each block as one of {sorted(KINDS)} (output and trees as text): {unmarked}"


def test_the_docs_stay_a_reference_and_the_readme_a_front_page():
    lines = {str(p.relative_to(REPO)): p.read_text().count("\n") for p in PAGES}
    readme = lines.pop("README.md")
    assert sum(lines.values()) <= DOCS_LINES, f"docs/*.md: {sum(lines.values())} lines, {lines}"
    assert readme <= README_LINES, f"README.md: {readme} lines"


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("commands")


# The places a doc's placeholders stand for, in the order they are replaced.
@pytest.fixture(scope="module")
def places(tiny_run, tiny_cgan_run, tmp_path_factory) -> list[tuple[str, str]]:
    ckpt, cgan_ckpt = tiny_run / "checkpoints" / "last.ckpt", tiny_cgan_run / "checkpoints" / "last.ckpt"
    sweep = tmp_path_factory.mktemp("sweep")
    (sweep / "0" / "checkpoints").mkdir(parents=True)
    shutil.copy(ckpt, sweep / "0" / "checkpoints" / "last.ckpt")
    return [
        ("outputs/runs/<run>/checkpoints/last.ckpt", str(ckpt)),
        ("<a cgan run>/checkpoints/last.ckpt", str(cgan_ckpt)),
        ("outputs/runs/<another run>", str(tiny_run)),
        ("outputs/runs/<run>", str(tiny_run)),
        ("outputs/multirun/<sweep>", str(sweep)),
        ("a.ckpt", str(ckpt)),
        ("b.ckpt", str(ckpt)),
        ("c.ckpt", str(ckpt)),
    ]


def with_places(word: str, places: list[tuple[str, str]]) -> str:
    for placeholder, path in places:
        word = word.replace(placeholder, path)
    if word.startswith("ckpt_path=..."):  # "the checkpoint of the line above"
        word = word.replace("...", places[0][1], 1)
    assert "<" not in word and "..." not in word, f"a placeholder this test does not know: {word}"
    return word


@pytest.mark.parametrize("name, words", COMMANDS, ids=[name for name, _ in COMMANDS])
def test_every_command_in_the_docs_is_one_that_works(name, words, places, scratch, monkeypatch):
    env = 0
    while env < len(words) and re.fullmatch(r"[A-Z_]+=.*", words[env]):
        env += 1  # VAR=value before the command
    words = words[env:]
    monkeypatch.chdir(scratch)  # relative outputs (samples.png, gen/) are probed here, not in the checkout
    program = Path(words[0]).name
    if program in ("python", "python3") and words[1] in ENTRY_POINTS:
        check_entry_point(words[1], [with_places(w, places) for w in words[2:]], scratch, monkeypatch)
    elif program in ("python", "python3") and words[1:3] == ["-m", "pytest"]:
        check_pytest(words[3:])
    elif program in ("python", "python3") and words[1] == "-m" and TOOLS.fullmatch(words[2]):
        check_tool(words[2], [with_places(w, places) for w in words[3:]], monkeypatch)
    elif program == "make":
        check_make(words[1:], monkeypatch)
    elif program == "tensorboard":
        assert (Path(sys.executable).parent / "tensorboard").exists(), "tensorboard is not installed beside python"
    else:
        pytest.fail(f"{name}: no check for this kind of command; add one to tests/test_docs.py")


CHECKED: set[tuple[str, ...]] = set()  # the jobs already validated: two docs may show the same sweep


def check_entry_point(script: str, args: list[str], tmp_path: Path, monkeypatch) -> None:
    config_name, entry_schema = ENTRY_POINTS[script]
    sweep = False
    overrides = []
    words = iter(args)
    for word in words:
        if word in ("-m", "--multirun"):
            sweep = True
        elif word == "--cfg":
            next(words)  # job, hydra or all: prints the config instead of running, which is what is checked
        elif word not in ("--help", "--info"):
            overrides.append(word)
    if script == "train.py":
        resumes = any(o.startswith("ckpt_path=") for o in overrides)
        overrides = [f"output_dir={tmp_path / 'run'}", *(TINY_MODEL if resumes else ()), *overrides]
    for job in jobs(config_name, overrides) if sweep else [overrides]:
        if (config_name, *job) in CHECKED:
            continue
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose(config_name, overrides=job, return_hydra_config=sweep)
            values = OmegaConf.to_container(cfg, resolve=True) if not sweep else resolved_without_hydra(cfg)
        with monkeypatch.context() as machine:
            if wants_gpu(values, job):
                machine.setattr(torch.cuda, "is_available", lambda: True)
                machine.setattr(torch.cuda, "device_count", lambda: GPUS)
            check_values(values, entry_schema)
            if sweep:
                check_plugins(cfg)
        CHECKED.add((config_name, *job))


def resolved_without_hydra(cfg) -> dict:
    values = OmegaConf.to_container(cfg, resolve=False)
    values.pop("hydra")
    return OmegaConf.to_container(OmegaConf.create(values), resolve=True)


def wants_gpu(values: dict, overrides: list[str]) -> bool:
    trainer = values.get("trainer", {})
    return (
        trainer.get("accelerator") in ("gpu", "cuda")
        or bool(trainer.get("sync_batchnorm"))
        or str(values.get("device", "")).startswith("cuda")
        or "hydra/launcher=gpu_jobs" in overrides
    )


def jobs(config_name: str, overrides: list[str]) -> list[list[str]]:
    """The overrides of each job a sweep launches: the command's swept values and its sweeper's `params`, every
    combination when there are few, else each swept value once beside the others' first. Optuna writes a
    choice's value as Hydra's basic sweeper does not: '[0.0,0.99]' becomes the list."""
    fixed, swept = [], {}
    parser = OverridesParser.create()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        plain = [o.input_line for o in parser.parse_overrides(overrides) if not o.is_sweep_override()]
        sweeper = compose(config_name, overrides=plain, return_hydra_config=True).hydra.sweeper
    optuna = "optuna" in sweeper._target_
    lines = [f"{key}={value}" for key, value in (sweeper.get("params") or {}).items()] + overrides
    for override in parser.parse_overrides(lines):
        if not override.is_sweep_override():
            fixed.append(override.input_line)
        elif isinstance(override.value(), IntervalSweep):
            interval = override.value()
            swept[override.get_key_element()] = [str(interval.start), str(interval.end)]
        elif optuna:
            swept[override.get_key_element()] = list(override.sweep_iterator(transformer=Transformer.encode))
        else:
            swept[override.get_key_element()] = list(override.sweep_string_iterator())
    keys = list(swept)
    if np.prod([len(v) for v in swept.values()]) <= ALL_AT_ONCE:
        picks = list(itertools.product(*swept.values()))
    else:
        first = [values[0] for values in swept.values()]
        picks = [first[:i] + [value] + first[i + 1 :] for i, values in enumerate(swept.values()) for value in values]
    return [[*fixed, *(f"{key}={value}" for key, value in zip(keys, pick, strict=True))] for pick in picks]


def check_pytest(args: list[str]) -> None:
    paths = [a for a in args if a.startswith("tests/")]
    missing = [p for p in paths if not (REPO / p.split("::")[0]).exists()]
    assert not missing, f"no such test files: {missing}"
    if "-m" in args:
        marker = args[args.index("-m") + 1].split()[-1]
        assert f'"{marker}:' in (REPO / "pyproject.toml").read_text(), f"no pytest marker {marker}"


class Parsed(Exception):
    """Raised in place of running a tool once its parser has read the arguments."""


def check_tool(module: str, args: list[str], monkeypatch) -> None:
    monkeypatch.setattr(sys, "argv", [f"python -m {module}", *args])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # --device cuda: the arguments, not the GPU
    tool = importlib.import_module(module)
    if hasattr(tool, "parse_args"):  # bench.throughput: its own checks after argparse's, and its variants
        parsed = tool.parse_args()
        for variant in parsed.variants.values():
            values = OmegaConf.to_container(compose_config("experiment=reference_script", *variant), resolve=True)
            check_values(values, schema.Train)
        return
    original = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, *a, **k):
        raise Parsed(original(self, *a, **k))

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    with pytest.raises(Parsed) as parsed:
        tool.main()
    if overrides := getattr(parsed.value.args[0], "overrides", None):  # bench.profile: train.py's overrides
        values = OmegaConf.to_container(compose_config(*overrides), resolve=True)
        with monkeypatch.context() as machine:
            if wants_gpu(values, overrides):
                machine.setattr(torch.cuda, "device_count", lambda: GPUS)
            check_values(values, schema.Train)


def check_make(args: list[str], monkeypatch) -> None:
    targets = set(re.findall(r"^([\w-]+):", (REPO / "Makefile").read_text(), re.M))
    named = [a for a in args if "=" not in a]
    assert named and set(named) <= targets, f"make {' '.join(args)}: the Makefile's targets are {sorted(targets)}"
    for word in args:
        if word.startswith("ARGS=") and named[0] in MAKE_TOOLS:
            check_tool(MAKE_TOOLS[named[0]], shlex.split(word.removeprefix("ARGS=")), monkeypatch)


# The Python blocks: each page's are run where they mean something.
def python_blocks(page: str) -> list[Block]:
    return [b for b in BLOCKS if b.kind == "python" and b.page == page]


def test_every_python_block_has_a_runner():
    runners = {"docs/export.md"}
    orphans = [str(b) for b in BLOCKS if b.kind == "python" and b.page not in runners]
    assert not orphans, f"Python blocks no test runs: {orphans}; run them in tests/test_docs.py"


def test_exports_loading_blocks_draw_what_the_checkpoint_draws(tiny_run, mnist_root, tmp_path, monkeypatch):
    """docs/export.md's copy of MODEL_CARD.md's blocks, run in a real export's folder: the first makes the
    inputs, each other one loads a file and draws."""
    folder, ckpt = tmp_path / "export", tiny_run / "checkpoints" / "last.ckpt"
    run_here("export.py", f"ckpt_path={ckpt}", f"output_dir={folder}", "num_samples=0", f"data.root={mnist_root}")
    inputs, *loaders = [b for b in python_blocks("docs/export.md") if "reference_files/" not in b.text]
    assert len(loaders) == 3 and "z =" in inputs.text
    monkeypatch.chdir(folder)
    monkeypatch.syspath_prepend(str(folder))  # generator.py
    monkeypatch.delitem(sys.modules, "generator", raising=False)
    drawing = generator_of(ckpt)
    for block in loaders:
        scope = {}
        exec(compile(inputs.text, str(inputs), "exec"), scope)
        exec(compile(block.text, str(block), "exec"), scope)
        with torch.no_grad():
            expected = drawing(torch.from_numpy(scope["z"])).numpy()
        np.testing.assert_allclose(scope["images"], expected, atol=1e-4, err_msg=str(block))
    sys.modules.pop("generator", None)


def test_the_reference_files_block_loads_a_reference_script_runs_pth_files(mnist_root, tmp_path, monkeypatch):
    """docs/export.md's `.pth` block, in the folder of an experiment=reference_script run cut to 5 one-step epochs."""
    from dcgan.training import train

    (block,) = [b for b in python_blocks("docs/export.md") if "reference_files/" in b.text]
    quiet = ("quality", "report", "progress_bar", "model_summary", "sample_grid")
    overrides = ["trainer.limit_train_batches=1", "data.batch_size=16", *(f"callbacks.{c}=null" for c in quiet)]
    overrides += ["trainer.max_epochs=5", f"data.root={mnist_root}"]
    train(compose_config("experiment=reference_script", *overrides, output_dir=str(tmp_path)))
    monkeypatch.chdir(tmp_path)
    scope = {}
    exec(compile(block.text, str(block), "exec"), scope)
    assert scope["G"](torch.randn(2, 100)).shape == (2, 1, 28, 28)


# Beside the blocks: what the docs name.
COMMIT = re.compile(r"\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*[0-9])[0-9a-f]{7,40}\b")


def git(*args: str, stdin: str = "") -> str:
    return subprocess.run(["git", *args], cwd=REPO, input=stdin, capture_output=True, text=True).stdout


def test_every_commit_the_docs_name_exists():
    if git("rev-parse", "--is-shallow-repository").strip() != "false":
        pytest.skip("not a git checkout with its whole history")
    named = sorted({c for page in PAGES for c in COMMIT.findall(page.read_text())})
    answer = git("cat-file", "--batch-check", stdin="".join(f"{c}^{{commit}}\n" for c in named))
    missing = [line.split()[0] for line in answer.splitlines() if line.endswith("missing")]
    assert named and not missing, f"commits the docs name that this repository lacks: {missing}"


REPO_PATH = re.compile(r"`((?:dcgan|bench|tests|conf|docs)/[\w./-]*)`")
DOTTED = re.compile(r"\b(dcgan\.[a-z_]+)\.([A-Za-z_]+)\b")  # dcgan.<module>.<name>
LINK = re.compile(r"\]\(([^)#\s]*)(?:#([^)\s]*))?\)")


def anchors(page: Path) -> set[str]:
    """GitHub's anchors of a page's headings."""
    headings = re.findall(r"^#+ (.+)$", FENCE.sub("", page.read_text()), re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_every_path_and_link_the_docs_name_exists():
    missing = []
    for page in PAGES:
        text = page.read_text()
        for path in REPO_PATH.findall(text):
            if not (REPO / path).exists():
                missing.append(f"{page.name}: `{path}`")
        for target, anchor in LINK.findall(text):
            if target.startswith("http"):
                continue
            linked = (page.parent / target).resolve() if target else page
            if not linked.exists():
                missing.append(f"{page.name}: ({target})")
            elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
                missing.append(f"{page.name}: ({target}#{anchor})")
    for page in [*PAGES, REPO / "pyproject.toml"]:  # its comments name code too
        for module, name in DOTTED.findall(page.read_text()):
            if not hasattr(importlib.import_module(module), name):
                missing.append(f"{page.name}: {module}.{name}")
    assert not missing, f"named in the docs, not in the repository: {missing}"
    shown = "".join(page.read_text() for page in PAGES)
    unshown = [p.name for p in sorted((REPO / "docs" / "images").iterdir()) if p.name not in shown]
    assert not unshown, f"docs/images holds pictures no page shows: {unshown} (git keeps them)"


def test_configs_page_names_every_group_option_and_callback():
    page = (REPO / "docs" / "configs.md").read_text()
    unnamed = []
    for group in sorted({p.parent for p in CONF.rglob("*.yaml")} - {CONF}):
        name = str(group.relative_to(CONF))
        unnamed += [] if f"`{name}/`" in page else [f"{name}/"]
        unnamed += [f"{name}={o.stem}" for o in sorted(group.glob("*.yaml")) if f"`{o.stem}`" not in page]
    callbacks = OmegaConf.load(CONF / "callbacks" / "default.yaml")
    unnamed += [f"callbacks.{c}" for c in callbacks if f"`{c}`" not in page]
    top = [k for k in OmegaConf.load(CONF / "config.yaml") if k not in ("defaults", "hydra")]
    unnamed += [k for k in top if f"`{k}`" not in page]
    assert not unnamed, f"docs/configs.md does not name: {unnamed}"
