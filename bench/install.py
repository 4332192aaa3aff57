"""How .venv is made (make setup, and make gpu-check's own install), and the folder a GPU machine without a
registry installs from (make wheels).

    python3 bench/install.py setup VENV REQUIREMENTS [PIP_OPTION ...]   # make setup
    python3 bench/install.py check VENV [PIP_OPTION ...]                # make gpu-check: what the check runs
    .venv/bin/python bench/install.py wheels FOLDER MNIST_ROOT           # make wheels, where pip reaches a registry

When the python running `setup` already imports torch, torchvision and pytorch_lightning (a GPU machine's tuned
PyTorch), VENV shares that python's packages and pip installs only the requirements it lacks (or holds at another
version), under constraints that hold torch, torchvision, Lightning, torchmetrics and everything they require at
the machine's versions. Otherwise VENV gets REQUIREMENTS as they are, with its pinned torch. `check` is `setup` of
what make gpu-check runs (check_requirements). Standard library only: it runs first.
"""

import gzip
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import unquote

REQUIREMENTS = Path(__file__).resolve().parents[1] / "requirements.txt"
STACK = ("torch", "torchvision", "pytorch-lightning", "torchmetrics")
# Required newer by pydantic and pytest than many machines hold; pure Python and backward compatible, so a newer
# copy in VENV (which shadows the machine's for this project alone) cannot break the machine's torch.
MAY_BE_NEWER = {"typing-extensions", "packaging"}
# What make gpu-check leaves out of its install. It runs no export, demo page, other launcher or sweeper, or linter;
# and its runs need none of TOO_BIG, whose compiled closure for every python and platform below is far beyond
# wheels/' 64 MiB (docs/benchmarks.md): they draw no pictures (callbacks.report=null), compare with no prdc (which
# requires scikit-learn and scipy), and write TensorBoard's events through tensorboardX (CHECK_ADDS).
NOT_RUN = (
    "hydra-submitit-launcher hydra-optuna-sweeper optuna safetensors onnx onnxscript onnxruntime gradio playwright ruff"
)
TOO_BIG = "tensorboard matplotlib scipy scikit-learn prdc"
# Lightning's TensorBoardLogger writes with it where tensorboard is missing: pure Python, with protobuf.
CHECK_ADDS = ["tensorboardX==2.6.5"]
# make wheels' targets: CPython (not its free-threaded build) on glibc 2.28 or newer, which PyTorch's wheels need.
PYTHONS, ARCHES, GLIBC = ("3.10", "3.11", "3.12", "3.13", "3.14"), ("x86_64", "aarch64"), 28
BUILT_HERE = ["antlr4-python3-runtime"]  # only a source archive on PyPI: built into a pure wheel here
MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(line: str) -> str:
    return canonical(re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", line.strip()).group())


def requirement_lines(path: Path) -> list[str]:
    lines = (line.strip() for line in path.read_text().splitlines())
    return [line for line in lines if line and not line.startswith(("#", "-"))]


def check_requirements() -> list[str]:
    """What make gpu-check installs: requirements.txt less what it leaves out, with CHECK_ADDS."""
    left_out = {canonical(name) for name in f"{NOT_RUN} {TOO_BIG}".split()}
    return [line for line in requirement_lines(REQUIREMENTS) if requirement_name(line) not in left_out] + CHECK_ADDS


def installed() -> dict[str, importlib.metadata.Distribution]:
    """Every distribution this python imports from, by name: the first on sys.path, as import finds it."""
    found = {}
    for dist in importlib.metadata.distributions():
        if dist.metadata["Name"]:
            found.setdefault(canonical(dist.metadata["Name"]), dist)
    return found


def stack_closure(dists: dict) -> dict[str, str]:
    """STACK and every installed package it requires, recursively: name -> the machine's version."""
    held, todo = {}, [name for name in STACK if name in dists]
    while todo:
        name = todo.pop()
        if name in held:
            continue
        held[name] = dists[name].version
        todo += [requirement_name(r) for r in dists[name].requires or [] if "extra ==" not in r]
        todo = [n for n in todo if n in dists]
    return held


def met(line: str, dists: dict, held: dict) -> bool:
    """Whether this python meets a requirement: installed, at its pinned version unless the machine's stack holds it."""
    name, pin = requirement_name(line), line.partition("==")[2].split(";")[0].strip()
    return name in dists and (not pin or name in held or dists[name].version == pin)


def setup(venv: Path, lines: list[str], pip_options: list[str]) -> None:
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", *pip_options]
    if not all(importlib.util.find_spec(m) for m in ("torch", "torchvision", "pytorch_lightning")):
        pinned = next((line for line in lines if requirement_name(line) == "torch"), "torch")
        if "--no-index" in pip_options:
            sys.exit(
                f"Error: {sys.executable} has no torch, torchvision and pytorch_lightning of its own, and pip may not "
                f"reach a registry ({' '.join(pip_options)}) for {pinned}: run make setup with PYTHON3=<a python "
                "that imports them>, or without --no-index where pip reaches a registry."
            )
        print(f"make setup: {sys.executable} has no torch of its own: .venv gets {pinned} (about 5 GB)", flush=True)
        run([sys.executable, "-m", "venv", str(venv)])
        run(pip[:5] + ["--upgrade", "pip", *pip_options])
        (venv / "requirements.txt").write_text("".join(f"{line}\n" for line in lines))
        run([*pip, "-r", str(venv / "requirements.txt")])
        return
    dists = installed()
    # A version outside PEP 440 (some distributions' own builds) would make pip refuse the whole file: left out.
    held = {
        name: version
        for name, version in stack_closure(dists).items()
        if name not in MAY_BE_NEWER
        and re.fullmatch(r"\d+(\.\d+)*((a|b|rc)\d+)?(\.post\d+)?(\.dev\d+)?(\+[\w.]+)?", version)
    }
    lacking = [line for line in lines if not met(line, dists, held)]
    torch = importlib.util.find_spec("torch").submodule_search_locations[0]
    print(
        f"make setup: the machine's torch {dists['torch'].version} ({Path(torch).parent}), its torchvision and "
        f"Lightning: .venv shares them and installs the {len(lacking)} requirements this python lacks, holding "
        f"{len(held)} packages at the machine's versions ({venv / 'machine-constraints.txt'})",
        flush=True,
    )
    # A python that is itself a venv shares its packages through the .pth alone: --system-site-packages would
    # add its base python's too. Its own pip installs into VENV; a VENV pip (before Python 3.12, with its own old
    # setuptools) only where it has none, since VENV's packages shadow the machine's.
    shared = ["--system-site-packages"] if sys.prefix == sys.base_prefix else []
    run([sys.executable, "-m", "venv", "--without-pip", *shared, str(venv)])
    # Every folder this python imports from, after VENV's own: what a venv made from a venv would not see.
    site = venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    (site / "machine.pth").write_text("".join(f"{p}\n" for p in sys.path[1:] if os.path.isabs(p) and os.path.isdir(p)))
    if importlib.util.find_spec("pip") is None:
        run([str(venv / "bin" / "python"), "-m", "ensurepip", "--default-pip"])
    (venv / "machine-constraints.txt").write_text("".join(f"{n}=={v}\n" for n, v in sorted(held.items())))
    (venv / "requirements-lacking.txt").write_text("".join(f"{line}\n" for line in lacking))
    if (
        lacking
        and subprocess.run(
            [*pip, "-c", f"{venv}/machine-constraints.txt", "-r", f"{venv}/requirements-lacking.txt"]
        ).returncode
    ):
        sys.exit(
            f"Error: pip could not install what this python lacks ({venv}/requirements-lacking.txt); its message "
            "above names the package. A version it found nowhere: give PIP_OPTIONS that reach one (a registry, or "
            "--find-links to a folder that holds it). One that conflicts with what this python's torch runs on, held "
            f"at the machine's versions in {venv}/machine-constraints.txt: give make setup a PYTHON3 whose packages fit."
        )


def manylinux(arch: str) -> list[str]:
    """pip's --platform options for a glibc of GLIBC or newer: pip widens none but the legacy manylinux tags."""
    tags = [f"manylinux_2_{minor}_{arch}" for minor in range(GLIBC, 16, -1)] + [f"manylinux2014_{arch}"]
    return [f"--platform={tag}" for tag in tags]


def wheels(folder: Path, mnist_root: Path) -> None:
    """FOLDER: for each of PYTHONS on each of ARCHES, the wheels of what make gpu-check installs and everything it
    requires, as pip's resolver picks them, less what a GPU machine's torch stack holds already (the stack's closure
    as this python holds it, less MAY_BE_NEWER); and MNIST gzipped."""
    raw = mnist_root / "MNIST" / "raw"
    if not all((raw / name).is_file() for name in MNIST_FILES):
        sys.exit(
            f"Error: MNIST is not in {raw}: point MNIST_ROOT at the folder that holds MNIST/raw/ with its four "
            "files, or run `make train` once, which downloads them into data/."
        )
    have = installed()
    if missing := [name for name in (*STACK, *BUILT_HERE) if name not in have]:
        sys.exit(
            f"Error: make wheels takes the torch stack and {', '.join(BUILT_HERE)} from the python running it "
            f"({sys.executable}), which lacks {', '.join(missing)}: run make setup, then make wheels again."
        )
    stack = set(stack_closure(have)) - MAY_BE_NEWER
    folder.mkdir(parents=True, exist_ok=True)
    for old in [*folder.glob("*.whl"), *folder.glob("mnist/*.gz")]:
        old.unlink()
    pip = [sys.executable, "-m", "pip", "--quiet"]
    run([*pip, "wheel", "--no-deps", "--wheel-dir", str(folder), *(f"{n}=={have[n].version}" for n in BUILT_HERE)])
    needed = [line for line in check_requirements() if requirement_name(line) not in stack]
    # At the versions this python holds, which the tests ran with; what it lacks at the newest that fits.
    tested = [f"{name}=={dist.version}" for name, dist in have.items() if name not in stack]
    sizes = {}
    with tempfile.TemporaryDirectory() as scratch:
        lists = [Path(scratch, "needed.txt"), Path(scratch, "tested.txt")]
        for path, lines in zip(lists, (needed, tested), strict=True):
            path.write_text("".join(f"{line}\n" for line in lines))
        for python in PYTHONS:
            for arch in ARCHES:
                target = ["--only-binary=:all:", f"--python-version={python}", "--implementation=cp", *manylinux(arch)]
                found = closure(pip, [*target, "--find-links", str(folder)], python, arch, *lists)
                picked = [item for item in found if canonical(item["name"]) not in stack]
                pins = [f"{item['name']}=={item['version']}" for item in picked]
                run([*pip, "download", "--no-deps", *target, "--find-links", str(folder), "--dest", str(folder), *pins])
                size = sum((folder / item["file"]).stat().st_size for item in picked)
                sizes[f"cp{python.replace('.', '')} {arch}"] = size / 2**20
    (folder / "mnist").mkdir(exist_ok=True)
    for name in MNIST_FILES:
        with open(raw / name, "rb") as src, gzip.open(folder / "mnist" / f"{name}.gz", "wb") as dst:
            shutil.copyfileobj(src, dst)
    files = [*folder.glob("*.whl"), *folder.glob("mnist/*.gz")]
    size = sum(f.stat().st_size for f in files) / 2**20
    print(", ".join(f"{target} {mib:.1f} MiB" for target, mib in sizes.items()))
    print(f"{folder}: {len(files) - 4} wheels and MNIST gzipped, {size:.1f} MiB; make gpu-check installs from it")


def closure(pip: list[str], options: list[str], python: str, arch: str, requirements: Path, constraints: Path):
    """What pip's resolver installs of `requirements` with `options` (the target's) for CPython `python` on linux
    `arch`: each package's name, version and wheel. pip evaluates markers for the python running it, not for
    --python-version (pytest needs tomli on 3.10 alone): what a picked package requires there and the resolution
    lacks is added, until nothing is. (make wheels runs in .venv, which has `packaging`.)"""
    from packaging.requirements import Requirement

    there = {"python_version": python, "python_full_version": f"{python}.0", "platform_machine": arch, "extra": ""}
    added = []
    while True:
        command = [*pip, "install", "--dry-run", "--ignore-installed", "--report=-", *options]
        done = subprocess.run(
            [*command, "-r", str(requirements), "-c", str(constraints), *added], stdout=subprocess.PIPE
        )
        if done.returncode != 0:
            sys.exit(done.returncode)
        items = [
            item["metadata"] | {"url": item["download_info"]["url"]} for item in json.loads(done.stdout)["install"]
        ]
        names = {canonical(item["name"]) for item in items}
        requires = [Requirement(line) for item in items for line in item.get("requires_dist", [])]
        lacking = {canonical(r.name) for r in requires if r.marker and r.marker.evaluate(there)} - names
        if not lacking:
            return [
                {"name": i["name"], "version": i["version"], "file": unquote(i["url"].rsplit("/", 1)[-1])}
                for i in items
            ]
        added += sorted(lacking)


def run(command: list[str]) -> None:
    done = subprocess.run(command)
    if done.returncode != 0:
        sys.exit(done.returncode)


if __name__ == "__main__":
    usage = __doc__.split("\n\n")[1]
    if len(sys.argv) >= 4 and sys.argv[1] == "setup":
        setup(Path(sys.argv[2]), requirement_lines(Path(sys.argv[3])), sys.argv[4:])
    elif len(sys.argv) >= 3 and sys.argv[1] == "check":
        setup(Path(sys.argv[2]), check_requirements(), sys.argv[3:])
    elif len(sys.argv) == 4 and sys.argv[1] == "wheels":
        wheels(Path(sys.argv[2]), Path(sys.argv[3]))
    else:
        sys.exit(f"Error: bench/install.py {' '.join(sys.argv[1:])!r} is not one of these:\n{usage}")
