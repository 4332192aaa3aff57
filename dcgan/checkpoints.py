"""Files that are never half-written: checkpoints, the classifier cache, sweep summaries.

Lightning's TorchCheckpointIO writes through an fsspec transaction: the bytes go
to a temporary file in $TMPDIR, then move over the target. When $TMPDIR is on
another file system than the run folder (common on clusters: local /tmp,
shared outputs) the move is a copy into the target, and a kill -9 during it
leaves a truncated last.ckpt; nothing is fsynced either, so a crash of the
machine can leave an empty one. AtomicCheckpointIO writes next to the target,
fsyncs, and renames: the target is always either the old or the new file.
write_atomically does the same for any file.
"""

import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import torch
from pytorch_lightning.plugins.io import TorchCheckpointIO


def write_atomically(path: str | Path, write: Callable[[BinaryIO], object]) -> None:
    """Call `write(f)` on a new file beside `path`, fsync it, and rename it over `path`: readers, a kill and
    a crash see the old file or the new one, never part of one; writers at the same time each rename a whole file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A new name in the same folder: os.replace within one file system is atomic.
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "xb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    # Make the rename itself durable.
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class AtomicCheckpointIO(TorchCheckpointIO):
    """TorchCheckpointIO whose saves are atomic on the local file system: temp file, fsync, rename."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        path = Path(path)
        for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a save that was killed
            stale.unlink(missing_ok=True)
        write_atomically(path, lambda f: torch.save(checkpoint, f))
