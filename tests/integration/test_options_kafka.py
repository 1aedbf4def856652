"""Every Kafka security mode and connection option of ``rmmwatch run``, on the real broker, with both clients.

The test broker (``scripts/services/kafka.sh``) has one listener per mode: PLAINTEXT, SSL with client
certificates required (mutual TLS), SASL_PLAINTEXT, SASL_SSL, and MISNAMED (TLS whose certificate names only
``broker.invalid``). Its SASL listeners take PLAIN (the Event Hubs ``$ConnectionString`` user and a user of
our own), SCRAM-SHA-256 and SCRAM-SHA-512 users made by ``StorageTool format --add-scram``, and OAUTHBEARER
checked by Kafka's unsecured validator. Certificates come from a script-made CA, plus a second, unrelated CA.

* Modes: options parsed exactly as ``rmmwatch run`` parses them (``options_tools.run_config``: the parser,
  the environment, ``*_FILE`` secrets) open the source, which consumes a short topic. A SCRAM user has no
  PLAIN credential and the reverse, so consuming proves the mechanism the options named was the one used.
* The same through ``rmmwatch run`` subprocesses for a few modes (mutual TLS, SCRAM from a file, OAUTHBEARER
  with a token provider module).
* Refusals: ``rmmwatch run`` exits 1 with a message that says why (no client certificate, a certificate of
  another CA, a broker certificate of an unknown CA, a hostname mismatch, a wrong SCRAM password) and never
  contains a secret. They run as parallel processes, started once for the module.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from rmmwatch.config import RunConfig
from rmmwatch.kql.datetimes import parse_datetime
from rmmwatch.wiring import source_for
from tests.helpers import envelope, row, service_env
from tests.integration.conftest import RMMWATCH, DetectorFactory, wait_until
from tests.integration.kafka_tools import create_topic, produce
from tests.integration.options_tools import run_config, secret_file

CLIENTS = ("aiokafka", "confluent")
TOKEN_PROVIDER = "tests.integration.options_tools:UnsecuredJwsProvider"


@pytest.fixture(params=CLIENTS)
def client(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _env(name: str) -> str:
    return service_env(f"RMMWATCH_TEST_{name}")


def _source_args(client: str, topic: str, *extra: str) -> list[str]:
    return ["--source", "kafka", "--kafka-client", client, "--kafka-topics", topic, "--kafka-group-id", f"g-{topic}",
            "--kafka-session-timeout-ms", "6000", "--store", "memory", *extra]  # fmt: skip


async def _consume(config: RunConfig, expect: int, timeout_s: float = 60) -> list[bytes]:
    """Start the source ``config`` describes and read until ``expect`` messages (and one idle fetch) arrived."""
    source = source_for(config)
    await source.start()
    received: list[bytes] = []
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            batch = await source.fetch(0.5)
            if batch is None:
                if len(received) >= expect:
                    break
                continue
            received.extend(bytes(m) for m in batch.messages)
    finally:
        await source.close()
    return received


async def _fill(topic: str, count: int) -> list[bytes]:
    values = [orjson.dumps({"n": i, "topic": topic}) for i in range(count)]
    bootstrap = _env("KAFKA_BOOTSTRAP")
    await create_topic(bootstrap, topic, 1)
    await produce(bootstrap, topic, values, 1)
    return values


# -- security modes -------------------------------------------------------------------------------------------


def _mode(mode: str, tmp_path: Path) -> tuple[list[str], dict[str, str]]:
    """The options (command line, environment) of a security mode against the test broker."""
    ca, cert, key = _env("TLS_CA"), _env("TLS_CLIENT_CERT"), _env("TLS_CLIENT_KEY")
    mutual_tls = ["--kafka-ssl-ca-file", ca, "--kafka-ssl-cert-file", cert, "--kafka-ssl-key-file", key]
    sasl_ssl = ["--kafka-bootstrap-servers", _env("KAFKA_SASL_BOOTSTRAP"), "--kafka-security-protocol", "SASL_SSL",
                "--kafka-ssl-ca-file", ca]  # fmt: skip
    sasl_plaintext = ["--kafka-bootstrap-servers", _env("KAFKA_SASL_PLAINTEXT_BOOTSTRAP"),
                      "--kafka-security-protocol", "SASL_PLAINTEXT"]  # fmt: skip

    def user(mechanism: str, *, from_file: bool) -> tuple[list[str], dict[str, str]]:
        prefix = {
            "PLAIN": "KAFKA_PLAIN",
            "SCRAM-SHA-256": "KAFKA_SCRAM_SHA_256",
            "SCRAM-SHA-512": "KAFKA_SCRAM_SHA_512",
        }
        name, password = _env(f"{prefix[mechanism]}_USERNAME"), _env(f"{prefix[mechanism]}_PASSWORD")
        args = ["--kafka-sasl-mechanism", mechanism, "--kafka-sasl-username", name]
        if from_file:
            return args, {"RMMWATCH_KAFKA_SASL_PASSWORD_FILE": secret_file(tmp_path, "kafka-password", password)}
        return [*args, "--kafka-sasl-password", password], {}

    oauth = ["--kafka-sasl-mechanism", "OAUTHBEARER", "--kafka-oauth-token-provider", TOKEN_PROVIDER]
    ssl_port = _env("KAFKA_SSL_BOOTSTRAP")
    if mode == "SSL, mutual TLS, dialled by IP":
        return ["--kafka-bootstrap-servers", ssl_port, "--kafka-security-protocol", "SSL", *mutual_tls], {}
    if mode == "SSL, mutual TLS, dialled by name, options from the environment":
        return [], {
            "RMMWATCH_KAFKA_BOOTSTRAP_SERVERS": ssl_port.replace("127.0.0.1", "localhost"),
            "RMMWATCH_KAFKA_SECURITY_PROTOCOL": "SSL",
            "RMMWATCH_KAFKA_SSL_CA_FILE": ca,
            "RMMWATCH_KAFKA_SSL_CERT_FILE": cert,
            "RMMWATCH_KAFKA_SSL_KEY_FILE": key,
            "RMMWATCH_KAFKA_SSL_CHECK_HOSTNAME": "true",
        }
    if mode == "SSL, hostname check off, misnamed certificate":
        return ["--kafka-bootstrap-servers", _env("KAFKA_MISNAMED_BOOTSTRAP"), "--kafka-security-protocol", "SSL",
                "--kafka-ssl-ca-file", ca, "--kafka-ssl-check-hostname", "false"], {}  # fmt: skip
    if mode == "Event Hubs preset, connection string from a file":
        connection = secret_file(tmp_path, "eventhubs", _env("EVENTHUBS_CONNECTION_STRING"))
        return ["--kafka-bootstrap-servers", _env("KAFKA_SASL_BOOTSTRAP"), "--kafka-ssl-ca-file", ca], {
            "RMMWATCH_EVENTHUBS_CONNECTION_STRING_FILE": connection
        }
    protocol, _, mechanism = mode.partition(" ")
    base = sasl_ssl if protocol == "SASL_SSL" else sasl_plaintext
    if mechanism == "OAUTHBEARER":
        return [*base, *oauth], {}
    from_file = mechanism.endswith("password file")
    args, env = user(mechanism.split(",")[0], from_file=from_file)
    return [*base, *args], env


MODES = [
    pytest.param(client, mode, id=f"{client}-{mode}")
    for mode in (
        "SSL, mutual TLS, dialled by IP",
        "SSL, mutual TLS, dialled by name, options from the environment",
        "SSL, hostname check off, misnamed certificate",
        "SASL_SSL PLAIN",
        "SASL_PLAINTEXT PLAIN, password file",
        "SASL_SSL SCRAM-SHA-256",
        "SASL_SSL SCRAM-SHA-512, password file",
        "SASL_PLAINTEXT SCRAM-SHA-256, password file",
        "SASL_PLAINTEXT SCRAM-SHA-512",
        "SASL_SSL OAUTHBEARER",
        "SASL_PLAINTEXT OAUTHBEARER",
        "Event Hubs preset, connection string from a file",
    )
    for client in CLIENTS
    # librdkafka cannot call an aiokafka token provider; that refusal is tests/unit/test_kafka_settings.py's.
    if not (client == "confluent" and mode.endswith("OAUTHBEARER"))
]


@pytest.mark.parametrize(("client", "mode"), MODES)
async def test_security_mode_consumes_a_topic(client: str, mode: str, topic_name: str, tmp_path: Path) -> None:
    """The options of each security mode connect to its listener, authenticate and read every message."""
    values = await _fill(topic_name, 20)
    args, env = _mode(mode, tmp_path)
    config = run_config(*_source_args(client, topic_name, *args), env=env)
    assert sorted(await _consume(config, len(values))) == sorted(values)


async def test_client_id_is_what_the_broker_sees(client: str, topic_name: str) -> None:
    """--kafka-client-id is the client id of the group member the broker describes."""
    await _fill(topic_name, 3)
    client_id = f"rmmwatch-{client}-{topic_name}"
    config = run_config(*_source_args(client, topic_name, "--kafka-bootstrap-servers", _env("KAFKA_BOOTSTRAP"),
                                      "--kafka-client-id", client_id))  # fmt: skip
    source = source_for(config)
    await source.start()
    admin = AIOKafkaAdminClient(bootstrap_servers=_env("KAFKA_BOOTSTRAP"))
    await admin.start()
    try:
        members: list[str] = []
        deadline = time.monotonic() + 30
        while not members and time.monotonic() < deadline:
            await source.fetch(0.2)
            described = await admin.describe_consumer_groups([f"g-{topic_name}"])
            members = [m[1] for g in described[0].groups if g[2] == "Stable" for m in g[5]]
        assert members == [client_id]
    finally:
        await admin.close()
        await source.close()


def test_rebalance_wait_and_session_timeout_reach_the_source(client: str) -> None:
    """--kafka-rebalance-wait and --kafka-session-timeout-ms are what the source runs with (their behaviour on the
    broker: tests/integration/test_kafka_source.py's rebalance test and test_kafka.py's end-to-end tests)."""
    args = _source_args(client, "t-unused", "--kafka-bootstrap-servers", "127.0.0.1:9",
                        "--kafka-rebalance-wait", "7.5", "--kafka-session-timeout-ms", "12000")  # fmt: skip
    source = source_for(run_config(*args))
    assert source.rebalance_wait_s == 7.5  # type: ignore[attr-defined]
    assert source.settings.session_timeout_ms == 12000  # type: ignore[attr-defined]


# -- --kafka-start: the ISO 8601 forms ------------------------------------------------------------------------

OLD, NEW = "2021-03-01T10:00:00Z", "2021-03-03T10:00:00Z"  # record timestamps (CreateTime)


@pytest.fixture(scope="module")
def dated_topic() -> tuple[str, list[bytes], list[bytes]]:
    """A topic with three records stamped OLD, then three stamped NEW (made once for the module)."""
    topic = f"t-dated-{os.getpid()}-{time.monotonic_ns() % 10**6}"
    old = [orjson.dumps({"at": OLD, "n": i}) for i in range(3)]
    new = [orjson.dumps({"at": NEW, "n": i}) for i in range(3)]

    async def fill() -> None:
        bootstrap = service_env("RMMWATCH_TEST_KAFKA_BOOTSTRAP")
        await create_topic(bootstrap, topic, 1)
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await producer.start()
        try:
            for stamp, values in ((OLD, old), (NEW, new)):
                for value in values:
                    await producer.send_and_wait(topic, value, timestamp_ms=parse_datetime(stamp) // 10_000)
        finally:
            await producer.stop()

    asyncio.run(fill())
    return topic, old, new


@pytest.mark.parametrize(
    ("start", "expected"),
    [
        pytest.param("2021-03-02", "new", id="date only"),
        pytest.param("2021-03-02 12:30", "new", id="space, no seconds, no zone (UTC)"),
        pytest.param("2021-03-02T00:00:00.1234567Z", "new", id="seven fractional digits"),
        # Offsets that change the answer when ignored: 08:30Z is before NEW, 10:30Z after it.
        pytest.param("2021-03-03T10:30:00+02:00", "new", id="positive offset"),
        # 11:00Z on March 1 is after OLD; 06:00Z would be before it.
        pytest.param("2021-03-01T06:00:00-05:00", "new", id="negative offset"),
        pytest.param("2021-03-01T10:00:00Z", "all", id="exactly the oldest timestamp"),
    ],
)
async def test_kafka_start_takes_every_iso_form(
    client: str, dated_topic: tuple[str, list[bytes], list[bytes]], start: str, expected: str
) -> None:
    """A new group starts at the first record at or after --kafka-start, whatever ISO 8601 form gives the time."""
    topic, old, new = dated_topic
    group = f"g-{topic}-{client}-{abs(hash(start))}"
    args = _source_args(client, topic, "--kafka-bootstrap-servers", _env("KAFKA_BOOTSTRAP"), "--kafka-start", start)
    config = run_config(*[group if a == f"g-{topic}" else a for a in args])
    want = new if expected == "new" else old + new
    assert await _consume(config, len(want)) == want


# -- through rmmwatch run --------------------------------------------------------------------------------------


def _alerting_messages(topic: str, devices: int) -> list[bytes]:
    now = time.time_ns() // 100
    return [envelope(row(device=f"{topic}-dev-{i}", ticks=now - 600 * 10_000_000)) for i in range(devices)]


CLI_MODES = [
    pytest.param("confluent", "SSL, mutual TLS, dialled by IP", id="confluent-mutual TLS"),
    pytest.param("aiokafka", "SSL, mutual TLS, dialled by IP", id="aiokafka-mutual TLS"),
    pytest.param("confluent", "SASL_SSL SCRAM-SHA-512, password file", id="confluent-SCRAM-SHA-512 password file"),
    pytest.param("aiokafka", "SASL_PLAINTEXT SCRAM-SHA-256, password file", id="aiokafka-SCRAM-SHA-256 password file"),
    pytest.param("aiokafka", "SASL_SSL OAUTHBEARER", id="aiokafka-OAUTHBEARER token provider"),
]


@pytest.mark.parametrize(("client", "mode"), CLI_MODES)
def test_run_consumes_and_alerts_in_security_mode(
    client: str, mode: str, topic_name: str, tmp_path: Path, detectors: DetectorFactory
) -> None:
    """``rmmwatch run`` with a mode's options consumes, alerts once per device, exits 0, and logs no secret."""
    messages = _alerting_messages(topic_name, 5)
    asyncio.run(create_topic(_env("KAFKA_BOOTSTRAP"), topic_name, 1))
    asyncio.run(produce(_env("KAFKA_BOOTSTRAP"), topic_name, messages, 1))
    args, env = _mode(mode, tmp_path)
    alerts = tmp_path / "alerts.jsonl"
    source = [a for a in _source_args(client, topic_name) if a not in ("--store", "memory")]
    detector = detectors(*source, *args, "--data-dir", str(tmp_path / "data"), "--sink", f"jsonl:{alerts}",
                         "--tick-interval", "0.2", env=env)  # fmt: skip
    wait_until(
        lambda: (
            detector.metric("rmmwatch_messages_total") >= len(messages)
            and detector.metric("rmmwatch_source_commits_total") > 0
            and detector.metric("rmmwatch_outbox_pending") == 0
        ),
        90,
        f"the detector to consume over {mode}",
    )
    assert detector.stop() == 0, detector.logs()[-3000:]
    documents = [orjson.loads(line) for line in alerts.read_bytes().splitlines()]
    assert sorted(d["group"]["DeviceId"] for d in documents) == sorted(f"{topic_name}-dev-{i}" for i in range(5))
    logs = detector.logs()
    for name in ("KAFKA_SCRAM_SHA_256_PASSWORD", "KAFKA_SCRAM_SHA_512_PASSWORD", "KAFKA_PLAIN_PASSWORD"):
        assert _env(name) not in logs


# -- refusals -----------------------------------------------------------------------------------------------------

WRONG_PASSWORD = "not-the-scram-password-5d1e"


@dataclass
class Refusal:
    """One ``rmmwatch run`` expected to refuse: its process, when it started, its output file."""

    process: subprocess.Popen[bytes]
    started: float
    output: Path

    def result(self) -> tuple[int, float, str]:
        code = self.process.wait(timeout=120)
        return code, time.monotonic() - self.started, self.output.read_text(errors="replace")


REFUSALS = {
    "no client certificate": ("the broker requires a client certificate", "give --kafka-ssl-cert-file"),
    "client certificate of another CA": ("the broker refused the client certificate", "not signed by a CA"),
    "broker certificate of an unknown CA": ("certificate verify failed (unknown CA)", "other-ca.pem"),
    "hostname mismatch": ("TLS hostname mismatch", "not valid for '127.0.0.1'"),
    "wrong SCRAM password": ("SASL authentication failed: wrong username or password", "SCRAM-SHA-512"),
}


def _refusal_args(case: str, secrets: Path) -> tuple[list[str], dict[str, str]]:
    ca, ssl_port = _env("TLS_CA"), _env("KAFKA_SSL_BOOTSTRAP")
    tls = ["--kafka-security-protocol", "SSL", "--kafka-bootstrap-servers", ssl_port]
    if case == "no client certificate":
        return [*tls, "--kafka-ssl-ca-file", ca], {}
    if case == "client certificate of another CA":
        return [*tls, "--kafka-ssl-ca-file", ca, "--kafka-ssl-cert-file", _env("TLS_OTHER_CLIENT_CERT"),
                "--kafka-ssl-key-file", _env("TLS_OTHER_CLIENT_KEY")], {}  # fmt: skip
    if case == "broker certificate of an unknown CA":
        return [*tls, "--kafka-ssl-ca-file", _env("TLS_OTHER_CA"), "--kafka-ssl-cert-file", _env("TLS_CLIENT_CERT"),
                "--kafka-ssl-key-file", _env("TLS_CLIENT_KEY")], {}  # fmt: skip
    if case == "hostname mismatch":
        return ["--kafka-security-protocol", "SSL", "--kafka-bootstrap-servers", _env("KAFKA_MISNAMED_BOOTSTRAP"),
                "--kafka-ssl-ca-file", ca], {}  # fmt: skip
    assert case == "wrong SCRAM password"
    password = secret_file(secrets, "wrong-scram-password", WRONG_PASSWORD)
    return ["--kafka-security-protocol", "SASL_SSL", "--kafka-bootstrap-servers", _env("KAFKA_SASL_BOOTSTRAP"),
            "--kafka-ssl-ca-file", ca, "--kafka-sasl-mechanism", "SCRAM-SHA-512",
            "--kafka-sasl-username", _env("KAFKA_SCRAM_SHA_512_USERNAME")], {
        "RMMWATCH_KAFKA_SASL_PASSWORD_FILE": password}  # fmt: skip


@pytest.fixture(scope="module", autouse=True)
def refusals(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[tuple[str, str], Refusal]]:
    """Every refusal case with both clients, started together when the module starts (if a refusal test is
    selected): they wait on the broker and on librdkafka's connect timeout, not on the CPU, so they overlap
    with the module's other tests."""
    started: dict[tuple[str, str], Refusal] = {}
    selected = any(
        item.module is request.module and item.name.startswith("test_refusal_") for item in request.session.items
    )
    if not selected:
        yield started
        return
    directory = tmp_path_factory.mktemp("refusals")
    try:
        for client in CLIENTS:
            for case in REFUSALS:
                args, env = _refusal_args(case, directory)
                output = directory / f"{client}-{case.replace(' ', '-')}.log"
                with open(output, "wb") as handle:
                    process = subprocess.Popen(
                        [*RMMWATCH, "run", *_source_args(client, "t-refused"), "--metrics-port", "-1", *args],
                        stdout=handle, stderr=subprocess.STDOUT, env={**os.environ, **env},
                    )  # fmt: skip
                started[(client, case)] = Refusal(process, time.monotonic(), output)
        yield started
    finally:
        for refusal in started.values():
            if refusal.process.poll() is None:
                refusal.process.kill()
                refusal.process.wait()


@pytest.mark.parametrize("case", list(REFUSALS))
def test_refusal_exits_1_saying_why_without_secrets(
    client: str, case: str, refusals: dict[tuple[str, str], Refusal]
) -> None:
    """A refused connection ends ``rmmwatch run`` with exit 1 and a reason, not just 'Unable to bootstrap'."""
    code, elapsed, output = refusals[(client, case)].result()
    assert code == 1, output[-3000:]
    events = [orjson.loads(line) for line in output.splitlines() if line.startswith("{")]
    errors = [e["error"] for e in events if e.get("event") == "cannot_start"]
    assert len(errors) == 1, output[-3000:]
    assert errors[0].startswith("cannot connect to Kafka at 127.0.0.1:"), errors[0]
    for part in REFUSALS[case]:
        assert part in errors[0], errors[0]
    for secret in (WRONG_PASSWORD, _env("KAFKA_SCRAM_SHA_512_PASSWORD"), _env("EVENTHUBS_CONNECTION_STRING")):
        assert secret not in output
    assert elapsed < 60, f"refused after {elapsed:.0f} s"
