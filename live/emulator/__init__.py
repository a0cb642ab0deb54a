"""coinrl.live.emulator: a local Binance-like exchange for tests, demos and benchmarks.

Serves stored candles (and perpetual funding) over Binance's real REST API shapes, so the real
ccxt client can be pointed at it, with a controllable clock and switchable faults (latency,
429 with Retry-After, 5xx, dropped connections, garbage answers).

Example:
    >>> from coinrl.live.emulator import EmulatorServer  # doctest: +SKIP
    >>> with EmulatorServer({"BTC/USDT": candles}) as emu:  # doctest: +SKIP
    ...     df = fetch_data("BTC/USDT", "1h", 0, "btc.parquet", exchange_url=emu.base_url)
"""

from __future__ import annotations

from .clock import Clock, FixedClock, RealClock, ReplayClock
from .faults import FaultDecision, FaultPlan, FaultRule
from .market import CandleSeries, EmulatedMarkets, FundingSeries, MarketSpec, default_market_spec
from .server import EmulatorServer, RequestRecord, load_candle_files, parse_clock, serve

__all__ = [
    "CandleSeries",
    "Clock",
    "EmulatedMarkets",
    "EmulatorServer",
    "FaultDecision",
    "FaultPlan",
    "FaultRule",
    "FixedClock",
    "FundingSeries",
    "MarketSpec",
    "RealClock",
    "ReplayClock",
    "RequestRecord",
    "default_market_spec",
    "load_candle_files",
    "parse_clock",
    "serve",
]
