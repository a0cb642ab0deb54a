"""Brokers: one interface over simulated fills (paper) and real orders (exchange).

A :class:`Broker` takes a *target exposure* per decision (position notional / equity, the
env's action unit), re-syncs its books before every decision, reports its fills and balances,
and cancels its open orders. :class:`~coinrl.live.live_env.LiveTradingEnv` and the runner talk
to nothing else.

* :class:`PaperBroker`: live candles, fills simulated through the env's OWN books
  (:class:`coinrl.envs.books.Account`: the kernel the backtests run), so a paper session and a
  backtest of the same decisions on the same candles give the same books, bit for bit. A
  decision at bar ``t``'s close is applied when bar ``t + 1`` has closed: filled at its open,
  marked at its close, exactly as :class:`~coinrl.envs.trading_env.TradingEnv` steps.
* :class:`~coinrl.live.exchange_broker.ExchangeBroker` (its own module, importable from here
  too): real orders over :class:`~coinrl.live.exchange.ExchangeClient`, sized with the env's
  rules, with deterministic client order ids (:func:`client_order_id`: run id, decision bar,
  leg), statuses that follow the exchange (:mod:`coinrl.live.orders`) and reconciliation with
  the journal at every sync.

Fills of exchange orders carry the slippage measured against the reference price at which
the order was sized (the newest close = the fill bar's open on continuous data), so the
average entry the books keep is the reference price, as in the env.
"""

from __future__ import annotations

import logging
import math
import re
import uuid
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

from coinrl.envs.books import Account
from coinrl.envs.config import EnvConfig
from coinrl.envs.domain import Fill, Side
from coinrl.pipeline.errors import (
    ConfigError,
)

from .data import LiveData
from .exchange import CLIENT_ORDER_ID_PATTERN
from .journal import Journal
from .orders import (
    ACTIVE,
    TERMINAL,
    OrderStatus,
)
from .risk import hold_exposure

logger = logging.getLogger(__name__)

RUN_ID_PATTERN = re.compile(r"^[A-Za-z0-9_.]{1,20}$")
"""Run ids: 1-20 letters, digits, ``_`` or ``.`` (they prefix client order ids)."""

TERMINAL_STATUSES = frozenset(s.value for s in TERMINAL) | {OrderStatus.PENDING.value}
"""Order statuses after which an exchange order never fills again (see :mod:`.orders`)."""

_ACTIVE_STATUSES = frozenset(s.value for s in ACTIVE)
"""Order statuses a sync still acts on: look the order up (intent, unknown) or watch it (open)."""

ReportStatus = Literal["pending", "sent", "found", "skipped", "rejected", "unknown"]

_B36 = "0123456789abcdefghijklmnopqrstuvwxyz"


def _base36(n: int) -> str:
    if n < 0:
        raise ConfigError(f"cannot encode negative {n} in an order id")
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = _B36[r] + out
        if n == 0:
            return out


def new_run_id() -> str:
    """A fresh run id, ``r`` + 11 hex digits."""
    return "r" + uuid.uuid4().hex[:11]


def check_run_id(run_id: str) -> str:
    """Validate a run id (see :data:`RUN_ID_PATTERN`).

    Raises:
        ConfigError: it cannot prefix exchange client order ids.
    """
    if not RUN_ID_PATTERN.fullmatch(run_id):
        raise ConfigError(
            f"run id {run_id!r} must be 1-20 letters, digits, '_' or '.' (it prefixes the "
            "client order ids the exchange sees)"
        )
    return run_id


def client_order_id(run_id: str, bar_ts_ms: int, seq: int = 0) -> str:
    """The deterministic client order id of a decision: ``<run_id>-<bar ts base36>-<seq>``.

    The same run deciding at the same bar always derives the same id, so a restarted runner
    finds the order it may have sent before dying instead of sending a second one.

    Example:
        >>> client_order_id("r1", 1_704_067_200_000)
        'r1-lqu3lgxs-0'
    """
    cid = f"{check_run_id(run_id)}-{_base36(int(bar_ts_ms))}-{int(seq)}"
    assert CLIENT_ORDER_ID_PATTERN.fullmatch(cid)  # noqa: S101 - follows from the run id rule
    return cid


def decision_bar_of(run_id: str, cid: str) -> int | None:
    """The decision bar (open time, UTC ms) a client order id of ``run_id`` encodes, or None.

    Example:
        >>> decision_bar_of("r1", "r1-lqu3lgxs-0")
        1704067200000
    """
    prefix = run_id + "-"
    if not cid.startswith(prefix):
        return None
    bar, _, seq = cid[len(prefix):].rpartition("-")
    try:
        int(seq)
        return int(bar, 36)
    except ValueError:
        return None


@dataclass(frozen=True)
class OrderContext:
    """What is known when a decision is taken.

    Attributes:
        bar_ts_ms: open time of the decision bar (the newest closed bar), UTC ms.
        now_ms: the decision time on the exchange's clock, UTC ms.
        price_quote: the decision bar's close (the reference price orders are sized at).
        volume_base: the decision bar's volume (the impact term's proxy), base units.
    """

    bar_ts_ms: int
    now_ms: int
    price_quote: float
    volume_base: float


@dataclass(frozen=True)
class OrderReport:
    """What a broker did with one decision.

    Attributes:
        client_order_id: the decision's order id.
        status: ``pending`` (paper: fills at the next open), ``sent`` (acknowledged by the
            exchange), ``found`` (already on the exchange: not sent again), ``skipped`` (no
            order needed or allowed: reason says why), ``rejected`` (refused by the exchange) or
            ``unknown`` (no answer after the retries: the next sync looks it up).
        side, qty_base: the order (None / 0 when skipped).
        ref_price_quote: the reference price it was sized at.
        exchange_status: the exchange's order status, when known.
        reason: why it was skipped, rejected or unknown.
    """

    client_order_id: str
    status: ReportStatus
    side: Side | None = None
    qty_base: float = 0.0
    ref_price_quote: float = 0.0
    exchange_status: str | None = None
    reason: str = ""

    @property
    def placed(self) -> bool:
        """True when an order exists (or will, for paper) for this decision."""
        return self.status in ("pending", "sent", "found")


@dataclass(frozen=True)
class BrokerState:
    """The books after a sync (amounts in quote currency unless ``_base``).

    Attributes:
        ts_ms: the exchange's time of the sync, UTC ms.
        mark_bar_ts_ms: open time of the bar whose close marks the books.
        cash_quote: cash (the quote balance, free + locked, on an exchange).
        position_base: position (the base balance on a spot exchange).
        avg_entry_quote: average entry (reference) price of the position, 0 when flat.
        mark_price_quote: the mark (newest close).
        equity_quote: ``cash + position * mark``.
        fees_paid_quote: fees so far.
        bars_held: bars the position has been held in its direction (the env's rule).
        open_orders: client ids of the broker's open orders.
        new_fills: fills learnt by this sync.
    """

    ts_ms: int
    mark_bar_ts_ms: int
    cash_quote: float
    position_base: float
    avg_entry_quote: float
    mark_price_quote: float
    equity_quote: float
    fees_paid_quote: float
    bars_held: float
    open_orders: tuple[str, ...] = ()
    new_fills: tuple[Fill, ...] = ()

    @property
    def exposure(self) -> float:
        """Position notional / equity at the mark (0 when equity <= 0)."""
        if self.equity_quote <= 0.0:
            return 0.0
        return self.position_base * self.mark_price_quote / self.equity_quote

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (fills as ids)."""
        return {
            "ts_ms": self.ts_ms, "mark_bar_ts_ms": self.mark_bar_ts_ms,
            "cash_quote": self.cash_quote, "position_base": self.position_base,
            "avg_entry_quote": self.avg_entry_quote, "mark_price_quote": self.mark_price_quote,
            "equity_quote": self.equity_quote, "fees_paid_quote": self.fees_paid_quote,
            "bars_held": self.bars_held, "open_orders": list(self.open_orders),
            "new_fills": [f.fill_id for f in self.new_fills],
        }


class Broker(ABC):
    """One interface over paper and exchange trading (see the module docstring).

    Attributes:
        symbol: the market traded.
        run_id: the run, prefix of every client order id.
        journal: where orders and fills are journalled (None: nowhere).
    """

    symbol: str
    run_id: str
    journal: Journal | None
    kind: str = "broker"

    @abstractmethod
    def sync(self, data: LiveData) -> BrokerState:
        """Bring the books up to the newest closed bar of ``data`` (before every decision)."""

    @abstractmethod
    def submit_target(self, target_exposure: float | None, ctx: OrderContext) -> list[OrderReport]:
        """Trade toward ``target_exposure`` (None: hold, send nothing) for the decision ``ctx``."""

    @abstractmethod
    def cancel_all(self) -> list[str]:
        """Cancel the broker's open orders; returns their client ids."""

    @abstractmethod
    def fills(self) -> list[Fill]:
        """Every fill of this run the broker knows, oldest first."""

    @abstractmethod
    def balances(self) -> dict[str, float]:
        """Asset -> total balance, asset units."""

    @abstractmethod
    def recover(self, journal: Journal) -> list[str]:
        """Rebuild the broker's state from the journal (and the exchange) after a restart.

        Returns:
            What was reconciled, one line each (also journalled).
        """

    @property
    @abstractmethod
    def state(self) -> BrokerState | None:
        """The books after the last sync (None before the first)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources (the exchange session)."""

    def _journal(self, kind: Any, **kw: Any) -> None:
        if self.journal is not None:
            self.journal.append(kind, **kw)


def monitor_open_positions(broker: Broker, data: LiveData) -> BrokerState:
    """Re-sync position, balances, open orders and fills with the broker (the seed's name).

    Runs before every decision: the exchange broker cancels its stale open orders, reads the
    balances (the source of truth), journals every new fill once and reconciles the journal
    with the exchange (differences journalled and resolved by rule).
    """
    return broker.sync(data)


def execute_trade(broker: Broker, target_exposure: float | None, ctx: OrderContext) -> list[OrderReport]:
    """Trade toward a target exposure through ``broker`` (the seed's ``execute_trade``).

    The seed's ``(action, quantity, symbol)`` maps to: the broker's symbol, and a target
    position expressed as an exposure (notional / equity, the policy's unit); the broker turns
    it into an order rounded to the exchange's lot step, tick and minimum notional, with a
    deterministic client order id (idempotent across retries and restarts).
    """
    return broker.submit_target(target_exposure, ctx)


# --------------------------------------------------------------------------- paper


class PaperBroker(Broker):
    """Simulated fills through the env's own books on live candles (see the module doc).

    Args:
        env_config: the bundle's env config (costs, lot size, leverage: the backtest's rules).
        symbol: the market.
        run_id: the run id.
        journal: where fills and books snapshots are journalled.
        base, quote: asset names for :meth:`balances` (default from the symbol).
    """

    kind = "paper"

    def __init__(
        self, env_config: EnvConfig, symbol: str, *, run_id: str, journal: Journal | None = None,
    ) -> None:
        self.symbol = symbol
        self.run_id = check_run_id(run_id)
        self.journal = journal
        self.env_config = env_config
        self.account = Account(env_config)
        main = symbol.split(":", 1)[0]
        self.base, _, self.quote = main.partition("/")
        self._pending: float | None = None
        self._pending_cid: str | None = None
        self._last_bar_ts: int | None = None
        self._fills: list[Fill] = []
        self._state: BrokerState | None = None

    @property
    def state(self) -> BrokerState | None:
        return self._state

    def _snapshot(self, ts_ms: int, new_fills: tuple[Fill, ...]) -> BrokerState:
        a = self.account
        assert self._last_bar_ts is not None  # noqa: S101 - set by sync
        return BrokerState(
            ts_ms=ts_ms, mark_bar_ts_ms=self._last_bar_ts, cash_quote=a.cash_quote,
            position_base=a.position_base, avg_entry_quote=a.avg_entry_quote,
            mark_price_quote=a.mark_price_quote, equity_quote=a.equity_quote,
            fees_paid_quote=a.fees_paid_quote, bars_held=a.bars_held,
            open_orders=(self._pending_cid,) if self._pending_cid else (), new_fills=new_fills,
        )

    def _books(self) -> dict[str, float]:
        a = self.account
        return {
            name: float(getattr(a, name)) for name in (
                "cash_quote", "position_base", "avg_entry_quote", "realised_pnl_quote",
                "equity_quote", "mark_price_quote", "fees_paid_quote", "slippage_paid_quote",
                "funding_paid_quote", "borrow_paid_quote", "turnover_quote", "shortfall_quote",
                "bars_held",
            )
        }

    def sync(self, data: LiveData) -> BrokerState:
        """Step the books through every bar closed since the last sync.

        The first new bar fills the pending decision at its open; later ones (bars the runner
        missed) hold the position. On the first sync the books start flat, marked at the
        newest close.
        """
        md = data.market
        new_fills: list[Fill] = []
        if self._last_bar_ts is None:
            self._last_bar_ts = int(md.ts_ms[-1])
            self.account.reset(float(md.close[-1]))
        else:
            a = self.account
            first = True
            for i in range(len(md)):
                ts = int(md.ts_ms[i])
                if ts <= self._last_bar_ts:
                    continue
                o = float(md.open[i])
                pending = self._pending if first else None
                cid = self._pending_cid if first else None
                target = pending if pending is not None else hold_exposure(
                    a.cash_quote, a.position_base, o)
                q0, f0, s0, t0 = a.position_base, a.fees_paid_quote, a.slippage_paid_quote, a.turnover_quote
                funding = 0.0 if md.funding_rate is None else float(md.funding_rate[i])
                a.step_bar(target, o, float(md.high[i]), float(md.low[i]), float(md.close[i]),
                           float(md.volume[i]), funding)
                dq = a.position_base - q0
                if a.turnover_quote != t0 and dq != 0.0:
                    slip = max(0.0, a.slippage_paid_quote - s0)
                    qty = abs(dq)
                    side = Side.BUY if dq > 0 else Side.SELL
                    fill = Fill(
                        fill_id=f"paper-{self.run_id}-{ts}", order_id=cid or f"{self.run_id}-hold",
                        symbol=self.symbol, side=side, qty_base=qty,
                        price_quote=o + side.sign * slip / qty,
                        fee_quote=max(0.0, a.fees_paid_quote - f0), ts_ms=ts,
                        slippage_quote=slip,
                    )
                    new_fills.append(fill)
                    self._fills.append(fill)
                    if self.journal is not None:
                        self.journal.record_fill(fill, source="paper", bar_ts_ms=ts)
                if cid is not None:
                    self._journal("order_update", ts_ms=ts, client_order_id=cid, payload={
                        "status": "closed" if new_fills else "skipped",
                        "reason": "" if new_fills else "below the lot size, minimum notional or rebalance threshold at the fill open",
                    })
                self._last_bar_ts = ts
                first = False
            if not first:
                self._pending = None
                self._pending_cid = None
        state = self._snapshot(data.server_time_ms, tuple(new_fills))
        self._state = state
        self._journal("balance", ts_ms=data.server_time_ms, bar_ts_ms=self._last_bar_ts,
                      payload={"broker": "paper", "books": self._books(), **state.to_dict()})
        return state

    def submit_target(self, target_exposure: float | None, ctx: OrderContext) -> list[OrderReport]:
        """Queue the target for the next bar's open (None: hold)."""
        if target_exposure is None:
            self._pending = None
            self._pending_cid = None
            return []
        cid = client_order_id(self.run_id, ctx.bar_ts_ms)
        self._pending = float(target_exposure)
        self._pending_cid = cid
        self._journal("order", ts_ms=ctx.now_ms, bar_ts_ms=ctx.bar_ts_ms, client_order_id=cid,
                      payload={"status": "pending", "broker": "paper",
                               "target_exposure": float(target_exposure),
                               "ref_price_quote": ctx.price_quote})
        return [OrderReport(cid, "pending", ref_price_quote=ctx.price_quote)]

    def cancel_all(self) -> list[str]:
        """Drop the pending decision (nothing rests on a simulated book)."""
        cid = self._pending_cid
        self._pending = None
        self._pending_cid = None
        return [cid] if cid else []

    def fills(self) -> list[Fill]:
        return list(self._fills)

    def balances(self) -> dict[str, float]:
        return {self.quote: self.account.cash_quote, self.base: self.account.position_base}

    def recover(self, journal: Journal) -> list[str]:
        """Take back the books of the last journalled sync and the decision queued after it."""
        snap = journal.last("balance")
        if snap is None or "books" not in snap.payload:
            return []
        books = snap.payload["books"]
        for name, value in books.items():
            setattr(self.account, name, float(value))
        self._last_bar_ts = int(snap.payload["mark_bar_ts_ms"])
        self._fills = [f for f in journal.fills()]
        notes = [f"paper books restored at bar {self._last_bar_ts}"]
        for e in journal.events("order", since_seq=snap.seq):
            if (e.payload.get("broker") == "paper" and e.bar_ts_ms is not None
                    and e.bar_ts_ms >= self._last_bar_ts):
                self._pending = float(e.payload["target_exposure"])
                self._pending_cid = e.client_order_id
                notes.append(f"pending decision {e.client_order_id} restored")
        journal.append("reconciliation", ts_ms=snap.ts_ms, bar_ts_ms=self._last_bar_ts,
                       payload={"broker": "paper", "notes": notes})
        return notes


def _fmt(x: float) -> str:
    return f"{x:.10g}" if math.isfinite(x) else str(x)


def broker_summary(broker: Broker) -> Mapping[str, Any]:
    """Kind, symbol, run id and the last state, for logs and status."""
    st = broker.state
    return {"kind": broker.kind, "symbol": broker.symbol, "run_id": broker.run_id,
            "state": None if st is None else replace(st, new_fills=()).to_dict()}


_EXCHANGE_BROKER_NAMES = frozenset({"ExchangeBroker", "replace_position", "MAX_LEGS",
                                     "INTENT_LOOKBACK_MS"})


def __getattr__(name: str) -> Any:
    """The exchange broker lives in :mod:`coinrl.live.exchange_broker` (it builds on the
    interface here); its names are still importable from this module."""
    if name in _EXCHANGE_BROKER_NAMES:
        from . import exchange_broker

        return getattr(exchange_broker, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Broker",
    "BrokerState",
    "OrderContext",
    "OrderReport",
    "PaperBroker",
    "RUN_ID_PATTERN",
    "TERMINAL_STATUSES",
    "broker_summary",
    "check_run_id",
    "client_order_id",
    "execute_trade",
    "monitor_open_positions",
    "new_run_id",
]
