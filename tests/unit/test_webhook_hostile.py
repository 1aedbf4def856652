"""The webhook sink against endpoints that misbehave on purpose (real HTTP servers on 127.0.0.1).

Whatever the endpoint does (redirect, garbage, drip-feed, hang, reset, throttle), ``send``
either delivers or raises ``SinkError`` within its deadline: never another exception, never a
hang, never a success that did not happen, and the bearer token goes to the configured origin
only. ``Retry-After`` is honoured up to a cap, never past the send's deadline.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from rmmwatch.alerts import Alert
from rmmwatch.events import Detector
from rmmwatch.sinks.base import SinkError
from rmmwatch.sinks.webhook import WebhookSink, _retry_after_s
from rmmwatch.stores.memory import MemoryStore
from tests.helpers import T0, matches, row, seed_rule
from tests.hostile_http import HostileEndpoint

TOKEN = "s3cr3t-token-value"
#: Generous bound for "does not hang": every deadline below is at most a few seconds.
HANG_BOUND_S = 30.0


@pytest.fixture
def endpoints() -> Iterator[Callable[..., HostileEndpoint]]:
    made: list[HostileEndpoint] = []

    def make(behaviour: str = "ok", **options: object) -> HostileEndpoint:
        endpoint = HostileEndpoint(behaviour, **options)  # type: ignore[arg-type]
        made.append(endpoint)
        return endpoint

    yield make
    for endpoint in made:
        endpoint.close()


@pytest.fixture
async def sinks() -> AsyncIterator[Callable[..., WebhookSink]]:
    made: list[WebhookSink] = []

    def make(url: str, **options: object) -> WebhookSink:
        sink = WebhookSink(url, **options)  # type: ignore[arg-type]
        made.append(sink)
        return sink

    yield make
    for sink in made:
        await sink.close()


async def _alerts(count: int = 1) -> list[Alert]:
    rule = seed_rule()
    store = MemoryStore([rule])
    detector = Detector([rule])
    for i in range(count):
        await store.apply(matches(detector, [row(device=f"d{i}", ticks=T0)]), T0 + i)
    return await store.pending_alerts(100)


async def _send(sink: WebhookSink, alerts: list[Alert]) -> None:
    """``send`` with a bound: a hang fails the test instead of holding it."""
    await asyncio.wait_for(sink.send(alerts), timeout=HANG_BOUND_S)


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_a_redirect_is_a_failure_and_the_token_never_leaves_the_origin(
    endpoints: Callable[..., HostileEndpoint], sinks: Callable[..., WebhookSink], status: int
) -> None:
    """A 3xx is not followed: SinkError naming the status and the Location's host (not its path),
    and the other host never sees a connection, let alone the token."""
    thief = endpoints("ok")
    endpoint = endpoints(f"redirect:{status}", redirect_to=f"{thief.origin}/steal?key=abc")
    sink = sinks(endpoint.url, token=TOKEN, retries=2, backoff_s=0.01, timeout_s=2)
    await sink.open()
    with pytest.raises(SinkError) as error:
        await _send(sink, await _alerts())
    message = str(error.value)
    assert f"HTTP {status}" in message
    assert f"127.0.0.1:{thief.port}" in message
    assert "steal" not in message and "key=abc" not in message and TOKEN not in message
    assert thief.connections == 0 and thief.requests == []
    assert len(endpoint.requests) == 1, "a redirect is a configuration problem: not retried"
    assert endpoint.requests[0].headers["authorization"] == f"Bearer {TOKEN}"


@pytest.mark.parametrize(
    "behaviour", ["garbage_status", "many_headers", "long_header", "reset", "endless_body", "drip", "hang"]
)
async def test_a_malformed_or_stalled_reply_is_a_sink_error(
    endpoints: Callable[..., HostileEndpoint], sinks: Callable[..., WebhookSink], behaviour: str
) -> None:
    """Garbage, 200 headers, an oversized header, a reset, a body or header that never ends, silence:
    each is SinkError (the loop keeps the alert and retries), never another exception or a hang."""
    endpoint = endpoints(behaviour, drip_interval_s=0.1)
    sink = sinks(endpoint.url, retries=1, backoff_s=0.01, timeout_s=1, deadline_s=5)
    await sink.open()
    with pytest.raises(SinkError, match="webhook"):
        await _send(sink, await _alerts())
    assert endpoint.requests, "the request reached the endpoint"


async def test_a_drip_fed_reply_is_cut_at_the_attempt_deadline(
    endpoints: Callable[..., HostileEndpoint], sinks: Callable[..., WebhookSink]
) -> None:
    """The attempt timeout is total, not per read: a byte every 0.2 s does not keep a 1 s attempt alive."""
    endpoint = endpoints("drip", drip_interval_s=0.2)
    sink = sinks(endpoint.url, retries=0, timeout_s=1, deadline_s=60)
    await sink.open()
    started = time.monotonic()
    with pytest.raises(SinkError, match="timed out"):
        await _send(sink, await _alerts())
    assert time.monotonic() - started < 10  # 1 s expected; a per-read timeout never fires


async def test_one_deadline_bounds_the_whole_send(
    endpoints: Callable[..., HostileEndpoint], sinks: Callable[..., WebhookSink]
) -> None:
    """Many retries of a stalling endpoint stop at the send's deadline, not after retries x timeout."""
    endpoint = endpoints("drip", drip_interval_s=0.2)
    sink = sinks(endpoint.url, retries=50, backoff_s=0.01, timeout_s=1.5, deadline_s=2)
    await sink.open()
    started = time.monotonic()
    with pytest.raises(SinkError, match="deadline"):
        await _send(sink, await _alerts(3))
    assert time.monotonic() - started < 15  # 2 s expected; 50 retries of 1.5 s would be 75 s
    assert len(endpoint.requests) <= 3


@pytest.mark.parametrize("status", [429, 503])
async def test_retry_after_in_seconds_is_honoured(
    endpoints: Callable[..., HostileEndpoint], sinks: Callable[..., WebhookSink], status: int
) -> None:
    """429/503 with ``Retry-After: 2``: the next attempt waits at least 2 s, then delivers."""
    endpoint = endpoints("ok", script=[f"status:{status}:2"])
    sink = sinks(endpoint.url, retries=3, backoff_s=0.01, timeout_s=5, deadline_s=30)
    await sink.open()
    alerts = await _alerts()
    await _send(sink, alerts)
    first, second = endpoint.requests
    assert second.at - first.at >= 1.9
    assert second.body == alerts[0].payload


async def test_retry_after_as_an_http_date_is_honoured(
    endpoints: Callable[..., HostileEndpoint], sinks: Callable[..., WebhookSink]
) -> None:
    """``Retry-After: <HTTP-date>`` 3 s ahead (whole seconds): the next attempt waits for it."""
    when = email.utils.formatdate(time.time() + 3, usegmt=True)
    endpoint = endpoints("ok", script=[f"status:429:{when}"])
    sink = sinks(endpoint.url, retries=3, backoff_s=0.01, timeout_s=5, deadline_s=30)
    await sink.open()
    await _send(sink, await _alerts())
    first, second = endpoint.requests
    assert second.at - first.at >= 1.5  # the date has whole seconds: 2 to 3 s from the first answer


async def test_retry_after_is_capped(
    endpoints: Callable[..., HostileEndpoint], sinks: Callable[..., WebhookSink]
) -> None:
    """An hour's ``Retry-After`` waits the cap (here 1 s), not the hour, when the deadline allows it."""
    endpoint = endpoints("ok", script=["status:429:3600"])
    sink = sinks(endpoint.url, retries=3, backoff_s=0.01, timeout_s=5, deadline_s=30, retry_after_cap_s=1)
    await sink.open()
    await _send(sink, await _alerts())
    first, second = endpoint.requests
    assert 0.9 <= second.at - first.at < 20


async def test_retry_after_past_the_deadline_gives_up_and_holds_later_sends(
    endpoints: Callable[..., HostileEndpoint], sinks: Callable[..., WebhookSink]
) -> None:
    """``Retry-After`` beyond the send's deadline: SinkError at once (the loop's backoff takes over),
    and until that time later sends fail without knocking on the endpoint again."""
    endpoint = endpoints("ok", script=["status:503:40"])
    sink = sinks(endpoint.url, retries=5, backoff_s=0.01, timeout_s=5, deadline_s=5)
    await sink.open()
    alerts = await _alerts()
    started = time.monotonic()
    with pytest.raises(SinkError, match="Retry-After"):
        await _send(sink, alerts)
    assert time.monotonic() - started < 4  # no attempt waited for the deadline
    with pytest.raises(SinkError, match="Retry-After"):
        await _send(sink, alerts)
    assert len(endpoint.requests) == 1


@pytest.mark.parametrize(
    "url", ["http://alice:pa55word@127.0.0.1:9/alerts", "https://alice@example.com/x", "http://:pa55word@h/x"]
)
def test_credentials_in_the_url_are_refused_without_echoing_them(url: str) -> None:
    """``user:password@`` in the URL is refused at construction; the message names neither."""
    with pytest.raises(ValueError, match="credentials") as error:
        WebhookSink(url, token=TOKEN)
    assert "alice" not in str(error.value) and "pa55word" not in str(error.value)


@pytest.mark.parametrize("url", ["ftp://example.com/x", "http:///alerts", "http://example.com:notaport/x"])
def test_a_url_that_cannot_be_posted_to_is_refused(url: str) -> None:
    """Scheme, host and port are checked at construction, not on the first alert."""
    with pytest.raises(ValueError, match="webhook URL"):
        WebhookSink(url)


@pytest.mark.parametrize("bypassed", [False, True])
async def test_a_proxy_comes_from_the_environment_only(
    endpoints: Callable[..., HostileEndpoint],
    sinks: Callable[..., WebhookSink],
    monkeypatch: pytest.MonkeyPatch,
    bypassed: bool,
) -> None:
    """``HTTP_PROXY`` is used as urllib used it, and ``NO_PROXY`` bypasses it."""
    proxy = endpoints("ok")
    endpoint = endpoints("ok")
    for name in ("http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(name, proxy.origin)
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(name, "127.0.0.1" if bypassed else "")
    sink = sinks(endpoint.url, token=TOKEN, retries=0, timeout_s=5)
    await sink.open()
    await _send(sink, await _alerts())
    through, direct = (endpoint, proxy) if bypassed else (proxy, endpoint)
    assert direct.requests == []
    assert through.requests[0].path == ("/alerts" if bypassed else endpoint.url)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("2", 2.0),
        (" 7 ", 7.0),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),  # a date already past: no wait
        ("\u00b2", None),  # a digit to str.isdigit, not a number of seconds
        ("-5", None),
        ("soon", None),
        (None, None),
    ],
)
def test_retry_after_values_are_read_strictly(header: str | None, expected: float | None) -> None:
    """Delta-seconds or an HTTP-date; anything else is ignored (the usual backoff applies)."""
    assert _retry_after_s(header) == expected
