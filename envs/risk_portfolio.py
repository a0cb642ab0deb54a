"""The risk rules for a portfolio: one account, ``A`` assets, target weights in, allowed weights out.

The portfolio form of :mod:`coinrl.envs.risk`, pure and shared by the portfolio backtest, paper
and live trading. A policy proposes target weights ``w`` (``(A,)``: position notional / account
equity per asset, negative = short); :func:`check_portfolio_risk` answers with the weights that
may be traded to, the account's verdict (``allowed`` / ``trimmed`` / ``blocked`` / ``kill``) and
the reasons per asset. The account-level rules are the single-asset module's own functions
(kill-switches, halts, stop-loss/take-profit per position), so with ``A = 1`` the answer is
:func:`~coinrl.envs.risk.check_risk`'s (tested on random inputs).

Rules, in order (the first three decide alone):

1. **Kill-switch** (account): equity <= 0, the day's loss above ``max_daily_loss_frac``, the
   drawdown from the peak above ``max_drawdown_frac``: ``kill``, every weight stays current.
2. **Halts** (account): stale data, clock skew: ``blocked``, nothing is sent.
3. **Forced exits** (per asset): an open position whose adverse move from its average entry
   reached its ``stop_loss_frac``, or its favourable move its ``take_profit_frac``, gets weight
   0 whatever the policy wants; forced exits are exempt from rules 5 to 7. The other assets go
   on through the rules.
4. **Position caps** (per asset, then account): ``|w_i| <= max_position_base_i * p_i / E``,
   ``|w_i| <= max_position_notional_quote_i / E``, concentration ``|w_i| <= max_weight_i``;
   then gross leverage ``sum |w| <= max_leverage`` (every weight scaled by one factor) and net
   leverage ``|sum w| <= max_net_leverage`` (the side in excess scaled down). Each step only
   shrinks weights, so the earlier caps still hold after the later ones.
5. **Turnover** (account): ``sum |w_i - c_i| <= max_turnover_frac`` (``c``: current weights):
   every change scaled toward the current weights by one factor.
6. **Order notional** (per asset): ``|w_i - c_i| * E <= max_order_notional_quote_i``: that
   asset's change trimmed toward its current weight.
7. **Order rate** (account): at most ``max_orders_per_window`` rebalances (decisions that
   traded, however many legs) within ``order_window_ms``: a further rebalance is blocked (its
   forced exits still go).

Per-asset limits default to the account-wide fields and may be overridden per symbol in
``asset_limits``. Weights and amounts: quote currency, ``E`` = equity, ``p_i`` = latest close.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from coinrl.pipeline.config import Fraction, FrozenModel

from .risk import (
    EPS,
    PositiveFloat,
    RiskConfig,
    RiskEvent,
    RiskGuard,
    RiskState,
    Verdict,
    _exit_event,
    _fmt,
    _halt_events,
    _kill_events,
)

logger = logging.getLogger(__name__)

F64 = npt.NDArray[np.float64]


class AssetRiskLimits(FrozenModel):
    """Limits of one asset that override the account-wide fields (None: the account's value).

    Attributes:
        max_position_base: largest ``|position|``, base units.
        max_position_notional_quote: largest ``|position notional|``, quote.
        max_order_notional_quote: largest notional of one rebalance leg, quote.
        max_weight: largest ``|weight|`` (position notional / equity).
        stop_loss_frac, take_profit_frac: forced exit at this adverse / favourable move from
            the average entry.
    """

    max_position_base: PositiveFloat | None = None
    max_position_notional_quote: PositiveFloat | None = None
    max_order_notional_quote: PositiveFloat | None = None
    max_weight: PositiveFloat | None = None
    stop_loss_frac: Fraction | None = None
    take_profit_frac: PositiveFloat | None = None


class PortfolioRiskConfig(RiskConfig):
    """:class:`~coinrl.envs.risk.RiskConfig` for a portfolio (None switches a rule off).

    The inherited fields keep their meaning per account (kill-switches, halts, order rate,
    turnover) or apply to every asset (position and order caps, stop-loss, take-profit);
    ``max_leverage`` is the gross leverage ``sum |w|``.

    Attributes:
        max_net_leverage: largest ``|sum w|`` (net exposure / equity).
        max_weight: largest ``|w_i|`` of one asset (concentration).
        asset_limits: per-symbol overrides (:class:`AssetRiskLimits`).
    """

    max_net_leverage: PositiveFloat | None = None
    max_weight: PositiveFloat | None = None
    asset_limits: dict[str, AssetRiskLimits] = {}

    def limit(self, symbol: str, name: str) -> float | None:
        """The limit ``name`` of ``symbol``: its override when set, else the account-wide one."""
        over = self.asset_limits.get(symbol)
        value = getattr(over, name) if over is not None else None
        return value if value is not None else getattr(self, name)


@dataclass(frozen=True, slots=True)
class PortfolioRiskState:
    """What the rules look at for one portfolio decision (times UTC epoch ms, amounts quote
    unless ``_base``; per-asset tuples of length ``A``).

    Attributes:
        now_ms, bar_ms, last_bar_close_ms: as in :class:`~coinrl.envs.risk.RiskState`.
        equity_quote: account equity (cash + every position marked at ``prices_quote``).
        prices_quote: latest close per asset.
        positions_base: position per asset (negative = short).
        avg_entry_quote: average entry per asset (0 when flat).
        day_start_equity_quote, peak_equity_quote: the guard's marks.
        recent_order_ts_ms: times of the recent rebalances (oldest first).
        clock_skew_ms: exchange minus local clock (None: not checked).
        symbols: the asset names (for ``asset_limits`` and messages; default ``asset<i>``).
    """

    now_ms: int
    bar_ms: int
    last_bar_close_ms: int
    equity_quote: float
    prices_quote: tuple[float, ...]
    positions_base: tuple[float, ...]
    avg_entry_quote: tuple[float, ...]
    day_start_equity_quote: float
    peak_equity_quote: float
    recent_order_ts_ms: tuple[int, ...] = ()
    clock_skew_ms: float | None = None
    symbols: tuple[str, ...] = ()

    @property
    def n_assets(self) -> int:
        """``A``."""
        return len(self.prices_quote)

    @property
    def names(self) -> tuple[str, ...]:
        """The symbols, or ``asset0 .. asset<A-1>`` when none were given."""
        return self.symbols or tuple(f"asset{i}" for i in range(self.n_assets))

    @property
    def weights(self) -> tuple[float, ...]:
        """Current weights ``q_i * p_i / equity`` (all 0 when equity <= 0)."""
        e = self.equity_quote
        if e <= 0.0:
            return (0.0,) * self.n_assets
        return tuple(q * p / e for q, p in zip(self.positions_base, self.prices_quote, strict=True))

    def asset_state(self, i: int) -> RiskState:
        """Asset ``i`` seen as a single-asset :class:`~coinrl.envs.risk.RiskState` (the
        account's equity and marks, that asset's position)."""
        return RiskState(
            now_ms=self.now_ms, bar_ms=self.bar_ms, last_bar_close_ms=self.last_bar_close_ms,
            equity_quote=self.equity_quote, price_quote=self.prices_quote[i],
            position_base=self.positions_base[i], avg_entry_quote=self.avg_entry_quote[i],
            day_start_equity_quote=self.day_start_equity_quote,
            peak_equity_quote=self.peak_equity_quote, recent_order_ts_ms=self.recent_order_ts_ms,
            clock_skew_ms=self.clock_skew_ms,
        )


@dataclass(frozen=True, slots=True)
class PortfolioRiskDecision:
    """The risk layer's answer to one proposed weight vector.

    Attributes:
        verdict: ``allowed`` (unchanged), ``trimmed`` (some weight changed or forced to 0),
            ``blocked`` (keep every position, send nothing) or ``kill`` (stop trading).
        symbols: the asset names.
        proposed_weights, current_weights, target_weights: per asset; the target is what may
            be traded to (the current weights when blocked or killed).
        events: the account-level rules that acted (kill, halt, gross/net leverage, turnover,
            order rate, an invalid proposal), in order.
        asset_events: per asset, every rule that changed its weight (account-level trims that
            touched it included), in order.
        forced_exit: per asset, whether a stop-loss or take-profit replaced its weight with 0.
    """

    verdict: Verdict
    symbols: tuple[str, ...]
    proposed_weights: tuple[float, ...]
    current_weights: tuple[float, ...]
    target_weights: tuple[float, ...]
    events: tuple[RiskEvent, ...] = ()
    asset_events: tuple[tuple[RiskEvent, ...], ...] = ()
    forced_exit: tuple[bool, ...] = ()

    @property
    def kill(self) -> bool:
        """True when the kill-switch fired."""
        return self.verdict == "kill"

    @property
    def hold(self) -> bool:
        """True when nothing may be sent (blocked or killed)."""
        return self.verdict in ("blocked", "kill")

    @property
    def halted(self) -> bool:
        """True when a halt rule (stale data, clock skew) blocked the decision."""
        return any(e.action == "halt" for e in self.events)

    def asset_verdicts(self) -> tuple[str, ...]:
        """Per asset: ``forced_exit``, ``blocked`` (held by an account rule), ``trimmed`` or
        ``allowed``."""
        out = []
        for i in range(len(self.symbols)):
            if self.forced_exit and self.forced_exit[i]:
                out.append("forced_exit")
            elif self.hold or (self.asset_events and any(e.action == "block" for e in self.asset_events[i])):
                out.append("blocked")
            elif self.asset_events and self.asset_events[i]:
                out.append("trimmed")
            else:
                out.append("allowed")
        return tuple(out)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (for the journal and reports)."""
        return {
            "verdict": self.verdict,
            "symbols": list(self.symbols),
            "proposed_weights": list(self.proposed_weights),
            "current_weights": list(self.current_weights),
            "target_weights": list(self.target_weights),
            "forced_exit": list(self.forced_exit),
            "asset_verdicts": list(self.asset_verdicts()),
            "events": [asdict(e) for e in self.events],
            "asset_events": {s: [asdict(e) for e in ev]
                             for s, ev in zip(self.symbols, self.asset_events, strict=True) if ev},
        }


def _hold(verdict: Verdict, names: tuple[str, ...], proposed: tuple[float, ...],
          current: tuple[float, ...], events: list[RiskEvent]) -> PortfolioRiskDecision:
    n = len(names)
    return PortfolioRiskDecision(verdict, names, proposed, current, current, tuple(events),
                                 ((),) * n, (False,) * n)


def check_portfolio_risk(
    proposed_weights: npt.ArrayLike, state: PortfolioRiskState, config: PortfolioRiskConfig,
) -> PortfolioRiskDecision:
    """Review one proposed weight vector (pure: same inputs, same answer).

    Args:
        proposed_weights: ``(A,)`` target weights, position notional / equity per asset.
        state: the account and data state at the decision (:class:`PortfolioRiskState`).
        config: the limits (:class:`PortfolioRiskConfig`; a plain ``RiskConfig`` is promoted).

    Returns:
        The :class:`PortfolioRiskDecision` (rules and their order: the module docstring).

    Raises:
        ValueError: ``proposed_weights`` of another length than the state's assets.

    Example:
        >>> s = PortfolioRiskState(now_ms=3_600_000, bar_ms=3_600_000,
        ...     last_bar_close_ms=3_600_000, equity_quote=1000.0, prices_quote=(100.0, 10.0),
        ...     positions_base=(0.0, 0.0), avg_entry_quote=(0.0, 0.0),
        ...     day_start_equity_quote=1000.0, peak_equity_quote=1000.0)
        >>> check_portfolio_risk([0.9, 0.6], s, PortfolioRiskConfig(max_leverage=1.0)).target_weights
        (0.6, 0.4)
    """
    if not isinstance(config, PortfolioRiskConfig):
        config = PortfolioRiskConfig.model_validate(config.model_dump())
    a = state.n_assets
    names = state.names
    w = [float(x) for x in np.asarray(proposed_weights, dtype=np.float64).reshape(-1)]
    if len(w) != a:
        raise ValueError(f"expected {a} proposed weights (one per asset of the state), got {len(w)}")
    proposed = tuple(w)
    current = state.weights
    e = state.equity_quote
    bad = [names[i] for i in range(a) if not math.isfinite(w[i])]
    if bad:
        return _hold("blocked", names, proposed, current, [RiskEvent(
            "invalid_target", "block", f"target weights of {', '.join(bad)} are not finite numbers")])
    account = state.asset_state(0) if a else None
    if account is None:
        return _hold("allowed", names, proposed, current, [])
    kills = _kill_events(account, config)
    if kills:
        return _hold("kill", names, proposed, current, kills)
    halts = _halt_events(account, config)
    if halts:
        return _hold("blocked", names, proposed, current, halts)
    events: list[RiskEvent] = []
    per: list[list[RiskEvent]] = [[] for _ in range(a)]
    forced = [False] * a
    # 3. forced exits, per position, with each asset's own stop-loss / take-profit
    for i in range(a):
        cfg_i = config if names[i] not in config.asset_limits else config.model_copy(update={
            "stop_loss_frac": config.limit(names[i], "stop_loss_frac"),
            "take_profit_frac": config.limit(names[i], "take_profit_frac"),
        })
        ev = _exit_event(state.asset_state(i), cfg_i)
        if ev is not None:
            forced[i] = True
            w[i] = 0.0
            per[i].append(ev)
    free = [i for i in range(a) if not forced[i]]
    # 4a. per-asset position caps and concentration
    for i in free:
        caps: list[tuple[str, float]] = []
        p = state.prices_quote[i]
        base = config.limit(names[i], "max_position_base")
        notional = config.limit(names[i], "max_position_notional_quote")
        weight = config.limit(names[i], "max_weight")
        if e > 0.0 and p > 0.0 and base is not None:
            caps.append(("max_position_base", base * p / e))
        if e > 0.0 and notional is not None:
            caps.append(("max_position_notional_quote", notional / e))
        if weight is not None:
            caps.append(("max_weight", weight))
        for rule, cap in caps:
            if abs(w[i]) > cap + EPS:
                new = math.copysign(cap, w[i])
                per[i].append(RiskEvent(rule, "trim", f"{names[i]} weight {_fmt(w[i])} -> {_fmt(new)}"))
                w[i] = new
    # 4b. gross, then net leverage (one factor each; forced exits are already 0)
    gross = sum(abs(w[i]) for i in free)
    if config.max_leverage is not None and gross > config.max_leverage + EPS:
        _scale(w, per, events, names, [i for i in free if w[i] != 0.0], config.max_leverage / gross,
               "max_leverage", f"gross leverage {_fmt(gross)} (limit {_fmt(config.max_leverage)})")
    net = sum(w[i] for i in free)
    if config.max_net_leverage is not None and abs(net) > config.max_net_leverage + EPS:
        side = [i for i in free if w[i] * net > 0.0]  # the side in excess
        other = net - sum(w[i] for i in side)
        bound = math.copysign(config.max_net_leverage, net)
        _scale(w, per, events, names, side, (bound - other) / (net - other),
               "max_net_leverage", f"net leverage {_fmt(net)} (limit {_fmt(config.max_net_leverage)})")
    # 5. turnover, toward the current weights (forced exits exempt)
    if config.max_turnover_frac is not None:
        turnover = sum(abs(w[i] - current[i]) for i in free)
        if turnover > config.max_turnover_frac + EPS:
            f = config.max_turnover_frac / turnover
            msg = f"turnover {_fmt(turnover)} exceeds {_fmt(config.max_turnover_frac)}"
            events.append(RiskEvent("max_turnover_frac", "trim", msg))
            for i in free:
                if abs(w[i] - current[i]) > 0.0:
                    new = current[i] + (w[i] - current[i]) * f
                    per[i].append(RiskEvent("max_turnover_frac", "trim",
                                            f"{msg}: {names[i]} weight {_fmt(w[i])} -> {_fmt(new)}"))
                    w[i] = new
    # 6. order notional per leg
    for i in free:
        cap_q = config.limit(names[i], "max_order_notional_quote")
        if cap_q is None or not e > 0.0:
            continue
        change = w[i] - current[i]
        if abs(change) > cap_q / e + EPS:
            new = current[i] + math.copysign(cap_q / e, change)
            per[i].append(RiskEvent("max_order_notional_quote", "trim",
                                    f"{names[i]} weight change {_fmt(change)} exceeds "
                                    f"{_fmt(cap_q / e)}: {_fmt(w[i])} -> {_fmt(new)}"))
            w[i] = new
    # 7. order rate: block every leg but the forced exits
    if config.max_orders_per_window is not None and any(abs(w[i] - current[i]) > EPS for i in free):
        since = state.now_ms - config.order_window_ms
        n = sum(1 for ts in state.recent_order_ts_ms if ts > since)
        if n >= config.max_orders_per_window:
            ev = RiskEvent("max_orders_per_window", "block",
                           f"{n} rebalances in the last {config.order_window_ms} ms "
                           f"(limit {config.max_orders_per_window})")
            events.append(ev)
            for i in free:
                w[i] = current[i]
                per[i].append(ev)
            if not any(forced):
                return PortfolioRiskDecision("blocked", names, proposed, current, current,
                                             tuple(events), tuple(tuple(x) for x in per), tuple(forced))
    # a forced exit of a weight the policy wanted at 0 anyway changes nothing (as check_risk)
    changed = bool(events) or any(per[i] and (not forced[i] or len(per[i]) > 1 or proposed[i] != 0.0)
                                  for i in range(a))
    verdict: Verdict = "trimmed" if changed else "allowed"
    return PortfolioRiskDecision(verdict, names, proposed, current, tuple(w), tuple(events),
                                 tuple(tuple(x) for x in per), tuple(forced))


def _scale(w: list[float], per: list[list[RiskEvent]], events: list[RiskEvent],
           names: tuple[str, ...], idx: Sequence[int], factor: float, rule: str, what: str) -> None:
    """Multiply the weights ``idx`` by ``factor`` (an account-level trim), with the reasons."""
    events.append(RiskEvent(rule, "trim", f"{what}: weights scaled by {_fmt(factor)}"))
    for i in idx:
        new = w[i] * factor
        per[i].append(RiskEvent(rule, "trim", f"{what}: {names[i]} weight {_fmt(w[i])} -> {_fmt(new)}"))
        w[i] = new


def hold_weights(
    cash_quote: float, positions_base: npt.ArrayLike, prices_quote: npt.ArrayLike,
) -> F64:
    """The weights that keep every position unchanged when sized at ``prices_quote`` (the
    portfolio form of :func:`~coinrl.envs.risk.hold_exposure`: a "no order" decision for books
    that take target weights). All zero when the equity there is not positive."""
    q = np.asarray(positions_base, dtype=np.float64)
    p = np.asarray(prices_quote, dtype=np.float64)
    notional = q * p
    equity = float(cash_quote) + float(notional.sum())
    if not equity > 0.0:
        return np.zeros_like(q)
    return notional / equity


class PortfolioRiskGuard:
    """:func:`check_portfolio_risk` with the account's state across decisions (the day's
    opening equity, the peak, recent rebalances, a latched kill): a
    :class:`~coinrl.envs.risk.RiskGuard` underneath, so a restart restores it the same way.

    Args:
        config: the limits.
        bar_ms: bar length, ms.
        symbols: the asset names.
    """

    def __init__(self, config: PortfolioRiskConfig, bar_ms: int, symbols: Sequence[str] = ()) -> None:
        self.config = config
        self.symbols = tuple(symbols)
        self.guard = RiskGuard(config, int(bar_ms))
        self.killed: PortfolioRiskDecision | None = None

    def mark(self, now_ms: int, equity_quote: float) -> None:
        """Update the day's opening equity and the peak (see :meth:`RiskGuard.mark`)."""
        self.guard.mark(now_ms, equity_quote)

    def record_order(self, ts_ms: int) -> None:
        """Count a rebalance that traded (any number of legs) at ``ts_ms``."""
        self.guard.record_order(ts_ms)

    def state(
        self, *, now_ms: int, last_bar_close_ms: int, equity_quote: float,
        prices_quote: npt.ArrayLike, positions_base: npt.ArrayLike, avg_entry_quote: npt.ArrayLike,
        clock_skew_ms: float | None = None,
    ) -> PortfolioRiskState:
        """The :class:`PortfolioRiskState` of a decision (after marking ``equity_quote``)."""
        self.mark(now_ms, equity_quote)
        g = self.guard

        def tup(x: npt.ArrayLike) -> tuple[float, ...]:
            return tuple(float(v) for v in np.asarray(x, dtype=np.float64).reshape(-1))

        return PortfolioRiskState(
            now_ms=int(now_ms), bar_ms=g.bar_ms, last_bar_close_ms=int(last_bar_close_ms),
            equity_quote=float(equity_quote), prices_quote=tup(prices_quote),
            positions_base=tup(positions_base), avg_entry_quote=tup(avg_entry_quote),
            day_start_equity_quote=g.day_start_equity_quote, peak_equity_quote=g.peak_equity_quote,
            recent_order_ts_ms=tuple(g.order_ts_ms), clock_skew_ms=clock_skew_ms, symbols=self.symbols,
        )

    def review(self, proposed_weights: npt.ArrayLike, state: PortfolioRiskState) -> PortfolioRiskDecision:
        """:func:`check_portfolio_risk`, with the kill-switch latched once it fired."""
        if self.killed is not None or self.guard.killed is not None:
            events = self.killed.events if self.killed is not None else (
                RiskEvent("kill_switch", "kill", "the kill-switch fired before"),)
            w = tuple(float(x) for x in np.asarray(proposed_weights, dtype=np.float64).reshape(-1))
            return _hold("kill", state.names, w, state.weights, list(events))
        decision = check_portfolio_risk(proposed_weights, state, self.config)
        if decision.kill:
            self.killed = decision
            logger.error("portfolio risk kill-switch now_ms=%d %s", state.now_ms,
                         "; ".join(f"{e.rule}: {e.detail}" for e in decision.events))
        elif decision.verdict != "allowed":
            logger.warning("portfolio risk %s now_ms=%d %s", decision.verdict, state.now_ms,
                           "; ".join(f"{e.rule}: {e.detail}" for ev in decision.asset_events for e in ev)
                           or "; ".join(f"{e.rule}: {e.detail}" for e in decision.events))
        return decision

    def to_dict(self) -> dict[str, Any]:
        """The guard's state, JSON-ready (see :meth:`RiskGuard.to_dict`)."""
        return {**self.guard.to_dict(), "killed": self.killed is not None or self.guard.killed is not None}

    def restore(self, data: Mapping[str, Any]) -> None:
        """Take back a state written by :meth:`to_dict` (a restarted runner)."""
        self.guard.restore(data)


__all__ = [
    "AssetRiskLimits",
    "PortfolioRiskConfig",
    "PortfolioRiskDecision",
    "PortfolioRiskGuard",
    "PortfolioRiskState",
    "check_portfolio_risk",
    "hold_weights",
]
