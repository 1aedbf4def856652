"""The file replay's checkpoint: where a restarted replay resumes (``--checkpoint``).

A small JSON file: the input's absolute path, the committed offset (in the UTF-8 stream, after
a byte-order mark and after transcoding UTF-16), its line, and the encoding, written durably
(``durable.py``). A checkpoint of another file, or one that cannot be read, is ignored with a
log line: the replay starts over, which the idempotent store absorbs. A write that fails (a
full disk) is a failed commit, ``SourceUnavailable`` naming the cause, tried again after a
backoff (0.5 s doubling to 30 s) rather than at every turn of the loop.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from pathlib import Path

import orjson

from rmmwatch.durable import write_durably
from rmmwatch.logging import get_logger
from rmmwatch.sources.base import SourceUnavailable
from rmmwatch.sources.framing import ENCODINGS, UTF8

log = get_logger("rmmwatch.sources.file")


@dataclass(frozen=True, slots=True)
class Saved:
    """A committed position of one input."""

    offset: int = 0
    line: int = 0
    encoding: str = UTF8
    bom: int = 0


class Checkpoint:
    """The checkpoint file of one input."""

    def __init__(self, path: Path, input_path: str) -> None:
        self.path = path
        self.input = os.path.abspath(input_path)
        self.committed: int | None = None
        self._failures = 0
        self._cause = ""
        self._next_try = 0.0

    def restore(self) -> Saved:
        """The saved position of this input (the start if there is none, or it is of another file)."""
        if not self.path.exists():
            return Saved()
        try:
            saved = orjson.loads(self.path.read_bytes())
        except (OSError, orjson.JSONDecodeError) as exc:
            log.warning("checkpoint_unreadable", checkpoint=str(self.path), error=str(exc))
            return Saved()
        if not isinstance(saved, dict) or saved.get("path") != self.input:
            other = saved.get("path") if isinstance(saved, dict) else None
            log.info("checkpoint_other_file", checkpoint=str(self.path), path=other)
            return Saved()
        position = Saved(saved.get("offset", 0), saved.get("line", 0), saved.get("encoding", UTF8), saved.get("bom", 0))
        if not _valid(position):
            log.warning("checkpoint_unreadable", checkpoint=str(self.path), error="not a position this replay wrote")
            return Saved()
        return position

    def restart(self) -> None:
        """The input was truncated: its offsets start again at 0 and must not be skipped as old."""
        self.committed = None

    async def write(self, position: Saved) -> None:
        """Save ``position`` unless an equal or later one is saved; SourceUnavailable if it cannot be written."""
        if self.committed is not None and position.offset <= self.committed:
            return
        wait_s = self._next_try - time.monotonic() if self._failures else 0.0
        if wait_s > 0:
            raise SourceUnavailable(f"checkpoint {self.path} not written ({self._cause}); next try in {wait_s:.1f} s")
        data = orjson.dumps(
            {
                "path": self.input,
                "offset": position.offset,
                "line": position.line,
                "encoding": position.encoding,
                "bom": position.bom,
            }
        )
        try:
            await asyncio.to_thread(write_durably, self.path, data)
        except OSError as exc:
            delay_s = min(30.0, 0.5 * float(1 << min(self._failures, 10)))
            self._failures += 1
            self._cause = exc.strerror or str(exc)
            self._next_try = time.monotonic() + delay_s
            raise SourceUnavailable(
                f"cannot write the checkpoint {self.path}: {self._cause}; retrying in {delay_s:.1f} s"
            ) from None
        self._failures = 0
        self.committed = position.offset


def _valid(saved: Saved) -> bool:
    """A position this replay could have written (a hand-edited or damaged file is not trusted)."""
    numbers = (saved.offset, saved.line, saved.bom)
    if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in numbers):
        return False
    return saved.encoding in ENCODINGS and saved.bom in (0, 2, 3)
