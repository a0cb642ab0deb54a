"""The live exchange boundary: the only module in ``coinrl.live`` that trades through ccxt.

:func:`connect_to_exchange` builds a signed ccxt client for any ccxt exchange id and checks,
before anything trades, that the exchange answers, that the local clock agrees with the
exchange's, that the markets load and the asked-for symbols exist (close matches suggested), and
that the keys work (a balance call). :class:`ExchangeClient` is what the brokers use.

Rules:

* Every ccxt error is translated into :mod:`coinrl.pipeline.errors` here (``raise ... from e``)
  and only :class:`~coinrl.pipeline.errors.TemporaryExchangeError` is retried (capped exponential
  backoff with jitter, honouring ``Retry-After``: :func:`coinrl.pipeline.exchange_client.call_exchange`).
* Orders are idempotent through client order ids: after a timeout, a dropped connection or a
  5xx the order is LOOKED UP by its client order id before anything is re-sent, and it is re-sent
  (with the same id, so the exchange itself refuses a duplicate) only when the exchange says it
  does not have it. An order is never blindly re-sent.
* Quantities are rounded down to the lot step and prices to the tick before sending, and checked
  against the market's minimum quantity and notional; a violation is an
  :class:`~coinrl.pipeline.errors.InvalidOrder` that gives the numbers.
* Secrets never reach a log line: ccxt's verbose mode is forced off and ccxt's own debug log
  (which prints request headers, hence the API key) goes through a filter that masks the key and
  the secret.
"""

from __future__ import annotations

import difflib
import logging
import math
import re
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TypeVar

import ccxt
import numpy as np
import pandas as pd

from coinrl.envs.domain import Fill, OrderType, Side
from coinrl.pipeline.errors import (
    AuthenticationError,
    BadSymbol,
    ConfigError,
    DataError,
    ExchangeError,
    InvalidOrder,
    TemporaryExchangeError,
)
from coinrl.pipeline.exchange_client import (
    RETRY_AFTER_MAX_S,
    RateLimitedError,
    call_exchange,
    create_exchange,
)
from coinrl.pipeline.timeframes import timeframe_to_ms

from .keys import Credentials, credential_hint, load_credentials
from .orders import (
    AbsenceUnproven,
    DuplicateClientOrderId,
    ExchangeQuirks,
    FilterFailure,
    OrderInsufficientFunds,
    classify_refusal,
    quirks_for,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_MAX_CLOCK_SKEW_MS = 1000.0
"""Largest accepted difference between the exchange's clock and this machine's, ms (Binance
rejects requests more than 1000 ms ahead of its clock)."""

CLIENT_ORDER_ID_PATTERN = re.compile(r"^[\.A-Z\:/a-z0-9_-]{1,36}$")
"""Client order ids Binance accepts (and most exchanges): 1-36 of letters, digits, ``.:/_-``."""

OrderStatusName = Literal["open", "closed", "canceled", "expired", "rejected"]


# -- keeping secrets out of ccxt's debug log ---------------------------------------------------
class _RedactSecrets(logging.Filter):
    """Masks registered strings (API keys, secrets) in every record of the logger it sits on."""

    def __init__(self) -> None:
        super().__init__()
        self._values: set[str] = set()

    def add(self, *values: str) -> None:
        self._values.update(v for v in values if v)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._values:
            return True
        try:
            text = record.getMessage()
        except Exception:  # a malformed record: leave it to the handler to report
            return True
        clean = text
        for value in self._values:
            clean = clean.replace(value, "***")
        if clean != text:
            record.msg, record.args = clean, None
        return True


_CCXT_LOGGER = logging.getLogger(f"{__name__}.ccxt")
_REDACT = _RedactSecrets()
_CCXT_LOGGER.addFilter(_REDACT)


class RetryAfterBeyondDeadline(RateLimitedError):
    """The exchange asked to wait (``Retry-After``) past the next decision's deadline: the
    decision cannot be taken in time and is skipped explicitly (journalled); nothing is sent
    before ``until_ms``.

    Attributes:
        retry_after_s: what the exchange asked, seconds.
        until_ms: the exchange time before which nothing may be asked, UTC ms.
        deadline_ms: the decision's deadline, UTC ms (None when none was set).
    """

    def __init__(self, message: str, retry_after_s: float, until_ms: int, deadline_ms: int | None) -> None:
        super().__init__(message, retry_after_s)
        self.until_ms = until_ms
        self.deadline_ms = deadline_ms


# -- results -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Balance:
    """One asset's balance, asset units: ``free`` (available), ``used`` (locked), ``total``."""

    asset: str
    free: float
    used: float
    total: float


@dataclass(frozen=True)
class ExchangeOrder:
    """An order as the exchange reports it.

    Attributes:
        client_order_id: our id (the idempotency key).
        order_id: the exchange's id.
        symbol: unified symbol.
        side, order_type: as sent.
        status: ``open`` (incl. partially filled), ``closed`` (filled), ``canceled``,
            ``expired``, ``rejected``.
        qty_base: ordered quantity; ``filled_base`` / ``remaining_base`` its parts.
        price_quote: the limit price (None for market orders).
        average_price_quote: average fill price (None before any fill).
        cost_quote: filled quote amount (sum of qty * price).
        ts_ms: creation time on the exchange, UTC ms (None when not reported).
    """

    client_order_id: str
    order_id: str
    symbol: str
    side: Side
    order_type: OrderType
    status: OrderStatusName
    qty_base: float
    filled_base: float
    remaining_base: float
    price_quote: float | None
    average_price_quote: float | None
    cost_quote: float
    ts_ms: int | None

    @property
    def is_open(self) -> bool:
        """True while it can still fill."""
        return self.status == "open"

    @classmethod
    def from_ccxt(cls, o: Mapping[str, Any]) -> ExchangeOrder:
        """From a ccxt unified order structure."""
        otype = str(o.get("type") or "market").lower()
        order_type = OrderType.LIMIT if otype.startswith("limit") else OrderType.MARKET
        amount = float(o.get("amount") or 0.0)
        filled = float(o.get("filled") or 0.0)
        remaining = o.get("remaining")
        status = str(o.get("status") or "open")
        if status not in ("open", "closed", "canceled", "expired", "rejected"):
            status = "open"
        return cls(
            client_order_id=str(o.get("clientOrderId") or ""),
            order_id=str(o.get("id") or ""),
            symbol=str(o.get("symbol")),
            side=Side(str(o.get("side")).lower()),
            order_type=order_type,
            status=status,  # type: ignore[arg-type]
            qty_base=amount,
            filled_base=filled,
            remaining_base=float(remaining) if remaining is not None else max(0.0, amount - filled),
            price_quote=float(o["price"]) if order_type is OrderType.LIMIT and o.get("price") else None,
            average_price_quote=float(o["average"]) if o.get("average") else None,
            cost_quote=float(o.get("cost") or 0.0),
            ts_ms=int(o["timestamp"]) if o.get("timestamp") is not None else None,
        )


@dataclass(frozen=True)
class ExchangeTrade:
    """One fill of one of our orders, as the exchange reports it.

    Attributes:
        trade_id: the exchange's trade id.
        order_id: the exchange's order id; ``client_order_id`` ours when this client knows it.
        symbol, side: of the order.
        qty_base: filled quantity; ``price_quote`` its price.
        fee_cost, fee_asset: the commission as charged.
        fee_quote: the commission in quote currency (converted at the fill price when charged
            in the base asset; None when charged in a third asset such as BNB).
        ts_ms: execution time, UTC ms.
        liquidity: ``"taker"`` or ``"maker"`` (None when not reported).
    """

    trade_id: str
    order_id: str
    client_order_id: str | None
    symbol: str
    side: Side
    qty_base: float
    price_quote: float
    fee_cost: float
    fee_asset: str | None
    fee_quote: float | None
    ts_ms: int
    liquidity: Literal["taker", "maker"] | None

    def to_fill(self) -> Fill:
        """The same execution as an envs :class:`~coinrl.envs.domain.Fill` (for the books).

        Raises:
            ExchangeError: the fee was charged in an asset other than base or quote.
        """
        if self.fee_quote is None:
            raise ExchangeError(
                f"trade {self.trade_id} of {self.symbol}: fee charged in {self.fee_asset}, which "
                "cannot be booked in quote; disable paying fees in that asset on the exchange"
            )
        return Fill(
            fill_id=self.trade_id,
            order_id=self.client_order_id or self.order_id,
            symbol=self.symbol,
            side=self.side,
            qty_base=self.qty_base,
            price_quote=self.price_quote,
            fee_quote=self.fee_quote,
            ts_ms=self.ts_ms,
            liquidity=self.liquidity or "taker",
        )


def new_client_order_id(prefix: str = "coinrl") -> str:
    """A fresh client order id, ``<prefix>-<24 hex>`` (at most 36 characters)."""
    return f"{prefix[:11]}-{uuid.uuid4().hex[:24]}"


def _short(err: BaseException, n: int = 300) -> str:
    return f"{type(err).__name__}: {str(err)[:n]}"


def _fmt(x: float) -> str:
    return f"{x:.10g}"


class ExchangeClient:
    """A connected, signed exchange client (build it with :func:`connect_to_exchange`).

    Args:
        client: a ccxt client with keys, markets loaded.
        exchange: its ccxt id.
        max_retries: retries of temporary failures per call.
        credentials_hint: what to check when the keys are rejected (for messages).
    """

    def __init__(
        self,
        client: ccxt.Exchange,
        *,
        exchange: str,
        max_retries: int = 5,
        credentials_hint: str = "",
        masked_key: str = "",
    ) -> None:
        self._client = client
        self.exchange_id = exchange
        self.max_retries = max_retries
        self._hint = credentials_hint or credential_hint(exchange)
        self._masked_key = masked_key
        self._symbol_of: dict[str, str] = {}  # client order id -> symbol
        self._cid_of: dict[str, str] = {}  # exchange order id -> client order id
        self.clock_skew_ms: float | None = None
        self.decision_deadline_ms: int | None = None
        """Exchange time (UTC ms) by which the current decision must be taken: a longer
        ``Retry-After`` than :data:`RETRY_AFTER_MAX_S` is waited for when it ends before this,
        else :class:`RetryAfterBeyondDeadline` is raised (None: never waited)."""
        self.sleep: Callable[[float], None] = time.sleep
        """How a Retry-After is waited for, seconds (tests record it instead)."""
        self._last_server_ms: tuple[int, float] | None = None  # (server ms, local monotonic s)

    def __repr__(self) -> str:
        return f"ExchangeClient(exchange={self.exchange_id!r}, api_key={self._masked_key!r})"

    # -- plumbing ---------------------------------------------------------------------------
    def _now_estimate_ms(self) -> int | None:
        """The exchange's clock now, from the last time it was read (None: never read)."""
        if self._last_server_ms is None:
            return None
        ms, t = self._last_server_ms
        return ms + int((time.monotonic() - t) * 1000.0)

    def _call(self, fn: Callable[[], T], what: str, *, max_retries: int | None = None) -> T:
        """:meth:`_call_once`, honouring a long ``Retry-After`` up to the decision deadline.

        ``Retry-After`` up to :data:`RETRY_AFTER_MAX_S` is waited by the retry loop; a longer
        one is waited (once) when it ends before :attr:`decision_deadline_ms`, else the call
        fails with :class:`RetryAfterBeyondDeadline` (the runner skips the decision explicitly).
        """
        waited = False
        while True:
            try:
                return self._call_once(fn, what, max_retries=max_retries)
            except RateLimitedError as e:
                ra = e.retry_after_s
                if ra is None or ra <= RETRY_AFTER_MAX_S or isinstance(e, RetryAfterBeyondDeadline):
                    raise
                now = self._now_estimate_ms()
                until = (now if now is not None else time.time_ns() // 1_000_000) + int(ra * 1000)
                deadline = self.decision_deadline_ms
                if not waited and deadline is not None and until < deadline:
                    logger.warning("rate limited: waiting Retry-After %.0f s (before the decision "
                                   "deadline ts_ms=%d) what=%s", ra, deadline, what)
                    self.sleep(float(ra))
                    waited = True
                    continue
                raise RetryAfterBeyondDeadline(
                    f"{e}; the exchange asks to wait {ra:g} s, past the decision deadline "
                    f"ts_ms={deadline}: the decision is skipped, nothing is sent before "
                    f"ts_ms={until}", float(ra), until, deadline,
                ) from e

    def _call_once(self, fn: Callable[[], T], what: str, *, max_retries: int | None = None) -> T:
        """Run one ccxt call: translate its errors (with our hints) and retry temporary ones."""
        def attempt() -> T:
            try:
                return fn()
            except ccxt.InvalidNonce as e:
                raise ExchangeError(
                    f"{self.exchange_id}: {what} failed: the exchange rejected the request "
                    f"timestamp ({_short(e)}); this machine's clock differs from the exchange's "
                    "by more than the receive window: sync it (NTP)"
                ) from e
            except ccxt.AuthenticationError as e:
                raise AuthenticationError(
                    f"{self.exchange_id}: {what} failed: the exchange rejected the API key: "
                    f"check {self._hint}; and that the key is enabled with the permissions "
                    f"needed (reading, spot trading) and its IP whitelist. Exchange said: "
                    f"{_short(e)}"
                ) from e
            except ccxt.ExchangeError as e:
                typed = self._typed_refusal(e, what)
                if typed is not None:
                    raise typed from e
                raise

        return call_exchange(
            attempt, what, client=self._client,
            max_retries=self.max_retries if max_retries is None else max_retries,
        )

    @property
    def quirks(self) -> ExchangeQuirks:
        """What this exchange's answers mean (:data:`coinrl.live.orders.QUIRKS`)."""
        return quirks_for(self.exchange_id)

    def _typed_refusal(self, e: BaseException, what: str) -> ExchangeError | None:
        """The typed error a refusal means (per the quirks table), or None. The one place an
        exchange's message text is read."""
        kind = classify_refusal(self.exchange_id, str(e))
        if kind is DuplicateClientOrderId:
            return DuplicateClientOrderId(
                f"{self.exchange_id}: {what}: the client order id is already used by an open order "
                f"on the exchange ({_short(e)}); look it up, or send a new order with a new id"
            )
        if kind is FilterFailure:
            return FilterFailure(
                f"{self.exchange_id}: {what} was rejected by the exchange's filters: "
                f"{_short(e)}; round the quantity to the lot step and the price to the "
                "tick, and keep the notional above the minimum (see ExchangeClient.market)"
            )
        if kind is OrderInsufficientFunds:
            return OrderInsufficientFunds(
                f"{self.exchange_id}: {what}: the account cannot pay for it ({_short(e)})"
            )
        return None

    def close(self) -> None:
        """Close the HTTP session."""
        session = getattr(self._client, "session", None)
        if session is not None:
            try:
                session.close()
            except Exception:  # closing is best effort
                logger.debug("closing the exchange session failed", exc_info=True)

    def __enter__(self) -> ExchangeClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- markets and time -------------------------------------------------------------------
    @property
    def symbols(self) -> list[str]:
        """Unified symbols the exchange lists."""
        return list(self._client.symbols or [])

    def market(self, symbol: str) -> dict[str, Any]:
        """ccxt's market structure for ``symbol`` (precision, limits, ids).

        Raises:
            BadSymbol: not listed, with the closest listed symbols.
        """
        markets = self._client.markets or {}
        if symbol not in markets:
            close = difflib.get_close_matches(symbol, list(markets), n=5, cutoff=0.5)
            raise BadSymbol(
                f"{self.exchange_id} does not list {symbol!r}; close matches: {close} "
                f"({len(markets)} markets listed; spot symbols look like BTC/USDT, "
                "perpetuals like BTC/USDT:USDT)"
            )
        market: dict[str, Any] = markets[symbol]
        return market

    def server_time_ms(self) -> int:
        """The exchange's clock, UTC epoch ms (the local clock if the exchange has no time call)."""
        if not self._client.has.get("fetchTime"):
            return time.time_ns() // 1_000_000
        ms = int(self._call(self._client.fetch_time, "fetch_time"))
        self._last_server_ms = (ms, time.monotonic())
        return ms

    def measure_clock_skew_ms(self) -> float:
        """Exchange time minus local time at the middle of the round trip, ms."""
        t0 = time.time_ns() / 1e6
        server = self.server_time_ms()
        t1 = time.time_ns() / 1e6
        self.clock_skew_ms = server - (t0 + t1) / 2.0
        return self.clock_skew_ms

    # -- account ----------------------------------------------------------------------------
    def balances(self) -> dict[str, Balance]:
        """Balances with anything free or locked, by asset (asset units)."""
        raw = self._call(self._client.fetch_balance, "fetch_balance")
        out: dict[str, Balance] = {}
        for asset, total in (raw.get("total") or {}).items():
            free = float((raw.get("free") or {}).get(asset) or 0.0)
            used = float((raw.get("used") or {}).get(asset) or 0.0)
            tot = float(total or 0.0)
            if free or used or tot:
                out[asset] = Balance(asset, free, used, tot)
        return out

    # -- orders -----------------------------------------------------------------------------
    def round_qty(self, symbol: str, qty_base: float) -> float:
        """``qty_base`` rounded DOWN to the market's lot step (0.0 when below one step)."""
        self.market(symbol)
        try:
            return float(self._client.amount_to_precision(symbol, qty_base))
        except ccxt.InvalidOrder:  # below one step
            return 0.0

    def round_price(self, symbol: str, price_quote: float) -> float:
        """``price_quote`` rounded to the nearest tick."""
        self.market(symbol)
        return float(self._client.price_to_precision(symbol, price_quote))

    def _check_order(
        self, symbol: str, order_type: OrderType, qty_asked: float, qty: float,
        price: float | None, ref_price: float | None,
    ) -> None:
        market = self.market(symbol)
        base, quote = market.get("base"), market.get("quote")
        limits = market.get("limits") or {}
        step = (market.get("precision") or {}).get("amount")
        amount_min = (limits.get("amount") or {}).get("min") or 0.0
        amount_max = (limits.get("amount") or {}).get("max")
        if order_type is OrderType.MARKET and (limits.get("market") or {}).get("max"):
            amount_max = min(amount_max or math.inf, limits["market"]["max"])
        if qty <= 0.0 or qty < amount_min:
            raise InvalidOrder(
                f"{symbol}: quantity {_fmt(qty_asked)} {base} rounds down to {_fmt(qty)} at the lot "
                f"step {step}, below the minimum order quantity {_fmt(amount_min)} {base}; "
                f"send at least {_fmt(max(amount_min, step or 0.0))} {base}"
            )
        if amount_max and qty > amount_max:
            raise InvalidOrder(
                f"{symbol}: quantity {_fmt(qty)} {base} is above the maximum {_fmt(amount_max)} "
                f"{base} for a {order_type.value} order; split it"
            )
        if price is not None:
            pmin = (limits.get("price") or {}).get("min")
            pmax = (limits.get("price") or {}).get("max")
            if (pmin and price < pmin) or (pmax and price > pmax) or price <= 0.0:
                raise InvalidOrder(
                    f"{symbol}: limit price {_fmt(price)} {quote} is outside the allowed range "
                    f"[{pmin}, {pmax}] {quote}"
                )
        px = price if price is not None else ref_price
        cost_min = (limits.get("cost") or {}).get("min")
        if px is not None and cost_min and qty * px < cost_min:
            need = cost_min / px
            if step:
                need = math.ceil(need / step - 1e-9) * step
            raise InvalidOrder(
                f"{symbol}: order notional {_fmt(qty)} {base} x {_fmt(px)} {quote} = "
                f"{_fmt(qty * px)} {quote} is below the exchange minimum {_fmt(cost_min)} {quote}; "
                f"send at least {_fmt(need)} {base}"
            )

    def _lookup(self, symbol: str, client_order_id: str) -> dict[str, Any] | None:
        """The order with ``client_order_id`` (ccxt structure), or None if the exchange has none."""
        try:
            found: dict[str, Any] = self._client.fetch_order(
                client_order_id, symbol, {"clientOrderId": client_order_id}
            )
            return found
        except ccxt.OrderNotFound:
            return None

    def _locate(self, symbol: str, client_order_id: str, since_ms: int | None) -> dict[str, Any] | None:
        """The order with ``client_order_id`` (ccxt structure), or None only when its absence is
        PROVEN: a lookup by client id finds nothing, the exchange's order list since
        ``since_ms`` (UTC ms) has no order with that id, and every trade since then belongs to
        a listed order (so the list is complete). Some exchanges (Binance) refuse a repeated
        client id only among OPEN orders: a re-send after the first attempt filled would be
        accepted, so nothing is re-sent on a lookup alone.

        Raises:
            AbsenceUnproven: absence could not be proven (retry later; never re-send).
        """
        found = self._lookup(symbol, client_order_id)
        if found is not None:
            return found
        listed: list[dict[str, Any]] = self._client.fetch_orders(symbol, since_ms)
        for o in listed:
            if str(o.get("clientOrderId") or "") == client_order_id:
                return o
        ids = {str(o.get("id")) for o in listed} | set(self._cid_of)
        trades = self._client.fetch_my_trades(symbol, since_ms)
        strays = sorted({str(t.get("order")) for t in trades} - ids)
        if strays:
            raise AbsenceUnproven(
                f"{self.exchange_id}: order {client_order_id!r} is not found by id nor listed, "
                f"but trades since ts_ms={since_ms} belong to unlisted orders {strays[:5]}: its "
                "absence is not proven, so it is not re-sent; it is looked up again later"
            )
        return None

    def _remember(self, order: ExchangeOrder) -> ExchangeOrder:
        if order.client_order_id:
            self._symbol_of[order.client_order_id] = order.symbol
            if order.order_id:
                self._cid_of[order.order_id] = order.client_order_id
        return order

    def create_order(
        self,
        symbol: str,
        side: Side | str,
        qty_base: float,
        order_type: OrderType | str = OrderType.MARKET,
        price_quote: float | None = None,
        *,
        client_order_id: str | None = None,
        ref_price_quote: float | None = None,
        since_ms: int | None = None,
    ) -> ExchangeOrder:
        """Place an order, idempotently.

        The quantity is rounded down to the lot step and a limit price to the tick, then
        checked against the market's limits before anything is sent. On a temporary failure
        (timeout, dropped connection, 429, 5xx) the order is looked up by its client order id
        AND searched in the exchange's orders and trades since ``since_ms``; it is re-sent
        (same id) only when both prove the first attempt absent (:meth:`_locate`).

        Args:
            symbol: unified symbol (``"BTC/USDT"``).
            side: ``"buy"`` or ``"sell"``.
            qty_base: quantity in base units (> 0).
            order_type: ``"market"`` or ``"limit"``.
            price_quote: the limit price (limit orders only).
            client_order_id: the idempotency key (default: a fresh
                :func:`new_client_order_id`); reuse it to retry the same order safely.
            ref_price_quote: a recent price, to check a market order's minimum notional
                before sending (without it the exchange checks).
            since_ms: the exchange time of the intent, UTC ms (a little before the first send):
                where the search for an earlier attempt starts (None: the exchange's default
                window of recent orders and trades).

        Returns:
            The order as the exchange reports it (a market order may still be open).

        Raises:
            InvalidOrder: rounding/limit violations (with the numbers), a duplicate client
                order id, or the exchange's rejection.
            InsufficientFunds: the account cannot pay.
            TemporaryExchangeError: still failing after the retries: the order's state is
                unknown (look it up with :meth:`fetch_order` before sending it again).
        """
        side_e = Side(str(side).lower())
        type_e = OrderType(str(order_type).lower())
        if not (isinstance(qty_base, int | float) and math.isfinite(qty_base) and qty_base > 0):
            raise InvalidOrder(f"{symbol}: qty_base must be a finite number > 0, got {qty_base!r}")
        if type_e is OrderType.LIMIT and (price_quote is None or not price_quote > 0):
            raise InvalidOrder(f"{symbol}: a limit order needs price_quote > 0, got {price_quote!r}")
        if type_e is OrderType.MARKET and price_quote is not None:
            raise InvalidOrder(
                f"{symbol}: a market order takes no price_quote (got {price_quote}); pass "
                "ref_price_quote to check its notional, or send a limit order"
            )
        qty = self.round_qty(symbol, qty_base)
        price = self.round_price(symbol, price_quote) if price_quote is not None else None
        self._check_order(symbol, type_e, qty_base, qty, price, ref_price_quote)
        cid = client_order_id or new_client_order_id()
        if not CLIENT_ORDER_ID_PATTERN.fullmatch(cid):
            raise InvalidOrder(
                f"client order id {cid!r} is not accepted by the exchange: use 1-36 letters, "
                "digits or . : / _ -"
            )
        self._symbol_of[cid] = symbol
        what = (f"create_order {symbol} {side_e.value} {type_e.value} qty_base={_fmt(qty)}"
                f"{'' if price is None else f' price_quote={_fmt(price)}'} client_order_id={cid}")
        sends = 0

        def attempt() -> dict[str, Any]:
            nonlocal sends
            if sends:
                found = self._locate(symbol, cid, since_ms)  # unproven absence: retried, not re-sent
                if found is not None:
                    logger.warning(
                        "order found on the exchange after a failed send; not re-sent "
                        "client_order_id=%s symbol=%s status=%s", cid, symbol, found.get("status"),
                    )
                    return found
                logger.warning(
                    "order not on the exchange after a failed send; re-sending "
                    "client_order_id=%s symbol=%s attempt=%d", cid, symbol, sends + 1,
                )
            sends += 1
            try:
                placed: dict[str, Any] = self._client.create_order(
                    symbol, type_e.value, side_e.value, qty, price,
                    {"newClientOrderId": cid},
                )
                return placed
            except ccxt.ExchangeError as e:
                typed = self._typed_refusal(e, what)
                if not isinstance(typed, DuplicateClientOrderId):
                    raise
                if sends > 1:  # an earlier send landed after our lookup: it is the order
                    found = self._lookup(symbol, cid)
                    if found is not None:
                        return found
                raise DuplicateClientOrderId(
                    f"{self.exchange_id}: client order id {cid!r} is already used by an order "
                    f"on the exchange ({_short(e)}); fetch_order({cid!r}) shows it, or send a "
                    "new order with a new client order id"
                ) from e

        logger.info("order sending %s", what)
        try:
            raw = self._call(attempt, what)
        except TemporaryExchangeError as e:
            raise TemporaryExchangeError(
                f"{e}; the state of order {cid!r} is unknown: look it up with "
                f"fetch_order({cid!r}) before sending it again"
            ) from e
        order = self._remember(ExchangeOrder.from_ccxt(raw))
        logger.info(
            "order placed client_order_id=%s order_id=%s symbol=%s status=%s filled_base=%s sends=%d",
            cid, order.order_id, symbol, order.status, _fmt(order.filled_base), sends,
        )
        return order

    def _symbol_for(self, client_order_id: str, symbol: str | None) -> str:
        sym = symbol or self._symbol_of.get(client_order_id)
        if sym is None:
            raise ConfigError(
                f"order {client_order_id!r} was not placed by this client: pass its symbol"
            )
        return sym

    def find_order(self, client_order_id: str, symbol: str | None = None) -> ExchangeOrder | None:
        """The order with ``client_order_id``, or None when the exchange has no such order."""
        sym = self._symbol_for(client_order_id, symbol)
        self.market(sym)
        raw = self._call(lambda: self._lookup(sym, client_order_id),
                         f"fetch_order {sym} client_order_id={client_order_id}")
        return self._remember(ExchangeOrder.from_ccxt(raw)) if raw is not None else None

    def locate_order(
        self, client_order_id: str, symbol: str | None = None, *, since_ms: int | None = None,
    ) -> ExchangeOrder | None:
        """The order with ``client_order_id``, or None only when its absence is proven by a
        lookup AND a scan of the orders and trades since ``since_ms`` (see :meth:`_locate`).

        Raises:
            AbsenceUnproven: absence not proven: look again later, do not re-send.
            TemporaryExchangeError: the exchange did not answer (after the retries).
        """
        sym = self._symbol_for(client_order_id, symbol)
        self.market(sym)
        unproven: list[AbsenceUnproven] = []

        def attempt() -> dict[str, Any] | None:
            try:
                return self._locate(sym, client_order_id, since_ms)
            except AbsenceUnproven as e:  # not a failure to retry now: a state to report
                unproven.append(e)
                return None

        raw = self._call(attempt, f"locate_order {sym} client_order_id={client_order_id}")
        if unproven:
            raise unproven[-1]
        return self._remember(ExchangeOrder.from_ccxt(raw)) if raw is not None else None

    def learn_order_ids(self, client_order_ids: Mapping[str, str]) -> None:
        """Exchange order id -> client order id of orders placed earlier (a restart's journal):
        their trades are attributed to them and never taken for a lost order's."""
        for oid, cid in client_order_ids.items():
            if oid and cid:
                self._cid_of.setdefault(oid, cid)

    def fetch_order(self, client_order_id: str, symbol: str | None = None) -> ExchangeOrder:
        """The order with ``client_order_id`` (``symbol`` needed only for orders placed elsewhere).

        Raises:
            InvalidOrder: the exchange has no such order.
        """
        found = self.find_order(client_order_id, symbol)
        if found is None:
            raise InvalidOrder(
                f"{self.exchange_id}: no order with client order id {client_order_id!r} "
                f"in {self._symbol_for(client_order_id, symbol)}"
            )
        return found

    def cancel_order(self, client_order_id: str, symbol: str | None = None) -> ExchangeOrder:
        """Cancel an open order by client order id and return its final state.

        If the cancel fails because the order is no longer open (it filled meanwhile), the
        order's current state is returned instead.

        Raises:
            InvalidOrder: the exchange has no such order.
        """
        sym = self._symbol_for(client_order_id, symbol)
        self.market(sym)

        def attempt() -> dict[str, Any]:
            try:
                done: dict[str, Any] = self._client.cancel_order(
                    client_order_id, sym, {"clientOrderId": client_order_id}
                )
                return done
            except ccxt.OrderNotFound:
                found = self._lookup(sym, client_order_id)
                if found is None:
                    raise
                return found

        raw = self._call(attempt, f"cancel_order {sym} client_order_id={client_order_id}")
        order = ExchangeOrder.from_ccxt(raw)
        field_name = self.quirks.cancel_client_id_field
        info: dict[str, Any] = raw["info"] if isinstance(raw.get("info"), dict) else {}
        original = str(info.get(field_name) or "") if field_name else order.client_order_id
        if not order.client_order_id and not original:  # an answer with little detail
            return self.fetch_order(client_order_id, sym)
        if original and original != client_order_id:
            raise ExchangeError(
                f"{self.exchange_id}: cancel of {client_order_id!r} answered for order "
                f"{original!r}; not booked: look both up"
            )
        # the answer describes the CANCELLED order: it is booked under that order's id, never
        # under the id the exchange gave the cancel request itself (Binance's clientOrderId)
        order = replace(order, client_order_id=client_order_id)
        logger.info("order canceled client_order_id=%s symbol=%s status=%s", client_order_id, sym,
                    order.status)
        return self._remember(order)

    def open_orders(self, symbol: str | None = None) -> list[ExchangeOrder]:
        """Open orders in ``symbol`` (all symbols when None)."""
        if symbol is not None:
            self.market(symbol)
        raw = self._call(lambda: self._client.fetch_open_orders(symbol), f"fetch_open_orders {symbol}")
        return [self._remember(ExchangeOrder.from_ccxt(o)) for o in raw]

    def my_trades(
        self, symbol: str, since_ms: int | None = None, limit: int | None = None
    ) -> list[ExchangeTrade]:
        """Our fills in ``symbol`` from ``since_ms`` (UTC ms, inclusive) on, oldest first."""
        market = self.market(symbol)
        raw = self._call(
            lambda: self._client.fetch_my_trades(symbol, since_ms, limit),
            f"fetch_my_trades {symbol} since_ms={since_ms}",
        )
        out: list[ExchangeTrade] = []
        for t in raw:
            fee = t.get("fee") or {}
            fee_cost = float(fee.get("cost") or 0.0)
            fee_asset = fee.get("currency")
            price = float(t["price"])
            if fee_cost == 0.0 or fee_asset == market.get("quote"):
                fee_quote: float | None = fee_cost
            elif fee_asset == market.get("base"):
                fee_quote = fee_cost * price
            else:
                fee_quote = None
            order_id = str(t.get("order") or "")
            liquidity = t.get("takerOrMaker")
            out.append(ExchangeTrade(
                trade_id=str(t["id"]),
                order_id=order_id,
                client_order_id=self._cid_of.get(order_id),
                symbol=str(t["symbol"]),
                side=Side(str(t["side"]).lower()),
                qty_base=float(t["amount"]),
                price_quote=price,
                fee_cost=fee_cost,
                fee_asset=fee_asset,
                fee_quote=fee_quote,
                ts_ms=int(t["timestamp"]),
                liquidity=liquidity if liquidity in ("taker", "maker") else None,
            ))
        out.sort(key=lambda tr: (tr.ts_ms, tr.trade_id))
        return out

    # -- candles ----------------------------------------------------------------------------
    def fetch_closed_candles(
        self, symbol: str, timeframe: str = "1h", limit: int = 100, *, max_stale_bars: int | None = 1,
    ) -> pd.DataFrame:
        """The latest ``limit`` CLOSED candles (the bar in progress is never returned).

        A bar counts as closed when its close time (open + timeframe) is at or before the
        exchange's clock read BEFORE the candles are fetched: a bar boundary that passes while
        the candles travel cannot make the bar that was in progress when they were cut (on
        Binance: open = high = low = close, volume 0 right after the boundary) look closed.

        Args:
            symbol: unified symbol.
            timeframe: ccxt timeframe (``"1h"``).
            limit: how many closed bars, at most.
            max_stale_bars: how many bars the newest closed candle may lag the exchange clock
                by (a feed that stopped advancing); None = do not check.

        Returns:
            ``ts_ms`` (int64 UTC ms of bar open) and float64 ``open, high, low, close, volume``,
            oldest first; ``attrs`` hold ``symbol``, ``timeframe`` and ``server_time_ms``.

        Raises:
            DataError: no closed candle, or the feed is stale by more than ``max_stale_bars``.
        """
        self.market(symbol)
        tf_ms = timeframe_to_ms(timeframe)
        if limit <= 0:
            raise ConfigError(f"limit must be > 0 closed candles, got {limit}")
        now_ms = self.server_time_ms()  # before the fetch: the candles are at least this recent
        rows = self._call(
            lambda: self._client.fetch_ohlcv(symbol, timeframe, limit=limit + 1),
            f"fetch_ohlcv {symbol} {timeframe} limit={limit + 1}",
        )
        closed = [r for r in rows if int(r[0]) + tf_ms <= now_ms][-limit:]
        if not closed:
            raise DataError(
                f"{self.exchange_id} returned no closed {timeframe} candle of {symbol} at "
                f"server time {now_ms}; the market may be new or the feed is down"
            )
        arr = np.asarray(closed, dtype=np.float64)
        frame = pd.DataFrame({
            "ts_ms": np.asarray([int(r[0]) for r in closed], dtype=np.int64),
            "open": arr[:, 1], "high": arr[:, 2], "low": arr[:, 3], "close": arr[:, 4],
            "volume": arr[:, 5],
        })
        frame.attrs.update(symbol=symbol, timeframe=timeframe, server_time_ms=now_ms)
        last_close_ms = int(frame["ts_ms"].iloc[-1]) + tf_ms
        lag_bars = (now_ms - last_close_ms) // tf_ms
        if max_stale_bars is not None and lag_bars > max_stale_bars:
            raise DataError(
                f"stale candles from {self.exchange_id}: the newest closed {timeframe} bar of "
                f"{symbol} closed at ts_ms={last_close_ms}, {lag_bars} bars before the exchange's "
                f"time {now_ms}; the feed stopped advancing: do not trade on it, retry later"
            )
        logger.debug("closed candles symbol=%s timeframe=%s rows=%d last_ts_ms=%d", symbol,
                     timeframe, len(frame), int(frame["ts_ms"].iloc[-1]))
        return frame


def connect_to_exchange(
    api_key: str | None = None,
    secret_key: str | None = None,
    *,
    exchange: str = "binance",
    exchange_url: str | None = None,
    credentials: Credentials | None = None,
    key_file: str | Path | None = None,
    symbols: Sequence[str] = (),
    max_clock_skew_ms: float | None = DEFAULT_MAX_CLOCK_SKEW_MS,
    max_retries: int = 5,
    timeout_ms: int = 10_000,
    config: Mapping[str, Any] | None = None,
) -> ExchangeClient:
    """Connect to any ccxt exchange with API keys, checking everything before trading.

    Checks, in order: the markets load (the exchange answers); the clock skew (exchange time vs
    local) is within ``max_clock_skew_ms``; the keys work (a balance call); every symbol in
    ``symbols`` is listed.

    Args:
        api_key, secret_key: the credentials; when omitted, ``credentials`` or
            :func:`coinrl.live.keys.load_credentials` (environment variables, key file).
        exchange: ccxt exchange id.
        exchange_url: send every request to this base URL (the emulator).
        credentials: a :class:`~coinrl.live.keys.Credentials` (instead of the two strings).
        key_file: a key file for :func:`~coinrl.live.keys.load_credentials`.
        symbols: symbols the caller will trade (unknown ones fail now, with close matches).
        max_clock_skew_ms: largest accepted |exchange time - local time|, ms; None skips the
            check (an emulator replaying history runs on a clock far from the local one).
        max_retries: retries of temporary failures per call.
        timeout_ms: HTTP timeout per request, ms.
        config: extra ccxt settings (``{"enableRateLimit": False}``, ``{"options": {...}}``);
            ``verbose`` is always forced off.

    Returns:
        A connected :class:`ExchangeClient`.

    Raises:
        ConfigError: no credentials, a half-given pair, an unknown exchange id.
        AuthenticationError: the exchange rejected the key or secret (not retried).
        ExchangeError: the clock skew is over ``max_clock_skew_ms``.
        BadSymbol: a symbol in ``symbols`` is not listed (close matches in the message).
        TemporaryExchangeError: the exchange could not be reached after the retries.
    """
    if (api_key is None) != (secret_key is None):
        raise ConfigError("give both api_key and secret_key, or neither (then "
                          f"{credential_hint(exchange)} are used)")
    if api_key is not None and secret_key is not None:
        creds = Credentials(api_key, secret_key, source="argument")
    elif credentials is not None:
        creds = credentials
    else:
        creds = load_credentials(exchange, key_file=key_file)
    _REDACT.add(creds.api_key, creds.reveal_secret())
    settings: dict[str, Any] = {"enableRateLimit": True, "timeout": int(timeout_ms)}
    settings.update(dict(config or {}))
    if settings.get("verbose"):
        logger.warning("ccxt verbose mode requested; it is forced off (it would log API keys)")
    settings.update(apiKey=creds.api_key, secret=creds.reveal_secret(), verbose=False)
    client = create_exchange(exchange, exchange_url=exchange_url, config=settings)
    client.logger = _CCXT_LOGGER
    fetch_open = client.options.get("fetchOpenOrders") if isinstance(client.options, dict) else None
    if isinstance(fetch_open, dict):
        fetch_open["warnWithoutSymbol"] = False  # open_orders(None) is a deliberate choice
    ex = ExchangeClient(client, exchange=exchange, max_retries=max_retries,
                        credentials_hint=credential_hint(exchange), masked_key=creds.masked_key)
    try:
        ex._call(client.load_markets, "load_markets")
        if max_clock_skew_ms is not None:
            skew = ex.measure_clock_skew_ms()
            if abs(skew) > max_clock_skew_ms:
                raise ExchangeError(
                    f"{exchange}: this machine's clock is {abs(skew):.0f} ms "
                    f"{'behind' if skew > 0 else 'ahead of'} the exchange's (more than "
                    f"max_clock_skew_ms={max_clock_skew_ms:g}); signed requests would be "
                    "rejected: sync the clock (NTP), or pass max_clock_skew_ms=None for an "
                    "emulator replaying history"
                )
        ex.balances()
        for symbol in symbols:
            ex.market(symbol)
    except BaseException:
        ex.close()
        raise
    logger.info(
        "connected exchange=%s url=%s markets=%d key=%s source=%s clock_skew_ms=%s",
        exchange, exchange_url or "default", len(client.markets or {}), creds.masked_key,
        creds.source, "unchecked" if ex.clock_skew_ms is None else f"{ex.clock_skew_ms:.0f}",
    )
    return ex


__all__ = [
    "CLIENT_ORDER_ID_PATTERN",
    "DEFAULT_MAX_CLOCK_SKEW_MS",
    "Balance",
    "ExchangeClient",
    "ExchangeOrder",
    "ExchangeTrade",
    "RetryAfterBeyondDeadline",
    "connect_to_exchange",
    "new_client_order_id",
]
