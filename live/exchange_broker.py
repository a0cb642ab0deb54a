"""The exchange broker: real orders over :class:`~coinrl.live.exchange.ExchangeClient` (spot).

The target is sized with the env kernel's own rule (:func:`coinrl.envs.kernel._size_order_eq`,
the one the books run: buying-power cap, lot size, minimum notional, rebalance threshold) at the
newest close, rounded to the exchange's lot step and checked against its minimum notional, and sent as a market order whose client
order id is derived from the run id, the decision bar and the leg
(:func:`~coinrl.live.brokers.client_order_id`): the intent is journalled before sending, a
restarted runner re-derives the same id and adopts the order instead of sending it again, and
nothing is re-sent until the exchange proves the first attempt absent. Order statuses move only
through :func:`coinrl.live.orders.transition`; every sync reconciles the orders still in play
with the exchange and journals each correction. The exchange is the source of truth for
balances; fills come from its trade list, each journalled once.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from coinrl.envs.config import EnvConfig
from coinrl.envs.domain import Fill, OrderType, Position, Side
from coinrl.envs.kernel import _size_order_eq, make_params
from coinrl.pipeline.errors import (
    ConfigError,
    InsufficientFunds,
    InvalidOrder,
    TemporaryExchangeError,
)

from .brokers import (
    _ACTIVE_STATUSES,
    TERMINAL_STATUSES,
    Broker,
    BrokerState,
    OrderContext,
    OrderReport,
    _fmt,
    check_run_id,
    client_order_id,
    decision_bar_of,
)
from .data import LiveData
from .exchange import ExchangeClient, ExchangeOrder, ExchangeTrade
from .journal import Journal, fill_from_payload
from .orders import AbsenceUnproven, DuplicateClientOrderId, OrderStatus, transition

logger = logging.getLogger(__name__)

MAX_LEGS = 2
"""Orders one decision may send: the first, and one replacement (a new leg id) when the first
was taken off the book (cancelled, expired) before the decision was done, e.g. by a stop."""

INTENT_LOOKBACK_MS = 5_000
"""How far before a decision's exchange time the search for its earlier attempts starts, ms."""



@dataclass
class _OrderInfo:
    bar_ts_ms: int | None = None
    status: str = "intent"
    order_id: str = ""
    ref_price_quote: float = 0.0
    side: str = ""
    intent_ms: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class ExchangeBroker(Broker):
    """Real orders over an :class:`~coinrl.live.exchange.ExchangeClient` (spot).

    Args:
        client: a connected (signed) exchange client.
        symbol: the market (spot: the base balance is the position).
        env_config: the bundle's env config (sizing rules: buying-power cap, rebalance
            threshold, lot size and minimum notional; the exchange's own lot step and minimum
            notional are applied on top).
        run_id: the run id (prefix of the client order ids).
        journal: where intents, acknowledgements, fills and reconciliations are journalled.
        position_tolerance_base: journal and exchange positions closer than this (relative to
            ``max(1, |position|)``) agree.
        cash_tolerance_quote: same for cash (relative to ``max(1, |cash|)``).

    Raises:
        BadSymbol: the exchange does not list ``symbol``.
    """

    kind = "exchange"

    def __init__(
        self,
        client: ExchangeClient,
        symbol: str,
        env_config: EnvConfig,
        *,
        run_id: str,
        journal: Journal | None = None,
        position_tolerance_base: float = 1e-9,
        cash_tolerance_quote: float = 1e-9,
    ) -> None:
        self.client = client
        self.symbol = symbol
        self.run_id = check_run_id(run_id)
        self.journal = journal
        market = client.market(symbol)
        self.base = str(market.get("base"))
        self.quote = str(market.get("quote"))
        limits = market.get("limits") or {}
        self.min_notional_quote = float((limits.get("cost") or {}).get("min") or 0.0)
        self.lot_step_base = float((market.get("precision") or {}).get("amount") or 0.0)
        self._params = make_params(env_config)  # the kernel's constants: its sizing rule's inputs
        self.initial_cash_quote = float(env_config.initial_cash_quote)
        self.position_tolerance_base = position_tolerance_base
        self.cash_tolerance_quote = cash_tolerance_quote
        self._tracker = Position(symbol, initial_cash_quote=self.initial_cash_quote)
        self._seen: set[str] = set()
        self._fills: list[Fill] = []
        self._orders: dict[str, _OrderInfo] = {}
        # the orders still in play (intent, unknown or open), oldest first: a sync looks at these
        # only, so its cost does not grow with every order a long session ever sent
        self._active: dict[str, None] = {}
        self._cid_by_oid: dict[str, str] = {}
        self._since_ms: int | None = None
        self._bars_held = 0.0
        self._prev_qty: float | None = None
        self._mark_bar: int | None = None
        self._state: BrokerState | None = None
        self._adopted = False

    @property
    def state(self) -> BrokerState | None:
        return self._state

    def close(self) -> None:
        self.client.close()

    # -- orders bookkeeping -----------------------------------------------------------------
    def _ours(self, cid: str) -> bool:
        return cid.startswith(self.run_id + "-")

    def _set_status(self, cid: str, info: _OrderInfo, status: str) -> None:
        status = transition(cid, info.status, status).value  # an impossible move raises
        info.status = status
        if status in _ACTIVE_STATUSES:
            self._active[cid] = None
        else:
            self._active.pop(cid, None)

    def _active_with(self, *statuses: str) -> list[str]:
        """Our orders in play with one of ``statuses``, oldest first."""
        return [c for c in self._active if self._orders[c].status in statuses]

    def _note_order(self, order: ExchangeOrder, ts_ms: int, source: str = "") -> None:
        """Record the exchange's view of one of our orders (journal on change)."""
        cid = order.client_order_id
        info = self._orders.setdefault(
            cid, _OrderInfo(bar_ts_ms=decision_bar_of(self.run_id, cid)))
        if order.order_id:
            info.order_id = order.order_id
            self._cid_by_oid[order.order_id] = cid
        if order.status != info.status:
            before = info.status
            self._set_status(cid, info, order.status)
            payload: dict[str, Any] = {
                "status": order.status, "order_id": order.order_id,
                "filled_base": order.filled_base, "remaining_base": order.remaining_base,
                "average_price_quote": order.average_price_quote,
            }
            if source:
                payload.update(source=source, journal_status=before)
            self._journal("order_update", ts_ms=ts_ms, client_order_id=cid, bar_ts_ms=info.bar_ts_ms,
                          payload=payload)

    def _mark_status(self, cid: str, status: str, ts_ms: int, reason: str = "") -> None:
        info = self._orders.setdefault(cid, _OrderInfo())
        if info.status == status and cid in self._orders and status == OrderStatus.UNKNOWN.value:
            return  # still unknown: journalled once
        self._set_status(cid, info, status)
        self._journal("order_update", ts_ms=ts_ms, client_order_id=cid, bar_ts_ms=info.bar_ts_ms,
                      payload={"status": status, "reason": reason})

    def _since_of(self, cid: str) -> int | None:
        info = self._orders.get(cid)
        if info is None or info.intent_ms is None:
            return self._since_ms
        return info.intent_ms - INTENT_LOOKBACK_MS

    # -- fills ------------------------------------------------------------------------------
    def _to_fill(self, t: ExchangeTrade) -> Fill:
        cid = t.client_order_id or self._cid_by_oid.get(t.order_id)
        ref = self._orders[cid].ref_price_quote if cid in self._orders else 0.0
        slip = 0.0
        if ref > 0.0:
            slip = max(0.0, t.side.sign * (t.price_quote - ref) * t.qty_base)
        return Fill(
            fill_id=t.trade_id, order_id=cid or t.order_id, symbol=t.symbol, side=t.side,
            qty_base=t.qty_base, price_quote=t.price_quote,
            fee_quote=t.fee_quote if t.fee_quote is not None else 0.0, ts_ms=t.ts_ms,
            slippage_quote=slip, liquidity=t.liquidity or "taker",
        )

    def _fetch_new_trades(self, source: str) -> list[Fill]:
        """Every exchange trade since the last one seen that is not yet booked (paginated)."""
        out: list[Fill] = []
        since = self._since_ms
        for _ in range(1000):  # pages of the exchange's default size
            trades = self.client.my_trades(self.symbol, since_ms=since)
            fresh = [t for t in trades if t.trade_id not in self._seen]
            for t in fresh:
                fill = self._to_fill(t)
                known = fill.order_id in self._orders
                self._seen.add(fill.fill_id)
                self._tracker.apply(fill)
                self._fills.append(fill)
                out.append(fill)
                if self.journal is not None:
                    info = self._orders.get(fill.order_id)
                    new = self.journal.record_fill(
                        fill, source=source, bar_ts_ms=info.bar_ts_ms if info else None,
                        extra={"fee_asset": t.fee_asset, "foreign": not known},
                    )
                    if new and source == "reconciliation":
                        self.journal.append("reconciliation", ts_ms=fill.ts_ms,
                                            client_order_id=fill.order_id, fill_id=None,
                                            payload={"what": "fill", "fill_id": fill.fill_id,
                                                     "resolution": "backfilled from the exchange's trades"})
                if not known:
                    logger.warning("fill of an order this run did not send trade_id=%s order=%s",
                                   t.trade_id, t.order_id)
            if trades:
                since = max(t.ts_ms for t in trades)
            if not fresh or len(trades) < 500:
                break
        if since is not None:
            self._since_ms = since
        return out

    # -- sync -------------------------------------------------------------------------------
    def _locate(self, cid: str, ts_ms: int) -> ExchangeOrder | None:
        """The exchange's order ``cid``; None only when proven absent (then marked not_found).

        Raises:
            AbsenceUnproven: not proven absent (marked unknown: looked up again next sync).
        """
        try:
            found = self.client.locate_order(cid, self.symbol, since_ms=self._since_of(cid))
        except AbsenceUnproven as e:
            self._mark_status(cid, "unknown", ts_ms, str(e))
            raise
        if found is None:
            status = self._orders[cid].status
            if status in ("intent", "unknown"):
                self._mark_status(cid, "not_found", ts_ms, "the exchange has no such order: a "
                                  "lookup by id and its orders and trades since the intent prove it")
            elif status == "open":  # known open once, gone now: archived by the exchange
                self._mark_status(cid, "expired", ts_ms, "the exchange no longer lists it")
            return None
        return found

    def _look_up_again(self, cids: list[str], ts_ms: int) -> None:
        """Look each order up (absent only when proven; unproven ones wait for the next sync)
        and journal what the exchange says of it."""
        for cid in cids:
            try:
                found = self._locate(cid, ts_ms)
            except AbsenceUnproven:
                continue
            if found is not None:
                self._note_order(found, ts_ms, source="reconciliation")

    def _resolve_unknown(self, ts_ms: int) -> None:
        self._look_up_again(self._active_with("intent", "unknown"), ts_ms)

    def _reconcile_orders(self, ts_ms: int, open_now: Mapping[str, ExchangeOrder]) -> None:
        """Continuous reconciliation: every order the journal holds open that the exchange no
        longer lists as open is looked up and its real status journalled (a correction)."""
        self._look_up_again([c for c in self._active_with("open") if c not in open_now], ts_ms)

    def sync(self, data: LiveData) -> BrokerState:
        """Re-sync with the exchange before a decision.

        In order: orders whose fate is unknown are looked up (absent only when proven); our
        open orders from earlier decisions are canceled (a decision never leaves an order
        resting into the next one), while the current decision's working order is kept (a
        restart in its bar adopts it); every order the journal holds open that the exchange no
        longer lists is looked up and its real status journalled (continuous reconciliation);
        the balances are read (the source of truth for cash and position); new trades are
        booked and journalled once each; then the journal's position and cash are compared
        with the exchange's: a difference is journalled as a ``reconciliation`` and the
        exchange's value adopted.
        """
        now = data.server_time_ms
        first = self._since_ms is None and not self._adopted
        if first:
            self._since_ms = now  # trades before this run are not ours
        self._resolve_unknown(now)
        open_now = {o.client_order_id: o for o in self.client.open_orders(self.symbol)
                    if self._ours(o.client_order_id)}
        for cid, o in open_now.items():
            self._note_order(o, now)
            if decision_bar_of(self.run_id, cid) == data.last_bar_ts_ms:
                continue  # the working order of the current decision (a restart in its bar): kept
            done = self.client.cancel_order(cid, self.symbol)
            self._note_order(done, now)
        self._reconcile_orders(now, {c: o for c, o in open_now.items()
                                     if self._orders[c].status == OrderStatus.OPEN.value})
        bals = self.client.balances()
        cash = bals[self.quote].total if self.quote in bals else 0.0
        qty = bals[self.base].total if self.base in bals else 0.0
        new_fills = self._fetch_new_trades("exchange")
        mark = float(data.market.close[-1])
        self._reconcile(cash, qty, mark, now, first)
        bar = data.last_bar_ts_ms
        if self._mark_bar is None or bar != self._mark_bar:
            if self._prev_qty is not None:
                if self._prev_qty * qty > 0.0:
                    self._bars_held += 1.0
                else:
                    self._bars_held = 1.0 if qty != 0.0 else 0.0
            self._prev_qty = qty
            self._mark_bar = bar
        t = self._tracker
        state = BrokerState(
            ts_ms=now, mark_bar_ts_ms=bar, cash_quote=cash, position_base=qty,
            avg_entry_quote=t.avg_entry_quote if qty != 0.0 else 0.0, mark_price_quote=mark,
            equity_quote=cash + qty * mark, fees_paid_quote=t.fees_paid_quote,
            bars_held=self._bars_held,
            open_orders=tuple(self._active_with("open")),
            new_fills=tuple(new_fills),
        )
        self._state = state
        self._journal("balance", ts_ms=now, bar_ts_ms=bar, payload={
            "broker": "exchange", **state.to_dict(),
            "balances": {a: {"free": b.free, "used": b.used, "total": b.total} for a, b in bals.items()},
        })
        return state

    def _reconcile(self, cash: float, qty: float, mark: float, now: int, first: bool) -> None:
        t = self._tracker
        dq = qty - t.qty_base
        dc = cash - t.cash_quote
        pos_off = abs(dq) > self.position_tolerance_base * max(1.0, abs(qty))
        cash_off = abs(dc) > self.cash_tolerance_quote * max(1.0, abs(cash))
        if not (pos_off or cash_off):
            return
        if pos_off:
            if qty == 0.0:
                avg = 0.0
            elif t.qty_base * qty > 0.0 and t.avg_entry_quote > 0.0:
                avg = t.avg_entry_quote
            else:
                avg = mark
        else:
            avg = t.avg_entry_quote
        self._tracker = Position(
            self.symbol, initial_cash_quote=t.initial_cash_quote, cash_quote=cash, qty_base=qty,
            avg_entry_quote=avg, realised_pnl_quote=t.realised_pnl_quote,
            fees_paid_quote=t.fees_paid_quote, slippage_paid_quote=t.slippage_paid_quote,
            funding_paid_quote=t.funding_paid_quote, borrow_paid_quote=t.borrow_paid_quote,
            _seen_ids=set(self._seen),
        )
        what = "initial" if first else "difference"
        payload = {
            "what": what, "journal_position_base": t.qty_base, "exchange_position_base": qty,
            "journal_cash_quote": t.cash_quote, "exchange_cash_quote": cash,
            "resolution": "adopted the exchange's balances (the source of truth)",
        }
        if first:
            logger.info("initial balances adopted symbol=%s position_base=%.10g cash_quote=%.10g",
                        self.symbol, qty, cash)
        else:
            logger.warning("reconciliation symbol=%s journal position=%.10g exchange=%.10g "
                           "journal cash=%.10g exchange=%.10g: adopted the exchange's",
                           self.symbol, t.qty_base, qty, t.cash_quote, cash)
        self._journal("reconciliation", ts_ms=now, payload=payload)

    # -- orders -----------------------------------------------------------------------------
    def _denoise(self, qty_base: float) -> float:
        """``qty_base`` moved onto the nearest lot step when it is off it by float noise only.

        The exchange rounds quantities DOWN to its step; a quantity computed in floats as
        ``k * step - 1e-17`` (selling a whole balance) would lose a whole step and leave dust.
        """
        step = self.lot_step_base
        if step <= 0.0 or qty_base <= 0.0:
            return qty_base
        k = round(qty_base / step)
        if k > 0 and abs(qty_base - k * step) <= 1e-9 * step:
            return k * step
        return qty_base

    def submit_target(self, target_exposure: float | None, ctx: OrderContext) -> list[OrderReport]:
        """Size, round and send one market order toward ``target_exposure`` (None: nothing).

        Raises:
            AuthenticationError: the keys stopped working (not something to retry).
            ConfigError: called before the first :meth:`sync`.
        """
        if target_exposure is None:
            return []
        st = self._state
        if st is None:
            raise ConfigError("ExchangeBroker.submit_target before the first sync()")
        cid = client_order_id(self.run_id, ctx.bar_ts_ms)
        for seq in range(MAX_LEGS):  # decided before (a restart in the same bar): never send twice
            cid = client_order_id(self.run_id, ctx.bar_ts_ms, seq)
            known = self._orders.get(cid)
            if known is None or known.status in ("skipped", "rejected"):
                break  # nothing of this leg reached the exchange: this id may be used
            try:
                found = self._locate(cid, ctx.now_ms)
            except AbsenceUnproven as e:
                return [OrderReport(cid, "unknown", ref_price_quote=ctx.price_quote, reason=str(e))]
            if found is None:
                break  # proven absent: sending it now is its first arrival
            self._note_order(found, ctx.now_ms)
            if found.status in ("open", "closed") or seq == MAX_LEGS - 1:
                logger.info("order of this decision already on the exchange: not sent again "
                            "client_order_id=%s status=%s", cid, found.status)
                return [OrderReport(cid, "found", found.side, found.qty_base, known.ref_price_quote,
                                    found.status)]
            logger.info("order of this decision was taken off the book (%s): replaced once "
                        "with a new leg client_order_id=%s", found.status,
                        client_order_id(self.run_id, ctx.bar_ts_ms, seq + 1))
        equity = st.cash_quote + st.position_base * ctx.price_quote
        dq = float(_size_order_eq(self._params, float(target_exposure), equity, st.position_base,
                                  ctx.price_quote, ctx.volume_base))
        if dq == 0.0:
            return [OrderReport(cid, "skipped", ref_price_quote=ctx.price_quote,
                                reason="no order: below the rebalance threshold, lot size or minimum notional")]
        side = Side.BUY if dq > 0.0 else Side.SELL
        qty = self.client.round_qty(self.symbol, self._denoise(abs(dq)))
        if side is Side.SELL and qty > st.position_base > 0.0:
            qty = self.client.round_qty(self.symbol, st.position_base)
        if qty <= 0.0 or qty * ctx.price_quote < self.min_notional_quote:
            reason = (f"{_fmt(abs(dq))} {self.base} rounds to {_fmt(qty)} at the exchange's lot "
                      f"step; notional {_fmt(qty * ctx.price_quote)} {self.quote} is below its "
                      f"minimum {_fmt(self.min_notional_quote)}: not sent")
            logger.info("order skipped client_order_id=%s %s", cid, reason)
            self._journal("order", ts_ms=ctx.now_ms, bar_ts_ms=ctx.bar_ts_ms, client_order_id=cid,
                          payload={"status": "skipped", "reason": reason, "side": side.value,
                                   "qty_base": qty, "ref_price_quote": ctx.price_quote})
            return [OrderReport(cid, "skipped", side, qty, ctx.price_quote, reason=reason)]
        self._orders[cid] = _OrderInfo(bar_ts_ms=ctx.bar_ts_ms, status="intent",
                                       ref_price_quote=ctx.price_quote, side=side.value,
                                       intent_ms=ctx.now_ms)
        self._active[cid] = None
        self._journal("order", ts_ms=ctx.now_ms, bar_ts_ms=ctx.bar_ts_ms, client_order_id=cid,
                      payload={"status": "intent", "side": side.value, "qty_base": qty,
                               "order_type": OrderType.MARKET.value,
                               "ref_price_quote": ctx.price_quote, "intent_ms": ctx.now_ms,
                               "target_exposure": float(target_exposure)})
        try:
            order = self.client.create_order(self.symbol, side, qty, OrderType.MARKET,
                                             client_order_id=cid, ref_price_quote=ctx.price_quote,
                                             since_ms=ctx.now_ms - INTENT_LOOKBACK_MS)
        except DuplicateClientOrderId as e:
            found = self.client.find_order(cid, self.symbol)
            if found is not None:
                self._note_order(found, ctx.now_ms)
                return [OrderReport(cid, "found", side, found.qty_base, ctx.price_quote, found.status)]
            return self._refused(cid, side, qty, ctx, e, "rejected")
        except InvalidOrder as e:
            return self._refused(cid, side, qty, ctx, e, "rejected")
        except InsufficientFunds as e:
            return self._refused(cid, side, qty, ctx, e, "refused for funds")
        except TemporaryExchangeError as e:
            self._mark_status(cid, "unknown", ctx.now_ms, str(e))
            logger.warning("order state unknown client_order_id=%s: %s", cid, e)
            return [OrderReport(cid, "unknown", side, qty, ctx.price_quote, reason=str(e))]
        self._note_order(order, ctx.now_ms)
        return [OrderReport(cid, "sent", side, order.qty_base, ctx.price_quote, order.status)]

    def _refused(self, cid: str, side: Side, qty: float, ctx: OrderContext, e: Exception,
                 word: str) -> list[OrderReport]:
        """Journal order ``cid`` as rejected by the exchange (nothing placed) and report it."""
        self._mark_status(cid, "rejected", ctx.now_ms, str(e))
        logger.warning("order %s client_order_id=%s: %s", word, cid, e)
        return [OrderReport(cid, "rejected", side, qty, ctx.price_quote, reason=str(e))]

    def cancel_all(self) -> list[str]:
        """Cancel this run's open orders in the symbol (orders of other runs are left alone)."""
        out: list[str] = []
        now = self.client.server_time_ms() if self._state is None else self._state.ts_ms
        for o in self.client.open_orders(self.symbol):
            if not self._ours(o.client_order_id):
                continue
            done = self.client.cancel_order(o.client_order_id, self.symbol)
            self._note_order(done, now)
            out.append(o.client_order_id)
        return out

    def fills(self) -> list[Fill]:
        return list(self._fills)

    def balances(self) -> dict[str, float]:
        return {a: b.total for a, b in self.client.balances().items()}

    # -- restart ----------------------------------------------------------------------------
    def _replay(self, fill: Fill) -> None:
        if fill.fill_id in self._seen:
            return
        self._seen.add(fill.fill_id)
        self._tracker.apply(fill)
        self._fills.append(fill)
        self._since_ms = max(self._since_ms or fill.ts_ms, fill.ts_ms)

    def recover(self, journal: Journal) -> list[str]:
        """Rebuild orders, fills and the position from the journal, then reconcile with the
        exchange: unknown orders are looked up, fills the journal lacks are backfilled from
        the exchange's trades (journalled as reconciliations)."""
        notes: list[str] = []
        start = journal.events("start")
        if start:
            self._since_ms = int(start[0].ts_ms)
        for cid, info in journal.orders().items():
            if not self._ours(cid):
                continue
            status = str(info.get("status", "intent"))
            self._orders[cid] = _OrderInfo(
                bar_ts_ms=info.get("bar_ts_ms"), status=status,
                order_id=str(info.get("order_id") or ""),
                ref_price_quote=float(info.get("ref_price_quote") or 0.0),
                side=str(info.get("side") or ""),
                intent_ms=int(info["intent_ms"]) if info.get("intent_ms") is not None else None,
            )
            if status in _ACTIVE_STATUSES:
                self._active[cid] = None
            if info.get("order_id"):
                self._cid_by_oid[str(info["order_id"])] = cid
        # the books: fills up to the last journalled sync, that sync's balances (the exchange's
        # word at the time), then the fills journalled after it
        last_bal = journal.last("balance")
        fill_events = journal.events("fill")
        cut = last_bal.seq if last_bal is not None else None
        for fill_ev in fill_events:
            if cut is None or fill_ev.seq < cut:
                self._replay(fill_from_payload(fill_ev.payload))
        if last_bal is not None:
            p = last_bal.payload
            self._tracker = replace_position(self._tracker, cash_quote=float(p["cash_quote"]),
                                             qty_base=float(p["position_base"]),
                                             seen=self._seen)
            self._bars_held = float(p.get("bars_held") or 0.0)
            self._prev_qty = float(p["position_base"])
            self._mark_bar = int(p["mark_bar_ts_ms"])
            self._adopted = True
            for fill_ev in fill_events:
                if fill_ev.seq > last_bal.seq:
                    self._replay(fill_from_payload(fill_ev.payload))
        self.client.learn_order_ids(self._cid_by_oid)
        now = self.client.server_time_ms()
        unknown = [c for c, i in self._orders.items() if i.status not in TERMINAL_STATUSES]
        self._resolve_unknown(now)
        self._reconcile_orders(now, {})  # orders journalled open: what are they now?
        for cid in unknown:
            notes.append(f"order {cid}: {self._orders[cid].status} on the exchange")
        before = len(self._fills)
        backfilled = self._fetch_new_trades("reconciliation")
        notes.extend(f"fill {f.fill_id} of {f.order_id} backfilled" for f in backfilled)
        journal.append("reconciliation", ts_ms=now, payload={
            "broker": "exchange", "what": "restart", "orders_checked": unknown,
            "fills_backfilled": [f.fill_id for f in backfilled], "fills_known": before,
        })
        logger.info("recovered run_id=%s orders=%d fills=%d backfilled=%d", self.run_id,
                    len(self._orders), len(self._fills), len(backfilled))
        return notes


def replace_position(p: Position, *, cash_quote: float, qty_base: float, seen: set[str]) -> Position:
    """A copy of ``p`` with its cash and quantity replaced (fill ids ``seen`` kept)."""
    return Position(
        p.symbol, initial_cash_quote=p.initial_cash_quote, cash_quote=cash_quote, qty_base=qty_base,
        avg_entry_quote=p.avg_entry_quote if qty_base != 0.0 else 0.0,
        realised_pnl_quote=p.realised_pnl_quote, fees_paid_quote=p.fees_paid_quote,
        slippage_paid_quote=p.slippage_paid_quote, funding_paid_quote=p.funding_paid_quote,
        borrow_paid_quote=p.borrow_paid_quote, _seen_ids=set(seen),
    )


__all__ = ["INTENT_LOOKBACK_MS", "MAX_LEGS", "ExchangeBroker", "replace_position"]
