"""coinrl.live.emulator: a local Binance-like exchange for tests, demos and benchmarks.

Serves stored candles (and perpetual funding) over Binance's real REST API shapes, so the real
ccxt client can be pointed at it, with a controllable clock and switchable faults (latency,
429 with Retry-After, 5xx, dropped connections, garbage answers). Accounts given API keys can
trade spot markets over Binance's signed API (HMAC-SHA256): orders are matched against the
stored candles on the emulator clock with the env's fee and slippage rules (faults: answer lost
after the order was accepted, rejected orders, partial fills, stale market data).

Example:
    >>> from coinrl.live.emulator import EmulatorServer  # doctest: +SKIP
    >>> with EmulatorServer({"BTC/USDT": candles}) as emu:  # doctest: +SKIP
    ...     df = fetch_data("BTC/USDT", "1h", 0, "btc.parquet", exchange_url=emu.base_url)
    >>> accounts = {"KEY": ("SECRET", {"USDT": 10_000.0})}
    >>> with EmulatorServer({"BTC/USDT": candles}, accounts=accounts) as emu:  # doctest: +SKIP
    ...     ex = connect_to_exchange("KEY", "SECRET", exchange_url=emu.base_url,
    ...                              max_clock_skew_ms=None)
"""

from __future__ import annotations

from .accounts import Account, Accounts
from .clock import Clock, FixedClock, RealClock, ReplayClock
from .faults import FaultDecision, FaultPlan, FaultRule
from .market import CandleSeries, EmulatedMarkets, FundingSeries, MarketSpec, default_market_spec
from .matching import EmulatedOrder, EmulatedTrade, MatchingEngine, OrderRejected
from .server import EmulatorServer, RequestRecord, load_candle_files, parse_clock, serve
from .signed_api import SignedApi, sign_payload

__all__ = [
    "Account",
    "Accounts",
    "CandleSeries",
    "Clock",
    "EmulatedMarkets",
    "EmulatedOrder",
    "EmulatedTrade",
    "EmulatorServer",
    "FaultDecision",
    "FaultPlan",
    "FaultRule",
    "FixedClock",
    "FundingSeries",
    "MarketSpec",
    "MatchingEngine",
    "OrderRejected",
    "RealClock",
    "ReplayClock",
    "RequestRecord",
    "SignedApi",
    "default_market_spec",
    "load_candle_files",
    "parse_clock",
    "serve",
    "sign_payload",
]
