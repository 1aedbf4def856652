"""Helpers for the option tests (``test_options_*.py``): options parsed like ``rmmwatch run``, an OAUTHBEARER token
provider the test broker accepts, a scriptable webhook receiver, and files holding secrets.

``run_config`` goes through the command's own parser, ``resolve`` (command line, then the given environment,
then defaults; ``*_FILE`` secrets included) and ``RunConfig.from_values``, so a test that builds a source from it
exercises the same option wiring as ``rmmwatch run`` without a process per case.
"""

from __future__ import annotations

import base64
import http.server
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from aiokafka.abc import AbstractTokenProvider

from rmmwatch.cli import build_parser
from rmmwatch.config import RunConfig, resolve


def run_config(*args: str, env: Mapping[str, str] | None = None) -> RunConfig:
    """The configuration ``rmmwatch run ARGS`` would have in environment ``env`` (only ``env``: not os.environ)."""
    namespace = build_parser().parse_args(["run", *args])
    return RunConfig.from_values(resolve(namespace, environ=dict(env or {})))


def secret_file(directory: Path, name: str, value: str) -> str:
    """A file holding ``value`` (with a trailing newline, as ``echo`` and Kubernetes secrets write it)."""
    path = directory / name
    path.write_text(value + "\n")
    path.chmod(0o600)
    return str(path)


def _b64url(document: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(document)).rstrip(b"=").decode()


class UnsecuredJwsProvider(AbstractTokenProvider):  # type: ignore[misc]
    """An unsigned JWS (``alg: none``) with ``sub``, ``iat``, ``exp``: what Kafka's unsecured validator accepts.

    ``--kafka-oauth-token-provider tests.integration.options_tools:UnsecuredJwsProvider`` (a class is a callable
    returning a provider). The test broker's SASL listeners validate OAUTHBEARER with
    ``OAuthBearerUnsecuredValidatorCallbackHandler``; a real deployment's provider fetches a signed token instead.
    """

    subject = "rmmwatch-oauth-test"

    async def token(self) -> str:
        now = int(time.time())
        claims = {"sub": self.subject, "iat": now, "exp": now + 3600}
        return f"{_b64url({'alg': 'none'})}.{_b64url(claims)}."


@dataclass
class WebhookRequest:
    """One POST the receiver answered (or held)."""

    key: str
    authorization: str | None
    body: bytes
    status: int


@dataclass
class WebhookReceiver:
    """A local HTTP endpoint whose answers a test scripts: a status per attempt, or a stall.

    ``answers`` is consumed one entry per request (``"stall"`` holds the request open for ``stall_s``); when it is
    empty, ``default`` answers. ``holding`` counts requests being held right now.
    """

    port: int = 0
    answers: list[int | str] = field(default_factory=list)
    default: int = 200
    stall_s: float = 5.0
    requests: list[WebhookRequest] = field(default_factory=list)
    holding: int = 0
    seen_while_holding: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/alerts"

    def delivered(self) -> list[dict[str, object]]:
        """The alert documents answered with 2xx, in arrival order."""
        with self.lock:
            return [orjson.loads(r.body) for r in self.requests if 200 <= r.status < 300]

    def attempts(self, key: str) -> int:
        with self.lock:
            return sum(1 for r in self.requests if r.key == key)


@contextmanager
def webhook_receiver(**settings: object) -> Iterator[WebhookReceiver]:
    """Serve a :class:`WebhookReceiver` on 127.0.0.1 (threaded: a held request does not block the next)."""
    receiver = WebhookReceiver(**settings)  # type: ignore[arg-type]

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with receiver.lock:
                answer = receiver.answers.pop(0) if receiver.answers else receiver.default
                if receiver.holding:
                    receiver.seen_while_holding += 1
                if answer == "stall":
                    receiver.holding += 1
            if answer == "stall":
                time.sleep(receiver.stall_s)
                with receiver.lock:
                    receiver.holding -= 1
                status = 200
            else:
                status = int(answer)
            with receiver.lock:
                receiver.requests.append(
                    WebhookRequest(
                        self.headers.get("Idempotency-Key", ""),
                        self.headers.get("Authorization"),
                        body,
                        status if answer != "stall" else 0,
                    )
                )
            try:
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()
            except OSError:
                pass  # the client gave up on a held request

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    receiver.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, name="webhook-receiver", daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
