"""Timeframe strings (ccxt style: ``1m``, ``5m``, ``1h``, ``1d``) and their length in ms."""

from __future__ import annotations

import re

from .errors import ConfigError

_UNIT_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_RE = re.compile(r"^(\d+)([smhdw])$")

MS_PER_YEAR = 365 * 86_400_000
"""Crypto trades every day: a year is 365 days of milliseconds."""


def timeframe_to_ms(timeframe: str) -> int:
    """Length of one bar in milliseconds.

    Example:
        >>> timeframe_to_ms("1h")
        3600000
    """
    m = _RE.match(timeframe.strip())
    if not m or int(m.group(1)) == 0:
        raise ConfigError(
            f"timeframe {timeframe!r} is not understood; use a count and a unit like 1m, 5m, 1h, 4h, 1d"
        )
    return int(m.group(1)) * _UNIT_MS[m.group(2)]


def ms_to_timeframe(ms: int) -> str:
    """Inverse of :func:`timeframe_to_ms` for whole units (3_600_000 -> ``"1h"``)."""
    for unit, size in sorted(_UNIT_MS.items(), key=lambda kv: -kv[1]):
        if ms % size == 0 and ms >= size:
            return f"{ms // size}{unit}"
    raise ConfigError(f"{ms} ms is not a whole number of seconds")


def bars_per_year(timeframe: str) -> float:
    """Bars in a 365-day year, for annualising returns and volatility."""
    return MS_PER_YEAR / timeframe_to_ms(timeframe)
