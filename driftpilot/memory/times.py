"""Times as memory stores them: naive datetimes in UTC.

Aware inputs are converted to UTC and lose their ``tzinfo``, naive inputs are taken to be UTC
already. One convention for every column lets SQLite (which compares the stored strings) and
PostgreSQL (``timestamp without time zone``) order and filter times the same way.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

# Alertmanager and Go clients send nanoseconds; datetime keeps at most microseconds.
_EXTRA_FRACTION = re.compile(r"(\.\d{6})\d+")


def utcnow() -> datetime:
    """The current wall-clock time as a naive UTC datetime."""
    return datetime.now(UTC).replace(tzinfo=None)


def to_naive_utc(value: datetime | str, *, what: str = "time") -> datetime:
    """Convert a datetime or an ISO 8601 string to a naive UTC datetime.

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
    >>> to_naive_utc("2026-03-01T12:00:00+02:00")
    datetime.datetime(2026, 3, 1, 10, 0)
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
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment


def optional_naive_utc(value: datetime | str | None, *, what: str = "time") -> datetime | None:
    """:func:`to_naive_utc`, passing ``None`` through."""
    return None if value is None else to_naive_utc(value, what=what)
