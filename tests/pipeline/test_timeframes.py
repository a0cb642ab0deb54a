"""Timeframe parsing: ccxt-style strings to milliseconds and back."""

from __future__ import annotations

import pytest

from coinrl.pipeline.errors import ConfigError
from coinrl.pipeline.timeframes import bars_per_year, ms_to_timeframe, timeframe_to_ms


@pytest.mark.parametrize(
    ("tf", "ms"), [("1m", 60_000), ("5m", 300_000), ("1h", 3_600_000), ("4h", 14_400_000), ("1d", 86_400_000)]
)
def test_timeframe_round_trip(tf: str, ms: int) -> None:
    assert timeframe_to_ms(tf) == ms
    assert ms_to_timeframe(ms) == tf


@pytest.mark.parametrize("bad", ["", "h", "0h", "1y", "1.5h", "60"])
def test_bad_timeframe_says_what_is_expected(bad: str) -> None:
    with pytest.raises(ConfigError, match="like 1m, 5m, 1h"):
        timeframe_to_ms(bad)


def test_hourly_year_has_8760_bars() -> None:
    assert bars_per_year("1h") == 8760.0
