"""The Kafka connection diagnosis without a broker: what it says for a closed port, a listener that is not TLS,
a TLS alert's name, and where it says the client connected. The broker's own refusals (client certificates,
unknown CA, hostname mismatch, SASL) are tried on the real broker in tests/integration/test_options_kafka.py.
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator

import pytest

from rmmwatch.kafka_settings import KafkaSettings, _tls_alert, connect_failure, connection_target


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # nothing listens once the socket is closed


@pytest.fixture
def http_port() -> Iterator[int]:
    """A listener that answers every connection with a plain-text HTTP error, like a wrong port would."""
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield int(server.getsockname()[1])
    stop.set()
    thread.join()
    server.close()


async def test_a_closed_port_is_named(closed_port: int) -> None:
    """Nothing listening: the message says so, with the address, instead of the client's generic error."""
    message = await connect_failure(KafkaSettings(bootstrap_servers=f"127.0.0.1:{closed_port}"), "client said")
    assert message.startswith(f"cannot connect to Kafka at 127.0.0.1:{closed_port} (PLAINTEXT): ")
    assert f"nothing accepts connections at 127.0.0.1:{closed_port}" in message


async def test_tls_to_a_listener_that_does_not_speak_it(http_port: int) -> None:
    """SSL settings against a plain-text listener: 'does not speak TLS', not a certificate error."""
    settings = KafkaSettings(bootstrap_servers=f"127.0.0.1:{http_port}", security_protocol="SSL")
    message = await connect_failure(settings, "client said")
    assert "the listener does not speak TLS" in message, message


async def test_a_listener_that_is_not_kafka_is_named(http_port: int) -> None:
    """A PLAINTEXT client against an HTTP listener: 'does not speak the Kafka protocol', not the client's error."""
    message = await connect_failure(KafkaSettings(bootstrap_servers=f"127.0.0.1:{http_port}"), "client said")
    assert message.endswith("the listener does not speak the Kafka protocol (is this the Kafka port?)"), message


@pytest.mark.parametrize(
    ("text", "alert"),
    [
        ("[SSL: SSLV3_ALERT_BAD_CERTIFICATE] sslv3 alert bad certificate (_ssl.c:2580)", "bad certificate"),
        (
            "[SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] tlsv13 alert certificate required (_ssl.c:2580)",
            "certificate required",
        ),
        ("[SSL: TLSV1_ALERT_UNKNOWN_CA] tlsv1 alert unknown ca (_ssl.c:1006)", "unknown ca"),
        ("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: self-signed certificate (_ssl.c:1006)", None),
    ],
)
def test_tls_alert_names(text: str, alert: str | None) -> None:
    """The alert a peer sent is read from OpenSSL's text; a local verification failure is no alert."""
    assert _tls_alert(ssl.SSLError(1, text)) == alert


def test_connection_target_names_user_and_mechanism_never_the_password() -> None:
    settings = KafkaSettings(bootstrap_servers="b:9093", security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512",
                             sasl_username="svc", sasl_password="s3cret-value")  # fmt: skip
    assert connection_target(settings) == "b:9093 (SASL_SSL, SASL SCRAM-SHA-512 as svc)"
    oauth = KafkaSettings(bootstrap_servers="b:9093", security_protocol="SASL_SSL", sasl_mechanism="OAUTHBEARER")
    assert connection_target(oauth) == "b:9093 (SASL_SSL, SASL OAUTHBEARER)"
    assert connection_target(KafkaSettings(bootstrap_servers="b:9092")) == "b:9092 (PLAINTEXT)"
