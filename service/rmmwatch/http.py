"""The metrics and health HTTP server, on the event loop itself.

Serving from the loop (not a thread) makes ``/healthz`` an honest liveness probe: if the
loop is stuck, the probe times out. ``/readyz`` reports the app's own readiness (source
assigned, store reachable). Nothing here echoes request data back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from rmmwatch.logging import get_logger

log = get_logger("rmmwatch.http")

HealthCheck = Callable[[], tuple[bool, str]]


@dataclass(eq=False)
class HealthServer:
    """``/metrics``, ``/healthz``, ``/readyz``; plain HTTP/1.1, one request per connection."""

    registry: CollectorRegistry
    live: HealthCheck
    ready: HealthCheck
    host: str = "0.0.0.0"  # noqa: S104  (a pod's metrics port listens on all interfaces)
    port: int = 9464
    _server: asyncio.Server | None = field(default=None, init=False)

    async def start(self) -> int:
        """Start listening; returns the bound port (useful with port 0)."""
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        sockets = self._server.sockets
        self.port = sockets[0].getsockname()[1] if sockets else self.port
        log.info("http_listening", host=self.host, port=self.port, paths=["/metrics", "/healthz", "/readyz"])
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = await asyncio.wait_for(reader.readline(), timeout=5)
            # Drain headers (bounded) so clients see a clean response.
            for _ in range(100):
                line = await asyncio.wait_for(reader.readline(), timeout=5)
                if line in (b"\r\n", b"\n", b""):
                    break
            parts = request_line.decode("latin-1").split()
            method = parts[0] if parts else ""
            path = parts[1].split("?", 1)[0] if len(parts) > 1 else ""
            status, content_type, body = self._route(method, path)
            head = (
                f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n"
            ).encode("latin-1")
            writer.write(head if method == "HEAD" else head + body)
            await writer.drain()
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with suppress(Exception):
                await writer.wait_closed()

    def _route(self, method: str, path: str) -> tuple[str, str, bytes]:
        if method not in ("GET", "HEAD"):
            return "405 Method Not Allowed", "text/plain", b"method not allowed\n"
        if path == "/metrics":
            return "200 OK", CONTENT_TYPE_LATEST, generate_latest(self.registry)
        if path in ("/healthz", "/livez"):
            ok, detail = self.live()
            return ("200 OK" if ok else "503 Service Unavailable"), "text/plain", f"{detail}\n".encode()
        if path == "/readyz":
            ok, detail = self.ready()
            return ("200 OK" if ok else "503 Service Unavailable"), "text/plain", f"{detail}\n".encode()
        if path == "/":
            return "200 OK", "text/plain", b"rmmwatch: /metrics /healthz /readyz\n"
        return "404 Not Found", "text/plain", b"not found\n"
