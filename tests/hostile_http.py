"""HTTP endpoints that misbehave on purpose, as real servers on 127.0.0.1 (raw sockets, one thread each).

A webhook receiver in production can redirect, drip-feed, answer garbage, hang, reset the
connection or throttle with ``Retry-After``. :class:`HostileEndpoint` does each of those on
demand (``behaviour``, or a queue of one-shot ``script`` behaviours consumed one per request)
and records every request it read (method, path, headers, body, when) and every connection,
so a test can prove what reached which host.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from dataclasses import dataclass, field

#: The behaviours; the ones with an argument are written ``name:argument``.
BEHAVIOURS = (
    "ok",  # 200 with a small body
    "redirect",  # ``redirect:STATUS`` to ``redirect_to``
    "garbage_status",  # a status line that is not HTTP
    "many_headers",  # 200 with 200 headers
    "long_header",  # a 256 KiB header line
    "drip",  # the status line and a header, one byte every ``drip_interval_s``, never finished
    "endless_body",  # 200 with Content-Length 1 MB, the body one byte every ``drip_interval_s``
    "hang",  # reads the request, never answers
    "reset",  # reads the request, then resets the connection (RST)
    "status",  # ``status:CODE`` (optionally ``status:CODE:RETRY_AFTER``)
)


@dataclass
class Request:
    """One request as the endpoint read it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic() when it was read


@dataclass
class HostileEndpoint:
    """A TCP server on 127.0.0.1 speaking (or mangling) HTTP/1.1; ``close()`` stops it."""

    behaviour: str = "ok"
    script: list[str] = field(default_factory=list)
    redirect_to: str = "http://127.0.0.1:9/elsewhere"
    drip_interval_s: float = 0.2
    requests: list[Request] = field(default_factory=list)
    connections: int = 0

    def __post_init__(self) -> None:
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.1)
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._open: list[socket.socket] = []
        accept = threading.Thread(target=self._accept, name="hostile-accept", daemon=True)
        accept.start()
        self._threads.append(accept)

    @property
    def port(self) -> int:
        return int(self._server.getsockname()[1])

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.origin}/alerts"

    def bodies(self) -> list[bytes]:
        """Bodies of the requests answered or not: what the endpoint was sent."""
        with self._lock:
            return [r.body for r in self.requests]

    def close(self) -> None:
        self._stopping.set()
        with self._lock:
            for connection in self._open:
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(timeout=10)
        self._server.close()

    # -- the server ---------------------------------------------------------------------
    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                connection, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.connections += 1
                self._open.append(connection)
            worker = threading.Thread(target=self._serve, args=(connection,), name="hostile-conn", daemon=True)
            worker.start()
            self._threads.append(worker)

    def _serve(self, connection: socket.socket) -> None:
        try:
            connection.settimeout(30)
            request = self._read_request(connection)
            if request is None:
                return
            with self._lock:
                self.requests.append(request)
                behaviour = self.script.pop(0) if self.script else self.behaviour
            self._answer(connection, behaviour)
        except OSError:
            pass
        finally:
            with self._lock:
                if connection in self._open:
                    self._open.remove(connection)
            with contextlib.suppress(OSError):
                connection.close()

    @staticmethod
    def _read_request(connection: socket.socket) -> Request | None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = connection.recv(65536)
            if not chunk:
                return None
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        while len(body) < length:
            chunk = connection.recv(65536)
            if not chunk:
                break
            body += chunk
        return Request(method, path, headers, body, time.monotonic())

    def _drip(self, connection: socket.socket, data: bytes) -> None:
        """Send ``data`` one byte at a time, then one more byte forever (until stopped)."""
        for byte in data:
            if self._stopping.wait(self.drip_interval_s):
                return
            connection.sendall(bytes([byte]))
        while not self._stopping.wait(self.drip_interval_s):
            connection.sendall(b"a")

    def _answer(self, connection: socket.socket, behaviour: str) -> None:
        name, _, argument = behaviour.partition(":")
        if name == "ok":
            connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        elif name == "redirect":
            status = argument or "301"
            connection.sendall(
                f"HTTP/1.1 {status} Moved\r\nLocation: {self.redirect_to}\r\nContent-Length: 0\r\n"
                "Connection: close\r\n\r\n".encode()
            )
        elif name == "garbage_status":
            connection.sendall(b"HELLO THERE, THIS IS NOT HTTP\r\n\r\n")
        elif name == "many_headers":
            headers = "".join(f"X-Header-{i}: {i}\r\n" for i in range(200))
            connection.sendall(f"HTTP/1.1 200 OK\r\n{headers}Content-Length: 2\r\nConnection: close\r\n\r\nok".encode())
        elif name == "long_header":
            connection.sendall(b"HTTP/1.1 200 OK\r\nX-Long: " + b"a" * 262144 + b"\r\nContent-Length: 0\r\n\r\n")
        elif name == "drip":
            self._drip(connection, b"HTTP/1.1 200 OK\r\nX-Drip: ")
        elif name == "endless_body":
            connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n")
            self._drip(connection, b"")
        elif name == "hang":
            self._stopping.wait()
        elif name == "reset":
            connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        elif name == "status":
            code, _, retry_after = argument.partition(":")
            extra = f"Retry-After: {retry_after}\r\n" if retry_after else ""
            connection.sendall(
                f"HTTP/1.1 {code} Status\r\n{extra}Content-Length: 0\r\nConnection: close\r\n\r\n".encode()
            )
        else:
            raise ValueError(f"unknown behaviour {behaviour!r}: one of {BEHAVIOURS}")
