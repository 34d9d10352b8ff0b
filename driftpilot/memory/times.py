"""Times in memory: aware UTC datetimes in Python, naive UTC in the database.

Every datetime memory returns (an object's attribute or a frame's ``time`` column) is aware,
in UTC. Memory accepts aware datetimes in any zone, ISO 8601 strings, and naive datetimes,
which it takes to be UTC already. The database keeps naive UTC (SQLite compares the stored
strings, PostgreSQL's column is ``timestamp without time zone``), so both order and filter
times the same way; :class:`~driftpilot.memory.tables.UTCDateTime` converts on the way in and
out, with :func:`to_naive_utc` and :func:`to_utc`.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

# Alertmanager and Go clients send nanoseconds; datetime keeps at most microseconds.
_EXTRA_FRACTION = re.compile(r"(\.\d{6})\d+")


def utcnow() -> datetime:
    """The current wall-clock time, aware in UTC."""
    return datetime.now(UTC)


def to_utc(value: datetime | str, *, what: str = "time") -> datetime:
    """Convert a datetime or an ISO 8601 string to an aware UTC datetime.

    Parameters
    ----------
    value
        An aware or naive (taken as UTC) datetime, or an ISO 8601 string such as
        ``"2026-03-01T10:00:00Z"``.
    what
        The name of the value, used in the error message.

    Raises
    ------
    TypeError
        If ``value`` is neither a datetime nor a string.
    ValueError
        If the string is not ISO 8601.

    Examples
    --------
    >>> to_utc("2026-03-01T12:00:00+02:00")
    datetime.datetime(2026, 3, 1, 10, 0, tzinfo=datetime.timezone.utc)
    >>> to_utc(datetime(2026, 3, 1, 10, 0))
    datetime.datetime(2026, 3, 1, 10, 0, tzinfo=datetime.timezone.utc)
    """
    if isinstance(value, str):
        text = _EXTRA_FRACTION.sub(r"\1", value.strip())
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"{what} must be an ISO 8601 time, got {value!r}") from None
    elif isinstance(value, datetime):
        moment = value
    else:
        raise TypeError(f"{what} must be a datetime or an ISO 8601 string, got {value!r}")
    if type(moment) is not datetime and hasattr(moment, "to_pydatetime"):
        # pandas.Timestamp is a datetime subclass; drivers handle the plain class best.
        moment = moment.to_pydatetime()
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def optional_utc(value: datetime | str | None, *, what: str = "time") -> datetime | None:
    """:func:`to_utc`, passing ``None`` through."""
    return None if value is None else to_utc(value, what=what)


def to_naive_utc(value: datetime | str, *, what: str = "time") -> datetime:
    """The stored form of a time: :func:`to_utc` without its ``tzinfo``.

    Examples
    --------
    >>> to_naive_utc("2026-03-01T12:00:00+02:00")
    datetime.datetime(2026, 3, 1, 10, 0)
    """
    return to_utc(value, what=what).replace(tzinfo=None)
