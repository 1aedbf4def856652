#!/usr/bin/env python3
"""Readiness probe for the test Kafka broker, standard library only.

Speaks just enough of the Kafka protocol to prove a listener really serves:
for SSL and SASL_SSL a TLS handshake trusting --ca (hostname checked unless
--no-check-hostname; --cert/--key present a client certificate), then
ApiVersions, then for SASL_* SaslHandshake(PLAIN) and SaslAuthenticate, then a
Metadata request whose broker list must advertise the same host:port that was
dialled.

  probe.py --bootstrap 127.0.0.1:9092
  probe.py --bootstrap 127.0.0.1:9093 --protocol SASL_SSL --ca ca.pem \
      --username '$ConnectionString' --password-env SOME_VAR
  probe.py --bootstrap 127.0.0.1:9094 --protocol SSL --ca ca.pem --cert c.crt --key c.key
  probe.py --bootstrap 127.0.0.1:9092 --and --bootstrap 127.0.0.1:9094 ...   (several, one process)

Exit 0 and one line per listener on stdout when they all serve; exit 1 with
the first failure's reason on stderr otherwise (exit 2 for an authentication
failure).
"""

from __future__ import annotations

import argparse
import os
import socket
import ssl
import struct
import sys

API_METADATA = 3
API_SASL_HANDSHAKE = 17
API_API_VERSIONS = 18
API_SASL_AUTHENTICATE = 36


class ProbeError(Exception):
    pass


class AuthError(ProbeError):
    pass


class Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, fmt: str) -> int:
        (v,) = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += struct.calcsize(fmt)
        return int(v)

    def string(self) -> str | None:
        n = self.take(">h")
        if n < 0:
            return None
        s = self.data[self.pos : self.pos + n].decode("utf-8", "replace")
        self.pos += n
        return s


def enc_str(s: str | None) -> bytes:
    if s is None:
        return struct.pack(">h", -1)
    b = s.encode()
    return struct.pack(">h", len(b)) + b


class Conn:
    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.corr = sock, 0

    def _recv(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ProbeError("connection closed by the broker")
            buf += chunk
        return buf

    def call(self, api: int, version: int, body: bytes) -> Reader:
        self.corr += 1
        header = struct.pack(">hhi", api, version, self.corr) + enc_str("rmmwatch-probe")
        msg = header + body
        self.sock.sendall(struct.pack(">i", len(msg)) + msg)
        (size,) = struct.unpack(">i", self._recv(4))
        r = Reader(self._recv(size))
        if r.take(">i") != self.corr:
            raise ProbeError("correlation id mismatch")
        return r


def api_versions(c: Conn) -> dict[int, tuple[int, int]]:
    r = c.call(API_API_VERSIONS, 0, b"")
    err = r.take(">h")
    if err:
        raise ProbeError(f"ApiVersions error code {err}")
    out = {}
    for _ in range(r.take(">i")):
        key, lo, hi = r.take(">h"), r.take(">h"), r.take(">h")
        out[key] = (lo, hi)
    return out


def pick(versions: dict[int, tuple[int, int]], api: int, usable: range, name: str) -> int:
    lo, hi = versions.get(api, (1, 0))
    ok = [v for v in usable if lo <= v <= hi]
    if not ok:
        raise ProbeError(f"broker supports {name} v{lo}-v{hi}, probe needs one of {list(usable)}")
    return max(ok)


def sasl_plain(c: Conn, versions: dict[int, tuple[int, int]], user: str, password: str) -> None:
    hv = pick(versions, API_SASL_HANDSHAKE, range(1, 2), "SaslHandshake")
    r = c.call(API_SASL_HANDSHAKE, hv, enc_str("PLAIN"))
    err = r.take(">h")
    mechs = [r.string() for _ in range(r.take(">i"))]
    if err:
        raise ProbeError(f"SaslHandshake error code {err}; broker mechanisms: {mechs}")
    av = pick(versions, API_SASL_AUTHENTICATE, range(0, 2), "SaslAuthenticate")
    token = b"\0" + user.encode() + b"\0" + password.encode()
    r = c.call(API_SASL_AUTHENTICATE, av, struct.pack(">i", len(token)) + token)
    err = r.take(">h")
    msg = r.string()
    if err:
        raise AuthError(f"SASL authentication failed (error code {err}): {msg}")


def metadata(c: Conn, versions: dict[int, tuple[int, int]]) -> tuple[list[tuple[int, str, int]], str | None]:
    v = pick(versions, API_METADATA, range(4, 9), "Metadata")
    body = struct.pack(">i", 0) + b"\0"  # no topics, allow_auto_topic_creation=false
    if v >= 8:
        body += b"\0\0"  # include cluster/topic authorized operations = false
    r = c.call(API_METADATA, v, body)
    r.take(">i")  # throttle_time_ms
    brokers = []
    for _ in range(r.take(">i")):
        node, host, port = r.take(">i"), r.string() or "", r.take(">i")
        r.string()  # rack
        brokers.append((node, host, port))
    return brokers, r.string()


def probe(args: argparse.Namespace) -> str:
    host, _, port_s = args.bootstrap.rpartition(":")
    port = int(port_s)
    raw = socket.create_connection((host, port), timeout=args.timeout)
    sock: socket.socket = raw
    try:
        if args.protocol in ("SSL", "SASL_SSL"):
            ctx = ssl.create_default_context(cafile=args.ca)
            ctx.check_hostname = not args.no_check_hostname
            if args.cert:
                ctx.load_cert_chain(args.cert, args.key)
            sock = ctx.wrap_socket(raw, server_hostname=args.server_hostname or host)
        c = Conn(sock)
        versions = api_versions(c)
        if args.protocol.startswith("SASL_"):
            password = os.environ.get(args.password_env or "", "")
            if not password:
                raise ProbeError(f"password env var {args.password_env!r} is empty")
            sasl_plain(c, versions, args.username, password)
        brokers, cluster = metadata(c, versions)
        if not any(h == host and p == port for _, h, p in brokers):
            raise ProbeError(f"metadata does not advertise {host}:{port}: {brokers}")
        return f"ok {args.bootstrap} cluster={cluster} brokers={brokers}"
    finally:
        sock.close()
        raw.close()


def main(argv: list[str]) -> int:
    """Probe every listener given (groups of options separated by ``--and``); stop at the first that fails."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--protocol", default="PLAINTEXT", choices=("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"))
    ap.add_argument("--ca")
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("--no-check-hostname", action="store_true")
    ap.add_argument("--server-hostname")
    ap.add_argument("--username", default="$ConnectionString")
    ap.add_argument("--password-env")
    ap.add_argument("--timeout", type=float, default=5.0)
    groups: list[list[str]] = [[]]
    for arg in argv:
        if arg == "--and":
            groups.append([])
        else:
            groups[-1].append(arg)
    for group in groups:
        args = ap.parse_args(group)
        try:
            print(probe(args))
        except AuthError as e:
            print(f"probe {args.bootstrap}: {e}", file=sys.stderr)
            return 2
        except (OSError, ProbeError, struct.error, ValueError) as e:
            print(f"probe {args.bootstrap}: {type(e).__name__}: {e}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
