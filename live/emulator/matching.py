"""The emulator's matching engine: orders matched against stored candles on the emulator clock.

Nothing here knows about HTTP; :mod:`.signed_api` formats what this module answers. Rejections
are raised as :class:`OrderRejected` carrying Binance's error code and message.

Fill rules (the env's, so a backtest, a paper run and a run on the emulator of the same candles
give the same fills):

* **Market orders** fill at the OPEN of the first stored bar that opens at or after the moment
  the order was submitted (``ts_k >= submit_ms - market_fill_grace_ms``), once the clock reaches
  that bar. Submitted during bar ``t`` -> filled at ``open[t+1]`` when bar ``t+1`` starts:
  the env's "decision at t's close, fill at t+1's open". An order sent exactly at a bar's open
  time (the instant the previous bar closes, where a FixedClock-driven session decides) fills
  at that bar's open immediately. The price, fee and slippage are
  :meth:`coinrl.envs.execution.ExecutionModel.market_fill` with the fill bar's open and volume:
  fill price ``open * (1 ± slippage)``, taker fee on the reference notional.
* **Limit orders** fill when a bar that opened at or after their submission trades THROUGH the
  limit (``low < limit`` for a buy, ``high > limit`` for a sell), at the limit price with the
  maker fee and no slippage (:func:`limit_fill`). The bar must be closed before the fill is known
  (nothing intra-bar is revealed early): the fill is stamped at the bar's close (its open +
  timeframe) and happens when the clock gets there. A marketable limit also fills at its limit
  (conservative: a real exchange may give a better price).
* Fees are charged in the quote currency. A fill moves both assets of the account under one lock
  (atomic), in the same order of operations as :meth:`coinrl.envs.domain.Position.apply`:
  ``quote = quote - signed_qty * price - fee``.
* Funds are checked and locked at submission: a buy locks ``qty * price * (1 + fee [+
  slippage])`` quote (a market buy at the price of the bar in progress), a sell locks ``qty``
  base. If a market buy cannot pay for its fill when it comes (the price gapped up), the
  affordable part fills and the rest EXPIRES, as Binance expires what a market order cannot fill.
* A ``partial_fill`` fault (:meth:`FaultPlan.decide_fill`) fills only a fraction of what remains;
  the rest of a market order fills at the next bar's open, the rest of a limit order at the next
  bar that trades through.

Everything is driven by :meth:`MatchingEngine.process_until`, called with the clock's time on
every request the server receives (and by tests directly): deterministic under a FixedClock.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal

import numpy as np

from coinrl.envs.config import EnvConfig
from coinrl.envs.domain import Fill, Order, OrderType, Side
from coinrl.envs.execution import ExecutionModel

from .accounts import Account, Accounts, mask
from .faults import FaultPlan
from .market import CandleSeries, EmulatedMarkets, MarketSpec
from .perps import PerpLedger

logger = logging.getLogger(__name__)

OrderState = Literal["NEW", "PARTIALLY_FILLED", "FILLED", "CANCELED", "EXPIRED"]
OPEN_STATES: frozenset[str] = frozenset({"NEW", "PARTIALLY_FILLED"})

# Binance's answers (code, msg) for rejected requests.
INSUFFICIENT_BALANCE = (-2010, "Account has insufficient balance for requested action.")
DUPLICATE_ORDER = (-2010, "Duplicate order sent.")
UNKNOWN_ORDER_CANCEL = (-2011, "Unknown order sent.")
ORDER_DOES_NOT_EXIST = (-2013, "Order does not exist.")
NO_TRADE_PERMISSION = (-2015, "Invalid API-key, IP, or permissions for action.")


class OrderRejected(Exception):
    """A request the exchange refuses, with Binance's error ``code`` and ``msg``."""

    def __init__(self, code: int, msg: str) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg

    @classmethod
    def of(cls, code_msg: tuple[int, str]) -> OrderRejected:
        """From a ``(code, msg)`` pair such as :data:`INSUFFICIENT_BALANCE`."""
        return cls(*code_msg)


@dataclass
class EmulatedOrder:
    """One order on the emulated exchange (mutated only under the engine's lock).

    Attributes:
        order_id: exchange order id (unique per emulator, increasing).
        client_order_id: the client's id (unique per account).
        api_key: owner.
        symbol: unified symbol.
        side, order_type: as sent.
        qty_base: ordered quantity, base units.
        limit_price_quote: the limit (None for market orders).
        time_in_force: ``"GTC"`` for limits, ``""`` for market orders.
        submit_ms: emulated time it was accepted, UTC ms.
        status: Binance status (NEW, PARTIALLY_FILLED, FILLED, CANCELED, EXPIRED).
        executed_base: quantity filled so far.
        cum_quote: sum of ``qty * price`` over its fills (Binance's cummulativeQuoteQty).
        update_ms: time of the last change, UTC ms.
        next_bar: index of the first stored bar it may still fill in.
        lock_asset, lock_amount: what it keeps locked for its unfilled part.
        trade_ids: ids of its fills.
    """

    order_id: int
    client_order_id: str
    api_key: str
    symbol: str
    side: Side
    order_type: OrderType
    qty_base: float
    limit_price_quote: float | None
    time_in_force: str
    submit_ms: int
    status: OrderState
    executed_base: float
    cum_quote: float
    update_ms: int
    next_bar: int
    lock_asset: str
    lock_amount: float
    trade_ids: list[int] = field(default_factory=list)

    @property
    def is_open(self) -> bool:
        """True while it may still fill (NEW or PARTIALLY_FILLED)."""
        return self.status in OPEN_STATES

    @property
    def remaining_base(self) -> float:
        """Unfilled quantity, base units."""
        return 0.0 if self.executed_base >= self.qty_base else self.qty_base - self.executed_base


@dataclass(frozen=True)
class EmulatedTrade:
    """One fill of one order (Binance's myTrades row).

    Attributes:
        trade_id: unique, increasing.
        order_id, client_order_id, api_key, symbol, side: of the order.
        qty_base: filled quantity.
        price_quote: execution price (slippage included).
        quote_qty: ``qty_base * price_quote``.
        fee_quote: commission, in ``fee_asset`` (the quote currency).
        fee_asset: commission asset.
        ts_ms: execution time, UTC ms.
        is_maker: True for limit fills.
        slippage_quote: cost against the reference price (0 for limit fills).
    """

    trade_id: int
    order_id: int
    client_order_id: str
    api_key: str
    symbol: str
    side: Side
    qty_base: float
    price_quote: float
    quote_qty: float
    fee_quote: float
    fee_asset: str
    ts_ms: int
    is_maker: bool
    slippage_quote: float

    def to_fill(self) -> Fill:
        """The same execution as an envs :class:`~coinrl.envs.domain.Fill` (id = trade id)."""
        return Fill(
            fill_id=str(self.trade_id),
            order_id=self.client_order_id,
            symbol=self.symbol,
            side=self.side,
            qty_base=self.qty_base,
            price_quote=self.price_quote,
            fee_quote=self.fee_quote,
            ts_ms=self.ts_ms,
            slippage_quote=self.slippage_quote,
            liquidity="maker" if self.is_maker else "taker",
        )


def emulator_execution_model(execution: EnvConfig | ExecutionModel | None) -> ExecutionModel:
    """The env's fee/slippage rules for the emulator (its own filters replace lot/min-notional).

    Args:
        execution: an :class:`EnvConfig` (its ``taker_fee_rate``, ``maker_fee_rate``,
            ``slippage_bps``, ``impact_coef``, ``max_impact_frac`` are used), an
            :class:`ExecutionModel`, or None for ``EnvConfig()``'s defaults.
    """
    if execution is None:
        execution = EnvConfig()
    model = execution if isinstance(execution, ExecutionModel) else ExecutionModel.from_config(execution)
    return dataclasses.replace(model, lot_size_base=0.0, min_notional_quote=0.0)


def limit_fill(
    model: ExecutionModel, order: Order, qty_base: float, fill_id: str, ts_ms: int
) -> Fill:
    """Fill ``qty_base`` of a resting limit order at its limit price, paying the maker fee.

    TODO(envs): :mod:`coinrl.envs.execution` has no limit-fill rule yet (the env only sends
    market orders); move this next to ``ExecutionModel.market_fill`` when the paper broker
    needs the same rule.
    """
    price = order.limit_price_quote
    assert price is not None  # noqa: S101 - only called for limit orders
    notional = qty_base * price
    return Fill(
        fill_id=fill_id,
        order_id=order.order_id,
        symbol=order.symbol,
        side=order.side,
        qty_base=qty_base,
        price_quote=price,
        fee_quote=notional * model.maker_fee_rate,
        ts_ms=ts_ms,
        slippage_quote=0.0,
        liquidity="maker",
    )


def _dec(x: float) -> Decimal:
    return Decimal(repr(float(x)))


def round_to_step(x: float, step: float) -> float:
    """``x`` rounded to the nearest multiple of ``step`` (float noise removed)."""
    decimals = max(0, -int(math.floor(math.log10(step) + 1e-9))) if step > 0 else 12
    return round(round(x / step) * step, decimals + 2)


def floor_to_step(x: float, step: float) -> float:
    """``x`` rounded down to a multiple of ``step`` (quantities the exchange accepts)."""
    if step <= 0:
        return x
    n = math.floor(x / step + 1e-9)
    return round_to_step(n * step, step)


def check_filters(
    spec: MarketSpec, order_type: OrderType, qty_base: float, price_quote: float | None,
    ref_price_quote: float,
) -> None:
    """Binance's symbol filters, checked exactly on the decimal values sent.

    Raises:
        OrderRejected: ``-1013 Filter failure: PRICE_FILTER | LOT_SIZE | MARKET_LOT_SIZE |
            NOTIONAL`` (or ``Invalid quantity.`` / ``Invalid price.``).
    """
    if not (qty_base > 0.0 and math.isfinite(qty_base)):
        raise OrderRejected(-1013, "Invalid quantity.")
    q = _dec(qty_base)
    if order_type is OrderType.LIMIT:
        if price_quote is None or not (price_quote > 0.0 and math.isfinite(price_quote)):
            raise OrderRejected(-1013, "Invalid price.")
        p = _dec(price_quote)
        if p < _dec(spec.min_price) or p > _dec(spec.max_price) or (
            (p - _dec(spec.min_price)) % _dec(spec.tick_size) != 0
        ):
            raise OrderRejected(-1013, "Filter failure: PRICE_FILTER")
    if q < _dec(spec.min_qty) or q > _dec(spec.max_qty) or (
        (q - _dec(spec.min_qty)) % _dec(spec.step_size) != 0
    ):
        raise OrderRejected(-1013, "Filter failure: LOT_SIZE")
    if order_type is OrderType.MARKET and q > _dec(spec.max_qty / 10):
        raise OrderRejected(-1013, "Filter failure: MARKET_LOT_SIZE")
    notional_price = price_quote if order_type is OrderType.LIMIT else ref_price_quote
    assert notional_price is not None  # noqa: S101 - checked above
    if qty_base * notional_price < spec.min_notional:
        raise OrderRejected(-1013, "Filter failure: NOTIONAL")


class MatchingEngine:
    """Orders, fills and balances of every emulated account.

    Args:
        markets: the listed markets and their candles (spot, and linear perpetuals: see
            :mod:`.perps`).
        accounts: the accounts; their ``lock`` guards every change made here.
        faults: consulted for ``partial_fill`` faults.
        execution: fee/slippage rules (see :func:`emulator_execution_model`).
        market_fill_grace_ms: a market order sent within this many ms after a bar opened fills
            at that bar's open (models a live runner that decides at the bar close and whose
            order reaches the exchange a little later); 0 = strict (only an order sent exactly
            at the open fills at it).
    """

    def __init__(
        self,
        markets: EmulatedMarkets,
        accounts: Accounts,
        faults: FaultPlan | None = None,
        execution: EnvConfig | ExecutionModel | None = None,
        market_fill_grace_ms: int = 0,
    ) -> None:
        self.markets = markets
        self.accounts = accounts
        self.faults = faults if faults is not None else FaultPlan()
        self.model = emulator_execution_model(execution)
        self.market_fill_grace_ms = max(0, int(market_fill_grace_ms))
        self.lock = accounts.lock
        self._orders: dict[int, EmulatedOrder] = {}
        self._open: dict[int, EmulatedOrder] = {}  # the open ones, by id (matching scans these)
        self._by_client: dict[tuple[str, str], int] = {}
        self._trades: list[EmulatedTrade] = []
        # indexes over _trades (same objects, oldest first): myTrades and order lookups stay
        # O(matches) instead of scanning every fill of a long session
        self._trades_by_order: dict[int, list[EmulatedTrade]] = {}
        self._trades_by_account: dict[tuple[str, str], list[EmulatedTrade]] = {}
        self._next_order_id = 1
        self._next_trade_id = 1
        self.perps = PerpLedger(markets)  # linear perpetuals: positions, cross margin, funding

    # -- prices -----------------------------------------------------------------------------
    def _tradable(self, symbol: str) -> tuple[MarketSpec, CandleSeries]:
        """A tradable market: spot, or a linear perpetual (reached by the Bybit dialect only)."""
        spec = self.markets.specs.get(symbol)
        if spec is None:
            raise OrderRejected(-1121, "Invalid symbol.")
        return spec, self.markets.series[symbol]

    @staticmethod
    def reference_price(series: CandleSeries, now_ms: int) -> float:
        """The latest price known at ``now_ms``: the open of the bar in progress, else the
        close of the last bar before now, else the first open (UTC ms in, quote out)."""
        p = series.price_at(now_ms)
        if p is not None:
            return p
        i = int(np.searchsorted(series.ts_ms, now_ms, side="right")) - 1
        if i >= 0:
            return float(series.close[i])
        return float(series.open[0])

    def cost_frac_buy(self, order_type: OrderType) -> float:
        """Fraction over the notional a buy locks: fee (+ slippage and max impact for market)."""
        m = self.model
        if order_type is OrderType.LIMIT:
            return m.maker_fee_rate
        impact = m.max_impact_frac if m.impact_coef > 0.0 else 0.0
        return m.taker_fee_rate + m.slippage_frac + impact

    # -- orders -----------------------------------------------------------------------------
    def submit(
        self,
        api_key: str,
        symbol: str,
        side: Side,
        order_type: OrderType,
        qty_base: float,
        *,
        now_ms: int,
        price_quote: float | None = None,
        client_order_id: str | None = None,
        time_in_force: str = "GTC",
        client_id_unique_forever: bool = False,
    ) -> EmulatedOrder:
        """Accept (or reject) a new order at emulated time ``now_ms`` (UTC ms).

        The order is matched right away up to ``now_ms`` (a market order sent exactly at a
        bar's open fills at once). ``client_id_unique_forever``: refuse a client id used by ANY
        earlier order of the account (Bybit's ``orderLinkId``), not only by an open one
        (Binance's ``newClientOrderId``).

        Raises:
            OrderRejected: no trading permission (-2015), a client id in use by an OPEN order
                (-2010, as Binance: a filled or cancelled order's id may be reused), unknown
                symbol (-1121), a filter failure (-1013) or insufficient balance (-2010).
        """
        with self.lock:
            self.process_until(now_ms)
            account = self._account(api_key)
            if not account.can_trade:
                raise OrderRejected.of(NO_TRADE_PERMISSION)
            cid = client_order_id or f"emu_{uuid.uuid4().hex[:22]}"
            prev = self._by_client.get((api_key, cid))
            if prev is not None and (client_id_unique_forever or self._orders[prev].is_open):
                # Binance: newClientOrderId is unique among OPEN orders only; once the first
                # order filled or was cancelled, the same id is accepted again
                raise OrderRejected.of(DUPLICATE_ORDER)
            spec, series = self._tradable(symbol)
            ref = self.reference_price(series, now_ms)
            check_filters(spec, order_type, qty_base, price_quote, ref)
            px = price_quote if order_type is OrderType.LIMIT else ref
            assert px is not None  # noqa: S101 - check_filters ensured it
            if spec.kind == "linear":  # margin of what does not reduce the position, and fees
                opening = qty_base - min(qty_base, self.perps.reducible(api_key, symbol, side is Side.BUY))
                lock_asset = spec.quote
                lock_amount = opening * px / self.perps.leverage + qty_base * px * self.cost_frac_buy(order_type)
            elif side is Side.BUY:
                lock_asset, lock_amount = spec.quote, qty_base * px * (1.0 + self.cost_frac_buy(order_type))
            else:
                lock_asset, lock_amount = spec.base, qty_base
            free = (account.total(lock_asset) - self._locked(api_key, lock_asset)
                    + self.perps.margin_adjustment(api_key, lock_asset, now_ms))
            if lock_amount > free:
                raise OrderRejected.of(INSUFFICIENT_BALANCE)
            if order_type is OrderType.MARKET:
                start_ms = now_ms - self.market_fill_grace_ms
            else:
                start_ms = now_ms
            order = EmulatedOrder(
                order_id=self._next_order_id,
                client_order_id=cid,
                api_key=api_key,
                symbol=symbol,
                side=side,
                order_type=order_type,
                qty_base=qty_base,
                limit_price_quote=price_quote if order_type is OrderType.LIMIT else None,
                time_in_force=time_in_force if order_type is OrderType.LIMIT else "",
                submit_ms=now_ms,
                status="NEW",
                executed_base=0.0,
                cum_quote=0.0,
                update_ms=now_ms,
                next_bar=int(np.searchsorted(series.ts_ms, start_ms, side="left")),
                lock_asset=lock_asset,
                lock_amount=lock_amount,
            )
            self._next_order_id += 1
            self._orders[order.order_id] = order
            self._open[order.order_id] = order
            self._by_client[(api_key, cid)] = order.order_id
            logger.debug(
                "order accepted order_id=%d client_order_id=%s key=%s symbol=%s side=%s "
                "type=%s qty_base=%r price_quote=%r now_ms=%d",
                order.order_id, cid, mask(api_key), symbol, side.value, order_type.value,
                qty_base, price_quote, now_ms,
            )
            self._match(now_ms)
            return order

    def find(
        self, api_key: str, symbol: str, *, order_id: int | None = None,
        client_order_id: str | None = None,
    ) -> EmulatedOrder:
        """The account's order by exchange id or client id.

        Raises:
            OrderRejected: ``-2013 Order does not exist.`` (also for another symbol's order).
        """
        with self.lock:
            oid = order_id
            if oid is None and client_order_id is not None:
                oid = self._by_client.get((api_key, client_order_id))
            order = self._orders.get(oid) if oid is not None else None
            if order is None or order.api_key != api_key or order.symbol != symbol:
                raise OrderRejected.of(ORDER_DOES_NOT_EXIST)
            return order

    def cancel(
        self, api_key: str, symbol: str, *, now_ms: int, order_id: int | None = None,
        client_order_id: str | None = None,
    ) -> EmulatedOrder:
        """Cancel an open order (its lock is released).

        Raises:
            OrderRejected: ``-2011 Unknown order sent.`` when it does not exist or is no longer
                open (filled, canceled, expired); ``-2015`` without trading permission.
        """
        with self.lock:
            self.process_until(now_ms)
            account = self._account(api_key)
            if not account.can_trade:
                raise OrderRejected.of(NO_TRADE_PERMISSION)
            try:
                order = self.find(api_key, symbol, order_id=order_id, client_order_id=client_order_id)
            except OrderRejected as e:
                raise OrderRejected.of(UNKNOWN_ORDER_CANCEL) from e
            if not order.is_open:
                raise OrderRejected.of(UNKNOWN_ORDER_CANCEL)
            self._finish(order, "CANCELED", now_ms)
            logger.debug("order canceled order_id=%d symbol=%s", order.order_id, symbol)
            return order

    def cancel_all(self, api_key: str, symbol: str, *, now_ms: int) -> list[EmulatedOrder]:
        """Cancel every open order of the account in ``symbol``."""
        with self.lock:
            self.process_until(now_ms)
            self._tradable(symbol)
            return [
                self.cancel(api_key, symbol, now_ms=now_ms, order_id=o.order_id)
                for o in self.open_orders(api_key, symbol)
            ]

    # -- queries ----------------------------------------------------------------------------
    def orders(self, api_key: str | None = None, symbol: str | None = None) -> list[EmulatedOrder]:
        """Orders (of one account / symbol, None = all), by increasing order id."""
        with self.lock:
            return [
                o for o in self._orders.values()
                if (api_key is None or o.api_key == api_key) and (symbol is None or o.symbol == symbol)
            ]

    def order_count(self, api_key: str | None = None, symbol: str | None = None) -> int:
        """How many orders the exchange holds (any status) for an account / symbol."""
        return len(self.orders(api_key, symbol))

    def open_orders(self, api_key: str, symbol: str | None = None) -> list[EmulatedOrder]:
        """The account's open orders (NEW or PARTIALLY_FILLED), by increasing order id."""
        with self.lock:
            return [
                o for o in self._open.values()
                if o.api_key == api_key and (symbol is None or o.symbol == symbol)
            ]

    def trades(
        self, api_key: str | None = None, symbol: str | None = None, order_id: int | None = None,
    ) -> list[EmulatedTrade]:
        """Fills, oldest first (of one account / symbol / order; None = all)."""
        with self.lock:
            if order_id is not None:
                base = self._trades_by_order.get(order_id, [])
            elif api_key is not None and symbol is not None:
                base = self._trades_by_account.get((api_key, symbol), [])
            else:
                base = self._trades
            return [
                t for t in base
                if (api_key is None or t.api_key == api_key)
                and (symbol is None or t.symbol == symbol)
                and (order_id is None or t.order_id == order_id)
            ]

    def balances(self, api_key: str) -> dict[str, tuple[float, float]]:
        """Asset -> ``(free, locked)`` of an account (free = total - locked).

        Raises:
            OrderRejected: ``-2015`` for an unknown key.
        """
        with self.lock:
            account = self._account(api_key)
            assets = set(account.totals) | {o.lock_asset for o in self.open_orders(api_key)}
            out: dict[str, tuple[float, float]] = {}
            for asset in sorted(assets):
                locked = self._locked(api_key, asset)
                out[asset] = (account.total(asset) - locked, locked)
            return out

    def _account(self, api_key: str) -> Account:
        account = self.accounts.get(api_key)
        if account is None:
            raise OrderRejected.of(NO_TRADE_PERMISSION)
        return account

    def _locked(self, api_key: str, asset: str) -> float:
        total = 0.0
        for o in self._open.values():
            if o.api_key == api_key and o.lock_asset == asset:
                total += o.lock_amount
        return total

    # -- matching ---------------------------------------------------------------------------
    def process_until(self, now_ms: int) -> list[EmulatedTrade]:
        """Match every open order against the bars known at ``now_ms`` (UTC ms).

        Deterministic: fills happen in order of their time, then order id. Calling it again
        with the same time does nothing new; a fill is only ever made from bars that have
        opened (market) or closed (limit) by ``now_ms``.

        Returns:
            The fills made by this call.
        """
        with self.lock:
            return self._match(int(now_ms))

    def _match(self, now_ms: int) -> list[EmulatedTrade]:
        made: list[EmulatedTrade] = []
        while True:
            best: tuple[int, int, int] | None = None  # (fill ts, order id, bar index)
            for order in self._open.values():
                event = self._next_event(order, now_ms)
                if event is not None and (best is None or (event[0], order.order_id) < best[:2]):
                    best = (event[0], order.order_id, event[1])
            funding = self.perps.next_funding_ms(now_ms)
            if funding is not None and (best is None or funding[0] <= best[0]):
                # owed on the position held up to its time: settled before a fill at that time
                self.perps.settle_funding(funding[1], {a.api_key: a for a in self.accounts})
                continue
            if best is None:
                return made
            made.extend(self._execute(self._orders[best[1]], best[2], best[0]))

    def _next_event(self, order: EmulatedOrder, now_ms: int) -> tuple[int, int] | None:
        """``(fill ts, bar index)`` of the order's next fill known at ``now_ms``, if any."""
        series = self.markets.series[order.symbol]
        k = order.next_bar
        n = len(series)
        if k >= n:
            return None
        if order.order_type is OrderType.MARKET:
            ts = int(series.ts_ms[k])
            return (max(ts, order.submit_ms), k) if ts <= now_ms else None
        # limit: only closed bars (open + timeframe <= now) are looked at
        n_closed = int(np.searchsorted(series.ts_ms, now_ms - series.timeframe_ms, side="right"))
        if n_closed <= k:
            return None
        limit = order.limit_price_quote
        assert limit is not None  # noqa: S101 - a limit order has a price
        if order.side is Side.BUY:
            hit = np.flatnonzero(series.low[k:n_closed] < limit)
        else:
            hit = np.flatnonzero(series.high[k:n_closed] > limit)
        if len(hit) == 0:
            order.next_bar = n_closed  # these bars never crossed: no need to look again
            return None
        j = k + int(hit[0])
        return int(series.ts_ms[j]) + series.timeframe_ms, j

    def _execute(self, order: EmulatedOrder, k: int, ts_ms: int) -> list[EmulatedTrade]:
        spec = self.markets.specs[order.symbol]
        series = self.markets.series[order.symbol]
        account = self._account(order.api_key)
        remaining = round_to_step(order.remaining_base, spec.step_size)
        qty = remaining
        fraction = self.faults.decide_fill(order.symbol)
        if fraction is not None:
            part = floor_to_step(remaining * fraction, spec.step_size)
            if 0.0 < part < remaining:
                qty = part
        env_order = Order(
            order_id=order.client_order_id,
            symbol=order.symbol,
            side=order.side,
            qty_base=qty,
            order_type=order.order_type,
            limit_price_quote=order.limit_price_quote,
            ts_ms=order.submit_ms,
        )
        fill_id = str(self._next_trade_id)
        if order.order_type is OrderType.MARKET:
            ref, vol = float(series.open[k]), float(series.volume[k])
            fill: Fill | None = self.model.market_fill(env_order, ref, vol, fill_id, ts_ms)
            if order.side is Side.BUY and spec.kind == "spot":
                fill = self._affordable(order, account, spec, fill, ref, vol, fill_id, ts_ms)
        else:
            fill = limit_fill(self.model, env_order, qty, fill_id, ts_ms)
        if fill is None:  # a market buy that cannot pay for even one lot step
            self._finish(order, "EXPIRED", ts_ms)
            logger.info(
                "market order expired unfilled order_id=%d symbol=%s: the account cannot pay "
                "for it at open=%r", order.order_id, order.symbol, float(series.open[k]),
            )
            return []
        trade = self._book(order, account, spec, fill)
        order.next_bar = k + 1
        left = round_to_step(order.qty_base - order.executed_base, spec.step_size)
        if fill.qty_base < qty:  # _affordable cut it: the rest cannot be paid for
            self._finish(order, "EXPIRED", ts_ms)
        elif left <= 0.0 or fill.qty_base >= remaining:
            order.executed_base = order.qty_base
            self._finish(order, "FILLED", ts_ms)
        else:
            order.status = "PARTIALLY_FILLED"
            order.lock_amount *= left / remaining
        return [trade]

    def _affordable(
        self, order: EmulatedOrder, account: Account, spec: MarketSpec, fill: Fill | None,
        ref: float, vol: float, fill_id: str, ts_ms: int,
    ) -> Fill | None:
        """The largest part of a market buy's fill the account can pay for (None: nothing)."""
        available = account.total(spec.quote) - self._locked(order.api_key, spec.quote) + order.lock_amount
        while fill is not None and fill.qty_base * fill.price_quote + fill.fee_quote > available:
            per_unit = fill.price_quote + fill.fee_quote / fill.qty_base
            qty = floor_to_step(min(available / per_unit, fill.qty_base - spec.step_size), spec.step_size)
            if qty <= 0.0:
                return None
            env_order = Order(order.client_order_id, order.symbol, order.side, qty, OrderType.MARKET,
                              ts_ms=order.submit_ms)
            fill = self.model.market_fill(env_order, ref, vol, fill_id, ts_ms)
        return fill

    def _book(self, order: EmulatedOrder, account: Account, spec: MarketSpec, fill: Fill) -> EmulatedTrade:
        """Apply one fill to the account and the order (the one place balances change)."""
        dq = fill.signed_qty_base
        if spec.kind == "linear":  # the wallet moves by realised PnL and fees only
            self.perps.realised_by_trade[self._next_trade_id] = self.perps.book_fill(
                account, order.symbol, dq, fill.price_quote, fill.fee_quote, fill.ts_ms)
        else:
            quote = account.total(spec.quote)
            account.totals[spec.quote] = quote - dq * fill.price_quote - fill.fee_quote
            account.totals[spec.base] = account.total(spec.base) + dq
            account.update_ms = fill.ts_ms
        order.executed_base = order.executed_base + fill.qty_base
        order.cum_quote = order.cum_quote + fill.qty_base * fill.price_quote
        order.update_ms = fill.ts_ms
        trade = EmulatedTrade(
            trade_id=self._next_trade_id,
            order_id=order.order_id,
            client_order_id=order.client_order_id,
            api_key=order.api_key,
            symbol=order.symbol,
            side=order.side,
            qty_base=fill.qty_base,
            price_quote=fill.price_quote,
            quote_qty=fill.qty_base * fill.price_quote,
            fee_quote=fill.fee_quote,
            fee_asset=spec.quote,
            ts_ms=fill.ts_ms,
            is_maker=fill.liquidity == "maker",
            slippage_quote=fill.slippage_quote,
        )
        self._next_trade_id += 1
        self._trades.append(trade)
        self._trades_by_order.setdefault(trade.order_id, []).append(trade)
        self._trades_by_account.setdefault((trade.api_key, trade.symbol), []).append(trade)
        order.trade_ids.append(trade.trade_id)
        logger.debug(
            "fill trade_id=%d order_id=%d symbol=%s side=%s qty_base=%r price_quote=%r "
            "fee_quote=%r ts_ms=%d", trade.trade_id, order.order_id, order.symbol,
            order.side.value, fill.qty_base, fill.price_quote, fill.fee_quote, fill.ts_ms,
        )
        return trade

    def _finish(self, order: EmulatedOrder, status: OrderState, ts_ms: int) -> None:
        self._open.pop(order.order_id, None)
        order.status = status
        order.lock_amount = 0.0
        order.update_ms = ts_ms


__all__ = [
    "DUPLICATE_ORDER",
    "INSUFFICIENT_BALANCE",
    "NO_TRADE_PERMISSION",
    "ORDER_DOES_NOT_EXIST",
    "OPEN_STATES",
    "UNKNOWN_ORDER_CANCEL",
    "EmulatedOrder",
    "EmulatedTrade",
    "MatchingEngine",
    "OrderRejected",
    "OrderState",
    "check_filters",
    "emulator_execution_model",
    "floor_to_step",
    "limit_fill",
    "round_to_step",
]
