"""Alerts POSTed to an HTTP(S) endpoint, one JSON document per request (aiohttp, one session per sink).

The endpoint is not trusted to behave (docs/architecture.md, "what happens when ..."):

* **One deadline per attempt and per send.** Each attempt has one *total* timeout (connect,
  request, status line, headers, body: ``aiohttp.ClientTimeout(total=...)``), the smaller of
  ``timeout_s`` and what is left of the send's ``deadline_s``. An endpoint that drips one byte
  at a time, or hangs, is cut there; a per-read timeout would let it hold the loop forever.
* **Redirects are never followed.** A 3xx is a failed delivery (the log names the status and
  the Location's host, never its path): following it would send the alert, and the bearer
  token, to a host nobody configured, and its 200 would mark the alert delivered.
* **Any reply that is not a well-formed 2xx is a failure.** A bad status line, an oversized
  header, garbage, a reset, a body that never ends: ``SinkError``, never another exception out
  of the loop. 4xx other than 408/425/429 is not retried within the send (retrying would not
  help) and is still an error: the alert stays in the outbox, counted, never dropped silently.
* **Retries** with exponential backoff and full jitter, up to ``retries`` per alert, never past
  the send's deadline. 429/503 with ``Retry-After`` (seconds or an HTTP-date) wait what the
  endpoint asks, up to ``retry_after_cap_s`` (60 s by default); a wait past the send's deadline
  gives up the send at once, and later sends fail without calling the endpoint until that time
  (the loop's backoff takes over; the alerts stay in the outbox).
* **Credentials in the URL are refused** at construction (the message does not repeat them):
  the endpoint authenticates with a bearer token read from an environment variable, sent to the
  configured origin only and never logged. Requests carry ``Idempotency-Key: <alert_id>:<revision>``.
  TLS certificates are verified. A proxy comes from the environment (``HTTP(S)_PROXY``,
  ``NO_PROXY``), as with urllib; nothing else does (aiohttp's ``trust_env`` would also take
  credentials from ``~/.netrc`` for the host, which clash with the bearer token).
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import KW_ONLY, dataclass, field
from datetime import UTC
from urllib.parse import urljoin, urlsplit

import aiohttp

from rmmwatch import __version__
from rmmwatch.alerts import Alert
from rmmwatch.logging import get_logger, redactor
from rmmwatch.sinks.base import SinkError

log = get_logger("rmmwatch.sinks.webhook")

_RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
#: Statuses whose ``Retry-After`` is honoured.
_THROTTLE_STATUS = frozenset({429, 503})
#: The longest ``Retry-After`` waited, in seconds: a longer one waits this long.
RETRY_AFTER_CAP_S = 60.0
#: Bytes of a reply body read (and dropped); past that the connection is closed, the status stands.
_BODY_LIMIT = 65536


@dataclass(frozen=True, slots=True)
class _Outcome:
    """What one attempt got: an HTTP status (None: no well-formed reply), a loggable detail, and the
    wait a throttling endpoint asked for."""

    status: int | None
    detail: str
    retry_after_s: float | None = None


def checked_url(url: str) -> str:
    """``url`` if a webhook can be POSTed to it; ValueError (not repeating the URL) otherwise."""
    try:
        parts = urlsplit(url)
    except ValueError:
        raise ValueError("webhook URL is not a valid URL") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError("webhook URL must start with http:// or https://")
    if "@" in parts.netloc:
        raise ValueError(
            "webhook URL must not carry credentials (user:password@host): they would be logged with the URL; "
            "give the endpoint's bearer token in the environment variable named by --webhook-token-env"
        )
    try:
        parts.port  # noqa: B018  (raises ValueError on a port that is not a number)
    except ValueError:
        raise ValueError("webhook URL has a port that is not a number") from None
    if not parts.hostname:
        raise ValueError("webhook URL has no host")
    return url


def _environment_proxy(url: str) -> str | None:
    """The proxy the environment names for ``url`` (``HTTP(S)_PROXY`` unless ``NO_PROXY`` covers the host)."""
    parts = urlsplit(url)
    if not parts.hostname or urllib.request.proxy_bypass(parts.hostname):
        return None
    return urllib.request.getproxies().get(parts.scheme)


def _retry_after_s(value: str | None) -> float | None:
    """Seconds a ``Retry-After`` header asks to wait (delta-seconds or an HTTP-date); None if absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - time.time())


@dataclass(eq=False, repr=False)  # no generated repr: it would show the token
class WebhookSink:
    """HTTP POST delivery with one deadline per attempt and per send, retries, backoff and jitter."""

    name = "webhook"

    url: str
    _: KW_ONLY
    token: str | None = None
    timeout_s: float = 5.0
    retries: int = 3
    backoff_s: float = 0.5
    max_backoff_s: float = 10.0
    deadline_s: float = 30.0
    retry_after_cap_s: float = RETRY_AFTER_CAP_S
    _proxy: str | None = field(init=False)
    _session: aiohttp.ClientSession | None = field(init=False, default=None)
    #: loop time before which the endpoint asked (Retry-After) not to be called
    _not_before: float = field(init=False, default=0.0)

    def __post_init__(self) -> None:
        self.url = checked_url(self.url)
        redactor.register(self.token)
        self._proxy = _environment_proxy(self.url)

    async def open(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers={"Content-Type": "application/json", "User-Agent": f"rmmwatch/{__version__}"},
            )

    async def send(self, alerts: Sequence[Alert]) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.deadline_s
        wait = self._not_before - loop.time()
        if wait > 0:
            raise SinkError(f"webhook: the endpoint asked (Retry-After) not to be called for {wait:.0f} s more")
        if self._session is None:
            await self.open()
        assert self._session is not None
        for alert in alerts:
            await self._send_one(self._session, alert, deadline)

    async def _send_one(self, session: aiohttp.ClientSession, alert: Alert, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        which = f"(alert {alert.alert_id} revision {alert.revision})"
        attempt = 0
        while True:
            budget = min(self.timeout_s, deadline - loop.time())
            if budget <= 0:
                raise SinkError(f"webhook: gave up at the delivery deadline ({self.deadline_s:g} s) {which}")
            outcome = await self._post(session, alert, budget)
            if outcome.status is not None and 200 <= outcome.status < 300:
                return
            attempt += 1
            if outcome.retry_after_s is not None:
                pause = min(outcome.retry_after_s, self.retry_after_cap_s)
                if attempt > self.retries or loop.time() + pause >= deadline:
                    self._not_before = loop.time() + pause
                    raise SinkError(
                        f"webhook: {outcome.detail} with Retry-After {outcome.retry_after_s:.0f} s (waiting "
                        f"{pause:.0f} s, cap {self.retry_after_cap_s:g} s): past this delivery's deadline or "
                        f"retries; not called again before then {which}"
                    )
            else:
                retryable = outcome.status is None or outcome.status in _RETRYABLE_STATUS
                if not retryable or attempt > self.retries:
                    raise SinkError(f"webhook: {outcome.detail} {which}")
                pause = random.uniform(0, min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1)))
                if loop.time() + pause >= deadline:
                    raise SinkError(f"webhook: {outcome.detail}; gave up at the delivery deadline {which}")
            log.info("webhook_retry", attempt=attempt, pause_s=round(pause, 3), error=outcome.detail)
            await asyncio.sleep(pause)

    async def _post(self, session: aiohttp.ClientSession, alert: Alert, budget_s: float) -> _Outcome:
        """One attempt, within ``budget_s`` in total; every failure is an outcome, never an exception."""
        headers = {"Idempotency-Key": f"{alert.alert_id}:{alert.revision}"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        try:
            async with session.post(
                self.url,
                data=alert.payload,
                headers=headers,
                allow_redirects=False,
                proxy=self._proxy,
                timeout=aiohttp.ClientTimeout(total=budget_s),
            ) as response:
                status = response.status
                if 300 <= status < 400:
                    return _Outcome(status, self._redirect_detail(status, response.headers.get("Location")))
                await self._read_body(response)
                retry_after = (
                    _retry_after_s(response.headers.get("Retry-After")) if status in _THROTTLE_STATUS else None
                )
                return _Outcome(status, f"HTTP {status}", retry_after)
        except TimeoutError:
            return _Outcome(None, f"no complete reply within {budget_s:.3g} s: timed out (one deadline per attempt)")
        except aiohttp.ClientResponseError as exc:
            return _Outcome(None, f"malformed reply: {exc.message or type(exc).__name__}")
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            return _Outcome(None, f"cannot reach the webhook or read its reply: {type(exc).__name__}: {exc}")

    @staticmethod
    async def _read_body(response: aiohttp.ClientResponse) -> None:
        """Read the body to its end (a reply is complete only then), at most ``_BODY_LIMIT`` bytes."""
        remaining = _BODY_LIMIT
        while remaining > 0:
            chunk = await response.content.read(remaining)
            if not chunk:
                return
            remaining -= len(chunk)
        response.close()  # a longer body: the connection is dropped rather than read on

    def _redirect_detail(self, status: int, location: str | None) -> str:
        """The status and the Location's host (never its path or query: they may carry secrets)."""
        host = "no Location"
        if location:
            try:
                target = urlsplit(urljoin(self.url, location))
                host = target.hostname or "an unreadable Location"
                if target.port is not None:
                    host = f"{host}:{target.port}"
            except ValueError:
                host = "an unreadable Location"
        return f"HTTP {status} redirect to {host} not followed (give the final URL of the endpoint)"

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()
