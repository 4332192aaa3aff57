"""How .venv is made (make setup), and the folder a GPU machine without a registry installs from (make wheels).

    python3 bench/install.py setup VENV REQUIREMENTS [PIP_OPTION ...]   # make setup
    .venv/bin/python bench/install.py wheels FOLDER MNIST_ROOT           # make wheels, where pip reaches a registry

When the python running `setup` already imports torch, torchvision and pytorch_lightning (a GPU machine's tuned
PyTorch), VENV shares that python's packages and pip installs only the requirements it lacks, under constraints
that hold torch, torchvision, Lightning, torchmetrics and everything they require at the machine's versions.
Otherwise VENV gets REQUIREMENTS as they are, with its pinned torch. Standard library only: it runs first.
"""

import gzip
import importlib.metadata
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

STACK = ("torch", "torchvision", "pytorch-lightning", "torchmetrics")
# Required newer by pydantic and pytest than many machines hold; pure Python and backward compatible, so a newer
# copy in VENV (which shadows the machine's for this project alone) cannot break the machine's torch.
MAY_BE_NEWER = {"typing-extensions", "packaging"}
# make wheels: what make gpu-check needs that a GPU machine's python may lack, with what they require, at the
# versions .venv holds (the tests ran with them). All are pure Python but pydantic-core, fetched per Python and
# platform; antlr4's runtime is a source archive on PyPI, built into a wheel here.
WHEELS = (
    "hydra-core omegaconf antlr4-python3-runtime hydra-joblib-launcher joblib cloudpickle prdc pydantic "
    "annotated-types typing-inspection typing-extensions pytest pluggy iniconfig pygments packaging"
).split()
PY310_ONLY = ("exceptiongroup", "tomli")  # pytest's on Python 3.10, which .venv (3.11) lacks: their latest
COMPILED, PYTHONS, PLATFORMS = "pydantic-core", ("3.10", "3.11", "3.12", "3.13"), ("x86_64", "aarch64")
MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(line: str) -> str:
    return canonical(re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", line.strip()).group())


def requirement_lines(path: Path) -> list[str]:
    lines = (line.strip() for line in path.read_text().splitlines())
    return [line for line in lines if line and not line.startswith(("#", "-"))]


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


def setup(venv: Path, requirements: Path, pip_options: list[str]) -> None:
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", *pip_options]
    if not all(importlib.util.find_spec(m) for m in ("torch", "torchvision", "pytorch_lightning")):
        pinned = next((line for line in requirement_lines(requirements) if requirement_name(line) == "torch"), "torch")
        if "--no-index" in pip_options:
            sys.exit(
                f"Error: {sys.executable} has no torch, torchvision and pytorch_lightning of its own, and pip may not "
                f"reach a registry ({' '.join(pip_options)}) for {pinned}: run make setup with PYTHON3=<a python "
                "that imports them>, or without --no-index where pip reaches a registry."
            )
        print(f"make setup: {sys.executable} has no torch of its own: .venv gets {pinned} (about 5 GB)", flush=True)
        run([sys.executable, "-m", "venv", str(venv)])
        run(pip[:5] + ["--upgrade", "pip", *pip_options])
        run([*pip, "-r", str(requirements)])
        return
    dists = installed()
    # A version outside PEP 440 (some distributions' own builds) would make pip refuse the whole file: left out.
    held = {
        name: version
        for name, version in stack_closure(dists).items()
        if name not in MAY_BE_NEWER
        and re.fullmatch(r"\d+(\.\d+)*((a|b|rc)\d+)?(\.post\d+)?(\.dev\d+)?(\+[\w.]+)?", version)
    }
    lacking = [line for line in requirement_lines(requirements) if requirement_name(line) not in dists]
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


def wheels(folder: Path, mnist_root: Path) -> None:
    raw = mnist_root / "MNIST" / "raw"
    if not all((raw / name).is_file() for name in MNIST_FILES):
        sys.exit(
            f"Error: MNIST is not in {raw}: point MNIST_ROOT at the folder that holds MNIST/raw/ with its four "
            "files, or run `make train` once, which downloads them into data/."
        )
    have = installed()
    if missing := [name for name in (*WHEELS, COMPILED) if name not in have]:
        sys.exit(
            f"Error: make wheels takes each wheel's version from the python running it ({sys.executable}), which "
            f"lacks {', '.join(missing)}: pin them in requirements.txt and run make setup, then make wheels again."
        )
    folder.mkdir(parents=True, exist_ok=True)
    for old in [*folder.glob("*.whl"), *folder.glob("mnist/*.gz")]:
        old.unlink()
    pins = [f"{name}=={have[name].version}" for name in WHEELS]
    pip = [sys.executable, "-m", "pip", "--quiet"]
    run([*pip, "wheel", "--no-deps", "--wheel-dir", str(folder), *pins])
    any_platform = ["--python-version", "3.10", "--platform", "any"]  # tomli's pure wheel, not this machine's build
    run([*pip, "download", "--no-deps", "--only-binary=:all:", *any_platform, "--dest", str(folder), *PY310_ONLY])
    compiled = f"{COMPILED}=={have[COMPILED].version}"
    for python in PYTHONS:
        for platform in PLATFORMS:
            where = ["--python-version", python, "--platform", f"manylinux_2_17_{platform}", "--implementation", "cp"]
            run([*pip, "download", "--no-deps", "--only-binary=:all:", *where, "--dest", str(folder), compiled])
    (folder / "mnist").mkdir(exist_ok=True)
    for name in MNIST_FILES:
        with open(raw / name, "rb") as src, gzip.open(folder / "mnist" / f"{name}.gz", "wb") as dst:
            shutil.copyfileobj(src, dst)
    files = [*folder.glob("*.whl"), *folder.glob("mnist/*.gz")]
    size = sum(f.stat().st_size for f in files) / 2**20
    print(f"{folder}: {len(files) - 4} wheels and MNIST gzipped, {size:.1f} MiB; make gpu-check installs from it")


def run(command: list[str]) -> None:
    done = subprocess.run(command)
    if done.returncode != 0:
        sys.exit(done.returncode)


if __name__ == "__main__":
    usage = __doc__.split("\n\n")[1]
    if len(sys.argv) >= 4 and sys.argv[1] == "setup":
        setup(Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4:])
    elif len(sys.argv) == 4 and sys.argv[1] == "wheels":
        wheels(Path(sys.argv[2]), Path(sys.argv[3]))
    else:
        sys.exit(f"Error: bench/install.py {' '.join(sys.argv[1:])!r} is not one of these:\n{usage}")
