"""KQL datetimes and timespans as integer 100 ns ticks since the Unix epoch.

KQL datetimes have 100 ns resolution and Defender sends up to 7 fractional digits
(``2021-04-14T18:49:17.7849324Z``). ``datetime.fromisoformat`` would silently drop the
7th digit, so everything here is integer arithmetic on ticks. Negative ticks (before
1970) are valid.
"""

from __future__ import annotations

import datetime as _dt
import re
from fractions import Fraction

TICKS_PER_MICROSECOND = 10
TICKS_PER_MILLISECOND = 10_000
TICKS_PER_SECOND = 10_000_000
TICKS_PER_MINUTE = 60 * TICKS_PER_SECOND
TICKS_PER_HOUR = 60 * TICKS_PER_MINUTE
TICKS_PER_DAY = 24 * TICKS_PER_HOUR

_EPOCH_ORDINAL = _dt.date(1970, 1, 1).toordinal()

_DATETIME_RE = re.compile(
    r"(\d{4})-(\d{1,2})-(\d{1,2})"
    r"(?:[Tt ](\d{1,2}):(\d{2})(?::(\d{2})(?:\.(\d{1,7}))?)?)?"
    r"\s*(Z|z|[+-]\d{2}:?\d{2})?"
)

TIMESPAN_UNITS: dict[str, int] = {
    "d": TICKS_PER_DAY,
    "day": TICKS_PER_DAY,
    "days": TICKS_PER_DAY,
    "h": TICKS_PER_HOUR,
    "hr": TICKS_PER_HOUR,
    "hrs": TICKS_PER_HOUR,
    "hour": TICKS_PER_HOUR,
    "hours": TICKS_PER_HOUR,
    "m": TICKS_PER_MINUTE,
    "min": TICKS_PER_MINUTE,
    "minute": TICKS_PER_MINUTE,
    "minutes": TICKS_PER_MINUTE,
    "s": TICKS_PER_SECOND,
    "sec": TICKS_PER_SECOND,
    "second": TICKS_PER_SECOND,
    "seconds": TICKS_PER_SECOND,
    "ms": TICKS_PER_MILLISECOND,
    "milli": TICKS_PER_MILLISECOND,
    "millis": TICKS_PER_MILLISECOND,
    "millisecond": TICKS_PER_MILLISECOND,
    "milliseconds": TICKS_PER_MILLISECOND,
    "microsecond": TICKS_PER_MICROSECOND,
    "microseconds": TICKS_PER_MICROSECOND,
    "tick": 1,
    "ticks": 1,
}


class DatetimeError(ValueError):
    """A text that is not a datetime KQL or Defender would produce."""


def parse_datetime(text: str) -> int:
    """Parse an ISO 8601 UTC datetime with 0 to 7 fractional digits into ticks.

    Accepts ``T`` or a space between date and time, an optional ``Z`` or ``+hh:mm``
    offset (no offset means UTC, as in KQL). Raises :class:`DatetimeError`.
    """
    m = _DATETIME_RE.fullmatch(text.strip())
    if m is None:
        raise DatetimeError(f"not an ISO 8601 datetime: {text[:40]!r}")
    year, month, day, hour, minute, second, fraction, offset = m.groups()
    try:
        ordinal = _dt.date(int(year), int(month), int(day)).toordinal()
    except ValueError as exc:
        raise DatetimeError(f"invalid date in {text[:40]!r}: {exc}") from None
    h = int(hour) if hour else 0
    mi = int(minute) if minute else 0
    s = int(second) if second else 0
    if h > 23 or mi > 59 or s > 59:
        raise DatetimeError(f"invalid time of day in {text[:40]!r}")
    ticks = (ordinal - _EPOCH_ORDINAL) * TICKS_PER_DAY + h * TICKS_PER_HOUR + mi * TICKS_PER_MINUTE
    ticks += s * TICKS_PER_SECOND
    if fraction:
        ticks += int(fraction.ljust(7, "0"))
    if offset and offset not in ("Z", "z"):
        sign = -1 if offset[0] == "-" else 1
        digits = offset[1:].replace(":", "")
        oh, om = int(digits[:2]), int(digits[2:])
        if oh > 23 or om > 59:
            raise DatetimeError(f"invalid UTC offset in {text[:40]!r}")
        ticks -= sign * (oh * TICKS_PER_HOUR + om * TICKS_PER_MINUTE)
    return ticks


def format_datetime(ticks: int) -> str:
    """Render ticks the way KQL does: ``2026-11-20T12:00:00.1234567Z`` (always 7 digits, UTC)."""
    days, rem = divmod(ticks, TICKS_PER_DAY)
    date = _dt.date.fromordinal(days + _EPOCH_ORDINAL)
    hour, rem = divmod(rem, TICKS_PER_HOUR)
    minute, rem = divmod(rem, TICKS_PER_MINUTE)
    second, fraction = divmod(rem, TICKS_PER_SECOND)
    return f"{date.year:04d}-{date.month:02d}-{date.day:02d}T{hour:02d}:{minute:02d}:{second:02d}.{fraction:07d}Z"


def format_timespan(ticks: int) -> str:
    """Render a timespan as KQL does: ``[-][d.]hh:mm:ss[.fffffff]``."""
    sign = "-" if ticks < 0 else ""
    days, rem = divmod(abs(ticks), TICKS_PER_DAY)
    hour, rem = divmod(rem, TICKS_PER_HOUR)
    minute, rem = divmod(rem, TICKS_PER_MINUTE)
    second, fraction = divmod(rem, TICKS_PER_SECOND)
    text = f"{sign}{f'{days}.' if days else ''}{hour:02d}:{minute:02d}:{second:02d}"
    return f"{text}.{fraction:07d}" if fraction else text


def timespan_literal(ticks: int) -> str:
    """The shortest KQL literal for a timespan: ``5d``, ``-90m``, ``1500ms``, ``7tick``."""
    for unit, scale in (
        ("d", TICKS_PER_DAY),
        ("h", TICKS_PER_HOUR),
        ("m", TICKS_PER_MINUTE),
        ("s", TICKS_PER_SECOND),
        ("ms", TICKS_PER_MILLISECOND),
    ):
        if ticks % scale == 0:
            return f"{ticks // scale}{unit}"
    return f"{ticks}tick"


def timespan_ticks(number: str, unit: str) -> int:
    """Ticks of a timespan literal such as ``5d`` or ``1.5h`` (number text, unit text)."""
    try:
        scale = TIMESPAN_UNITS[unit]
    except KeyError:
        raise DatetimeError(f"unknown timespan unit {unit!r}") from None
    value = Fraction(number) * scale
    if value.denominator != 1:
        # KQL rounds sub-tick remainders; a literal like 0.00000001s is not meaningful anyway.
        return round(value)
    return int(value)


def ticks_from_unix_ns(ns: int) -> int:
    """Ticks from nanoseconds since the epoch (``time.time_ns()``)."""
    return ns // 100


def ticks_to_unix_seconds(ticks: int) -> float:
    """Float seconds since the epoch, for metrics and logs (loses sub-microsecond detail)."""
    return ticks / TICKS_PER_SECOND
