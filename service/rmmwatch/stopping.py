"""Stopping: the signals, the shutdown deadline, and what cancels a shutdown that cannot finish.

SIGTERM, SIGINT and SIGHUP ask for a graceful stop (SIGHUP too, until it means "reload the
rules"): the loop finishes the batches in flight, delivers and commits. That must end within
``timeout_s`` whatever the store and the sinks do (a locked database, a webhook that drips a
byte every two seconds): past the deadline, or at a second signal, the run is cancelled.
Cancelling is safe because of the commit order (docs/architecture.md §2): what was not
committed is re-read by the next run, undelivered alerts stay in the outbox.

SIGUSR1 prints every thread's stack (from C, even with the loop blocked), SIGUSR2 every
asyncio task's: the diagnosis of a stall without a debugger.
"""

from __future__ import annotations

import asyncio
import faulthandler
import io
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

from rmmwatch.logging import get_logger

log = get_logger("rmmwatch.app")

#: After a loop that ended by itself, how long past the deadline a hung delivery is cancelled.
FINISH_GRACE_S = 1.0

#: Signals that stop the service gracefully.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class Shutdown:
    """Whether a stop was asked, how long is left, and the cancellation when the time is up."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.requested = asyncio.Event()
        #: The run was cancelled by a second stop or by the deadline (not by anyone else).
        self.forced = False
        self._deadline: float | None = None
        self._task: asyncio.Task[Any] | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self._closing = False

    def guard(self, task: asyncio.Task[Any] | None) -> None:
        """The task a forced stop cancels (the run)."""
        self._task = task

    def request(self) -> None:
        """Finish the batches in flight and exit, within the timeout; a second request: at once."""
        if not self.requested.is_set():
            log.info("stopping", timeout_s=self.timeout_s)
            self.requested.set()
            self._arm()
            return
        self._force("stop_signal_repeated")

    def finishing(self) -> None:
        """The loop ended by itself (a replay is exhausted, the source failed): delivering and committing what is
        left gets the same deadline as a stop, so a sink that hangs cannot hold the exit past the timeout. The
        drain retries up to the deadline and ends by itself; the cancellation comes :data:`FINISH_GRACE_S`
        later, for a delivery that hangs past it."""
        self._arm(FINISH_GRACE_S)

    def _arm(self, grace_s: float = 0.0) -> None:
        if self._deadline is not None:
            return
        self._deadline = time.monotonic() + self.timeout_s
        with suppress(RuntimeError):
            loop = asyncio.get_running_loop()
            self._watchdog = loop.call_later(self.timeout_s + grace_s, self._force, "shutdown_timeout")

    def closing(self) -> None:
        """The loop is over: what remains (closing the parts) is bounded on its own and is not cancelled."""
        self._closing = True
        if self._watchdog is not None:
            self._watchdog.cancel()

    def _force(self, why: str) -> None:
        task = self._task
        if task is not None and not task.done() and not self.forced and not self._closing:
            log.warning("stopping_now", reason=why, note="what was not committed is re-read by the next run")
            self.forced = True
            task.cancel()

    def remaining(self) -> float:
        """Seconds left before the deadline (the whole timeout while no stop was asked)."""
        if self._deadline is None:
            return self.timeout_s
        return max(0.0, self._deadline - time.monotonic())

    async def sleep(self, seconds: float) -> None:
        """Sleep, or less if a stop is asked meanwhile."""
        with suppress(TimeoutError):
            await asyncio.wait_for(self.requested.wait(), timeout=seconds)

    @contextmanager
    def signals(self) -> Iterator[None]:
        """Handle the stop and diagnosis signals while the run lasts."""
        loop = asyncio.get_running_loop()
        for sig in STOP_SIGNALS:
            with suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.request)
        with suppress(AttributeError, ValueError, RuntimeError, io.UnsupportedOperation):
            faulthandler.register(signal.SIGUSR1, all_threads=True)
        with suppress(AttributeError, NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGUSR2, dump_tasks)
        try:
            yield
        finally:
            for sig in (*STOP_SIGNALS, signal.SIGUSR2):
                with suppress(AttributeError, NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(sig)
            with suppress(AttributeError, ValueError, RuntimeError):
                faulthandler.unregister(signal.SIGUSR1)


def dump_tasks() -> None:
    """Every asyncio task's stack to stderr."""
    out = io.StringIO()
    tasks = asyncio.all_tasks()
    out.write(f"rmmwatch: {len(tasks)} asyncio task(s)\n")
    for task in sorted(tasks, key=lambda t: t.get_name()):
        task.print_stack(file=out)
    sys.stderr.write(out.getvalue())
    sys.stderr.flush()
