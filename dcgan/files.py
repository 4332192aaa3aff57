"""Files written whole or not at all: a reader, a kill -9 or a crash of the machine sees the old file or the new
one, never part of one. Checkpoints, caches, summaries and the reference script's files are written this way."""

import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


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
