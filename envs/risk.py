"""The risk rules: outside the policy, the same in backtest, paper and live trading.

The policy proposes a *target exposure* (position notional / equity, the env's action unit);
:func:`check_risk` (the seed's name: :func:`risk_management`) is a pure function of that
proposal, the account's state and a :class:`RiskConfig` that answers **allowed**, **trimmed**
(a smaller target), **blocked** (keep the current position, send nothing) or **kill** (the
kill-switch: stop trading), each with the reasons. :class:`RiskGuard` keeps the little state
the rules need across decisions (the day's opening equity, the peak equity, the times of recent
orders, a latched kill). One implementation, used by every mode: the backtester
(:func:`~coinrl.agents.backtest.simulate_trading_strategy` with ``risk=``, over the env's own
books) and paper and live trading (:class:`~coinrl.live.live_env.LiveTradingEnv`), so a breach
trims or blocks the same order in every mode. The rules live here, below ``agents/``, because
they read nothing but numbers; ``coinrl.live.risk`` re-exports them. The portfolio form of the
same rules is :mod:`coinrl.envs.risk_portfolio`.

Rules, in the order they are applied (the first three decide alone):

1. **Kill-switch**: equity <= 0, a loss since the UTC day's first mark above
   ``max_daily_loss_frac``, or a drawdown from the peak above ``max_drawdown_frac``. The guard
   latches it: every later review answers ``kill`` too.
2. **Halts**: stale data (the newest closed candle closed more than ``max_data_delay_bars``
   bars before "now") or a clock skew above ``max_clock_skew_ms``: blocked, nothing is sent.
3. **Forced exits**: the open position's adverse move from its average entry reached
   ``stop_loss_frac``, or its favourable move ``take_profit_frac``: the target becomes 0
   (flat) whatever the policy wants; forced exits are exempt from rules 5 and 6.
4. **Position caps**: ``|target| <= max_leverage``, ``|target| * equity / price <=
   max_position_base``, ``|target| * equity <= max_position_notional_quote``: trimmed.
5. **Order caps**: the change of exposure of one rebalance ``|target - current| <=
   max_turnover_frac`` and its notional ``<= max_order_notional_quote``: trimmed toward the
   current exposure.
6. **Order rate**: at most ``max_orders_per_window`` orders within ``order_window_ms`` before
   "now": a further order is blocked.

Times are the exchange's clock (UTC epoch ms): "now" of a decision at bar ``t``'s close is
``ts_ms[t] + bar_ms`` (the backtest's convention), or the exchange's time in live trading.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Annotated, Any, Literal

from pydantic import Field

from coinrl.pipeline.config import Fraction, FrozenModel

logger = logging.getLogger(__name__)

MS_PER_DAY = 86_400_000
EPS = 1e-12
"""Tolerance of the "exceeds" comparisons (a target exactly at a cap is not trimmed)."""

PositiveFloat = Annotated[float, Field(gt=0.0)]

Verdict = Literal["allowed", "trimmed", "blocked", "kill"]
RuleAction = Literal["trim", "block", "halt", "force_exit", "kill"]


class RiskConfig(FrozenModel):
    """Limits of the risk layer (None switches a rule off).

    Attributes:
        max_leverage: largest ``|position notional| / equity`` (exposure).
        max_position_base: largest ``|position|`` in base units.
        max_position_notional_quote: largest ``|position notional|`` in quote currency.
        max_order_notional_quote: largest notional of one rebalance order, quote currency.
        max_turnover_frac: largest change of exposure in one rebalance (order notional /
            equity; going from -1 to +1 is 2).
        max_daily_loss_frac: kill when equity falls this fraction below the UTC day's first
            mark.
        max_drawdown_frac: kill when equity falls this fraction below its peak.
        stop_loss_frac: close the position when the price moved this fraction against its
            average entry.
        take_profit_frac: close the position when the price moved this fraction in its favour.
        max_orders_per_window: most orders within ``order_window_ms``.
        order_window_ms: window of the order-rate limit, ms of exchange time.
        max_data_delay_bars: halt when the newest closed candle closed more than this many bars
            before "now" (the feed stopped advancing).
        max_clock_skew_ms: halt when ``|exchange clock - local clock|`` exceeds this, ms (not
            checked where the skew is unknown, e.g. a backtest or an emulator replaying history).
    """

    max_leverage: PositiveFloat | None = 1.0
    max_position_base: PositiveFloat | None = None
    max_position_notional_quote: PositiveFloat | None = None
    max_order_notional_quote: PositiveFloat | None = None
    max_turnover_frac: PositiveFloat | None = None
    max_daily_loss_frac: Fraction | None = 0.10
    max_drawdown_frac: Fraction | None = 0.25
    stop_loss_frac: Fraction | None = None
    take_profit_frac: PositiveFloat | None = None
    max_orders_per_window: Annotated[int, Field(gt=0)] | None = 12
    order_window_ms: Annotated[int, Field(gt=0)] = 3_600_000
    max_data_delay_bars: PositiveFloat | None = 1.0
    max_clock_skew_ms: PositiveFloat | None = 1000.0

    @classmethod
    def permissive(cls) -> RiskConfig:
        """Every rule off (the policy's targets pass unchanged): for parity checks."""
        return cls(
            max_leverage=None, max_daily_loss_frac=None, max_drawdown_frac=None,
            max_orders_per_window=None, max_data_delay_bars=None, max_clock_skew_ms=None,
        )


@dataclass(frozen=True, slots=True)
class RiskState:
    """What the rules look at for one decision (all times UTC epoch ms, amounts quote unless
    ``_base``).

    Attributes:
        now_ms: the decision time on the exchange's clock.
        bar_ms: bar length.
        last_bar_close_ms: close time of the newest closed candle the decision saw.
        equity_quote: account equity marked at ``price_quote``.
        price_quote: the latest close.
        position_base: current position (negative = short).
        avg_entry_quote: its average entry price (0 when flat).
        day_start_equity_quote: equity at the UTC day's first mark.
        peak_equity_quote: highest equity marked so far.
        recent_order_ts_ms: times of the orders sent recently (any order, oldest first).
        clock_skew_ms: exchange clock minus local clock (None = unknown, not checked).
    """

    now_ms: int
    bar_ms: int
    last_bar_close_ms: int
    equity_quote: float
    price_quote: float
    position_base: float
    avg_entry_quote: float
    day_start_equity_quote: float
    peak_equity_quote: float
    recent_order_ts_ms: tuple[int, ...] = ()
    clock_skew_ms: float | None = None

    @property
    def exposure(self) -> float:
        """Current position notional / equity (0 when equity <= 0)."""
        if self.equity_quote <= 0.0:
            return 0.0
        return self.position_base * self.price_quote / self.equity_quote


@dataclass(frozen=True, slots=True)
class RiskEvent:
    """One rule that acted on a proposal.

    Attributes:
        rule: the rule's name (``max_leverage``, ``stop_loss``, ``stale_data``, ...).
        action: ``trim``, ``block``, ``halt``, ``force_exit`` or ``kill``.
        detail: what was measured against which limit.
    """

    rule: str
    action: RuleAction
    detail: str


@dataclass(frozen=True, slots=True)
class RiskDecision:
    """The risk layer's answer to one proposed target.

    Attributes:
        verdict: ``allowed`` (unchanged), ``trimmed`` (a smaller or forced target),
            ``blocked`` (keep the current position) or ``kill`` (stop trading).
        proposed_exposure: what the policy asked for.
        current_exposure: the account's exposure before the decision.
        target_exposure: what may be traded to (the current exposure when blocked or killed).
        events: the rules that acted, in order.
        forced_exit: a stop-loss or take-profit replaced the policy's target with flat.
    """

    verdict: Verdict
    proposed_exposure: float
    current_exposure: float
    target_exposure: float
    events: tuple[RiskEvent, ...] = ()
    forced_exit: bool = False

    @property
    def kill(self) -> bool:
        """True when the kill-switch fired."""
        return self.verdict == "kill"

    @property
    def hold(self) -> bool:
        """True when nothing may be sent (blocked or killed): the position is held as it is."""
        return self.verdict in ("blocked", "kill")

    @property
    def halted(self) -> bool:
        """True when a halt rule (stale data, clock skew) blocked the decision."""
        return any(e.action == "halt" for e in self.events)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (for the journal)."""
        return {
            "verdict": self.verdict,
            "proposed_exposure": self.proposed_exposure,
            "current_exposure": self.current_exposure,
            "target_exposure": self.target_exposure,
            "forced_exit": self.forced_exit,
            "events": [asdict(e) for e in self.events],
        }


def _fmt(x: float) -> str:
    return f"{x:.6g}"


def _kill_events(state: RiskState, config: RiskConfig) -> list[RiskEvent]:
    eq = state.equity_quote
    out: list[RiskEvent] = []
    if not eq > 0.0:
        out.append(RiskEvent("bankrupt", "kill", f"equity {_fmt(eq)} <= 0"))
        return out
    if config.max_daily_loss_frac is not None and state.day_start_equity_quote > 0.0:
        loss = 1.0 - eq / state.day_start_equity_quote
        if loss > config.max_daily_loss_frac + EPS:
            out.append(RiskEvent(
                "max_daily_loss", "kill",
                f"equity {_fmt(eq)} is {_fmt(loss)} below the day's opening "
                f"{_fmt(state.day_start_equity_quote)} (limit {_fmt(config.max_daily_loss_frac)})",
            ))
    if config.max_drawdown_frac is not None and state.peak_equity_quote > 0.0:
        dd = 1.0 - eq / state.peak_equity_quote
        if dd > config.max_drawdown_frac + EPS:
            out.append(RiskEvent(
                "max_drawdown", "kill",
                f"drawdown {_fmt(dd)} from the peak {_fmt(state.peak_equity_quote)} "
                f"(limit {_fmt(config.max_drawdown_frac)})",
            ))
    return out


def _halt_events(state: RiskState, config: RiskConfig) -> list[RiskEvent]:
    out: list[RiskEvent] = []
    if config.max_data_delay_bars is not None:
        delay_ms = state.now_ms - state.last_bar_close_ms
        if delay_ms > config.max_data_delay_bars * state.bar_ms:
            out.append(RiskEvent(
                "stale_data", "halt",
                f"the newest closed candle closed {delay_ms} ms before now ({_fmt(delay_ms / state.bar_ms)} "
                f"bars; limit {_fmt(config.max_data_delay_bars)})",
            ))
    if config.max_clock_skew_ms is not None and state.clock_skew_ms is not None:
        if abs(state.clock_skew_ms) > config.max_clock_skew_ms:
            out.append(RiskEvent(
                "clock_skew", "halt",
                f"clock skew {_fmt(state.clock_skew_ms)} ms (limit {_fmt(config.max_clock_skew_ms)} ms)",
            ))
    return out


def _exit_event(state: RiskState, config: RiskConfig) -> RiskEvent | None:
    q, avg, p = state.position_base, state.avg_entry_quote, state.price_quote
    if q == 0.0 or not avg > 0.0:
        return None
    move = (p - avg) / avg if q > 0.0 else (avg - p) / avg  # > 0: in the position's favour
    if config.stop_loss_frac is not None and -move >= config.stop_loss_frac - EPS:
        return RiskEvent(
            "stop_loss", "force_exit",
            f"price {_fmt(p)} moved {_fmt(-move)} against the entry {_fmt(avg)} "
            f"(limit {_fmt(config.stop_loss_frac)}): closing",
        )
    if config.take_profit_frac is not None and move >= config.take_profit_frac - EPS:
        return RiskEvent(
            "take_profit", "force_exit",
            f"price {_fmt(p)} moved {_fmt(move)} in favour of the entry {_fmt(avg)} "
            f"(limit {_fmt(config.take_profit_frac)}): closing",
        )
    return None


def check_risk(proposed_exposure: float, state: RiskState, config: RiskConfig) -> RiskDecision:
    """Review one proposed target exposure (pure: same inputs, same answer).

    Args:
        proposed_exposure: the policy's target, position notional / equity.
        state: the account and data state at the decision (see :class:`RiskState`).
        config: the limits.

    Returns:
        The :class:`RiskDecision` (see the module docstring for the rules and their order).

    Example:
        >>> s = RiskState(now_ms=3_600_000, bar_ms=3_600_000, last_bar_close_ms=3_600_000,
        ...               equity_quote=1000.0, price_quote=100.0, position_base=0.0,
        ...               avg_entry_quote=0.0, day_start_equity_quote=1000.0,
        ...               peak_equity_quote=1000.0)
        >>> check_risk(2.0, s, RiskConfig(max_leverage=1.0)).target_exposure
        1.0
    """
    current = state.exposure
    proposed = float(proposed_exposure)
    if not math.isfinite(proposed):
        return RiskDecision("blocked", proposed, current, current, (
            RiskEvent("invalid_target", "block", f"target {proposed} is not a finite number"),))
    kills = _kill_events(state, config)
    if kills:
        return RiskDecision("kill", proposed, current, current, tuple(kills))
    halts = _halt_events(state, config)
    if halts:
        return RiskDecision("blocked", proposed, current, current, tuple(halts))
    events: list[RiskEvent] = []
    target = proposed
    exit_event = _exit_event(state, config)
    if exit_event is not None:
        return RiskDecision("trimmed" if proposed != 0.0 else "allowed", proposed, current, 0.0,
                            (exit_event,), forced_exit=True)
    # 4. position caps
    caps: list[tuple[str, float]] = []
    if config.max_leverage is not None:
        caps.append(("max_leverage", config.max_leverage))
    if state.equity_quote > 0.0 and state.price_quote > 0.0:
        if config.max_position_base is not None:
            caps.append(("max_position_base",
                         config.max_position_base * state.price_quote / state.equity_quote))
        if config.max_position_notional_quote is not None:
            caps.append(("max_position_notional_quote",
                         config.max_position_notional_quote / state.equity_quote))
    for rule, cap in caps:
        if abs(target) > cap + EPS:
            new = math.copysign(cap, target)
            events.append(RiskEvent(rule, "trim", f"target exposure {_fmt(target)} -> {_fmt(new)}"))
            target = new
    # 5. order caps
    step_caps: list[tuple[str, float]] = []
    if config.max_turnover_frac is not None:
        step_caps.append(("max_turnover_frac", config.max_turnover_frac))
    if config.max_order_notional_quote is not None and state.equity_quote > 0.0:
        step_caps.append(("max_order_notional_quote",
                          config.max_order_notional_quote / state.equity_quote))
    for rule, cap in step_caps:
        change = target - current
        if abs(change) > cap + EPS:
            new = current + math.copysign(cap, change)
            events.append(RiskEvent(
                rule, "trim",
                f"exposure change {_fmt(change)} exceeds {_fmt(cap)}: target {_fmt(target)} -> {_fmt(new)}",
            ))
            target = new
    # 6. order rate
    if config.max_orders_per_window is not None and abs(target - current) > EPS:
        since = state.now_ms - config.order_window_ms
        n = sum(1 for ts in state.recent_order_ts_ms if ts > since)
        if n >= config.max_orders_per_window:
            events.append(RiskEvent(
                "max_orders_per_window", "block",
                f"{n} orders in the last {config.order_window_ms} ms (limit {config.max_orders_per_window})",
            ))
            return RiskDecision("blocked", proposed, current, current, tuple(events))
    verdict: Verdict = "trimmed" if events else "allowed"
    return RiskDecision(verdict, proposed, current, target, tuple(events))


risk_management = check_risk
"""The seed's name for :func:`check_risk`."""


@dataclass
class RiskGuard:
    """:func:`check_risk` with the state it needs across decisions (one account).

    Call :meth:`mark` at every mark of the account (each closed bar), :meth:`review` at every
    decision and :meth:`record_order` for each order sent. The kill-switch latches.

    Args:
        config: the limits.
        bar_ms: bar length, ms.
    """

    config: RiskConfig
    bar_ms: int
    day_start_equity_quote: float = float("nan")
    day_index: int = -1
    peak_equity_quote: float = float("nan")
    order_ts_ms: deque[int] = field(default_factory=deque)
    killed: RiskDecision | None = None

    def mark(self, now_ms: int, equity_quote: float) -> None:
        """Update the day's opening equity and the peak with a mark at ``now_ms``."""
        day = int(now_ms) // MS_PER_DAY
        if day != self.day_index:
            self.day_index = day
            self.day_start_equity_quote = float(equity_quote)
        if not self.peak_equity_quote >= equity_quote:  # also replaces NaN
            self.peak_equity_quote = float(equity_quote)

    def record_order(self, ts_ms: int) -> None:
        """Count an order sent at ``ts_ms`` (exchange time) in the order-rate window."""
        self.order_ts_ms.append(int(ts_ms))
        horizon = int(ts_ms) - self.config.order_window_ms
        while self.order_ts_ms and self.order_ts_ms[0] <= horizon:
            self.order_ts_ms.popleft()

    def state(
        self, *, now_ms: int, last_bar_close_ms: int, equity_quote: float, price_quote: float,
        position_base: float, avg_entry_quote: float, clock_skew_ms: float | None = None,
    ) -> RiskState:
        """The :class:`RiskState` of a decision (after :meth:`mark`-ing ``equity_quote``)."""
        self.mark(now_ms, equity_quote)
        return RiskState(
            now_ms=int(now_ms), bar_ms=self.bar_ms, last_bar_close_ms=int(last_bar_close_ms),
            equity_quote=float(equity_quote), price_quote=float(price_quote),
            position_base=float(position_base), avg_entry_quote=float(avg_entry_quote),
            day_start_equity_quote=self.day_start_equity_quote,
            peak_equity_quote=self.peak_equity_quote,
            recent_order_ts_ms=tuple(self.order_ts_ms), clock_skew_ms=clock_skew_ms,
        )

    def review(self, proposed_exposure: float, state: RiskState) -> RiskDecision:
        """:func:`check_risk`, with the kill-switch latched once it fired."""
        if self.killed is not None:
            return RiskDecision("kill", float(proposed_exposure), state.exposure, state.exposure,
                                self.killed.events)
        decision = check_risk(proposed_exposure, state, self.config)
        if decision.kill:
            self.killed = decision
            logger.error("risk kill-switch now_ms=%d %s", state.now_ms,
                         "; ".join(f"{e.rule}: {e.detail}" for e in decision.events))
        elif decision.events:
            logger.warning("risk %s now_ms=%d proposed=%.6g target=%.6g %s", decision.verdict,
                           state.now_ms, decision.proposed_exposure, decision.target_exposure,
                           "; ".join(f"{e.rule}: {e.detail}" for e in decision.events))
        return decision

    def to_dict(self) -> dict[str, Any]:
        """The guard's state, JSON-ready (journalled with each decision, for restarts)."""
        return {
            "day_index": self.day_index,
            "day_start_equity_quote": self.day_start_equity_quote,
            "peak_equity_quote": self.peak_equity_quote,
            "order_ts_ms": list(self.order_ts_ms),
            "killed": self.killed is not None,
        }

    def restore(self, data: Mapping[str, Any]) -> None:
        """Take back a state written by :meth:`to_dict` (a restarted runner)."""
        self.day_index = int(data.get("day_index", -1))
        self.day_start_equity_quote = float(data.get("day_start_equity_quote") or float("nan"))
        self.peak_equity_quote = float(data.get("peak_equity_quote") or float("nan"))
        self.order_ts_ms = deque(int(t) for t in data.get("order_ts_ms", []))
        if data.get("killed"):
            self.killed = RiskDecision("kill", 0.0, 0.0, 0.0, (
                RiskEvent("kill_switch", "kill", "the kill-switch fired before the restart"),))


def hold_exposure(cash_quote: float, position_base: float, price_quote: float) -> float:
    """The exposure that keeps ``position_base`` unchanged when sized at ``price_quote``.

    A "no order" decision given to the env's books (which take a target exposure): the books
    size ``target * equity / price`` at the fill bar's open, which gives back the position to
    float rounding: any lot size, minimum notional or rebalance threshold then skips the order
    (with all three at 0 the books trade that rounding dust, ~1e-16 of the position).
    """
    equity = cash_quote + position_base * price_quote
    if position_base == 0.0 or not equity > 0.0:
        return 0.0
    return position_base * price_quote / equity


__all__ = [
    "RiskConfig",
    "RiskDecision",
    "RiskEvent",
    "RiskGuard",
    "RiskState",
    "RuleAction",
    "Verdict",
    "check_risk",
    "hold_exposure",
    "risk_management",
]
