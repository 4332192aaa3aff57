"""The GPU check (bench/gpu_check.py) and its install (bench/install.py): make wheels; make setup and the check's
own install on a machine's PyTorch without a registry; the dry run on the CPU; its one-line refusals.

A GPU machine's python is played by a venv whose .pth reaches a folder of links into .venv's site-packages, less
what the H200 the check first ran on lacked: it imports torch without installing it."""

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

# What the H200's python lacked, of what the check needs (bench/install.py's WHEELS less what it held)
LACKING = {
    *("hydra-core", "omegaconf", "antlr4-python3-runtime", "hydra-joblib-launcher", "prdc", "pytest", "pluggy"),
    *("iniconfig", "pydantic", "pydantic-core", "annotated-types", "typing-inspection"),
}
SIZES = {"train-images-idx3-ubyte": 47_040_016, "t10k-labels-idx1-ubyte": 10_008}


def canonical(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def machine_python(root: Path, lacking: set[str]) -> Path:
    """A python that imports .venv's torch, Lightning and the rest from root/machine_site, less `lacking`."""
    skip = set()  # the top-level files and folders of what it lacks, by their installed RECORD
    for dist in distributions():
        if canonical(dist.metadata["Name"]) in lacking:
            skip |= {row[0].split("/")[0] for row in csv.reader(dist.read_text("RECORD").splitlines())}
    site, machine_site = Path(sysconfig.get_path("purelib")), root / "machine_site"
    machine_site.mkdir()
    for entry in site.iterdir():
        if entry.name not in skip and not entry.name.startswith(("pip", "__pycache__")):
            (machine_site / entry.name).symlink_to(entry)
    subprocess.run([sys.executable, "-m", "venv", str(root / "python")], check=True)
    python = root / "python" / "bin" / "python"
    own_site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], **TEXT)
    Path(own_site.stdout.strip(), "machine.pth").write_text(f"{machine_site}\n")
    return python


TEXT = {"capture_output": True, "text": True, "check": True}
# pip with only what a command names: not this machine's index, find-links or constraints
OFFLINE_ENV = {**{k: v for k, v in os.environ.items() if not k.startswith("PIP_")}, "PIP_CONFIG_FILE": os.devnull}


@pytest.fixture(scope="module")
def wheels(tmp_path_factory) -> Path:
    """make wheels into a folder of its own: where pip reaches a registry, as this machine's does."""
    folder = tmp_path_factory.mktemp("wheels")
    subprocess.run(["make", "wheels", f"WHEELS={folder}"], cwd=REPO, timeout=600, **TEXT)
    return folder


@pytest.mark.slow
def test_make_wheels_holds_what_the_check_lacks_for_python_3_10_to_3_13_well_under_64_mib(wheels):
    names = {path.name.split("-")[0].lower() for path in wheels.glob("*.whl")}
    assert {canonical(name).replace("-", "_") for name in LACKING} <= names
    assert {"typing_extensions", "joblib", "exceptiongroup", "tomli"} <= names
    pure = [path.name for path in wheels.glob("*.whl") if not path.name.startswith("pydantic_core")]
    assert all(name.endswith("-py3-none-any.whl") for name in pure), pure
    for python in ("cp310", "cp311", "cp312", "cp313"):
        for platform in ("x86_64", "aarch64"):
            assert len(list(wheels.glob(f"pydantic_core-*-{python}-{python}-*manylinux_2_17_{platform}.whl"))) == 1
    for name, size in SIZES.items():
        assert len(gzip.decompress((wheels / "mnist" / f"{name}.gz").read_bytes())) == size
    assert len(list(wheels.glob("mnist/*.gz"))) == 4
    assert sum(path.stat().st_size for path in wheels.rglob("*") if path.is_file()) < 48 * 2**20


@pytest.mark.slow
def test_make_setup_on_a_machines_torch_installs_only_what_it_lacks_from_wheels(wheels, tmp_path):
    python = machine_python(tmp_path, LACKING)
    venv = tmp_path / "venv"
    result = subprocess.run(
        ["make", "setup", f"VENV={venv}", f"PYTHON3={python}", f"PIP_OPTIONS=--no-index --find-links {wheels}"],
        cwd=REPO,
        env=OFFLINE_ENV,
        timeout=300,
        **TEXT,
    )
    assert f"make setup: the machine's torch {version('torch')} ({tmp_path / 'machine_site'})" in result.stdout
    pinned = [line for line in (REPO / "requirements.txt").read_text().split() if "==" in line]
    assert (venv / "requirements-lacking.txt").read_text().split() == [
        line for line in pinned if canonical(line.split("==")[0]) in LACKING
    ]
    held = (venv / "machine-constraints.txt").read_text().split()
    assert {
        f"torch=={version('torch')}",
        f"numpy=={numpy.__version__}",
        f"pytorch-lightning=={pl.__version__}",
    } <= set(held)
    assert not any(name.startswith("typing-extensions") for name in held)
    imports = "import torch, torchvision, hydra, omegaconf, prdc, pytest, hydra_plugins.hydra_joblib_launcher as j"
    where = subprocess.run([venv / "bin" / "python", "-c", f"{imports}; print(torch.__file__, j.__file__)"], **TEXT)
    torch_file, launcher_file = where.stdout.split()
    assert torch_file == str(tmp_path / "machine_site" / "torch" / "__init__.py")
    assert launcher_file.startswith(str(venv))
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
def test_the_check_installs_from_wheels_on_a_machines_torch_and_says_what_it_ran_on(wheels, tmp_path):
    """A checkout without .venv or ../shared, wheels/ beside it, a python holding torch but not the demo page's or
    the exporters' packages (which the check leaves out), no registry; a budget that skips every step."""
    checkout = tmp_path / "checkout"
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO, **TEXT)
    for name in files.stdout.split():
        if (REPO / name).is_file():
            (checkout / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, checkout / name)
    shutil.copytree(wheels, checkout / "wheels")
    python = machine_python(tmp_path, LACKING | {"gradio", "onnx", "onnxruntime", "playwright"})
    out = tmp_path / "out"
    command = [python, "bench/gpu_check.py", "--dry-run", "--budget", "25", str(out)]
    result = subprocess.run(command, cwd=checkout, env=OFFLINE_ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((out / "gpu_check.json").read_text())
    assert report["install"]["status"] == "ok" and report["install"]["from"] == "wheels/, no registry"
    assert report["versions"]["torch"] == torch.__version__
    assert report["versions"]["torch from"] == str(tmp_path / "machine_site" / "torch")
    assert all(step["status"].startswith("skipped") for step in report["steps"])
    assert (checkout / ".venv" / ".gpu_check").is_file() and not (checkout / ".venv" / ".installed").exists()
    raw = checkout / "data" / "MNIST" / "raw"
    assert all((raw / name).stat().st_size == size for name, size in SIZES.items())
    assert f"torch {torch.__version__}" in (out / "gpu_check.md").read_text()


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


@pytest.mark.slow
def test_gpu_check_dry_run_runs_every_step_on_the_cpu_and_reports_its_figures(classifier_path, tmp_path):
    """make gpu-check ARGS="--dry-run OUT_DIR": what a GPU machine will run, at toy sizes, on the CPU."""
    result = subprocess.run(
        ["make", "gpu-check", f"ARGS=--dry-run {tmp_path}"], cwd=REPO, capture_output=True, text=True, timeout=1800
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    steps = {step["name"]: step for step in report["steps"]}
    assert list(steps) == [
        "gpu tests",
        "default",
        "experiment=gpu",
        "seed_repro projection",
        "throughput",
        "sweep: N jobs at once",
        "experiment=best",
    ]
    assert all(step["status"] == "ok" for step in steps.values()), steps
    assert steps["gpu tests"]["figures"]["tests"]["passed"] >= 1
    assert steps["default"]["beside"] == ["experiment=gpu", "seed_repro projection", "throughput"]
    for name in ("default", "experiment=gpu", "experiment=best"):
        assert {"train s", "fid", "kid", "precision", "recall", "min_digit_share", "steps"} <= steps[name][
            "figures"
        ].keys()
    assert steps["throughput"]["figures"]
    assert steps["seed_repro projection"]["figures"]["projected 150 epochs min"] > 0
    sweep = steps["sweep: N jobs at once"]["figures"]
    assert list(sweep) == ["1 at once", "2 at once"] and sweep["1 at once"]["vs one job"] == 1.0
    assert all(round_["steps/s per job"] > 0 and round_["wall s"] > 0 for round_ in sweep.values())
    assert report["versions"]["torch"] == torch.__version__ and report["versions"]["gpu"] is None
    table = (tmp_path / "gpu_check.md").read_text()
    assert "dry run on the CPU" in table and all(f"| {name} | ok |" in table for name in steps)
    assert f"torch {torch.__version__}" in table
