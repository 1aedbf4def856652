"""Alerts POSTed to an HTTP(S) endpoint, one JSON document per request.

Each attempt has a timeout; failures are retried with exponential backoff and full
jitter, up to ``retries`` times and never past ``deadline_s`` for one ``send``, so a dead
endpoint cannot hold the loop: the alerts stay in the outbox and the loop retries later.
2xx is success; 4xx other than 408/429 is permanent for that alert (retrying would not
help) and is still an error, so the alert is kept and counted, never dropped silently.
Requests carry ``Idempotency-Key: <alert_id>:<revision>`` and, if configured, a bearer
token read from an environment variable (never logged).
"""

from __future__ import annotations

import asyncio
import random
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from rmmwatch import __version__
from rmmwatch.alerts import Alert
from rmmwatch.logging import get_logger, redactor
from rmmwatch.sinks.base import SinkError

log = get_logger("rmmwatch.sinks.webhook")

_RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


class WebhookSink:
    """HTTP POST delivery with timeout, retries, backoff and jitter."""

    name = "webhook"

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        timeout_s: float = 5.0,
        retries: int = 3,
        backoff_s: float = 0.5,
        max_backoff_s: float = 10.0,
        deadline_s: float = 30.0,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError("webhook URL must start with http:// or https://")
        self.url = url
        self.token = token
        redactor.register(token)
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.deadline_s = deadline_s
        self._executor: ThreadPoolExecutor | None = None

    async def open(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="rmmwatch-webhook")

    async def send(self, alerts: Sequence[Alert]) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.deadline_s
        for alert in alerts:
            await self._send_one(alert, deadline)

    async def _send_one(self, alert: Alert, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        attempt = 0
        while True:
            status, detail = await loop.run_in_executor(self._executor, self._post, alert)
            if status is not None and 200 <= status < 300:
                return
            retryable = status is None or status in _RETRYABLE_STATUS
            attempt += 1
            if not retryable or attempt > self.retries:
                raise SinkError(f"webhook: {detail} (alert {alert.alert_id} revision {alert.revision})")
            pause = random.uniform(0, min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1)))
            if loop.time() + pause > deadline:
                raise SinkError(f"webhook: {detail}; gave up at the delivery deadline")
            log.info("webhook_retry", attempt=attempt, pause_s=round(pause, 3), error=detail)
            await asyncio.sleep(pause)

    def _post(self, alert: Alert) -> tuple[int | None, str]:
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"rmmwatch/{__version__}",
            "Idempotency-Key": f"{alert.alert_id}:{alert.revision}",
        }
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(self.url, data=alert.payload, headers=headers, method="POST")  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:  # noqa: S310
                response.read(65536)
                return int(response.status), f"HTTP {response.status}"
        except urllib.error.HTTPError as exc:
            return exc.code, f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            return None, f"cannot reach the webhook: {reason}"

    async def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
