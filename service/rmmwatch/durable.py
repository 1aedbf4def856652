"""Small files written durably: whole or not at all, and on disk when the call returns.

The file replay's checkpoint and the SQLite store's ``.created`` marker are such files: a
crash (or a full disk) must leave either the old content or the new one, never a torn file,
and a position reported as committed must survive a power loss.
"""

from __future__ import annotations

import os
from contextlib import suppress
from pathlib import Path


def write_durably(path: Path, data: bytes) -> None:
    """``data`` in ``path``: a temporary file, fsynced, renamed over it, then the directory fsynced.

    On failure (a full disk) the temporary file is removed, so it takes no space, and the error is raised."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    try:
        with open(temporary, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except OSError:
        with suppress(OSError):
            temporary.unlink()
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
