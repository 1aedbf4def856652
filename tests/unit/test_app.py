"""The service loop's commit order and failure handling, with in-process seam implementations.

A list source and a recording sink implement the source and sink protocols (they are
seams, not stand-ins for external services): the tests prove what the loop does with
them: positions are committed only after state and delivery, a failing sink or store
holds commits back without losing anything, bad input is counted and dead-lettered,
metrics and health are served.
"""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client import generate_latest

from rmmwatch.alerts import Alert
from rmmwatch.app import App
from rmmwatch.events import Detector
from rmmwatch.metrics import Metrics
from rmmwatch.model import Match
from rmmwatch.rules import Rule
from rmmwatch.sinks.base import SinkError
from rmmwatch.sinks.deadletter import JsonlDeadLetters, LogOnlyDeadLetters
from rmmwatch.sources.base import Batch
from rmmwatch.stores.base import ApplyResult, StoreUnavailable
from rmmwatch.stores.memory import MemoryStore
from tests.helpers import T0, envelope, row, seed_rule

RULE = seed_rule()


class ListSource:
    """Hands out pre-made batches; records commits."""

    name = "list"

    def __init__(self, batches: Sequence[Sequence[bytes]]) -> None:
        self.batches = [list(b) for b in batches]
        self.index = 0
        self.commits: list[Any] = []
        self.started = False
        self.paused = False

    @property
    def exhausted(self) -> bool:
        return self.index >= len(self.batches)

    def ready(self) -> tuple[bool, str]:
        return self.started, "list"

    async def start(self) -> None:
        self.started = True

    def problem(self) -> str | None:
        return None

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False

    async def fetch(self, timeout_s: float) -> Batch | None:
        if self.paused:
            await asyncio.sleep(timeout_s)
            return None
        if self.exhausted:
            return None
        messages = self.batches[self.index]
        self.index += 1
        index = self.index
        return Batch(messages, index, lambda i: {"source": "list", "batch": index, "message": i})

    async def commit(self, position: Any) -> None:
        self.commits.append(position)

    async def close(self) -> None:
        self.started = False


class RecordingSink:
    """Keeps what it is sent; fails the first ``failures`` sends."""

    name = "recording"

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.sent: list[Any] = []

    async def open(self) -> None:
        return None

    async def send(self, alerts: Sequence[Any]) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise SinkError("down")
        self.sent.extend(alerts)

    async def close(self) -> None:
        return None


class FlakyStore(MemoryStore):
    """A memory store whose first ``failures`` applies fail as if the store were unreachable."""

    def __init__(self, rules: Sequence[Rule], failures: int) -> None:
        super().__init__(rules)
        self.failures = failures

    async def apply(self, matches: Sequence[Match], now: int) -> ApplyResult:
        if self.failures > 0:
            self.failures -= 1
            raise StoreUnavailable("connection refused")
        return await super().apply(matches, now)


def _app(source: ListSource, sink: RecordingSink, store: MemoryStore | None = None, **kw: Any) -> App:
    return App(
        rules=[RULE],
        source=source,
        store=store or MemoryStore([RULE]),
        sinks=[sink],
        dead_letters=kw.pop("dead_letters", LogOnlyDeadLetters()),
        metrics=kw.pop("metrics", Metrics()),
        detector=Detector([RULE]),
        metrics_port=kw.pop("metrics_port", -1),
        tick_interval_s=0.05,
        clock=lambda: T0,
        **kw,
    )


async def test_every_batch_is_committed_after_its_alerts_are_delivered() -> None:
    """Three batches: alerts delivered, then each position committed, in order."""
    source = ListSource([[envelope(row(device="a"))], [envelope(row(device="b"))], [b"{}"]])
    sink = RecordingSink()
    assert await asyncio.wait_for(_app(source, sink).run(), timeout=10) == 0
    assert [a.document()["group"]["DeviceId"] for a in sink.sent] == ["a", "b"]
    assert source.commits == [1, 2, 3]


async def test_a_failing_sink_holds_commits_until_delivery() -> None:
    """While the sink fails, nothing is committed; once it recovers, alerts arrive and commit follows."""
    source = ListSource([[envelope(row(device="a"))]])
    sink = RecordingSink(failures=2)
    app = _app(source, sink)
    app.delivery.backoff.first_s = 0.01  # keep the test fast
    task = asyncio.create_task(app.run())
    await asyncio.sleep(0.02)
    assert source.commits == []
    assert await asyncio.wait_for(task, timeout=10) == 0
    assert [a.kind for a in sink.sent] == ["new"]
    assert source.commits == [1]


async def test_a_store_outage_is_retried_and_nothing_is_lost() -> None:
    """apply fails twice: the batch is retried, not committed before it succeeds, and alerted once."""
    source = ListSource([[envelope(row(device="a"))]])
    sink = RecordingSink()
    metrics = Metrics()
    store = FlakyStore([RULE], failures=2)
    app = _app(source, sink, store, metrics=metrics)
    assert await asyncio.wait_for(app.run(), timeout=20) == 0
    assert [a.kind for a in sink.sent] == ["new"]
    assert source.commits == [1]
    assert metrics.registry.get_sample_value("rmmwatch_store_errors_total", {"operation": "apply"}) == 2


async def test_bad_input_is_counted_and_dead_lettered(tmp_path: Path) -> None:
    """Undecodable input is counted by reason, written with its origin, and the batch goes on."""
    path = tmp_path / "dead.jsonl"
    metrics = Metrics()
    source = ListSource([[b'{"records": "NetSupport"}', envelope(row(device="a"))]])
    sink = RecordingSink()
    app = _app(source, sink, dead_letters=JsonlDeadLetters(str(path)), metrics=metrics)
    assert await asyncio.wait_for(app.run(), timeout=10) == 0
    letters = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    assert [(x["reason"], x["origin"]["message"]) for x in letters] == [("records_not_list", 0)]
    assert metrics.registry.get_sample_value("rmmwatch_decode_errors_total", {"reason": "records_not_list"}) == 1
    assert len(sink.sent) == 1
    assert source.commits == [1]


async def test_metrics_count_the_hot_path() -> None:
    """Messages, matches, exclusions and alerts are all metered per batch."""
    metrics = Metrics()
    excluded = row(device="b", command="client32.exe /report")
    source = ListSource([[envelope(row(device="a"), excluded)]])
    await asyncio.wait_for(_app(source, RecordingSink(), metrics=metrics).run(), timeout=10)
    get = metrics.registry.get_sample_value
    assert get("rmmwatch_messages_total", {"source": "list"}) == 1
    assert get("rmmwatch_matches_total", {"rule": RULE.id}) == 2  # the seed rule has no exclusions
    text = generate_latest(metrics.registry).decode()
    assert 'rmmwatch_alerts_total{kind="new"' in text
    assert "rmmwatch_event_to_alert_lag_seconds_bucket" in text


async def test_exclusions_are_metered_per_name() -> None:
    """An excluded event raises no alert and increments its exclusion's counter."""
    from rmmwatch.rules import load_rules

    bundled = load_rules(["bundled:netsupport"])
    metrics = Metrics()
    source = ListSource([[envelope(row(device="b", command="client32.exe /report"))]])
    sink = RecordingSink()
    app = App(
        rules=bundled,
        source=source,
        store=MemoryStore(bundled),
        sinks=[sink],
        dead_letters=LogOnlyDeadLetters(),
        metrics=metrics,
        detector=Detector(bundled),
        metrics_port=-1,
        clock=lambda: T0,
    )
    await asyncio.wait_for(app.run(), timeout=10)
    assert sink.sent == []
    labels = {"rule": bundled[0].id, "exclusion": "System monitoring and reporting"}
    assert metrics.registry.get_sample_value("rmmwatch_excluded_total", labels) == 1


async def test_health_and_metrics_are_served_while_running() -> None:
    """/metrics, /healthz and /readyz answer over HTTP while the loop runs; /readyz fails while stopping."""

    class Endless(ListSource):
        @property
        def exhausted(self) -> bool:
            return False

        async def fetch(self, timeout_s: float) -> Batch | None:
            await asyncio.sleep(timeout_s)
            return None

    metrics = Metrics()
    app = _app(Endless([]), RecordingSink(), metrics=metrics, metrics_port=0, metrics_host="127.0.0.1")
    task = asyncio.create_task(app.run())
    for _ in range(100):
        if app.http is not None and app.http._server is not None:
            break
        await asyncio.sleep(0.01)
    assert app.http is not None
    base = f"http://127.0.0.1:{app.http.port}"

    def get(path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(base + path, timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    await asyncio.sleep(0.1)
    status, body = await asyncio.to_thread(get, "/metrics")
    assert status == 200 and "rmmwatch_build_info" in body
    assert (await asyncio.to_thread(get, "/healthz"))[0] == 200
    assert (await asyncio.to_thread(get, "/readyz"))[0] == 200
    assert (await asyncio.to_thread(get, "/nope"))[0] == 404
    app.stop()
    assert await asyncio.wait_for(task, timeout=10) == 0


@pytest.mark.parametrize("pending", [1, 2])
async def test_backpressure_stops_reading_while_alerts_wait(pending: int) -> None:
    """With the sink down and max_pending_alerts reached, the loop stops taking batches."""
    batches = [[envelope(row(device=f"d{i}"))] for i in range(6)]
    source = ListSource(batches)
    sink = RecordingSink(failures=10_000)
    app = _app(source, sink, max_pending_alerts=pending)
    task = asyncio.create_task(app.run())
    await asyncio.sleep(0.5)
    taken = source.index
    app.stop()
    await asyncio.wait_for(task, timeout=30)
    # Reading stops once `pending` alerts wait; the pipeline may hold up to 3 more batches.
    assert pending <= taken <= pending + 3
    assert taken < len(batches)
    assert source.commits == []


class CountingStore(MemoryStore):
    """A memory store that records its write calls; the first apply can be slowed down."""

    def __init__(self, rules: Sequence[Rule], first_delay_s: float = 0.0) -> None:
        super().__init__(rules)
        self.calls: list[tuple[str, list[int]]] = []
        self.first_delay_s = first_delay_s
        self.inside_many = False

    async def apply(self, matches: Sequence[Match], now: int) -> ApplyResult:
        if not self.inside_many:
            self.calls.append(("apply", [len(matches)]))
        elif self.first_delay_s:
            delay, self.first_delay_s = self.first_delay_s, 0.0
            await asyncio.sleep(delay)
        return await super().apply(matches, now)

    async def apply_many(self, parts: Sequence[Sequence[Match]], now: int) -> ApplyResult:
        self.calls.append(("apply_many", [len(p) for p in parts]))
        self.inside_many = True
        try:
            return await MemoryStore.apply_many(self, parts, now)
        finally:
            self.inside_many = False


async def test_a_batch_without_matches_skips_the_store_and_still_commits() -> None:
    """No match, no store write: the position is committed all the same, after earlier alerts."""
    no_match = envelope(row(device="z", company="Contoso"))
    source = ListSource([[no_match], [envelope(row(device="a"))], [no_match, b"{}"]])
    sink = RecordingSink()
    store = CountingStore([RULE])
    assert await asyncio.wait_for(_app(source, sink, store).run(), timeout=10) == 0
    assert store.calls == [("apply_many", [1])]
    assert [a.document()["group"]["DeviceId"] for a in sink.sent] == ["a"]
    assert source.commits[-1] == 3
    assert source.commits == sorted(set(source.commits))


async def test_batches_that_queue_up_are_applied_and_committed_together() -> None:
    """Group commit: while the store is busy, waiting batches go through one apply_many, in order,
    with the alerts they would have raised one by one, and the newest position is committed."""
    batches = [[envelope(row(device=d, report=900 + i))] for i, d in enumerate("abcab")]
    source = ListSource(batches)
    sink = RecordingSink()
    store = CountingStore([RULE], first_delay_s=0.3)
    assert await asyncio.wait_for(_app(source, sink, store).run(), timeout=10) == 0
    assert store.calls[0] == ("apply_many", [1])
    assert any(len(sizes) > 1 for _, sizes in store.calls)
    assert sum(sum(sizes) for _, sizes in store.calls) == 5
    assert source.commits[-1] == 5
    assert source.commits == sorted(set(source.commits))
    assert len(source.commits) < 5  # fewer commits than batches
    assert sorted((a.document()["group"]["DeviceId"], a.kind) for a in sink.sent) == [
        ("a", "new"),
        ("b", "new"),
        ("c", "new"),
    ]  # the seed rule does not alert updates: the same as batch by batch


class FlakyDeadLetters(RecordingSink):
    """A dead-letter destination (a sink of dead letters) that fails its first ``failures`` sends, counting tries."""

    name = "flaky"

    def __init__(self, failures: int) -> None:
        super().__init__(failures)
        self.attempts = 0

    async def send(self, letters: Sequence[Any]) -> None:
        self.attempts += 1
        await super().send(letters)


async def test_a_failing_dead_letter_destination_is_retried_like_a_sink() -> None:
    """The dead-letter destination fails twice: retried with backoff, counted as a sink failure, and the
    batch is committed only after its dead letters are delivered (not an exception out of run)."""
    metrics = Metrics()
    dead = FlakyDeadLetters(failures=2)
    source = ListSource([[b'{"records": "NetSupport"}', envelope(row(device="a"))]])
    sink = RecordingSink()
    app = _app(source, sink, dead_letters=dead, metrics=metrics)
    app.delivery.backoff.first_s = 0.01
    assert await asyncio.wait_for(app.run(), timeout=20) == 0
    assert dead.attempts == 3
    assert [(x.reason, x.origin["message"]) for x in dead.sent] == [("records_not_list", 0)]
    get = metrics.registry.get_sample_value
    assert get("rmmwatch_sink_failures_total", {"sink": "dead-letter:flaky"}) == 2
    assert get("rmmwatch_dead_letters_total", {"destination": "flaky"}) == 1
    assert len(sink.sent) == 1
    assert source.commits == [1]


async def test_stopping_while_dead_letters_cannot_be_delivered_commits_nothing() -> None:
    """Dead letters that never get through hold their batch back; a stop exits with it uncommitted."""
    dead = FlakyDeadLetters(failures=10_000)
    source = ListSource([[envelope(row(device="a"))], [b'{"records": "NetSupport"}'], [envelope(row(device="b"))]])
    app = _app(source, RecordingSink(), dead_letters=dead)
    app.delivery.backoff.first_s = 0.01
    task = asyncio.create_task(app.run())
    for _ in range(500):
        if dead.attempts >= 3:
            break
        await asyncio.sleep(0.01)
    app.stop()
    await asyncio.wait_for(task, timeout=20)
    assert dead.sent == []
    assert all(position < 2 for position in source.commits), "nothing at or past the poison batch is committed"


class DownStore(MemoryStore):
    """A memory store that cannot write (a lock held elsewhere, a full disk): every apply fails."""

    async def apply(self, matches: Sequence[Match], now: int) -> ApplyResult:
        raise StoreUnavailable("database is locked")


async def test_a_stop_while_the_store_is_down_does_not_hang() -> None:
    """With the store failing every apply and the pipeline full, a stop ends the run (exit 1 or 0) promptly,
    with nothing committed; it used to block forever on the full queue between the stages."""
    batches = [[envelope(row(device=f"d{i}"))] for i in range(20)]
    source = ListSource(batches)
    app = _app(source, RecordingSink(), DownStore([RULE]), shutdown_timeout_s=2.0)
    task = asyncio.create_task(app.run())
    for _ in range(500):
        if source.index >= 4:  # one batch at the store, two queued, one decoded and waiting
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)
    app.stop()
    await asyncio.wait_for(task, timeout=30)
    assert source.commits == []


class HangingSink(RecordingSink):
    """A sink whose send never returns (an endpoint that accepts and then says nothing)."""

    async def send(self, alerts: Sequence[Alert]) -> None:
        await asyncio.Event().wait()


async def test_the_shutdown_timeout_holds_whatever_a_sink_does() -> None:
    """A sink that hangs: a stop ends the run within the shutdown timeout (plus the bounded closes), exit 1,
    and the alert stays in the outbox for the next run."""
    store = MemoryStore([RULE])

    class Endless(ListSource):
        @property
        def exhausted(self) -> bool:
            return False

    source = Endless([[envelope(row(device="a"))]])
    app = _app(source, HangingSink(), store, shutdown_timeout_s=0.5)
    task = asyncio.create_task(app.run())
    for _ in range(500):
        if source.index >= 1:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)
    started = asyncio.get_running_loop().time()
    app.stop()
    assert await asyncio.wait_for(task, timeout=30) == 1
    assert asyncio.get_running_loop().time() - started < 0.5 + 5 * 2 + 5, "bounded by the timeout and the closes"
    assert [a.kind for a in await store.pending_alerts(10)] == ["new"]
    assert source.commits == []


async def test_a_second_stop_ends_the_run_at_once() -> None:
    """The first stop drains (here: forever, the sink hangs and the timeout is long); the second cancels."""
    source = ListSource([[envelope(row(device="a"))]])
    app = _app(source, HangingSink(), shutdown_timeout_s=3600)
    task = asyncio.create_task(app.run())
    for _ in range(500):
        if source.index >= 1:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)
    app.stop()
    await asyncio.sleep(0.1)
    assert not task.done()
    app.stop()
    assert await asyncio.wait_for(task, timeout=30) == 1


async def test_dead_letters_of_a_message_of_many_bad_records_are_bounded() -> None:
    """A 200 KB message of 50,000 non-object records: each record's letter carries the record, not the
    message; past 100 letters the rest is one letter with the message: about 2x the input, not 50,000x."""
    message = b'{"note": "NetSupport", "records": [' + b",".join(b"1" for _ in range(50_000)) + b"] }"
    message += b" " * (200_000 - len(message))
    dead = FlakyDeadLetters(failures=0)
    metrics = Metrics()
    app = _app(ListSource([[message]]), RecordingSink(), dead_letters=dead, metrics=metrics)
    assert await asyncio.wait_for(app.run(), timeout=60) == 0
    get = metrics.registry.get_sample_value
    assert get("rmmwatch_decode_errors_total", {"reason": "record_not_object"}) == 50_000
    assert len(dead.sent) == 101
    assert [x.payload for x in dead.sent[:100]] == [b"1"] * 100
    assert dead.sent[100].payload == message
    assert "49900 more bad records" in dead.sent[100].detail
    assert sum(len(x.payload) for x in dead.sent) <= 2 * len(message)


class OutboxFlaps(MemoryStore):
    """A memory store whose outbox read (or marking) fails once, right after the first apply that created an alert."""

    def __init__(self, rules: Sequence[Rule], where: str) -> None:
        super().__init__(rules)
        self.where = where
        self.armed = False
        self.flapped = False

    async def apply_many(self, parts: Sequence[Sequence[Match]], now: int) -> ApplyResult:
        applied = await super().apply_many(parts, now)
        self.armed = self.armed or bool(applied.created)
        return applied

    def _flap(self, where: str) -> None:
        if self.armed and not self.flapped and where == self.where:
            self.flapped = True
            raise StoreUnavailable("connection reset")

    async def pending_alerts(self, limit: int) -> list[Alert]:
        self._flap("pending_alerts")
        return await super().pending_alerts(limit)

    async def mark_sent(self, keys: Sequence[tuple[str, int]]) -> None:
        self._flap("mark_sent")
        await super().mark_sent(keys)


class LiveSource(ListSource):
    """A source that never ends (a stream), recording how many alerts the sink had at each commit."""

    def __init__(self, batches: Sequence[Sequence[bytes]], sink: RecordingSink) -> None:
        super().__init__(batches)
        self.sink = sink
        self.delivered_at_commit: list[int] = []

    @property
    def exhausted(self) -> bool:
        return False

    async def fetch(self, timeout_s: float) -> Batch | None:
        if self.index >= len(self.batches):
            await asyncio.sleep(min(timeout_s, 0.02))
            return None
        return await super().fetch(timeout_s)

    async def commit(self, position: Any) -> None:
        self.delivered_at_commit.append(len(self.sink.sent))
        await super().commit(position)


@pytest.mark.parametrize("where", ["pending_alerts", "mark_sent"])
async def test_a_store_error_during_delivery_never_lets_a_commit_past_an_undelivered_alert(where: str) -> None:
    """The outbox read fails right after the apply that wrote an alert: ``pending`` used to keep its stale 0 and
    the gate committed the batch with its alert still in the outbox. Now ``pending`` is unknown (nonzero) until
    the outbox is read again: no commit before the alert is delivered, and the loop delivers it, then commits.
    (A failed marking, after the send, was already safe: the alert is re-sent, the same one.)"""
    sink = RecordingSink()
    source = LiveSource([[envelope(row(device="a"))]], sink)
    store = OutboxFlaps([RULE], where)
    app = _app(source, sink, store)
    app.tick_interval_s = 3600  # no tick: only the loop's own retry can deliver it
    task = asyncio.create_task(app.run())
    for _ in range(1000):
        if source.commits:
            break
        await asyncio.sleep(0.01)
    app.stop()
    assert await asyncio.wait_for(task, timeout=30) == 0
    assert store.flapped
    assert source.commits == [1]
    assert len(source.delivered_at_commit) == 1
    assert source.delivered_at_commit[0] >= 1, "committed before its alert was delivered"
    # At least once: a failed marking re-sends the same alert, never another one.
    assert {(a.alert_id, a.revision, a.kind) for a in sink.sent} == {(sink.sent[0].alert_id, 0, "new")}


class SnapshotThenWait(MemoryStore):
    """A memory store whose next outbox read takes its snapshot, then waits for ``release`` (a slow round trip)."""

    def __init__(self, rules: Sequence[Rule]) -> None:
        super().__init__(rules)
        self.hold = False
        self.reading = asyncio.Event()
        self.release = asyncio.Event()

    async def pending_alerts(self, limit: int) -> list[Alert]:
        snapshot = await super().pending_alerts(limit)
        if self.hold:
            self.hold = False
            self.reading.set()
            await self.release.wait()
        return snapshot


async def test_an_outbox_read_that_started_before_an_apply_does_not_hide_the_alert_it_wrote() -> None:
    """A delivery (a tick's) reads the outbox empty, and while that read is in flight an apply writes an alert and
    says so. The read used to end by marking the outbox clean, so the commit stage's delivery then skipped the
    outbox and its batch could be committed with the alert undelivered; the change now outlives the older read."""
    store = SnapshotThenWait([RULE])
    sink = RecordingSink()
    app = _app(ListSource([]), sink, store)
    delivery = app.delivery
    await store.open()
    assert await delivery.deliver(force=True)  # the start's look: empty
    delivery.outbox_changed()  # a tick looks again; its read is slow
    store.hold = True
    tick = asyncio.create_task(delivery.deliver(force=True))
    await asyncio.wait_for(store.reading.wait(), timeout=10)
    applied = await store.apply_many([Detector([RULE]).process([envelope(row(device="a"))]).matches], T0)
    assert applied.created == 1
    delivery.outbox_changed()  # what the commit stage does after an apply that created alerts
    store.release.set()
    assert await asyncio.wait_for(tick, timeout=10)  # its snapshot was empty
    # The commit stage's delivery, before it commits the batch's position: the alert must go out.
    assert await delivery.deliver(force=True)
    assert [a.kind for a in sink.sent] == ["new"]
    assert await store.pending_alerts(10) == []


async def test_stopping_with_dead_letters_undelivered_exits_1_and_says_so() -> None:
    """A stop while the dead-letter destination refuses everything (``jsonl:/dev/full``) used to exit 0 with the
    poison batch uncommitted; something is left undone, so it exits 1, as undelivered alerts do, and logs it."""
    from structlog.testing import capture_logs

    dead = FlakyDeadLetters(failures=10_000)
    source = ListSource([[b'{"records": "NetSupport"}']])
    app = _app(source, RecordingSink(), dead_letters=dead)
    app.delivery.backoff.first_s = 0.01
    with capture_logs() as logs:
        task = asyncio.create_task(app.run())
        for _ in range(500):
            if dead.attempts >= 2:
                break
            await asyncio.sleep(0.01)
        app.stop()
        assert await asyncio.wait_for(task, timeout=20) == 1
    assert source.commits == []
    [line] = [x for x in logs if x["event"] == "undelivered_dead_letters"]
    assert (line["log_level"], line["letters"], line["destination"]) == ("error", 1, "flaky")


class FailsThenHangs(RecordingSink):
    """A sink that refuses its first ``failures`` sends at once, then hangs (an endpoint gone into a black hole)."""

    async def send(self, alerts: Sequence[Alert]) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise SinkError("refused")
        await asyncio.Event().wait()


@pytest.mark.parametrize("failures", [0, 1], ids=["hangs from the start", "fails, then hangs in the drain"])
async def test_a_finished_replay_exits_within_the_shutdown_timeout_whatever_the_sink_does(failures: int) -> None:
    """The source is exhausted while the sink hangs: the last batch's delivery and the drain's used to wait for the
    sink (a webhook: its own 30 s deadline per delivery, 51.5 s to exit with a 3 s timeout). Now what is left ends
    within the shutdown timeout (plus the bounded closes), exit 1, the alert in the outbox, nothing committed."""
    store = MemoryStore([RULE])
    source = ListSource([[envelope(row(device="a"))]])
    app = _app(source, FailsThenHangs(failures), store, shutdown_timeout_s=0.5)
    app.delivery.backoff.first_s = 0.01
    started = asyncio.get_running_loop().time()
    assert await asyncio.wait_for(app.run(), timeout=30) == 1
    assert asyncio.get_running_loop().time() - started < 0.5 + 5 * 2 + 5, "bounded by the timeout and the closes"
    assert [a.kind for a in await store.pending_alerts(10)] == ["new"]
    assert source.commits == []
