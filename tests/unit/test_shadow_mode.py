"""Shadow mode (issue #19): a rule's ``mode``, ``--shadow-rule``, and the routing of its alerts.

A shadow rule runs like a live one but its alerts reach only the shadow sinks, marked
``"mode": "shadow"``; a live rule's alerts reach only the live sinks. The loop runs over a list
source and recording sinks (seam implementations, as in test_app.py), with the memory store.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import orjson
import pytest

from rmmwatch.app import App
from rmmwatch.config import ConfigError, RunConfig, resolve
from rmmwatch.delivery import AlertRoutes
from rmmwatch.events import Detector
from rmmwatch.metrics import Metrics
from rmmwatch.rules import RuleError, load_rule_set, parse_rule
from rmmwatch.sinks.deadletter import LogOnlyDeadLetters
from rmmwatch.sinks.log import LogAlertSink
from rmmwatch.stores.memory import MemoryStore
from rmmwatch.wiring import build_app, shadow_sinks_for
from tests.helpers import SEED_RULE, T0, envelope, row, seed_rule
from tests.unit.test_app import ListSource, RecordingSink

SEED_ID = "id: 54ce8c70-403e-4659-88f7-8bd63a10fdca"


def _text(rule_id: str = "shadow-rule", mode: str | None = None) -> str:
    text = SEED_RULE.read_text().replace(SEED_ID, f"id: {rule_id}")
    return text + (f"\nmode: {mode}\n" if mode is not None else "")


# -- the rule's mode -------------------------------------------------------------------------


def test_mode_defaults_to_live_and_reads_shadow_and_live() -> None:
    assert parse_rule(_text()).mode == "live"
    assert parse_rule(_text(mode="live")).mode == "live"
    assert parse_rule(_text(mode="shadow")).mode == "shadow"
    assert parse_rule(_text(mode="'shadow'")).mode == "shadow"


@pytest.mark.parametrize("value", ["paging", "Shadow", "true", "[shadow]", "''"])
def test_any_other_mode_is_refused_with_its_line_and_column(value: str) -> None:
    text = _text(mode=value)
    line = text.splitlines().index(f"mode: {value}") + 1
    with pytest.raises(RuleError) as caught:
        parse_rule(text, "rule.yaml")
    assert (caught.value.source, caught.value.line, caught.value.column) == ("rule.yaml", line, 7)
    assert caught.value.message == "mode must be live or shadow"
    assert str(caught.value).startswith(f"rule.yaml:{line}:7: ")


def test_describe_shows_the_mode() -> None:
    assert "mode      live" in parse_rule(_text()).describe()
    assert "mode      shadow (alerts only to the shadow sinks)" in parse_rule(_text(mode="shadow")).describe()


def _write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text)
    return path


def test_shadow_specs_load_shadow_whatever_the_files_say(tmp_path: Path) -> None:
    live = _write(tmp_path / "live", "a.yaml", _text("a"))
    _write(tmp_path / "trial", "b.yaml", _text("b", mode="live"))
    _write(tmp_path / "trial" / "sub", "c.yaml", _text("c", mode="shadow"))
    rule_set = load_rule_set([str(live)], shadow=[str(tmp_path / "trial")])
    assert not rule_set.refused
    assert {r.id: r.mode for r in rule_set.rules} == {"a": "live", "b": "shadow", "c": "shadow"}
    assert rule_set.expanded


def test_a_rule_given_both_live_and_shadow_is_refused_as_a_duplicate(tmp_path: Path) -> None:
    path = _write(tmp_path, "a.yaml", _text("a"))
    rule_set = load_rule_set([str(path)], shadow=[str(path)])
    assert [r.id for r in rule_set.rules] == ["a"]
    assert rule_set.rules[0].mode == "live"
    (error,) = rule_set.refused
    assert error.kind == "duplicate_id"
    assert "duplicate rule id 'a'" in error.message


def test_without_rules_a_shadowed_bundled_rule_leaves_the_others_live() -> None:
    rule_set = load_rule_set(None, shadow=["bundled:netsupport"])
    assert not rule_set.refused
    modes = {f.source.spec: f.rule.mode for f in rule_set.files if f.rule is not None}
    assert modes["bundled:netsupport"] == "shadow"
    assert {m for spec, m in modes.items() if spec != "bundled:netsupport"} == {"live"}
    assert len(modes) == len(load_rule_set(None).rules)


# -- alerts and routing ----------------------------------------------------------------------


LIVE = seed_rule("live-rule")
SHADOW = replace(seed_rule("shadow-rule"), mode="shadow")


def _app(live: RecordingSink, shadow: RecordingSink, metrics: Metrics) -> tuple[App, ListSource]:
    rules = [LIVE, SHADOW]
    source = ListSource([[envelope(row(device="a"))], [envelope(row(device="b"))]])
    app = App(
        rules=rules,
        source=source,
        store=MemoryStore(rules),
        sinks=AlertRoutes([live], [shadow], frozenset({SHADOW.id})),
        dead_letters=LogOnlyDeadLetters(),
        metrics=metrics,
        detector=Detector(rules),
        metrics_port=-1,
        tick_interval_s=0.05,
        clock=lambda: T0,
    )
    return app, source


async def test_shadow_alerts_reach_only_the_shadow_sink_and_live_ones_only_the_live_sinks() -> None:
    live, shadow, metrics = RecordingSink(), RecordingSink(), Metrics()
    app, source = _app(live, shadow, metrics)
    assert await asyncio.wait_for(app.run(), timeout=10) == 0
    assert [(a.rule_id, a.document()["group"]["DeviceId"]) for a in live.sent] == [
        ("live-rule", "a"),
        ("live-rule", "b"),
    ]
    assert [(a.rule_id, a.document()["group"]["DeviceId"]) for a in shadow.sent] == [
        ("shadow-rule", "a"),
        ("shadow-rule", "b"),
    ]
    assert all(a.document()["mode"] == "shadow" for a in shadow.sent)
    assert all("mode" not in a.document() for a in live.sent)  # live payloads are unchanged
    assert source.commits == [1, 2]
    assert app.delivery.delivered == 4
    # Both kinds of rule keep their state.
    assert len(await app.store.summaries(SHADOW, T0)) == len(await app.store.summaries(LIVE, T0)) == 2
    get = metrics.registry.get_sample_value
    assert (
        get("rmmwatch_alerts_total", {"rule": "shadow-rule", "kind": "new", "sink": "recording", "mode": "shadow"}) == 2
    )
    assert get("rmmwatch_alerts_total", {"rule": "live-rule", "kind": "new", "sink": "recording", "mode": "live"}) == 2
    assert (
        get("rmmwatch_alerts_total", {"rule": "shadow-rule", "kind": "new", "sink": "recording", "mode": "live"})
        is None
    )
    assert get("rmmwatch_rule_info", {"rule": "shadow-rule", "name": SHADOW.name, "mode": "shadow"}) == 1
    assert get("rmmwatch_rule_info", {"rule": "live-rule", "name": LIVE.name, "mode": "live"}) == 1


async def test_a_failing_shadow_sink_holds_the_commit_like_a_live_one() -> None:
    """Same guarantees: shadow alerts stay in the outbox until delivered, and the position waits for them."""
    live, shadow, metrics = RecordingSink(), RecordingSink(failures=1_000_000), Metrics()
    app, source = _app(live, shadow, metrics)
    app.delivery.backoff.first_s = app.delivery.backoff.cap_s = 0.01
    task = asyncio.create_task(app.run())
    await asyncio.sleep(0.3)
    assert source.commits == []  # the live alerts went out, the shadow ones wait: nothing committed
    assert {a.rule_id for a in live.sent} == {"live-rule"}
    assert shadow.sent == []
    shadow.failures = 0
    assert await asyncio.wait_for(task, timeout=10) == 0
    assert [a.rule_id for a in shadow.sent] == ["shadow-rule", "shadow-rule"]
    assert {a.rule_id for a in live.sent} == {"live-rule"}  # re-sent while the shadow sink failed: at least once
    assert metrics.registry.get_sample_value("rmmwatch_sink_failures_total", {"sink": "shadow:recording"}) >= 2
    assert source.commits == [2]


async def test_the_log_sink_writes_one_shadow_alert_line_per_alert() -> None:
    lines: list[tuple[str, dict[str, object]]] = []
    sink = LogAlertSink(emit=lambda event, **fields: lines.append((event, fields)))
    shadow = RecordingSink()
    app, _ = _app(RecordingSink(), shadow, Metrics())
    await sink.send(shadow.sent)  # nothing yet: no line
    assert await asyncio.wait_for(app.run(), timeout=10) == 0
    await sink.send(shadow.sent)
    assert [event for event, _ in lines] == ["shadow_alert", "shadow_alert"]
    assert [orjson.dumps(fields["alert"]) for _, fields in lines] == [a.payload for a in shadow.sent]


# -- wiring ----------------------------------------------------------------------------------


def _config(*argv: str) -> RunConfig:
    from rmmwatch.cli import build_parser

    return RunConfig.from_values(resolve(build_parser().parse_args(["run", *argv]), environ={}))


def test_the_shadow_sink_defaults_to_the_log_and_takes_the_sink_specs(tmp_path: Path) -> None:
    assert [s.name for s in shadow_sinks_for(_config())] == ["log"]
    sinks = shadow_sinks_for(
        _config("--sink", "stdout", "--shadow-sink", f"jsonl:{tmp_path}/b", "--shadow-sink", "log")
    )
    assert [s.name for s in sinks] == ["jsonl", "log"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--shadow-sink", "stdout"), "stdout is both a --sink and a --shadow-sink"),
        (("--sink", "jsonl:x", "--shadow-sink", "jsonl:x"), "jsonl:x is both a --sink and a --shadow-sink"),
        (("--shadow-sink", "log", "--shadow-sink", "log"), "a --shadow-sink is listed twice"),
        (("--shadow-sink", "pager:x"), "unknown --shadow-sink 'pager'"),
        (("--sink", "log"), "unknown --sink 'log'"),
    ],
)
def test_shadow_sinks_that_could_reach_a_live_destination_are_refused(argv: tuple[str, ...], message: str) -> None:
    config = _config("--store", "memory", "--metrics-port", "-1", *argv)
    with pytest.raises(ConfigError, match=message):
        build_app(config, [LIVE, SHADOW])
