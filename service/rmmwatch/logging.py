"""structlog JSON logs on stderr, with secrets redacted and bad-input logs rate-limited.

Redaction is a processor at the end of the chain: it replaces every registered secret
value (connection strings, passwords, tokens, registered at startup) and anything that
looks like one (``SharedAccessKey=...``, ``AccountKey=...``, ``password=...``, bearer
tokens, ``user:password@`` in URLs, SAS ``sig=``) in every string of every event.
"""

from __future__ import annotations

import logging as std_logging
import re
import sys
import threading
import time
from collections.abc import MutableMapping
from typing import Any, TextIO, cast

import structlog

REDACTED = "***"

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(
            r"(?i)\b(SharedAccessKey|AccountKey|SharedAccessSignature|password|passwd|pwd|secret|token|sig)"
            r"=[^;&\s\"']+"
        ),
        r"\1=***",
    ),
    (re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]+"), r"\1 ***"),
    (re.compile(r"(://[^:/@\s]*):[^@/\s]+@"), r"\1:***@"),
)


class Redactor:
    """Removes known secret values and secret-looking patterns from text."""

    def __init__(self) -> None:
        self._secrets: set[str] = set()
        self._lock = threading.Lock()

    def register(self, *secrets: str | None) -> None:
        """Never print these values (short values are ignored: they would redact ordinary text)."""
        with self._lock:
            for secret in secrets:
                if secret and len(secret) >= 6:
                    self._secrets.add(secret)

    def redact(self, text: str) -> str:
        for secret in sorted(self._secrets, key=len, reverse=True):
            if secret in text:
                text = text.replace(secret, REDACTED)
        for pattern, replacement in _PATTERNS:
            text = pattern.sub(replacement, text)
        return text

    def redact_value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, dict):
            return {k: self.redact_value(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.redact_value(v) for v in value]
        if isinstance(value, BaseException):
            return self.redact(f"{type(value).__name__}: {value}")
        return value


#: The process-wide redactor: register secrets as soon as configuration is read.
redactor = Redactor()


def _redact_processor(logger: Any, method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in list(event_dict.items()):
        event_dict[key] = redactor.redact_value(value)
    return event_dict


class _Stderr:
    """Whatever ``sys.stderr`` is when a line is written (not when logging was configured): a process that
    swaps it (a test runner capturing output) never leaves the loggers writing to a closed stream."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure(level: str = "info", fmt: str = "json", stream: TextIO | None = None) -> None:
    """Configure structlog (and the stdlib loggers of libraries) to write to ``stream`` (default: stderr)."""
    stream = stream or cast("TextIO", _Stderr())
    numeric = std_logging.getLevelNamesMapping().get(level.upper(), std_logging.INFO)
    renderer: Any = (
        structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
    )
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        _redact_processor,
        renderer,
    ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    # Libraries (aiokafka, azure) log through the standard library: same stream, same redaction.
    handler = std_logging.StreamHandler(stream)
    handler.setFormatter(_RedactingFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = std_logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(numeric, std_logging.WARNING))


class _RedactingFormatter(std_logging.Formatter):
    def format(self, record: std_logging.LogRecord) -> str:
        return redactor.redact(super().format(record))


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)


class RateLimiter:
    """Allows ``burst`` events per key, refilled at ``per_second``; counts what it suppresses."""

    def __init__(self, per_second: float = 1.0, burst: int = 10) -> None:
        self.per_second = per_second
        self.burst = burst
        self._buckets: dict[str, tuple[float, float, int]] = {}

    def allow(self, key: str) -> tuple[bool, int]:
        """(allowed, number suppressed since the last allowed one)."""
        now = time.monotonic()
        tokens, last, suppressed = self._buckets.get(key, (float(self.burst), now, 0))
        tokens = min(self.burst, tokens + (now - last) * self.per_second)
        if tokens >= 1:
            self._buckets[key] = (tokens - 1, now, 0)
            return True, suppressed
        self._buckets[key] = (tokens, now, suppressed + 1)
        return False, suppressed + 1
