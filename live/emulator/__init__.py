"""coinrl.live.emulator: a local exchange for tests, demos and benchmarks, in two dialects.

Serves stored candles (and perpetual funding) over Binance's and Bybit v5's real REST API shapes
(one matching engine, two wire formats), so the real ccxt ``binance`` and ``bybit`` clients can
be pointed at it, with a controllable clock and switchable faults (latency,
429 with Retry-After, 5xx, dropped connections, garbage answers). Accounts given API keys can
trade spot markets and linear perpetuals (cross margin, funding at funding times:
:mod:`.perps`) over Binance's signed API (``/api/v3``, ``/fapi``) and Bybit's (``/v5``), both
HMAC-SHA256: orders are matched
against the stored candles on the emulator clock with the env's fee and slippage rules (faults: answer lost
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
from .bybit_api import BybitError, BybitMarketDataApi
from .bybit_signed import BybitSignedApi, bybit_sign
from .clock import Clock, FixedClock, RealClock, ReplayClock
from .faults import FaultDecision, FaultPlan, FaultRule
from .market import CandleSeries, EmulatedMarkets, FundingSeries, MarketSpec, default_market_spec
from .matching import EmulatedOrder, EmulatedTrade, MatchingEngine, OrderRejected
from .perps import FundingPayment, PerpLedger, PerpPosition
from .server import EmulatorServer, RequestRecord, load_candle_files, parse_clock, serve
from .signed_api import SignedApi, sign_payload

__all__ = [
    "Account",
    "Accounts",
    "BybitError",
    "BybitMarketDataApi",
    "BybitSignedApi",
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
    "FundingPayment",
    "FundingSeries",
    "MarketSpec",
    "MatchingEngine",
    "OrderRejected",
    "PerpLedger",
    "PerpPosition",
    "RealClock",
    "ReplayClock",
    "RequestRecord",
    "SignedApi",
    "bybit_sign",
    "default_market_spec",
    "load_candle_files",
    "parse_clock",
    "serve",
    "sign_payload",
]
