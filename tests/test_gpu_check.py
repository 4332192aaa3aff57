"""The GPU check (bench/gpu_check.py) and its install (bench/install.py): make wheels; make setup on a machine's
PyTorch without a registry; the dry run on the CPU, installed from wheels on a lean machine; its one-line refusals.

A GPU machine's python is played by a python that imports .venv's packages from a folder of links into .venv's
site-packages, less what that machine lacks: a venv whose .pth reaches the folder, or a python that is no venv
(a copy of .venv's base interpreter, the folder in its own site-packages), as a system or conda python is."""

import csv
import gzip
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from importlib.metadata import distributions, version
from pathlib import Path

import numpy
import pytest
import pytorch_lightning as pl
import torch

from tests.helpers import REPO

# What the H200's python at 438c1f9 lacked of what the check needs
LACKING = {
    *("hydra-core", "omegaconf", "antlr4-python3-runtime", "hydra-joblib-launcher", "pytest", "pluggy"),
    *("iniconfig", "pydantic", "pydantic-core", "annotated-types", "typing-inspection"),
}
# A leaner machine: without what make wheels does not carry either (bench/install.py's TOO_BIG), nor the demo
# page's and the exporters' packages, which the check does not run
LEAN = LACKING | {"tensorboard", "tensorboard-data-server", "matplotlib", "scipy", "scikit-learn", "prdc"}
LEAN |= {"gradio", "onnx", "onnxruntime", "playwright"}
# Older than pydantic (typing-extensions>=4.16) and the project (pytest==9.2.0) need, new enough for torch
OLDER = ("typing-extensions==4.12.2", "pytest==8.3.5")
SIZES = {"train-images-idx3-ubyte": 47_040_016, "t10k-labels-idx1-ubyte": 10_008}
TEXT = {"capture_output": True, "text": True, "check": True}


def canonical(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def offline_env() -> dict:
    """pip with only what a command names: not this machine's index, find-links or constraints."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("PIP_")}, "PIP_CONFIG_FILE": os.devnull}


def machine_python(root: Path, lacking: set[str], venv: bool = True, older: tuple[str, ...] = ()) -> Path:
    """A python that imports .venv's torch, Lightning and the rest from root/machine_site, less `lacking`, with
    the `older` versions (from the registry) in place of .venv's; itself a venv (its .pth reaches the folder) or
    not (a copy of the base interpreter, beside links to its standard library)."""
    replaced = lacking | {canonical(line.split("==")[0]) for line in older}
    skip = set()  # the top-level files and folders of what it lacks, by their installed RECORD
    for dist in distributions():
        if canonical(dist.metadata["Name"]) in replaced:
            skip |= {row[0].split("/")[0] for row in csv.reader(dist.read_text("RECORD").splitlines())}
    site, machine_site = Path(sysconfig.get_path("purelib")), root / "machine_site"
    machine_site.mkdir()
    for entry in site.iterdir():
        if entry.name not in skip and not entry.name.startswith(("pip", "__pycache__")):
            (machine_site / entry.name).symlink_to(entry)
    if older:
        pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(machine_site)]
        subprocess.run([*pip, *older], timeout=300, **TEXT)
    if venv:
        subprocess.run([sys.executable, "-m", "venv", str(root / "python")], check=True)
        python = root / "python" / "bin" / "python"
        purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], **TEXT)
        own_site = Path(purelib.stdout.strip())
    else:
        name = f"python{sys.version_info.major}.{sys.version_info.minor}"
        python, own_site = root / "prefix" / "bin" / name, root / "prefix" / "lib" / name / "site-packages"
        python.parent.mkdir(parents=True)
        own_site.mkdir(parents=True)
        shutil.copy2(Path(sys.base_prefix) / "bin" / name, python)  # a copy: it finds its prefix beside itself
        for entry in (Path(sys.base_prefix) / "lib" / name).iterdir():
            if entry.name != "site-packages":
                (own_site.parent / entry.name).symlink_to(entry)
    (own_site / "machine.pth").write_text(f"{machine_site}\n")
    return python


@pytest.fixture(scope="module")
def wheels(tmp_path_factory) -> Path:
    """make wheels into a folder of its own: where pip reaches a registry, as this machine's does."""
    folder = tmp_path_factory.mktemp("wheels")
    subprocess.run(["make", "wheels", f"WHEELS={folder}"], cwd=REPO, timeout=900, **TEXT)
    return folder


@pytest.mark.slow
def test_make_wheels_holds_the_checks_closure_for_python_3_10_to_3_14_within_64_mib(wheels):
    names = {canonical(path.name.split("-")[0]) for path in wheels.glob("*.whl")}
    assert LACKING <= names and {"typing-extensions", "packaging", "joblib", "tensorboardx", "protobuf"} <= names
    assert {"exceptiongroup", "tomli"} <= names  # pytest's on Python 3.10 alone
    # Neither the torch stack a GPU machine holds, nor what the check runs without
    assert not names & {"torch", "torchvision", "numpy", "pillow", "pyyaml", "pytorch-lightning", "torchmetrics"}
    assert not names & {"tensorboard", "grpcio", "matplotlib", "scipy", "scikit-learn", "prdc"}
    compiled = [path.name for path in wheels.glob("*.whl") if not path.name.endswith("-py3-none-any.whl")]
    for arch in ("x86_64", "aarch64"):
        for python in ("cp310", "cp311", "cp312", "cp313", "cp314"):
            assert len([name for name in compiled if f"-{python}-{python}-" in name and arch in name]) == 1, compiled
        assert len([name for name in compiled if name.startswith("protobuf") and arch in name]) == 1, compiled
    assert len(compiled) == 12, compiled  # pydantic-core per python and platform, protobuf (abi3) per platform
    for name, size in SIZES.items():
        assert len(gzip.decompress((wheels / "mnist" / f"{name}.gz").read_bytes())) == size
    assert len(list(wheels.glob("mnist/*.gz"))) == 4
    assert sum(path.stat().st_size for path in wheels.rglob("*") if path.is_file()) < 64 * 2**20


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["venv", "system python, older packages"])
def test_make_setup_on_a_machines_torch_installs_only_what_it_lacks_from_wheels(kind, wheels, tmp_path):
    system = kind != "venv"
    python = machine_python(tmp_path, LACKING, venv=not system, older=OLDER if system else ())
    venv = tmp_path / "venv"
    result = subprocess.run(
        ["make", "setup", f"VENV={venv}", f"PYTHON3={python}", f"PIP_OPTIONS=--no-index --find-links {wheels}"],
        cwd=REPO,
        env=offline_env(),
        timeout=300,
        **TEXT,
    )
    assert f"make setup: the machine's torch {version('torch')} ({tmp_path / 'machine_site'})" in result.stdout
    assert ("include-system-site-packages = true" in (venv / "pyvenv.cfg").read_text()) == system
    pinned = [line for line in (REPO / "requirements.txt").read_text().split() if "==" in line]
    lacking = LACKING | ({"pytest"} if system else set())  # pytest: held at an older version than pinned
    assert (venv / "requirements-lacking.txt").read_text().split() == [
        line for line in pinned if canonical(line.split("==")[0]) in lacking
    ]
    held = (venv / "machine-constraints.txt").read_text().split()
    assert {
        f"torch=={version('torch')}",
        f"numpy=={numpy.__version__}",
        f"pytorch-lightning=={pl.__version__}",
    } <= set(held)
    assert not any(name.startswith("typing-extensions") for name in held)
    imports = "import torch, hydra, prdc, pytest, typing_extensions as t, hydra_plugins.hydra_joblib_launcher as j"
    files = "torch.__file__, j.__file__, t.__file__, version('typing-extensions'), pytest.__version__"
    code = f"{imports}; from importlib.metadata import version; print({files})"
    where = subprocess.run([venv / "bin" / "python", "-c", code], **TEXT)
    torch_file, launcher_file, extensions_file, extensions, pytest_version = where.stdout.split()
    assert torch_file == str(tmp_path / "machine_site" / "torch" / "__init__.py")
    assert launcher_file.startswith(str(venv)) and pytest_version == version("pytest")
    # The older typing-extensions the machine holds is shadowed in .venv by the one pydantic needs
    assert extensions_file.startswith(str(venv)) == system and extensions == version("typing-extensions")
    assert not list(venv.glob("lib/python*/site-packages/torch*")), "it installed a torch of its own"


def test_make_setup_without_a_registry_refuses_a_python_without_torch_in_one_line(tmp_path):
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "bare")], check=True)
    result = subprocess.run(
        [
            "make",
            "setup",
            f"VENV={tmp_path / 'venv'}",
            f"PYTHON3={tmp_path / 'bare/bin/python'}",
            "PIP_OPTIONS=--no-index",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0 and not (tmp_path / "venv").exists()
    error = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(error) == 1 and "has no torch, torchvision and pytorch_lightning of its own" in error[0]
    assert "PYTHON3=" in error[0] and "Traceback" not in result.stderr


@pytest.mark.slow
def test_gpu_check_dry_run_installs_from_wheels_on_a_lean_machine_and_runs_every_step(
    classifier_path, wheels, tmp_path
):
    """make gpu-check ARGS="--dry-run OUT_DIR" in a checkout without .venv or ../shared, wheels/ beside it, on a
    python holding torch but none of LEAN, without a registry: what a GPU machine will run, at toy sizes."""
    checkout = tmp_path / "checkout"
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO, **TEXT)
    for name in files.stdout.split():
        if (REPO / name).is_file():
            (checkout / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, checkout / name)
    shutil.copytree(wheels, checkout / "wheels")
    python, out = machine_python(tmp_path, LEAN), tmp_path / "out"
    result = subprocess.run(
        ["make", "gpu-check", f"PYTHON3={python}", f"ARGS=--dry-run {out}"],
        cwd=checkout,
        env=offline_env(),
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((out / "gpu_check.json").read_text())
    assert report["install"]["status"] == "ok" and report["install"]["from"] == "wheels/, no registry"
    assert report["versions"]["torch from"] == str(tmp_path / "machine_site" / "torch")
    assert report["versions"]["torch"] == torch.__version__ and report["versions"]["gpu"] is None
    lean = subprocess.run([checkout / ".venv" / "bin" / "python", "-c", "import matplotlib"], capture_output=True)
    assert lean.returncode != 0 and (checkout / ".venv" / ".gpu_check").is_file()
    assert all((checkout / "data" / "MNIST" / "raw" / name).stat().st_size == size for name, size in SIZES.items())

    rows = {row["run"]: row for row in report["table"]}
    assert list(rows) == [
        "profile: reference_script eager",
        "gpu tests",
        "real digits",
        "reference_script eager",
        "reference_script graphed",
        "default graphed",
        *(f"throughput: {name}" for name in ("classic", "project", "data: classic", "data: project")),
        "sweep: 1 at once",
        "sweep: 2 at once",
    ]
    assert all(row["status"] == "ok" for row in rows.values()), rows
    profile = rows["profile: reference_script eager"]
    assert profile["steps/s"] > 0 and profile["more"]["update_host_ms"] > 0 and profile["more"]["other_host_ms"] > 0
    assert rows["gpu tests"]["more"]["passed"] >= 1 and "failed" not in rows["gpu tests"]["more"]
    assert rows["real digits"]["more"]["fid"] < rows["default graphed"]["more"]["fid"]
    eager, graphed = rows["reference_script eager"], rows["reference_script graphed"]
    assert eager["graphs"] == "off: callbacks.cuda_graph.enabled=false" and eager["x eager"] == 1.0
    assert graphed["graphs"].startswith("off: they need a CUDA GPU") and graphed["x eager"] > 0
    for row in (eager, graphed, rows["default graphed"]):
        assert row["steps/s"] > 0 and row["epoch ends s"] > 0 and row["steps"] == 3
    assert eager["more"]["150 epochs s"] > 150 * 468 / eager["steps/s"]
    assert rows["default graphed"]["more"]["train s"] > 0
    assert all(rows[f"throughput: {name}"]["steps/s"] > 0 for name in ("classic", "project"))
    for n in (1, 2):
        sweep = rows[f"sweep: {n} at once"]
        assert sweep["more"]["jobs"] == n and sweep["steps/s"] > 0 and sweep["graphs"].startswith("off: they need")
    table = (out / "gpu_check.md").read_text()
    assert "dry run on the CPU" in table and f"torch {torch.__version__}" in table
    assert all(f"| {name} | ok |" in table for name in rows)


@pytest.mark.parametrize(
    "args, named",
    [
        (["--budget", "-5"], "argument --budget: '-5' is not a whole number of seconds above 0"),
        (["--budget", "ten"], "argument --budget: 'ten' is not a whole number of seconds above 0"),
        (["--dry-run"], "needs OUT_DIR"),
    ],
)
def test_the_checks_own_bad_arguments_end_in_one_line_naming_them(args, named, tmp_path):
    out = tmp_path / "out"
    command = [sys.executable, "bench/gpu_check.py", *args, *([str(out)] if "--budget" in args else [])]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1, result.stderr
    assert named in result.stderr and "usage:" not in result.stderr and not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_gpu_check_says_in_one_line_that_there_is_no_gpu(tmp_path):
    result = subprocess.run(["make", "gpu-check", f"ARGS={tmp_path}"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode != 0 and "make gpu-check needs a machine with an NVIDIA GPU" in result.stderr
    assert not list(tmp_path.iterdir())
