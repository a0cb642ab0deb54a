"""The exchange emulator: an aiohttp server that answers like Binance and Bybit from stored candles.

It serves public market data (:mod:`.binance_api`; Bybit v5: :mod:`.bybit_api`) and, for
configured accounts, Binance's signed spot and USDⓈ-M futures APIs (:mod:`.signed_api`,
:mod:`.binance_futures`) and Bybit v5's signed spot and linear-perpetual API
(:mod:`.bybit_signed`) over ONE matching engine that fills orders against the stored
candles on the emulator clock (:mod:`.matching`).

:class:`EmulatorServer` runs in a background thread with its own event loop, so synchronous
code (ccxt, tests, scripts) can talk to it over real HTTP on 127.0.0.1::

    with EmulatorServer({"BTC/USDT": candles}) as emu:
        ex = ccxt.binance()                                  # then point ex.urls["api"] at
        ...                                                  # emu.base_url (see
                                                             # coinrl.pipeline.exchange_client)

:func:`serve` is the blocking entry behind ``coinrl emulator serve``.

Admin endpoints (never subject to faults, not counted as traffic):

* ``GET /_emulator/stats``: request counts per path.
* ``GET /_emulator/faults`` / ``POST /_emulator/faults``: read / change the :class:`FaultPlan`
  (JSON ``{"clear": true, "seed": 1, "rules": [{"kind": "rate_limit", "count": 2}]}``).
* ``POST /_emulator/clock``: ``{"set_ms": ...}`` or ``{"advance_ms": ...}`` on a
  :class:`FixedClock`.
* ``GET /_emulator/accounts`` / ``POST /_emulator/accounts``: list accounts (keys masked, no
  secrets, balances) / create or replace them (``{"api_key": ..., "secret": ...,
  "balances": {"USDT": 1000}}`` or a list of such objects).
* ``GET /_emulator/orders``: every order on the exchange (``?symbol=BTCUSDT`` optional) and the
  count, after matching up to "now".

Matching runs up to the clock's time before every request is handled (and on
:meth:`EmulatorServer.process_until`), so fills are a pure function of the clock: deterministic
with a :class:`FixedClock` that a test moves.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from aiohttp import web

from coinrl.pipeline.errors import CoinrlError, ConfigError, DataError

from .accounts import Accounts, mask
from .binance_api import DATA_NOW_MS_KEY, BinanceError, BinanceMarketDataApi
from .binance_futures import FuturesSignedApi
from .bybit_api import PREFIX as BYBIT_PREFIX
from .bybit_api import BybitMarketDataApi, envelope
from .bybit_signed import BybitSignedApi, bybit_error_for
from .clock import Clock, FixedClock, RealClock, ReplayClock
from .faults import FaultPlan, FaultRule
from .market import EmulatedMarkets, MarketSpec
from .matching import EmulatedOrder, EmulatedTrade, MatchingEngine, OrderRejected
from .signed_api import SignedApi

if TYPE_CHECKING:
    from coinrl.envs.config import EnvConfig
    from coinrl.envs.execution import ExecutionModel

logger = logging.getLogger(__name__)

ADMIN_PREFIX = "/_emulator"

_RATE_LIMIT_BODY = {
    "code": -1003,
    "msg": "Too many requests; current limit of IP(127.0.0.1) is 6000 requests per minute. "
    "Please use the websocket for live updates to avoid polling the API.",
}
_SERVER_ERROR_BODY = {
    "code": -1001,
    "msg": "Internal error; unable to process your request. Please try again.",
}
_GATEWAY_REASONS = {502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}
_GARBAGE_BODY = '[[1500000000000,"0.0100","0.0110",{"msg": <html>502 Bad Gat'

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _bybit_fault(action: FaultRule, request: web.Request, now_ms: int) -> web.Response:
    """A rate-limit or reject fault in Bybit's dialect (retCode 10006 with Retry-After; the
    refusal Bybit gives for the reject's Binance code; a ``-2013`` on a GET is Bybit's "no such
    order": an empty list)."""
    if action.kind == "rate_limit":
        body = {"retCode": 10006, "retMsg": "Too many visits. Exceeded the API Rate Limit.",
                "result": {}, "retExtInfo": {}, "time": now_ms}
        return web.Response(
            status=429, text=json.dumps(body), content_type="application/json",
            headers={"Retry-After": str(action.retry_after_s),
                     "X-Bapi-Limit-Reset-Timestamp": str(now_ms + int(action.retry_after_s * 1000))},
        )
    if action.code == -2013 and request.method == "GET":
        result = {"category": request.query.get("category", ""), "list": [], "nextPageCursor": ""}
        return envelope(result, now_ms)
    return bybit_error_for(action.code, action.message).response(now_ms)


@dataclass(frozen=True)
class RequestRecord:
    """One request the emulator received.

    Attributes:
        path: URL path (``/api/v3/klines``).
        query: query parameters (last value of each).
        t_s: arrival time, ``time.monotonic()`` seconds (compare with the caller's clock).
        status: HTTP status answered; 0 when the connection was dropped by a fault.
        fault: the fault kind injected, or "".
    """

    path: str
    query: dict[str, str]
    t_s: float
    status: int
    fault: str


class EmulatorServer:
    """Binance- and Bybit-like exchange over stored candles, with a clock and fault injection.

    Both dialects are served at once (Binance under ``/api/v3``, ``/fapi/v1``, ``/sapi/v1``;
    Bybit under ``/v5``) over the same accounts and matching engine; faults apply to both, with
    rate limits and rejections worded in the dialect of the path they hit.

    Args:
        candles: ccxt unified symbol -> frame with ``ts_ms, open, high, low, close, volume``.
            ``"BTC/USDT"`` is listed as spot (/api/v3), ``"BTC/USDT:USDT"`` as a USDⓈ-M
            perpetual (/fapi/v1).
        funding: perpetual symbol -> frame with ``ts_ms`` (funding time, UTC ms) and
            ``funding_rate`` (fraction).
        clock: the emulator's "now". Default: a :class:`FixedClock` halfway through the latest
            stored bar (that bar is served in progress, every earlier one is closed).
        faults: the fault plan (default: an empty one; change it at any time).
        markets: explicit trading rules per symbol (default: realistic ones from the prices).
        host, port: where to listen; port 0 picks a free ephemeral port.
        accounts: API key -> ``(secret, {asset: total})`` of the accounts that may trade, e.g.
            ``{"KEY": ("SECRET", {"USDT": 10_000.0})}`` (more can be added later).
        execution: fee and slippage rules of fills: an envs ``EnvConfig`` or ``ExecutionModel``
            (default ``EnvConfig()``'s: the same rules as the backtests).
        signature_clock: the clock signed requests' ``timestamp`` is checked against (default:
            the wall clock; the market clock usually replays the past).
        market_fill_grace_ms: a market order sent within this many ms after a bar opened fills
            at that bar's open (default 0: only one sent exactly at the open; see
            :mod:`.matching`).
    """

    def __init__(
        self,
        candles: Mapping[str, pd.DataFrame],
        *,
        funding: Mapping[str, pd.DataFrame] | None = None,
        clock: Clock | None = None,
        faults: FaultPlan | None = None,
        markets: Mapping[str, MarketSpec] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        accounts: Mapping[str, tuple[str, Mapping[str, float]]] | None = None,
        execution: EnvConfig | ExecutionModel | None = None,
        signature_clock: Clock | None = None,
        market_fill_grace_ms: int = 0,
    ) -> None:
        self.data = EmulatedMarkets(candles, funding, markets)
        self.clock: Clock = clock if clock is not None else FixedClock(self.data.default_now_ms())
        self.faults = faults if faults is not None else FaultPlan()
        self.host = host
        self.port = port
        self._market_api = BinanceMarketDataApi(self.data, self.clock)
        self.accounts = Accounts(accounts)
        self.matching = MatchingEngine(
            self.data, self.accounts, self.faults, execution, market_fill_grace_ms
        )
        self._signed_api = SignedApi(
            self.data, self.accounts, self.matching, self.clock, signature_clock
        )
        self._futures_api = FuturesSignedApi(
            self.data, self.accounts, self.matching, self.clock, signature_clock
        )
        self._bybit_market_api = BybitMarketDataApi(self.data, self.clock)
        self._bybit_api = BybitSignedApi(
            self.data, self.accounts, self.matching, self.clock, signature_clock
        )
        self._stale_since: dict[int, tuple[FaultRule, int]] = {}
        self._log: list[RequestRecord] = []
        self._log_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._base_url: str | None = None

    # -- app --------------------------------------------------------------------------------
    def make_app(self) -> web.Application:
        """The aiohttp application (for embedding in a loop you own, e.g. aiohttp's test client)."""
        app = web.Application(middlewares=[self._traffic_middleware])
        app.add_routes(self._market_api.routes())
        app.add_routes(self._signed_api.routes())
        app.add_routes(self._futures_api.routes())
        app.add_routes(self._bybit_market_api.routes())
        app.add_routes(self._bybit_api.routes())
        app.add_routes([
            web.get(f"{ADMIN_PREFIX}/stats", self._admin_stats),
            web.get(f"{ADMIN_PREFIX}/faults", self._admin_get_faults),
            web.post(f"{ADMIN_PREFIX}/faults", self._admin_set_faults),
            web.post(f"{ADMIN_PREFIX}/clock", self._admin_clock),
            web.get(f"{ADMIN_PREFIX}/accounts", self._admin_get_accounts),
            web.post(f"{ADMIN_PREFIX}/accounts", self._admin_set_accounts),
            web.get(f"{ADMIN_PREFIX}/orders", self._admin_orders),
        ])
        return app

    @web.middleware
    async def _traffic_middleware(
        self, request: web.Request, handler: Handler
    ) -> web.StreamResponse:
        if request.path.startswith(ADMIN_PREFIX):
            return await handler(request)
        t_s = time.monotonic()
        self.matching.process_until(self.clock.now_ms())
        decision = self.faults.decide(request.path, request.method)
        if decision.latency_ms > 0:
            await asyncio.sleep(decision.latency_ms / 1000.0)
        action = decision.action
        fault = action.kind if action is not None else ""
        status = 0
        try:
            if action is None:
                response = await handler(request)
            elif action.kind in ("rate_limit", "reject") and request.path.startswith(BYBIT_PREFIX):
                response = _bybit_fault(action, request, self.clock.now_ms())
            elif action.kind == "rate_limit":
                response = web.Response(
                    status=429,
                    text=json.dumps(_RATE_LIMIT_BODY),
                    content_type="application/json",
                    headers={"Retry-After": str(action.retry_after_s)},
                )
            elif action.kind == "server_error" and action.status == 500:
                response = web.Response(
                    status=500, text=json.dumps(_SERVER_ERROR_BODY), content_type="application/json"
                )
            elif action.kind == "server_error":  # what a gateway in front of Binance answers
                reason = _GATEWAY_REASONS[action.status]
                response = web.Response(
                    status=action.status,
                    text=f"<html><body><h1>{action.status} {reason}</h1></body></html>",
                    content_type="text/html",
                )
            elif action.kind == "garbage":
                response = web.Response(text=_GARBAGE_BODY, content_type="application/json")
            elif action.kind == "reject":
                response = BinanceError(action.code, action.message).response()
            elif action.kind == "clock_jump":  # answered, then a bar boundary may pass
                response = await handler(request)
                advance = getattr(self.clock, "advance", None)
                if advance is None:
                    raise ConfigError(f"a clock_jump fault needs a clock with advance(), not {self.clock!r}")
                advance(action.advance_ms)
            elif action.kind == "stale":
                entry = self._stale_since.setdefault(id(action), (action, self.clock.now_ms()))
                request[DATA_NOW_MS_KEY] = entry[1]
                response = await handler(request)
            elif action.kind == "drop_after":  # processed (the order exists), answer lost
                await handler(request)
                if request.transport is not None:
                    request.transport.close()
                raise web.HTTPServiceUnavailable()  # never reaches the closed socket
            else:  # drop: close the socket without a byte of answer
                if request.transport is not None:
                    request.transport.close()
                raise web.HTTPServiceUnavailable()  # never reaches the closed socket
            status = response.status
            return response
        except web.HTTPException as e:
            status = 0 if fault in ("drop", "drop_after") else e.status
            raise
        finally:
            rec = RequestRecord(request.path, dict(request.query), t_s, status, fault)
            with self._log_lock:
                self._log.append(rec)

    async def _admin_stats(self, request: web.Request) -> web.Response:
        counts: dict[str, int] = {}
        for r in self.requests():
            counts[r.path] = counts.get(r.path, 0) + 1
        return web.json_response({
            "requests": counts,
            "faults": self.faults.fired(),
            "now_ms": self.clock.now_ms(),
            "orders": self.matching.order_count(),
        })

    async def _admin_get_faults(self, request: web.Request) -> web.Response:
        return web.json_response(self.faults.to_json())

    async def _admin_set_faults(self, request: web.Request) -> web.Response:
        try:
            payload = await request.json()
            if not isinstance(payload, dict):
                raise ConfigError("fault payload must be a JSON object")
            self.faults.configure(payload)
        except (ValueError, CoinrlError) as e:
            return web.json_response({"error": str(e)}, status=400)
        return web.json_response(self.faults.to_json())

    async def _admin_clock(self, request: web.Request) -> web.Response:
        clock = self.clock
        if not isinstance(clock, FixedClock):
            return web.json_response(
                {"error": f"the clock is {clock!r}; only a FixedClock can be moved"}, status=400
            )
        try:
            payload = await request.json()
            if "set_ms" in payload:
                clock.set(int(payload["set_ms"]))
            if "advance_ms" in payload:
                clock.advance(int(payload["advance_ms"]))
        except (ValueError, TypeError, CoinrlError) as e:
            return web.json_response({"error": str(e)}, status=400)
        return web.json_response({"now_ms": clock.now_ms()})

    async def _admin_get_accounts(self, request: web.Request) -> web.Response:
        now = self.process_and_now()
        out = []
        for account in self.accounts:
            balances = self.matching.balances(account.api_key)
            out.append({
                "api_key": mask(account.api_key),
                "can_trade": account.can_trade,
                "balances": {a: {"free": f, "locked": lk} for a, (f, lk) in balances.items()},
            })
        return web.json_response({"accounts": out, "now_ms": now})

    async def _admin_set_accounts(self, request: web.Request) -> web.Response:
        try:
            payload = await request.json()
            done = self.accounts.configure(payload, now_ms=self.clock.now_ms())
        except (ValueError, CoinrlError) as e:
            return web.json_response({"error": str(e)}, status=400)
        return web.json_response({"configured": [mask(a.api_key) for a in done]})

    async def _admin_orders(self, request: web.Request) -> web.Response:
        self.process_and_now()
        market_id = request.query.get("symbol")
        symbol = self.data.symbol_for("spot", market_id.upper()) if market_id else None
        if market_id and symbol is None:
            return web.json_response({"error": f"no spot market {market_id}"}, status=400)
        orders = self.matching.orders(symbol=symbol)
        rows: list[dict[str, Any]] = [
            {**self._signed_api.order_json(o), "api_key": mask(o.api_key)} for o in orders
        ]
        return web.json_response({"count": len(rows), "orders": rows})

    # -- accounts and orders (Python side) ----------------------------------------------------
    def process_and_now(self) -> int:
        """Match orders up to the clock's time and return that time (UTC ms)."""
        now = self.clock.now_ms()
        self.matching.process_until(now)
        return now

    def process_until(self, now_ms: int | None = None) -> list[EmulatedTrade]:
        """Match open orders against the bars known at ``now_ms`` (default: the clock's now).

        Returns:
            The fills this call made.
        """
        return self.matching.process_until(self.clock.now_ms() if now_ms is None else now_ms)

    def add_account(
        self, api_key: str, secret: str, balances: Mapping[str, float] | None = None,
        *, can_trade: bool = True,
    ) -> None:
        """Create or replace an account (see :meth:`Accounts.add`)."""
        self.accounts.add(api_key, secret, balances, can_trade=can_trade, now_ms=self.clock.now_ms())

    def balances(self, api_key: str) -> dict[str, tuple[float, float]]:
        """Asset -> ``(free, locked)`` of an account, after matching up to now."""
        self.process_and_now()
        try:
            return self.matching.balances(api_key)
        except OrderRejected as e:
            raise ConfigError(f"no emulated account with key {mask(api_key)}") from e

    def revise_candle(self, symbol: str, ts_ms: int, **values: float) -> None:
        """Change a stored candle (an exchange correcting a bar it already published).

        Args:
            symbol: the unified symbol.
            ts_ms: the bar's open time, UTC ms (a stored base bar).
            values: new ``open``/``high``/``low``/``close``/``volume``.

        Raises:
            ConfigError: an unknown symbol, bar or column.
        """
        series = self.data.series.get(symbol)
        if series is None:
            raise ConfigError(f"the emulator does not list {symbol!r}")
        i = int(np.searchsorted(series.ts_ms, int(ts_ms)))
        if i >= len(series) or int(series.ts_ms[i]) != int(ts_ms):
            raise ConfigError(f"{symbol} has no stored bar opening at ts_ms={ts_ms}")
        for name, value in values.items():
            if name not in ("open", "high", "low", "close", "volume"):
                raise ConfigError(f"revise_candle: unknown column {name!r}")
            getattr(series, name)[i] = float(value)
        series._aggs.clear()
        self._market_api.clear_cache()

    def orders(self, api_key: str | None = None, symbol: str | None = None) -> list[EmulatedOrder]:
        """Orders the exchange holds (any status), after matching up to now."""
        self.process_and_now()
        return self.matching.orders(api_key, symbol)

    def order_count(self, api_key: str | None = None, symbol: str | None = None) -> int:
        """How many orders the exchange holds (any status) for an account / unified symbol."""
        return len(self.orders(api_key, symbol))

    def trades(self, api_key: str | None = None, symbol: str | None = None) -> list[EmulatedTrade]:
        """Fills so far, oldest first, after matching up to now."""
        self.process_and_now()
        return self.matching.trades(api_key, symbol)

    # -- traffic ----------------------------------------------------------------------------
    def requests(self, path_prefix: str = "") -> list[RequestRecord]:
        """Requests received so far whose path starts with ``path_prefix``, in arrival order."""
        with self._log_lock:
            return [r for r in self._log if r.path.startswith(path_prefix)]

    def request_count(self, path_prefix: str = "") -> int:
        """Number of requests received whose path starts with ``path_prefix``."""
        return len(self.requests(path_prefix))

    def reset_requests(self) -> None:
        """Forget the request log."""
        with self._log_lock:
            self._log.clear()

    # -- lifecycle ----------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        """``http://host:port`` of the running server."""
        if self._base_url is None:
            raise ConfigError("the emulator is not running; call start() first")
        return self._base_url

    def start(self, timeout_s: float = 10.0) -> str:
        """Start serving in a background thread; return the base URL (``http://127.0.0.1:P``)."""
        if self._thread is not None:
            return self.base_url
        ready = threading.Event()
        errors: list[BaseException] = []
        loop = asyncio.new_event_loop()

        async def boot() -> None:
            runner = web.AppRunner(self.make_app(), access_log=None, shutdown_timeout=0.5)
            await runner.setup()
            site = web.TCPSite(runner, self.host, self.port)
            await site.start()
            self._runner = runner
            host, port = runner.addresses[0][:2]
            self._base_url = f"http://{host}:{port}"

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(boot())
            except BaseException as e:  # reported to the caller of start()
                errors.append(e)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=run, name="coinrl-emulator", daemon=True)
        self._thread.start()
        if not ready.wait(timeout_s):
            raise ConfigError(f"the emulator did not start within {timeout_s} s")
        if errors:
            self._thread = None
            raise ConfigError(f"the emulator could not listen on {self.host}:{self.port}: {errors[0]}") from errors[0]
        logger.info(
            "emulator started url=%s symbols=%s clock=%r",
            self._base_url, sorted(self.data.specs), self.clock,
        )
        return self.base_url

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop serving and join the thread (idempotent)."""
        thread, loop, runner = self._thread, self._loop, self._runner
        if thread is None or loop is None:
            return
        if runner is not None:
            fut = asyncio.run_coroutine_threadsafe(runner.cleanup(), loop)
            try:
                fut.result(timeout_s)
            except Exception:  # a stuck connection must not keep the server alive
                logger.warning("emulator cleanup did not finish cleanly", exc_info=True)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout_s)
        self._thread = self._loop = self._runner = None
        logger.info("emulator stopped url=%s", self._base_url)
        self._base_url = None

    def __enter__(self) -> EmulatorServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


# -- files and the CLI entry ------------------------------------------------------------------
def load_candle_files(
    data_files: Sequence[str | Path],
) -> tuple[dict[str, pd.DataFrame], dict[str, pd.DataFrame]]:
    """Load candle files for the emulator.

    Each item is ``PATH`` or ``SYMBOL=PATH``. Parquet files written by
    :func:`coinrl.pipeline.store.store_data` name their symbol in their metadata; other formats
    are read with ``coinrl.pipeline.formats.read_ohlcv`` and need ``SYMBOL=``. A
    ``<stem>.funding.parquet`` beside a perpetual's file is served as its funding history.

    Returns:
        ``(candles, funding)`` keyed by ccxt unified symbol.
    """
    from coinrl.pipeline.store import load_data

    candles: dict[str, pd.DataFrame] = {}
    funding: dict[str, pd.DataFrame] = {}
    for item in data_files:
        text = str(item)
        symbol: str | None = None
        if "=" in text and not Path(text).exists():
            symbol, text = text.split("=", 1)
        path = Path(text)
        if not path.is_file():
            raise DataError(f"emulator data file {path} does not exist")
        if path.suffix == ".parquet":
            frame = load_data(path)
        else:
            try:
                from coinrl.pipeline.formats import read_ohlcv
            except ImportError as e:
                raise DataError(
                    f"{path}: only coinrl Parquet files can be served here; "
                    "convert it first with coinrl data ingest"
                ) from e
            frame = read_ohlcv(path)
        symbol = symbol or str(frame.attrs.get("symbol") or "")
        if not symbol:
            raise ConfigError(
                f"{path} does not say which symbol it holds; pass it as BTC/USDT={path}"
            )
        candles[symbol] = frame[["ts_ms", "open", "high", "low", "close", "volume"]]
        fpath = path.with_name(f"{path.stem}.funding.parquet")
        if ":" in symbol and fpath.is_file():
            import pyarrow.parquet as pq

            funding[symbol] = pq.read_table(fpath).to_pandas()
    return candles, funding


def parse_clock(spec: str) -> Clock | None:
    """A clock from a CLI string: ``end`` (default: None), ``real``, ``fixed:T``, ``replay:T:SPEED``.

    ``T`` is UTC epoch ms or an ISO time (``2024-01-01T00:00Z``); ``SPEED`` is emulated ms per
    wall ms, or ``<bar>/<wall ms>`` such as ``1h/50`` (one hourly bar per 50 ms).
    """
    from coinrl.pipeline.timeframes import timeframe_to_ms

    def ts(text: str) -> int:
        if text.isdigit():
            return int(text)
        try:
            t = pd.Timestamp(text)
        except ValueError as e:
            raise ConfigError(f"clock time {text!r} is neither epoch ms nor an ISO time") from e
        t = t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")
        return int(t.value // 1_000_000)

    kind, _, rest = spec.partition(":")
    if kind in ("", "end"):
        return None
    if kind == "real":
        return RealClock()
    if kind == "fixed" and rest:
        return FixedClock(ts(rest))
    if kind == "replay" and rest:
        start, _, speed = rest.rpartition(":")

        def number(text: str, what: str) -> float:
            try:
                value = float(text.removesuffix("ms"))
            except ValueError:
                value = float("nan")
            if not value > 0:
                raise ConfigError(
                    f"clock {spec!r}: {what} {text!r} is not a positive number; use e.g. "
                    "replay:2024-01-01T00:00Z:1h/50 (one hourly bar per 50 wall ms) or "
                    "replay:2024-01-01T00:00Z:3600 (emulated ms per wall ms)"
                )
            return value

        if "/" in speed:
            bar, wall = speed.split("/", 1)
            return ReplayClock.bars(ts(start), timeframe_to_ms(bar), number(wall, "wall ms per bar"))
        return ReplayClock(ts(start), number(speed, "speed"))
    raise ConfigError(
        f"clock {spec!r} not understood; use end, real, fixed:<time> or replay:<time>:<speed>"
    )


def serve(
    host: str,
    port: int,
    data_files: Sequence[str | Path],
    *,
    clock: Clock | str | None = None,
    faults: FaultPlan | None = None,
    on_ready: Callable[[str], None] | None = None,
    stop_event: threading.Event | None = None,
    accounts: Mapping[str, tuple[str, Mapping[str, float]]] | None = None,
    execution: EnvConfig | ExecutionModel | None = None,
) -> None:
    """Serve ``data_files`` on ``host:port`` until interrupted (``coinrl emulator serve``).

    Args:
        host, port: where to listen (port 0: an ephemeral port; ``on_ready`` gets the URL).
        data_files: see :func:`load_candle_files` (``PATH`` or ``SYMBOL=PATH``).
        clock: a :class:`Clock` or a :func:`parse_clock` string; default: inside the last bar.
        faults: an initial fault plan (it can be changed later over ``POST /_emulator/faults``).
        on_ready: called with the base URL once listening (the CLI prints it).
        stop_event: set it to stop serving (default: run until KeyboardInterrupt).
        accounts, execution: as for :class:`EmulatorServer` (accounts can also be added later
            over ``POST /_emulator/accounts``, which keeps secrets off the command line).
    """
    candles, funding = load_candle_files(data_files)
    clk = parse_clock(clock) if isinstance(clock, str) else clock
    server = EmulatorServer(
        candles, funding=funding, clock=clk, faults=faults, host=host, port=port,
        accounts=accounts, execution=execution,
    )
    url = server.start()
    logger.info("emulator serving url=%s files=%d", url, len(data_files))
    if on_ready is not None:
        on_ready(url)
    stop = stop_event or threading.Event()
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        logger.info("emulator interrupted url=%s", url)
    finally:
        server.stop()


__all__ = [
    "ADMIN_PREFIX",
    "EmulatorServer",
    "RequestRecord",
    "load_candle_files",
    "parse_clock",
    "serve",
]
