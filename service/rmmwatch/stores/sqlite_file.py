"""The sqlite store's file on disk: ownership, integrity, the marker of a store that existed, and
what SQLite's and the disk's errors mean for the loop.

* **Ownership.** An exclusive ``flock`` on ``<db>.lock`` (holding the owner's pid) while open:
  a second rmmwatch on the same file is refused with :class:`StoreLocked`.
* **Integrity.** ``PRAGMA quick_check`` (every page and record well-formed) before any state is
  read; a damaged file is refused with :class:`StoreRefused` saying which file and what to do.
  It costs one read of the file at start.
* **A store that existed.** At creation a random store id goes into the ``meta`` table and
  into ``<db>.created`` beside the file, written durably. A database that is 0 bytes or missing
  while that marker is there is a lost store, not a new one: it is refused, since starting empty
  would alert again on every recent episode and never deliver the lost outbox. (A store made
  before markers existed gets one at its next open.)
* **Errors.** SQLITE_CORRUPT and SQLITE_NOTADB (and a stored row that is not the JSON written)
  are fatal (:class:`StoreRefused`); other operational errors, a full disk or an I/O error
  among them, are :class:`StoreUnavailable` (retried) with SQLite's own reason and code.
"""

from __future__ import annotations

import errno
import fcntl
import os
import sqlite3
import time
from pathlib import Path

import orjson

from rmmwatch.durable import write_durably
from rmmwatch.kql.datetimes import format_datetime
from rmmwatch.stores.base import StoreLocked, StoreRefused, StoreUnavailable

#: SQLite's primary result codes that mean the file itself is damaged: fatal, never retried.
_CORRUPT_CODES = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})
#: errno values of a disk that may come back (space freed, device back): retried.
_TRANSIENT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EAGAIN, errno.EINTR})


class StoreFile:
    """One SQLite store's path and the files beside it (``.lock``, ``.created``)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.marker = path.with_name(path.name + ".created")
        self._lock_fd: int | None = None

    # -- before the database is opened --------------------------------------------------------
    def size(self) -> int | None:
        """The database's size in bytes, None if it does not exist."""
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return None

    def check_not_lost(self) -> None:
        """StoreRefused if the database is 0 bytes or missing while its marker says a store was made here."""
        size = self.size()
        if size or not self.marker.exists():
            return
        try:
            created = str(orjson.loads(self.marker.read_bytes()).get("created", "an unknown time"))
        except (OSError, orjson.JSONDecodeError, AttributeError):
            created = "an unknown time"
        what = "missing" if size is None else "empty (0 bytes)"
        raise StoreRefused(
            f"{self.path} is {what}, but {self.marker.name} beside it says a store was created there at {created}: "
            "its state and undelivered alerts are gone, and starting empty would alert again on everything. "
            f"Restore {self.path.name} from a backup; or, to start with empty state on purpose, move "
            f"{self.marker.name} away"
        )

    def lock(self) -> None:
        """Take the ownership lock: StoreLocked if another process holds it."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise self.os_error(exc, "cannot create the lock file of") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StoreLocked(
                f"{self.path} is in use by another rmmwatch process (pid {holder}); the sqlite store is "
                "single-process: run one replica, or use --store redis://... for several"
            ) from None
        self._lock_fd = fd
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
        except OSError as exc:
            self.unlock()
            raise self.os_error(exc, "cannot write the lock file of") from None

    def unlock(self) -> None:
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- once it is open ----------------------------------------------------------------------
    def check_integrity(self, db: sqlite3.Connection) -> None:
        """``PRAGMA quick_check``: StoreRefused unless every page and record is well-formed."""
        problems = [str(r[0]) for r in db.execute("PRAGMA quick_check(5)").fetchall()]
        if problems != ["ok"]:
            raise self.corrupt("; ".join(problems))

    def mark_created(self, store_id: str) -> None:
        """Write the marker (once per store), durably."""
        if self.marker.exists():
            return
        marker = {"store_id": store_id, "created": format_datetime(time.time_ns() // 100), "db": self.path.name}
        try:
            write_durably(self.marker, orjson.dumps(marker))
        except OSError as exc:
            raise self.os_error(exc, "cannot write the marker file of") from None

    # -- what errors mean -----------------------------------------------------------------------
    def corrupt(self, detail: str) -> StoreRefused:
        return StoreRefused(
            f"{self.path} is corrupt ({detail}); rmmwatch will not use it, since state read from a damaged file "
            f"would miss or repeat alerts. Stop every rmmwatch using it, move {self.path.name} (with its -wal, -shm "
            f"and .created files) away, and restore them from a backup; or start with empty state by leaving them "
            "moved away (alerts still in its outbox are lost, and recent episodes alert again)"
        )

    def os_error(self, exc: OSError, doing: str) -> Exception:
        """A full or failing disk is retried; anything else (permissions, a read-only mount) is refused."""
        reason = f"{doing} {self.path}: {exc.strerror or exc}"
        if exc.errno in _TRANSIENT_ERRNOS:
            return StoreUnavailable(reason)
        return StoreRefused(reason)

    def classified(self, exc: sqlite3.Error) -> Exception:
        """SQLite's error as the store's: corruption is fatal, a full disk or a busy file is retried
        (with SQLite's reason and code in the message), anything else is a bug and stays itself."""
        code = getattr(exc, "sqlite_errorcode", None)
        name = getattr(exc, "sqlite_errorname", None)
        primary = code & 0xFF if isinstance(code, int) else None
        if primary in _CORRUPT_CODES:
            return self.corrupt(f"{exc} ({name})")
        if isinstance(exc, sqlite3.OperationalError):
            return StoreUnavailable(f"sqlite {self.path}: {exc}" + (f" ({name})" if name else ""))
        return exc
