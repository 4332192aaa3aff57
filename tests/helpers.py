"""Helpers shared by the tests: run train.py as a user would, and find its outputs."""

import os
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def run_train(*overrides: str, env: dict | None = None, check: bool = True, timeout: int = 600):
    """Run `python train.py <overrides>` from the repo root, as a user would."""
    result = subprocess.run(
        [sys.executable, "train.py", *overrides],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "HYDRA_FULL_ERROR": "1", **(env or {})},
    )
    if check and result.returncode != 0:
        raise AssertionError(f"train.py {' '.join(overrides)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    return result


def only_child(folder: Path) -> Path:
    children = [p for p in folder.iterdir() if p.is_dir()]
    assert len(children) == 1, f"expected one folder in {folder}, found {children}"
    return children[0]


def load_checkpoint(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)  # plain tensors and containers only
