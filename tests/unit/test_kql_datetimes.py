"""``rmmwatch.kql.datetimes`` keeps KQL datetimes and timespans as exact 100 ns integer ticks.

It proves: parsing keeps 0 to 7 fractional digits exactly (the 7th one included), applies
``Z``/no suffix/``+hh:mm``/``-hhmm`` offsets, accepts a space separator and a bare date, and
refuses what is not a datetime with ``DatetimeError``; ``format_datetime`` always writes 7
digits in UTC and round-trips every tick from year 1 to 9999, before 1970 included; timespan
literals convert to ticks (decimals too) and ``timespan_literal`` writes the shortest form.
"""

from __future__ import annotations

import calendar
import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rmmwatch.kql.datetimes import (
    TICKS_PER_DAY,
    TICKS_PER_HOUR,
    TICKS_PER_MILLISECOND,
    TICKS_PER_MINUTE,
    TICKS_PER_SECOND,
    DatetimeError,
    format_datetime,
    format_timespan,
    parse_datetime,
    ticks_from_unix_ns,
    timespan_literal,
    timespan_ticks,
)

#: .NET's DateTime.MinValue / MaxValue, relative to the Unix epoch (621355968000000000 ticks after year 1).
YEAR_1_TICKS = -621_355_968_000_000_000
YEAR_9999_LAST_TICK = 3_155_378_975_999_999_999 - 621_355_968_000_000_000


def utc_ticks(text: str) -> int:
    """Ticks of a whole UTC second ``YYYY-MM-DD HH:MM:SS``, computed independently of the module."""
    return calendar.timegm(time.strptime(text, "%Y-%m-%d %H:%M:%S")) * TICKS_PER_SECOND


DEFENDER_SECOND = utc_ticks("2021-04-14 18:49:17")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("2021-04-14T18:49:17Z", DEFENDER_SECOND, id="0 fractional digits"),
        pytest.param("2021-04-14T18:49:17.7Z", DEFENDER_SECOND + 7_000_000, id="1 digit"),
        pytest.param("2021-04-14T18:49:17.78Z", DEFENDER_SECOND + 7_800_000, id="2 digits"),
        pytest.param("2021-04-14T18:49:17.784Z", DEFENDER_SECOND + 7_840_000, id="3 digits"),
        pytest.param("2021-04-14T18:49:17.7849Z", DEFENDER_SECOND + 7_849_000, id="4 digits"),
        pytest.param("2021-04-14T18:49:17.78493Z", DEFENDER_SECOND + 7_849_300, id="5 digits"),
        pytest.param("2021-04-14T18:49:17.784932Z", DEFENDER_SECOND + 7_849_320, id="6 digits"),
        pytest.param("2021-04-14T18:49:17.7849324Z", DEFENDER_SECOND + 7_849_324, id="7 digits: the 7th is kept"),
        pytest.param("2021-04-14T18:49:17.0000001Z", DEFENDER_SECOND + 1, id="one tick"),
        pytest.param("2021-04-14T18:49:17.7849324z", DEFENDER_SECOND + 7_849_324, id="lowercase z"),
        pytest.param("2021-04-14T18:49:17.7849324", DEFENDER_SECOND + 7_849_324, id="no suffix means UTC"),
        pytest.param("2021-04-14T20:49:17.7849324+02:00", DEFENDER_SECOND + 7_849_324, id="+02:00 offset"),
        pytest.param("2021-04-14T13:19:17-0530", DEFENDER_SECOND, id="-0530 offset without colon"),
        pytest.param("2021-04-14T18:49:17+00:00", DEFENDER_SECOND, id="+00:00 offset"),
        pytest.param("2021-04-14 18:49:17.7849324", DEFENDER_SECOND + 7_849_324, id="space separator"),
        pytest.param("2021-04-14t18:49:17Z", DEFENDER_SECOND, id="lowercase t separator"),
        pytest.param("2021-04-14T18:49", DEFENDER_SECOND - 17 * TICKS_PER_SECOND, id="no seconds"),
        pytest.param("2021-04-14", utc_ticks("2021-04-14 00:00:00"), id="date only is midnight UTC"),
        pytest.param("  2021-04-14T18:49:17Z  ", DEFENDER_SECOND, id="surrounding blanks"),
        pytest.param("2020-02-29T00:00:00Z", utc_ticks("2020-02-29 00:00:00"), id="leap day"),
        pytest.param("1970-01-01T00:00:00Z", 0, id="the epoch is tick 0"),
        pytest.param("1969-12-31T23:59:59.9999999Z", -1, id="one tick before the epoch"),
        pytest.param("1900-01-01T00:00:00Z", -22_089_888_000_000_000, id="1900 is negative"),
        pytest.param("0001-01-01T00:00:00Z", YEAR_1_TICKS, id="year 1"),
        pytest.param("9999-12-31T23:59:59.9999999Z", YEAR_9999_LAST_TICK, id="last tick of year 9999"),
    ],
)
def test_parse_datetime(text: str, expected: int) -> None:
    """``parse_datetime`` gives exact ticks: every fractional digit, offsets applied."""
    assert parse_datetime(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("2021-04-14T18:49:17.78493241Z", id="8 fractional digits"),
        pytest.param("2021-13-01T00:00:00Z", id="month 13"),
        pytest.param("2021-00-10", id="month 0"),
        pytest.param("2021-02-30", id="Feb 30"),
        pytest.param("2021-02-29", id="Feb 29 in a common year"),
        pytest.param("2021-04-31", id="April 31"),
        pytest.param("0000-01-01", id="year 0"),
        pytest.param("2021-04-14T24:00:00Z", id="hour 24"),
        pytest.param("2021-04-14T18:60:00Z", id="minute 60"),
        pytest.param("2021-04-14T18:49:60Z", id="second 60 (no leap seconds)"),
        pytest.param("2021-04-14T18:49:17+24:00", id="offset hour 24"),
        pytest.param("2021-04-14T18:49:17+02:60", id="offset minute 60"),
        pytest.param("2021-04-14T18:49:17+02", id="offset without minutes"),
        pytest.param("2021-04-14T18:49:17.Z", id="a dot without digits"),
        pytest.param("2021-04-14T18", id="hour without minutes"),
        pytest.param("2021-04-14T18:49:17ZZ", id="trailing garbage"),
        pytest.param("20210414", id="basic format"),
        pytest.param("yesterday", id="garbage"),
        pytest.param("", id="empty"),
        pytest.param("   ", id="blank"),
    ],
)
def test_parse_datetime_refuses(text: str) -> None:
    """A text that is not a datetime raises ``DatetimeError`` (a ``ValueError``), never a wrong value."""
    with pytest.raises(DatetimeError):
        parse_datetime(text)


@pytest.mark.parametrize(
    ("ticks", "expected"),
    [
        pytest.param(0, "1970-01-01T00:00:00.0000000Z", id="the epoch"),
        pytest.param(-1, "1969-12-31T23:59:59.9999999Z", id="one tick before the epoch"),
        pytest.param(DEFENDER_SECOND + 7_849_324, "2021-04-14T18:49:17.7849324Z", id="Defender's sample"),
        pytest.param(DEFENDER_SECOND, "2021-04-14T18:49:17.0000000Z", id="a whole second still has 7 digits"),
        pytest.param(
            utc_ticks("2026-11-20 12:00:00") + 1_234_567, "2026-11-20T12:00:00.1234567Z", id="semantics.md's example"
        ),
        pytest.param(YEAR_1_TICKS, "0001-01-01T00:00:00.0000000Z", id="year 1"),
        pytest.param(YEAR_9999_LAST_TICK, "9999-12-31T23:59:59.9999999Z", id="last tick of year 9999"),
    ],
)
def test_format_datetime(ticks: int, expected: str) -> None:
    """``format_datetime`` renders as KQL does: UTC, always 7 fractional digits, zero-padded year."""
    assert format_datetime(ticks) == expected


@settings(max_examples=500)
@given(st.integers(min_value=YEAR_1_TICKS, max_value=YEAR_9999_LAST_TICK))
def test_format_then_parse_round_trips(ticks: int) -> None:
    """Every tick from year 1 to 9999 survives ``format_datetime`` then ``parse_datetime`` unchanged."""
    text = format_datetime(ticks)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}Z", text)
    assert parse_datetime(text) == ticks


@settings(max_examples=300)
@given(st.integers(min_value=YEAR_1_TICKS, max_value=-1))
def test_negative_ticks_round_trip(ticks: int) -> None:
    """Datetimes before 1970 (negative ticks) round-trip too: floor division, not truncation."""
    assert parse_datetime(format_datetime(ticks)) == ticks


# -- timespans ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("number", "unit", "expected"),
    [
        pytest.param("5", "d", 5 * 24 * 3600 * 10_000_000, id="5d"),
        pytest.param("2", "h", 2 * 3600 * 10_000_000, id="2h"),
        pytest.param("90", "m", 90 * 60 * 10_000_000, id="90m"),
        pytest.param("30", "s", 30 * 10_000_000, id="30s"),
        pytest.param("100", "ms", 100 * 10_000, id="100ms"),
        pytest.param("7", "microsecond", 70, id="7microsecond"),
        pytest.param("7", "tick", 7, id="7tick"),
        pytest.param("1", "day", TICKS_PER_DAY, id="1day"),
        pytest.param("3", "hours", 3 * TICKS_PER_HOUR, id="3hours"),
        pytest.param("5", "min", 5 * TICKS_PER_MINUTE, id="5min"),
        pytest.param("1", "millisecond", TICKS_PER_MILLISECOND, id="1millisecond"),
        pytest.param("1.5", "h", 90 * TICKS_PER_MINUTE, id="1.5h"),
        pytest.param("0.5", "d", 12 * TICKS_PER_HOUR, id="0.5d"),
        pytest.param("0.25", "s", 2_500_000, id="0.25s"),
        pytest.param("0.5", "ms", 5_000, id="0.5ms"),
        pytest.param("0", "d", 0, id="0d"),
    ],
)
def test_timespan_ticks(number: str, unit: str, expected: int) -> None:
    """A timespan literal's number and unit give exact ticks, decimals included."""
    assert timespan_ticks(number, unit) == expected


@pytest.mark.parametrize("unit", ["w", "y", "D", "us", ""])
def test_timespan_ticks_refuses_unknown_units(unit: str) -> None:
    """An unknown unit raises ``DatetimeError`` naming it."""
    with pytest.raises(DatetimeError, match="unknown timespan unit"):
        timespan_ticks("5", unit)


@pytest.mark.parametrize(
    ("ticks", "expected"),
    [
        pytest.param(5 * TICKS_PER_DAY, "5d", id="whole days"),
        pytest.param(-5 * TICKS_PER_DAY, "-5d", id="negative days"),
        pytest.param(36 * TICKS_PER_HOUR, "36h", id="not whole days: hours"),
        pytest.param(-90 * TICKS_PER_MINUTE, "-90m", id="minutes"),
        pytest.param(45 * TICKS_PER_SECOND, "45s", id="seconds"),
        pytest.param(1500 * TICKS_PER_MILLISECOND, "1500ms", id="milliseconds"),
        pytest.param(7, "7tick", id="ticks"),
        pytest.param(10, "10tick", id="a microsecond is 10tick"),
        pytest.param(0, "0d", id="zero"),
    ],
)
def test_timespan_literal(ticks: int, expected: str) -> None:
    """``timespan_literal`` writes the largest unit that divides the value exactly."""
    assert timespan_literal(ticks) == expected


@settings(max_examples=300)
@given(st.integers(min_value=-(10**18), max_value=10**18))
def test_timespan_literal_round_trips(ticks: int) -> None:
    """The literal ``timespan_literal`` writes reads back as the same ticks."""
    match = re.fullmatch(r"(-?\d+)([a-z]+)", timespan_literal(ticks))
    assert match is not None
    assert timespan_ticks(match.group(1), match.group(2)) == ticks


@pytest.mark.parametrize(
    ("ticks", "expected"),
    [
        pytest.param(0, "00:00:00", id="zero"),
        pytest.param(5 * TICKS_PER_DAY, "5.00:00:00", id="days"),
        pytest.param(-90 * TICKS_PER_MINUTE, "-01:30:00", id="negative"),
        pytest.param(15 * TICKS_PER_SECOND // 10, "00:00:01.5000000", id="fraction in 7 digits"),
        pytest.param(1, "00:00:00.0000001", id="one tick"),
    ],
)
def test_format_timespan(ticks: int, expected: str) -> None:
    """``format_timespan`` renders KQL's ``[-][d.]hh:mm:ss[.fffffff]``."""
    assert format_timespan(ticks) == expected


def test_ticks_from_unix_ns_drops_sub_tick_nanoseconds() -> None:
    """Nanoseconds become ticks by flooring to 100 ns."""
    assert ticks_from_unix_ns(1_618_426_157_784_932_499) == DEFENDER_SECOND + 7_849_324
