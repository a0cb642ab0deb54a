"""The risk layer in a backtest: the paper/live guard between the decisions and the env's books.

:func:`~coinrl.agents.backtest.simulate_trading_strategy` with ``risk=RiskConfig(...)`` runs
here. Each decision's proposed target exposure passes through a
:class:`~coinrl.envs.risk.RiskGuard` (the very object :class:`~coinrl.live.live_env.LiveTradingEnv`
uses in paper and live trading) and what it lets through is stepped through the env's own books
(:class:`~coinrl.envs.vector.TradingVectorEnv`, a batch of one), with paper trading's
conventions, so a breach trims or blocks the same order in a backtest and a paper session over
the same candles:

* "now" of a decision at bar ``t``'s close is ``ts_ms[t] + bar_ms`` and the newest closed
  candle closed then (a backtest has no stale data or clock skew);
* the guard marks the books' equity at every decision (the UTC day's opening equity, the peak);
* a blocked or killed decision sends nothing: the books get
  :func:`~coinrl.envs.risk.hold_exposure` of the position at the fill bar's open (the paper
  broker's "no order");
* an order counts in the order-rate window at the open time of the bar it filled in (the paper
  broker's fill time);
* after the kill-switch the account holds its position to the end of the split (the runner
  with ``flatten_on_kill=False``).

The targets go to a continuous-action twin of the env config (same costs, window and
observation), so a trimmed target need not be one of a discrete env's positions; the policy
still sees exactly the observations of its own env. With every rule off
(:meth:`~coinrl.envs.risk.RiskConfig.permissive`) the run equals the plain backtest bit for bit
(tested).

:class:`RiskRecord` is what the layer did: each decision's proposal, allowed target and verdict,
every rule that acted and when, and where the kill-switch fired.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from coinrl.envs.books import Books
from coinrl.envs.config import EnvConfig
from coinrl.envs.risk import RiskConfig, RiskEvent, RiskGuard, Verdict, hold_exposure
from coinrl.envs.risk_portfolio import PortfolioRiskConfig, PortfolioRiskGuard, hold_weights
from coinrl.pipeline.dataset import MarketData
from coinrl.pipeline.errors import ConfigError
from coinrl.pipeline.timeframes import timeframe_to_ms

from .rollout import Rollout, evaluation_config, play, sb3_policy

logger = logging.getLogger(__name__)

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

ActFn = Callable[[Any, int], Any]
"""``(observation batch of one, decision index k) -> env action`` (of the strategy's env config)."""


@dataclass(frozen=True, eq=False)
class RiskRecord:
    """What the risk layer did in one backtest.

    Attributes:
        config: the limits.
        ts_ms: open times of the decision bars (UTC ms), one per decision taken (``T``, fewer
            when the account was liquidated before the end).
        now_ms: the decision times ("now": each decision bar's close, UTC ms).
        proposed_exposure: what the strategy asked for (position notional / equity).
        allowed_exposure: what the layer let through (the current exposure when it held).
        verdicts: ``allowed`` / ``trimmed`` / ``blocked`` / ``kill`` per decision.
        events: ``(decision index, event)`` for every rule that acted, in order; after the
            kill-switch only its first decision's events are listed (the later ones repeat it).
        killed_at: index of the decision where the kill-switch fired (None: never).
    """

    config: RiskConfig
    ts_ms: I64
    now_ms: I64
    proposed_exposure: F64
    allowed_exposure: F64
    verdicts: tuple[Verdict, ...]
    events: tuple[tuple[int, RiskEvent], ...]
    killed_at: int | None

    def counts(self) -> dict[str, int]:
        """Decisions per verdict (``allowed``, ``trimmed``, ``blocked``, ``kill``: the decisions
        under the kill-switch) and per rule action (``trims``, ``blocks``, ``halts``,
        ``forced_exits``: events; ``kills``: 1 when the kill-switch fired)."""
        verdicts = Counter(self.verdicts)
        actions = Counter(e.action for _, e in self.events)
        return {
            "decisions": len(self.verdicts),
            "allowed": verdicts["allowed"],
            "trimmed": verdicts["trimmed"],
            "blocked": verdicts["blocked"],
            "kill": verdicts["kill"],
            "trims": actions["trim"],
            "blocks": actions["block"],
            "halts": actions["halt"],
            "forced_exits": actions["force_exit"],
            "kills": int(self.killed_at is not None),
        }

    def by_rule(self) -> dict[str, int]:
        """How often each rule acted (``max_leverage``, ``stop_loss``, ``max_drawdown`` ...)."""
        return dict(Counter(e.rule for _, e in self.events))

    def event_rows(self) -> list[dict[str, Any]]:
        """One JSON-ready row per event: decision index, bar time, decision time, verdict, rule,
        action, detail."""
        return [
            {"decision": k, "ts_ms": int(self.ts_ms[k]), "now_ms": int(self.now_ms[k]),
             "verdict": self.verdicts[k], **asdict(e)}
            for k, e in self.events
        ]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary: the limits, :meth:`counts`, :meth:`by_rule`, the kill-switch's
        decision and bar time, and :meth:`event_rows`."""
        k = self.killed_at
        return {
            "config": self.config.model_dump(mode="json"),
            "counts": self.counts(),
            "by_rule": self.by_rule(),
            "killed_at": k,
            "killed_ts_ms": None if k is None else int(self.ts_ms[k]),
            "events": self.event_rows(),
        }


class BacktestRiskLayer:
    """A :class:`RiskGuard` between one account's decisions and the env's books.

    The two calls a rollout makes around each step (the hook a rollout loop needs):
    :meth:`review` before it (the target to give the books) and :meth:`after_step` after it
    (count the order if one filled).

    Args:
        config: the limits.
        bar_ms: bar length, ms.
    """

    def __init__(self, config: RiskConfig, bar_ms: int) -> None:
        self.guard = RiskGuard(config, int(bar_ms))
        self.bar_ms = int(bar_ms)
        self._ts: list[int] = []
        self._proposed: list[float] = []
        self._allowed: list[float] = []
        self._verdicts: list[Verdict] = []
        self._events: list[tuple[int, RiskEvent]] = []
        self.killed_at: int | None = None
        self._turnover = 0.0

    def review(
        self, bar_ts_ms: int, proposed_exposure: float, *, cash_quote: float, position_base: float,
        avg_entry_quote: float, mark_price_quote: float, equity_quote: float, turnover_quote: float,
        fill_open_quote: float,
    ) -> float:
        """The target exposure to give the books for a decision at the close of the bar opened
        at ``bar_ts_ms``.

        Args:
            bar_ts_ms: open time of the decision bar (UTC ms); "now" is its close.
            proposed_exposure: the strategy's target.
            cash_quote, position_base, avg_entry_quote, mark_price_quote, equity_quote,
                turnover_quote: the books at the decision (marked at the bar's close).
            fill_open_quote: the open the order would fill at (prices a "no order").

        Returns:
            The allowed target, or the exposure that keeps the position when nothing may be
            sent (blocked, killed).
        """
        now = int(bar_ts_ms) + self.bar_ms
        state = self.guard.state(
            now_ms=now, last_bar_close_ms=now, equity_quote=equity_quote,
            price_quote=mark_price_quote, position_base=position_base,
            avg_entry_quote=avg_entry_quote,
        )
        decision = self.guard.review(proposed_exposure, state)
        k = len(self._verdicts)
        if decision.kill and self.killed_at is None:
            self.killed_at = k
            self._events.extend((k, e) for e in decision.events)
        elif not decision.kill:
            self._events.extend((k, e) for e in decision.events)
        self._ts.append(int(bar_ts_ms))
        self._proposed.append(decision.proposed_exposure)
        self._allowed.append(decision.target_exposure)
        self._verdicts.append(decision.verdict)
        self._turnover = float(turnover_quote)
        if decision.hold:
            return hold_exposure(cash_quote, position_base, fill_open_quote)
        return decision.target_exposure

    def after_step(self, fill_ts_ms: int, turnover_quote: float) -> None:
        """Count an order in the rate window when the books traded in the step just taken
        (``fill_ts_ms``: the open time of the bar it filled in)."""
        if float(turnover_quote) != self._turnover:
            self.guard.record_order(int(fill_ts_ms))

    def record(self) -> RiskRecord:
        """The :class:`RiskRecord` of the decisions reviewed so far."""
        ts = np.asarray(self._ts, dtype=np.int64)
        return RiskRecord(
            config=self.guard.config, ts_ms=ts, now_ms=ts + self.bar_ms,
            proposed_exposure=np.asarray(self._proposed, dtype=np.float64),
            allowed_exposure=np.asarray(self._allowed, dtype=np.float64),
            verdicts=tuple(self._verdicts), events=tuple(self._events), killed_at=self.killed_at,
        )


@dataclass(frozen=True, eq=False)
class PortfolioRiskRecord:
    """What the portfolio risk layer did in one backtest (``T`` decisions, ``A`` assets).

    Attributes:
        config: the limits.
        symbols: the asset names.
        ts_ms, now_ms: open and close times of the decision bars (UTC ms).
        proposed_weights, allowed_weights: ``(T, A)`` what the strategy asked for and what the
            layer let through (the current weights when it held).
        verdicts: the account's verdict per decision.
        asset_verdicts: ``(T, A)`` per asset: ``allowed`` / ``trimmed`` / ``blocked`` /
            ``forced_exit``.
        events: ``(decision, symbol or None for the account, event)``; after the kill-switch
            only its first decision's events.
        killed_at: the decision where the kill-switch fired (None: never).
    """

    config: PortfolioRiskConfig
    symbols: tuple[str, ...]
    ts_ms: I64
    now_ms: I64
    proposed_weights: F64
    allowed_weights: F64
    verdicts: tuple[Verdict, ...]
    asset_verdicts: tuple[tuple[str, ...], ...]
    events: tuple[tuple[int, str | None, RiskEvent], ...]
    killed_at: int | None

    def counts(self) -> dict[str, Any]:
        """Decisions per account verdict, ``kills`` (1 when the kill-switch fired) and per
        asset the decisions ``trimmed``, ``blocked`` and ``forced_exit``."""
        verdicts = Counter(self.verdicts)
        per_asset = {
            s: dict(Counter(v[i] for v in self.asset_verdicts)) for i, s in enumerate(self.symbols)
        }
        return {
            "decisions": len(self.verdicts),
            **{v: verdicts[v] for v in ("allowed", "trimmed", "blocked", "kill")},
            "kills": int(self.killed_at is not None),
            "assets": per_asset,
        }

    def event_rows(self) -> list[dict[str, Any]]:
        """One JSON-ready row per event: decision, bar and decision time, symbol (None for an
        account rule), rule, action, detail."""
        return [
            {"decision": k, "ts_ms": int(self.ts_ms[k]), "now_ms": int(self.now_ms[k]),
             "symbol": sym, **asdict(e)}
            for k, sym, e in self.events
        ]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary: the limits, :meth:`counts`, the kill-switch and the events."""
        k = self.killed_at
        return {
            "config": self.config.model_dump(mode="json"),
            "counts": self.counts(),
            "killed_at": k,
            "killed_ts_ms": None if k is None else int(self.ts_ms[k]),
            "events": self.event_rows(),
        }


class PortfolioBacktestRiskLayer:
    """The portfolio form of :class:`BacktestRiskLayer`: a
    :class:`~coinrl.envs.risk_portfolio.PortfolioRiskGuard` between one portfolio account's
    decisions and its books, with the same conventions (now = the decision bar's close; a
    hold is :func:`~coinrl.envs.risk_portfolio.hold_weights` at the fill bar's opens; a
    rebalance that traded counts once in the order-rate window, at the fill bar's open time).

    A portfolio rollout calls :meth:`review` before each step (the weights to give the books)
    and :meth:`after_step` after it; :meth:`record` gives the :class:`PortfolioRiskRecord`.

    Args:
        config: the limits (a plain :class:`~coinrl.envs.risk.RiskConfig` is promoted).
        bar_ms: bar length, ms.
        symbols: the ``A`` asset names.
    """

    def __init__(self, config: RiskConfig, bar_ms: int, symbols: tuple[str, ...] | list[str]) -> None:
        cfg = config if isinstance(config, PortfolioRiskConfig) else PortfolioRiskConfig.model_validate(
            config.model_dump())
        self.guard = PortfolioRiskGuard(cfg, int(bar_ms), tuple(symbols))
        self.bar_ms = int(bar_ms)
        self._ts: list[int] = []
        self._proposed: list[tuple[float, ...]] = []
        self._allowed: list[tuple[float, ...]] = []
        self._verdicts: list[Verdict] = []
        self._assets: list[tuple[str, ...]] = []
        self._events: list[tuple[int, str | None, RiskEvent]] = []
        self.killed_at: int | None = None
        self._turnover = 0.0

    def review(
        self, bar_ts_ms: int, proposed_weights: npt.ArrayLike, *, cash_quote: float,
        positions_base: npt.ArrayLike, avg_entry_quote: npt.ArrayLike, close_quote: npt.ArrayLike,
        equity_quote: float, turnover_quote: float, fill_open_quote: npt.ArrayLike,
    ) -> F64:
        """The ``(A,)`` target weights to give the books for a decision at the close of the
        bar opened at ``bar_ts_ms`` (amounts quote, positions base, per-asset arrays ``(A,)``;
        ``turnover_quote``: the account's traded notional so far, to see whether the step
        traded)."""
        now = int(bar_ts_ms) + self.bar_ms
        state = self.guard.state(
            now_ms=now, last_bar_close_ms=now, equity_quote=equity_quote, prices_quote=close_quote,
            positions_base=positions_base, avg_entry_quote=avg_entry_quote,
        )
        d = self.guard.review(proposed_weights, state)
        k = len(self._verdicts)
        if not d.kill or self.killed_at is None:
            if d.kill:
                self.killed_at = k
            self._events.extend((k, None, e) for e in d.events)
            account = set(d.events)
            self._events.extend((k, s, e) for s, ev in zip(d.symbols, d.asset_events, strict=True)
                                for e in ev if e not in account)
        self._ts.append(int(bar_ts_ms))
        self._proposed.append(d.proposed_weights)
        self._allowed.append(d.target_weights)
        self._verdicts.append(d.verdict)
        self._assets.append(d.asset_verdicts())
        self._turnover = float(turnover_quote)
        if d.hold:
            return hold_weights(cash_quote, positions_base, fill_open_quote)
        return np.asarray(d.target_weights, dtype=np.float64)

    def after_step(self, fill_ts_ms: int, turnover_quote: float) -> None:
        """Count the rebalance in the rate window when the account traded in the step just
        taken (``fill_ts_ms``: the fill bar's open time)."""
        if float(turnover_quote) != self._turnover:
            self.guard.record_order(int(fill_ts_ms))

    def record(self) -> PortfolioRiskRecord:
        """The :class:`PortfolioRiskRecord` of the decisions reviewed so far."""
        ts = np.asarray(self._ts, dtype=np.int64)
        a = len(self.guard.symbols)
        return PortfolioRiskRecord(
            config=self.guard.config, symbols=self.guard.symbols, ts_ms=ts, now_ms=ts + self.bar_ms,
            proposed_weights=np.asarray(self._proposed, dtype=np.float64).reshape(-1, a),
            allowed_weights=np.asarray(self._allowed, dtype=np.float64).reshape(-1, a),
            verdicts=tuple(self._verdicts), asset_verdicts=tuple(self._assets),
            events=tuple(self._events), killed_at=self.killed_at,
        )


def risk_env_config(env_config: EnvConfig | dict[str, Any] | None) -> EnvConfig:
    """The continuous-action twin of ``env_config`` that steps the allowed targets (same costs,
    window, bounds and observation; one whole-split episode).

    Raises:
        ConfigError: ``delay_bars > 1`` (paper and live trading fill at the next open; a held
            decision with orders still in flight has no paper equivalent).
    """
    cfg = evaluation_config(env_config)
    if cfg.delay_bars != 1:
        raise ConfigError(
            f"a backtest with risk= needs delay_bars=1 (got {cfg.delay_bars}): the risk layer "
            "decides as paper and live trading do, filling at the next open; backtest this env "
            "without risk, or set env.delay_bars=1"
        )
    return cfg.model_copy(update={"action": "continuous", "positions": None})


def policy_act(policy: Any) -> ActFn:
    """``(obs, k) -> action`` of a batched ``obs -> action`` callable or an SB3 model (its
    deterministic ``predict``, recurrent state kept)."""
    if hasattr(policy, "predict"):
        act = sb3_policy(policy, True)
        return lambda obs, k: act(obs, k == 0)
    return lambda obs, k: policy(obs)


class RiskStepHook:
    """The :class:`~coinrl.agents.rollout.StepHook` that puts a :class:`BacktestRiskLayer`
    between a batch-of-one rollout's decisions and its books: decision ``k`` is reviewed at the
    close of bar ``window - 1 + k`` and its order counted at the open time of the next bar.

    Args:
        layer: the risk layer.
        data: the split the rollout trades.
        window: the env's observation window (decision ``k`` is at bar ``window - 1 + k``).
    """

    def __init__(self, layer: BacktestRiskLayer, data: MarketData, window: int) -> None:
        self.layer = layer
        self._ts = np.asarray(data.ts_ms, dtype=np.int64)
        self._open = np.asarray(data.open, dtype=np.float64)
        self._first = int(window) - 1

    def step_config(self, env_config: EnvConfig) -> EnvConfig:
        """The continuous-action twin of the strategy's config (:func:`risk_env_config`)."""
        return risk_env_config(env_config)

    def review(self, k: int, books: Books, proposed_exposure: F64) -> F64:
        """:meth:`BacktestRiskLayer.review` of decision ``k`` on the books' first account."""
        t = self._first + k
        target = self.layer.review(
            int(self._ts[t]), float(proposed_exposure[0]), cash_quote=float(books.cash_quote[0]),
            position_base=float(books.position_base[0]), avg_entry_quote=float(books.avg_entry_quote[0]),
            mark_price_quote=float(books.mark_price_quote[0]), equity_quote=float(books.equity_quote[0]),
            turnover_quote=float(books.turnover_quote[0]), fill_open_quote=float(self._open[t + 1]),
        )
        return np.asarray([target], dtype=np.float64)

    def after_step(self, k: int, books: Books) -> None:
        """:meth:`BacktestRiskLayer.after_step` at the fill bar's open time."""
        self.layer.after_step(int(self._ts[self._first + k + 1]), float(books.turnover_quote[0]))


def rollout_with_risk(
    act: ActFn, data: MarketData, env_config: EnvConfig | dict[str, Any] | None, risk: RiskConfig,
) -> tuple[Rollout, RiskRecord]:
    """Let a strategy trade the whole split with the risk layer between it and the books: the
    one rollout loop (:func:`~coinrl.agents.rollout.play`) with a :class:`RiskStepHook`.

    Args:
        act: ``(obs, k) -> env action`` of ``env_config`` (a policy on its observation, or a
            fixed sequence indexed by ``k``).
        data: the split.
        env_config: the strategy's env config (its action mode maps actions to targets).
        risk: the limits.

    Returns:
        The :class:`~coinrl.agents.rollout.Rollout` (``actions``: the strategy's own actions;
        ``target_exposure``: the targets the books got; both 0 after a liquidation) and the
        :class:`RiskRecord`.

    Raises:
        ConfigError: ``delay_bars > 1`` (see :func:`risk_env_config`).
    """
    cfg = evaluation_config(env_config)
    risk_env_config(cfg)  # refuse delay_bars > 1 before anything runs
    layer = BacktestRiskLayer(risk, timeframe_to_ms(data.timeframe))
    rollout = play(act, data, cfg, RiskStepHook(layer, data, cfg.window))
    record = layer.record()
    logger.info(
        "risk backtest symbol=%s decisions=%d %s killed_at=%s", data.symbol, len(record.verdicts),
        " ".join(f"{k}={v}" for k, v in record.counts().items() if k != "decisions"), record.killed_at,
    )
    return rollout, record


__all__ = [
    "ActFn",
    "BacktestRiskLayer",
    "PortfolioBacktestRiskLayer",
    "PortfolioRiskRecord",
    "RiskRecord",
    "RiskStepHook",
    "policy_act",
    "risk_env_config",
    "rollout_with_risk",
]
